"""`FusionSurvival`: discrete-time survival (censoring aware) over modfuse models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from modfuse.core.tasks import TaskSpec
from modfuse.errors import ModfuseError
from modfuse.estimators.base import Strategy, _FusionEstimator

__all__ = ["FusionSurvival", "survival_target"]


class FusionSurvival(_FusionEstimator):
    """Multimodal survival model, censoring aware: a discrete-time hazard per interval (default)
    or a Cox proportional-hazards log risk.

    ``y`` is ``(time, event)`` (two arrays), an (n, 2) array, or a structured array with a
    boolean event field and a time field (scikit-survival's layout). The interval boundaries
    are the quantiles of the observed event times.

    Args:
        n_intervals: number of discrete time intervals K (K-1 boundaries); hazard only.
        objective: ``"hazard"`` (discrete-time likelihood) or ``"cox"`` (Breslow partial
            likelihood over each mini-batch's risk sets). Measured side by side in
            ``benchmarks/results/small_cohorts.md``: neither is better across data sets, so the
            hazard stays the default.
        other arguments: as in `FusionClassifier`.
    """

    def __init__(
        self,
        strategy: Strategy = "early",
        encoders: Any = "auto",
        n_intervals: int = 10,
        objective: str = "hazard",
        max_epochs: int = 100,
        batch_size: int | str = "auto",
        lr: float | str = "auto",
        weight_decay: float | str = "auto",
        patience: int = 10,
        val_fraction: float = 0.15,
        strategy_kwargs: dict[str, Any] | None = None,
        random_state: int = 0,
        device: str = "auto",
        verbose: bool | None = None,
        modality_dropout: float | dict[str, float] | str | None = "auto",
        unimodal_weight: float | str | None = "auto",
        balance: str | None = None,
        n_ensemble: int | str = "auto",
        n_jobs: int | None = None,
        auto_strategies: tuple[str, ...] | None = None,
        auto_cv: int = 3,
        modalities: Mapping[str, Any] | None = None,
        refit: bool = True,
    ) -> None:
        super().__init__(
            strategy=strategy,
            encoders=encoders,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            patience=patience,
            val_fraction=val_fraction,
            strategy_kwargs=strategy_kwargs,
            random_state=random_state,
            device=device,
            verbose=verbose,
            modality_dropout=modality_dropout,
            unimodal_weight=unimodal_weight,
            balance=balance,
            n_ensemble=n_ensemble,
            n_jobs=n_jobs,
            auto_strategies=auto_strategies,
            auto_cv=auto_cv,
            modalities=modalities,
            refit=refit,
        )
        self.n_intervals = n_intervals
        self.objective = objective

    def __sklearn_tags__(self) -> Any:
        """The shared estimator's tags, and ``y`` (time, event) is required."""
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags

    def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
        target = survival_target(y)
        events = target[target[:, 1] > 0, 0]
        if len(events) < 2:
            raise ModfuseError(f"survival needs at least 2 observed events, found {len(events)}")
        if self.objective == "cox":
            self.boundaries_: tuple[float, ...] = ()
            return TaskSpec("survival", 1, objective="cox"), target
        if self.objective != "hazard":
            raise ModfuseError(f"objective must be 'hazard' or 'cox', found {self.objective!r}")
        qs = np.quantile(events, np.linspace(0, 1, self.n_intervals + 1)[1:-1])
        boundaries = tuple(float(b) for b in np.unique(qs))
        self.boundaries_ = boundaries
        return TaskSpec("survival", len(boundaries) + 1, boundaries), target

    def _stratify(self, target: np.ndarray) -> np.ndarray | None:
        return target[:, 1].astype(int) if 0 < target[:, 1].sum() < len(target) - 1 else None

    def _encode_target(self, y: Any) -> np.ndarray:
        return survival_target(y)

    def predict(self, X: Any, modalities: Mapping[str, Any] | None = None) -> np.ndarray:
        """Risk score per sample (n,); higher = earlier event. Hazard: in [0, 1], the expected
        share of the closed intervals not survived (`modfuse.core.losses.survival_risk`); Cox:
        the log risk."""
        data, _ = self._inputs(X, modalities)
        return self.task_spec_.activate(self._logits(data)).numpy()

    def score(self, X: Any, y: Any, modalities: Mapping[str, Any] | None = None) -> float:
        """Harrell's concordance index of the predicted risk."""
        from modfuse.core.metrics import concordance_index

        # times in float64, as given: float32 would tie times that differ in the 8th digit
        target = torch.as_tensor(survival_target(y, dtype=np.float64))
        return float(concordance_index(torch.as_tensor(self.predict(X, modalities)), target[:, 0], target[:, 1]))


def survival_target(y: Any, dtype: Any = np.float32) -> np.ndarray:
    """(n, 2) array of (time, event) from the accepted ``y`` layouts (``dtype``: float32 for
    training, float64 to score against the times as given)."""
    if isinstance(y, np.ndarray) and y.dtype.names:
        names = y.dtype.names
        if len(names) != 2:
            raise ModfuseError(
                f"Unknown label type for survival: a structured y needs 2 fields (event, time), found {list(names)}"
            )
        # the event field: the boolean one (scikit-survival's), else the one holding only 0 / 1
        flags = [n for n in names if y.dtype[n].kind == "b"] or [n for n in names if np.isin(y[n], (0, 1)).all()]
        event = flags[0] if flags else names[0]
        time = next(n for n in names if n != event)
        out = np.stack([y[time].astype(np.float64), y[event].astype(np.float64)], axis=1)
    elif isinstance(y, tuple) and len(y) == 2:
        out = np.stack([np.asarray(y[0], dtype=np.float64), np.asarray(y[1], dtype=np.float64)], axis=1)
    else:
        out = np.asarray(y, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != 2:
        # "Unknown label type": scikit-learn's phrase for a y its estimator cannot read
        raise ModfuseError(
            f"Unknown label type for survival: y must be (time, event), an (n, 2) array or a structured array "
            f"with a boolean event field and a time field (sksurv.util.Surv.from_arrays), found shape {out.shape}"
        )
    if not np.isfinite(out).all() or (out[:, 0] < 0).any() or not np.isin(out[:, 1], (0, 1)).all():
        raise ModfuseError("survival y: times must be finite and >= 0, events 0/1")
    return out.astype(dtype)
