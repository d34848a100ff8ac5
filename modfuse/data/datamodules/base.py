"""MultiModalDataModule: seeded splits, loaders and collation for a MultiModalDataset.

The training order is a function of (seed, epoch) only, and it is part of the datamodule's
checkpoint state (``state_dict``/``load_state_dict``, which Lightning saves and restores), so a
run resumed from a checkpoint taken mid-epoch skips the batches that were already trained on
and goes on exactly where the interrupted run stopped. This holds for single-process runs and
for distributed (DDP) runs, where each process reads its shard through a
`DistributedSampler` seeded by the datamodule's seed; a distributed
run must resume with the same number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, DistributedSampler, Sampler, Subset

from modfuse.data.dataset import MultiModalDataset
from modfuse.data.splits import SplitKind, check_disjoint_groups, split_indices
from modfuse.data.transforms import EpochTagged, SampleTransforms, TransformedDataset
from modfuse.errors import ModfuseError
from modfuse.utils.lightning_compat import batches_done_this_epoch

__all__ = [
    "DistributedEpochSampler",
    "EpochSampler",
    "MultiModalDataModule",
    "ReportingDataLoader",
]


class MultiModalDataModule(LightningDataModule):
    """Splits a `MultiModalDataset` and serves `ModalityBatch` loaders.

    Args:
        dataset: the full dataset, or None when a subclass builds it in `build_dataset()`.
        split: ``random``, ``stratified`` (by the target) or ``group`` (by ``dataset.groups``).
        splits: explicit ``{"train": idx, "val": idx, "test": idx}``; overrides ``split``.
        val_fraction, test_fraction: split sizes.
        batch_size: samples per batch.
        num_workers: DataLoader workers.
        pin_memory: pin host memory (default: when CUDA is available).
        seed: split and shuffling seed (the training order of epoch ``e`` depends only on
            ``seed`` and ``e``, see `EpochSampler`).
        train_transform: optional callable applied to each training batch (e.g. ModalityDropout).
        train_transforms: modality -> callable applied to each training SAMPLE's value of that
            modality (random augmentation: MONAI array or dictionary transforms, torchvision,
            kornia), seeded per (seed, epoch, sample); see `modfuse.data.transforms`.
        eval_transforms: modality -> callable applied to each validation, test and prediction
            sample (deterministic preprocessing); training samples do not get it.
        predict_split: the part `predict_dataloader()` serves: ``"test"`` (default),
            ``"train"``, ``"val"`` or ``"all"`` (every sample, in dataset order).
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
        train_transforms: SampleTransforms | None = None,
        eval_transforms: SampleTransforms | None = None,
        predict_split: str = "test",
    ) -> None:
        super().__init__()
        self.predict_split = predict_split
        self.train_transforms = dict(train_transforms or {})
        self.eval_transforms = dict(eval_transforms or {})
        self.dataset = dataset
        self.split = split
        # subclasses may set index arrays here (build_dataset): any sequence of row positions
        self.given_splits: Mapping[str, Sequence[int] | np.ndarray] | None = splits
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.seed = seed
        self.train_transform = train_transform
        self.splits: dict[str, np.ndarray] | None = None
        self._resume_at: tuple[int, int] | None = None

    def build_dataset(self) -> MultiModalDataset:
        """Subclasses build the dataset here (called once, in `setup()`)."""
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

    def prepared(self) -> tuple[MultiModalDataset, dict[str, np.ndarray]]:
        """``setup()``, then the data set and its splits (part name -> row indices)."""
        self.setup()
        if self.dataset is None or self.splits is None:
            raise ModfuseError("the datamodule has no data set or no splits after setup()")
        return self.dataset, self.splits

    def subset(self, part: str) -> Subset:
        """The samples of ``part``: ``"train"``, ``"val"``, ``"test"`` or ``"all"``."""
        if self.splits is None:
            self.setup()
        dataset, splits = self.dataset, self.splits
        assert dataset is not None and splits is not None  # setup() sets both
        if part == "all":
            return Subset(dataset, list(range(len(dataset))))
        if part not in splits:
            raise ModfuseError(f"split: expected one of {[*splits, 'all']}, found {part!r}")
        return Subset(dataset, splits[part].tolist())

    def _loader(self, part: str, shuffle: bool, sampler: Sampler[int] | None = None) -> DataLoader:
        subset: Any = self.subset(part)
        per_sample = self.train_transforms if part == "train" else self.eval_transforms
        if per_sample:
            # training augmentation is seeded per (seed, epoch, sample): the sampler tags positions
            subset = TransformedDataset(subset, per_sample, self.seed if part == "train" else None)
            if part == "train" and sampler is not None:
                sampler = EpochTagged(sampler)
        assert self.dataset is not None  # subset() ran setup()
        collate = self.dataset.collate_fn
        if part == "train" and self.train_transform is not None:
            transform = self.train_transform
            collate = _Then(collate, transform)
        # the loader's own generator: creating an iterator must not draw from the global RNG
        # (a resumed run would otherwise be one draw out of step with an uninterrupted one)
        generator = torch.Generator().manual_seed(self.seed)
        return ReportingDataLoader(
            subset,
            batch_size=self.batch_size,
            shuffle=shuffle if sampler is None else False,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate,
            generator=generator,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches in a (seed, epoch) order that resumes mid-epoch.

        Under a distributed Lightning strategy (DDP, FSDP) each process gets its shard from a
        `DistributedEpochSampler` seeded by ``seed`` (Lightning keeps a sampler that is
        already distributed and calls its ``set_epoch``); otherwise an `EpochSampler`.
        """
        subset = self.subset("train")
        distributed = self._distributed_sampler_kwargs()
        sampler: Sampler[int]
        if distributed:
            sampler = DistributedEpochSampler(
                subset, self.seed, self.batch_size, resume=self._take_resume_point, **distributed
            )
        else:
            sampler = EpochSampler(len(subset), self.seed, self.batch_size, resume=self._take_resume_point)
        return self._loader("train", shuffle=False, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Batches of ``predict_split`` (default the test part), in order, unaugmented."""
        return self._loader(self.predict_split, shuffle=False)

    # ------------------------------------------------------------ resumable training order
    def _distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """``{"num_replicas", "rank"}`` when the attached trainer runs several processes."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None)
        return dict(kwargs) if kwargs else None

    def _take_resume_point(self) -> tuple[int, int] | None:
        """(epoch, batches to skip) restored from a checkpoint, handed out once."""
        point, self._resume_at = self._resume_at, None
        return point

    def state_dict(self) -> dict[str, Any]:
        """Where training stands, for Lightning checkpoints: ``{"train_order": {...}}``.

        ``epoch`` and ``batches`` are the epoch and the number of its batches already trained
        on (a checkpoint taken at the end of an epoch points at the start of the next one).
        Empty outside ``fit``.
        """
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        done = batches_done_this_epoch(trainer)
        if done is None:  # a Lightning version without this progress counter
            return {}
        epoch, total = int(trainer.current_epoch), trainer.num_training_batches
        if math.isfinite(total) and done >= total:
            epoch, done = epoch + 1, 0
        return {"train_order": {"seed": int(self.seed), "epoch": epoch, "batches": done}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training order saved by `state_dict()` (Lightning calls this)."""
        order = state_dict.get("train_order")
        trainer = self.trainer
        # evaluation restores the datamodule state too: only a resumed fit skips batches
        if order and trainer is not None and trainer.state.fn == "fit":
            self._resume_at = (int(order["epoch"]), int(order["batches"]))


class ReportingDataLoader(DataLoader):
    """A DataLoader that records its batches' read errors in the dataset's report.

    With ``num_workers > 0`` each worker reads from its own copy of the dataset, so what a
    worker records never reaches the main process; the batches do. Iterating this loader adds
    each batch's ``errors`` to `MultiModalDataset.record_errors()` of the dataset it reads
    (through any ``Subset``), in the main process. Same arguments as ``DataLoader``.
    """

    # torch types DataLoader.__iter__ as its own iterator class; this one is a generator over it
    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        report = _dataset_of(self.dataset)
        for batch in super().__iter__():
            errors = getattr(batch, "errors", None)
            if errors and report is not None:
                report.record_errors(errors)
            yield batch


def _dataset_of(data: Any) -> MultiModalDataset | None:
    """The MultiModalDataset under ``Subset`` wrappers, or None."""
    while isinstance(data, (Subset, TransformedDataset)):
        data = data.dataset
    return data if isinstance(data, MultiModalDataset) else None


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


class EpochSampler(Sampler[int]):
    """Shuffles ``range(n)`` in an order that depends only on (seed, epoch).

    Lightning calls `set_epoch()` before each epoch; without it, each new iteration moves
    on to the next epoch's order (as a shuffling loader would). ``resume`` is asked once per
    iteration for a pending ``(epoch, batches to skip)`` restored from a checkpoint: the
    iteration then starts part-way into that epoch. ``len`` is always a whole epoch, so the
    trainer's batch counters continue from the restored ones.

    Args:
        n: number of samples.
        seed: shuffling seed.
        batch_size: the loader's batch size (skips are counted in batches).
        resume: callable returning the pending resume point or None.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        batch_size: int,
        resume: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        self.n, self.seed, self.batch_size, self.resume = n, seed, batch_size, resume
        self.epoch = 0
        self.last_epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # Lightning creates the first iterator of a (resumed) run before it calls set_epoch,
        # so the resumed epoch comes from the resume point itself
        epoch, skip = (self.resume and self.resume()) or (self.epoch, 0)
        self.last_epoch, self.epoch = epoch, epoch + 1  # last_epoch: the one being iterated
        return iter(_permutation(self.n, self.seed, epoch)[skip * self.batch_size :])

    def __len__(self) -> int:
        return self.n


class DistributedEpochSampler(DistributedSampler):
    """A shuffling `DistributedSampler` (seeded by ``seed``; the
    order of epoch ``e`` per rank depends only on seed and ``e``) that can start part-way into
    an epoch, like `EpochSampler`.

    Args:
        dataset: the training subset.
        seed: shuffling seed (the same on every rank).
        batch_size: the per-process batch size (skips are counted in batches).
        resume: callable returning the pending resume point or None.
        num_replicas, rank: the process group (from the Lightning strategy).
    """

    def __init__(
        self,
        dataset: Any,
        seed: int,
        batch_size: int,
        resume: Callable[[], tuple[int, int] | None] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size, self.resume = batch_size, resume

    def __iter__(self) -> Iterator[int]:
        point = self.resume() if self.resume else None
        if point is None:
            self.last_epoch = self.epoch
            return super().__iter__()
        epoch, skip = point
        self.set_epoch(epoch)
        self.last_epoch = epoch
        return iter(list(super().__iter__())[skip * self.batch_size :])


class _Then:
    """collate, then a batch transform (a picklable composition for worker processes)."""

    def __init__(self, first: Callable[[Any], Any], then: Callable[[Any], Any]) -> None:
        self.first, self.then = first, then

    def __call__(self, samples: Any) -> Any:
        return self.then(self.first(samples))
