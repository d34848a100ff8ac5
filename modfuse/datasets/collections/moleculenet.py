"""MoleculeNet-style CSVs: SMILES (a molecular graph) + descriptor columns + targets.

Modalities: ``graph`` (the SMILES string, read by the ``smiles`` reader into a PyG graph) and
``descriptors`` (the numeric descriptor columns the CSV ships, when it has any). Splits:
``random`` (seeded 80/10/10) and ``scaffold`` (Bemis-Murcko, DeepChem's deterministic order);
the group column is the scaffold, so the scaffold split is checked for leakage.

Each known file has a configuration (`CONFIGS`) naming its SMILES, id, descriptor and
target columns, and the provider columns that must never become features (``exclude``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modfuse.data.readers.tabular import read_table
from modfuse.data.splits import murcko_scaffolds, scaffold_split, split_indices
from modfuse.datasets.collections._common import find_file, require_columns
from modfuse.datasets.manifest import ModalitySpec, TargetSpec, write_manifest
from modfuse.datasets.preparation import register
from modfuse.errors import ModfuseError, ReadError

__all__ = ["CONFIGS", "MoleculeNetConfig", "prepare_moleculenet"]


@dataclass(frozen=True)
class MoleculeNetConfig:
    """Which columns of a MoleculeNet CSV mean what.

    Args:
        file: the provider's file name.
        smiles: the SMILES column.
        targets: task name -> target column.
        kind: ``regression`` or ``binary``.
        id_column: a compound name/id column, or None (row numbers become ids).
        descriptors: numeric descriptor columns used as the ``descriptors`` modality.
        exclude: columns never used as features -> why.
    """

    file: str
    smiles: str
    targets: Mapping[str, str]
    kind: str = "regression"
    id_column: str | None = None
    descriptors: Sequence[str] = ()
    exclude: Mapping[str, str] = field(default_factory=dict)


CONFIGS: dict[str, MoleculeNetConfig] = {
    "esol": MoleculeNetConfig(
        file="delaney-processed.csv",
        smiles="smiles",
        targets={"solubility": "measured log solubility in mols per litre"},
        id_column="Compound ID",
        descriptors=(
            "Minimum Degree",
            "Molecular Weight",
            "Number of H-Bond Donors",
            "Number of Rings",
            "Number of Rotatable Bonds",
            "Polar Surface Area",
        ),
        exclude={
            "ESOL predicted log solubility in mols per litre": "the ESOL model's prediction of the target: "
            "using it as a feature leaks the label"
        },
    ),
    "freesolv": MoleculeNetConfig(
        file="SAMPL.csv",
        smiles="smiles",
        targets={"hydration_free_energy": "expt"},
        id_column="iupac",
        exclude={"calc": "a physics-based calculation of the target (alchemical free energy): leaks the label"},
    ),
    "lipophilicity": MoleculeNetConfig(
        file="Lipophilicity.csv", smiles="smiles", targets={"logd": "exp"}, id_column="CMPD_CHEMBLID"
    ),
    "bbbp": MoleculeNetConfig(
        file="BBBP.csv",
        smiles="smiles",
        targets={"penetrates": "p_np"},
        kind="binary",
        id_column=None,
        exclude={"name": "a compound name, not a feature", "num": "a row number, not a feature"},
    ),
}


def prepare_moleculenet(
    root: Path,
    out: Path,
    config: str | MoleculeNetConfig = "esol",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    default_split: str = "scaffold",
    table_format: str = "parquet",
) -> Path:
    """Prepare a MoleculeNet CSV.

    Args:
        root: the CSV itself, or a folder holding the provider's file name.
        out: output folder.
        config: a name in `CONFIGS` or a `MoleculeNetConfig` for another CSV.
        seed: seed of the random split.
        val_fraction, test_fraction: split sizes.
        default_split: ``scaffold`` (default; honest for new chemistry) or ``random``.
        table_format: ``parquet`` or ``csv``.
    """
    cfg = _config(config)
    path = find_file(Path(root), [cfg.file], f"the MoleculeNet file {cfg.file}")
    raw = read_table(path)
    require_columns(raw, [cfg.smiles, *cfg.targets.values(), *cfg.descriptors], path)
    _refuse_leaky(cfg)
    table = _table(raw, cfg, path)
    n = len(table)
    scaffold, scaffolds = scaffold_split(table["smiles"].tolist(), val_fraction, test_fraction)
    table["group"] = scaffolds
    splits = {
        "scaffold": scaffold,
        "random": split_indices(n, "random", val_fraction, test_fraction, seed=seed),
    }
    modalities: dict[str, ModalitySpec] = {
        "graph": ModalitySpec("value", ["smiles"], reader="smiles", description="molecular graph from SMILES (RDKit)")
    }
    if cfg.descriptors:
        modalities["descriptors"] = ModalitySpec("columns", list(cfg.descriptors), description="provider descriptors")
    targets = {t: TargetSpec(cfg.kind, [c]) for t, c in cfg.targets.items()}
    return write_manifest(
        table,
        out,
        name=Path(cfg.file).stem if isinstance(config, MoleculeNetConfig) else str(config),
        modalities=modalities,
        targets=targets,
        splits=splits,
        default_split=default_split,
        ungrouped_splits=["random"],
        excluded_columns=dict(cfg.exclude),
        table_format=table_format,  # type: ignore[arg-type]
        info={"source_file": path.name, "invalid_smiles": int((~table["has_graph"]).sum()), "seed": seed},
    )


def _config(config: str | MoleculeNetConfig) -> MoleculeNetConfig:
    if isinstance(config, MoleculeNetConfig):
        return config
    if config not in CONFIGS:
        raise ModfuseError(f"unknown MoleculeNet configuration {config!r}; expected one of {sorted(CONFIGS)}")
    return CONFIGS[config]


def _refuse_leaky(cfg: MoleculeNetConfig) -> None:
    leaky = set(cfg.exclude) & (set(cfg.descriptors) | set(cfg.targets.values()))
    if leaky:
        raise ModfuseError(f"columns {sorted(leaky)} are excluded as leaky but the configuration uses them")


def _table(raw: pd.DataFrame, cfg: MoleculeNetConfig, path: Path) -> pd.DataFrame:
    ids = raw[cfg.id_column].astype(str) if cfg.id_column and cfg.id_column in raw.columns else None
    if ids is None or ids.duplicated().any():
        # names repeat in several MoleculeNet files: fall back to the row number, which is stable
        ids = pd.Series([f"row{i:06d}" for i in range(len(raw))])
    smiles = raw[cfg.smiles].astype(str).str.strip()
    table = pd.DataFrame({"id": ids.to_numpy(), "smiles": smiles.to_numpy()})
    if cfg.id_column and cfg.id_column in raw.columns:
        table["name"] = raw[cfg.id_column].astype(str).to_numpy()
    for c in cfg.descriptors:
        table[c] = pd.to_numeric(raw[c], errors="coerce").astype("float64").to_numpy()
    for c in cfg.targets.values():
        values = pd.to_numeric(raw[c], errors="coerce")
        if values.isna().any():
            rows = list(np.flatnonzero(values.isna().to_numpy())[:5])
            raise ReadError(f"target column {c!r} is empty or not numeric in rows {rows}", path=path)
        table[c] = values.to_numpy(dtype=np.int64 if cfg.kind == "binary" else np.float64)
    # an unparseable SMILES is an explicitly missing graph, not a dropped molecule
    table["has_graph"] = ~pd.Series(murcko_scaffolds(table["smiles"].tolist())).str.startswith("invalid:").to_numpy()
    return table


def _register(name: str) -> None:
    @register(name)
    def _prepare(root: Path, out: Path, **options: Any) -> Path:
        return prepare_moleculenet(root, out, config=name, **options)

    _prepare.__doc__ = f"Prepare MoleculeNet {name!r} (see `prepare_moleculenet()`)."


register("moleculenet")(prepare_moleculenet)
for _name in CONFIGS:
    _register(_name)
