"""Small cohorts: every strategy's estimator defaults and ``strategy="auto"`` against the
scikit-learn / scikit-survival baselines, measured in the same run on the same folds.

Data sets (modalities):
- ``cancer``: sklearn breast cancer, three feature groups (mean / se / worst), accuracy;
- ``digits``: sklearn digits, four 4x4 quadrant views, accuracy;
- ``esol``: graph (RDKit molecule) + descriptors, RMSE (baseline: random forest on
  descriptors + 2048-bit Morgan fingerprints; ridge on the same);
- ``whas500``, ``gbsg2``, ``veterans``, ``flchain``: the scikit-survival data sets, columns
  split into a clinical and a laboratory / tumour / vitals modality, Harrell's C-index
  (``flchain``'s ``chapter``, the cause of death, is dropped: it is only known after death).

Baselines: logistic regression on the concatenated standardised features with C chosen by
inner 3-fold CV; random forest (300 trees); ridge with alpha by inner CV (regression); CoxNet
(elastic net Cox, l1_ratio 0.5, alpha by inner 3-fold CV) and gradient-boosted survival.
Evaluation: stratified 5-fold CV, repeated ``--repeats`` times where n < 500 (3 in the full
settings). Every number is an outer-test-fold score; nothing is chosen on the outer folds.

Survival losses: ``--survival-loss hazard cox`` fits every survival strategy once per loss on
the same folds and seeds, rows named ``early (hazard)``, ``early (cox)``: the discrete-time
hazard (`FusionSurvival`'s default) and the Cox partial likelihood
(``TaskSpec("survival", 1, objective="cox")``), all other settings the estimator's defaults.

Usage::

    python -m benchmarks.small_cohorts --datasets cancer whas500 --strategies early late --jobs 2
    python -m benchmarks.small_cohorts --quick    # 1 repeat, 2 of the 5 folds
    python -m benchmarks.small_cohorts --datasets veterans --strategies early --no-auto --survival-loss hazard cox
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import common

DATASETS = ("cancer", "digits", "esol", "whas500", "gbsg2", "veterans", "flchain")
FUSION = ("early", "late", "attention", "sequential", "lego-fuse", "lego-merge")
SURVIVAL_LOSSES = ("hazard", "cox")
"""The survival task's objectives (`modfuse.core.tasks.Survival.objectives`); the first is the default."""
BASELINES = {
    "classification": ("logistic (C by CV)", "random forest"),
    "regression": ("ridge (alpha by CV)", "random forest"),
    "survival": ("CoxNet (alpha by CV)", "gradient boosting"),
}
SURVIVAL_SPLITS = {
    "whas500": ["age", "gender", "bmi", "cvd", "afb", "chf", "av3", "sho", "miord", "mitype", "los"],
    "gbsg2": ["age", "menostat", "horTh"],
    "veterans": ["Age_in_years", "Prior_therapy", "Treatment", "Months_from_Diagnosis"],
    "flchain": ["age", "sex", "sample.yr", "mgus"],
}
"""The clinical columns of each survival data set; the others form the second modality."""


@dataclass(frozen=True)
class Settings:
    datasets: tuple[str, ...] = DATASETS
    strategies: tuple[str, ...] = FUSION
    auto: bool = True
    repeats: int = 3  # where n < 500
    folds: int = 5
    fold_limit: int | None = None  # run only the first k outer folds of each repeat
    max_rows: int | None = None  # subsample larger data sets (stratified by the label / event)
    max_epochs: int = 100
    auto_cv: int = 3
    auto_strategies: tuple[str, ...] | None = None
    survival_losses: tuple[str, ...] = SURVIVAL_LOSSES[:1]
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Settings(repeats=1, fold_limit=2, datasets=("cancer", "veterans"), strategies=("early", "late"), auto_cv=2)


# ---------------------------------------------------------------------------- data
@dataclass
class Data:
    name: str
    kind: str  # classification / regression / survival
    views: dict[str, Any]  # modality -> (n, p) array or list of graphs
    flat: np.ndarray  # the baselines' features
    y: Any
    strata: np.ndarray


def _survival(name: str) -> Data:
    from sksurv import datasets as sd
    from sksurv.column import encode_categorical

    loader = {
        "whas500": sd.load_whas500,
        "gbsg2": sd.load_gbsg2,
        "veterans": sd.load_veterans_lung_cancer,
        "flchain": sd.load_flchain,
    }[name]
    X, y = loader()
    X = X.drop(columns=[c for c in ("chapter",) if c in X])
    clinical = SURVIVAL_SPLITS[name]
    other = [c for c in X.columns if c not in clinical]
    views = {}
    for view, cols in (("clinical", clinical), ("lab", other)):
        part = encode_categorical(X[cols]).astype(np.float32)
        views[view] = part.to_numpy()
    flat = np.concatenate(list(views.values()), axis=1)
    event_field, time_field = y.dtype.names
    target = np.zeros(len(y), dtype=[("event", bool), ("time", float)])
    target["event"], target["time"] = y[event_field], y[time_field]
    return Data(name, "survival", views, flat, target, target["event"].astype(int))


def _esol() -> Data:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    from benchmarks import esol

    graphs, table, y, smiles, _ = esol.load()
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = np.array([gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)) for s in smiles], dtype=np.float32)
    strata = np.asarray(pd.qcut(y, 5, labels=False))  # an array for an array y
    return Data("esol", "regression", {"graph": graphs, "descriptors": table}, np.hstack([table, fps]), y, strata)


def load(name: str) -> Data:
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "cancer":
        X, y = load_breast_cancer(return_X_y=True)
        views = {"mean": X[:, :10], "se": X[:, 10:20], "worst": X[:, 20:]}
        return Data(name, "classification", views, X, y, y)
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        img = X.reshape(-1, 8, 8)
        views = {
            f"q{i}{j}": img[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].reshape(-1, 16) for i in (0, 1) for j in (0, 1)
        }
        return Data(name, "classification", views, X, y, y)
    if name == "esol":
        return _esol()
    return _survival(name)


def _subsample(data: Data, max_rows: int | None, seed: int = 0) -> Data:
    n = len(data.strata)
    if not max_rows or n <= max_rows:
        return data
    from sklearn.model_selection import train_test_split

    rows, _ = train_test_split(np.arange(n), train_size=max_rows, random_state=seed, stratify=data.strata)
    rows = np.sort(rows)
    take = lambda v: [v[i] for i in rows] if isinstance(v, list) else v[rows]  # noqa: E731
    return Data(
        data.name,
        data.kind,
        {k: take(v) for k, v in data.views.items()},
        data.flat[rows],
        data.y[rows],
        data.strata[rows],
    )


# ---------------------------------------------------------------------------- models
def _baseline(name: str, kind: str, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name.startswith("logistic"):
        return make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=3, max_iter=5000))
    if name.startswith("ridge"):
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if name == "random forest":
        cls = RandomForestClassifier if kind == "classification" else RandomForestRegressor
        return cls(n_estimators=300, random_state=seed, n_jobs=1)
    if name == "gradient boosting":
        from sksurv.ensemble import GradientBoostingSurvivalAnalysis

        return GradientBoostingSurvivalAnalysis(random_state=seed)
    raise KeyError(name)


def _coxnet(X: np.ndarray, y: Any, seed: int) -> Any:
    """CoxNet with alpha chosen by inner 3-fold CV over the path of a first fit."""
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxnetSurvivalAnalysis

    path = make_pipeline(StandardScaler(), CoxnetSurvivalAnalysis(l1_ratio=0.5, alpha_min_ratio=0.01, n_alphas=30))
    path.fit(X, y)
    alphas = path.named_steps["coxnetsurvivalanalysis"].alphas_
    search = GridSearchCV(
        make_pipeline(StandardScaler(), CoxnetSurvivalAnalysis(l1_ratio=0.5, fit_baseline_model=False)),
        {"coxnetsurvivalanalysis__alphas": [[a] for a in alphas]},
        cv=KFold(3, shuffle=True, random_state=seed),
        error_score=0.5,
    )
    return search.fit(X, y)


def _score(kind: str, y_true: Any, pred: np.ndarray) -> float:
    if kind == "classification":
        return float((pred == y_true).mean())
    if kind == "regression":
        return float(np.sqrt(np.mean((pred - y_true) ** 2)))
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(y_true["event"], y_true["time"], pred)[0])


def _cox_survival() -> type:
    """`FusionSurvival` trained with the Cox partial likelihood: one output, the log risk (its
    ``predict``); everything else (sizing, splits, early stopping on the C-index) unchanged."""
    from modfuse.core.tasks import TaskSpec
    from modfuse.estimators import FusionSurvival

    class CoxSurvival(FusionSurvival):
        def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
            _, target = super()._task(y)  # its checks of y (at least 2 events)
            return TaskSpec("survival", 1, objective="cox"), target

    return CoxSurvival


def fusion_methods(kind: str, settings: Settings) -> list[str]:
    """The fusion rows of a data set: each strategy (and auto), once per survival loss when
    several (or a non-default one) are asked for: ``early (cox)``."""
    names = [*settings.strategies, *(["auto"] if settings.auto else [])]
    if kind != "survival" or settings.survival_losses == SURVIVAL_LOSSES[:1]:
        return names
    return [f"{name} ({loss})" for name in names for loss in settings.survival_losses]


def _parse_method(method: str) -> tuple[str, str]:
    """(strategy, survival loss) of a fusion row's name."""
    name, _, loss = method.partition(" (")
    return name, loss.rstrip(")") or SURVIVAL_LOSSES[0]


def _fusion(strategy: str, kind: str, settings: Settings, seed: int, loss: str = SURVIVAL_LOSSES[0]) -> Any:
    from modfuse.estimators import FusionClassifier, FusionRegressor, FusionSurvival

    survival = _cox_survival() if loss == "cox" else FusionSurvival
    cls = {"classification": FusionClassifier, "regression": FusionRegressor, "survival": survival}[kind]
    kwargs: dict[str, Any] = {"max_epochs": settings.max_epochs, "random_state": seed, "device": "cpu"}
    if strategy == "auto":
        kwargs |= {"auto_cv": settings.auto_cv, "auto_strategies": settings.auto_strategies}
    return cls(strategy=strategy, **kwargs, **settings.extra)


def fit_one(data: Data, method: str, train: np.ndarray, test: np.ndarray, settings: Settings, seed: int) -> dict:
    """One outer fold of one method: its test score, fit time and (for auto) the chosen strategy."""
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    chosen = ""
    strategy, loss = _parse_method(method)
    if strategy in FUSION or strategy == "auto":
        take = lambda v, r: [v[i] for i in r] if isinstance(v, list) else v[r]  # noqa: E731
        model = _fusion(strategy, data.kind, settings, seed, loss)
        y_train = data.y[train]
        if data.kind == "survival":
            y_train = (y_train["time"], y_train["event"].astype(int))
        model.fit({k: take(v, train) for k, v in data.views.items()}, y_train)
        pred = model.predict({k: take(v, test) for k, v in data.views.items()})
        chosen = f"{model.best_strategy_} / robust {model.best_params_['robust']}" if strategy == "auto" else ""
    else:
        if method.startswith("CoxNet"):
            model = _coxnet(data.flat[train], data.y[train], seed)
        else:
            model = _baseline(method, data.kind, seed).fit(data.flat[train], data.y[train])
        pred = model.predict(data.flat[test])
    return {
        "dataset": data.name,
        "method": method,
        "score": _score(data.kind, data.y[test], pred),
        "fit_s": time.perf_counter() - start,
        "chosen": chosen,
    }


# ---------------------------------------------------------------------------- run
def folds(data: Data, settings: Settings) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(repeat, train, test) of the outer CV: stratified k-fold, repeated where n < 500."""
    from sklearn.model_selection import StratifiedKFold

    repeats = settings.repeats if len(data.strata) < 500 else 1
    out = []
    for r in range(repeats):
        splits = list(StratifiedKFold(settings.folds, shuffle=True, random_state=r).split(data.flat, data.strata))
        out += [(r, tr, te) for tr, te in splits[: settings.fold_limit]]
    return out


def _job(args: tuple) -> dict:
    name, method, r, k, train, test, settings = args
    common.quiet()
    data = _subsample(load(name), settings.max_rows)
    row = fit_one(data, method, train, test, settings, seed=r)
    return {**row, "repeat": r, "fold": k}  # (repeat, fold) pairs rows of one split across methods


def run(
    settings: Settings, command: str, log: Callable[[str], None], jobs: int = 1, out_dir: Path = common.RESULTS
) -> Path:
    tasks = []
    sizes = {}
    for name in settings.datasets:
        data = _subsample(load(name), settings.max_rows)
        sizes[name] = (
            data.kind,
            len(data.strata),
            {k: (len(v) if isinstance(v, list) else v.shape[1]) for k, v in data.views.items()},
        )
        methods = [*BASELINES[data.kind], *fusion_methods(data.kind, settings)]
        splits = folds(data, settings)
        for i, (r, tr, te) in enumerate(splits):
            k = sum(rr == r for rr, _, _ in splits[:i])  # the fold's index within its repeat
            tasks += [(name, m, r, k, tr, te, settings) for m in methods]
    # cheap fits first (baselines, then single strategies, then auto), so that a run stopped
    # at its time limit has measured as many data sets as it could
    cost = {m: 0 for ms in BASELINES.values() for m in ms} | {"auto": 2}
    tasks.sort(key=lambda t: cost.get(_parse_method(t[1])[0], 1))
    log(f"small_cohorts: {len(tasks)} fits")
    rows: list[dict] = []

    def done(row: dict) -> None:
        rows.append(row)
        log(f"{row['dataset']} {row['method']}: {row['score']:.4f} ({row['fit_s']:.0f} s)")
        # the table after every fit: a run stopped early still leaves what it measured
        write(pd.DataFrame(rows), sizes, settings, command, out_dir, planned=len(tasks))

    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs) as pool:
            for future in as_completed([pool.submit(_job, task) for task in tasks]):
                done(future.result())
    else:
        for task in tasks:
            done(_job(task))
    return write(pd.DataFrame(rows), sizes, settings, command, out_dir, planned=len(tasks))


def summarise(raw: pd.DataFrame, sizes: dict) -> pd.DataFrame:
    """One row per data set x method: mean ± sd over the outer folds, gap to the best baseline."""
    out = []
    for name, group in raw.groupby("dataset", sort=False):
        kind = sizes[name][0]
        lower = kind == "regression"  # RMSE: lower is better
        means = group.groupby("method", sort=False)["score"].mean()
        base = means[[m for m in means.index if m in BASELINES[kind]]]
        best_base = base.min() if lower else base.max()
        fused = means[[m for m in means.index if m not in BASELINES[kind]]]
        best_fused = (fused.min() if lower else fused.max()) if len(fused) else np.nan
        unit = 1.0 if kind != "classification" else 100.0  # accuracy gaps in points
        for method, part in group.groupby("method", sort=False):
            gap = (best_base - means[method]) if lower else (means[method] - best_base)
            to_best = (best_fused - means[method]) if lower else (means[method] - best_fused)
            chosen = part["chosen"][part["chosen"] != ""].value_counts()
            out.append(
                {
                    "data set": name,
                    "method": method,
                    "score": common.mean_sd(part["score"].to_numpy()),
                    "vs best baseline": f"{gap * unit:+.2f}",
                    "vs best strategy": "" if method in BASELINES[kind] else f"{to_best * unit:+.2f}",
                    "folds": len(part),
                    "fit s": f"{part['fit_s'].mean():.0f}",
                    "auto chose": "; ".join(f"{k} x{v}" for k, v in chosen.items()),
                }
            )
    return pd.DataFrame(out)


def write(raw: pd.DataFrame, sizes: dict, settings: Settings, command: str, out_dir: Path, planned: int) -> Path:
    described = "; ".join(f"{k} ({sizes[k][0]}, n={sizes[k][1]}, views {sizes[k][2]})" for k in sizes)
    notes = [
        f"fits finished: {len(raw)} of the {planned} planned"
        + ("" if len(raw) == planned else " (the run was stopped: rows with fewer folds are incomplete)"),
        f"data sets: {described}",
        "score: accuracy (classification), RMSE (regression, lower is better), Harrell's C-index (survival); "
        "'vs best baseline' / 'vs best strategy': the method's mean minus the best baseline's / the best "
        "fusion row's (accuracy in points; RMSE signed so that + is better; C-index in C units)",
        f"outer CV: stratified {settings.folds}-fold, repeated {settings.repeats}x where n < 500"
        + (f", only the first {settings.fold_limit} folds of each repeat" if settings.fold_limit else "")
        + (
            f"; data sets above {settings.max_rows} rows subsampled to {settings.max_rows}" if settings.max_rows else ""
        ),
        f"fusion: the estimators' defaults (sized by the data, linear path, robust training on) with max_epochs="
        f"{settings.max_epochs}; auto: {settings.auto_cv}-fold inner CV over "
        f"{settings.auto_strategies or 'early, late, attention'} x robust on/off, then refit on the training folds",
        *(
            [
                f"survival losses: {', '.join(settings.survival_losses)} (hazard: discrete-time logistic hazard over "
                "the estimator's intervals; cox: Cox partial likelihood with Breslow ties over each batch's risk "
                "sets, one output), same folds, seeds and other settings"
            ]
            if settings.survival_losses != SURVIVAL_LOSSES[:1]
            else []
        ),
        "targets (issue 20): auto >= the best baseline everywhere; every default within 0.5 points (0.01 C) of it; "
        "no default more than 1 point below the best strategy",
    ]
    return common.write_results(
        "small_cohorts",
        "Small cohorts: estimator defaults and strategy='auto' vs scikit-learn / scikit-survival",
        {"": summarise(raw, sizes)},
        raw,
        command=command,
        seeds="outer-fold repeat r uses seed r for the splits, the forests and the networks",
        notes=notes,
        out_dir=out_dir,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_cohorts", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, 2 folds, cancer + veterans, early + late")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=None)
    parser.add_argument("--strategies", nargs="*", choices=FUSION, default=None)
    parser.add_argument("--no-auto", action="store_true", help="skip strategy='auto'")
    parser.add_argument("--repeats", type=int, default=None, help="outer CV repeats where n < 500 (default 3)")
    parser.add_argument("--fold-limit", type=int, default=None, help="run only the first k of the 5 outer folds")
    parser.add_argument("--max-rows", type=int, default=None, help="subsample larger data sets to this many rows")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--auto-cv", type=int, default=None)
    parser.add_argument("--auto-strategies", nargs="+", choices=FUSION, default=None)
    parser.add_argument(
        "--survival-loss",
        nargs="+",
        choices=SURVIVAL_LOSSES,
        default=None,
        help="survival objectives fitted side by side, one row per strategy and loss (default: hazard)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="fits in this many worker processes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    base = QUICK if args.quick else Settings()
    settings = Settings(
        datasets=tuple(args.datasets or base.datasets),
        strategies=tuple(base.strategies if args.strategies is None else args.strategies),
        auto=not args.no_auto,
        repeats=args.repeats or base.repeats,
        folds=base.folds,
        fold_limit=args.fold_limit or base.fold_limit,
        max_rows=args.max_rows or base.max_rows,
        max_epochs=args.max_epochs or base.max_epochs,
        auto_cv=args.auto_cv or base.auto_cv,
        auto_strategies=tuple(args.auto_strategies) if args.auto_strategies else base.auto_strategies,
        survival_losses=tuple(dict.fromkeys(args.survival_loss)) if args.survival_loss else base.survival_losses,
    )
    common.quiet()
    out = args.out or (common.RESULTS / "quick" if args.quick else common.RESULTS)
    command = "python -m benchmarks.small_cohorts " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    start = time.perf_counter()
    path = run(
        settings,
        command.strip(),
        lambda m: print(f"[{time.perf_counter() - start:6.0f}s] {m}", flush=True),
        args.jobs,
        out,
    )
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
