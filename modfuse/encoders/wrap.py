"""Wrap any user module as a modfuse encoder.

BatchNorm in training mode normalises each row with statistics of the whole batch: a sample's
features would depend on its batch mates (breaking the encoders' row-independence contract)
and a batch with exactly one present row of the modality would fail ("Expected more than 1
value per channel"). `wrap()` therefore never lets a BatchNorm layer use batch statistics:

* ``norm="freeze"`` (default): every BatchNorm layer stays in eval mode, also while the model
  trains: it normalises with its stored running statistics (the pretrained ones for a
  pretrained backbone), which are no longer updated; its weight and bias still train.
* ``norm="group"``: every BatchNorm layer is replaced by a GroupNorm over the same channels
  (see `batch_norm_to_group_norm()`; the affine weight and bias copied), which normalises
  each row by itself; the choice for a network trained from scratch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from modfuse.data.batch import move_to
from modfuse.encoders.base import Encoder
from modfuse.errors import ModfuseError

__all__ = ["NormPolicy", "WrappedEncoder", "batch_norm_to_group_norm", "wrap"]

NormPolicy = Literal["freeze", "group"]
"""How `wrap()` keeps BatchNorm layers from using batch statistics (see the module doc)."""


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
        self.train(self.training)

    def train(self, mode: bool = True) -> WrappedEncoder:
        """Set train/eval mode; BatchNorm layers stay in eval mode (frozen statistics)."""
        super().train(mode)
        for layer in self.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()
        return self

    def forward(self, x: Any) -> Tensor:
        out = self.module(x)
        want = 2 if self.out_tokens is None else 3
        if out.dim() != want or out.shape[-1] != self.out_dim:
            raise ModfuseError(
                f"wrapped {type(self.module).__name__} returned shape {tuple(out.shape)}; "
                f"expected (n, {'' if self.out_tokens is None else f'{self.out_tokens}, '}{self.out_dim})"
            )
        return out


def _groups(channels: int, most: int = 32) -> int:
    """The largest divisor of ``channels`` not above ``most`` (GroupNorm needs an exact split)."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


_PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norm_to_group_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer inside ``module`` (in place) by a GroupNorm.

    Each ``BatchNorm2d`` / ``BatchNorm3d`` / ``SyncBatchNorm`` over C channels becomes
    ``GroupNorm(g, C)`` with g the largest divisor of C up to 32; a ``BatchNorm1d`` (which may
    see (n, C) features) becomes ``GroupNorm(1, C)``, a LayerNorm over the row's channels. The
    eps and the affine weight and bias are kept. Shapes are unchanged: (n, C, ...) -> (n, C, ...).

    Raises:
        ModfuseError: for a BatchNorm subclass that does more than normalise (e.g. timm's
            ``BatchNormAct2d``, which also applies an activation); use ``norm="freeze"``.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return _to_group_norm(module)
    for name, child in module.named_children():
        setattr(module, name, batch_norm_to_group_norm(child))
    return module


def _to_group_norm(layer: nn.modules.batchnorm._BatchNorm) -> nn.GroupNorm:
    if type(layer) not in _PLAIN_BATCH_NORMS:
        raise ModfuseError(
            f"cannot convert {type(layer).__name__} to GroupNorm (it is not a plain BatchNorm); "
            "use wrap(..., norm='freeze') to keep it with frozen statistics"
        )
    # BatchNorm1d also sees (n, C) features, where a group of one channel holds one value: one group
    groups = 1 if isinstance(layer, nn.BatchNorm1d) else _groups(layer.num_features)
    group = nn.GroupNorm(groups, layer.num_features, eps=layer.eps, affine=layer.affine)
    if layer.affine:
        with torch.no_grad():
            group.weight.copy_(layer.weight)
            group.bias.copy_(layer.bias)
    return group.to(layer.weight.device if layer.affine else "cpu")


def _check_freezable(module: nn.Module) -> None:
    """A BatchNorm without running statistics uses batch statistics even in eval mode."""
    for name, layer in module.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.running_mean is None:
            raise ModfuseError(
                f"{type(module).__name__}.{name} ({type(layer).__name__}) keeps no running statistics "
                "(track_running_stats=False), so it cannot be frozen; use wrap(..., norm='group')"
            )


def wrap(
    module: nn.Module, out_dim: int | None = None, example: Any = None, *, norm: NormPolicy = "freeze"
) -> WrappedEncoder:
    """Make any ``nn.Module`` a modfuse encoder.

    Args:
        module: the encoder; output (n, d) pooled or (n, tokens, d).
        out_dim: its output width; when None, inferred by one dry run on ``example``.
        example: a collated input of one or more rows, needed when ``out_dim`` is None.
        norm: how BatchNorm layers are kept from using batch statistics: ``"freeze"``
            (default: eval-mode BatchNorm with the stored running statistics, right for a
            pretrained backbone) or ``"group"`` (converted to GroupNorm in place, for a network
            trained from scratch). Either way a row's output never depends on its batch and a
            batch with one present row trains.

    Example:
        >>> enc = wrap(nn.Sequential(nn.Linear(10, 32), nn.ReLU()), example=torch.zeros(2, 10))
        >>> enc.out_dim
        32
    """
    if norm == "group":
        module = batch_norm_to_group_norm(module)
    elif norm == "freeze":
        _check_freezable(module)
    else:
        raise ModfuseError(f"norm must be 'freeze' or 'group', found {norm!r}")
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
