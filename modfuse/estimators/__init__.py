"""scikit-learn estimators over modfuse models: `FusionClassifier`, `FusionRegressor`,
`FusionSurvival` (``fit(X, y)`` with ``X`` a dict modality -> array or DataFrame).

- `modfuse.estimators.base`: inputs, automatic encoders, the shared estimator and each task's.
- `modfuse.estimators.auto`: ``strategy="auto"`` (inner cross-validation) and seed ensembles.
"""

from __future__ import annotations

from modfuse.estimators.base import STRATEGIES, FusionClassifier, FusionRegressor, FusionSurvival, align_frames

__all__ = ["STRATEGIES", "FusionClassifier", "FusionRegressor", "FusionSurvival", "align_frames"]
