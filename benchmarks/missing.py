"""Missing modalities: every strategy trained with the old setting (no missingness-aware
training) and with the new default (``modality_dropout="auto"``, ``unimodal_weight="auto"``),
evaluated under test-time MCAR missingness and by the subset gap (fused model on each modality
subset next to a specialist trained on that subset alone).

Data sets: breast cancer (feature groups mean / se / worst), the four 4x4 quadrants of
``sklearn.datasets.load_digits``, ESOL (molecular graph + descriptors), eopatch land cover
(NDVI series + terrain), the synthetic clinical cohort (X-ray, ECG, labs). Each is split into
5 folds (stratified; spatial blocks for eopatch); each fold trains on the other four (the
estimators hold out 15 % of it for early stopping) and is evaluated on the held-out fold.

Reference: a scikit-learn late fusion of logistic regressions (one per modality, standardised
features, log-probabilities averaged over the present modalities) in the same run.

``--select`` runs the choice of the default instead: on breast cancer and digits, inside the
training folds only (a validation split of them, never a test fold), each candidate setting's
full-modality accuracy and mean accuracy over all modality subsets.

Usage::

    python -m benchmarks.missing --quick                     # small, all data sets
    python -m benchmarks.missing --only breast_cancer digits
    python -m benchmarks.missing --select --only breast_cancer digits
    python -m benchmarks.missing --merge runs/breast_cancer runs/digits   # one table of several runs

Each run also writes ``missing_run.json`` (its settings, command and wall time) beside its
CSVs, so that ``--merge`` can state per data set how it was measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import common

DATASETS = ("breast_cancer", "digits", "esol", "eopatch", "cohort")
KINDS = {
    "breast_cancer": "classification",
    "digits": "classification",
    "esol": "regression",
    "eopatch": "classification",
    "cohort": "classification",
    "linear": "classification",
}
SELECT_ONLY = ("linear",)  # data sets for --select only (generated: no test fold to report)
ROBUST_EXTRA = ("full_weight", "dropout_rows")  # FusionTask options the estimators do not take
OLD = {"modality_dropout": None, "unimodal_weight": None}
NEW: dict[str, Any] = {}  # the estimators' defaults
CANDIDATES = {
    "none": OLD,
    "drop 0.15 + uni 0.5": {"modality_dropout": 0.15, "unimodal_weight": 0.5},
    "drop 0.3 + uni 0.5": {"modality_dropout": 0.3, "unimodal_weight": 0.5},
    "drop 0.5 + uni 0.5": {"modality_dropout": 0.5, "unimodal_weight": 0.5},
    "drop 0.3": {"modality_dropout": 0.3, "unimodal_weight": None},
    "drop 0.3 + uni 1.0": {"modality_dropout": 0.3, "unimodal_weight": 1.0},
    "drop 0.3 + uni 0.5 + ogm-ge": {"modality_dropout": 0.3, "unimodal_weight": 0.5, "balance": "ogm-ge"},
    "drop 0.3 + uni 0.5 + agm": {"modality_dropout": 0.3, "unimodal_weight": 0.5, "balance": "agm"},
    "drop 0.5 + uni 1.0": {"modality_dropout": 0.5, "unimodal_weight": 1.0},
    # cutting the complete-data cost: a share of the main loss on the complete batch, or
    # dropout on a fraction of the rows only, or a lighter unimodal loss
    "drop 0.3 + uni 0.5 + full 0.5": {"modality_dropout": 0.3, "unimodal_weight": 0.5, "full_weight": 0.5},
    "drop 0.3 + uni 0.5 + full 0.3": {"modality_dropout": 0.3, "unimodal_weight": 0.5, "full_weight": 0.3},
    "drop 0.5 + uni 0.5 + full 0.5": {"modality_dropout": 0.5, "unimodal_weight": 0.5, "full_weight": 0.5},
    "drop 0.3 + uni 0.5 + rows 0.5": {"modality_dropout": 0.3, "unimodal_weight": 0.5, "dropout_rows": 0.5},
    "drop 0.5 + uni 0.5 + rows 0.5": {"modality_dropout": 0.5, "unimodal_weight": 0.5, "dropout_rows": 0.5},
    "drop 0.3 + uni 0.25": {"modality_dropout": 0.3, "unimodal_weight": 0.25},
    "drop 0.3 + uni 0.25 + full 0.5": {"modality_dropout": 0.3, "unimodal_weight": 0.25, "full_weight": 0.5},
    "uni 0.5": {"modality_dropout": None, "unimodal_weight": 0.5},
}
# a candidate with dropout and no "full" term pins full_weight=0, its value when it was first
# measured: the FusionTask default ("auto", 0.5 for most strategies) would make it a "full 0.5"
CANDIDATES = {k: {"full_weight": 0.0, **v} if v.get("modality_dropout") else v for k, v in CANDIDATES.items()}


@dataclass
class Settings:
    folds: int = 5
    max_epochs: int = 60
    patience: int = 10
    rates: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    datasets: tuple[str, ...] = DATASETS
    strategies: tuple[str, ...] | None = None  # None: every strategy of the estimators
    specialist_strategy: str = "early"
    eopatch_pixels: int = 3000  # labelled pixels sampled (seeded) from the patch
    cohort_n: int = 600
    select_strategies: tuple[str, ...] = ("early", "attention", "late")
    select_folds: int = 2
    candidates: tuple[str, ...] | None = None  # --select: None = every CANDIDATES entry
    fold_list: tuple[int, ...] | None = None  # run only these outer folds (of ``folds``); None = all
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Settings(folds=2, max_epochs=8, patience=3, eopatch_pixels=1000, cohort_n=200, select_folds=1)


# ---------------------------------------------------------------------------- data
@dataclass
class Data:
    name: str
    X: dict[str, Any]
    y: np.ndarray
    kind: str  # "classification" or "regression"
    groups: np.ndarray | None = None
    note: str = ""
    # --select: fixed (training, validation) row splits instead of 80/20 of the training folds
    selection_splits: list[tuple[np.ndarray, np.ndarray]] | None = None


def linear_views(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The generated linear problem of ``tests/test_small_cohorts.py``: two 6-feature views,
    labels from a logistic model of a linear score (Bayes accuracy ~0.86), unstandardised."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 6)), rng.normal(size=(n, 6))
    w = np.array([1.0, -0.8, 0.6, 0.0, 0.4, 0.0])
    score = a @ w + b @ w[::-1] * 0.8
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * score))).astype(int)
    return {"a": a * 3 + 5, "b": b * 0.2 - 1}, y


def linear(seeds: Sequence[int] = (101, 102), n_train: int = 300, n_val: int = 1000) -> Data:
    """The linear problem drawn with ``seeds`` (not the tests' seeds 0 / 7..9), one 300-row
    cohort and 1000 validation rows per seed, as the small-cohort test sizes it."""
    parts = [linear_views(n_train + n_val, s) for s in seeds]
    X = {m: np.concatenate([p[0][m] for p in parts]).astype(np.float32) for m in ("a", "b")}
    y = np.concatenate([p[1] for p in parts])
    size = n_train + n_val
    splits = [
        (np.arange(i * size, i * size + n_train), np.arange(i * size + n_train, (i + 1) * size))
        for i in range(len(seeds))
    ]
    note = f"generated, seeds {list(seeds)}: {n_train} training and {n_val} validation rows each"
    return Data("linear", X, y, "classification", note=note, selection_splits=splits)


def breast_cancer() -> Data:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x = d.data.astype(np.float32)
    return Data("breast_cancer", {"mean": x[:, :10], "se": x[:, 10:20], "worst": x[:, 20:]}, d.target, "classification")


def digits() -> Data:
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images.astype(np.float32)
    views = {
        "top_left": img[:, :4, :4],
        "top_right": img[:, :4, 4:],
        "bottom_left": img[:, 4:, :4],
        "bottom_right": img[:, 4:, 4:],
    }
    return Data("digits", {k: v.reshape(len(v), 16) for k, v in views.items()}, d.target, "classification")


def esol() -> Data:
    from benchmarks import esol as esol_bench

    graphs, table, y, _, _ = esol_bench.load()
    return Data("esol", {"graph": graphs, "descriptors": table}, y, "regression", note="RMSE (log mol/L)")


def eopatch(settings: Settings) -> Data:
    from benchmarks import remote_sensing

    data = remote_sensing.load()
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(data["label"]), min(settings.eopatch_pixels, len(data["label"])), replace=False))
    blocks = (data["rows"][rows] // 20) * 1000 + data["cols"][rows] // 20
    X = {"ndvi": data["ndvi"][rows], "terrain": data["elevation"][rows]}
    note = f"{len(rows)} pixels sampled of {len(data['label'])}; folds by 200 m blocks"
    return Data("eopatch", X, data["label"][rows], "classification", groups=blocks, note=note)


def cohort(settings: Settings) -> Data:
    from modfuse.datasets.synthetic import synthetic_cohort

    dataset = synthetic_cohort(settings.cohort_n, seed=0).dataset()
    samples = [dataset[i] for i in range(len(dataset))]
    X = {}
    for m in dataset.sources:
        first = next(s["inputs"][m] for s in samples if s["inputs"][m] is not None)
        shape = tuple(np.asarray(first).shape)
        rows = [
            np.full(shape, np.nan, np.float32) if s["inputs"][m] is None else np.asarray(s["inputs"][m], np.float32)
            for s in samples
        ]
        X[m] = np.stack(rows)
    y = np.asarray([int(s["target"]) for s in samples])
    missing = {m: float(np.isnan(v.reshape(len(v), -1)).all(1).mean()) for m, v in X.items()}
    return Data("cohort", X, y, "classification", note=f"natural missing fraction {missing}, MCAR on top")


def load(name: str, settings: Settings) -> Data | None:
    folder = {"esol": "esol", "eopatch": "eopatch-slovenia"}.get(name)
    if folder and not (common.DATA / folder).is_dir():
        return None
    loaders: dict[str, Callable[[], Data]] = {
        "breast_cancer": breast_cancer,
        "digits": digits,
        "esol": esol,
        "eopatch": lambda: eopatch(settings),
        "cohort": lambda: cohort(settings),
        "linear": linear,
    }
    data = loaders[name]()
    assert data.kind == KINDS[name], f"KINDS says {name} is {KINDS[name]}, its loader gives {data.kind}"
    return data


def folds(data: Data, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    idx = np.arange(len(data.y))
    if data.groups is not None:
        return list(GroupKFold(k).split(idx, data.y, data.groups))
    if data.kind == "classification":
        return list(StratifiedKFold(k, shuffle=True, random_state=0).split(idx, data.y))
    return list(KFold(k, shuffle=True, random_state=0).split(idx))


def take(X: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    return {m: [v[i] for i in rows] if isinstance(v, list) else v[rows] for m, v in X.items()}


def present(X: dict[str, Any]) -> np.ndarray:
    """(n, M) bool: which modalities each row has."""
    cols = []
    for v in X.values():
        if isinstance(v, list):
            cols.append(np.array([g is not None for g in v]))
        else:
            cols.append(~np.isnan(v.reshape(len(v), -1)).all(1))
    return np.stack(cols, 1)


def mcar(X: dict[str, Any], rate: float, seed: int) -> dict[str, Any]:
    """Remove each present modality of each row with probability ``rate``, keeping at least one."""
    names = list(X)
    pres = present(X)
    rng = np.random.default_rng(seed)
    keep = pres & (rng.random(pres.shape) >= rate)
    emptied = pres.any(1) & ~keep.any(1)
    scores = np.where(pres, rng.random(pres.shape), -1.0)
    keep[emptied, scores[emptied].argmax(1)] = True
    out = {}
    for j, m in enumerate(names):
        v = X[m]
        if isinstance(v, list):
            out[m] = [g if k else None for g, k in zip(v, keep[:, j])]
        else:
            w = v.copy()
            w[~keep[:, j]] = np.nan
            out[m] = w
    return out


def restrict(X: dict[str, Any], subset: Sequence[str]) -> dict[str, Any]:
    return {m: (v if m in subset else None) for m, v in X.items()}


# ---------------------------------------------------------------------------- models
def with_robust_options(cls: type, extra: dict[str, Any]) -> type:
    """``cls`` passing ``extra`` (e.g. ``full_weight``) to its FusionTask as well (a subclass,
    so that the estimators' clones and refits keep them)."""

    class Tuned(cls):  # type: ignore[valid-type, misc]
        def _robust_kwargs(self) -> dict[str, Any]:
            return {**super()._robust_kwargs(), **extra}

    Tuned.__name__ = Tuned.__qualname__ = cls.__name__
    return Tuned


def estimator(data: Data, strategy: str, settings: Settings, seed: int, **options: Any) -> Any:
    from modfuse import FusionClassifier, FusionRegressor

    cls: type = FusionClassifier if data.kind == "classification" else FusionRegressor
    extra = {k: options.pop(k) for k in ROBUST_EXTRA if k in options}
    if extra:
        cls = with_robust_options(cls, extra)
    return cls(
        strategy=strategy,
        max_epochs=settings.max_epochs,
        patience=settings.patience,
        random_state=seed,
        device="cpu",
        **options,
    )


def score(data: Data, model: Any, X: dict[str, Any], y: np.ndarray) -> float:
    """Accuracy (classification) or RMSE in the target's units (regression)."""
    pred = model.predict(X)
    if data.kind == "classification":
        return float((pred == y).mean())
    return float(np.sqrt(np.mean((np.asarray(pred).reshape(-1) - y) ** 2)))


class LogisticLateFusion:
    """One standardised logistic regression per modality; log-probabilities averaged over the
    modalities each row has."""

    def fit(self, X: dict[str, Any], y: np.ndarray) -> LogisticLateFusion:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.classes_ = np.unique(y)
        pres = present(X)
        self.models = {}
        for j, (m, v) in enumerate(X.items()):
            rows = pres[:, j]
            flat = v.reshape(len(v), -1)[rows]
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            self.models[m] = model.fit(np.nan_to_num(flat), y[rows])
        return self

    def predict(self, X: dict[str, Any]) -> np.ndarray:
        pres = present(X)
        n = len(pres)
        total = np.zeros((n, len(self.classes_)))
        count = np.zeros(n)
        for j, (m, v) in enumerate(X.items()):
            rows = pres[:, j]
            if rows.any():
                flat = np.nan_to_num(v.reshape(len(v), -1)[rows])
                total[rows] += self.models[m].predict_log_proba(flat)
                count[rows] += 1
        return self.classes_[(total / np.maximum(count, 1)[:, None]).argmax(1)]


# ---------------------------------------------------------------------------- runs
def strategies_of(settings: Settings) -> list[str]:
    from modfuse.estimators import STRATEGIES

    return list(settings.strategies or STRATEGIES)


_CACHE: dict[str, Data] = {}


def _data(name: str, settings: Settings) -> Data:
    if name not in _CACHE:
        loaded = load(name, settings)
        if loaded is None:
            raise FileNotFoundError(name)
        _CACHE[name] = loaded
    return _CACHE[name]


def run_fold(name: str, fold: int, settings: Settings) -> tuple[list[dict], list[dict], list[str]]:
    """(MCAR rows, subset-gap rows, log lines) of every strategy x setting on one fold."""
    torch.set_num_threads(1)
    common.quiet()
    data = _data(name, settings)
    lines: list[str] = []

    def log(line: str) -> None:  # printed as it happens (workers share the terminal), kept for the caller
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
        lines.append(line)

    mcar_rows, gap_rows = _fold_rows(data, fold, settings, log)
    return mcar_rows, gap_rows, lines


def _fold_rows(data: Data, fold: int, settings: Settings, log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    from modfuse.robust import modality_subsets

    mcar_rows: list[dict] = []
    gap_rows: list[dict] = []
    subsets = modality_subsets(list(data.X))
    train, test = folds(data, settings.folds)[fold]
    Xtr, Xte, ytr, yte = take(data.X, train), take(data.X, test), data.y[train], data.y[test]
    start = time.perf_counter()
    # one specialist per subset and fold, shared by the strategies: the same estimator
    # settings (epochs, patience, missingness-aware defaults) on the subset's modalities
    specialists = {
        s: estimator(data, settings.specialist_strategy, settings, fold).fit({m: Xtr[m] for m in s}, ytr)
        for s in subsets
    }
    log(f"{data.name} fold {fold}: {len(subsets)} specialists in {time.perf_counter() - start:.0f}s")
    if data.kind == "classification":
        ref = LogisticLateFusion().fit(Xtr, ytr)
        for rate in settings.rates:
            value = score(data, ref, mcar(Xte, rate, 1000 * fold + int(100 * rate)), yte)
            mcar_rows.append(
                {
                    "dataset": data.name,
                    "fold": fold,
                    "strategy": "sklearn-logreg-late",
                    "setting": "-",
                    "rate": rate,
                    "value": value,
                }
            )
    for strategy, (setting, options) in itertools.product(strategies_of(settings), (("old", OLD), ("new", NEW))):
        start = time.perf_counter()
        model = estimator(data, strategy, settings, fold, **options).fit(Xtr, ytr)
        seconds = time.perf_counter() - start
        for rate in settings.rates:
            value = score(data, model, mcar(Xte, rate, 1000 * fold + int(100 * rate)), yte)
            mcar_rows.append(
                {
                    "dataset": data.name,
                    "fold": fold,
                    "strategy": strategy,
                    "setting": setting,
                    "rate": rate,
                    "value": value,
                    "fit_s": seconds,
                }
            )
        gap = model.subset_gap(Xte, yte, specialists=specialists)
        for row in gap.to_dict("records"):
            gap_rows.append({"dataset": data.name, "fold": fold, "strategy": strategy, "setting": setting, **row})
        full = next(r["value"] for r in mcar_rows[::-1] if r["strategy"] == strategy and r["rate"] == 0.0)
        log(
            f"{data.name} fold {fold} {strategy}/{setting}: full {full:.3f}, mean gap {gap['gap'].mean():+.4f}, {seconds:.0f}s"
        )
    return mcar_rows, gap_rows


def outer_folds(settings: Settings) -> Sequence[int]:
    """The outer folds a run covers: ``fold_list``, or all ``folds``."""
    return settings.fold_list if settings.fold_list is not None else range(settings.folds)


def run_all(
    datasets: Sequence[Data],
    settings: Settings,
    log: Callable[[str], None],
    jobs: int,
    progress: Callable[[pd.DataFrame, pd.DataFrame], Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (data set, fold), in ``jobs`` worker processes (one torch thread each)."""
    work = [(d.name, fold) for d in datasets for fold in outer_folds(settings)]
    mcar_rows: list[dict] = []
    gap_rows: list[dict] = []

    def done(result: tuple[list[dict], list[dict], list[str]]) -> None:
        mcar_rows.extend(result[0])
        gap_rows.extend(result[1])
        log(f"done: {len(mcar_rows)} MCAR rows, {len(gap_rows)} subset-gap rows")
        if progress is not None:
            progress(pd.DataFrame(mcar_rows), pd.DataFrame(gap_rows))

    if jobs <= 1:
        for d in datasets:
            _CACHE[d.name] = d
        for name, fold in work:
            done(run_fold(name, fold, settings))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_fold, name, fold, settings) for name, fold in work]
            for future in as_completed(futures):
                done(future.result())
    return pd.DataFrame(mcar_rows), pd.DataFrame(gap_rows)


def validation_splits(data: Data, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, validation) rows for choosing a default: the data set's fixed
    ``selection_splits``, else 80 / 20 of each of the ``k`` training folds (stratified for
    classification); the test folds are never part of them."""
    from sklearn.model_selection import train_test_split

    if data.selection_splits:
        return data.selection_splits
    stratify = data.kind == "classification"
    return [
        train_test_split(train, test_size=0.2, random_state=fold, stratify=data.y[train] if stratify else None)
        for fold, (train, _test) in enumerate(folds(data, k))
    ]


def select(data: Data, settings: Settings, log: Callable[[str], None]) -> pd.DataFrame:
    """Validation scores of the candidate settings (inside the training folds only)."""
    from modfuse.robust import modality_subsets

    rows = []
    subsets = modality_subsets(list(data.X))
    for fold, (inner, val) in enumerate(validation_splits(data, settings.folds)[: settings.select_folds]):
        Xtr, Xva, ytr, yva = take(data.X, inner), take(data.X, val), data.y[inner], data.y[val]
        chosen = {k: CANDIDATES[k] for k in settings.candidates or CANDIDATES}
        # candidate by candidate, each on every strategy, so a stopped run has whole candidates
        strategies = settings.strategies or settings.select_strategies
        for (name, options), strategy in itertools.product(chosen.items(), strategies):
            start = time.perf_counter()
            model = estimator(data, strategy, settings, fold, **options).fit(Xtr, ytr)
            per_subset = [score(data, model, restrict(Xva, s), yva) for s in subsets]
            # test-time MCAR 0.5 on the validation rows (5 seeded draws), the benchmark's target
            mcar50 = [score(data, model, mcar(Xva, 0.5, 10_000 + 100 * fold + r), yva) for r in range(5)]
            rows.append(
                {
                    "dataset": data.name,
                    "fold": fold,
                    "strategy": strategy,
                    "candidate": name,
                    "val_full": per_subset[-1],
                    "val_mean_subsets": float(np.mean(per_subset)),
                    "val_worst_subset": float(np.min(per_subset)),
                    "val_mcar50": float(np.mean(mcar50)),
                    "val_drop50": per_subset[-1] - float(np.mean(mcar50)),
                    "fit_s": time.perf_counter() - start,
                }
            )
            log(
                f"select {data.name} fold {fold} {strategy} [{name}]: full {per_subset[-1]:.3f} "
                f"mean {np.mean(per_subset):.3f} mcar50 {np.mean(mcar50):.3f}"
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- tables
def _points(data_kind: str) -> float:
    return 100.0 if data_kind == "classification" else 1.0


def tables(mcar_raw: pd.DataFrame, gap_raw: pd.DataFrame, kinds: dict[str, str]) -> dict[str, pd.DataFrame]:
    out = {}
    for name, part in mcar_raw.groupby("dataset", sort=False):
        kind = kinds[name]
        scale = _points(kind)
        gaps = gap_raw[gap_raw["dataset"] == name]
        lines = []
        for (strategy, setting), rows in part.groupby(["strategy", "setting"], sort=False):
            line: dict[str, Any] = {"strategy": strategy, "setting": setting}
            by_fold = rows.pivot_table(index="fold", columns="rate", values="value")
            for rate in by_fold.columns:
                line[f"MCAR {rate:g}"] = common.mean_sd(scale * by_fold[rate], 1 if kind == "classification" else 3)
            if 0.5 in by_fold.columns:
                drop = by_fold[0.0] - by_fold[0.5] if kind == "classification" else by_fold[0.5] - by_fold[0.0]
                line["drop @0.5"] = common.mean_sd(scale * drop, 1 if kind == "classification" else 3)
            g = gaps[(gaps["strategy"] == strategy) & (gaps["setting"] == setting)]
            if len(g):
                col = "gap" if kind == "classification" else "gap_relative"
                unit = scale if kind == "classification" else 100.0
                per_fold = g.groupby("fold")[col]
                line["mean subset gap"] = common.mean_sd(unit * per_fold.mean(), 2)
                line["worst subset gap"] = common.mean_sd(unit * per_fold.max(), 2)
                worst = g.groupby("subset")[col].mean().idxmax()
                line["worst subset (mean over folds)"] = worst
            lines.append(line)
        unit = "accuracy %" if kind == "classification" else "RMSE; gaps in % of the specialist's RMSE"
        out[f"{name} ({unit}, {part['fold'].nunique()} folds, mean ± sd)"] = pd.DataFrame(lines)
    return out


EPS = 1e-9  # in points: a tie up to float rounding (0.96 - 0.94 vs 0.95 - 0.93) meets a target


def targets(mcar_raw: pd.DataFrame, gap_raw: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The issue's targets, per data set and strategy (new default), met or missed."""
    rows = []
    for (name, strategy), part in mcar_raw[mcar_raw["setting"] != "-"].groupby(["dataset", "strategy"], sort=False):
        kind = kinds[name]
        classification = kind == "classification"
        full = part[part["rate"] == 0.0].pivot_table(index="fold", columns="setting", values="value")
        g = gap_raw[(gap_raw["dataset"] == name) & (gap_raw["strategy"] == strategy) & (gap_raw["setting"] == "new")]
        col = "gap" if classification else "gap_relative"
        mean_gap = 100 * g.groupby("fold")[col].mean().mean()
        worst_gap = 100 * g.groupby("subset")[col].mean().max()
        if classification:
            full_change = 100 * (full["new"] - full["old"]).mean()
            full_ok = full_change >= -0.3 - EPS
        else:
            full_change = 100 * ((full["new"] - full["old"]) / full["old"]).mean()  # + = worse RMSE
            full_ok = full_change <= 1.0 + EPS
        row = {
            "dataset": name,
            "strategy": strategy,
            "mean gap": f"{mean_gap:.2f} {'✓' if mean_gap <= (0.5 if classification else 3.0) + EPS else '✗'}",
            "worst subset gap": f"{worst_gap:.2f} {'✓' if worst_gap <= (2.0 if classification else 10.0) + EPS else '✗'}",
            "full: new - old": f"{full_change:+.2f} {'✓' if full_ok else '✗'}",
        }
        ref = mcar_raw[(mcar_raw["dataset"] == name) & (mcar_raw["strategy"] == "sklearn-logreg-late")]
        if classification and len(ref) and 0.5 in set(part["rate"]):
            new = part[part["setting"] == "new"].pivot_table(index="fold", columns="rate", values="value")
            ref_p = ref.pivot_table(index="fold", columns="rate", values="value")
            drop = 100 * (new[0.0] - new[0.5]).mean()
            ref_drop = 100 * (ref_p[0.0] - ref_p[0.5]).mean()
            row["drop @0.5 vs sklearn"] = f"{drop:.1f} vs {ref_drop:.1f} {'✓' if drop <= ref_drop + EPS else '✗'}"
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- entry point
def run(
    settings: Settings,
    command: str,
    log: Callable[[str], None],
    out_dir: Path = common.RESULTS,
    selection: bool = False,
    jobs: int = 1,
) -> Path:
    datasets, skipped = [], []
    for name in settings.datasets:
        data = load(name, settings)
        (datasets if data is not None else skipped).append(data or name)
    if selection:
        raw = pd.concat([select(d, settings, log) for d in datasets], ignore_index=True)
        summary = (
            raw.groupby(["dataset", "strategy", "candidate"], sort=False)[
                ["val_full", "val_mean_subsets", "val_worst_subset", "val_mcar50", "val_drop50"]
            ]
            .mean()
            .mul(100)
            .round(1)
            .reset_index()
        )
        overall = (
            raw.groupby("candidate", sort=False)[
                ["val_full", "val_mean_subsets", "val_worst_subset", "val_mcar50", "val_drop50"]
            ]
            .mean()
            .mul(100)
            .round(2)
            .reset_index()
        )
        notes = [
            f"validation = 20 % of each training fold (first {settings.select_folds} of {settings.folds} folds); test folds not used",
            f"{settings.max_epochs} epochs at most, patience {settings.patience}; accuracy in %",
        ]
        return common.write_results(
            "missing_selection",
            "Choice of the missingness-aware default (validation only)",
            {"mean over data sets, strategies and folds": overall, "per data set and strategy": summary},
            raw,
            command=command,
            seeds=f"folds 0..{settings.select_folds - 1}",
            notes=notes,
            out_dir=out_dir,
        )
    kinds = {d.name: d.kind for d in datasets}
    total = len(datasets) * len(outer_folds(settings))

    def write(mcar_raw: pd.DataFrame, gap_raw: pd.DataFrame) -> Path:
        done = mcar_raw.groupby(["dataset", "fold"]).ngroups
        return write_tables(mcar_raw, gap_raw, kinds, datasets, skipped, settings, command, out_dir, done, total)

    started = time.perf_counter()

    def write_and_record(mcar_raw: pd.DataFrame, gap_raw: pd.DataFrame) -> Path:
        path = write(mcar_raw, gap_raw)
        record = {
            "command": command,
            "datasets": [d.name for d in datasets],
            "kinds": kinds,
            "folds": settings.folds,
            "max_epochs": settings.max_epochs,
            "patience": settings.patience,
            "strategies": strategies_of(settings),
            "eopatch_pixels": settings.eopatch_pixels,
            "cohort_n": settings.cohort_n,
            "jobs": jobs,
            "wall_s": round(time.perf_counter() - started),
            "finished": sorted({f"{d} fold {f}" for d, f in zip(mcar_raw["dataset"], mcar_raw["fold"])}),
            "notes": [f"{d.name}: {d.note}" for d in datasets if d.note],
        }
        (out_dir / "missing_run.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
        return path

    mcar_raw, gap_raw = run_all(datasets, settings, log, jobs, progress=write_and_record)
    return write_and_record(mcar_raw, gap_raw)


OLD_NEW_NOTE = (
    "old = modality_dropout=None, unimodal_weight=None (the estimators before issue 14); new = the estimators' defaults"
)
MCAR_NOTE = (
    "MCAR p: each present modality of each test row removed with probability p, at least one kept "
    "(seeded per fold and rate)"
)
SKLEARN_NOTE = (
    "sklearn-logreg-late: StandardScaler + LogisticRegression per modality, log-probabilities averaged over the "
    "present modalities"
)


def publish(
    mcar_raw: pd.DataFrame,
    gap_raw: pd.DataFrame,
    kinds: dict[str, str],
    notes: Sequence[str],
    command: str,
    seeds: str,
    out_dir: Path,
) -> Path:
    """The targets and per-data-set tables of these rows, written with the raw CSVs."""
    shown = {
        "targets (new default; ✓ met, ✗ missed)": targets(mcar_raw, gap_raw, kinds),
        **tables(mcar_raw, gap_raw, kinds),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    gap_raw.to_csv(out_dir / "missing_subset_gap.csv", index=False)
    return common.write_results(
        "missing",
        "Missing modalities: old setting vs missingness-aware default",
        shown,
        mcar_raw,
        command=command,
        seeds=seeds,
        notes=list(notes),
        out_dir=out_dir,
    )


MERGE_NOTES = (
    OLD_NEW_NOTE,
    "15 % of each training fold held out by the estimators for early stopping",
    MCAR_NOTE,
    "subset gap: specialist minus fused (accuracy points; relative RMSE in % for regression); specialists are early "
    "fusion estimators with the same settings trained on the subset's modalities, one per subset and fold, shared by the strategies",
    SKLEARN_NOTE,
)
_WRITTEN_PER_TABLE = ("seeds:", "command:", "raw rows:")


def _earlier_notes(md: Path) -> list[str]:
    """The notes of an earlier merged ``missing.md`` (its runs, commands and scope), without the
    lines a merge writes itself; its machine line is kept as the machine of those runs."""
    lines = [line[2:] for line in md.read_text(encoding="utf-8").splitlines() if line.startswith("- ")]
    kept = [n for n in lines if n not in MERGE_NOTES and not n.startswith(_WRITTEN_PER_TABLE)]
    return [n.replace("machine:", "machine of the earlier runs:", 1) if n.startswith("machine:") else n for n in kept]


def merge(run_dirs: Sequence[Path], out_dir: Path, command: str, scope: Sequence[str] = ()) -> Path:
    """One table of several runs (each a ``--out`` folder with ``missing.csv``,
    ``missing_subset_gap.csv`` and ``missing_run.json``); each data set's settings come from
    the run that measured it, stated in the notes."""
    mcar_parts, gap_parts, notes = [], [], []
    kinds: dict[str, str] = {}
    for folder in run_dirs:
        mcar_parts.append(pd.read_csv(folder / "missing.csv"))
        gap_parts.append(pd.read_csv(folder / "missing_subset_gap.csv"))
        if not (folder / "missing_run.json").is_file():  # an earlier merged table: keep what it says
            kinds.update({d: KINDS[d] for d in mcar_parts[-1]["dataset"].unique()})
            notes += _earlier_notes(folder / "missing.md")
            continue
        record = json.loads((folder / "missing_run.json").read_text(encoding="utf-8"))
        kinds.update(record["kinds"])
        names = ", ".join(record["datasets"])
        notes.append(
            f"{names}: `{record['command']}` ({record['folds']} folds, max_epochs={record['max_epochs']}, "
            f"patience={record['patience']}, strategies {', '.join(record['strategies'])}; "
            f"{len(record['finished'])} (data set, fold) runs finished; {record['wall_s']} s wall)"
        )
        notes += record.get("notes", [])
    mcar_raw = pd.concat(mcar_parts, ignore_index=True)
    gap_raw = pd.concat(gap_parts, ignore_index=True)
    notes += [*MERGE_NOTES, *scope]
    return publish(
        mcar_raw, gap_raw, kinds, notes, command, "folds 0..k-1 of each data set (the fold is the seed)", out_dir
    )


def write_tables(
    mcar_raw: pd.DataFrame,
    gap_raw: pd.DataFrame,
    kinds: dict[str, str],
    datasets: Sequence[Data],
    skipped: Sequence[str],
    settings: Settings,
    command: str,
    out_dir: Path,
    done: int,
    total: int,
) -> Path:
    """Write the tables of the (data set, fold) runs finished so far (rewritten after each one)."""
    finished = sorted({f"{d} fold {f}" for d, f in zip(mcar_raw["dataset"], mcar_raw["fold"])})
    notes = [
        f"{done} of {total} (data set, fold) runs finished"
        + ("" if done == total else f" (partial: {', '.join(finished)})"),
        OLD_NEW_NOTE,
        f"{settings.folds} folds; estimators with max_epochs={settings.max_epochs}, patience={settings.patience} (15 % of each training fold for early stopping)",
        MCAR_NOTE,
        f"subset gap: specialist minus fused (accuracy points; relative RMSE in % for ESOL); specialists are {settings.specialist_strategy} fusion estimators with the same settings trained on the subset's modalities, one per subset and fold, shared by the strategies",
        SKLEARN_NOTE,
        *[f"{d.name}: {d.note}" for d in datasets if d.note],
        *[f"{name}: skipped (data folder absent)" for name in skipped],
    ]
    return publish(
        mcar_raw, gap_raw, kinds, notes, command, f"folds 0..{settings.folds - 1} (the fold is the seed)", out_dir
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.missing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small settings")
    parser.add_argument("--select", action="store_true", help="choose the default on validation splits")
    parser.add_argument("--only", nargs="+", choices=DATASETS + SELECT_ONLY, default=None)
    parser.add_argument("--strategies", nargs="+", default=None)
    parser.add_argument("--folds", type=int, default=None)
    parser.add_argument("--fold_list", type=int, nargs="+", default=None, help="run only these outer folds")
    parser.add_argument("--select_folds", type=int, default=None, help="--select: training folds used")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=None, help="--select: candidates")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (one (data set, fold) each)")
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs of every estimator")
    parser.add_argument("--eopatch_pixels", type=int, default=None, help="labelled eopatch pixels sampled")
    parser.add_argument("--cohort_n", type=int, default=None, help="patients of the synthetic cohort")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--merge", nargs="+", type=Path, default=None, help="run folders to merge into --out")
    parser.add_argument("--scope", nargs="*", default=(), help="--merge: scope notes to add")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    if args.only:
        settings = replace(settings, datasets=tuple(args.only))
    if args.strategies:
        settings = replace(settings, strategies=tuple(args.strategies))
    if args.folds:
        settings = replace(settings, folds=args.folds)
    if args.fold_list:
        settings = replace(settings, fold_list=tuple(args.fold_list))
    if args.epochs:
        settings = replace(settings, max_epochs=args.epochs)
    if args.select_folds:
        settings = replace(settings, select_folds=args.select_folds)
    if args.candidates:
        settings = replace(settings, candidates=tuple(args.candidates))
    if args.eopatch_pixels:
        settings = replace(settings, eopatch_pixels=args.eopatch_pixels)
    if args.cohort_n:
        settings = replace(settings, cohort_n=args.cohort_n)
    out = args.out or (common.RESULTS / "quick" if args.quick else common.RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    common.quiet()
    command = "python -m benchmarks.missing " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    if args.merge:
        print(merge(args.merge, args.out or common.RESULTS, command.strip(), args.scope))
        return 0
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    path = run(settings, command.strip(), log, out, selection=args.select, jobs=args.jobs)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
