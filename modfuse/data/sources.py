"""Per-modality sources that [`MultiModalDataset`][modfuse.data.MultiModalDataset] joins on sample id:
the `Source` protocol, the in-memory `ArraySource`, and the wrappers of any source
(`MemoizedSource`: values kept after their first read; `MaskedSource`: some samples hidden)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from modfuse.data.collate import CollateMode
from modfuse.errors import ModfuseError

__all__ = ["ArraySource", "MaskedSource", "MemoizedSource", "Source", "has_value", "row_is_missing"]


@runtime_checkable
class Source(Protocol):
    """What `MultiModalDataset` needs from a reader or an in-memory array.

    Attributes:
        ids: the sample ids this source has a value for.
        collate: how the dataset collates this modality (see `CollateMode`).

    Optionally ``has(sample_id)`` tells, without reading a file, whether the source has a
    value for the id (what `MultiModalDataset.present_matrix()` reports); file-backed
    readers answer it from their paths (``path_of(sample_id) is not None``).

    ``load(sample_id)`` returns the sample's value (a Tensor, a dict of Tensors, a PyG ``Data``,
    ...) or ``None`` when the modality is missing for that sample. It raises
    [`modfuse.errors.ReadError`][modfuse.errors.ReadError] (naming the file) for bad input; the dataset applies its
    ``on_error`` policy to it.
    """

    # read-only members: a source may hold them as plain attributes of any narrower type (a list)
    @property
    def ids(self) -> Sequence[Hashable]: ...

    @property
    def collate(self) -> CollateMode: ...

    def load(self, sample_id: Hashable) -> Any | None: ...


def row_is_missing(row: Any) -> bool:
    """True for ``None``, or a numeric row whose every value is NaN (a missing modality)."""
    if row is None:
        return True
    if isinstance(row, torch.Tensor):
        return row.is_floating_point() and bool(torch.isnan(row).all())
    if not isinstance(row, (np.ndarray, np.generic, float, list, tuple)):
        return False  # objects such as PyG graphs are present unless None
    arr = np.asarray(row)
    return arr.dtype.kind in "fc" and arr.size > 0 and bool(np.isnan(arr).all())


def _missing_rows(values: Any) -> np.ndarray | None:
    """(N,) bool, True where a row of a numeric NumPy array is all-NaN; None for other values
    (Tensors, lists), whose rows are checked one at a time with `row_is_missing()`."""
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "biuf" or values.ndim == 0:
        return None
    flat = values.reshape(len(values), -1)
    if values.dtype.kind != "f" or flat.shape[1] == 0:
        return np.zeros(len(values), dtype=bool)
    return np.asarray(np.isnan(flat).all(axis=1))


class ArraySource:
    """An in-memory modality: one row per sample of a NumPy array, Tensor, DataFrame or list.

    A row that is ``None`` or all-NaN is a missing modality for that sample. Numeric rows
    are returned as float32 tensors (shape: the row's shape, e.g. (features,) or (leads, L)).

    Args:
        values: (N, ...) array, Tensor or DataFrame, or a length-N list (entries may be None or
            objects such as PyG ``Data``; such lists may hold rows of different lengths).
        ids: N sample ids (default ``0..N-1``).
        collate: collate mode for this modality.
    """

    def __init__(self, values: Any, ids: Sequence[Hashable] | None = None, collate: CollateMode = "auto") -> None:
        self.feature_names: list[str] | None = None
        if isinstance(values, pd.DataFrame):
            self.feature_names = [str(c) for c in values.columns]
            if ids is None:
                ids = list(values.index)
            values = values.to_numpy(dtype=np.float32, na_value=np.nan)
        elif isinstance(values, pd.Series):
            values = values.to_numpy(dtype=np.float32, na_value=np.nan)[:, None]
        n = len(values)
        self.ids = list(range(n)) if ids is None else list(ids)
        if len(self.ids) != n:
            raise ModfuseError(f"{n} rows but {len(self.ids)} ids")
        self._rows = values
        self._missing = _missing_rows(values)
        self._position = {sid: i for i, sid in enumerate(self.ids)}
        if len(self._position) != n:
            raise ModfuseError("sample ids must be unique")
        self.collate = collate

    def has(self, sample_id: Hashable) -> bool:
        """Whether ``sample_id``'s row is present (not None, not all-NaN)."""
        index = self._position[sample_id]
        if self._missing is not None:
            return not self._missing[index]
        return not row_is_missing(self._rows[index])

    def load(self, sample_id: Hashable) -> Any | None:
        index = self._position[sample_id]
        if self._missing is not None:  # a numeric array: missingness was found once, up front
            if self._missing[index]:
                return None
            # np.array copies: rows of the user's array stay untouched by in-place transforms
            return torch.from_numpy(np.array(self._rows[index], dtype=np.float32))
        row = self._rows[index]
        if row_is_missing(row):
            return None
        if isinstance(row, np.ndarray) and row.dtype.kind in "biuf":
            return torch.tensor(row, dtype=torch.float32)  # a copy: rows of the user's array stay untouched
        if isinstance(row, torch.Tensor) and row.is_floating_point():
            return row.float()
        return row

    def __len__(self) -> int:
        return len(self.ids)


def has_value(src: Any, sample_id: Hashable) -> bool:
    """Whether ``src`` has a value for ``sample_id``, from what it knows without reading a file:
    its ``has`` method, or a file path that is not None (file-backed readers)."""
    has = getattr(src, "has", None)
    if callable(has):
        return bool(has(sample_id))
    for lookup in ("path_of", "smiles_of"):  # file-backed readers, SMILES strings
        entry = getattr(src, lookup, None)
        if callable(entry):
            return entry(sample_id) is not None
    return True


# ---------------------------------------------------------------------------- wrappers
class MemoizedSource:
    """A reader whose values are read once (by the reader itself) and then kept in memory.

    Implements the `Source` protocol. A read error is not kept: the next ``load`` of that
    sample reads (and fails) again.

    Args:
        source: the wrapped source.
    """

    def __init__(self, source: Any) -> None:
        self.source = source
        self.ids = source.ids
        self.collate = getattr(source, "collate", "auto")
        self.values: dict[Any, Any] = {}

    def has(self, sample_id: Any) -> bool:
        """The wrapped reader's answer (see `MultiModalDataset.present_matrix()`)."""
        return has_value(self.source, sample_id)

    def load(self, sample_id: Any) -> Any | None:
        if sample_id not in self.values:
            self.values[sample_id] = self.source.load(sample_id)
        return self.values[sample_id]


class MaskedSource:
    """A source with some samples hidden: they are reported missing.

    Args:
        source: the wrapped source.
        removed: the sample ids whose value this source no longer provides.
    """

    def __init__(self, source: Any, removed: Iterable[Hashable]) -> None:
        self.source = source
        self.removed = frozenset(removed)
        self.ids: Sequence[Hashable] = [i for i in source.ids if i not in self.removed]
        self.collate: CollateMode = getattr(source, "collate", "auto")

    def load(self, sample_id: Hashable) -> Any | None:
        if sample_id in self.removed:
            return None
        return self.source.load(sample_id)

    def __getattr__(self, name: str) -> Any:
        # feature names, band metadata, ... of the wrapped reader stay visible
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def __len__(self) -> int:
        return len(self.ids)
