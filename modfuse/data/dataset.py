"""MultiModalDataset: joins per-modality sources on a sample id."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from modfuse.data.batch import ModalityBatch
from modfuse.data.collate import CollateMode, collate_samples
from modfuse.data.sources import ArraySource, Source, has_value
from modfuse.errors import ModfuseError, ReadError

__all__ = ["MultiModalDataset"]

log = logging.getLogger(__name__)

OnError = Literal["raise", "missing"]


class MultiModalDataset(Dataset):
    """Samples joined across modality sources by sample id; any modality may be missing.

    Each item is ``{"id": id, "inputs": {modality: value or None}, "target": target or None}``;
    `collate_fn()` turns a list of items into a `ModalityBatch`.

    Args:
        sources: modality name -> `Source` (a reader or an `ArraySource`).
        targets: per-sample targets aligned with ``ids``: an array (N,) or (N, k), a dict
            task -> array for multi-task, a DataFrame/Series indexed by id, or None.
        ids: the sample ids, in order (default: the union of the sources' ids, first seen first).
            Repeated ids are refused (a sample counted twice could land in train and test);
            ids that a source has but ``ids`` leaves out are not in the dataset, and a
            ``UserWarning`` gives their count and the first of them.
        groups: optional group per sample (patient, site) for grouped splits.
        on_error: ``"raise"`` (default): a bad file raises an error naming the file, sample and
            modality; ``"missing"``: that modality is marked missing for that sample and the
            problem is recorded in `read_errors` (and in the batch's ``errors``).
        transforms: optional modality -> callable applied to each loaded value.
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        targets: Any = None,
        ids: Sequence[Hashable] | None = None,
        groups: Sequence[Hashable] | np.ndarray | None = None,
        on_error: OnError = "raise",
        transforms: Mapping[str, Callable[[Any], Any]] | None = None,
    ) -> None:
        if on_error not in ("raise", "missing"):
            raise ModfuseError(f"on_error must be 'raise' or 'missing', found {on_error!r}")
        if not sources:
            raise ModfuseError("a MultiModalDataset needs at least one modality source")
        self.sources = dict(sources)
        if ids is None:
            seen: dict[Hashable, None] = {}
            for src in self.sources.values():
                seen.update(dict.fromkeys(src.ids))
            ids = list(seen)
        self.ids = list(ids)
        self._source_ids = {m: set(src.ids) for m, src in self.sources.items()}
        _check_ids(self.ids, self._source_ids)
        self._targets = self._align_targets(targets)
        # one tensor per task, built once: a sample's target is then a view, not a conversion
        self._target_tensors = _as_tensors(self._targets)
        self.groups = None if groups is None else np.asarray(groups)
        if self.groups is not None and len(self.groups) != len(self.ids):
            raise ModfuseError(f"groups has {len(self.groups)} entries for {len(self.ids)} samples")
        self.on_error = on_error
        self.transforms = dict(transforms or {})
        self.read_errors: list[dict[str, Any]] = []
        self._error_keys: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        data: Mapping[str, Any],
        y: Any = None,
        ids: Sequence[Hashable] | None = None,
        groups: Sequence[Hashable] | np.ndarray | None = None,
    ) -> MultiModalDataset:
        """Build a dataset from in-memory arrays, one per modality.

        Args:
            data: modality -> (N, ...) array, Tensor or DataFrame, a length-N list (entries may
                be None), or None (the modality is missing for every sample). An all-NaN row or
                a None entry marks the modality missing for that sample.
            y: targets, (N,) / (N, k) array, or dict task -> array.
            ids: N sample ids (default ``0..N-1``).

        Example:
            >>> X = {"labs": np.random.rand(4, 3), "ecg": None}
            >>> ds = MultiModalDataset.from_arrays(X, y=np.array([0, 1, 0, 1]))
        """
        lengths = {m: len(v) for m, v in data.items() if v is not None}
        if not lengths:
            raise ModfuseError("from_arrays needs at least one modality that is not None")
        if len(set(lengths.values())) > 1:
            raise ModfuseError(f"modalities have different numbers of rows: {lengths}")
        n = next(iter(lengths.values()))
        ids = list(range(n)) if ids is None else list(ids)
        if len(ids) != n:
            raise ModfuseError(f"{len(ids)} ids for {n} rows")
        sources: dict[str, Source] = {}
        for m, values in data.items():
            if values is None:
                sources[m] = ArraySource([None] * n, ids)
            elif isinstance(values, pd.DataFrame):
                sources[m] = ArraySource(values.reset_index(drop=True), ids)
            else:
                sources[m] = ArraySource(values, ids)
        return cls(sources, targets=y, ids=ids, groups=groups)

    def _align_targets(self, targets: Any) -> np.ndarray | dict[str, np.ndarray] | None:
        if targets is None:
            return None
        if isinstance(targets, Mapping):
            return {k: self._align_one(v, k) for k, v in targets.items()}
        return self._align_one(targets, None)

    def _align_one(self, values: Any, task: str | None) -> np.ndarray:
        if isinstance(values, (pd.Series, pd.DataFrame)):
            values = values.reindex(self.ids) if not values.index.equals(pd.RangeIndex(len(values))) else values
            values = values.to_numpy()
        arr = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        if len(arr) != len(self.ids):
            name = f"target {task!r}" if task else "targets"
            raise ModfuseError(f"{name} has {len(arr)} rows for {len(self.ids)} samples")
        return arr

    # ------------------------------------------------------------------ access
    @property
    def modalities(self) -> list[str]:
        return list(self.sources)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def targets(self) -> np.ndarray | dict[str, np.ndarray] | None:
        """The targets aligned to `ids` (one array, or a dict task -> array); read-only."""
        return self._targets

    def target_of(self, index: int) -> Any:
        """Sample ``index``'s target: a tensor (long for integer/bool labels, else float32), or a
        dict task -> tensor, or None."""
        tensors = self._target_tensors
        if tensors is None:
            return None
        if isinstance(tensors, dict):
            return {k: v[index] for k, v in tensors.items()}
        return tensors[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_id = self.ids[index]
        inputs: dict[str, Any] = {}
        errors: list[tuple[Any, str, str]] = []
        for m, src in self.sources.items():
            inputs[m] = None
            if sample_id not in self._source_ids[m]:
                continue
            try:
                value = src.load(sample_id)
                if value is not None and m in self.transforms:
                    value = self.transforms[m](value)
            except Exception as exc:
                err = _locate(exc, m, sample_id)
                if self.on_error == "raise":
                    raise err from exc
                errors.append((sample_id, m, str(err)))
                if self.record_errors(errors[-1:]):  # warn once per problem, not once per epoch
                    log.warning("marked %r missing for sample %r: %s", m, sample_id, err)
                value = None
            inputs[m] = value
        return {"id": sample_id, "inputs": inputs, "target": self.target_of(index), "errors": errors}

    @property
    def collate_modes(self) -> dict[str, CollateMode]:
        return {m: getattr(src, "collate", "auto") for m, src in self.sources.items()}

    def collate_fn(self, samples: Sequence[Mapping[str, Any]]) -> ModalityBatch:
        """Collate items of this dataset into a `ModalityBatch`."""
        batch = collate_samples(samples, self.modalities, self.collate_modes)
        batch.errors = [e for s in samples for e in s.get("errors", ())]
        return batch

    def present_matrix(self) -> pd.DataFrame:
        """Bool DataFrame (ids x modalities): which sample has which modality, from what the
        sources know without reading a file: their ids, their entries (a None path, an empty
        SMILES, an all-NaN row or table row are missing) and their optional ``has`` method.
        File problems found only at load time are not reflected; see `read_errors`."""
        return pd.DataFrame(
            {
                m: [sid in self._source_ids[m] and has_value(src, sid) for sid in self.ids]
                for m, src in self.sources.items()
            },
            index=pd.Index(self.ids, name="id"),
        )

    def record_errors(self, errors: Iterable[tuple[Any, str, str]]) -> int:
        """Add ``(sample id, modality, message)`` entries (e.g. a batch's ``errors``) to the
        report, each (sample, modality, message) once; the message names the file.

        Returns:
            The number of entries that were new.
        """
        added = 0
        for sample_id, modality, message in errors:
            key = (repr(sample_id), str(modality), str(message))
            if key not in self._error_keys:
                self._error_keys.add(key)
                self.read_errors.append({"id": sample_id, "modality": modality, "error": message})
                added += 1
        return added

    def read_error_report(self) -> pd.DataFrame:
        """The samples whose modality was marked missing because of bad input (``on_error="missing"``):
        one row (id, modality, error) per distinct problem, in the order first met."""
        return pd.DataFrame(self.read_errors, columns=["id", "modality", "error"])

    def label_array(self) -> np.ndarray | None:
        """A 1-D array usable for stratified splits (the single target, or the first task's)."""
        if self.targets is None:
            return None
        arr = next(iter(self.targets.values())) if isinstance(self.targets, dict) else self.targets
        return arr if arr.ndim == 1 else arr[:, 0]


def _check_ids(ids: list[Hashable], source_ids: Mapping[str, set[Hashable]]) -> None:
    index = pd.Index(ids)
    if index.has_duplicates:
        dup = index[index.duplicated()].unique().tolist()
        raise ModfuseError(
            f"ids repeats {len(dup)} sample ids, e.g. {dup[:5]}: each sample must appear once "
            "(a repeated sample is counted twice and can land in both train and test)"
        )
    chosen = set(ids)
    for m, have in source_ids.items():
        left_out = [sid for sid in have if sid not in chosen]
        if left_out:
            warnings.warn(
                f"ids leaves out {len(left_out)} sample ids that the {m!r} source has, e.g. {sorted(left_out, key=str)[:5]}: "
                "those samples are not in the dataset",
                UserWarning,
                stacklevel=3,
            )


def _as_tensors(targets: np.ndarray | dict[str, np.ndarray] | None) -> Any:
    if targets is None:
        return None
    if isinstance(targets, dict):
        return {k: _numeric_targets(v, k) for k, v in targets.items()}
    return _numeric_targets(targets, None)


def _numeric_targets(values: np.ndarray, task: str | None) -> torch.Tensor:
    """Long tensor for integer / bool labels, float32 otherwise; a clear error for anything else.

    ``torch.tensor`` copies: the dataset's target arrays are read-only views, which ``as_tensor``
    would share (and warn about) instead."""
    if values.dtype.kind in "iub":
        return torch.tensor(values, dtype=torch.long)
    if values.dtype.kind == "f":
        return torch.tensor(values, dtype=torch.float32)
    name = f"target {task!r}" if task else "targets"
    raise ModfuseError(f"{name} must be numeric (labels, values or 0/1 indicators), found dtype {values.dtype}")


def _locate(exc: Exception, modality: str, sample_id: Any) -> ModfuseError:
    if isinstance(exc, ModfuseError):
        return exc.located(modality=modality, sample_id=sample_id)
    return ReadError(
        f"{type(exc).__name__}: {exc}", path=getattr(exc, "filename", None), modality=modality, sample_id=sample_id
    )
