"""Moved to `modfuse.data.datamodules.base` (every datamodule now lives in
`modfuse.data.datamodules`, every split in `modfuse.data.splits`); this path keeps working."""

from __future__ import annotations

from modfuse.data.datamodules.base import (
    DistributedEpochSampler,
    EpochSampler,
    MultiModalDataModule,
    ReportingDataLoader,
)
from modfuse.data.splits import SplitKind, check_disjoint_groups, split_indices

__all__ = [
    "DistributedEpochSampler",
    "EpochSampler",
    "MultiModalDataModule",
    "ReportingDataLoader",
    "SplitKind",
    "check_disjoint_groups",
    "split_indices",
]
