"""Per-modality, per-sample transforms with a training variant and an evaluation variant.

`MultiModalDataModule(train_transforms=..., eval_transforms=...)` applies, to each loaded
sample and each modality named, a callable: the training one to training samples only
(random augmentation), the evaluation one to validation, test and prediction samples
(deterministic preprocessing). Any callable works: MONAI array transforms (``RandFlip``),
MONAI dictionary transforms (``RandFlipd(keys="image")``: a modality value that is not a
dict is passed as ``{key: value}`` with the transform's first key, and that key is taken
back), ``monai.transforms.Compose`` of either, torchvision v2 and kornia transforms.

Random augmentation is seeded per sample: before each call the transform's own generator
(MONAI's ``set_random_state``) and torch's and NumPy's global generators are seeded from
(seed, epoch, sample position, modality), inside a forked RNG state. A sample is then
augmented the same way whatever its batch, its loader worker or an interrupted-and-resumed
run, and differently in each epoch. MONAI's ``MetaTensor`` results are returned as plain
tensors, so batches collate as usual.

Example:
    >>> from monai.transforms import Compose, RandFlipd, RandRotated
    >>> aug = Compose([RandFlipd(keys="image", prob=0.5, spatial_axis=1),
    ...                RandRotated(keys="image", range_x=0.3, prob=0.5)])
    >>> dm = MultiModalDataModule(ds, train_transforms={"ct": aug})
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochTagged", "SampleTransforms", "TransformedDataset", "call_transform"]

SampleTransforms = Mapping[str, Callable[[Any], Any]]
"""modality -> callable applied to that modality's value of one sample."""


def _dict_key(transform: Any) -> str | None:
    """The first key of a MONAI dictionary transform (or of the first one inside a Compose)."""
    try:
        from monai.transforms import Compose, MapTransform
    except ImportError:  # MONAI is optional: without it no transform is a MONAI dict transform
        return None
    if isinstance(transform, MapTransform):
        return str(transform.keys[0])
    if isinstance(transform, Compose):
        for inner in transform.flatten().transforms:
            key = _dict_key(inner)
            if key is not None:
                return key
    return None


def _plain(value: Any) -> Any:
    """MONAI MetaTensors (and other Tensor subclasses) as plain tensors; dicts member-wise."""
    if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor:
        return value.as_subclass(torch.Tensor)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _seed_of(seed: int, epoch: int, position: int, modality: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, position, modality]).generate_state(1)[0])


def call_transform(transform: Callable[[Any], Any], value: Any, seed: int | None = None) -> Any:
    """Apply ``transform`` to one modality value, seeded when ``seed`` is given.

    Args:
        transform: any callable; a MONAI dictionary transform gets ``{key: value}`` for a
            value that is not a dict and gives back ``result[key]``.
        value: the loaded value (a Tensor such as (C, H, W), or a dict of them).
        seed: seeds the transform's MONAI generator and torch's / NumPy's global generators
            for this call only (the callers' RNG states are restored afterwards).

    Returns:
        The transformed value, MetaTensors as plain tensors.
    """
    key = None if isinstance(value, Mapping) else _dict_key(transform)
    given = {key: value} if key is not None else value
    if seed is None:
        out = transform(given)
    else:
        if hasattr(transform, "set_random_state"):  # MONAI Randomizable and Compose
            transform.set_random_state(seed=seed)
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed % 2**32)
                out = transform(given)
        finally:
            np.random.set_state(numpy_state)
    return _plain(out[key] if key is not None else out)


class TransformedDataset(Dataset):
    """A dataset (e.g. a ``Subset`` of a `MultiModalDataset`) whose items' modality values go
    through per-modality transforms.

    Items are indexed by position, or by ``(epoch, position)`` pairs (what `EpochTagged`
    yields), so random transforms are seeded per (seed, epoch, position, modality).

    Args:
        dataset: yields ``{"id", "inputs": {modality: value or None}, ...}`` items.
        transforms: modality -> callable; a missing (None) value is left as it is.
        seed: base seed of random transforms; None applies them unseeded (deterministic
            evaluation transforms need no seed).
    """

    def __init__(self, dataset: Any, transforms: SampleTransforms, seed: int | None = None) -> None:
        self.dataset, self.transforms, self.seed = dataset, dict(transforms), seed
        self._order = {m: i for i, m in enumerate(self.transforms)}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, position = key if isinstance(key, tuple) else (0, key)
        item = self.dataset[position]
        inputs = dict(item["inputs"])
        for m, transform in self.transforms.items():
            if inputs.get(m) is None:
                continue
            seed = None if self.seed is None else _seed_of(self.seed, epoch, position, self._order[m])
            try:
                inputs[m] = call_transform(transform, inputs[m], seed)
            except Exception as exc:  # name the sample and modality, as a reader error would
                from modfuse.errors import ModfuseError

                raise ModfuseError(
                    f"transform {type(transform).__name__} failed on modality {m!r} of sample {item['id']!r}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        return {**item, "inputs": inputs}


class EpochTagged(Sampler):
    """Wraps a sampler of positions to yield ``(epoch, position)`` pairs for `TransformedDataset`.

    The epoch is the one the wrapped sampler is iterating (its ``last_epoch`` after
    ``iter()``, else its ``epoch``), so a resumed run tags its batches with the resumed epoch.
    ``set_epoch`` and ``len`` are those of the wrapped sampler.
    """

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        positions = iter(self.sampler)
        epoch = int(getattr(self.sampler, "last_epoch", getattr(self.sampler, "epoch", 0)))
        return ((epoch, int(i)) for i in positions)

    def __len__(self) -> int:
        return len(self.sampler)
