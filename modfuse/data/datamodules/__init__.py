"""Every datamodule of modfuse, one per file.

- `MultiModalDataModule` (``base``): seeded splits, resumable loaders and collation over any
  [`MultiModalDataset`][modfuse.data.MultiModalDataset]; the others subclass it.
- `CachedDataModule` (``cached``): a cache folder written by ``modfuse prepare-cache``.
- `ManifestDataModule` (``manifest``): a prepared manifest and one of its fixed splits.
- `EOPatchLandCoverDataModule` (``eopatch``) and `MoleculeCSVDataModule` (``molecules``): a
  domain's real files read directly (no ``prepare`` step).
- `SyntheticCohortDataModule` (``synthetic``): the synthetic quickstart cohort.

Only ``base`` is imported with this package; the others on first use (the manifest, molecule
and synthetic ones build on `modfuse.datasets`, a layer above the data model).
"""

from __future__ import annotations

import importlib
from typing import Any

from modfuse.data.datamodules.base import (
    DistributedEpochSampler,
    EpochSampler,
    MultiModalDataModule,
    ReportingDataLoader,
)

_EXPORTS = {
    "CachedDataModule": "cached",
    "EOPatchLandCoverDataModule": "eopatch",
    "ManifestDataModule": "manifest",
    "MoleculeCSVDataModule": "molecules",
    "SyntheticCohortDataModule": "synthetic",
}

__all__ = [
    "CachedDataModule",
    "DistributedEpochSampler",
    "EOPatchLandCoverDataModule",
    "EpochSampler",
    "ManifestDataModule",
    "MoleculeCSVDataModule",
    "MultiModalDataModule",
    "ReportingDataLoader",
    "SyntheticCohortDataModule",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
