"""Model selection and ensembling for the estimators of `modfuse.estimators`.

- ``strategy="auto"``: `select_strategy()` scores every (strategy, robust-training) candidate
  by inner K-fold cross-validation on the rows given to ``fit`` only, records the table in
  ``cv_results_`` (scikit-learn's layout: ``params``, ``param_*``, ``split{k}_test_score``,
  ``mean_test_score``, ``std_test_score``, ``rank_test_score``, ``mean_fit_time``) and returns
  the best candidate's settings; ``fit`` then refits them on all its rows.
- ``n_ensemble=k``: `train_members()` trains k runs (seeds ``random_state + i``) and
  `SeedEnsemble` averages their logits.

The candidates are scored with the estimator's own ``score`` (accuracy, R², C-index).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from modfuse.core.model import ModelOutput
from modfuse.errors import ModfuseError
from modfuse.estimators.inputs import InputLayout, align_frames, aligned_y, n_rows, take_rows

if TYPE_CHECKING:
    from modfuse.core.model import FusionModel
    from modfuse.core.tasks import TaskSpec
    from modfuse.estimators.base import _FusionEstimator

__all__ = ["AUTO_STRATEGIES", "ROBUST_SETTINGS", "SeedEnsemble", "select_strategy", "take_rows", "train_members"]

AUTO_STRATEGIES = ("early", "late", "attention")
"""Default candidates of ``strategy="auto"`` (the Lego strategies cost several times more)."""
ROBUST_SETTINGS: dict[str, dict[str, Any]] = {
    "on": {"modality_dropout": "auto", "unimodal_weight": "auto"},
    "off": {"modality_dropout": None, "unimodal_weight": None},
}
"""The robust-training settings ``strategy="auto"`` chooses between."""


class SeedEnsemble(nn.Module):
    """Average of the logits of models trained with different seeds.

    Args:
        members: fusion models with the same ``modalities`` and ``tasks``.

    Shapes:
        batch -> `ModelOutput` whose logits are the mean of the members' (B, num_outputs) per task.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ModfuseError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        first = cast("FusionModel", members[0])
        self.modalities = list(first.modalities)
        self.tasks: dict[str, TaskSpec] = first.tasks

    def to_config(self) -> dict[str, Any]:
        """``{"type": "SeedEnsemble", "members": [...]}``, each member's own description
        (`modfuse.core.io.config_of_model`: a Lego model keeps its calibration and blocks)."""
        from modfuse.core.io import config_of_model

        return {"type": "SeedEnsemble", "members": [config_of_model(m) for m in self.members]}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SeedEnsemble:
        """The ensemble `to_config` describes, its members freshly initialised (weights aside)."""
        from modfuse.core.io import model_from_config

        return cls([model_from_config(c) for c in config["members"]])

    def forward(self, batch: Any) -> ModelOutput:
        outs = [m(batch).logits for m in self.members]
        return ModelOutput({t: torch.stack([o[t].float() for o in outs]).mean(0) for t in self.tasks})


def _train_one(run: _FusionEstimator, data: dict[str, Any], target: np.ndarray, spec: TaskSpec) -> nn.Module:
    from modfuse.estimators.base import _quiet

    torch.set_num_threads(1)  # in a worker: the cores are shared by the workers
    with _quiet(bool(run.verbose)):
        return run._train(data, target, spec, *run._split(n_rows(data), target))


def train_members(
    runs: Sequence[_FusionEstimator],
    data: dict[str, Any],
    target: np.ndarray,
    spec: TaskSpec,
    n_jobs: int | None,
) -> list[nn.Module]:
    """Train one model per run (each with its own seed), in ``n_jobs`` processes."""
    if not n_jobs or n_jobs == 1:
        return [run._train(data, target, spec, *run._split(len(target), target)) for run in runs]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=n_jobs)(delayed(_train_one)(run, data, target, spec) for run in runs))


# ---------------------------------------------------------------------------- rows
def _take_y(y: Any, rows: np.ndarray) -> Any:
    if isinstance(y, tuple):
        return tuple(np.asarray(part)[rows] for part in y)
    if isinstance(y, (pd.Series, pd.DataFrame)):
        return y.iloc[rows]
    return np.asarray(y)[rows]


# ---------------------------------------------------------------------------- selection
def _candidates(est: _FusionEstimator) -> list[dict[str, Any]]:
    from modfuse.estimators import STRATEGIES

    strategies = tuple(est.auto_strategies or AUTO_STRATEGIES)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ModfuseError(f"auto_strategies {unknown} are not strategies; expected some of {list(STRATEGIES)}")
    return [{"strategy": s, "robust": r} for s in strategies for r in ROBUST_SETTINGS]


def _folds(
    est: _FusionEstimator, X: Any, y: Any, modalities: Mapping[str, Any] | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    data, index = InputLayout.fit(X, modalities).transform(X)
    n = n_rows(data)
    probe = clone(est)
    _, target = probe._task(aligned_y(y, index))
    labels = probe._stratify(target)
    k = int(est.auto_cv)
    if k < 2:
        raise ModfuseError(f"auto_cv must be >= 2 inner folds, found {est.auto_cv}")
    if labels is not None and np.bincount(labels).min() >= k:
        splitter: Any = StratifiedKFold(k, shuffle=True, random_state=est.random_state)
        return list(splitter.split(np.zeros(n), labels))
    return list(KFold(k, shuffle=True, random_state=est.random_state).split(np.zeros(n)))


def _score_fold(
    est: _FusionEstimator,
    params: dict[str, Any],
    X: Any,
    y: Any,
    modalities: Mapping[str, Any] | None,
    train: np.ndarray,
    test: np.ndarray,
) -> tuple[float, float]:
    from sklearn.base import clone

    if est.n_jobs not in (None, 1):
        torch.set_num_threads(1)  # in a worker: the cores are shared by the workers
    model = clone(est).set_params(
        strategy=params["strategy"], n_ensemble=1, n_jobs=None, **ROBUST_SETTINGS[params["robust"]]
    )
    start = time.perf_counter()
    model.fit(take_rows(X, train), _take_y(y, train), modalities=modalities)
    elapsed = time.perf_counter() - start
    return float(model.score(take_rows(X, test), _take_y(y, test))), elapsed


def select_strategy(
    est: _FusionEstimator, X: Any, y: Any, modalities: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Choose the strategy and the robust-training setting of ``est`` by inner CV on ``X, y``
    (``X`` in any input form; ``modalities``: the column groups of a single-table ``X``).

    Sets ``est.cv_results_``, ``est.best_strategy_``, ``est.best_params_`` and
    ``est.best_score_``; returns the attribute overrides of the refit (strategy, modality
    dropout, unimodal weight). Only the rows of ``X, y`` are ever used.
    """
    if isinstance(X, Mapping):
        X, index = align_frames(X)
        y = aligned_y(y, index)
    elif isinstance(X, pd.DataFrame):
        y = aligned_y(y, X.index)
    candidates = _candidates(est)
    folds = _folds(est, X, y, modalities)
    jobs = [(c, tr, te) for c in candidates for tr, te in folds]
    if est.n_jobs in (None, 1):
        results = [_score_fold(est, c, X, y, modalities, tr, te) for c, tr, te in jobs]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=est.n_jobs)(
            delayed(_score_fold)(est, c, X, y, modalities, tr, te) for c, tr, te in jobs
        )
    scores = np.array([s for s, _ in results]).reshape(len(candidates), len(folds))
    times = np.array([t for _, t in results]).reshape(len(candidates), len(folds))
    mean = np.nan_to_num(scores.mean(1), nan=-np.inf)
    # rank 1 = best; ties keep the candidate listed first (the cheaper, simpler strategy)
    order = sorted(range(len(candidates)), key=lambda i: (-mean[i], i))
    rank = np.empty(len(candidates), dtype=int)
    rank[order] = np.arange(1, len(candidates) + 1)
    results_table: dict[str, Any] = {
        "params": [dict(c) for c in candidates],
        "param_strategy": np.array([c["strategy"] for c in candidates], dtype=object),
        "param_robust": np.array([c["robust"] for c in candidates], dtype=object),
    }
    for k in range(len(folds)):
        results_table[f"split{k}_test_score"] = scores[:, k]
    results_table.update(
        mean_test_score=scores.mean(1),
        std_test_score=scores.std(1),
        rank_test_score=rank,
        mean_fit_time=times.mean(1),
    )
    best = candidates[order[0]]
    est.cv_results_ = results_table
    est.best_params_ = dict(best)
    est.best_strategy_ = best["strategy"]
    est.best_score_ = float(scores[order[0]].mean())
    return {"strategy": best["strategy"], **copy.deepcopy(ROBUST_SETTINGS[best["robust"]])}
