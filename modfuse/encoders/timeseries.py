"""Temporal encoder for series with invalid time steps (cloud gaps, irregular vitals)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from modfuse.data.batch import PaddedTensor
from modfuse.encoders.base import Encoder, check_ndim, check_size
from modfuse.encoders.registry import register
from modfuse.errors import ModfuseError

__all__ = ["TimeSeriesEncoder", "time_encoding"]


def time_encoding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal encoding of (possibly irregular, fractional) times.

    Args:
        t: (n, T) times (step index, or e.g. days since the first date).
        dim: encoding width (even).
        max_period: longest period of the sinusoids.

    Returns:
        (n, T, dim).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[..., None] * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


@register("timeseries")
class TimeSeriesEncoder(Encoder):
    """Transformer or GRU over the valid time steps of a multichannel series.

    Validity: a step is valid when at least one of its channels is observed. A channel that
    is NaN at a valid step is filled with 0 and flagged by a per-channel observation
    indicator that is part of the input, so partially observed steps (one vital sign
    measured, another not) are still used. Invalid steps never reach the pooled output:

    - ``kind="transformer"``: invalid steps are masked as attention keys and excluded from the
      masked mean pooling;
    - ``kind="gru"``: the valid steps of each row are packed in time order (log(1 + time since the
      previous valid step) is an input) and the final hidden state is the feature.

    A row with NO valid step (a fully clouded pixel, a patient without any measurement) gets
    the learned ``no_observation`` embedding (an ``out_dim`` vector trained like any other
    parameter) instead of an undefined pooling over zero steps. Rows are independent.

    Args:
        channels: channels per time step.
        kind: ``"transformer"`` or ``"gru"``.
        hidden: model width.
        layers: transformer layers / GRU layers.
        heads: attention heads (transformer).
        dropout: dropout probability.
        out_dim: output width.
        max_period: longest period of the sinusoidal time encoding (in time units).

    Shapes:
        input, one of
        - Tensor (n, T, channels) with NaN marking unobserved values;
        - dict ``{"x": (n, T, channels), "valid": (n, T) bool, "t": (n, T) float times (optional)}``
          (values at invalid steps are ignored, NaN allowed there);
        - PaddedTensor with values (n, T_max, channels) padded along the time axis and mask (n, T_max);
        -> output (n, out_dim). Without ``"t"`` times are the step indices 0..T-1.
    """

    def __init__(
        self,
        channels: int,
        kind: Literal["transformer", "gru"] = "transformer",
        hidden: int = 64,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        out_dim: int = 64,
        max_period: float = 10_000.0,
    ) -> None:
        super().__init__()
        if kind not in ("transformer", "gru"):
            raise ModfuseError(f"kind: expected 'transformer' or 'gru', found {kind!r}")
        if kind == "transformer" and hidden % heads:
            raise ModfuseError(f"hidden: expected a multiple of heads={heads}, found {hidden}")
        self.channels, self.kind, self.hidden, self.out_dim = channels, kind, hidden, out_dim
        self.max_period = max_period
        # values (zero-filled) + per-channel observation indicators (+ time gap for the GRU)
        width = 2 * channels + (1 if kind == "gru" else 0)
        self.inp = nn.Linear(width, hidden)
        if kind == "transformer":
            layer = nn.TransformerEncoderLayer(
                hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True, activation="gelu"
            )
            self.body: nn.Module = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(hidden)
        else:
            self.body = nn.GRU(hidden, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, out_dim)
        self.no_observation = nn.Parameter(torch.zeros(out_dim))

    # ------------------------------------------------------------------ input parsing
    def _parse(self, x: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Return values (n, T, C) with NaN where unobserved, valid (n, T) bool, times (n, T)."""
        times = None
        if isinstance(x, PaddedTensor):
            if x.dim not in (-2, 1):
                raise ModfuseError(f"expected series padded along the time axis (dim -2), found dim={x.dim}")
            values, valid = x.values, x.mask
        elif isinstance(x, Mapping):
            if "x" not in x or "valid" not in x:
                raise ModfuseError(f"expected a dict with keys 'x' and 'valid' (and optional 't'), found {sorted(x)}")
            values, valid, times = x["x"], x["valid"], x.get("t")
            if isinstance(values, PaddedTensor):  # collated variable-length dict entries
                values = values.values
                valid = valid.values if isinstance(valid, PaddedTensor) else valid
                times = times.values if isinstance(times, PaddedTensor) else times
        else:
            values, valid = x, None
        check_ndim(values, 3, "(n, time steps, channels)")
        check_size(values, 2, self.channels, "number of series channels")
        values = values.float()
        if torch.isinf(values).any():
            row = int(torch.isinf(values).flatten(1).any(1).nonzero()[0])
            raise ModfuseError(f"series: expected finite values or NaN (unobserved), found inf in row {row}")
        n, steps = values.shape[:2]
        if valid is None:
            valid = torch.ones(n, steps, dtype=torch.bool, device=values.device)
        if tuple(valid.shape) != (n, steps):
            raise ModfuseError(f"validity mask: expected shape {(n, steps)}, found {tuple(valid.shape)}")
        valid = valid.bool()
        values = values.masked_fill(~valid[..., None], float("nan"))
        if times is None:
            times = torch.arange(steps, device=values.device, dtype=torch.float32).expand(n, steps)
        elif tuple(times.shape) != (n, steps):
            raise ModfuseError(f"times 't': expected shape {(n, steps)}, found {tuple(times.shape)}")
        observed = ~torch.isnan(values)
        return values, observed.any(-1), times.float()

    # ------------------------------------------------------------------ forward
    def forward(self, x: Any) -> Tensor:
        """Series of n rows -> (n, out_dim)."""
        values, valid, times = self._parse(x)
        out = self.no_observation.expand(values.shape[0], -1).clone()
        rows = valid.any(1).nonzero(as_tuple=True)[0]
        if rows.numel():
            # only rows with at least one valid step are encoded; the others keep no_observation
            run = self._transformer if self.kind == "transformer" else self._gru
            out = out.index_copy(0, rows, run(values[rows], valid[rows], times[rows]))
        return out

    def _features(self, values: Tensor) -> Tensor:
        observed = ~torch.isnan(values)
        return torch.cat([torch.nan_to_num(values, nan=0.0), observed.float()], dim=-1)

    def _transformer(self, values: Tensor, valid: Tensor, times: Tensor) -> Tensor:
        h = self.inp(self._features(values)) + time_encoding(times, self.hidden, self.max_period)
        h = self.norm(self.body(h, src_key_padding_mask=~valid))
        w = valid[..., None].float()
        return self.proj((h * w).sum(1) / w.sum(1))

    def _gru(self, values: Tensor, valid: Tensor, times: Tensor) -> Tensor:
        # move each row's valid steps to the front, keeping their time order (stable sort)
        order = torch.sort((~valid).int(), dim=1, stable=True).indices
        values = values.gather(1, order[..., None].expand_as(values))
        times = times.gather(1, order)
        lengths = valid.sum(1)
        # log scale: gaps of days (satellite revisits) and of minutes (vitals) both stay O(1)
        gaps = torch.log1p(torch.diff(times, dim=1, prepend=times[:, :1]).clamp_min(0))[..., None]
        h = self.inp(torch.cat([self._features(values), gaps], dim=-1))
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.body(packed)
        return self.proj(last[-1])
