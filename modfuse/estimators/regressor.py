"""`FusionRegressor`: regression (one target or several) over modfuse models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score

from modfuse.core.tasks import TaskSpec
from modfuse.data.transforms import Standardizer
from modfuse.errors import ModfuseError
from modfuse.estimators.base import _FusionEstimator

__all__ = ["FusionRegressor"]


class FusionRegressor(RegressorMixin, _FusionEstimator):
    """Multimodal regressor (one target or several); targets are standardised for training
    and predictions are returned in the original units. ``score`` is R²."""

    def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
        y = np.asarray(y, dtype=np.float32)
        if y.ndim not in (1, 2) or not np.isfinite(y).all():
            raise ModfuseError(f"expected finite targets of shape (n,) or (n, k), found shape {y.shape}")
        scaler = Standardizer.fit(y)  # float32 statistics: predictions keep the dtype of y
        self.y_mean_ = scaler.mean.reshape(y.shape[1:]).astype(np.float32)
        self.y_std_ = scaler.std.reshape(y.shape[1:]).astype(np.float32)
        outputs = 1 if y.ndim == 1 else y.shape[1]
        return TaskSpec("regression", outputs), ((y - self.y_mean_) / self.y_std_).astype(np.float32)

    def _encode_target(self, y: Any) -> np.ndarray:
        return ((np.asarray(y, dtype=np.float32) - self.y_mean_) / self.y_std_).astype(np.float32)

    def predict(self, X: Any, modalities: Mapping[str, Any] | None = None) -> np.ndarray:
        """Estimates (n,) or (n, k) in the units of ``y``."""
        data, _ = self._inputs(X, modalities)
        # float64 as scikit-learn's regressors return (the network itself computes in float32)
        z = self.task_spec_.activate(self._logits(data)).numpy().astype(np.float64)
        return z * self.y_std_ + self.y_mean_

    def score(self, X: Any, y: Any, sample_weight: Any = None, modalities: Mapping[str, Any] | None = None) -> float:
        """R² of ``predict(X)`` against ``y``."""
        return float(r2_score(y, self.predict(X, modalities), sample_weight=sample_weight))
