"""What a merge costs, per subset of modalities: each block alone versus the merged model.

For every non-empty subset S of the merged model's modalities, the labelled rows that have every
modality of S are shown to the merged model with only S present, and to each block of S alone;
the task's main metric (AUROC, accuracy, RMSE, C-index) of each is reported. A site runs this on
its own validation rows before deploying a merge (``modfuse merge ... --validate DATA``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from modfuse.core.tasks import TaskSpec
from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError

if TYPE_CHECKING:
    from modfuse.lego.fuse import LegoFuse
    from modfuse.lego.merge import LegoMerge

__all__ = ["main_score", "subset_report"]


def main_score(spec: TaskSpec, logits: Tensor, target: Tensor) -> float:
    """The task's main metric (``spec.main_metric``) of logits (n, C) against targets; NaN when
    undefined (fewer than 2 rows, one class only)."""
    name, _ = spec.main_metric
    if logits.shape[0] < 2:
        return float("nan")
    try:
        metrics = spec.metrics()
        metrics.update(*spec.metric_inputs(logits, target))
        return float(metrics.compute()[name])
    except (ValueError, RuntimeError):
        return float("nan")


def _prediction(model: nn.Module, batch: ModalityBatch) -> Tensor:
    return next(iter(model(batch).logits.values()))


def _target(batch: ModalityBatch, task: str) -> Tensor:
    target = batch.target
    if isinstance(target, Mapping):
        target = target[task] if task in target else next(iter(target.values()))
    if target is None:
        raise ModfuseError("validation needs labelled rows; the data have no target")
    return target


@torch.no_grad()
def subset_report(
    merged: LegoMerge | LegoFuse, batches: Sequence[ModalityBatch] | Any, subsets: Sequence[Sequence[str]] | None = None
) -> pd.DataFrame:
    """Per subset of modalities: rows, the merged model's score, each block's score alone.

    Args:
        merged: a [`LegoMerge`][modfuse.lego.LegoMerge] (or any model with ``.blocks`` and
            ``.modalities``, e.g. a LegoFuse).
        batches: labelled validation batches (a DataLoader or a list of ModalityBatch).
        subsets: the subsets to report (default: every non-empty subset).

    Returns:
        one row per subset: ``subset``, ``rows``, ``metric``, ``merged``, ``best block``,
        ``best block score``, ``merged - best`` (positive is better for every metric: RMSE
        differences are sign-flipped), and one ``block <m>`` column per block.
    """
    merged.eval()
    blocks = {b.modality: b.eval() for b in merged.blocks}
    (task, spec), *_ = merged.tasks.items()
    mods = list(blocks)
    if subsets is None:
        subsets = [c for k in range(1, len(mods) + 1) for c in itertools.combinations(mods, k)]
    keep: dict[tuple[str, ...], dict[str, list[Tensor]]] = {tuple(s): {} for s in subsets}
    for batch in batches:
        batch = batch.to(next(merged.parameters()).device)
        target = _target(batch, task)
        for s, acc in keep.items():
            have = torch.ones(batch.batch_size, dtype=torch.bool, device=batch.device)
            for m in s:
                have &= batch.present[m] if m in batch.present else torch.zeros_like(have)
            if not have.any():
                continue
            sub = batch.select(have.nonzero()[:, 0]).with_modalities(s)
            acc.setdefault("target", []).append(target[have.to(target.device)].cpu())
            acc.setdefault("merged", []).append(_prediction(merged, sub).cpu())
            for m in s:
                acc.setdefault(m, []).append(_prediction(blocks[m], sub).cpu())
    name, mode = spec.main_metric
    sign = 1.0 if mode == "max" else -1.0
    rows = []
    for s, acc in keep.items():
        n = sum(len(t) for t in acc.get("target", []))
        row: dict[str, Any] = {"subset": "+".join(s), "rows": n, "metric": name}
        if n == 0:
            rows.append(row)
            continue
        target = torch.cat(acc["target"])
        row["merged"] = main_score(spec, torch.cat(acc["merged"]), target)
        scores = {m: main_score(spec, torch.cat(acc[m]), target) for m in s}
        best = max(scores, key=lambda m: -np.inf if np.isnan(scores[m]) else sign * scores[m])
        row["best block"], row["best block score"] = best, scores[best]
        row["merged - best"] = sign * (row["merged"] - scores[best])
        row.update({f"block {m}": v for m, v in scores.items()})
        rows.append(row)
    return pd.DataFrame(rows)
