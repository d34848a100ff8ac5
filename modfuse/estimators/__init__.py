"""scikit-learn estimators over modfuse models: `FusionClassifier`, `FusionRegressor`,
`FusionSurvival` (``fit(X, y)`` with ``X`` a dict modality -> array or DataFrame, or one
DataFrame / array plus ``modalities={name: [columns...]}``).

One concern per module:

- `modfuse.estimators.inputs`: the user's ``X`` as modality data (input forms, alignment by
  index, column groups, categorical codes);
- `modfuse.estimators.base`: the shared estimator (fit / predict machinery);
- `modfuse.estimators.classifier`, `.regressor`, `.survival`: one estimator each;
- `modfuse.estimators.auto`: ``strategy="auto"`` (inner cross-validation) and seed ensembles;
- `modfuse.estimators.persist`: ``est.save(folder)`` / ``FusionClassifier.load(folder)``, a
  fitted estimator without pickle (safetensors + JSON).

The automatic encoders (``encoders="auto"``) are in `modfuse.encoders.auto`.
"""

from __future__ import annotations

from modfuse.estimators.base import STRATEGIES
from modfuse.estimators.classifier import FusionClassifier
from modfuse.estimators.inputs import align_frames
from modfuse.estimators.persist import load_estimator, save_estimator
from modfuse.estimators.regressor import FusionRegressor
from modfuse.estimators.survival import FusionSurvival

__all__ = [
    "STRATEGIES",
    "FusionClassifier",
    "FusionRegressor",
    "FusionSurvival",
    "align_frames",
    "load_estimator",
    "save_estimator",
]
