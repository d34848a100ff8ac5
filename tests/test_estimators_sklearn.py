"""The estimators as scikit-learn users use them: one DataFrame (or array) plus ``modalities=``,
``cross_val_score``, ``GridSearchCV``, ``Pipeline``, categorical columns, results indexed by the
user's ids, and errors that name the column and the modality. Small data, few epochs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modfuse import FusionClassifier, FusionRegressor, FusionSurvival
from modfuse.encoders.tabular import TabularEncoder
from modfuse.errors import ModfuseError
from modfuse.estimators.inputs import InputLayout

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
    with pytest.raises(ModfuseError, match=r"X has 29 features, but FusionClassifier is expecting 30 features"):
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
    assert tabular.cat_index == [0] and tabular.cardinalities == [4]  # site: 3 categories + "unknown", embedded
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
    # a missing site is a missing cell (NaN: the "missing" embedding); an unseen one is the "unknown" code 3,
    # with a warning that says no rare training label taught that embedding
    blank = test.iloc[[0, 0, 0]].reset_index(drop=True).astype({"site": object})  # one patient three times
    blank["site"] = [None, "Z", "A"]
    with pytest.warns(
        UserWarning, match=r"'site'.*\['Z'\] were not seen in fit; they are coded as the 'unknown'.*untrained"
    ):
        codes = clf.layout_.transform(blank)[0]["clinic"][:, 0]
    np.testing.assert_array_equal(codes, [np.nan, 3, 0])


def test_rare_and_unseen_categories_share_the_learned_unknown_code() -> None:
    X, y = categorical_problem(400, seed=0)
    X.loc[:9, "site"] = [f"once-{i}" for i in range(10)]  # ten labels of one training row each
    clf = FusionClassifier(modalities={"clinic": ["site", "age"], "labs": ["x1", "x2"]}, max_epochs=2).fit(X, y)
    table = clf.layout_.tables["clinic"]
    assert table.categories[0] == ["A", "B", "C"] and len(table.rare[0]) == 10  # pooled into "unknown" (code 3)
    rows = X.iloc[[20, 20, 20]].reset_index(drop=True)  # one patient three times
    rows["site"] = ["once-3", "never-seen", "A"]
    with pytest.warns(UserWarning, match=r"\['never-seen'\] were not seen.*learned on the training rows of the rare"):
        proba = clf.predict_proba(rows)
    np.testing.assert_allclose(proba[0], proba[1], atol=1e-6)  # rare in fit and unseen: the same "unknown" code
    assert abs(proba[0, 1] - proba[2, 1]) > 1e-4  # a known site is coded apart
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a rare training label is known to be "unknown": no warning
        clf.predict_proba(rows.iloc[[0]])


def test_an_identifier_like_categorical_column_is_refused_with_the_rule() -> None:
    X, y = categorical_problem(400, seed=0)
    ids = X.assign(patient=[f"P{i:04d}" for i in range(400)])
    with pytest.raises(
        ModfuseError,
        match=r"modality 'clinic'.*column 'patient' has 400 distinct labels for 400 training rows "
        r"\(more than max\(20, rows / 2\) = 200\).*Drop the column.*ColumnTransformer",
    ):
        FusionClassifier(modalities={"clinic": ["site", "patient"], "labs": ["x1"]}).fit(ids, y)
    # at the limit (200 labels, 2 rows each) and under the floor of 20 (15 labels in 20 rows): accepted
    layout = InputLayout.fit(X.assign(ward=[f"W{i % 200}" for i in range(400)]))
    assert len(layout.tables["features"].categories[4]) == 200
    small = InputLayout.fit(X.iloc[:20].assign(ward=[f"W{i % 15}" for i in range(20)]))
    assert small.categorical("features")[4] == 6  # W0-W4 twice (kept), W5-W14 once (pooled), + "unknown"


def test_dict_modalities_keep_their_row_shape_and_y_is_checked_like_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(60, 3))
    y = (a[:, 0] > 0).astype(int)
    clf = FusionClassifier(max_epochs=1, strategy="late").fit({"a": a, "b": b}, y)
    with pytest.raises(
        ModfuseError,
        match=r"modality 'a'.*rows of shape \(3,\), but FusionClassifier was fitted on rows of shape \(4,\)",
    ):
        clf.predict({"a": a[:, :3], "b": b})
    with pytest.raises(
        ModfuseError, match=r"y is continuous.*FusionClassifier needs class labels; use FusionRegressor"
    ):
        FusionClassifier(max_epochs=1).fit({"a": a}, a[:, 0])
    with pytest.raises(ModfuseError, match=r"FusionRegressor requires y to be passed, but the target y is None"):
        FusionRegressor(max_epochs=1).fit({"a": a}, None)
    with pytest.raises(ModfuseError, match=r"sparse input is not supported.*X.toarray\(\)"):
        FusionClassifier(max_epochs=1).fit({"a": sparse.csr_matrix(a)}, y)


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


def test_the_estimators_keep_their_documented_import_paths() -> None:
    import modfuse
    from modfuse.estimators import FusionClassifier as from_package
    from modfuse.estimators.base import FusionClassifier as from_base
    from modfuse.estimators.base import FusionSurvival as survival_from_base

    assert modfuse.FusionClassifier is from_package is from_base is FusionClassifier
    assert survival_from_base is FusionSurvival


def test_dataframes_are_aligned_by_index_and_refused_when_their_ids_differ(cancer: tuple) -> None:
    X, y, groups = cancer
    X, y = X.iloc[:120], y.iloc[:120]
    parts = {m: X[c] for m, c in groups.items()}
    clf = FusionClassifier(max_epochs=1, strategy="late").fit(parts, y)
    # the same patients in another row order in one modality: rows are matched by id, not position
    shuffled = {**parts, "se": parts["se"].iloc[::-1]}
    np.testing.assert_allclose(clf.predict_proba(shuffled), clf.predict_proba(parts))
    frame = clf.predict_proba(shuffled, as_frame=True)
    assert list(frame.index) == list(X.index)  # the first DataFrame's order
    # a fit on the shuffled parts trains on the same (id-matched) rows as the ordered fit
    twin = FusionClassifier(max_epochs=1, strategy="late").fit(shuffled, y)
    np.testing.assert_allclose(twin.predict_proba(parts), clf.predict_proba(parts), atol=1e-6)
    other_ids = {**parts, "worst": parts["worst"].set_axis([f"q{i}" for i in range(120)])}
    with pytest.raises(ModfuseError, match=r"'mean' and 'worst' are indexed by different samples.*'p0'.*'q0'"):
        clf.predict_proba(other_ids)
    with pytest.raises(ModfuseError, match=r"different samples"):
        FusionClassifier(max_epochs=1).fit(other_ids, y)
    repeated = {**parts, "se": parts["se"].set_axis(["p0", *X.index[1:-1], "p0"])}
    with pytest.raises(ModfuseError, match=r"modality 'se'.*repeats sample ids \['p0'\]"):
        clf.predict_proba(repeated)
