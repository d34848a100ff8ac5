"""Late fusion's combination of its heads, on validation rows only: plain mean vs calibrated.

The selection behind ``LateFusion(combine="auto")`` (`modfuse.fusion.late`): late fusion
trained with the estimators' defaults (robust training on), its heads combined by their plain
mean (``combine="mean"``) or by `SubsetCalibration` (``combine="calibrated"``), scored on
validation rows that no test fold contains:

- ``linear``: the generated problem of ``tests/test_small_cohorts.py`` drawn with other seeds
  than the tests' (300 training, 1000 validation rows per seed);
- ``breast_cancer``, ``digits``, ``eopatch``, ``esol``: 20 % of a training fold of
  ``benchmarks/missing.py`` (its splits, its estimators' settings);
- ``veterans``, ``whas500``: 25 % of the training part of an outer fold of
  ``benchmarks/small_cohorts.py`` (C-index).

``--linear-maps`` also varies the map between a linear-path encoder (the estimators' tabular
encoder, for every 2-D array modality) and its head (``LateFusion(standardize=...)``; other
encoders keep ``"auto"``), the selection behind its default.

Prints one line per (data set, split, candidate): complete-data score, mean over the modality
subsets and test-time MCAR 0.5 (classification and regression), and writes them as CSV::

    python -m benchmarks.late_combine --only linear breast_cancer --splits 3
    python -m benchmarks.late_combine --only linear --linear-seeds 7 8 9 --candidates mean calibrated none
    python -m benchmarks.late_combine --only whas500 veterans --splits 15 --candidates calibrated \
        --linear-maps running row none
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks import common
from benchmarks import missing as mb
from modfuse.fusion.late import STANDARDIZES

CANDIDATES: dict[str, dict[str, Any]] = {
    "default": {"strategy_kwargs": {}},
    "mean": {"strategy_kwargs": {"combine": "mean"}},
    "calibrated": {"strategy_kwargs": {"combine": "calibrated"}},
    "none": {"modality_dropout": None, "unimodal_weight": None, "strategy_kwargs": {"combine": "mean"}},
    "calibrated none": {
        "modality_dropout": None,
        "unimodal_weight": None,
        "strategy_kwargs": {"combine": "calibrated"},
    },
}
MISSING_SETS = ("linear", "breast_cancer", "digits", "eopatch", "esol")
SURVIVAL_SETS = ("veterans", "whas500")


def expand(candidates: list[str], linear_maps: list[str] | None, ensembles: list[int] | None = None) -> list[str]:
    """The candidates, each once per linear-path map when ``linear_maps`` is given ("mean / row")
    and once per ensemble size when ``ensembles`` is ("mean / row x3"; size 1 adds nothing)."""
    names = [f"{c} / {m}" for c in candidates for m in linear_maps] if linear_maps else list(candidates)
    return [f"{c} x{k}" if k > 1 else c for c in names for k in ensembles or [1]]


def options(candidate: str, views: dict[str, Any]) -> dict[str, Any]:
    """Estimator options of a candidate of `expand`: "calibrated / row" maps every 2-D array
    modality (a linear-path tabular encoder) per row; "... x3" averages 3 seeds (``n_ensemble``)."""
    candidate, _, members = candidate.partition(" x")
    name, _, linear_map = candidate.partition(" / ")
    chosen = {**CANDIDATES[name], "strategy_kwargs": dict(CANDIDATES[name]["strategy_kwargs"])}
    if members:
        chosen["n_ensemble"] = int(members)
    if linear_map:
        tabular = [m for m, v in views.items() if isinstance(v, np.ndarray) and v.ndim == 2]
        chosen["strategy_kwargs"]["standardize"] = dict.fromkeys(tabular, linear_map)
    return chosen


def missing_rows(
    name: str, n: int, candidates: list[str], seeds: tuple[int, ...], strategy: str = "late"
) -> list[dict]:
    from modfuse.robust import modality_subsets

    settings = mb.Settings()
    data = mb.linear(seeds=seeds) if name == "linear" else mb.load(name, settings)
    if data is None:
        return []
    subsets = modality_subsets(list(data.X))
    rows = []
    for split, (inner, val) in enumerate(mb.validation_splits(data, 5)[:n]):
        Xtr, Xva, ytr, yva = mb.take(data.X, inner), mb.take(data.X, val), data.y[inner], data.y[val]
        for cand in candidates:
            start = time.perf_counter()
            model = mb.estimator(data, strategy, settings, split, **options(cand, data.X)).fit(Xtr, ytr)
            per = [mb.score(data, model, mb.restrict(Xva, s), yva) for s in subsets]
            mcar = [mb.score(data, model, mb.mcar(Xva, 0.5, 10_000 + 100 * split + r), yva) for r in range(5)]
            label = f"seed {seeds[split]}" if name == "linear" else f"fold {split}"
            rows.append(_row(name, label, cand, per[-1], float(np.mean(per)), float(np.mean(mcar)), start))
    return rows


def survival_rows(name: str, n: int, candidates: list[str], strategy: str = "late") -> list[dict]:
    from sklearn.model_selection import train_test_split

    from benchmarks import small_cohorts as sc
    from modfuse.estimators import FusionSurvival

    data, settings = sc.load(name), sc.Settings()
    rows = []
    for split, (_repeat, train, _test) in enumerate(sc.folds(data, settings)[:n]):
        inner, val = train_test_split(train, test_size=0.25, random_state=len(train), stratify=data.strata[train])
        y = data.y[inner]
        for cand in candidates:
            start = time.perf_counter()
            model = FusionSurvival(
                strategy=strategy,
                max_epochs=settings.max_epochs,
                random_state=0,
                device="cpu",
                **options(cand, data.views),
            )
            model.fit({k: v[inner] for k, v in data.views.items()}, (y["time"], y["event"].astype(int)))
            score = sc._score("survival", data.y[val], model.predict({k: v[val] for k, v in data.views.items()}))
            rows.append(_row(name, f"fold {split}", cand, score, float("nan"), float("nan"), start))
    return rows


def _row(data: str, split: str, cand: str, full: float, subsets: float, mcar50: float, start: float) -> dict:
    row = {"dataset": data, "split": split, "candidate": cand, "val_full": full, "val_mean_subsets": subsets}
    row |= {"val_mcar50": mcar50, "fit_s": time.perf_counter() - start}
    print(
        f"{data} {split} [{cand}] full {full:.4f} subsets {subsets:.4f} mcar50 {mcar50:.4f} ({row['fit_s']:.0f}s)",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.late_combine", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=MISSING_SETS + SURVIVAL_SETS, default=list(MISSING_SETS))
    parser.add_argument("--splits", type=int, default=2, help="validation splits per data set")
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=["mean", "calibrated"])
    parser.add_argument("--linear-seeds", nargs="+", type=int, default=[101, 102])
    maps = [m for m in STANDARDIZES if m != "auto"]
    parser.add_argument("--linear-maps", nargs="+", choices=maps, default=None)
    parser.add_argument(
        "--strategy", default="late", help="fusion strategy (candidates other than 'default' are late's)"
    )
    parser.add_argument("--ensembles", nargs="+", type=int, default=None, help="n_ensemble sizes to compare")
    parser.add_argument("--out", type=Path, default=Path("late_combine.csv"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    common.quiet()
    rows: list[dict] = []
    candidates = expand(args.candidates, args.linear_maps, args.ensembles)
    for name in args.only:
        if name in SURVIVAL_SETS:
            rows += survival_rows(name, args.splits, candidates, args.strategy)
        else:
            seeds = tuple(args.linear_seeds)
            n = len(seeds) if name == "linear" else args.splits
            rows += missing_rows(name, n, candidates, seeds, args.strategy)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
