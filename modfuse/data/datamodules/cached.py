"""`CachedDataModule`: train from a cache folder written by `modfuse.data.cache.write_cache()` /
``modfuse prepare-cache``, in shard order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch.utils.data import DataLoader

from modfuse.data.cache import ShardEpochSampler, load_cache
from modfuse.data.datamodules.base import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.splits import SplitKind

__all__ = ["CachedDataModule"]


class CachedDataModule(MultiModalDataModule):
    """Train from a cache folder written by `write_cache()` / ``modfuse prepare-cache``.

    The splits saved with the cache (those of the recipe's datamodule) are used unless
    ``splits`` is given; without saved splits the usual seeded split applies. Training batches
    come in shard order (`ShardEpochSampler`): each DDP rank and DataLoader worker reads
    its own shards, and a checkpoint taken mid-epoch resumes at the same place (the
    datamodule's ``state_dict``).

    Args:
        cache_dir: the cache folder.
        split: split kind when the cache has no saved splits (see ``MultiModalDataModule``).
        splits: explicit splits, overriding the saved ones.
        val_fraction, test_fraction, batch_size, num_workers, pin_memory, seed, train_transform: as
            in [`MultiModalDataModule`][modfuse.data.MultiModalDataModule].
    """

    def __init__(
        self,
        cache_dir: str,
        split: SplitKind = "stratified",
        splits: Mapping[str, Sequence[int]] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(
            None, split, splits, val_fraction, test_fraction, batch_size, num_workers, pin_memory, seed, train_transform
        )
        self.cache_dir = cache_dir

    def build_dataset(self) -> MultiModalDataset:
        dataset = load_cache(self.cache_dir)
        if self.given_splits is None and dataset.cache.splits:  # type: ignore[attr-defined]
            self.given_splits = dataset.cache.splits  # type: ignore[attr-defined]
        return dataset

    def train_dataloader(self) -> DataLoader:
        subset = self.subset("train")
        shards = self.dataset.cache.shard_of(subset.indices)  # type: ignore[union-attr]
        distributed = self._distributed_sampler_kwargs() or {}
        sampler = ShardEpochSampler(
            shards, self.seed, self.batch_size, self._take_resume_point, num_workers=self.num_workers, **distributed
        )
        return self._loader("train", shuffle=False, sampler=sampler)
