"""``est.save(folder)`` / ``FusionClassifier.load(folder)``: a fitted estimator without pickle
(``model.safetensors`` + ``estimator.json``). A loaded estimator predicts bit for bit what the
saved one did, with categorical columns and missing modalities; nothing is unpickled; a
tampered or mismatched folder is refused naming the file, expected vs found. Small data, two
epochs, ``refit=False``."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError

from modfuse import FusionClassifier, FusionRegressor, FusionSurvival
from modfuse.core.config import ConfigError
from modfuse.errors import ModfuseError, ReadError
from modfuse.estimators import load_estimator
from modfuse.estimators.persist import META_FILE, WEIGHTS_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"max_epochs": 2, "refit": False, "device": "cpu", "verbose": False, "batch_size": 32}
GROUPS = {"labs": ["age", "site", "crp"], "vitals": ["hr", "bp"]}


def cohort(n: int, seed: int) -> pd.DataFrame:
    """Patients ``p0..``: labs (a categorical ``site``) and vitals, the vitals missing for a
    quarter of them (a row of NaN), one lab value missing here and there."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(60, 10, n),
            "site": rng.choice(["north", "south", "east"], n),
            "crp": rng.lognormal(1, 0.5, n),
            "hr": rng.normal(70, 8, n),
            "bp": rng.normal(120, 15, n),
        },
        index=[f"p{seed}-{i}" for i in range(n)],
    )
    frame.loc[frame.index[::4], GROUPS["vitals"]] = np.nan
    frame.loc[frame.index[1::9], "crp"] = np.nan
    return frame


def targets(kind: str, X: pd.DataFrame) -> Any:
    signal = (X["age"] - 60) / 10 + (X["site"] == "north") + np.nan_to_num((X["hr"] - 70) / 8)
    if kind == "classifier":
        return np.where(signal > 0.3, "high", "low")
    if kind == "regressor":  # two targets: y_mean_ and y_std_ are arrays
        return np.stack([100 + 5 * signal, -signal], axis=1)
    from sksurv.util import Surv

    rng = np.random.default_rng(1)
    return Surv.from_arrays(event=rng.random(len(X)) < 0.7, time=rng.exponential(10 / np.exp(signal.to_numpy())))


ESTIMATORS = {"classifier": FusionClassifier, "regressor": FusionRegressor, "survival": FusionSurvival}


def outputs(est: Any, X: Any) -> np.ndarray:
    return np.asarray(est.predict_proba(X) if isinstance(est, FusionClassifier) else est.predict(X))


@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_a_loaded_estimator_predicts_bit_identically(kind: str, tmp_path: Path) -> None:
    X = cohort(96, seed=0)
    est = ESTIMATORS[kind](modalities=GROUPS, strategy="late", **FAST).fit(X, targets(kind, X))
    folder = est.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [META_FILE, WEIGHTS_FILE]
    loaded = ESTIMATORS[kind].load(folder)
    assert type(loaded) is type(est) and loaded.get_params() == est.get_params()
    assert loaded.layout_ == est.layout_  # columns per modality, category codes, widths
    for name in ("classes_", "y_mean_", "y_std_", "boundaries_", "feature_names_in_"):
        if hasattr(est, name):
            saved, back = getattr(est, name), getattr(loaded, name)
            assert np.asarray(back).dtype == np.asarray(saved).dtype
            np.testing.assert_array_equal(back, saved)
    assert loaded.n_features_in_ == 5 and loaded.task_spec_ == est.task_spec_
    new = cohort(40, seed=1)
    new.loc[new.index[:3], "site"] = "west"  # a category never seen in fit: the "unknown" code
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the unseen-category warning, twice
        for X_new in (new, new.drop(columns=GROUPS["vitals"])):  # vitals missing for some, then all
            np.testing.assert_array_equal(outputs(loaded, X_new), outputs(est, X_new))
            if kind == "classifier":
                np.testing.assert_array_equal(loaded.predict(X_new), est.predict(X_new))
        if kind != "regressor":  # two regression targets: explain needs a column, which it does not take
            pd.testing.assert_frame_equal(loaded.explain(new.iloc[:8]), est.explain(new.iloc[:8]))
        assert loaded.score(new, targets(kind, new)) == est.score(new, targets(kind, new))


@pytest.mark.parametrize(
    ("strategy", "extra"), [("early", {"n_ensemble": 2}), ("lego-merge", {}), ("lego-merge", {"n_ensemble": 2})]
)
def test_the_dict_form_an_ensemble_and_a_lego_model_round_trip(strategy: str, extra: dict, tmp_path: Path) -> None:
    X = cohort(80, seed=2)
    data = {"labs": X[GROUPS["labs"]], "vitals": X[GROUPS["vitals"]].to_numpy()}  # a DataFrame and an array
    y = np.arange(80) % 3  # three integer classes
    est = FusionClassifier(strategy=strategy, **{**FAST, **extra}).fit(data, y)
    loaded = load_estimator(est.save(tmp_path / strategy))  # the class is read from the file
    assert isinstance(loaded, FusionClassifier) and loaded.layout_.row_shapes == {"vitals": (2,)}
    assert loaded.classes_.dtype == est.classes_.dtype and type(loaded.model_) is type(est.model_)
    test = cohort(30, seed=3)
    for X_new in (
        {"labs": test[GROUPS["labs"]], "vitals": test[GROUPS["vitals"]].to_numpy()},
        {"labs": test[GROUPS["labs"]], "vitals": None},  # vitals missing for everyone
    ):
        np.testing.assert_array_equal(loaded.predict_proba(X_new), est.predict_proba(X_new))


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    X = cohort(64, seed=4)
    est = FusionRegressor(modalities=GROUPS, **FAST).fit(X, targets("regressor", X)[:, 0])
    folder = est.save(tmp_path / "reg")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("loading a saved estimator unpickled something")

    for module, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")]:
        monkeypatch.setattr(module, name, refuse)
    loaded = FusionRegressor.load(folder)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    json.loads((folder / META_FILE).read_text())  # the state is plain JSON


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[FusionClassifier, Path]:
    X = cohort(64, seed=5)
    est = FusionClassifier(modalities=GROUPS, **FAST).fit(X, targets("classifier", X))
    return est, est.save(tmp_path_factory.mktemp("saved") / "clf")


def copy_of(folder: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for name in (META_FILE, WEIGHTS_FILE):
        (out / name).write_bytes((folder / name).read_bytes())
    return out


def edit_meta(folder: Path, change: Any) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    change(meta)
    (folder / META_FILE).write_text(json.dumps(meta))


def test_another_class_or_a_folder_that_is_not_a_saved_estimator_is_refused(
    saved_classifier: tuple, tmp_path: Path
) -> None:
    _, folder = saved_classifier
    with pytest.raises(ReadError, match=r"holds a FusionClassifier .*expected a FusionRegressor") as err:
        FusionRegressor.load(folder)
    assert str(folder / META_FILE) in str(err.value)
    with pytest.raises(ReadError, match=r"not a saved estimator: expected a folder holding estimator\.json"):
        FusionClassifier.load(tmp_path / "nowhere")
    broken = copy_of(folder, tmp_path / "broken")
    (broken / META_FILE).write_text("{not json")
    with pytest.raises(ReadError, match="not valid JSON") as err:
        FusionClassifier.load(broken)
    assert str(broken / META_FILE) in str(err.value)
    edit_meta(broken_again := copy_of(folder, tmp_path / "b"), lambda m: m.update(version=2))
    with pytest.raises(ReadError, match="expected format version 1, found 2"):
        FusionClassifier.load(broken_again)


def test_changed_weights_or_state_are_refused_naming_the_file(saved_classifier: tuple, tmp_path: Path) -> None:
    est, folder = saved_classifier
    # the weights of another network: the SHA-256 recorded at save time no longer matches
    X = cohort(64, seed=6)
    other = FusionClassifier(modalities={"labs": GROUPS["labs"]}, **FAST).fit(X, targets("classifier", X))
    other_folder = other.save(tmp_path / "other")
    swapped = copy_of(folder, tmp_path / "swapped")
    (swapped / WEIGHTS_FILE).write_bytes((other_folder / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ReadError, match=r"SHA-256 \w+ differs from the \w+ recorded in estimator.json") as err:
        FusionClassifier.load(swapped)
    assert str(swapped / WEIGHTS_FILE) in str(err.value)
    # ... and with the checksum forged too: the network reads other modalities than the estimator
    sha = json.loads((other_folder / META_FILE).read_text())["weights"]["sha256"]
    edit_meta(swapped, lambda m: m["weights"].update(sha256=sha))
    with pytest.raises(ReadError, match=r"the network reads modalities \['labs'\], the estimator expects"):
        FusionClassifier.load(swapped)
    # a parameter this class does not have
    unknown = copy_of(folder, tmp_path / "unknown")
    edit_meta(unknown, lambda m: m["params"].update(bogus=1))
    with pytest.raises(ReadError, match=r"parameters \['bogus'\] are not parameters of FusionClassifier"):
        FusionClassifier.load(unknown)
    # a fitted state without its input layout
    no_layout = copy_of(folder, tmp_path / "no_layout")
    edit_meta(no_layout, lambda m: m["fitted"].pop("layout_"))
    with pytest.raises(ReadError, match="with an InputLayout 'layout_'"):
        FusionClassifier.load(no_layout)
    # the untouched folder still loads and predicts as the estimator
    np.testing.assert_array_equal(FusionClassifier.load(folder).predict_proba(X), est.predict_proba(X))


def test_save_refuses_an_unfitted_estimator_and_values_without_a_json_form(
    saved_classifier: tuple, tmp_path: Path
) -> None:
    with pytest.raises(NotFittedError):
        FusionClassifier().save(tmp_path / "unfitted")
    est, _ = saved_classifier
    est.extra_ = object()  # a fitted attribute with no JSON form: refused before anything is written
    try:
        with pytest.raises(ConfigError, match=r"attribute 'extra_' holds a builtins.object"):
            est.save(tmp_path / "refused")
    finally:
        del est.extra_
    assert not (tmp_path / "refused").exists()


def test_a_loaded_estimator_asks_for_training_data_for_its_specialists(saved_classifier: tuple) -> None:
    _, folder = saved_classifier
    X = cohort(64, seed=5)
    with pytest.raises(ModfuseError, match="holds no training data: pass X_train, y_train"):
        FusionClassifier.load(folder).subset_gap(X, targets("classifier", X))


def test_auto_selection_results_and_module_encoders_round_trip(tmp_path: Path) -> None:
    from modfuse.core.config import describe
    from modfuse.encoders.tabular import TabularEncoder

    rng = np.random.default_rng(7)
    X = {"a": rng.normal(size=(60, 3)), "b": rng.normal(size=(60, 2))}
    y = (X["a"][:, 0] > 0).astype(int)
    picked = FusionClassifier(strategy="auto", auto_strategies=("early",), auto_cv=2, **{**FAST, "max_epochs": 1})
    picked.fit(X, y)
    loaded = FusionClassifier.load(picked.save(tmp_path / "auto"))
    assert loaded.best_params_ == picked.best_params_ and loaded.best_score_ == picked.best_score_
    for key, column in picked.cv_results_.items():
        assert np.asarray(loaded.cv_results_[key]).dtype == np.asarray(column).dtype, key
        np.testing.assert_array_equal(loaded.cv_results_[key], column)
    np.testing.assert_array_equal(loaded.predict_proba(X), picked.predict_proba(X))
    # an encoder module passed as a parameter is saved by its description (the weights are the network's)
    given = FusionClassifier(encoders={"a": TabularEncoder(3, out_dim=8), "b": TabularEncoder(2, out_dim=8)}, **FAST)
    back = FusionClassifier.load(given.fit(X, y).save(tmp_path / "modules"))
    assert (
        describe(back.encoders["a"]) == describe(given.encoders["a"]) and back.encoders["a"] is not given.encoders["a"]
    )
    np.testing.assert_array_equal(back.predict_proba(X), given.predict_proba(X))
