"""Interpretation: exact modality Shapley values, captum attributions inside a modality, plots.

- `modality_shapley()`: per-sample Shapley value of each modality (exact for M <= 8,
  Monte Carlo with standard errors above), each coalition a real forward pass.
- `feature_attributions()`: captum IntegratedGradients / FeatureAblation over one
  modality's input (tabular features, ECG samples and leads, image pixels and bands).
- plots: `plot_waterfall()`, `plot_cohort()`, `plot_band_importance()`,
  `plot_ecg_saliency()`, `plot_feature_importance()`.
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
from modfuse.interpret.plots import (
    plot_band_importance,
    plot_cohort,
    plot_ecg_saliency,
    plot_feature_importance,
    plot_waterfall,
)
from modfuse.interpret.report import explain_report
from modfuse.interpret.shapley import ShapleyResult, modality_shapley

__all__ = [
    "Attribution",
    "ShapleyResult",
    "band_importance",
    "explain_report",
    "feature_attributions",
    "importance",
    "lead_importance",
    "modality_shapley",
    "pixel_map",
    "plot_band_importance",
    "plot_cohort",
    "plot_ecg_saliency",
    "plot_feature_importance",
    "plot_waterfall",
    "time_saliency",
]
