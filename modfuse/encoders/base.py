"""Conventions every encoder follows, and the input checks they share."""

from __future__ import annotations

from collections.abc import ItemsView, Sequence, ValuesView
from typing import cast

import torch
from torch import Tensor, nn

import modfuse.core.config  # noqa: F401  (records constructor arguments, so encoders describe themselves)
from modfuse.errors import ModfuseError

__all__ = ["Encoder", "EncoderDict", "check_finite", "check_ndim", "check_size"]


class Encoder(nn.Module):
    """Base class of modfuse encoders.

    An encoder maps the present rows of one modality to features: (n, out_dim) when pooled
    (``out_tokens is None``), or tokens (n, out_tokens, out_dim). It must treat rows
    independently (no BatchNorm over pooled features, no cross-row attention) so that a
    sample's output never depends on the rest of its batch.

    Attributes:
        out_dim: width of each output feature vector / token.
        out_tokens: number of output tokens, or None for one pooled vector per row.
    """

    out_dim: int
    out_tokens: int | None = None


class EncoderDict(nn.ModuleDict):
    """modality -> encoder: an ``nn.ModuleDict`` whose items are typed as encoders.

    ``nn.ModuleDict`` types its items as plain modules, so ``enc.out_dim`` reads as
    ``Tensor | Module`` to a type checker. Fusion models check their encoders declare an
    integer ``out_dim`` when they are built (``check_encoders``), which is what this view
    relies on; the state dict and module tree are those of an ordinary ``nn.ModuleDict``.
    """

    def __getitem__(self, key: str) -> Encoder:
        return cast(Encoder, super().__getitem__(key))

    def values(self) -> ValuesView[Encoder]:
        return cast("ValuesView[Encoder]", super().values())

    def items(self) -> ItemsView[str, Encoder]:
        return cast("ItemsView[str, Encoder]", super().items())


def check_finite(x: Tensor, what: str) -> None:
    """Raise a `ModfuseError` naming the first row with NaN/inf values."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1) if x.numel() else torch.zeros(0, dtype=torch.bool)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise ModfuseError(f"{what}: expected finite values, found NaN/inf in row {row} of {x.shape[0]}")


def check_ndim(x: Tensor, ndim: int, layout: str) -> None:
    """Raise unless ``x`` has ``ndim`` dimensions; ``layout`` names them, e.g. "(n, leads, samples)"."""
    if not isinstance(x, Tensor):
        raise ModfuseError(f"expected a tensor {layout}, found {type(x).__name__}")
    if x.dim() != ndim:
        raise ModfuseError(f"expected a tensor {layout}, found shape {tuple(x.shape)}")


def check_size(x: Tensor, dim: int, expected: int | Sequence[int], what: str) -> None:
    """Raise unless ``x.shape[dim]`` equals ``expected`` (or is one of several values)."""
    allowed = (expected,) if isinstance(expected, int) else tuple(expected)
    if x.shape[dim] not in allowed:
        want = allowed[0] if len(allowed) == 1 else f"one of {list(allowed)}"
        raise ModfuseError(f"{what}: expected {want}, found {x.shape[dim]} (input shape {tuple(x.shape)})")
