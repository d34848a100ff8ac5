"""Explanation report: modality Shapley values and within-modality attributions, as CSV + PNG."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from modfuse.core.model import unwrap_model
from modfuse.data.batch import ModalityBatch, PaddedTensor
from modfuse.errors import ModfuseError
from modfuse.interpret.attributions import Attribution, band_importance, feature_attributions, lead_importance
from modfuse.interpret.plots import (
    plot_band_importance,
    plot_cohort,
    plot_ecg_saliency,
    plot_feature_importance,
    plot_waterfall,
)
from modfuse.interpret.shapley import modality_shapley
from modfuse.robust.evaluate import iter_batches

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
        ``attr_<m>_saliency.png`` (first sample); images (n, C, H, W): ``attr_<m>.csv`` (per
        band) + ``attr_<m>_bands.png``. Other inputs (graphs, dicts) are skipped.

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
    if attributions:
        first = next(iter_batches(data, batch_size))
        for m in model.modalities:
            _attribution_files(model, first, m, task, method, max_attr_samples, out, _feature_names(data, m))
    return table


def _feature_names(data: Any, modality: str) -> list[str] | None:
    """Column names of a tabular source, when the data carries them."""
    dataset = getattr(data, "dataset", data)
    while hasattr(dataset, "dataset") and not hasattr(dataset, "sources"):
        dataset = dataset.dataset
    source = getattr(dataset, "sources", {}).get(modality)
    names = getattr(source, "feature_names", None)
    return list(names) if names else None


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
    names: list[str] | None,
) -> None:
    x = batch.inputs.get(modality)
    values = x.values if isinstance(x, PaddedTensor) else x
    if not isinstance(values, torch.Tensor) or not values.is_floating_point() or values.dim() not in (2, 3, 4):
        log.info("no attributions for %r: its input is not a float tensor of 2 to 4 dimensions", modality)
        return
    try:
        attr = feature_attributions(model, batch, modality, method, task, max_samples=max_samples)  # type: ignore[arg-type]
    except ModfuseError as exc:
        log.warning("no attributions for %r: %s", modality, exc)
        return
    _write_attribution(attr, out / f"attr_{_safe(modality)}", names)


def _write_attribution(attr: Attribution, stem: Path, names: list[str] | None) -> None:
    v = attr.values.nan_to_num()
    if v.dim() == 2:
        cols = names if names is not None and len(names) == v.shape[1] else [f"x{i}" for i in range(v.shape[1])]
        imp = pd.Series(v.abs().mean(0).cpu().numpy(), index=cols, name="mean_abs_attribution")
        imp.rename_axis("feature").reset_index().to_csv(f"{stem}.csv", index=False)
        plot_feature_importance(imp).savefig(f"{stem}.png", dpi=100)
    elif v.dim() == 3:
        leads = lead_importance(v).mean(0).cpu().numpy()
        pd.DataFrame({"lead": range(len(leads)), "mean_abs_attribution": leads}).to_csv(f"{stem}.csv", index=False)
        plot_ecg_saliency(attr.inputs[0], v[0]).savefig(f"{stem}_saliency.png", dpi=100)
    else:
        bands = band_importance(v).mean(0).cpu().numpy()
        pd.DataFrame({"band": range(len(bands)), "mean_abs_attribution": bands}).to_csv(f"{stem}.csv", index=False)
        plot_band_importance(bands).savefig(f"{stem}_bands.png", dpi=100)
