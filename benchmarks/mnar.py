"""MNAR shift benchmark: does a fusion model learn the missingness pattern of its training data?

Protocol (after the MultiModN experiment, which removed chest X-rays for part of the positive
patients in training and for negatives at test time):

- train (and validation) data: modality ``m`` is removed for a fraction ``p`` of the samples
  with a "high" label (above-median target, or the positive class), via ``modfuse.robust.mnar``;
- test "train pattern": the same mechanism on the test split;
- test "flipped": ``m`` is removed for a fraction ``p`` of the OTHER test samples instead.

Data sets (real, offline):

- ``esol``: ESOL aqueous solubility (1128 molecules): a molecular graph from SMILES (RDKit ->
  PyG, GINE encoder) + the six descriptor columns; ``m = graph``; metric RMSE (log mol/L,
  lower is better); random 70/10/20 split per seed.
- ``breast_cancer``: scikit-learn's Wisconsin breast cancer (569 cases), three feature groups
  (mean, se, worst) as modalities; the label is malignant; ``m = worst``; metric AUROC;
  stratified 70/10/20 split per seed.

Strategies: early, late, attention and sequential fusion, all trained by ``FusionTask`` with
the same Lightning loop, encoders, epochs and learning rate. Sequential fusion steps through the
modalities with ``m`` last (``sequential``) or in a random order per batch
(``sequential-shuffled``).

Run ``python -m benchmarks.mnar`` (about 10 minutes on 2 CPU cores); it prints a markdown table
of means over seeds and writes every run to ``benchmarks/results/mnar.csv`` and the table to
``benchmarks/results/mnar.md``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
STRATEGIES = ("early", "late", "attention", "sequential", "sequential-shuffled")
PS = (0.0, 0.2, 0.4, 0.6, 0.8)


@dataclass
class Problem:
    """One data set ready for the benchmark.

    Attributes:
        name: data set name.
        data: modality -> per-sample values (arrays with NaN rows, or a list of PyG graphs).
        y: (N,) targets (standardised for regression).
        kind: task kind.
        removed: the modality the MNAR mechanism removes.
        metric: the reported test metric key, e.g. ``"rmse"``.
        y_scale: factor turning the metric back into the target's units (regression).
        order: modality order for sequential fusion (the removed modality last).
        tabular: modality -> number of columns (the rest are graphs).
        epochs: training epochs.
    """

    name: str
    data: dict[str, Any]
    y: np.ndarray
    kind: str
    removed: str
    metric: str
    y_scale: float
    order: list[str]
    tabular: dict[str, int]
    epochs: int


def load_esol() -> Problem:
    """ESOL: descriptor table + SMILES graph; target the measured log solubility (standardised)."""
    from modfuse.data.readers.molecules import smiles_to_graph
    from modfuse.data.transforms import Standardizer
    from modfuse.datasets.collections.moleculenet import CONFIGS

    frame = pd.read_csv(SHARED / "esol" / "delaney-processed.csv")
    # the descriptor columns as the MoleculeNet card configures them (the leaky "ESOL predicted"
    # column is excluded there)
    desc_cols = list(CONFIGS["esol"].descriptors)
    y = frame["measured log solubility in mols per litre"].to_numpy(np.float64)
    graphs = [smiles_to_graph(s.strip(), sample_id=i) for i, s in enumerate(frame["smiles"])]
    desc = frame[desc_cols].to_numpy(np.float32)
    target = Standardizer.fit(y)  # a change of units only (RMSE is reported times y_scale)
    return Problem(
        name="esol",
        data={"desc": desc, "graph": graphs},
        y=target.transform(y).astype(np.float32),
        kind="regression",
        removed="graph",
        metric="rmse",
        y_scale=float(target.std[0]),
        order=["desc", "graph"],
        tabular={"desc": len(desc_cols)},
        epochs=20,
    )


def load_breast_cancer() -> Problem:
    """Breast cancer: three feature groups of 10 columns; label 1 = malignant."""
    from sklearn.datasets import load_breast_cancer as sk_load

    x, target = sk_load(return_X_y=True)
    groups = {"mean": x[:, :10], "se": x[:, 10:20], "worst": x[:, 20:]}
    return Problem(
        name="breast_cancer",
        data={k: v.astype(np.float32) for k, v in groups.items()},
        y=(1 - target).astype(np.int64),  # sklearn codes benign as 1
        kind="binary",
        removed="worst",
        metric="auroc",
        y_scale=1.0,
        order=["mean", "se", "worst"],
        tabular={k: 10 for k in groups},
        epochs=20,
    )


LOADERS = {"esol": load_esol, "breast_cancer": load_breast_cancer}
# filled in the parent before the worker processes fork, so RDKit parses each SMILES once
PROBLEMS: dict[str, Problem] = {}


def dataset(problem: Problem) -> Any:
    """A MultiModalDataset over the problem: array sources for tables, a graph source for graphs."""
    from modfuse import MultiModalDataset
    from modfuse.data.readers.molecules import GraphSource
    from modfuse.data.sources import ArraySource

    ids = list(range(len(problem.y)))
    sources = {m: ArraySource(v, ids) if m in problem.tabular else GraphSource(v, ids) for m, v in problem.data.items()}
    return MultiModalDataset(sources, targets=problem.y, ids=ids)


def make_encoders(problem: Problem, train: np.ndarray) -> dict[str, Any]:
    """Small encoders; tabular columns are standardised with the training split's statistics."""
    from modfuse.data.readers.molecules import ATOM_FEATURES, BOND_FEATURES
    from modfuse.data.transforms import Standardizer
    from modfuse.encoders import build

    encoders: dict[str, Any] = {}
    for m in problem.data:
        if m in problem.tabular:
            cols = problem.data[m][train]
            encoders[m] = build(
                "tabular",
                num_features=problem.tabular[m],
                hidden=(32,),
                out_dim=32,
                **Standardizer.fit(cols).to_dict(),
            )
        else:
            encoders[m] = build(
                "graph", in_dim=ATOM_FEATURES, edge_dim=BOND_FEATURES, hidden=32, layers=3, out_dim=32, pool="add"
            )
    return encoders


def make_model(strategy: str, problem: Problem, encoders: dict[str, Any]) -> Any:
    from modfuse.fusion import build

    if strategy == "sequential":
        return build("sequential", encoders=encoders, tasks=problem.kind, state_dim=32, order=problem.order)
    if strategy == "sequential-shuffled":
        return build("sequential", encoders=encoders, tasks=problem.kind, state_dim=32, shuffle_order=True)
    if strategy == "attention":
        return build("attention", encoders=encoders, tasks=problem.kind, d_model=32, num_heads=4, num_layers=1)
    if strategy == "early":
        return build("early", encoders=encoders, tasks=problem.kind, hidden=64)
    return build(strategy, encoders=encoders, tasks=problem.kind)


def run(job: tuple[str, int, float, str, int]) -> list[dict[str, Any]]:
    """Train one strategy on one MNAR training pattern and test it on both test patterns."""
    name, seed, p, strategy, epochs = job
    import lightning as L
    import torch

    from modfuse import FusionTask, MultiModalDataModule
    from modfuse.data.splits import split_indices
    from modfuse.robust import mnar
    from modfuse.training.runner import build_trainer

    torch.set_num_threads(1)  # one process per core: intra-op threads only contend
    L.seed_everything(seed, verbose=False)
    problem = PROBLEMS[name]
    labels = problem.y if problem.kind == "binary" else None
    splits = split_indices(
        len(problem.y), "stratified" if labels is not None else "random", 0.1, 0.2, labels, seed=seed
    )
    dm = MultiModalDataModule(dataset(problem), splits=splits, batch_size=64)
    mech = mnar(p, modalities=[problem.removed], seed=seed)
    tests = {
        "train pattern": mech.apply(dm, parts=("train", "val", "test")),
        "flipped": mnar(p, modalities=[problem.removed], seed=seed + 1, flip=True).apply(
            mech.apply(dm, parts=("train", "val")), parts=("test",)
        ),
    }
    model = make_model(strategy, problem, make_encoders(problem, splits["train"]))
    task = FusionTask(model, lr=3e-3)
    trainer = build_trainer(epochs, accelerator="cpu", limit_val_batches=0, enable_progress_bar=False)
    start = time.perf_counter()
    trainer.fit(task, tests["train pattern"])
    seconds = time.perf_counter() - start
    rows = []
    for pattern, data in tests.items():
        result = trainer.test(task, data, verbose=False)[0]
        rows.append(
            {
                "dataset": name,
                "metric": problem.metric,
                "strategy": strategy,
                "p": p,
                "seed": seed,
                "test": pattern,
                "value": result[f"test/{problem.metric}"] * problem.y_scale,
                "train_seconds": seconds,
            }
        )
    return rows


def summarise(runs: pd.DataFrame) -> str:
    """Markdown: per data set, rows strategy x test pattern, columns p, cells mean ± std over seeds."""
    parts = []
    for (name, metric), frame in runs.groupby(["dataset", "metric"], sort=False):
        stats = frame.groupby(["strategy", "test", "p"])["value"].agg(["mean", "std"]).reset_index()
        stats["cell"] = [f"{m:.3f} ± {s:.3f}" for m, s in zip(stats["mean"], stats["std"].fillna(0.0))]
        table = stats.pivot(index=["strategy", "test"], columns="p", values="cell")
        order = [s for s in STRATEGIES if s in table.index.get_level_values(0)]
        table = table.reindex(order, level=0)
        better = "lower" if metric == "rmse" else "higher"
        header = f"### {name}: test {metric.upper()} ({better} is better), mean ± std over seeds\n\n"
        cols = [f"p={c:g}" for c in table.columns]
        lines = ["| strategy | test | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        for (strategy, pattern), row in table.iterrows():
            lines.append(f"| {strategy} | {pattern} | " + " | ".join(row.fillna("")) + " |")
        parts.append(header + "\n".join(lines))
    return "\n\n".join(parts)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--ps", nargs="+", type=float, default=list(PS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="override every data set's epochs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "mnar.csv")
    args = parser.parse_args(argv)
    if not SHARED.is_dir() and "esol" in args.datasets:
        raise SystemExit(f"real data folder {SHARED} is absent; run with --datasets breast_cancer")
    start = time.perf_counter()
    for name in args.datasets:
        PROBLEMS[name] = LOADERS[name]()
    jobs = [
        (name, seed, p, strategy, args.epochs or PROBLEMS[name].epochs)
        for name in args.datasets
        for seed in range(args.seeds)
        for p in args.ps
        for strategy in args.strategies
    ]
    print(f"{len(jobs)} training runs on {args.workers} worker(s); data loaded in {time.perf_counter() - start:.0f} s")
    # fork: the workers inherit the parsed data sets instead of re-parsing them
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.workers, mp_context=mp.get_context("fork"), initializer=_quiet) as pool:
        for k, result in enumerate(pool.map(run, jobs), start=1):
            rows += result
            first = result[0]
            print(
                f"[{k}/{len(jobs)}] {first['dataset']} {first['strategy']} p={first['p']:g} seed={first['seed']}: "
                + ", ".join(f"{r['test']} {r['value']:.3f}" for r in result),
                flush=True,
            )
            # written after every run, so an interrupted benchmark keeps what it measured
            pd.DataFrame(rows).to_csv(args.out, index=False)
    runs = pd.DataFrame(rows)
    table = summarise(runs)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\n{len(jobs)} runs in {time.perf_counter() - start:.0f} s; runs in {args.out}")
    return runs


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    main()
