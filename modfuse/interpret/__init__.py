"""Interpretation: exact modality Shapley values, captum attributions inside a modality, plots.

- `modality_shapley()`: per-sample Shapley value of each modality (exact for M <= 8,
  Monte Carlo with standard errors above), each coalition a real forward pass.
- `feature_attributions()`: captum IntegratedGradients / FeatureAblation over one
  modality's input (tabular features, ECG samples and leads, image pixels and bands).
- plots: `plot_waterfall()`, `plot_cohort()`, `plot_band_importance()` (band names and
  wavelengths), `plot_ecg_saliency()` (lead names, seconds), `plot_feature_importance()`
  (column names), `plot_pixel_attribution()` (heatmap over an X-ray or a spectral chip),
  `plot_time_attribution()` (per date), `plot_sequential()` (per-step predictions of a
  sequential model), `plot_subset_gap()` (fused vs specialist per subset).
- `modality_info()`: the axis labels (columns, leads, sampling rate, bands, dates) a reader knows.
- `explain_report()`: writes the CSV tables and PNG plots.

captum is imported only when attributions are computed (extra ``modfuse[explain]``).
"""

from __future__ import annotations

from modfuse.interpret.attributions import (
    Attribution,
    band_importance,
    feature_attributions,
    importance,
    lead_importance,
    pixel_map,
    time_saliency,
)
from modfuse.interpret.heatmaps import plot_pixel_attribution, plot_time_attribution, rgb_composite
from modfuse.interpret.metadata import ModalityInfo, modality_info
from modfuse.interpret.plots import (
    plot_band_importance,
    plot_cohort,
    plot_ecg_saliency,
    plot_feature_importance,
    plot_waterfall,
)
from modfuse.interpret.report import explain_report
from modfuse.interpret.sequential_plot import plot_sequential, prediction_path
from modfuse.interpret.shapley import ShapleyResult, modality_shapley
from modfuse.robust.subset_gap import plot_subset_gap

__all__ = [
    "Attribution",
    "ModalityInfo",
    "ShapleyResult",
    "band_importance",
    "explain_report",
    "feature_attributions",
    "importance",
    "lead_importance",
    "modality_info",
    "modality_shapley",
    "pixel_map",
    "plot_band_importance",
    "plot_cohort",
    "plot_ecg_saliency",
    "plot_feature_importance",
    "plot_pixel_attribution",
    "plot_sequential",
    "plot_subset_gap",
    "plot_time_attribution",
    "plot_waterfall",
    "prediction_path",
    "rgb_composite",
    "time_saliency",
]
