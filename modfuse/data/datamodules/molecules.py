"""A MoleculeNet-style CSV read directly (no ``prepare`` step), for ``recipes/molecules.yaml``:
SMILES + descriptor columns + a target, read as a molecular graph + a descriptor table;
scaffold or random split; the columns a configuration marks as leaky (ESOL's ``ESOL
predicted ...``) can never be features. Descriptors are standardised with statistics of the
training partition only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from modfuse.data.datamodules.base import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.readers.tabular import read_table
from modfuse.data.sources import ArraySource
from modfuse.data.splits import check_disjoint_groups, murcko_scaffolds, scaffold_split, split_indices
from modfuse.data.transforms import Standardizer
from modfuse.errors import ModfuseError, ReadError

__all__ = ["MoleculeCSVDataModule"]


class MoleculeCSVDataModule(MultiModalDataModule):
    """A MoleculeNet-style CSV read directly: molecular graph (from SMILES) + descriptor table.

    Modalities: ``graph`` (RDKit atom/bond features through
    `SmilesSource`; a SMILES RDKit cannot parse makes the graph
    missing for that molecule, it is never dropped) and ``descriptors`` (the numeric
    ``descriptors`` columns, standardised with training statistics; an all-empty row is a
    missing modality). The target is one numeric column.

    Column names come from a known configuration (``config="esol"``, see
    `modfuse.datasets.collections.moleculenet.CONFIGS`) or are given explicitly; explicit
    arguments override the configuration. Columns in the configuration's ``exclude`` (e.g.
    ESOL's ``ESOL predicted log solubility in mols per litre``, a model's prediction of the
    target) and in ``exclude`` here are refused as descriptors.

    This is the direct variant of the ``esol`` collection (``prepare("esol", ...)`` + a
    [`ManifestDataModule`][modfuse.data.datamodules.manifest.ManifestDataModule]): same columns, same scaffold split,
    no manifest written.

    Args:
        path: the CSV (or Parquet) file.
        config: a MoleculeNet configuration name, or None (then ``smiles_column`` and
            ``target_column`` are required).
        smiles_column, target_column, id_column: column names (override the configuration).
        descriptors: descriptor columns (override the configuration; ``[]`` for graph only).
        exclude: more columns that must never be features.
        split: ``"scaffold"`` (Bemis-Murcko, deterministic, largest scaffolds in train, as
            DeepChem) or ``"random"`` (seeded).
        standardize: standardise descriptors with training-partition statistics.
        val_fraction, test_fraction: split sizes.
        batch_size, num_workers, pin_memory, seed, train_transform: as in
            [`MultiModalDataModule`][modfuse.data.MultiModalDataModule].
    """

    def __init__(
        self,
        path: str | Path = "data/delaney-processed.csv",
        config: str | None = "esol",
        smiles_column: str | None = None,
        target_column: str | None = None,
        id_column: str | None = None,
        descriptors: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        split: Literal["scaffold", "random"] = "scaffold",
        standardize: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(
            None,
            split="random",
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            train_transform=train_transform,
        )
        if split not in ("scaffold", "random"):
            raise ModfuseError(f"split: expected 'scaffold' or 'random', found {split!r}")
        self.path, self.split_kind, self.standardize = Path(path), split, standardize
        cfg = self._config(config)
        self.smiles_column = smiles_column or (cfg.smiles if cfg else None)
        self.target_column = target_column or (next(iter(cfg.targets.values())) if cfg else None)
        self.id_column = id_column or (cfg.id_column if cfg else None)
        self.descriptors = list(descriptors) if descriptors is not None else list(cfg.descriptors if cfg else ())
        self.excluded = {**(dict(cfg.exclude) if cfg else {}), **{c: "excluded by the caller" for c in exclude}}
        if self.smiles_column is None or self.target_column is None:
            raise ModfuseError("without a config, smiles_column and target_column are required")
        leaky = sorted(set(self.excluded) & ({*self.descriptors, self.smiles_column}))
        if leaky:
            raise ModfuseError(f"columns {leaky} must never be features: {[self.excluded[c] for c in leaky]}")
        if self.target_column in self.descriptors:
            raise ModfuseError(f"the target column {self.target_column!r} cannot be a descriptor")
        self.invalid_smiles: list[Hashable] = []

    @staticmethod
    def _config(name: str | None) -> Any:
        if name is None:
            return None
        from modfuse.datasets.collections.moleculenet import CONFIGS

        if name not in CONFIGS:
            raise ModfuseError(f"unknown MoleculeNet configuration {name!r}; expected one of {sorted(CONFIGS)} or None")
        return CONFIGS[name]

    def _read(self) -> pd.DataFrame:
        if not self.path.is_file():
            raise ReadError("expected a MoleculeNet-style CSV; set data.init_args.path to it", path=self.path)
        frame = read_table(self.path)
        wanted = [
            self.smiles_column,
            self.target_column,
            *self.descriptors,
            *([self.id_column] if self.id_column else []),
        ]
        absent = [c for c in wanted if c not in frame.columns]
        if absent:
            raise ReadError(f"expected columns {absent}, found columns {list(frame.columns)}", path=self.path)
        return frame

    def build_dataset(self) -> MultiModalDataset:
        from modfuse.data.readers.molecules import SmilesSource

        frame = self._read()
        ids: list[Hashable] = (
            frame[self.id_column].astype(str).tolist()
            if self.id_column and not frame[self.id_column].astype(str).duplicated().any()
            else [f"row{i:06d}" for i in range(len(frame))]  # names repeat in some MoleculeNet files
        )
        target = pd.to_numeric(frame[self.target_column], errors="coerce").to_numpy(dtype=np.float32)
        if np.isnan(target).any():
            rows = np.flatnonzero(np.isnan(target))[:5].tolist()
            raise ReadError(
                f"target column {self.target_column!r} is empty or not numeric in rows {rows}", path=self.path
            )
        smiles = frame[self.smiles_column].astype(str).str.strip().tolist()
        n = len(frame)
        if self.split_kind == "scaffold":
            parts, scaffolds = scaffold_split(smiles, self.val_fraction, self.test_fraction)
            groups: np.ndarray | None = scaffolds
        else:
            scaffolds = murcko_scaffolds(smiles)
            parts = split_indices(n, "random", self.val_fraction, self.test_fraction, seed=self.seed)
            groups = None
        invalid = np.char.startswith(scaffolds.astype(str), "invalid:")
        self.invalid_smiles = [ids[i] for i in np.flatnonzero(invalid)]
        graph = SmilesSource([None if bad else s for s, bad in zip(smiles, invalid)], ids, path=self.path)
        sources: dict[str, Any] = {"graph": graph}
        transforms = None
        if self.descriptors:
            values = frame[self.descriptors].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
            sources["descriptors"] = ArraySource(values, ids, collate="stack")
            if self.standardize:
                transforms = {"descriptors": Standardizer.fit(values, rows=parts["train"])}
        check_disjoint_groups(parts, groups)
        self.given_splits = parts
        return MultiModalDataset(sources, targets=target, ids=ids, groups=groups, transforms=transforms)
