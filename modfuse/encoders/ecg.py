"""ECG encoder: a 1D ResNet over (leads, samples) signals of any length."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modfuse.data.batch import PaddedTensor
from modfuse.encoders.base import Encoder, check_finite, check_ndim, check_size
from modfuse.encoders.registry import register
from modfuse.errors import ModfuseError

__all__ = ["ECGEncoder", "MaskedGroupNorm1d"]


class MaskedGroupNorm1d(nn.GroupNorm):
    """GroupNorm over (n, C, L) whose statistics use only the valid (unpadded) positions.

    With a plain GroupNorm a padded row would be normalised with its padding zeros included,
    so its features would depend on the longest signal of the batch. Here the statistics of
    each row come from its own valid samples only.

    Shapes:
        x (n, C, L), mask (n, 1, L) float (1 = valid) -> (n, C, L).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if mask is None:
            return super().forward(x)
        n, c, length = x.shape
        g = self.num_groups
        xg = x.reshape(n, g, c // g, length)
        m = mask.reshape(n, 1, 1, length)
        count = (m.sum(dim=(2, 3), keepdim=True) * (c // g)).clamp_min(1.0)
        mean = (xg * m).sum(dim=(2, 3), keepdim=True) / count
        var = (((xg - mean) * m) ** 2).sum(dim=(2, 3), keepdim=True) / count
        out = ((xg - mean) / torch.sqrt(var + self.eps)).reshape(n, c, length)
        if self.affine:
            out = out * self.weight[None, :, None] + self.bias[None, :, None]
        return out


def _groups(channels: int, groups: int) -> int:
    """Largest divisor of ``channels`` not above ``groups`` (GroupNorm needs an exact split)."""
    return next(g for g in range(min(groups, channels), 0, -1) if channels % g == 0)


class _ResBlock1d(nn.Module):
    """Pre-activation-free basic residual block: conv-norm-relu-conv-norm + shortcut, relu."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm1 = MaskedGroupNorm1d(_groups(c_out, groups), c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2, bias=False)
        self.norm2 = MaskedGroupNorm1d(_groups(c_out, groups), c_out)
        self.drop = nn.Dropout(dropout)
        self.act = nn.ReLU()
        self.short: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.short = nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False)
            self.short_norm = MaskedGroupNorm1d(_groups(c_out, groups), c_out)

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """x (n, C, L), mask (n, 1, L) float or None (no padding) -> (n, C', L'), mask (n, 1, L')."""
        # an output position is valid when the input position at its centre is valid
        out_mask = None if mask is None else mask[..., :: self.stride]
        h = _zero_pad(self.act(self.norm1(self.conv1(x), out_mask)), out_mask)
        h = self.norm2(self.conv2(self.drop(h)), out_mask)
        s = x if self.short is None else self.short_norm(self.short(x), out_mask)
        # zeroing padding after each block makes it look like the convs' own zero padding
        return _zero_pad(self.act(h + s), out_mask), out_mask


def _zero_pad(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


@register("ecg")
class ECGEncoder(Encoder):
    """1D ResNet for multi-lead ECG (and other multichannel physiological signals).

    A strided stem, then one stage per entry of ``widths`` (each halves the length, ``blocks``
    residual blocks per stage), then masked global average + max pooling and a linear
    projection. Normalisation is a GroupNorm whose statistics use each row's valid samples
    only, so rows are independent and a padded signal gives the same features as the signal
    alone. Any length works (lengths are padded by the collate function into a
    [`PaddedTensor`][modfuse.data.batch.PaddedTensor]).

    Args:
        leads: number of leads / channels (checked on every input).
        widths: channels of each stage.
        blocks: residual blocks per stage (an int for all stages, or one per stage).
        kernel_size: convolution kernel length (odd).
        stem_stride: stride of the stem convolution.
        groups: GroupNorm groups (reduced to a divisor of each width).
        dropout: dropout inside residual blocks.
        out_dim: output width.

    Shapes:
        input (n, leads, samples) Tensor, or PaddedTensor with values (n, leads, L_max) and
        mask (n, L_max) -> output (n, out_dim).
    """

    def __init__(
        self,
        leads: int = 12,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: int | Sequence[int] = 2,
        kernel_size: int = 7,
        stem_stride: int = 2,
        groups: int = 8,
        dropout: float = 0.1,
        out_dim: int = 256,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ModfuseError(f"kernel_size: expected an odd length, found {kernel_size}")
        per_stage = [blocks] * len(widths) if isinstance(blocks, int) else list(blocks)
        if len(per_stage) != len(widths):
            raise ModfuseError(f"blocks: expected {len(widths)} entries (one per width), found {len(per_stage)}")
        self.leads = leads
        self.out_dim = out_dim
        self.stem_stride = stem_stride
        self.stem = nn.Conv1d(
            leads, widths[0], 2 * kernel_size + 1, stride=stem_stride, padding=kernel_size, bias=False
        )
        self.stem_norm = MaskedGroupNorm1d(_groups(widths[0], groups), widths[0])
        stages: list[_ResBlock1d] = []
        c_in = widths[0]
        for i, (width, n_blocks) in enumerate(zip(widths, per_stage)):
            for j in range(n_blocks):
                stride = 2 if (j == 0 and i > 0) else 1
                stages.append(_ResBlock1d(c_in, width, kernel_size, stride, groups, dropout))
                c_in = width
        self.blocks = nn.ModuleList(stages)
        self.proj = nn.Linear(2 * c_in, out_dim)

    def _unpack(self, x: Tensor | PaddedTensor) -> tuple[Tensor, Tensor | None]:
        """Values (n, leads, L) and mask (n, 1, L) float, or None when no row is padded."""
        if isinstance(x, PaddedTensor):
            values, mask = x.values, x.mask
            if x.dim not in (-1, 2):
                raise ModfuseError(f"expected signals padded along the samples axis (dim -1), found dim={x.dim}")
        else:
            values, mask = x, None
        check_ndim(values, 3, "(n, leads, samples)")
        check_size(values, 1, self.leads, "number of ECG leads")
        values = values.float()
        check_finite(values, "ECG signal")
        if mask is None:
            return values, None
        if mask.shape != (values.shape[0], values.shape[2]):
            raise ModfuseError(
                f"padding mask: expected shape {(values.shape[0], values.shape[2])}, found {tuple(mask.shape)}"
            )
        if bool(mask.all()):  # equal lengths: the plain (fused) GroupNorm path gives the same result
            return values, None
        return values, mask[:, None, :].to(values.dtype)

    def forward(self, x: Tensor | PaddedTensor) -> Tensor:
        """(n, leads, samples) or PaddedTensor -> (n, out_dim)."""
        values, mask = self._unpack(x)
        values = _zero_pad(values, mask)
        mask = None if mask is None else mask[..., :: self.stem_stride]
        h = _zero_pad(torch.relu(self.stem_norm(self.stem(values), mask)), mask)
        for block in self.blocks:
            h, mask = block(h, mask)
        if mask is None:
            return self.proj(torch.cat([h.mean(-1), h.amax(-1)], dim=1))
        mean = h.sum(-1) / mask.sum(-1).clamp_min(1.0)
        # masked max: padded positions must never win
        peak = h.masked_fill(mask == 0, float("-inf")).amax(-1)
        return self.proj(torch.cat([mean, peak], dim=1))
