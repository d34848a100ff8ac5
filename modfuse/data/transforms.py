"""Per-modality, per-sample transforms (a training variant and an evaluation variant) and the
one standardisation of the library, `Standardizer`.

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

`Standardizer` is what every part of modfuse that standardises features uses (the datamodules
over manifests and domain files, the tabular and raster readers' statistics, the estimators'
automatic encoders and targets, the benchmarks): statistics are fitted on training rows only
and one rule decides a zero or undefined spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, overload

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochTagged", "SampleTransforms", "Standardizer", "TransformedDataset", "call_transform"]

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


# ---------------------------------------------------------------------------- standardisation
SPREAD_FLOOR = 1e-8
"""A spread at or below ``SPREAD_FLOOR * max(1, |mean|)`` counts as zero (float rounding of a
constant column leaves ~1e-17, which would blow the column up instead of centring it)."""


class Standardizer:
    """Per-column standardisation ``(x - mean) / std`` with statistics of training rows only.

    The rule, the same everywhere in modfuse:

    - statistics come from the rows given to `fit` (the training partition: validation and test
      rows never contribute, which would leak), per column, over its finite cells only (NaN and
      inf cells, i.e. missing or bad values, are ignored);
    - ``mean`` is their mean (0 for a column with no finite cell);
    - ``std`` is their population standard deviation (ddof=0); a spread that is zero (at or
      below ``SPREAD_FLOOR * max(1, |mean|)``) or not finite (fewer than one finite cell)
      becomes 1, so a constant column turns into 0-centred constants instead of dividing by
      zero;
    - ``keep`` columns (e.g. integer category codes) get mean 0 and std 1: they pass unchanged.

    `transform` leaves NaN as NaN (it means missing to the encoders). `to_dict` / `from_dict`
    give plain lists, for configs, JSON caches and encoder arguments.

    Args:
        mean: (F,) column means.
        std: (F,) column standard deviations; the spread rule is applied to them too.

    Example:
        >>> s = Standardizer.fit(values, rows=splits["train"])   # values (n, F)
        >>> z = s.transform(values)                               # (n, F), NaN kept
        >>> build("tabular", num_features=F, **s.to_dict())
    """

    def __init__(self, mean: Any, std: Any) -> None:
        mean_a = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        std_a = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if mean_a.shape != std_a.shape or mean_a.ndim != 1:
            raise ValueError(f"mean and std must be (F,) of one length, found shapes {mean_a.shape} and {std_a.shape}")
        self.mean = np.where(np.isfinite(mean_a), mean_a, 0.0)
        floor = SPREAD_FLOOR * np.maximum(1.0, np.abs(self.mean))
        self.std = np.where(np.isfinite(std_a) & (std_a > floor), std_a, 1.0)
        self._torch: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def fit(cls, values: Any, rows: Any = None, keep: Any = None) -> Standardizer:
        """Statistics of ``values[rows]`` by the rule above.

        Args:
            values: (n, F) array-like (a tensor or DataFrame too); (n,) is one column.
            rows: the training rows (indices or a boolean mask); None = every row.
            keep: columns left unchanged (indices or a (F,) boolean mask), e.g. category codes.
        """
        data = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
        x = np.asarray(data, dtype=np.float64)
        x = x.reshape(x.shape[0], int(np.prod(x.shape[1:]))) if x.ndim != 2 else x  # (n,) is one column
        if rows is not None:
            x = x[np.asarray(rows)]
        finite = np.isfinite(x)
        count = finite.sum(axis=0)
        safe = np.where(finite, x, 0.0)
        mean = safe.sum(axis=0) / np.maximum(count, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(finite, (safe - mean) ** 2, 0.0).sum(axis=0) / count
        std = np.sqrt(var)  # NaN where a column has no finite cell: the rule makes it 1
        if keep is not None:
            kept = np.zeros(x.shape[1], dtype=bool)
            kept[np.asarray(keep)] = True
            mean[kept], std[kept] = 0.0, 1.0
        return cls(mean, std)

    def __len__(self) -> int:
        return len(self.mean)

    def _as(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._torch is None:
            self._torch = (
                torch.as_tensor(self.mean, dtype=torch.float32),
                torch.as_tensor(self.std, dtype=torch.float32),
            )
        mean, std = self._torch
        dtype = x.dtype if x.is_floating_point() else torch.float32
        return mean.to(x.device, dtype), std.to(x.device, dtype)

    @overload
    def transform(self, x: np.ndarray) -> np.ndarray: ...
    @overload
    def transform(self, x: torch.Tensor) -> torch.Tensor: ...
    def transform(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``(x - mean) / std`` over the last axis ((..., F), a tensor or an array; NaN stays NaN)."""
        if isinstance(x, torch.Tensor):
            mean, std = self._as(x)
            return (x - mean) / std
        a = np.asarray(x)
        out = (a - self.mean) / self.std
        return out.astype(a.dtype) if np.issubdtype(a.dtype, np.floating) else out

    __call__ = transform

    @overload
    def inverse(self, z: np.ndarray) -> np.ndarray: ...
    @overload
    def inverse(self, z: torch.Tensor) -> torch.Tensor: ...
    def inverse(self, z: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``z * std + mean``: values back in the original units (e.g. regression predictions)."""
        if isinstance(z, torch.Tensor):
            mean, std = self._as(z)
            return z * std + mean
        a = np.asarray(z)
        out = a * self.std + self.mean
        return out.astype(a.dtype) if np.issubdtype(a.dtype, np.floating) else out

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``: plain lists (JSON, configs, ``build("tabular", ...)``)."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Standardizer:
        """The inverse of `to_dict`."""
        return cls(state["mean"], state["std"])

    def __repr__(self) -> str:
        return f"Standardizer(features={len(self)})"
