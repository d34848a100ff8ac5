"""Estimators: sklearn compatibility, every strategy on breast cancer (3 feature groups; 5-fold
cross-validated accuracy) with a group missing for half of the test rows, survival concordance,
best-weights restoration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import StratifiedKFold, train_test_split

from modfuse import FusionClassifier, FusionRegressor, FusionSurvival
from modfuse.errors import ModfuseError
from modfuse.estimators import STRATEGIES
from modfuse.fusion import available
from modfuse.training.callbacks import BestWeights

GROUPS = {"mean": slice(0, 10), "se": slice(10, 20), "worst": slice(20, 30)}


def groups(X: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Breast cancer's 30 features as three modalities: means, standard errors, worst values."""
    return {name: X[rows, cols] for name, cols in GROUPS.items()}


@pytest.fixture(scope="module")
def cancer() -> tuple[dict, np.ndarray, dict, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    train, test = train_test_split(np.arange(len(y)), test_size=0.25, random_state=0, stratify=y)
    return groups(X, train), y[train], groups(X, test), y[test]


def test_clone_and_params() -> None:
    clf = FusionClassifier(strategy="late", max_epochs=7, strategy_kwargs={"hidden": 16})
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and twin is not clf
    assert twin.set_params(batch_size=8).batch_size == 8
    surv = clone(FusionSurvival(n_intervals=5, lr=0.01))
    assert surv.get_params()["n_intervals"] == 5 and surv.get_params()["lr"] == 0.01


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_classifies_breast_cancer_with_a_missing_group(strategy: str) -> None:
    assert strategy in available()
    X, y = load_breast_cancer(return_X_y=True)
    # cross-validated accuracy over all 569 rows: one 143-sample test split has a standard error
    # of about 0.02 at this accuracy, and the splits differ (logistic regression on all 30
    # features scores 0.958-0.993 over train_test_split random_state 0-9), so one split cannot
    # tell a 0.95 model from a 0.97 one. Three folds score every row once, as five would, with
    # three fits instead of five.
    scores = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(X, y):
        # batch_size=64 (not the data-sized default, ~28 here): half the steps, the same bar
        clf = FusionClassifier(strategy=strategy, max_epochs=25, batch_size=64, random_state=0)
        clf.fit(groups(X, train), y[train])
        scores.append(clf.score(groups(X, test), y[test]))
    assert np.mean(scores) >= 0.95, scores
    # the last fold's model, with the "se" group missing for half of the rows, and for all rows
    X_test = groups(X, test)
    half = {**X_test, "se": X_test["se"].copy()}
    half["se"][::2] = np.nan
    proba = clf.predict_proba(half)
    assert proba.shape == (len(test), 2) and np.allclose(proba.sum(1), 1)
    assert (clf.predict(half) == y[test]).mean() >= 0.9
    assert clf.predict({k: v for k, v in X_test.items() if k != "se"}).shape == (len(test),)


def test_explain_returns_modality_shapley_values(cancer: tuple) -> None:
    X, y, X_test, _ = cancer
    clf = FusionClassifier(strategy="late", max_epochs=5).fit(X, y)
    frame = clf.explain({k: v[:10] for k, v in X_test.items()})
    assert {"mean", "se", "worst", "base", "full"} <= set(frame.columns)
    # efficiency: the modality values add up to full - base
    np.testing.assert_allclose(frame[["mean", "se", "worst"]].sum(1), frame["full"] - frame["base"], atol=1e-5)


def test_survival_score_is_a_concordance_index(cancer: tuple) -> None:
    X, _, X_test, _ = cancer
    rng = np.random.default_rng(0)

    def times(groups: dict) -> tuple[np.ndarray, np.ndarray]:
        risk = groups["worst"][:, 0] / 10  # larger tumours fail sooner
        t = rng.exponential(10 / np.exp(risk - risk.mean()))
        return t, (rng.random(len(t)) < 0.7).astype(int)

    model = FusionSurvival(strategy="early", max_epochs=10, n_intervals=6).fit(X, times(X))
    assert len(model.boundaries_) == 5
    c = model.score(X_test, times(X_test))
    assert 0.5 < c <= 1.0
    assert model.predict(X_test).shape == (len(X_test["mean"]),)


def test_regressor_predicts_in_original_units() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 4)), rng.normal(size=(300, 3))
    y = 100 + 5 * a[:, 0] - 3 * b[:, 1]
    reg = FusionRegressor(strategy="early", max_epochs=30).fit({"a": a, "b": b}, y)
    assert reg.score({"a": a, "b": b}, y) > 0.8
    assert abs(reg.predict({"a": a, "b": b}).mean() - 100) < 2


def test_bad_inputs_raise_clear_errors(cancer: tuple) -> None:
    X, y, _, _ = cancer
    with pytest.raises(ModfuseError, match="unknown strategy"):
        FusionClassifier(strategy="stacking").fit(X, y)
    with pytest.raises(ModfuseError, match="different numbers of rows"):
        FusionClassifier().fit({"a": X["mean"], "b": X["se"][:10]}, y)
    with pytest.raises(ModfuseError, match="not fitted"):
        FusionClassifier().predict(X)


def test_best_weights_are_copies_not_aliases() -> None:
    """Regression test: early stopping must restore the best weights, not the last ones."""
    model = torch.nn.Linear(2, 1)
    keeper = BestWeights("val/loss", "min")

    class Trainer:
        sanity_checking = False
        callback_metrics = {"val/loss": torch.tensor(1.0)}

    keeper.on_validation_end(Trainer(), model)
    best = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(5.0)  # training goes on and gets worse
    Trainer.callback_metrics = {"val/loss": torch.tensor(2.0)}
    keeper.on_validation_end(Trainer(), model)
    keeper.on_fit_end(Trainer(), model)
    assert torch.equal(model.weight, best)
