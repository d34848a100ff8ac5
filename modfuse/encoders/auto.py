"""Automatic encoders: a default encoder for a modality chosen from the shape of its data.

Used by the estimators (``encoders="auto"``): 2-D (n, features) -> ``tabular`` (categorical
columns embedded), 3-D (n, leads, samples) -> ``ecg``, 4-D (n, channels, H, W) -> ``spectral``,
a list of PyG graphs -> ``graph``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from torch import nn

from modfuse.data.transforms import Standardizer
from modfuse.encoders.registry import build
from modfuse.errors import ModfuseError

__all__ = ["TabularSizing", "auto_encoder", "build_encoders"]


class TabularSizing(Protocol):
    """The size of an automatic tabular encoder (e.g. `modfuse.training.sizing.Sizing`)."""

    @property
    def hidden(self) -> Sequence[int]: ...
    @property
    def out_dim(self) -> int: ...
    @property
    def dropout(self) -> float: ...


Sizer = Callable[[int, int], TabularSizing]
"""(training rows, features) -> the tabular encoder's size."""


def _present(values: np.ndarray) -> np.ndarray:
    """Bool (n,): rows that are not all-NaN (a missing modality)."""
    return ~np.isnan(values.reshape(len(values), -1)).all(axis=1)


def auto_encoder(
    values: Any,
    rows: np.ndarray,
    modality: str,
    sizer: Sizer,
    categorical: Mapping[int, int] | None = None,
) -> nn.Module:
    """A default encoder for a modality from the shape of its data.

    Args:
        values: the modality's data: (n, features) float array (NaN = missing cell; an all-NaN
            row = missing modality), (n, leads, samples), (n, channels, H, W), or a list of PyG
            graphs (None = missing).
        rows: the training rows (positions); the tabular statistics are computed on them.
        modality: its name (for error messages).
        sizer: ``(training rows, features) -> size`` of a tabular encoder (hidden widths,
            out_dim, dropout; `modfuse.training.sizing.size_for()` in the estimators).
        categorical: column position -> number of categories of a table's categorical columns
            (integer codes, NaN = missing); they are embedded, not standardised.

    2-D: ``tabular`` with the training rows' mean/std of the numeric columns and a linear path
    (a regularised linear projection beside the MLP); 3-D: ``ecg``; 4-D: ``spectral`` (a small
    CNN, any channel count); a list of PyG graphs: ``graph``.
    """
    if isinstance(values, list):
        first = next((v for v in values if v is not None), None)
        if first is None or not hasattr(first, "edge_index"):
            raise ModfuseError("a list modality must hold PyG graphs (Data objects) or None", modality=modality)
        importlib.import_module("modfuse.encoders.graph")
        return build("graph", in_dim=int(first.num_node_features), out_dim=64)
    if values.ndim == 2:
        categorical = dict(categorical or {})
        numeric = [i for i in range(values.shape[1]) if i not in categorical]
        train = values[rows][_present(values[rows])]
        if categorical:  # codes are embedded, not standardised (no copy otherwise: same float sums)
            train = train[:, numeric]
        stats = Standardizer.fit(train)
        sizing = sizer(len(rows), values.shape[1])
        return build(
            "tabular",
            num_features=values.shape[1],
            categorical=categorical or None,
            hidden=list(sizing.hidden),
            out_dim=sizing.out_dim,
            dropout=sizing.dropout,
            **stats.to_dict(),
            linear=True,
        )
    if values.ndim == 3:
        importlib.import_module("modfuse.encoders.ecg")
        return build("ecg", leads=values.shape[1], widths=[16, 32, 64], blocks=1, out_dim=64)
    if values.ndim == 4:
        importlib.import_module("modfuse.encoders.spectral")
        return build("spectral", bands=values.shape[1], out_dim=64)
    raise ModfuseError(f"no automatic encoder for data of shape {values.shape}; pass encoders=...", modality=modality)


def build_encoders(
    spec: Any,
    data: Mapping[str, Any],
    rows: np.ndarray,
    sizer: Sizer,
    categorical: Mapping[str, Mapping[int, int]] | None = None,
) -> dict[str, nn.Module]:
    """One encoder per modality of ``data``: the user's (``spec``) or an automatic one.

    Args:
        spec: ``"auto"`` / None, or a dict modality -> ``nn.Module`` (copied, so training does
            not change the user's object), ``{"name": registry name, **kwargs}`` or ``"auto"``.
        data, rows, sizer: as in `auto_encoder` (``data`` maps modality -> its values).
        categorical: modality -> its categorical columns (see `auto_encoder`).
    """
    if spec == "auto" or spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ModfuseError(f"encoders must be 'auto' or a dict modality -> module / spec, found {spec!r}")
    out: dict[str, nn.Module] = {}
    for m, values in data.items():
        given = spec.get(m, "auto")
        if isinstance(given, nn.Module):
            out[m] = copy.deepcopy(given)  # fit() must not train the user's object in place
        elif isinstance(given, Mapping):
            kwargs = dict(given)
            name = kwargs.pop("name")
            with contextlib.suppress(ModuleNotFoundError):
                importlib.import_module(f"modfuse.encoders.{name}")
            out[m] = build(name, **kwargs)
        elif values is None:
            raise ModfuseError("no data to choose an automatic encoder from; pass encoders={...}", modality=m)
        else:
            out[m] = auto_encoder(values, rows, m, sizer, (categorical or {}).get(m))
    return out
