"""MultiModalDataModule: seeded splits, loaders and collation for a MultiModalDataset."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from lightning import LightningDataModule
from sklearn.model_selection import GroupShuffleSplit, train_test_split
from torch.utils.data import DataLoader, Subset

from modfuse.data.dataset import MultiModalDataset
from modfuse.errors import ModfuseError

__all__ = ["MultiModalDataModule", "split_indices"]

SplitKind = Literal["random", "stratified", "group"]


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
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ModfuseError(
            f"fractions must be in [0, 1) with a sum < 1, found val={val_fraction}, test={test_fraction}"
        )

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


class MultiModalDataModule(LightningDataModule):
    """Splits a :class:`MultiModalDataset` and serves :class:`ModalityBatch` loaders.

    Args:
        dataset: the full dataset, or None when a subclass builds it in :meth:`build_dataset`.
        split: ``random``, ``stratified`` (by the target) or ``group`` (by ``dataset.groups``).
        splits: explicit ``{"train": idx, "val": idx, "test": idx}``; overrides ``split``.
        val_fraction, test_fraction: split sizes.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        pin_memory: pin host memory (default: when CUDA is available).
        seed: split and shuffling seed.
        train_transform: optional callable applied to each training batch (e.g. ModalityDropout).
    """

    def __init__(
        self,
        dataset: MultiModalDataset | None = None,
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
        super().__init__()
        self.dataset = dataset
        self.split = split
        self.given_splits = splits
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.seed = seed
        self.train_transform = train_transform
        self.splits: dict[str, np.ndarray] | None = None

    def build_dataset(self) -> MultiModalDataset:
        """Subclasses build the dataset here (called once, in :meth:`setup`)."""
        raise ModfuseError("MultiModalDataModule needs a dataset (or a subclass implementing build_dataset)")

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = self.build_dataset()
        if self.splits is not None:
            return
        if self.given_splits is not None:
            self.splits = {k: np.asarray(v, dtype=int) for k, v in self.given_splits.items()}
            check_disjoint_groups(self.splits, self.dataset.groups)
            return
        labels = self.dataset.label_array()
        kind = self.split
        if kind == "stratified" and (labels is None or (labels.dtype.kind == "f" and len(np.unique(labels)) > 50)):
            kind = "random"  # continuous or absent targets cannot be stratified
        self.splits = split_indices(
            len(self.dataset), kind, self.val_fraction, self.test_fraction, labels, self.dataset.groups, self.seed
        )

    def subset(self, part: str) -> Subset:
        if self.splits is None:
            self.setup()
        return Subset(self.dataset, self.splits[part].tolist())

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        subset = self.subset(part)
        collate = self.dataset.collate_fn
        if part == "train" and self.train_transform is not None:
            transform = self.train_transform
            collate = _Then(collate, transform)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            subset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate,
            generator=generator,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class _Then:
    """collate, then a batch transform (a picklable composition for worker processes)."""

    def __init__(self, first: Callable[[Any], Any], then: Callable[[Any], Any]) -> None:
        self.first, self.then = first, then

    def __call__(self, samples: Any) -> Any:
        return self.then(self.first(samples))
