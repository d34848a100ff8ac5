"""Lego merge quality: training-free merge vs its best block vs jointly trained fusion, per subset,
label-free adaptation, LegoFuse, and merge wall time.

Run: ``python -m benchmarks.lego_quality [--quick] [--only digits breast digits-6views ...] [--seeds 0 1]``
(also ``python -m benchmarks.run --only lego_quality``). Data sets:

- ``esol``: ESOL graph + descriptor table, log-solubility regression (RMSE, original units);
- ``breast``: sklearn breast cancer, three feature groups (mean / standard error / worst), each
  block trained at one of two "sites" holding disjoint halves of the training rows (AUROC);
- ``eopatch``: eo-learn Slovenia patch, NDVI series + terrain per pixel, land cover (macro-F1),
  a random subsample of pixels of a spatial-block split;
- ``cohort``: the synthetic clinical cohort (X-ray DICOM, ECG WFDB, labs; missing modalities), AUROC;
- ``digits``: sklearn ``load_digits`` cut into four 4x4 quadrants (accuracy).

Per data set and seed: each block alone, the default merge (``merge(blocks)``, i.e. the
prediction-space product of experts of calibrated blocks), the latent ``harmonic`` merge, the
jointly trained early and late fusion (same encoders, same epochs), ``adapt`` (agreement and
entropy, on the training rows with their labels never read), ``LegoFuse`` (``fit_fuse`` on the
trained blocks), and the per-subset check (``subset_report`` on the test rows: the merge versus
each block alone on every non-empty subset of modalities). Plus LegoFuse on 6 digits views
(4 quadrants + row and column profiles) and the wall time of merging 8 blocks.
All choices (epochs, learning rates) are fixed in :class:`Settings` or picked on validation rows.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from benchmarks import common

DATASETS = ("esol", "breast", "eopatch", "cohort", "digits")
TOL = 1e-6
ADAPTS = ("adapt (agreement)", "adapt (entropy)", "adapt (calibration)")


@dataclass
class Settings:
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 15
    fuse_epochs: int = 6
    adapt_epochs: int = 3
    adapt_lr: float = 1e-4
    lr: float = 3e-3
    batch_size: int = 64
    latent: tuple[int, int] = (8, 32)
    hidden: int = 32
    eopatch_pixels: tuple[int, int, int] = (4000, 1000, 3000)  # train, val, test pixels
    datasets: tuple[str, ...] = DATASETS
    fuse6: bool = True
    joint: tuple[str, ...] = ("early", "late")
    seeds_of: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per data set, overrides seeds


QUICK = Settings(seeds=(0,), epochs=6, fuse_epochs=2, adapt_epochs=1, eopatch_pixels=(1500, 500, 1500))


@dataclass
class Problem:
    """One data set, one seed: what the blocks and the joint models train on."""

    name: str
    dataset: Any
    spec: Any
    encoders: dict[str, Callable[[], nn.Module]]
    splits: dict[str, np.ndarray]
    metric: str
    block_rows: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    y_scale: float = 1.0  # regression: RMSE reported in the original units


# ---------------------------------------------------------------------------- data sets
def _random_splits(n: int, seed: int, val: float = 0.15, test: float = 0.2, y: np.ndarray | None = None) -> dict:
    from modfuse.data.splits import split_indices

    kind = "stratified" if y is not None else "random"
    kw = {"labels": y} if y is not None else {}
    return {k: np.asarray(v) for k, v in split_indices(n, kind, val, test, seed=seed, **kw).items()}


def _tabular(d: int, hidden: int, x: np.ndarray) -> Callable[[], nn.Module]:
    from modfuse.data.transforms import Standardizer
    from modfuse.encoders import build

    stats = Standardizer.fit(x).to_dict()
    return lambda: build("tabular", num_features=d, hidden=(hidden,), out_dim=hidden, dropout=0.0, **stats)


def digits_views(which: str = "quadrants") -> tuple[dict[str, np.ndarray], np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    img = d.images.astype("float32") / 16.0
    views = {
        "top_left": img[:, :4, :4],
        "top_right": img[:, :4, 4:],
        "bottom_left": img[:, 4:, :4],
        "bottom_right": img[:, 4:, 4:],
    }
    views = {k: v.reshape(len(img), -1) for k, v in views.items()}
    if which == "six":
        views["rows"] = img.sum(2)
        views["cols"] = img.sum(1)
    return views, d.target


def digits(seed: int, s: Settings, which: str = "quadrants") -> Problem:
    from modfuse import MultiModalDataset
    from modfuse.core.tasks import TaskSpec

    X, y = digits_views(which)
    splits = _random_splits(len(y), seed, y=y)
    enc = {m: _tabular(x.shape[1], s.hidden, x[splits["train"]]) for m, x in X.items()}
    name = "digits" if which == "quadrants" else "digits-6views"
    return Problem(name, MultiModalDataset.from_arrays(X, y), TaskSpec("multiclass", 10), enc, splits, "accuracy")


def breast(seed: int, s: Settings) -> Problem:
    from sklearn.datasets import load_breast_cancer

    from modfuse import MultiModalDataset
    from modfuse.core.tasks import TaskSpec

    d = load_breast_cancer()
    x, y = d.data.astype("float32"), d.target
    X = {"mean": x[:, :10], "error": x[:, 10:20], "worst": x[:, 20:30]}
    splits = _random_splits(len(y), seed, y=y)
    rng = np.random.default_rng([seed, 7])
    # two sites: disjoint halves of the training and validation rows; block i lives at site i % 2
    sites = (rng.permutation(splits["train"]), rng.permutation(splits["val"]))
    halves = [(sites[0][i::2], sites[1][i::2]) for i in range(2)]
    rows = {m: halves[i % 2] for i, m in enumerate(X)}
    enc = {m: _tabular(10, s.hidden, v[splits["train"]]) for m, v in X.items()}
    return Problem("breast", MultiModalDataset.from_arrays(X, y), TaskSpec("binary"), enc, splits, "auroc", rows)


def esol(seed: int, s: Settings) -> Problem:
    from benchmarks import esol as esol_bench
    from modfuse.core.tasks import TaskSpec
    from modfuse.data.transforms import Standardizer

    graphs, table, y, smiles, _ = esol_bench.load()
    splits = esol_bench.splits_for(smiles, len(y), "random", seed)
    target = Standardizer.fit(y, rows=splits["train"])
    sd = float(target.std[0])
    ds = esol_bench.esol_dataset(graphs, table, target.transform(y).astype("float32"))
    graph_factory, _ = esol_bench.graph_encoder_factory(replace(esol_bench.Settings(), hidden=2 * s.hidden))
    enc = {"graph": graph_factory, "table": _tabular(table.shape[1], 2 * s.hidden, table[splits["train"]])}
    return Problem("esol", ds, TaskSpec("regression"), enc, splits, "rmse", y_scale=sd)


def eopatch(seed: int, s: Settings) -> Problem:
    from benchmarks import remote_sensing as rs
    from modfuse import MultiModalDataset
    from modfuse.core.tasks import TaskSpec

    data = rs.load()
    parts, _ = rs.block_split(data, 20, seed)
    rng = np.random.default_rng(seed)
    pick = {k: rng.permutation(np.asarray(parts[k]))[:n] for k, n in zip(("train", "val", "test"), s.eopatch_pixels)}
    idx = np.concatenate([pick["train"], pick["val"], pick["test"]])
    cuts = np.cumsum([len(pick["train"]), len(pick["val"])])
    splits = {"train": np.arange(cuts[0]), "val": np.arange(cuts[0], cuts[1]), "test": np.arange(cuts[1], len(idx))}
    X = {"ndvi": data["ndvi"][idx], "elevation": data["elevation"][idx]}
    y = data["label"][idx]
    factories, _ = rs.encoder_factories(
        {**data, "ndvi": X["ndvi"], "elevation": X["elevation"]}, splits["train"], s.hidden
    )
    ds = MultiModalDataset.from_arrays(X, y)
    return Problem("eopatch", ds, TaskSpec("multiclass", len(data["classes"])), factories, splits, "f1")


def cohort(seed: int, s: Settings) -> Problem:
    from modfuse.core.tasks import TaskSpec
    from modfuse.datasets.synthetic import SyntheticCohortDataModule
    from modfuse.encoders import build

    dm = SyntheticCohortDataModule(n=600, seed=seed)
    dm.setup()
    h = s.hidden
    enc = {
        "xray": lambda: build("xray", arch="small", out_dim=h),
        "ecg": lambda: build("ecg", widths=[16, 32], blocks=1, groups=4, out_dim=h, dropout=0.0),
        "labs": lambda: build("tabular", num_features=5, categorical={4: 2}, hidden=(h,), out_dim=h, dropout=0.0),
    }
    splits = {k: np.asarray(v) for k, v in dm.splits.items()}
    return Problem("cohort", dm.dataset, TaskSpec("binary"), enc, splits, "auroc")


LOADERS = {"esol": esol, "breast": breast, "eopatch": eopatch, "cohort": cohort, "digits": digits}


# ---------------------------------------------------------------------------- evaluation
def score(p: Problem, model: nn.Module, part: str = "test") -> float:
    """The data set's metric of ``model`` on every ``part`` row (absent blocks give priors)."""
    loader = DataLoader(Subset(p.dataset, p.splits[part].tolist()), batch_size=256, collate_fn=p.dataset.collate_fn)
    outs, tgts = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            outs.append(model(batch).prediction.float())
            tgts.append(batch.target)
    logits, target = torch.cat(outs), torch.cat(tgts)
    metrics = p.spec.metrics()
    metrics.update(*p.spec.metric_inputs(logits, target))
    value = float(metrics.compute()[p.metric])
    return value * p.y_scale if p.metric == "rmse" else value


def subset_check(p: Problem, merged: nn.Module, rows: np.ndarray | None = None) -> tuple[int, int, float]:
    """(subsets where the merge is worse than its best block, subsets, worst merged - best) on
    ``rows`` (default: the test rows)."""
    from modfuse.lego import subset_report

    rows = p.splits["test"] if rows is None else rows
    loader = DataLoader(Subset(p.dataset, rows.tolist()), batch_size=256, collate_fn=p.dataset.collate_fn)
    rep = subset_report(merged, list(loader))
    rep = rep[rep["rows"] > 0]
    delta = rep["merged - best"].to_numpy(dtype=float)
    # 1e-6: a block's calibration (z / T + b) moves its outputs by float rounding, which moves
    # an AUROC by ~6e-8 without changing any decision
    return int((delta < -1e-6).sum()), len(rep), float(delta.min())


def rule_check(p: Problem, blocks: list, metric: str | None, seed: int) -> dict[str, tuple[int, int, float]]:
    """The subset-choice rules compared on validation rows only: choose on one half of the val
    rows, count the subsets worse than their best block on the other half, both ways. The
    blocks are re-calibrated on the choosing half (their own validation rows in it), so their
    own validation scores, which the rules read, never see the counting half."""
    from modfuse.lego import merge

    val = p.splits["val"]
    perm = np.random.default_rng(seed).permutation(len(val))
    halves = [np.sort(val[perm[::2]]), np.sort(val[perm[1::2]])]
    on_half = [calibrated_on(p, blocks, h) for h in halves]
    out = {}
    for rule in ("clear", "hedge", "metric"):
        bad = total = 0
        worst = 0.0
        for a, b in ((0, 1), (1, 0)):
            loader = DataLoader(Subset(p.dataset, halves[a].tolist()), batch_size=256, collate_fn=p.dataset.collate_fn)
            chosen = merge(on_half[a], validation=loader, metric=metric, rule=rule)
            k, n, w = subset_check(p, chosen, halves[b])
            bad, total, worst = bad + k, total + n, min(worst, w)
        out[rule] = (bad, total, worst)
    return out


def calibrated_on(p: Problem, blocks: list, rows: np.ndarray) -> list:
    """Copies of the blocks calibrated on their own validation rows within ``rows`` (the label
    prior kept from the blocks' own training and validation rows)."""
    from modfuse.lego.calibration import calibrate

    out = []
    for block in blocks:
        copy_ = copy.deepcopy(block)
        own = p.block_rows.get(block.modality, (None, p.splits["val"]))[1]
        cal = calibrate(copy_, p.dataset, np.intersect1d(own, rows))
        src = block.calibration
        copy_.calibration = replace(cal, prior=src.prior, prior_var=src.prior_var, n_prior=src.n_prior)
        out.append(copy_)
    return out


def run_problem(p: Problem, s: Settings, seed: int, log: Callable[[str], None]) -> list[dict]:
    from modfuse.fusion import build as build_fusion
    from modfuse.lego import LegoBlock, adapt, merge
    from modfuse.lego.workflow import fit_block, fit_fuse, fit_model

    common.seed_all(seed)
    train = {"lr": s.lr, "batch_size": s.batch_size, "seed": seed}
    rows: list[dict] = []

    def add(model: str, value: float, seconds: float, **extra: Any) -> None:
        rows.append(
            {
                "data": p.name,
                "seed": seed,
                "model": model,
                "metric": p.metric,
                "value": value,
                "seconds": round(seconds, 1),
                **extra,
            }
        )

    blocks = []
    for m, factory in p.encoders.items():
        t = time.perf_counter()
        block = LegoBlock(factory(), m, task=p.spec, latent_shape=s.latent, depth=1, heads=4)
        tr, va = p.block_rows.get(m, (p.splits["train"], p.splits["val"]))
        fit_block(block, p.dataset, s.epochs, rows=tr, val_rows=va, **train)
        blocks.append(block)
        add(f"block {m}", score(p, block), time.perf_counter() - t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        plain = merge(blocks)
        merge_s = time.perf_counter() - t
        bad, total, worst = subset_check(p, plain)
        add(
            f"merge ({plain.resolved_method}, no validation)",
            score(p, plain),
            merge_s,
            subsets_worse=bad,
            subsets=total,
            worst_subset_delta=worst,
        )
        # the deployed merge: per-subset weights chosen on the labelled validation rows only
        t = time.perf_counter()
        merged = merge(blocks, validation=_loader(p, "val"), metric=None if p.metric == "rmse" else p.metric)
        bad, total, worst = subset_check(p, merged)
        add(
            f"merge ({merged.resolved_method}, validated)",
            score(p, merged),
            time.perf_counter() - t,
            val=score(p, merged, "val"),
            subsets_worse=bad,
            subsets=total,
            worst_subset_delta=worst,
            chosen="; ".join(f"{c['subset']}: {c['chosen']}" for c in merged.selection),
        )
        # the choice rule, judged on validation rows only (halves), never on the test rows (not on
        # the 6 digits views: 57 subsets, ~5 min more, and the merge's gain there is large)
        for rule, (k, n, w) in (
            rule_check(p, blocks, None if p.metric == "rmse" else p.metric, seed).items() if len(blocks) <= 4 else ()
        ):
            add(f"rule check: {rule} (val halves)", float("nan"), 0.0, subsets_worse=k, subsets=n, worst_subset_delta=w)
        latent = merge(blocks, method="harmonic")
        bad_l, _, worst_l = subset_check(p, latent)
        add(
            "merge (harmonic, latent)",
            score(p, latent),
            0.0,
            subsets_worse=bad_l,
            subsets=total,
            worst_subset_delta=worst_l,
        )
        for how in ("agreement", "entropy", "calibration"):
            if how == "calibration" and p.spec.kind == "regression":
                continue  # re-calibration adapts classification blocks only
            t = time.perf_counter()
            adapted = adapt(
                merged,
                p.dataset,
                method=how,
                epochs=s.adapt_epochs,
                lr=s.adapt_lr,
                rows=p.splits["train"],
                seed=seed,
                batch_size=s.batch_size,
            )
            kept = [m for m, c in adapted.adaptation.get("check", {}).items() if c["kept"]]
            add(
                f"adapt ({how})",
                score(p, adapted),
                time.perf_counter() - t,
                val=score(p, adapted, "val"),
                used=adapted.adaptation["used"],
                kept=", ".join(kept) or "none",
            )
    log(f"{p.name} seed {seed}: blocks, merges, adapt done")
    t = time.perf_counter()
    metric = None if p.metric == "rmse" else p.metric
    fused = fit_fuse(blocks, _datamodule(p), 0, fuse_epochs=s.fuse_epochs, metric=metric, **train)
    add(
        "lego-fuse",
        score(p, fused),
        time.perf_counter() - t,
        chain=" > ".join(b.modality for b in fused.blocks),
        selection=str({k: round(v, 4) for k, v in fused.selection["validation"].items()}),
    )
    for name in s.joint:
        t = time.perf_counter()
        common.seed_all(seed)
        model = build_fusion(name, encoders={m: f() for m, f in p.encoders.items()}, tasks=p.spec)
        fit_model(model, p.dataset, s.epochs, rows=p.splits["train"], val_rows=[], **train)
        add(f"joint {name}", score(p, model), time.perf_counter() - t)
    log(f"{p.name} seed {seed}: fuse and joint done")
    return rows


def _loader(p: Problem, part: str) -> DataLoader:
    rows = p.splits[part].tolist()
    return DataLoader(Subset(p.dataset, rows), batch_size=256, collate_fn=p.dataset.collate_fn)


def _datamodule(p: Problem) -> Any:
    from modfuse.data.datamodule import MultiModalDataModule

    return MultiModalDataModule(p.dataset, splits={k: v.tolist() for k, v in p.splits.items()}, batch_size=64)


def merge_time(n_blocks: int = 8, repeats: int = 5) -> dict[str, float]:
    from modfuse.data.batch import ModalityBatch
    from modfuse.lego import Calibration, LegoBlock, merge, save

    blocks = []
    for i in range(n_blocks):
        b = LegoBlock(
            {"name": "tabular", "num_features": 16, "hidden": [32], "out_dim": 32},
            f"m{i}",
            task="multiclass",
            num_outputs=10,
            latent_shape=(8, 32),
            depth=1,
            heads=4,
        )
        b.calibration = Calibration("multiclass", [1.0] * 10, [0.0] * 10, [0.1] * 10, [], [], 100, 100)
        blocks.append(b)
    x = {f"m{i}": torch.randn(64, 16) for i in range(n_blocks)}
    batch = ModalityBatch(x, {m: torch.ones(64, dtype=torch.bool) for m in x}, ids=list(range(64)))
    out: dict[str, list[float]] = {"merge s": [], "merge + forward(64) s": [], "merge + save s": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t = time.perf_counter()
            merged = merge(blocks)
            out["merge s"].append(time.perf_counter() - t)
            with torch.no_grad():
                merged.eval()(batch)
            out["merge + forward(64) s"].append(time.perf_counter() - t)
            t2 = time.perf_counter()
            save(merged, Path(tmp) / "m.safetensors")
            out["merge + save s"].append(out["merge s"][-1] + time.perf_counter() - t2)
    return {k: float(np.median(v)) for k, v in out.items()}


# ---------------------------------------------------------------------------- tables
def summary(raw: pd.DataFrame) -> pd.DataFrame:
    """Per data set: mean ± sd over seeds of every model, and the targets' verdicts."""
    out = []
    for data, frame in raw.groupby("data", sort=False):
        for model, g in frame.groupby("model", sort=False):
            value = common.mean_sd(g["value"]) if g["value"].notna().any() else ""  # rule checks: counts only
            row = {"data": data, "metric": g["metric"].iloc[0], "model": model, "value": value}
            if "val" in g and g["val"].notna().any():
                row["val rows"] = f"{g['val'].mean():.4f}"
            if "subsets_worse" in g and g["subsets_worse"].notna().any():
                row["subsets worse than best block"] = f"{int(g['subsets_worse'].sum())} / {int(g['subsets'].sum())}"
                row["worst subset delta"] = f"{g['worst_subset_delta'].min():.4f}"
            out.append(row)
    return pd.DataFrame(out)


def verdicts(raw: pd.DataFrame) -> pd.DataFrame:
    """The issue's targets per data set, from the per-seed means."""
    out = []
    for data, frame in raw.groupby("data", sort=False):
        lower = frame["metric"].iloc[0] == "rmse"
        mean = frame.groupby("model")["value"].mean()
        # TOL: a merge that returns one block's calibrated output (z / T + b) differs from the
        # block alone by float rounding only (as in subset_check)
        better = (lambda a, b: a <= b + TOL) if lower else (lambda a, b: a >= b - TOL)
        improves = (lambda a, b: a < b - TOL) if lower else (lambda a, b: a > b + TOL)
        blocks = mean[[m for m in mean.index if m.startswith("block ")]]
        best_block = blocks.min() if lower else blocks.max()
        merges = [m for m in mean.index if m.startswith("merge (") and "validated" in m]
        plain = [m for m in mean.index if m.startswith("merge (") and "no validation" in m]
        joint = mean[[m for m in mean.index if m.startswith("joint ")]]
        best_joint = (joint.min() if lower else joint.max()) if len(joint) else float("nan")
        row = {"data": data, "best block": round(best_block, 4), "best joint": round(best_joint, 4)}
        if plain:
            row["merge, no validation"] = round(mean[plain[0]], 4)
            row["no-validation merge >= best block"] = bool(better(mean[plain[0]], best_block))
        if merges:
            mv = mean[merges[0]]
            row["merge (validated)"] = round(mv, 4)
            row["merge >= best block"] = bool(better(mv, best_block))
            worse = frame[frame["model"] == merges[0]]["subsets_worse"].sum()
            row["subsets worse than their best block"] = int(worse)
            row["seeds merge >= best block"] = _seeds_at_least(frame, merges[0], better)
            rel = abs(mv - best_joint) / abs(best_joint) if not better(mv, best_joint) else 0.0
            row["merge within 10% of best joint"] = f"{rel:.1%} {'yes' if rel <= 0.10 else 'NO'}"
            adapts = [m for m in ADAPTS if m in mean.index]
            row[f"adapt improves ({' / '.join(a[7:-1] for a in adapts)})"] = " / ".join(
                "yes" if improves(mean[a], mv) else "no" for a in adapts
            )
            if "val" in frame:
                vmean = frame.groupby("model")["val"].mean()
                row["adapt improves on val rows"] = " / ".join(
                    "yes" if improves(vmean.get(a, np.nan), vmean[merges[0]]) else "no" for a in adapts
                )
            if "lego-fuse" in mean:
                fv = mean["lego-fuse"]
                row["fuse"] = round(fv, 4)
                row["fuse >= merge and best block"] = bool(better(fv, mv) and better(fv, best_block))
        out.append(row)
    return pd.DataFrame(out)


def _seeds_at_least(frame: pd.DataFrame, model: str, better: Callable[[float, float], bool]) -> str:
    """``k / n``: seeds on which ``model`` is at least as good as that seed's best block."""
    hits, n = 0, 0
    for _, g in frame.groupby("seed"):
        vals = g.set_index("model")["value"]
        blocks = vals[[m for m in vals.index if m.startswith("block ")]]
        if model not in vals or not len(blocks):
            continue
        best = blocks.min() if g["metric"].iloc[0] == "rmse" else blocks.max()
        hits, n = hits + bool(better(vals[model], best)), n + 1
    return f"{hits} / {n}"


def run(s: Settings, command: str, log: Callable[[str], None] = print, out_dir: Path = common.RESULTS) -> pd.DataFrame:
    rows: list[dict] = []
    # seed-major: an interrupted run still covers every data set
    names = [*(d for d in s.datasets if d != "digits-6views"), *(["digits-6views"] if s.fuse6 else [])]
    seeds = sorted({*s.seeds, *(v for vs in s.seeds_of.values() for v in vs)})
    todo = [(d, seed) for seed in seeds for d in names if seed in s.seeds_of.get(d, s.seeds)]
    for data, seed in todo:
        t = time.perf_counter()
        if data == "digits-6views":
            p = digits(seed, s, "six")
        else:
            folder = {"esol": "esol", "eopatch": "eopatch-slovenia"}.get(data)
            if folder and not (common.DATA / folder).is_dir():
                log(f"{data}: skipped, {common.DATA / folder} is absent")
                continue
            p = LOADERS[data](seed, s)
        rows += run_problem(p, s, seed, log)
        log(f"{data} seed {seed}: {time.perf_counter() - t:.0f} s")
        _write(pd.DataFrame(rows), s, command, out_dir, None)
    timing = merge_time()
    log(f"merge time 8 blocks: {timing}")
    raw = pd.DataFrame(rows)
    _write(raw, s, command, out_dir, timing)
    return raw


def _write(raw: pd.DataFrame, s: Settings, command: str, out_dir: Path, timing: dict | None) -> None:
    tables = {
        "Targets (means over seeds)": verdicts(raw),
        "Every model (mean ± sd over seeds; RMSE lower is better, others higher)": summary(raw),
    }
    if timing:
        tables["Merge wall time, 8 calibrated blocks (target < 1 s)"] = pd.DataFrame(
            [{k: f"{v * 1e3:.1f} ms" for k, v in timing.items()}]
        )
    notes = [
        f"settings: {s}",
        "blocks: each trained alone on its own rows (breast: its site's half) with fit_block, calibrated on its "
        "own validation rows; 'merge (..., no validation)' = merge(blocks) (default method: poe for "
        "classification, precision for regression); 'merge (..., validated)' = merge(blocks, validation=val "
        "rows, metric=the data set's metric): per subset of modalities, the best on the validation rows of each "
        "block alone, the product of experts and cross-validated expert weights (modfuse.lego.selection), a "
        "combination only when its per-row loss gain over the block exceeds its standard error, another block "
        "only beyond 2 standard errors (rule 'clear'; 'rule check: R (val halves)' = subsets worse than their "
        "best block on one half of the val rows when chosen on the other with rule R, both ways, the blocks "
        "re-calibrated on the choosing half: 'hedge' starts from the product of experts where the blocks' own "
        "scores are within noise, 'metric' is the former rule, metric gain alone); "
        "adapt starts from the validated merge and uses the training rows with labels never read (20% of the paired "
        "rows held out for its label-free check; 'kept' in the CSV: the blocks whose adapted copy passed it; "
        "'calibration' trains no weight, only an affine re-calibration per block by the agreement likelihood; "
        "'val rows': the same model scored on the validation rows); "
        "lego-fuse = fit_fuse on the trained blocks (order by validation score, base = the validated merge, "
        "modality dropout 0.3, lr and epoch on validation with the data set's metric, the start kept unless beaten); joint early / late: same encoders and epochs, trained on all training rows, last epoch.",
        "subsets: every non-empty subset of modalities on the test rows having them (subset_report); a "
        "subset counts as worse when the merge's metric is below that of the best block of the subset alone.",
    ]
    seeds = "; ".join(
        f"{d}: {', '.join(map(str, sorted(g['seed'].unique())))}" for d, g in raw.groupby("data", sort=False)
    )
    common.write_results(
        "lego_quality", "Lego merge quality", tables, raw, command=command, seeds=seeds, notes=notes, out_dir=out_dir
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=[*DATASETS, "digits-6views"], default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=None)
    parser.add_argument("--no-fuse6", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--seeds-of", nargs="+", default=[], metavar="DATA=S,S", help="per data set seeds, e.g. eopatch=0 breast=0,1,2"
    )
    parser.add_argument(
        "--tables-from", nargs="+", type=Path, default=None, metavar="CSV", help="rebuild the tables from raw CSVs"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else Settings()
    if args.only:
        # with --only, the 6 digits views run only when named ("--only digits-6views")
        s = replace(s, datasets=tuple(args.only), fuse6=s.fuse6 and "digits-6views" in args.only)
    if args.seeds:
        s = replace(s, seeds=tuple(args.seeds))
    if args.no_fuse6:
        s = replace(s, fuse6=False)
    if args.seeds_of:
        per = {k: tuple(int(v) for v in vals.split(",")) for k, _, vals in (a.partition("=") for a in args.seeds_of)}
        s = replace(s, seeds_of=per)
    command = "python -m benchmarks.lego_quality " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    common.quiet()
    start = time.perf_counter()
    out = args.out or (common.RESULTS / "quick" if args.quick else common.RESULTS)
    log = lambda m: print(f"[{time.perf_counter() - start:6.0f}s] {m}", flush=True)  # noqa: E731
    if args.tables_from:
        raw = pd.concat([pd.read_csv(p) for p in args.tables_from], ignore_index=True)
        timing = merge_time()
        log(f"merge time 8 blocks: {timing}")
        _write(raw, s, command.strip(), out, timing)
        return 0
    run(s, command.strip(), log, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
