"""Moved to `modfuse.data.splits` (one home for every split); this path keeps working."""

from __future__ import annotations

from modfuse.data.splits import (
    PARTITIONS,
    fold_split,
    group_split,
    multilabel_stratified_split,
    murcko_scaffolds,
    read_split,
    scaffold_split,
    spatial_block_split,
    spatial_blocks,
    split_frame,
    write_split,
)

__all__ = [
    "PARTITIONS",
    "fold_split",
    "group_split",
    "multilabel_stratified_split",
    "murcko_scaffolds",
    "read_split",
    "scaffold_split",
    "spatial_block_split",
    "spatial_blocks",
    "split_frame",
    "write_split",
]
