"""Collate samples with any missing pattern into a `ModalityBatch`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from modfuse.data.batch import ModalityBatch, PaddedTensor
from modfuse.errors import ModfuseError

__all__ = ["CollateMode", "Sample", "collate_samples"]

CollateMode = Literal["auto", "stack", "pad", "list"]
"""How one modality's present values are combined: ``stack`` (same shape), ``pad`` (one
dimension varies: zero-pad it and keep a mask), ``list`` (keep the objects as a list, for
encoders that declare so), ``auto`` (PyG graphs -> ``Batch``; tensors -> stack, or pad when
exactly one dimension varies; other objects -> list)."""

Sample = Mapping[str, Any]
"""A sample: ``{"id": ..., "inputs": {modality: value or None}, "target": ... or None}``."""


def _as_tensor(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fc":
            return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Mapping):
        return {k: _as_tensor(v) for k, v in value.items()}
    return value


def _is_graph(value: Any) -> bool:
    return hasattr(value, "edge_index") and hasattr(value, "num_nodes")


def _pad(values: list[Tensor], modality: str, ids: list[Any]) -> PaddedTensor:
    shapes = [tuple(v.shape) for v in values]
    varying = [d for d in range(len(shapes[0])) if len({s[d] for s in shapes}) > 1]
    if len({len(s) for s in shapes}) > 1 or len(varying) > 1:
        detail = ", ".join(f"{i}: {s}" for i, s in zip(ids[:6], shapes[:6]))
        raise ModfuseError(
            f"cannot collate: expected equal shapes or exactly one varying dimension, found {detail}",
            modality=modality,
        )
    dim = varying[0] if varying else len(shapes[0]) - 1  # equal lengths: an all-True mask
    length = max(s[dim] for s in shapes)
    padded = values[0].new_zeros((len(values), *[length if d == dim else n for d, n in enumerate(shapes[0])]))
    mask = torch.zeros(len(values), length, dtype=torch.bool)
    for i, v in enumerate(values):
        padded[i].narrow(dim, 0, v.shape[dim]).copy_(v)
        mask[i, : v.shape[dim]] = True
    return PaddedTensor(padded, mask, dim - len(shapes[0]))


def _collate_modality(values: list[Any], mode: CollateMode, modality: str, ids: list[Any]) -> Any:
    if mode == "list":
        return values
    if values and _is_graph(values[0]):
        from torch_geometric.data import Batch

        return Batch.from_data_list(values)
    if values and isinstance(values[0], Mapping):
        return {k: _collate_modality([v[k] for v in values], mode, f"{modality}.{k}", ids) for k in values[0]}
    if values and not isinstance(values[0], Tensor):
        if mode == "auto":
            return values
        raise ModfuseError(f"expected tensors or arrays, found {type(values[0]).__name__}", modality=modality)
    if not values:
        return None
    same = all(v.shape == values[0].shape for v in values)
    if same and mode in ("auto", "stack"):
        return torch.stack(values)
    if mode == "stack":
        detail = ", ".join(f"{i}: {tuple(v.shape)}" for i, v in zip(ids, values))
        hint = ""
        if len({v.dim() for v in values}) == 1 and len({v.shape[1:] for v in values}) == 1:
            hint = "; the rows differ in channels only: a reader option converts them, e.g. DicomSource(channels=3)"
        raise ModfuseError(f"cannot stack rows of different shapes ({detail}){hint}", modality=modality)
    return _pad(values, modality, ids)


def _collate_targets(targets: list[Any]) -> Tensor | dict[str, Tensor] | None:
    if all(t is None for t in targets):
        return None
    if any(t is None for t in targets):
        missing = [i for i, t in enumerate(targets) if t is None]
        raise ModfuseError(f"some samples have a target and others not (positions {missing[:10]})")
    if isinstance(targets[0], Mapping):
        return {k: torch.stack([torch.as_tensor(t[k]) for t in targets]) for k in targets[0]}
    return torch.stack([torch.as_tensor(t) for t in targets])


def collate_samples(
    samples: Sequence[Sample],
    modalities: Sequence[str] | None = None,
    modes: Mapping[str, CollateMode] | None = None,
) -> ModalityBatch:
    """Build a `ModalityBatch` from samples with any missing pattern.

    Args:
        samples: dicts with ``id``, ``inputs`` (modality -> value, or None / absent when missing)
            and ``target``.
        modalities: the modality names of the batch (default: every name seen in the samples), so
            a modality absent from a whole batch still has an all-False ``present`` mask.
        modes: collate mode per modality (default ``"auto"``).

    Returns:
        The batch; ``inputs[m]`` holds the present rows of ``m`` only, in sample order.
    """
    if not samples:
        raise ModfuseError("cannot collate an empty batch (0 samples)")
    ids = [s.get("id", i) for i, s in enumerate(samples)]
    if modalities is None:
        seen: dict[str, None] = {}
        for s in samples:
            seen.update(dict.fromkeys(s["inputs"]))
        modalities = list(seen)
    modes = modes or {}
    inputs: dict[str, Any] = {}
    present: dict[str, Tensor] = {}
    for m in modalities:
        values = [s["inputs"].get(m) for s in samples]
        mask = torch.tensor([v is not None for v in values], dtype=torch.bool)
        present[m] = mask
        kept = [_as_tensor(v) for v in values if v is not None]
        kept_ids = [i for i, v in zip(ids, values) if v is not None]
        if kept:
            inputs[m] = _collate_modality(kept, modes.get(m, "auto"), m, kept_ids)
    return ModalityBatch(inputs, present, _collate_targets([s.get("target") for s in samples]), ids)
