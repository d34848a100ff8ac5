"""Missingness simulators (MCAR, MAR, MNAR) applied reproducibly to datasets and datamodules.

A simulator decides, for every sample and modality, whether to remove that modality, and
returns a NEW dataset (or datamodule) whose sources report the removed pairs as missing; the
original data are never modified. Decisions are drawn from ``seed`` for every sample of the
dataset in order, so they do not depend on which split is being simulated.

Mechanisms (``p`` is the removal probability for the samples the mechanism targets):

- `mcar()`: every present (sample, modality) pair is removed with probability ``p``.
- `mar()`: depends on an *observed* variable: a ``driver`` modality that is never removed.
  Its per-sample score (one feature column, or the row mean) is compared with its median:
  samples above the median lose each targeted modality with probability ``p``, the others keep
  them (``flip=True`` targets the samples at or below the median instead).
- `mnar()`: depends on the label: positives (binary), the classes above the median class
  or the ``classes`` you name (multiclass), samples with an event (survival) or above-median
  targets (regression) lose each targeted modality with probability ``p``; ``flip=True``
  targets the other samples, so a test set can invert the training pattern.

By default a sample keeps at least one of its modalities (one of the removed ones, chosen at
random, is restored), since a real cohort has no sample without any data; set
``keep_one=False`` for the textbook definition.

Example:
    >>> train_dm = mnar(0.5).apply(dm, parts=("train", "val"))
    >>> shifted = mnar(0.5, flip=True).apply(train_dm, parts=("test",))
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from modfuse.data.dataset import MultiModalDataset
from modfuse.data.sources import MaskedSource, Source
from modfuse.errors import ModfuseError

__all__ = ["MaskedSource", "Missingness", "mar", "mcar", "mnar", "simulate"]

Kind = Literal["mcar", "mar", "mnar"]


@dataclass(frozen=True)
class Missingness:
    """A seeded missingness mechanism; build it with `mcar()`, `mar()` or `mnar()`.

    Args:
        kind: ``"mcar"``, ``"mar"`` or ``"mnar"``.
        p: removal probability in the targeted samples, in [0, 1].
        modalities: the modalities that may be removed (default: all; for MAR all but the driver).
        seed: random seed; the same seed on the same dataset gives the same removals.
        flip: MAR/MNAR only: target the other half of the samples.
        driver: MAR only: the observed modality that decides (default: the first modality).
        feature: MAR only: the driver column (index into the flattened row) used as score;
            None uses the row mean.
        keep_one: restore one removed modality of a sample that would otherwise have none.
        classes: MNAR only: the labels of the targeted classes (multiclass targets); None
            targets the classes above the median class.
    """

    kind: Kind
    p: float
    modalities: tuple[str, ...] | None = None
    seed: int = 0
    flip: bool = False
    driver: str | None = None
    feature: int | None = None
    keep_one: bool = True
    classes: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("mcar", "mar", "mnar"):
            raise ModfuseError(f"unknown missingness kind {self.kind!r}; expected 'mcar', 'mar' or 'mnar'")
        if not 0.0 <= float(self.p) <= 1.0:
            raise ModfuseError(f"a missingness probability must be in [0, 1], found {self.p}")
        if self.kind == "mcar" and self.flip:
            raise ModfuseError("flip applies to 'mar' and 'mnar' (MCAR has no dependence to invert)")
        if self.modalities is not None:
            object.__setattr__(self, "modalities", tuple(self.modalities))
        if self.classes is not None:
            if self.kind != "mnar":
                raise ModfuseError("classes=... applies to 'mnar' (the label decides which samples are targeted)")
            object.__setattr__(self, "classes", tuple(np.atleast_1d(self.classes).tolist()))

    @property
    def name(self) -> str:
        """Short label, e.g. ``"mnar-flip"``."""
        return f"{self.kind}-flip" if self.flip else self.kind

    # ------------------------------------------------------------------ decisions
    def targeted(self, dataset: MultiModalDataset) -> np.ndarray:
        """Bool (N,): the samples the mechanism acts on (all for MCAR)."""
        n = len(dataset)
        if self.kind == "mcar":
            return np.ones(n, dtype=bool)
        if self.kind == "mnar":
            high = _label_high(dataset, self.classes)
            targeted = ~high if self.flip else high
            _warn_if_degenerate(targeted, self.name)
            return targeted
        scores = _driver_scores(dataset, self._driver(dataset), self.feature)
        observed = ~np.isnan(scores)
        # samples without the driver have no observed score and are never targeted
        high = np.where(observed, scores > np.nanmedian(scores), False)
        return (~high if self.flip else high) & observed

    def _driver(self, dataset: MultiModalDataset) -> str:
        driver = self.driver if self.driver is not None else dataset.modalities[0]
        if driver not in dataset.modalities:
            raise ModfuseError(f"MAR driver {driver!r} is not a modality of the dataset {dataset.modalities}")
        return driver

    def _candidates(self, dataset: MultiModalDataset) -> list[str]:
        names = dataset.modalities
        chosen = list(self.modalities) if self.modalities is not None else list(names)
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ModfuseError(f"unknown modalities {unknown}; the dataset has {names}")
        if self.kind == "mar":
            driver = self._driver(dataset)
            if self.modalities is not None and driver in chosen:
                raise ModfuseError(f"the MAR driver {driver!r} is observed by definition and cannot be removed")
            chosen = [m for m in chosen if m != driver]
        return chosen

    def removed(self, dataset: MultiModalDataset, rows: Sequence[int] | None = None) -> pd.DataFrame:
        """Bool DataFrame (ids x modalities): True where this mechanism removes the modality.

        Args:
            dataset: the dataset to simulate on.
            rows: positions of the samples that may be affected (e.g. the test split);
                default all. Draws are made for every sample, so a sample's fate does not
                depend on ``rows``.
        """
        present = dataset.present_matrix().to_numpy()
        names = dataset.modalities
        rng = np.random.default_rng(self.seed)
        draws = rng.random(present.shape)
        restore_scores = rng.random(present.shape)
        cols = np.isin(names, self._candidates(dataset))
        eligible = present & cols[None, :] & self.targeted(dataset)[:, None]
        if rows is not None:
            in_rows = np.zeros(len(dataset), dtype=bool)
            in_rows[np.asarray(rows, dtype=int)] = True
            eligible &= in_rows[:, None]
        removed = eligible & (draws < self.p)
        if self.keep_one:
            emptied = present.any(1) & ~(present & ~removed).any(1)
            # restore the removed modality with the highest random score
            pick = np.where(removed, restore_scores, -1.0).argmax(1)
            removed[emptied, pick[emptied]] = False
        return pd.DataFrame(removed, index=pd.Index(dataset.ids, name="id"), columns=names)

    # ------------------------------------------------------------------ application
    def apply(self, data: Any, parts: Sequence[str] | None = None) -> Any:
        """A copy of ``data`` with this missingness.

        Args:
            data: a `MultiModalDataset`, or a `MultiModalDataModule` (its dataset
                is replaced; its splits are kept).
            parts: datamodule only: the splits to affect (default: all samples).

        Returns:
            A new dataset (sources wrapped in `MaskedSource`) or a shallow copy of the
            datamodule holding such a dataset.
        """
        if isinstance(data, MultiModalDataset):
            if parts is not None:
                raise ModfuseError("parts=... applies to a datamodule; a dataset has no splits")
            return self._apply_dataset(data, None)
        if hasattr(data, "setup") and hasattr(data, "subset"):
            return self._apply_datamodule(data, parts)
        raise ModfuseError(f"expected a MultiModalDataset or a MultiModalDataModule, found {type(data).__name__}")

    __call__ = apply

    def _apply_dataset(self, dataset: MultiModalDataset, rows: Sequence[int] | None) -> MultiModalDataset:
        removed = self.removed(dataset, rows)
        sources: dict[str, Source] = {
            m: MaskedSource(src, removed.index[removed[m].to_numpy()]) if removed[m].any() else src
            for m, src in dataset.sources.items()
        }
        return MultiModalDataset(
            sources,
            targets=dataset.targets,
            ids=dataset.ids,
            groups=None if dataset.groups is None else list(dataset.groups),
            on_error=dataset.on_error,
            transforms=dataset.transforms,
        )

    def _apply_datamodule(self, dm: Any, parts: Sequence[str] | None) -> Any:
        if dm.splits is None:
            dm.setup()
        rows: list[int] | None = None
        if parts is not None:
            unknown = sorted(set(parts) - set(dm.splits))
            if unknown:
                raise ModfuseError(f"unknown splits {unknown}; the datamodule has {sorted(dm.splits)}")
            rows = np.concatenate([np.asarray(dm.splits[p], dtype=int) for p in parts]).tolist()
        out = copy.copy(dm)
        out.dataset = self._apply_dataset(dm.dataset, rows)
        return out


def mcar(p: float, modalities: Sequence[str] | None = None, seed: int = 0, keep_one: bool = True) -> Missingness:
    """Missing completely at random: each present modality is removed with probability ``p``.

    Args:
        p: removal probability.
        modalities: the modalities that may be removed (default all).
        seed: random seed.
        keep_one: never leave a sample without any modality.
    """
    return Missingness("mcar", p, _tuple(modalities), seed, keep_one=keep_one)


def mar(
    p: float,
    driver: str | None = None,
    modalities: Sequence[str] | None = None,
    feature: int | None = None,
    seed: int = 0,
    flip: bool = False,
    keep_one: bool = True,
) -> Missingness:
    """Missing at random: removal depends on an observed ``driver`` modality.

    Samples whose driver score (column ``feature`` of the flattened driver row, or its mean)
    is above the median lose each targeted modality with probability ``p``; ``flip`` targets
    the samples at or below the median. Samples without the driver are never targeted.

    Args:
        p: removal probability in the targeted samples.
        driver: the observed modality (default: the dataset's first); never removed.
        modalities: the modalities that may be removed (default: all but the driver).
        feature: driver column used as score (default: the row mean).
        seed: random seed.
        flip: invert the dependence.
        keep_one: never leave a sample without any modality.
    """
    return Missingness("mar", p, _tuple(modalities), seed, flip, driver, feature, keep_one)


def mnar(
    p: float,
    modalities: Sequence[str] | None = None,
    seed: int = 0,
    flip: bool = False,
    keep_one: bool = True,
    classes: Sequence[Any] | None = None,
) -> Missingness:
    """Missing not at random: removal depends on the label.

    Targeted samples: positives (binary 0/1 labels); for integer labels with more classes, the
    samples of ``classes``, or by default of the classes above the median class (so about half
    of the samples at most, whatever the class balance); samples with an event (survival
    targets (time, event)); above-median targets (continuous). ``flip`` targets the complement.
    Multi-task datasets use the first task. A mechanism that targets under 5% or over 95% of the
    samples warns: its curve would look like no missingness or like MCAR.

    Args:
        p: removal probability in the targeted samples.
        modalities: the modalities that may be removed (default all).
        seed: random seed.
        flip: invert the dependence on the label.
        keep_one: never leave a sample without any modality.
        classes: multiclass labels only: the labels whose samples are targeted.
    """
    chosen = None if classes is None else tuple(np.atleast_1d(classes).tolist())
    return Missingness("mnar", p, _tuple(modalities), seed, flip, keep_one=keep_one, classes=chosen)


def simulate(kind: str, p: float, **kwargs: Any) -> Missingness:
    """Build a mechanism by name: ``"mcar"``, ``"mar"``, ``"mnar"`` or ``"mnar-flip"`` / ``"mar-flip"``."""
    base, _, suffix = kind.partition("-")
    if suffix not in ("", "flip"):
        raise ModfuseError(f"unknown missingness kind {kind!r}; expected mcar, mar, mnar, mar-flip or mnar-flip")
    if suffix:
        kwargs["flip"] = True
    makers: dict[str, Callable[..., Missingness]] = {"mcar": mcar, "mar": mar, "mnar": mnar}
    if base not in makers:
        raise ModfuseError(f"unknown missingness kind {kind!r}; expected mcar, mar, mnar, mar-flip or mnar-flip")
    return makers[base](p, **kwargs)


def _tuple(modalities: Sequence[str] | None) -> tuple[str, ...] | None:
    if isinstance(modalities, str):
        return (modalities,)
    return None if modalities is None else tuple(modalities)


def _label_high(dataset: MultiModalDataset, classes: tuple[Any, ...] | None = None) -> np.ndarray:
    """Bool (N,): the "positive" samples of the (first) task, as documented in `mnar()`."""
    targets = dataset.targets
    if targets is None:
        raise ModfuseError("mnar needs a dataset with targets (the missingness depends on the label)")
    y = np.asarray(next(iter(targets.values())) if isinstance(targets, dict) else targets)
    if y.ndim == 2 and y.shape[1] == 2 and np.isin(y[:, 1], (0, 1)).all() and not np.isin(y[:, 0], (0, 1)).all():
        return y[:, 1] == 1  # survival (time, event): an event is the "positive" outcome
    if y.ndim > 1:
        y = y.reshape(len(y), -1)[:, 0]
    y = y.astype(float)
    values = np.unique(y[~np.isnan(y)])
    labels = np.allclose(values, np.round(values)) and len(values) <= 50
    if classes is not None:
        unknown = sorted(set(np.asarray(classes, dtype=float).tolist()) - set(values.tolist()))
        if not labels or unknown:
            raise ModfuseError(f"mnar classes={list(classes)}: the labels present are {values.tolist()}")
        return np.isin(y, np.asarray(classes, dtype=float))
    if np.isin(values, (0.0, 1.0)).all():
        return y == 1
    # multiclass: classes above the median class (a rare class 0 must not make "not 0" = everyone)
    return y > np.nanmedian(y)


def _warn_if_degenerate(targeted: np.ndarray, name: str) -> None:
    share = float(targeted.mean()) if len(targeted) else 0.0
    if not 0.05 <= share <= 0.95:
        warnings.warn(
            f"{name} targets {share:.1%} of the samples, so it removes almost nothing or acts like MCAR; "
            "for multiclass labels choose the targeted labels with mnar(..., classes=[...])",
            stacklevel=3,
        )


def _driver_scores(dataset: MultiModalDataset, driver: str, feature: int | None) -> np.ndarray:
    """Float (N,): each sample's driver score (NaN where the driver is missing)."""
    src = dataset.sources[driver]
    has = set(src.ids)
    scores = np.full(len(dataset), np.nan)
    for i, sid in enumerate(dataset.ids):
        value = src.load(sid) if sid in has else None
        if value is None:
            continue
        row = torch.as_tensor(value, dtype=torch.float32).reshape(-1)
        if feature is not None and not -row.numel() <= feature < row.numel():
            raise ModfuseError(f"MAR feature {feature} is outside the driver's {row.numel()} values", modality=driver)
        scores[i] = float(row[feature]) if feature is not None else float(torch.nanmean(row))
    if np.isnan(scores).all():
        raise ModfuseError("no sample has the MAR driver modality", modality=driver)
    return scores
