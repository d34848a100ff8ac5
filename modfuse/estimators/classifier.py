"""`FusionClassifier`: binary or multiclass classification over modfuse models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score

from modfuse.core.tasks import TaskSpec
from modfuse.errors import ModfuseError
from modfuse.estimators.base import _FusionEstimator

__all__ = ["FusionClassifier"]


class FusionClassifier(ClassifierMixin, _FusionEstimator):
    """Multimodal classifier (binary or multiclass) with per-sample missing modalities.

    Arguments are those of the shared estimator: ``strategy``, ``encoders``, ``max_epochs``,
    ``batch_size``, ``lr``, ``weight_decay``, ``patience``, ``val_fraction``,
    ``strategy_kwargs``, ``random_state``, ``device``, ``verbose``, ``modalities``... (see
    `modfuse.estimators.base` and `_FusionEstimator`).

    Attributes:
        classes_: the class labels seen in ``fit``.
        model_: the trained fusion model.

    Example:
        >>> clf = FusionClassifier(modalities={"mean": mean_cols, "se": se_cols}, max_epochs=20)
        >>> cross_val_score(clf, frame, y, cv=3)
        >>> clf.fit(frame, y).predict_proba(frame, as_frame=True)   # indexed by frame.index
    """

    def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
        names = list(y.index) if isinstance(y, pd.Series) else None
        y = np.asarray(y)
        if y.ndim != 1:
            raise ModfuseError(f"expected labels of shape (n,), found {y.shape}")
        empty = np.flatnonzero(pd.isna(y))
        if len(empty):
            first = [names[i] for i in empty[:5]] if names is not None else empty[:5].tolist()
            raise ModfuseError(
                f"y has {len(empty)} missing labels (NaN/None), e.g. at samples {first}; a missing label is not a "
                "class: drop those samples (their modalities may still be missing, their label may not)"
            )
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ModfuseError(f"a classifier needs at least two classes, found {list(self.classes_)}")
        k = len(self.classes_)
        return (TaskSpec("binary") if k == 2 else TaskSpec("multiclass", k)), codes.astype(np.int64)

    def _encode_target(self, y: Any) -> np.ndarray:
        y = np.asarray(y)
        codes = np.searchsorted(self.classes_, y).clip(0, len(self.classes_) - 1)
        unseen = sorted(set(y[self.classes_[codes] != y].tolist()))
        if unseen:
            raise ModfuseError(f"labels {unseen[:5]} were not seen in fit (classes: {list(self.classes_)})")
        return codes.astype(np.int64)

    def _stratify(self, target: np.ndarray) -> np.ndarray | None:
        counts = np.bincount(target)
        return target if counts.min() >= 2 else None

    def predict_proba(
        self, X: Any, modalities: Mapping[str, Any] | None = None, as_frame: bool = False
    ) -> np.ndarray | pd.DataFrame:
        """Class probabilities (n, n_classes), columns in the order of ``classes_``.

        Args:
            X: as in ``fit``; ``modalities``: as in ``fit`` (default the fitted grouping).
            as_frame: return a DataFrame indexed by the sample ids (the index of ``X``'s
                DataFrames, else 0..n-1) with one column per class.
        """
        data, ids = self._inputs(X, modalities)  # checks that the model is fitted
        p = self.task_spec_.activate(self._logits(data)).numpy()
        proba = np.stack([1 - p, p], axis=1) if p.ndim == 1 else p
        return pd.DataFrame(proba, index=ids, columns=list(self.classes_)) if as_frame else proba

    def predict(self, X: Any, modalities: Mapping[str, Any] | None = None) -> np.ndarray:
        """Most probable class per sample (n,)."""
        proba = np.asarray(self.predict_proba(X, modalities))
        return self.classes_[proba.argmax(axis=1)]

    def score(self, X: Any, y: Any, sample_weight: Any = None, modalities: Mapping[str, Any] | None = None) -> float:
        """Accuracy of ``predict(X)`` against ``y``."""
        return float(accuracy_score(y, self.predict(X, modalities), sample_weight=sample_weight))
