"""Explanation report: modality Shapley values and within-modality attributions, as CSV + PNG."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from modfuse.core.model import model_device, unwrap_model
from modfuse.data.batch import ModalityBatch
from modfuse.data.loaders import iter_batches
from modfuse.errors import ModfuseError
from modfuse.interpret.attributions import (
    Attribution,
    attributed_values,
    band_importance,
    feature_attributions,
    lead_importance,
)
from modfuse.interpret.heatmaps import plot_pixel_attribution, plot_time_attribution
from modfuse.interpret.metadata import ModalityInfo, modality_info
from modfuse.interpret.plots import (
    plot_band_importance,
    plot_cohort,
    plot_ecg_saliency,
    plot_feature_importance,
    plot_waterfall,
)
from modfuse.interpret.sequential_plot import plot_sequential, prediction_path
from modfuse.interpret.shapley import modality_shapley

__all__ = ["explain_report"]

log = logging.getLogger(__name__)


def explain_report(
    model: Any,
    data: Any,
    out_dir: str | Path,
    task: str | None = None,
    max_samples: int = 256,
    n_waterfalls: int = 3,
    attributions: bool = True,
    method: str = "integrated_gradients",
    max_attr_samples: int = 32,
    exact_max: int = 8,
    n_permutations: int = 64,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Explain ``model`` on ``data`` and write tables and plots.

    Files written to ``out_dir``:
        ``shapley.csv``: one row per sample (id, one Shapley value per modality, base, full,
        output, and ``se:`` columns for Monte Carlo estimates); ``shapley_cohort.png``;
        ``waterfall_<k>.png`` for the first ``n_waterfalls`` samples; and, with
        ``attributions``, for every modality with a tensor input (first batch, up to
        ``max_attr_samples`` samples): tabular (n, F): ``attr_<m>.csv`` (mean |attribution| per
        feature) + ``attr_<m>.png``; signals (n, leads, L): ``attr_<m>.csv`` (per lead) +
        feature, labelled with the reader's column names) + ``attr_<m>.png``; signals
        (n, leads, L): ``attr_<m>.csv`` (per lead, by lead name) + ``attr_<m>_saliency.png``
        (first sample, x in seconds when the reader knows the sampling rate); images
        (n, C, H, W): ``attr_<m>.csv`` (per band, with names and wavelengths of raster
        readers) + ``attr_<m>_pixels.png`` (heatmap over the first image) +
        ``attr_<m>_bands.png`` (more than one band); time series ``{"x": (n, T, C), ...}``:
        ``attr_<m>.csv`` (per date) + ``attr_<m>_dates.png``. Graphs are skipped. A
        sequential model also gets ``sequential_steps.csv`` (prediction after each step, first
        batch), ``sequential_cohort.png`` and ``sequential_samples.png``.

    Args:
        model: a fusion model or a FusionTask (its ``.model`` is used).
        data: a datamodule (its test split), a MultiModalDataset, a DataLoader of
            ModalityBatch, or a ModalityBatch.
        out_dir: output folder (created).
        task: the task to explain (default: the first).
        max_samples: Shapley values for at most this many samples.
        n_waterfalls: how many per-sample waterfall plots.
        attributions: also compute captum attributions within each modality.
        method: ``integrated_gradients`` or ``feature_ablation``.
        max_attr_samples: samples per modality for attributions.
        exact_max: exact Shapley values up to this many modalities.
        n_permutations: Monte Carlo permutations above ``exact_max``.
        seed: Monte Carlo seed.
        batch_size: batch size when ``data`` is a dataset.

    Returns:
        The per-sample Shapley table (as in ``shapley.csv``).
    """
    model = unwrap_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = modality_shapley(
        model, data, task, None, exact_max, n_permutations, seed, max_samples=max_samples, batch_size=batch_size
    )
    table = result.to_frame().reset_index()
    table.to_csv(out / "shapley.csv", index=False)
    plot_cohort(result).savefig(out / "shapley_cohort.png", dpi=100)
    for k, sid in enumerate(result.values.index[:n_waterfalls]):
        plot_waterfall(result, sid).savefig(out / f"waterfall_{k}.png", dpi=100)
    first = None
    if hasattr(model, "contributions"):  # a sequential model: its per-step changes of the prediction
        first = next(iter_batches(data, batch_size))
        _sequential_files(model, first, out, task)
    if attributions:
        first = first if first is not None else next(iter_batches(data, batch_size))
        for m in model.modalities:
            _attribution_files(model, first, m, task, method, max_attr_samples, out, modality_info(data, m))
    return table


def _sequential_files(model: Any, batch: ModalityBatch, out: Path, task: str | None) -> None:
    was_training = model.training
    model.eval()
    try:
        contributions = model.contributions(batch.to(model_device(model)))
    finally:
        model.train(was_training)
    path = prediction_path(contributions, task)
    steps = pd.DataFrame(path, columns=["prior", *contributions.modalities], index=pd.Index(batch.ids, name="id"))
    steps.reset_index().to_csv(out / "sequential_steps.csv", index=False)
    plot_sequential(contributions, task, cohort=True).savefig(out / "sequential_cohort.png", dpi=100)
    plot_sequential(contributions, task, max_lines=8, cohort=False).savefig(out / "sequential_samples.png", dpi=100)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _attribution_files(
    model: Any,
    batch: ModalityBatch,
    modality: str,
    task: str | None,
    method: str,
    max_samples: int,
    out: Path,
    info: ModalityInfo,
) -> None:
    x = batch.inputs.get(modality)
    values = attributed_values(x)
    if values is None or values.dim() not in (2, 3, 4):
        log.info("no attributions for %r: its input is not a float tensor of 2 to 4 dimensions", modality)
        return
    try:
        attr = feature_attributions(model, batch, modality, method, task, max_samples=max_samples)  # type: ignore[arg-type]
    except ModfuseError as exc:
        log.warning("no attributions for %r: %s", modality, exc)
        return
    stem = out / f"attr_{_safe(modality)}"
    if isinstance(x, dict):  # a time series {"x": (B, T, C), "valid": (B, T), ...}
        valid = x.get("valid")
        first = batch.index(modality)[0]
        _write_series(attr, stem, info, valid[first] if isinstance(valid, torch.Tensor) else None)
    else:
        _write_attribution(attr, stem, info)


def _write_attribution(attr: Attribution, stem: Path, info: ModalityInfo) -> None:
    v = attr.values.nan_to_num()
    m = attr.modality
    if v.dim() == 2:
        names = info.feature_names
        cols = names if names is not None and len(names) == v.shape[1] else [f"x{i}" for i in range(v.shape[1])]
        imp = pd.Series(v.abs().mean(0).cpu().numpy(), index=cols, name="mean_abs_attribution")
        imp.rename_axis("feature").reset_index().to_csv(f"{stem}.csv", index=False)
        plot_feature_importance(imp, title=f"{m}: feature importance").savefig(f"{stem}.png", dpi=100)
    elif v.dim() == 3:
        leads = lead_importance(v).mean(0).cpu().numpy()
        names = info.lead_names if info.lead_names and len(info.lead_names) == len(leads) else None
        lead_col = names if names is not None else list(range(len(leads)))
        pd.DataFrame({"lead": lead_col, "mean_abs_attribution": leads}).to_csv(f"{stem}.csv", index=False)
        fig = plot_ecg_saliency(attr.inputs[0], v[0], fs=info.fs, lead_names=names)
        fig.savefig(f"{stem}_saliency.png", dpi=100)
    else:
        bands = band_importance(v).mean(0).cpu().numpy()
        names = info.band_names if info.band_names and len(info.band_names) == len(bands) else None
        waves = info.wavelengths if names is not None else None
        table = pd.DataFrame({"band": names if names is not None else range(len(bands))})
        if waves is not None:
            table["wavelength_nm"] = waves
        table["mean_abs_attribution"] = bands
        table.to_csv(f"{stem}.csv", index=False)
        if len(bands) > 1:
            fig = plot_band_importance(bands, names, waves, title=f"{m}: spectral band importance")
            fig.savefig(f"{stem}_bands.png", dpi=100)
        fig = plot_pixel_attribution(attr.inputs[0], v[0], names, title=f"{m}, sample {attr.ids[0]}")
        fig.savefig(f"{stem}_pixels.png", dpi=100)


def _write_series(attr: Attribution, stem: Path, info: ModalityInfo, valid: torch.Tensor | None) -> None:
    """(n, T, C) time-series attributions: per date (csv) and over the first sample's dates (png)."""
    v = attr.values.nan_to_num()
    if v.dim() != 3:
        log.info("no attribution plot for %r: expected (n, T, C) values, found %s", attr.modality, tuple(v.shape))
        return
    per_date = v.abs().sum(2).mean(0).cpu().numpy()
    dates = info.timestamps if info.timestamps is not None and len(info.timestamps) == len(per_date) else None
    table = pd.DataFrame({"date": dates if dates is not None else range(len(per_date))})
    table["mean_abs_attribution"] = per_date
    table.to_csv(f"{stem}.csv", index=False)
    title = f"{attr.modality}, sample {attr.ids[0]}: attribution per date"
    plot_time_attribution(attr.inputs[0], v[0], dates, valid, title=title).savefig(f"{stem}_dates.png", dpi=100)
