"""Every split of modfuse: seeded random / stratified / group splits and the collection helpers
(group-wise, provider folds, spatial blocks, scaffold, multi-label), and split files.

Every helper returns ``{"train": idx, "val": idx, "test": idx}`` (sorted int arrays over the
samples or the rows of a manifest) and refuses a split that puts one group (patient, site,
spatial block, scaffold) in two partitions. `write_split()` stores a split as a CSV file
(``id,split[,group]``) next to the manifest; `read_split()` reads it back as indices.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from modfuse.errors import ModfuseError, ReadError

__all__ = [
    "PARTITIONS",
    "SplitKind",
    "check_disjoint_groups",
    "fold_split",
    "group_split",
    "multilabel_stratified_split",
    "murcko_scaffolds",
    "read_split",
    "scaffold_split",
    "spatial_block_split",
    "spatial_blocks",
    "split_frame",
    "split_indices",
    "write_split",
]

SplitKind = Literal["random", "stratified", "group"]
PARTITIONS = ("train", "val", "test")
Splits = dict[str, np.ndarray]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ModfuseError(
            f"fractions must be in [0, 1) with a sum < 1, found val={val_fraction}, test={test_fraction}"
        )


def split_indices(
    n: int,
    kind: SplitKind = "random",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    labels: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded train/val/test indices.

    Args:
        n: number of samples.
        kind: ``random``; ``stratified`` (keeps label proportions, needs ``labels``); ``group``
            (no group, e.g. patient or site or spatial block, in two partitions; needs ``groups``).
        val_fraction, test_fraction: fractions of all samples (of all groups for ``group``).
        labels: (n,) labels for stratification.
        groups: (n,) group ids.
        seed: random seed; the same seed gives the same split.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}`` (sorted int arrays; val/test may be empty
        when their fraction is 0).
    """
    idx = np.arange(n)
    _check_fractions(val_fraction, test_fraction)

    def cut(pool: np.ndarray, frac: float, rs: int) -> tuple[np.ndarray, np.ndarray]:
        if frac <= 0:
            return pool, pool[:0]
        if kind == "group":
            if groups is None:
                raise ModfuseError("a group split needs groups (patient, site or block id per sample)")
            gss = GroupShuffleSplit(n_splits=1, test_size=frac, random_state=rs)
            a, b = next(gss.split(pool, groups=groups[pool]))
            return pool[a], pool[b]
        strat = None
        if kind == "stratified":
            if labels is None:
                raise ModfuseError("a stratified split needs labels")
            strat = labels[pool]
        return tuple(train_test_split(pool, test_size=frac, random_state=rs, stratify=strat))  # type: ignore[return-value]

    rest, test = cut(idx, test_fraction, seed)
    train, val = cut(rest, val_fraction / (1 - test_fraction), seed + 1)
    out = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    if kind == "group":
        check_disjoint_groups(out, groups)
    return out


def check_disjoint_groups(splits: Mapping[str, np.ndarray], groups: np.ndarray | None) -> None:
    """Refuse a split that puts one group in two partitions."""
    if groups is None:
        return
    seen: dict[Any, str] = {}
    for part, idx in splits.items():
        for g in np.unique(groups[idx]).tolist():
            if g in seen and seen[g] != part:
                raise ModfuseError(f"group {g!r} is in both the {seen[g]!r} and {part!r} partitions (leakage)")
            seen[g] = part


def group_split(
    groups: Sequence[Hashable] | np.ndarray,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Random split by group (patient, site): every group's samples land in one partition.

    Args:
        groups: (N,) group id per sample.
        val_fraction, test_fraction: fractions of the groups in val and test.
        seed: random seed.
    """
    groups = np.asarray(groups)
    if pd.isna(pd.Series(groups)).any():
        raise ModfuseError("group ids must not be missing (found NaN/None); a group split needs one per sample")
    return split_indices(len(groups), "group", val_fraction, test_fraction, groups=groups, seed=seed)


def fold_split(folds: Sequence[int] | np.ndarray, val_folds: Sequence[int], test_folds: Sequence[int]) -> Splits:
    """Split by a fold column a provider ships (e.g. PTB-XL ``strat_fold``).

    Args:
        folds: (N,) fold number per sample.
        val_folds: folds that form the validation partition.
        test_folds: folds that form the test partition; all others are training.
    """
    folds = np.asarray(folds)
    if set(val_folds) & set(test_folds):
        raise ModfuseError(f"val folds {list(val_folds)} and test folds {list(test_folds)} overlap")
    val = np.isin(folds, list(val_folds))
    test = np.isin(folds, list(test_folds))
    idx = np.arange(len(folds))
    return {"train": idx[~val & ~test], "val": idx[val], "test": idx[test]}


def spatial_blocks(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, block_size: float, crs: str | None = None
) -> np.ndarray:
    """Block id per sample: the ``block_size`` square (in the units of x/y) holding its point.

    Neighbouring chips are spatially correlated, so a random chip split leaks; grouping by
    block keeps neighbours together. Samples in different CRSs (e.g. UTM zones) never share a
    block, hence the optional ``crs`` prefix.

    Args:
        x, y: (N,) coordinates (e.g. chip centres in metres of a projected CRS).
        block_size: block edge length, same units as x/y.
        crs: optional (N,) CRS label per sample (a string or one for all).
    """
    if block_size <= 0:
        raise ModfuseError(f"block_size must be > 0, found {block_size}")
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ModfuseError("spatial blocks need finite coordinates for every sample (found NaN/inf)")
    bx = np.floor(x / block_size).astype(np.int64)
    by = np.floor(y / block_size).astype(np.int64)
    prefix = np.broadcast_to(np.asarray("" if crs is None else crs, dtype=object), x.shape)
    return np.array([f"{c}:{i}:{j}" if c else f"{i}:{j}" for c, i, j in zip(prefix, bx, by)], dtype=object)


def spatial_block_split(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    block_size: float,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    crs: str | Sequence[str] | None = None,
) -> tuple[Splits, np.ndarray]:
    """Split by spatial blocks (see `spatial_blocks()`); returns ``(splits, block ids)``."""
    blocks = spatial_blocks(x, y, block_size, crs)  # type: ignore[arg-type]
    return group_split(blocks, val_fraction, test_fraction, seed), blocks


def murcko_scaffolds(smiles: Sequence[str], include_chirality: bool = False) -> np.ndarray:
    """Bemis-Murcko scaffold SMILES per molecule (RDKit). Acyclic molecules get ``""``; a
    SMILES RDKit cannot parse gets its own group ``"invalid:<smiles>"`` (never merged)."""
    from modfuse.utils.optional import require

    require("rdkit", "graph")
    from rdkit import Chem, rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    rdBase.DisableLog("rdApp.*")  # parse failures are reported through the group name
    out = []
    for s in smiles:
        mol = Chem.MolFromSmiles(str(s)) if isinstance(s, str) and s.strip() else None
        if mol is None:
            out.append(f"invalid:{s}")
            continue
        out.append(MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality))
    return np.asarray(out, dtype=object)


def scaffold_split(
    smiles: Sequence[str],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int | None = None,
) -> tuple[Splits, np.ndarray]:
    """Scaffold split: molecules sharing a Murcko scaffold stay in one partition.

    With ``seed=None`` it is the deterministic MoleculeNet/DeepChem split: scaffold sets sorted
    largest first fill train, then val, then test, so test holds rare scaffolds. With a seed,
    scaffold sets are shuffled instead (a "balanced" random scaffold split).

    Args:
        smiles: (N,) SMILES strings.
        val_fraction, test_fraction: target fractions of molecules.
        seed: None for the deterministic split, or a random seed.

    Returns:
        ``(splits, scaffold per molecule)``.
    """
    _check_fractions(val_fraction, test_fraction)
    scaffolds = murcko_scaffolds(smiles)
    sets: dict[str, list[int]] = {}
    for i, sc in enumerate(scaffolds):
        sets.setdefault(sc, []).append(i)
    members = list(sets.values())
    if seed is None:
        # largest first, ties broken by first index, as in DeepChem's ScaffoldSplitter
        members.sort(key=lambda m: (-len(m), m[0]))
    else:
        order = np.random.default_rng(seed).permutation(len(members))
        members = [members[i] for i in order]
    n = len(scaffolds)
    train_cut, val_cut = (1 - val_fraction - test_fraction) * n, (1 - test_fraction) * n
    parts: dict[str, list[int]] = {p: [] for p in PARTITIONS}
    for m in members:
        if len(parts["train"]) + len(m) <= train_cut:
            parts["train"].extend(m)
        elif len(parts["train"]) + len(parts["val"]) + len(m) <= val_cut:
            parts["val"].extend(m)
        else:
            parts["test"].extend(m)
    out = {p: np.sort(np.asarray(v, dtype=int)) for p, v in parts.items()}
    check_disjoint_groups(out, scaffolds)
    return out, scaffolds


def multilabel_stratified_split(
    labels: np.ndarray,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: Sequence[Hashable] | np.ndarray | None = None,
) -> Splits:
    """Iterative stratification for multi-label targets (Sechidis et al., 2011).

    Rare labels are placed first, each unit going to the partition that most lacks that label,
    so every label keeps roughly its prevalence in every partition. With ``groups`` the unit is
    a group (its label vector is the union over its samples), so no group is split.

    Args:
        labels: (N, L) 0/1 matrix (NaN counts as 0).
        val_fraction, test_fraction: target fractions of samples.
        seed: random seed for tie-breaking.
        groups: optional (N,) group id per sample.
    """
    _check_fractions(val_fraction, test_fraction)
    y = np.nan_to_num(np.asarray(labels, dtype=float)) > 0
    if y.ndim != 2:
        raise ModfuseError(f"expected a (samples, labels) 0/1 matrix, found shape {y.shape}")
    group_arr = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(group_arr) != len(y):
        raise ModfuseError(f"groups has {len(group_arr)} entries for {len(y)} samples")
    codes, unit_of = np.unique(group_arr.astype(str), return_inverse=True)
    unit_y = np.zeros((len(codes), y.shape[1]), dtype=bool)
    np.logical_or.at(unit_y, unit_of, y)
    unit_size = np.bincount(unit_of, minlength=len(codes)).astype(float)
    assign = _iterative_stratify(
        unit_y, unit_size, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed
    )
    idx = np.arange(len(y))
    out = {p: idx[assign[unit_of] == k] for k, p in enumerate(PARTITIONS)}
    check_disjoint_groups(out, group_arr)
    return out


def _iterative_stratify(y: np.ndarray, size: np.ndarray, ratios: tuple[float, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ratios_arr = np.asarray(ratios)
    need_total = ratios_arr * size.sum()
    need_label = ratios_arr[:, None] * (y * size[:, None]).sum(0)[None, :]
    assign = np.full(len(y), -1)
    left = np.ones(len(y), dtype=bool)
    while left.any():
        counts = (y[left] * size[left, None]).sum(0)
        if counts.sum() == 0:
            label = None
            units = np.flatnonzero(left)
        else:
            # the rarest label still to place goes first: it has the fewest ways to be balanced
            label = int(np.argmin(np.where(counts > 0, counts, np.inf)))
            units = np.flatnonzero(left & y[:, label])
        for u in rng.permutation(units):
            score = need_label[:, label] if label is not None else need_total
            best = np.flatnonzero(score == score.max())
            if len(best) > 1:
                best = best[need_total[best] == need_total[best].max()]
            k = int(rng.choice(best))
            assign[u] = k
            left[u] = False
            need_total[k] -= size[u]
            need_label[k] -= y[u] * size[u]
    return assign


def write_split(
    splits: Mapping[str, np.ndarray],
    ids: Sequence[Hashable],
    path: str | Path,
    groups: Sequence[Hashable] | np.ndarray | None = None,
) -> Path:
    """Write a split as CSV (``id,split`` plus ``group`` when given), refusing group leakage.

    Args:
        splits: partition -> row indices into ``ids``.
        ids: (N,) sample ids of the manifest rows.
        path: output CSV path (parent folders are created).
        groups: optional (N,) group per sample, checked and written for audit.
    """
    frame = split_frame(splits, ids, groups)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def split_frame(
    splits: Mapping[str, np.ndarray],
    ids: Sequence[Hashable],
    groups: Sequence[Hashable] | np.ndarray | None = None,
) -> pd.DataFrame:
    """The table `write_split()` writes (``id,split[,group]``), after every check: indices
    in range, no sample in two partitions, no group in two partitions (nothing is written)."""
    ids_arr = np.asarray(list(ids), dtype=object)
    group_arr = None if groups is None else np.asarray(groups, dtype=object)
    for part, idx in splits.items():
        idx = np.asarray(idx)
        if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= len(ids_arr)):
            raise ModfuseError(
                f"partition {part!r} holds row indices outside 0..{len(ids_arr) - 1} (or non-integers): "
                f"found dtype {idx.dtype}, range {idx.min()}..{idx.max()}"
            )
    check_disjoint_groups({k: np.asarray(v, dtype=int) for k, v in splits.items()}, group_arr)
    rows = []
    seen: dict[int, str] = {}
    for part, idx in splits.items():
        for i in np.asarray(idx, dtype=int):
            if i in seen:
                raise ModfuseError(f"sample {ids_arr[i]!r} is in both the {seen[i]!r} and {part!r} partitions")
            seen[int(i)] = part
            rows.append((ids_arr[i], part) if group_arr is None else (ids_arr[i], part, group_arr[i]))
    cols = ["id", "split"] if group_arr is None else ["id", "split", "group"]
    return pd.DataFrame(rows, columns=cols)


def read_split(path: str | Path, ids: Sequence[Hashable], groups: np.ndarray | None = None) -> Splits:
    """Read a split CSV written by `write_split()` as indices into ``ids``.

    Samples of the manifest that the file does not list belong to no partition (e.g. a
    collection's excluded rows). Ids in the file that the manifest lacks raise an error.

    Args:
        path: the split CSV.
        ids: the manifest's sample ids, in row order.
        groups: optional (N,) groups to re-check for leakage.
    """
    path = Path(path)
    if not path.is_file():
        raise ReadError("split file not found", path=path)
    table = pd.read_csv(path, dtype={"id": str, "split": str})
    if not {"id", "split"} <= set(table.columns):
        raise ReadError(f"expected columns 'id' and 'split', found {list(table.columns)}", path=path)
    position = {str(sid): i for i, sid in enumerate(ids)}
    unknown = [s for s in table["id"] if s not in position]
    if unknown:
        raise ReadError(f"{len(unknown)} ids are not in the manifest, e.g. {unknown[:3]}", path=path)
    bad = sorted(set(table["split"]) - set(PARTITIONS))
    if bad:
        raise ReadError(f"expected partitions {list(PARTITIONS)}, found {bad}", path=path)
    out = {
        p: np.sort(np.asarray([position[s] for s in table.loc[table["split"] == p, "id"]], dtype=int))
        for p in PARTITIONS
    }
    check_disjoint_groups(out, groups)
    return out
