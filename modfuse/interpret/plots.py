"""Plots of modality contributions and within-modality attributions (matplotlib, no pyplot).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot, so it works on
headless machines and never changes the user's backend; save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from modfuse.errors import ModfuseError
from modfuse.interpret.shapley import ShapleyResult

__all__ = ["plot_band_importance", "plot_cohort", "plot_ecg_saliency", "plot_feature_importance", "plot_waterfall"]


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_waterfall(result: ShapleyResult, sample: Hashable | None = None) -> Figure:
    """Per-sample waterfall: from f(empty) through each modality's contribution to f(all).

    Args:
        result: output of `modality_shapley()`.
        sample: the sample id (default: the first sample).
    """
    sid = result.values.index[0] if sample is None else sample
    if sid not in result.values.index:
        raise ModfuseError(f"sample {sid!r} is not in the explained samples")
    phi = result.values.loc[sid]
    phi = phi.reindex(phi.abs().sort_values(ascending=False).index)
    base, full = float(result.base.loc[sid]), float(result.full.loc[sid])
    fig = Figure(figsize=(7, 1.2 + 0.45 * len(phi)), layout="constrained")
    ax = fig.add_subplot()
    labels = ["f(no modality)", *map(str, phi.index), "f(all)"]
    starts = base + np.concatenate([[0.0], np.cumsum(phi.to_numpy())[:-1]])
    ax.barh(0, base, color="0.6")
    colors = ["tab:red" if v >= 0 else "tab:blue" for v in phi]
    ax.barh(range(1, len(phi) + 1), phi.to_numpy(), left=starts, color=colors)
    ax.barh(len(phi) + 1, full, color="0.3")
    ends = np.concatenate([[0.0, base, full], starts, starts + phi.to_numpy()])
    low, high = min(0.0, ends.min()), ends.max()
    pad = 0.22 * (high - low or 1.0)  # room right of the longest bar for its value label
    ax.set_xlim(low - (0.05 * (high - low) if low < 0 else 0.0), high + pad)
    for i, (start, value) in enumerate(zip(starts, phi), start=1):
        ax.text(max(start, start + value), i, f" {value:+.3f}", va="center", fontsize=8, clip_on=True)
    for i, value in ((0, base), (len(phi) + 1, full)):
        ax.text(max(value, 0.0), i, f" {value:.3f}", va="center", fontsize=8, clip_on=True)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel(_value_label(result))
    ax.set_title(f"sample {sid}: modality contributions ({result.method} Shapley)")
    return fig


def _value_label(result: ShapleyResult) -> str:
    return {
        "binary": "predicted probability",
        "multiclass": "probability of the explained class",
        "multilabel": "probability of the explained label",
        "regression": "predicted value",
        "survival": "predicted risk",
    }.get(result.kind, "prediction")


def plot_cohort(result: ShapleyResult) -> Figure:
    """Cohort bar chart: mean |Shapley value| per modality (bars) and mean signed value (dots)."""
    mean_abs = result.mean_abs()
    signed = result.values.mean()[mean_abs.index]
    fig = Figure(figsize=(6, 1 + 0.4 * len(mean_abs)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(mean_abs.index.astype(str), mean_abs.to_numpy(), color="tab:purple", label="mean |value|")
    ax.scatter(signed.to_numpy(), mean_abs.index.astype(str), color="k", zorder=3, label="mean value")
    ax.axvline(0, color="0.5", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel(f"Shapley value ({_value_label(result)})")
    ax.set_title(f"modality importance over {len(result.values)} samples")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_feature_importance(
    importance: pd.Series | Any, names: Sequence[str] | None = None, top: int = 20, title: str = "feature importance"
) -> Figure:
    """Bar chart of the ``top`` largest feature importances (e.g. mean |attribution| per column).

    Args:
        importance: (F,) values, a Series indexed by feature name, or (n, F) (averaged over n,
            NaN entries skipped).
        names: feature names when ``importance`` is not a Series.
        top: how many features to show.
        title: the axes title.
    """
    if not isinstance(importance, pd.Series):
        values = _np(importance).astype(np.float64)
        # NaN attributions come from NaN (missing) cells of partly observed rows: skip them
        values = np.nanmean(values, 0) if values.ndim == 2 else values
        importance = pd.Series(
            values, index=list(names) if names is not None else [f"x{i}" for i in range(len(values))]
        )
    shown = importance.sort_values(ascending=False).head(top)
    fig = Figure(figsize=(6, 1 + 0.3 * len(shown)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(shown.index.astype(str), shown.to_numpy(), color="tab:green")
    ax.invert_yaxis()
    ax.set_xlabel("mean |attribution|")
    ax.set_title(title)
    return fig


def plot_band_importance(
    importance: Any,
    band_names: Sequence[str] | None = None,
    wavelengths: Sequence[float | None] | None = None,
    title: str = "spectral band importance",
) -> Figure:
    """Bar chart of spectral band importance, bands in channel order.

    Args:
        importance: (C,) or (n, C) (averaged over samples), e.g. `band_importance()`.
        band_names: C band names (default ``band 0``, ...), the x tick labels.
        wavelengths: C centre wavelengths in nm (e.g. ``RasterChipSource.wavelengths``),
            written under each band name (None entries: no wavelength).
        title: the axes title.
    """
    values = _np(importance)
    values = values.mean(0) if values.ndim == 2 else values
    names = list(band_names) if band_names is not None else [f"band {i}" for i in range(len(values))]
    if len(names) != len(values):
        raise ModfuseError(f"{len(names)} band names for {len(values)} bands")
    if wavelengths is not None and len(wavelengths) != len(values):
        raise ModfuseError(f"{len(wavelengths)} wavelengths for {len(values)} bands")
    fig = Figure(figsize=(max(4, 0.6 * len(values) + 1), 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(len(values)), values, color="tab:orange")
    ticks = [
        f"{n}\n{wavelengths[i]:.0f} nm" if wavelengths is not None and wavelengths[i] is not None else str(n)
        for i, n in enumerate(names)
    ]
    ax.set_xticks(range(len(values)), ticks, fontsize=8)
    ax.set_ylabel("|attribution|")
    ax.set_xlabel("band (centre wavelength)" if wavelengths is not None else "band")
    ax.set_title(title)
    return fig


def plot_ecg_saliency(
    signal: Any, saliency: Any, fs: float | None = None, lead_names: Sequence[str] | None = None
) -> Figure:
    """One panel per lead: the signal, with |attribution| over time as a shaded heat strip.

    Args:
        signal: (leads, L) one sample's signal.
        saliency: (leads, L) attributions of that sample, or (L,) shared by all leads.
        fs: sampling frequency in Hz (the x axis is in seconds when given, else in samples).
        lead_names: names of the leads.
    """
    sig = _np(signal)
    sal = np.abs(_np(saliency))
    if sig.ndim != 2:
        raise ModfuseError(f"expected a signal of shape (leads, L), found {sig.shape}")
    if sal.ndim == 1:
        sal = np.broadcast_to(sal, sig.shape)
    if sal.shape != sig.shape:
        raise ModfuseError(f"saliency shape {sal.shape} does not match the signal {sig.shape}")
    leads, length = sig.shape
    t = np.arange(length) / fs if fs else np.arange(length)
    names = list(lead_names) if lead_names is not None else [f"lead {i}" for i in range(leads)]
    fig = Figure(figsize=(9, 1.6 * leads + 0.6), layout="constrained")
    axes = fig.subplots(leads, 1, sharex=True, squeeze=False)[:, 0]
    peak = sal.max() or 1.0
    for i, ax in enumerate(axes):
        low, high = float(sig[i].min()), float(sig[i].max())
        high = high if high > low else low + 1.0
        ax.imshow(
            sal[i][None, :] / peak,
            aspect="auto",
            cmap="Reds",
            vmin=0,
            vmax=1,
            extent=(t[0], t[-1], low, high),
            alpha=0.6,
        )
        ax.plot(t, sig[i], color="k", lw=0.8)
        ax.set_ylim(low, high)
        ax.set_ylabel(names[i])
    axes[-1].set_xlabel("time (s)" if fs else "sample")
    axes[0].set_title("saliency over time (red: large |attribution|)")
    return fig
