"""Attributions drawn over the input they explain: pixel heatmaps over an X-ray or a spectral
chip, attributions along a time series' dates (matplotlib, no pyplot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from modfuse.errors import ModfuseError
from modfuse.interpret.plots import _np

__all__ = ["plot_pixel_attribution", "plot_time_attribution", "rgb_composite"]

TRUE_COLOUR = ("B04", "B03", "B02")  # Sentinel-2 red, green, blue


def _stretch(image: np.ndarray) -> np.ndarray:
    """Per-channel 2-98 percentile stretch to [0, 1] (robust to a few bright pixels)."""
    low = np.nanpercentile(image, 2, axis=(-2, -1), keepdims=True)
    high = np.nanpercentile(image, 98, axis=(-2, -1), keepdims=True)
    return np.clip((image - low) / np.where(high > low, high - low, 1.0), 0.0, 1.0)


def rgb_composite(image: Any, band_names: Sequence[str] | None = None, rgb: Sequence[int] | None = None) -> np.ndarray:
    """(C, H, W) image -> (H, W, 3) stretched composite, or (H, W) grey for a single band.

    Args:
        image: (C, H, W) one sample.
        band_names: C names; B04/B03/B02 (true colour) are used when all present.
        rgb: three channel indices (overrides ``band_names``; default true colour if found,
            else the first three channels, else channel 0 in grey).
    """
    x = _np(image).astype(np.float64)
    if x.ndim != 3:
        raise ModfuseError(f"expected an image of shape (C, H, W), found {x.shape}")
    if rgb is None and band_names is not None and all(b in band_names for b in TRUE_COLOUR):
        rgb = [list(band_names).index(b) for b in TRUE_COLOUR]
    if rgb is None and x.shape[0] >= 3:
        rgb = [0, 1, 2]
    if rgb is None:
        return _stretch(x[:1])[0]
    if len(rgb) != 3 or max(rgb) >= x.shape[0]:
        raise ModfuseError(f"rgb must be 3 channel indices below {x.shape[0]}, found {list(rgb)}")
    return _stretch(x[list(rgb)]).transpose(1, 2, 0)


def plot_pixel_attribution(
    image: Any,
    attribution: Any,
    band_names: Sequence[str] | None = None,
    rgb: Sequence[int] | None = None,
    alpha: float = 0.55,
    title: str | None = None,
) -> Figure:
    """Two panels: the image, and the image overlaid with |attribution| summed over bands.

    Args:
        image: (C, H, W) one sample (a grey X-ray is (1, H, W)).
        attribution: (C, H, W) its attributions, or an (H, W) pixel map (`pixel_map()`).
        band_names: C band names (picks a true-colour composite for Sentinel-2 chips).
        rgb: channel indices of the composite (see `rgb_composite()`).
        alpha: opacity of the heatmap.
        title: figure title (default: the bands shown).

    The heatmap (``fig.axes[1].images[-1]``) is |attribution| / its maximum, in [0, 1].
    """
    x = _np(image)
    a = np.abs(np.nan_to_num(_np(attribution).astype(np.float64)))
    if a.ndim == 3:
        a = a.sum(0)
    if x.ndim != 3 or a.shape != x.shape[1:]:
        raise ModfuseError(f"expected image (C, H, W) and attributions (C, H, W) or (H, W), found {x.shape}, {a.shape}")
    shown = rgb_composite(x, band_names, rgb)
    heat = a / (a.max() or 1.0)
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    cmap = "gray" if shown.ndim == 2 else None
    left.imshow(shown, cmap=cmap)
    right.imshow(shown, cmap=cmap)
    mappable = right.imshow(heat, cmap="inferno", alpha=alpha, vmin=0.0, vmax=1.0)
    fig.colorbar(mappable, ax=right, shrink=0.8, label="|attribution| (max = 1)")
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    names = list(band_names) if band_names is not None else None
    left.set_title(_composite_name(x.shape[0], names, rgb, shown.ndim == 2))
    right.set_title("attribution per pixel (summed over bands)")
    if title:
        fig.suptitle(title)
    return fig


def _composite_name(channels: int, names: list[str] | None, rgb: Sequence[int] | None, grey: bool) -> str:
    if grey:
        return f"input ({names[0]})" if names else "input"
    if rgb is None and names is not None and all(b in names for b in TRUE_COLOUR):
        idx = [names.index(b) for b in TRUE_COLOUR]
    else:
        idx = list(rgb) if rgb is not None else [0, 1, 2]
    shown = [names[i] for i in idx] if names else [f"band {i}" for i in idx]
    return f"input (R, G, B = {', '.join(shown)})"


def plot_time_attribution(
    series: Any,
    attribution: Any,
    timestamps: Sequence[Any] | pd.DatetimeIndex | None = None,
    valid: Any = None,
    channel_names: Sequence[str] | None = None,
    title: str = "attribution per date",
) -> Figure:
    """A time series (top) and its |attribution| per date (bars, bottom); gaps are not drawn.

    Args:
        series: (T, C) or (T,) one sample's values (NaN: a gap).
        attribution: attributions of the same shape (summed over channels for the bars).
        timestamps: T dates (default: the date index 0..T-1).
        valid: (T,) bool, observed dates (default: the non-NaN ones); invalid dates are
            drawn as grey ticks on the top panel.
        channel_names: C channel names (the legend).
        title: figure title.
    """
    x = _np(series).astype(np.float64)
    a = np.abs(np.nan_to_num(_np(attribution).astype(np.float64)))
    x = x[:, None] if x.ndim == 1 else x
    a = a[:, None] if a.ndim == 1 else a
    if x.ndim != 2 or a.shape != x.shape:
        raise ModfuseError(f"expected series (T, C) and attributions of the same shape, found {x.shape}, {a.shape}")
    t_len = x.shape[0]
    ok = ~np.isnan(x).any(1) if valid is None else _np(valid).astype(bool).reshape(-1)
    if ok.shape != (t_len,):
        raise ModfuseError(f"valid must have {t_len} entries, found {ok.shape}")
    when = np.asarray(pd.DatetimeIndex(timestamps)) if timestamps is not None else np.arange(t_len)
    if len(when) != t_len:
        raise ModfuseError(f"{len(when)} timestamps for a series of {t_len} dates")
    names = list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(x.shape[1])]
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    for c, name in enumerate(names):
        top.plot(when[ok], x[ok, c], marker="o", ms=3, lw=1, label=name)
    low = np.nanmin(x[ok]) if ok.any() else 0.0
    top.plot(when[~ok], np.full((~ok).sum(), low), "|", color="0.6", label="gap (not observed)")
    top.legend(fontsize=8, loc="best")
    top.set_ylabel("value")
    step = np.diff(when).min() if t_len > 1 else 1
    # matplotlib's date axis counts in days: a timedelta bar width must be given in days
    width = 0.8 * (step / np.timedelta64(1, "D") if isinstance(step, np.timedelta64) else step)
    bottom.bar(when, a.sum(1), width=width, color="tab:red")
    bottom.set_ylabel("|attribution|")
    bottom.set_xlabel("date" if timestamps is not None else "date index")
    top.set_title(title)
    return fig
