"""Wrap any user module as a modfuse encoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from modfuse.data.batch import move_to
from modfuse.encoders.base import Encoder
from modfuse.errors import ModfuseError

__all__ = ["WrappedEncoder", "wrap"]


class WrappedEncoder(Encoder):
    """A user module with a declared output shape.

    Args:
        module: maps a collated modality input to (n, out_dim) or (n, out_tokens, out_dim).
        out_dim: output width.
        out_tokens: number of tokens, or None for pooled output.
    """

    def __init__(self, module: nn.Module, out_dim: int, out_tokens: int | None = None) -> None:
        super().__init__()
        self.module = module
        self.out_dim = out_dim
        self.out_tokens = out_tokens

    def forward(self, x: Any) -> Tensor:
        out = self.module(x)
        want = 2 if self.out_tokens is None else 3
        if out.dim() != want or out.shape[-1] != self.out_dim:
            raise ModfuseError(
                f"wrapped {type(self.module).__name__} returned shape {tuple(out.shape)}; "
                f"expected (n, {'' if self.out_tokens is None else f'{self.out_tokens}, '}{self.out_dim})"
            )
        return out


def wrap(module: nn.Module, out_dim: int | None = None, example: Any = None) -> WrappedEncoder:
    """Make any ``nn.Module`` a modfuse encoder.

    Args:
        module: the encoder; output (n, d) pooled or (n, tokens, d).
        out_dim: its output width; when None, inferred by one dry run on ``example``.
        example: a collated input of one or more rows, needed when ``out_dim`` is None.

    Example:
        >>> enc = wrap(nn.Sequential(nn.Linear(10, 32), nn.ReLU()), example=torch.zeros(2, 10))
        >>> enc.out_dim
        32
    """
    out_tokens = None
    if out_dim is None:
        if example is None:
            raise ModfuseError(
                f"cannot infer the output width of {type(module).__name__}: pass out_dim=... or example=<an input batch>"
            )
        was_training = module.training
        module.eval()
        with torch.no_grad():
            param = next(module.parameters(), None)
            out = module(move_to(example, param.device) if param is not None else example)
        module.train(was_training)
        if not isinstance(out, Tensor) or out.dim() not in (2, 3):
            raise ModfuseError(
                f"dry run of {type(module).__name__} gave {getattr(out, 'shape', type(out).__name__)}; "
                "expected a tensor (n, d) or (n, tokens, d)"
            )
        out_dim = int(out.shape[-1])
        out_tokens = int(out.shape[1]) if out.dim() == 3 else None
    return WrappedEncoder(module, out_dim, out_tokens)
