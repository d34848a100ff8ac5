"""The estimators as scikit-learn users use them: one DataFrame (or array) plus ``modalities=``,
``cross_val_score``, ``GridSearchCV``, ``Pipeline``, categorical columns, results indexed by the
user's ids, and errors that name the column and the modality. Small data, few epochs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks

from modfuse import FusionClassifier, FusionRegressor, FusionSurvival
from modfuse.encoders.tabular import TabularEncoder
from modfuse.errors import ModfuseError

FAST = {"strategy": "early", "max_epochs": 3, "batch_size": 64}


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, pd.Series, dict[str, list[str]]]:
    """Breast cancer as one DataFrame (patients p0..p568) and its three feature groups."""
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    ids = [f"p{i}" for i in range(len(y))]
    X.index, y.index = ids, ids
    cols = list(X.columns)
    return X, y, {"mean": cols[:10], "se": cols[10:20], "worst": cols[20:]}


def test_cross_val_score_on_one_dataframe_with_feature_groups(cancer: tuple) -> None:
    X, y, groups = cancer
    scores = cross_val_score(FusionClassifier(modalities=groups, **FAST), X, y, cv=3)
    # majority class: 0.63; a logistic regression scores about 0.95-0.98 here
    assert scores.shape == (3,) and scores.mean() >= 0.92, scores


def test_the_frame_form_trains_the_same_model_as_the_dict_form(cancer: tuple) -> None:
    X, y, groups = cancer
    X, y = X.iloc[:200], y.iloc[:200]
    frame = FusionClassifier(modalities=groups, max_epochs=2, strategy="late").fit(X, y)
    as_dict = FusionClassifier(max_epochs=2, strategy="late").fit({m: X[c] for m, c in groups.items()}, y)
    np.testing.assert_allclose(frame.predict_proba(X), as_dict.predict_proba({m: X[c] for m, c in groups.items()}))
    assert frame.modalities_ == ["mean", "se", "worst"]
    assert frame.n_features_in_ == 30 and list(frame.feature_names_in_) == list(X.columns)
    # a modality whose columns are all left out is missing for every sample; fit's modalities= is kept
    proba = frame.predict_proba(X.drop(columns=groups["se"]))
    assert proba.shape == (200, 2) and np.allclose(proba.sum(1), 1)


def test_grid_search_picks_the_best_candidate(cancer: tuple) -> None:
    X, y, groups = cancer
    X, y = X.iloc[:240], y.iloc[:240]
    search = GridSearchCV(FusionClassifier(modalities=groups, **FAST), {"strategy": ["early", "late"]}, cv=2)
    search.fit(X, y)
    means = search.cv_results_["mean_test_score"]
    assert len(means) == 2 and search.best_score_ == means.max()
    assert search.best_params_["strategy"] == ["early", "late"][int(np.argmax(means))]
    assert search.best_estimator_.strategy == search.best_params_["strategy"]
    assert search.score(X, y) >= 0.9


def test_a_pipeline_with_a_scaler_feeds_column_positions(cancer: tuple) -> None:
    X, y, _ = cancer
    positions = {"mean": list(range(10)), "se": list(range(10, 20)), "worst": list(range(20, 30))}
    pipe = make_pipeline(StandardScaler(), FusionClassifier(modalities=positions, **FAST))
    pipe.fit(X.to_numpy()[:400], y.to_numpy()[:400])
    assert pipe.score(X.to_numpy()[400:], y.to_numpy()[400:]) >= 0.9
    fitted = pipe[-1]
    assert fitted.modalities_ == ["mean", "se", "worst"] and fitted.n_features_in_ == 30
    assert not hasattr(fitted, "feature_names_in_")  # an array has no column names
    twin = clone(pipe).set_params(fusionclassifier__max_epochs=1)
    assert twin[-1].max_epochs == 1 and twin[-1].modalities == positions and not hasattr(twin[-1], "model_")
    with pytest.raises(ModfuseError, match=r"29 columns.*fitted on 30"):
        pipe[-1].predict(X.to_numpy()[:5, :29])


def test_predict_proba_and_explain_are_indexed_by_the_users_ids(cancer: tuple) -> None:
    X, y, groups = cancer
    labels = y.map({0: "malignant", 1: "benign"})
    clf = FusionClassifier(modalities=groups, max_epochs=2, strategy="late").fit(X.iloc[:200], labels.iloc[:200])
    new = X.iloc[[300, 301, 302]]
    frame = clf.predict_proba(new, as_frame=True)
    assert list(frame.index) == ["p300", "p301", "p302"] and list(frame.columns) == ["benign", "malignant"]
    np.testing.assert_allclose(frame.to_numpy(), clf.predict_proba(new))
    shapley = clf.explain(new)
    assert list(shapley.index) == ["p300", "p301", "p302"]
    np.testing.assert_allclose(shapley["full"], frame["malignant"], atol=1e-5)  # P(classes_[1])
    # dict form: the index of the modalities' DataFrames
    dict_clf = FusionClassifier(max_epochs=1, strategy="late").fit(
        {m: X.iloc[:200][c] for m, c in groups.items()}, y[:200]
    )
    assert list(dict_clf.predict_proba({m: new[c] for m, c in groups.items()}, as_frame=True).index) == list(new.index)


def categorical_problem(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The label depends on a categorical column only (site A: mostly 1, B: mostly 0, C: even)."""
    rng = np.random.default_rng(seed)
    site = rng.choice(["A", "B", "C"], size=n)
    p = pd.Series(site).map({"A": 0.9, "B": 0.1, "C": 0.5}).to_numpy()
    y = (rng.random(n) < p).astype(int)
    X = pd.DataFrame({"site": site, "age": rng.normal(60, 10, n), "x1": rng.normal(size=n), "x2": rng.normal(size=n)})
    return X, y


@pytest.mark.parametrize("dtype", ["str", "category"])
def test_categorical_columns_are_embedded_and_carry_the_signal(dtype: str) -> None:
    X, y = categorical_problem(400, seed=0)
    X["site"] = X["site"].astype(dtype)
    groups = {"clinic": ["site", "age"], "labs": ["x1", "x2"]}
    clf = FusionClassifier(modalities=groups, strategy="early", max_epochs=4, batch_size=32).fit(X, y)
    tabular = next(m for m in clf.model_.encoders["clinic"].modules() if isinstance(m, TabularEncoder))
    assert tabular.cat_index == [0] and tabular.cardinalities == [3]  # site: 3 categories, embedded
    test, y_test = categorical_problem(300, seed=1)
    test["site"] = test["site"].astype(dtype)
    # the Bayes rule (A -> 1, B -> 0) gets 0.9 on sites A/B
    ab = test["site"].astype(str).isin(["A", "B"]).to_numpy()
    assert (clf.predict(test)[ab] == y_test[ab]).mean() >= 0.85
    # the same patients at site A instead of B: the prediction moves with the site alone
    at_a = test.assign(site=pd.Series(["A"] * len(test), index=test.index).astype(X["site"].dtype))
    at_b = test.assign(site=pd.Series(["B"] * len(test), index=test.index).astype(X["site"].dtype))
    gap = clf.predict_proba(at_a)[:, 1] - clf.predict_proba(at_b)[:, 1]
    assert gap.mean() > 0.4 and (gap > 0).all(), gap.mean()
    # a missing site is a missing cell (its own embedding); an unseen one is treated as missing, with a warning
    blank = test.iloc[[0, 0]].reset_index(drop=True).astype({"site": object})  # one patient twice
    blank["site"] = [None, "Z"]
    with pytest.warns(UserWarning, match=r"'site'.*\['Z'\] were not seen"):
        proba = clf.predict_proba(blank)
    np.testing.assert_allclose(proba[0], proba[1], atol=1e-6)


def test_bad_single_table_inputs_name_the_column_and_the_modality(cancer: tuple) -> None:
    X, y, groups = cancer
    X, y = X.iloc[:40], y.iloc[:40]
    with pytest.raises(ModfuseError, match=r"modality 'se'.*\['no such column'\] are not in X"):
        FusionClassifier(modalities={**groups, "se": ["no such column"]}).fit(X, y)
    twice = {"mean": groups["mean"], "se": [*groups["se"], "mean radius"]}
    with pytest.raises(ModfuseError, match=r"'mean radius' is listed in two modalities, 'mean' and 'se'"):
        FusionClassifier(modalities=twice).fit(X, y)
    dated = X.assign(visit=pd.date_range("2020-01-01", periods=40))
    with pytest.raises(ModfuseError, match=r"modality 'when'.*column 'visit' has dtype datetime64"):
        FusionClassifier(modalities={"when": ["visit", "mean radius"]}).fit(dated, y)
    mixed = X.assign(grade=["high", 2.0] * 20)
    with pytest.raises(ModfuseError, match=r"modality 'm'.*column 'grade'.*float values"):
        FusionClassifier(modalities={"m": ["grade"]}).fit(mixed, y)
    with pytest.raises(ModfuseError, match=r"y is indexed by other sample ids.*\['p0'"):
        FusionClassifier(modalities=groups).fit(X, y.set_axis([f"q{i}" for i in range(40)]))
    with pytest.raises(ModfuseError, match="X is already a dict"):
        FusionClassifier(modalities=groups).fit({"mean": X[groups["mean"]]}, y)
    with pytest.raises(ModfuseError, match=r"expected a list of columns"):
        FusionClassifier(modalities={"mean": "mean radius"}).fit(X, y)
    clf = FusionClassifier(modalities=groups, max_epochs=1).fit(X, y)
    with pytest.raises(ModfuseError, match=r"modality 'se'.*lacks columns \['mean radius'\]|lacks columns"):
        clf.predict(X.drop(columns=[groups["se"][0]]))


def test_one_table_without_modalities_is_one_modality_and_regression_and_survival_accept_it() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 5))
    y = 10 + 3 * a[:, 0]
    reg = FusionRegressor(max_epochs=5, strategy="early", batch_size=32).fit(a, y)
    assert reg.modalities_ == ["features"] and reg.score(a, y) > 0.7
    time, event = rng.exponential(np.exp(-a[:, 0])), rng.random(200) < 0.8
    surv = FusionSurvival(max_epochs=3, n_intervals=4, modalities={"x": [0, 1], "z": [2, 3, 4]}).fit(a, (time, event))
    assert surv.predict(a).shape == (200,) and 0.5 < surv.score(a, (time, event)) <= 1


@pytest.mark.parametrize(
    "check",
    [
        estimator_checks.check_no_attributes_set_in_init,
        estimator_checks.check_parameters_default_constructible,
        estimator_checks.check_get_params_invariance,
        estimator_checks.check_set_params,
        estimator_checks.check_estimators_unfitted,
        estimator_checks.check_n_features_in,
        estimator_checks.check_classifiers_one_label,
    ],
    ids=lambda c: c.__name__,
)
def test_scikit_learn_estimator_checks(check: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(type(FusionClassifier()).__name__, FusionClassifier(max_epochs=1, val_fraction=0))  # type: ignore[operator]


def test_the_estimators_keep_their_documented_import_paths() -> None:
    import modfuse
    from modfuse.estimators import FusionClassifier as from_package
    from modfuse.estimators.base import FusionClassifier as from_base
    from modfuse.estimators.base import FusionSurvival as survival_from_base

    assert modfuse.FusionClassifier is from_package is from_base is FusionClassifier
    assert survival_from_base is FusionSurvival
