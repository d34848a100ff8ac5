"""Evaluate any fusion model on every subset of its modalities, and under simulated missingness."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchmetrics import Metric, MetricCollection

from modfuse.core.model import FusionModel, model_device, unwrap_model
from modfuse.core.tasks import TaskSpec, by_task
from modfuse.data.loaders import iter_batches  # re-exported: its documented home before it moved to data
from modfuse.errors import ModfuseError
from modfuse.utils.progress import progress

__all__ = [
    "MetricArg",
    "evaluate",
    "evaluate_subsets",
    "iter_batches",
    "modality_subsets",
    "subset_name",
    "sweep",
]

MetricArg = str | Sequence[str] | Metric | Mapping[str, Metric] | None
"""Which metrics to compute: None (every metric of the task's ``TaskSpec.metrics()``), metric
names from that collection (``"auroc"`` or ``["auroc", "accuracy"]``; ``"task/auroc"``
for one task of a multi-task model; a name applies to every task that has it), a torchmetrics
``Metric`` (fed ``TaskSpec.metric_inputs``), or a dict name -> Metric."""


# ---------------------------------------------------------------------- model and data access
def as_fusion(model: nn.Module) -> FusionModel:
    """``model`` seen through the fusion contract (`modalities`, `tasks`), for type checking:
    an nn.Module's attributes otherwise type as ``Tensor | Module``."""
    return cast(FusionModel, model)


# ---------------------------------------------------------------------- subsets
def subset_name(subset: Iterable[str]) -> str:
    """Label of a modality subset: names joined by ``+`` (``"(none)"`` for the empty set)."""
    names = list(subset)
    return "+".join(names) if names else "(none)"


def modality_subsets(
    modalities: Sequence[str], exact_max: int = 8, max_subsets: int = 64, seed: int = 0
) -> list[tuple[str, ...]]:
    """Non-empty subsets of ``modalities`` to evaluate, ordered by size then position.

    Args:
        modalities: the model's modalities (M of them).
        exact_max: up to this M, all 2^M - 1 subsets.
        max_subsets: above ``exact_max``: how many subsets in all; every singleton, every
            leave-one-out set and the full set are always included, the rest are drawn
            uniformly (seeded) from the other subsets.
        seed: random seed of the sampled subsets.
    """
    names = list(modalities)
    m = len(names)
    if m == 0:
        raise ModfuseError("the model has no modalities")
    if m <= exact_max:
        return [s for k in range(1, m + 1) for s in itertools.combinations(names, k)]
    fixed = {frozenset([x]) for x in names} | {frozenset(names) - {x} for x in names} | {frozenset(names)}
    chosen = set(fixed)
    rng = np.random.default_rng(seed)
    budget = min(max(max_subsets, len(fixed)), 2**m - 1)
    while len(chosen) < budget:
        bits = rng.random(m) < 0.5
        if bits.any():
            chosen.add(frozenset(np.asarray(names)[bits].tolist()))
    order = {x: i for i, x in enumerate(names)}
    as_tuples = [tuple(sorted(s, key=order.__getitem__)) for s in chosen]
    return sorted(as_tuples, key=lambda s: (len(s), [order[x] for x in s]))


# ---------------------------------------------------------------------- metrics
def _metric_collections(tasks: Mapping[str, TaskSpec], metric: MetricArg) -> dict[str, MetricCollection]:
    if isinstance(metric, Metric):
        return {name: MetricCollection({type(metric).__name__.lower(): metric.clone()}) for name in tasks}
    if isinstance(metric, Mapping):
        return {name: MetricCollection({k: m.clone() for k, m in metric.items()}) for name in tasks}
    if metric is None:
        return {name: spec.metrics() for name, spec in tasks.items()}
    wanted = [metric] if isinstance(metric, str) else list(metric)
    out, used = {}, set()
    for name, spec in tasks.items():
        full = spec.metrics()
        # "auroc" applies to every task that has it; "task/auroc" to that task only
        keep: dict[str, Metric | MetricCollection] = {}
        for w in wanted:
            task_part, _, metric_part = w.rpartition("/")
            if metric_part in full and task_part in ("", name):
                keep[metric_part] = full[metric_part]
                used.add(w)
        if keep:
            out[name] = MetricCollection(keep)
    unknown = [w for w in wanted if w not in used]
    if unknown:
        available = sorted(_column(n, str(k), len(tasks)) for n, s in tasks.items() for k in s.metrics().keys())
        raise ModfuseError(f"unknown metric(s) {unknown}; available: {available}")
    return out


def _column(task: str, metric: str, n_tasks: int) -> str:
    return metric if n_tasks == 1 else f"{task}/{metric}"


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def _evaluate(
    model: nn.Module, data: Any, subsets: Sequence[tuple[str, ...]], metric: MetricArg, batch_size: int
) -> pd.DataFrame:
    tasks, modalities = as_fusion(model).tasks, as_fusion(model).modalities
    device = model_device(model)
    metrics = {s: {k: c.to(device) for k, c in _metric_collections(tasks, metric).items()} for s in subsets}
    n = absent = 0
    observed = dict.fromkeys(subsets, 0)
    was_training = model.training
    model.eval()
    try:
        for batch in iter_batches(data, batch_size):
            if batch.target is None:
                raise ModfuseError("evaluation needs targets, but the batch has none")
            batch = batch.to(device)
            targets = by_task(batch.target, tasks)
            n += batch.batch_size
            absent += sum(
                int((~batch.present[m]).sum()) if m in batch.present else batch.batch_size for m in modalities
            )
            for s in subsets:
                logits = model(batch.with_modalities(s)).logits
                for k, coll in metrics[s].items():
                    coll.update(*tasks[k].metric_inputs(logits[k], targets[k]))
                has_any = torch.stack([batch.present[m] for m in s]).any(0)
                observed[s] += int(has_any.sum())
    finally:
        model.train(was_training)
    if n == 0:
        raise ModfuseError("the data yielded no samples to evaluate")
    rows = []
    for s in subsets:
        row: dict[str, Any] = {"subset": subset_name(s), "size": len(s)}
        for k, coll in metrics[s].items():
            for name, value in coll.compute().items():
                row[_column(k, name, len(tasks))] = float(value.float().mean())
        rows.append({**row, "n": n, "n_observed": observed[s]})
    frame = pd.DataFrame(rows)
    frame.attrs["missing_fraction"] = absent / (n * len(modalities))
    return frame


def evaluate_subsets(
    model: Any,
    data: Any,
    metric: MetricArg = None,
    subsets: Sequence[Sequence[str]] | None = None,
    exact_max: int = 8,
    max_subsets: int = 64,
    seed: int = 0,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Evaluate ``model`` with each subset of its modalities, each subset a real forward pass.

    For a subset S every modality outside S is marked absent for every sample
    (`ModalityBatch.with_modalities()`); modalities a sample lacks in the data stay absent.

    Args:
        model: any fusion model (or a FusionTask).
        data: a DataLoader of ModalityBatch, a MultiModalDataset, a datamodule (test split), or
            a ModalityBatch / list of them.
        metric: which metrics (see `MetricArg`); default all of the task's metrics.
        subsets: the subsets to evaluate (default `modality_subsets()`: all 2^M - 1
            non-empty subsets for M <= ``exact_max``, ``max_subsets`` sampled above).
        exact_max: see `modality_subsets()`.
        max_subsets: see `modality_subsets()`.
        seed: seed of the sampled subsets.
        batch_size: batch size when ``data`` is a dataset.

    Returns:
        One row per subset: ``subset`` (names joined by ``+``), ``size``, one column per metric
        (``task/metric`` for multi-task models), ``n`` (samples evaluated) and ``n_observed``
        (samples that had at least one modality of the subset).
    """
    model = unwrap_model(model)
    if subsets is None:
        chosen = modality_subsets(model.modalities, exact_max, max_subsets, seed)
    else:
        chosen = [tuple(s) for s in subsets]
        bad = [s for s in chosen if not s or not set(s) <= set(model.modalities)]
        if bad:
            raise ModfuseError(f"subsets must be non-empty and drawn from {model.modalities}, found {bad}")
    return _evaluate(model, data, chosen, metric, batch_size)


def evaluate(model: Any, data: Any, metric: MetricArg = None, batch_size: int = 64) -> dict[str, float]:
    """Metrics of ``model`` with all its modalities (as the data provides them).

    Returns:
        metric column -> value, as in `evaluate_subsets()`, plus ``n`` and
        ``missing_fraction`` (share of the model's (sample, modality) pairs absent in the data).
    """
    model = unwrap_model(model)
    frame = _evaluate(model, data, [tuple(model.modalities)], metric, batch_size)
    row = frame.iloc[0]
    scores = {k: v for k, v in row.items() if k not in ("subset", "size", "n_observed")}
    return {**scores, "missing_fraction": frame.attrs["missing_fraction"]}


def _with_missingness(data: Any, mechanism: Any) -> Any:
    """``data`` with a simulated missingness (the test split of a datamodule)."""
    from modfuse.data.dataset import MultiModalDataset

    if isinstance(data, MultiModalDataset):
        return mechanism.apply(data)
    if hasattr(data, "test_dataloader") and hasattr(data, "subset"):
        return mechanism.apply(data, parts=("test",))
    if isinstance(data, DataLoader):
        inner: Any = data.dataset
        rows: list[int] | None = None
        if isinstance(inner, Subset) and isinstance(inner.dataset, MultiModalDataset):
            rows = list(inner.indices)
            inner = inner.dataset
        if isinstance(inner, MultiModalDataset):
            simulated = mechanism.apply(inner)
            ds = simulated if rows is None else Subset(simulated, rows)
            return DataLoader(ds, batch_size=data.batch_size or 64, shuffle=False, collate_fn=simulated.collate_fn)
    raise ModfuseError(
        "simulated missingness needs a MultiModalDataset, a datamodule, or a DataLoader over one; "
        f"found {type(data).__name__}"
    )


def sweep(
    model: Any,
    data: Any,
    rates: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
    kind: str | Sequence[str] = "mcar",
    seeds: Sequence[int] = (0,),
    metric: MetricArg = None,
    batch_size: int = 64,
    verbose: bool | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Metric against missing rate under simulated missingness.

    Args:
        model: any fusion model (or a FusionTask).
        data: a MultiModalDataset, a datamodule (its test split is affected and evaluated), or a
            DataLoader over a MultiModalDataset (or a Subset of one).
        rates: removal probabilities ``p`` to try.
        kind: one or several of ``"mcar"``, ``"mar"``, ``"mnar"``, ``"mar-flip"``, ``"mnar-flip"``
            (see [`modfuse.robust.simulate`][modfuse.robust.simulate]).
        seeds: one simulation per seed and rate.
        metric: which metrics (see `MetricArg`).
        batch_size: batch size when ``data`` is a dataset.
        verbose: show a progress bar over the (kind, rate, seed) runs (None: in a terminal or
            notebook, not in CI; see `modfuse.utils.progress`).
        **options: passed to every simulator (e.g. ``modalities=["ecg"]``, ``driver="labs"``,
            ``keep_one=False``).

    Returns:
        One row per (kind, rate, seed): ``kind``, ``rate``, ``seed``, the metric columns, ``n``
        and ``missing_fraction`` (share of the model's (sample, modality) pairs absent in the
        evaluated data).
    """
    from modfuse.robust.simulate import simulate

    model = unwrap_model(model)
    kinds = [kind] if isinstance(kind, str) else list(kind)
    rows = []
    runs = list(itertools.product(kinds, rates, seeds))
    for k, rate, seed in progress(runs, "missingness sweep", verbose=verbose):
        simulated = _with_missingness(data, simulate(k, float(rate), seed=seed, **options))
        scores = evaluate(model, simulated, metric, batch_size)
        rows.append({"kind": k, "rate": float(rate), "seed": seed, **scores})
    return pd.DataFrame(rows)
