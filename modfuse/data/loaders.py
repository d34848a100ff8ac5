"""Any data container users hand to evaluation or explanation code, as `ModalityBatch` objects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, Subset

from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError

__all__ = ["iter_batches"]


def iter_batches(data: Any, batch_size: int = 64) -> Iterator[ModalityBatch]:
    """Yield `ModalityBatch` objects from any supported data container.

    Args:
        data: a ModalityBatch, a list of them, a DataLoader yielding them, a
            `MultiModalDataset` (or a ``Subset`` of one), or a datamodule (its test split).
        batch_size: batch size when a loader has to be built.
    """
    if isinstance(data, ModalityBatch):
        yield data
        return
    if isinstance(data, (list, tuple)) and data and all(isinstance(b, ModalityBatch) for b in data):
        yield from data
        return
    if hasattr(data, "test_dataloader") and hasattr(data, "setup"):
        if getattr(data, "splits", None) is None:
            data.setup("test")
        data = data.test_dataloader()
    elif isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=_collate_of(data))
    if not isinstance(data, DataLoader):
        raise ModfuseError(
            "expected a ModalityBatch, a DataLoader of them, a MultiModalDataset or a datamodule, "
            f"found {type(data).__name__}"
        )
    for batch in data:
        if not isinstance(batch, ModalityBatch):
            raise ModfuseError(f"the loader yielded a {type(batch).__name__}, expected a ModalityBatch")
        yield batch


def _collate_of(dataset: Dataset) -> Any:
    base = dataset
    while isinstance(base, Subset):
        base = base.dataset
    collate = getattr(base, "collate_fn", None)
    if collate is None:
        raise ModfuseError(f"{type(base).__name__} has no collate_fn; pass a MultiModalDataset or a DataLoader")
    return collate
