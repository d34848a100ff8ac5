"""Modality Shapley values: each coalition of modalities is a real forward pass, no zero-filling.

For a sample x and a set S of modalities, v(S) is the model's prediction (probability,
estimate or risk, via `TaskSpec.activate()`) when only the modalities in S are present.
v(empty) is the model's prior prediction (every fusion model defines it). The Shapley value of
modality i is

    phi_i = sum over S not containing i of |S|! (M-|S|-1)! / M! * (v(S + i) - v(S)),

so per sample sum_i phi_i = v(all) - v(empty) (efficiency). A modality the sample does not
have in the data gets phi = 0. For M <= ``exact_max`` all 2^M coalitions are evaluated; above,
a seeded Monte Carlo estimate over antithetic pairs of random permutations is returned with
its standard error (it still satisfies efficiency exactly: each permutation telescopes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from modfuse.core.model import FusionModel, model_device, unwrap_model
from modfuse.core.tasks import TaskSpec
from modfuse.data.batch import ModalityBatch
from modfuse.data.loaders import iter_batches
from modfuse.errors import ModfuseError
from modfuse.utils.progress import progress

__all__ = ["ShapleyResult", "modality_shapley", "output_column", "resolve_task"]


@dataclass
class ShapleyResult:
    """Per-sample modality Shapley values.

    Attributes:
        values: DataFrame (samples x modalities) of Shapley values, indexed by sample id.
        base: Series (samples,): f(empty), the prediction with no modality.
        full: Series (samples,): f(all), the prediction with every modality the sample has.
        stderr: Monte Carlo standard errors (same layout as ``values``), None when exact.
        output: Series (samples,): the output column explained (class index for multiclass
            and multilabel, column for multi-output regression, 0 otherwise).
        method: ``"exact"`` or ``"permutation"``.
        task: the task explained.
        kind: the task kind (``binary``: probability; ``multiclass``: probability of the
            ``output`` class; ``regression``: estimate; ``survival``: risk).
    """

    values: pd.DataFrame
    base: pd.Series
    full: pd.Series
    stderr: pd.DataFrame | None
    output: pd.Series
    method: str
    task: str
    kind: str

    @property
    def modalities(self) -> list[str]:
        return list(self.values.columns)

    def to_frame(self) -> pd.DataFrame:
        """One row per sample: the Shapley value of each modality, ``base``, ``full``,
        ``output`` and, for Monte Carlo estimates, ``se:<modality>`` columns."""
        frame = self.values.copy()
        frame["base"] = self.base
        frame["full"] = self.full
        frame["output"] = self.output
        if self.stderr is not None:
            frame = frame.join(self.stderr.add_prefix("se:"))
        return frame

    def ranking(self) -> pd.DataFrame:
        """Per sample, the modalities ordered by |Shapley value| (column 0 = most important)."""
        order = np.argsort(-self.values.abs().to_numpy(), axis=1, kind="stable")
        names = np.asarray(self.modalities)[order]
        return pd.DataFrame(names, index=self.values.index)

    def mean_abs(self) -> pd.Series:
        """Cohort importance: mean |Shapley value| per modality, largest first."""
        return self.values.abs().mean().sort_values(ascending=False)


def resolve_task(model: FusionModel, task: str | None) -> tuple[str, TaskSpec]:
    """The task name and spec to explain (default: the model's first task)."""
    tasks = model.tasks
    if task is None:
        return next(iter(tasks.items()))
    if task not in tasks:
        raise ModfuseError(f"unknown task {task!r}; the model has tasks {sorted(tasks)}")
    return task, tasks[task]


def output_column(spec: TaskSpec, full: Tensor, output: int | None) -> Tensor:
    """LongTensor (B,): the output column to explain for each sample.

    Args:
        spec: the task.
        full: activated predictions with all modalities, (B,) or (B, K).
        output: a fixed column, or None: the class predicted with all modalities
            (multiclass, multilabel), column 0 for single-output tasks; multi-output
            regression needs an explicit column.
    """
    b = full.shape[0]
    if full.dim() == 1:
        if output not in (None, 0):
            raise ModfuseError(f"task kind {spec.kind!r} has a single output; found output={output}")
        return torch.zeros(b, dtype=torch.long, device=full.device)
    if output is not None:
        if not 0 <= output < full.shape[1]:
            raise ModfuseError(f"output={output} is outside 0..{full.shape[1] - 1}")
        return torch.full((b,), output, dtype=torch.long, device=full.device)
    if spec.kind in ("multiclass", "multilabel"):
        return full.argmax(1)
    raise ModfuseError(f"a {spec.kind} task with {full.shape[1]} outputs needs output=<column> to explain")


def _value_fn(model: FusionModel, batch: ModalityBatch, task: str, spec: TaskSpec) -> Callable[[Sequence[str]], Tensor]:
    """v(S): activated prediction (B,) or (B, K) with only the modalities in S present."""

    def value(subset: Sequence[str]) -> Tensor:
        logits = model(batch.with_modalities(subset)).logits[task]
        return spec.activate(logits).double()

    return value


def _shapley_weights(m: int) -> np.ndarray:
    """w[s] = s! (m-s-1)! / m! for coalition sizes s = 0..m-1."""
    return np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)])


def _exact(value: Callable[[Sequence[str]], Tensor], names: list[str], b: int, device: Any) -> Tensor:
    m = len(names)
    v = [value([names[j] for j in range(m) if mask >> j & 1]) for mask in range(2**m)]
    w = _shapley_weights(m)
    phi = torch.zeros(b, m, dtype=torch.float64, device=device)
    for j in range(m):
        for mask in range(2**m):
            if not mask >> j & 1:
                phi[:, j] += w[mask.bit_count()] * (v[mask | 1 << j] - v[mask])
    return phi


def _permutation(
    value: Callable[[Sequence[str]], Tensor], names: list[str], b: int, device: Any, n_permutations: int, seed: int
) -> tuple[Tensor, Tensor]:
    m = len(names)
    cache: dict[int, Tensor] = {}

    def cached(mask: int) -> Tensor:
        if mask not in cache:
            cache[mask] = value([names[j] for j in range(m) if mask >> j & 1])
        return cache[mask]

    rng = np.random.default_rng(seed)
    n_pairs = max(1, (n_permutations + 1) // 2)
    pair_means = torch.zeros(n_pairs, b, m, dtype=torch.float64, device=device)
    for k in range(n_pairs):
        perm = rng.permutation(m)
        # antithetic pair: a permutation and its reverse (lower variance, same expectation)
        for order in (perm, perm[::-1]):
            mask = 0
            for j in order:
                new = mask | 1 << int(j)
                pair_means[k, :, j] += 0.5 * (cached(new) - cached(mask))
                mask = new
    phi = pair_means.mean(0)
    se = pair_means.std(0, unbiased=True) / math.sqrt(n_pairs) if n_pairs > 1 else torch.full_like(phi, math.nan)
    return phi, se


@torch.no_grad()
def _batch_shapley(
    model: FusionModel,
    batch: ModalityBatch,
    task: str,
    spec: TaskSpec,
    output: int | None,
    exact_max: int,
    n_permutations: int,
    seed: int,
) -> dict[str, Any]:
    names = list(model.modalities)
    batch = batch.to(model_device(model))
    value = _value_fn(model, batch, task, spec)
    full = value(names)
    column = output_column(spec, full, output)

    def pick(v: Tensor) -> Tensor:
        return v if v.dim() == 1 else v.gather(1, column[:, None])[:, 0]

    def scalar_value(subset: Sequence[str]) -> Tensor:
        return pick(value(subset))

    b = batch.batch_size
    if len(names) <= exact_max:
        phi, se = _exact(scalar_value, names, b, batch.device), None
    else:
        phi, se = _permutation(scalar_value, names, b, batch.device, n_permutations, seed)
    return {
        "ids": list(batch.ids),
        "phi": phi.cpu().numpy(),
        "se": None if se is None else se.cpu().numpy(),
        "base": scalar_value([]).cpu().numpy(),
        "full": pick(full).cpu().numpy(),
        "output": column.cpu().numpy(),
    }


def modality_shapley(
    model: Any,
    data: Any,
    task: str | None = None,
    output: int | None = None,
    exact_max: int = 8,
    n_permutations: int = 64,
    seed: int = 0,
    max_samples: int | None = None,
    batch_size: int = 64,
    verbose: bool | None = None,
) -> ShapleyResult:
    """Shapley value of each modality for each sample (see the module docstring).

    Args:
        model: any fusion model (or a FusionTask); it must predict from any subset, including
            the empty one.
        data: a ModalityBatch, or anything [`modfuse.data.loaders.iter_batches()`][modfuse.data.loaders.iter_batches]
            accepts (DataLoader, MultiModalDataset, datamodule: its test split).
        task: the task to explain (default: the first).
        output: the output column to explain; default: the class predicted with all
            modalities (multiclass/multilabel), the only column otherwise.
        exact_max: exact computation up to this many modalities (2^M forward passes per
            batch); Monte Carlo permutation sampling above.
        n_permutations: Monte Carlo only: permutations (taken in antithetic pairs; each costs
            at most M forward passes per batch).
        seed: Monte Carlo seed (the same permutations are used for every batch, so a sample's
            values do not depend on how the data is batched).
        max_samples: stop after this many samples (None: all).
        batch_size: batch size when ``data`` is a dataset.
        verbose: show a progress bar over the batches (None: in a terminal or notebook, not
            in CI; see `modfuse.utils.progress`).

    Returns:
        A `ShapleyResult` (``.values``: DataFrame samples x modalities).
    """
    model = unwrap_model(model)
    task, spec = resolve_task(model, task)
    if n_permutations < 2:
        raise ModfuseError(f"n_permutations must be >= 2, found {n_permutations}")
    parts = []
    seen = 0
    was_training = model.training
    model.eval()
    try:
        for batch in progress(iter_batches(data, batch_size), "Shapley values", _n_batches(data), verbose):
            if max_samples is not None and seen + batch.batch_size > max_samples:
                batch = batch.select(list(range(max_samples - seen)))
            parts.append(_batch_shapley(model, batch, task, spec, output, exact_max, n_permutations, seed))
            seen += batch.batch_size
            if max_samples is not None and seen >= max_samples:
                break
    finally:
        model.train(was_training)
    if not parts:
        raise ModfuseError("the data yielded no samples to explain")
    return _assemble(parts, list(model.modalities), task, spec, exact_max)


def _n_batches(data: Any) -> int | None:
    """Number of batches when ``data`` knows it (a DataLoader), for the progress bar."""
    try:
        return len(data) if isinstance(data, torch.utils.data.DataLoader) else None
    except TypeError:  # an iterable-style dataset without a length
        return None


def _assemble(
    parts: list[dict[str, Any]], names: list[str], task: str, spec: TaskSpec, exact_max: int
) -> ShapleyResult:
    index = pd.Index([i for p in parts for i in p["ids"]], name="id")

    def frame(key: str) -> pd.DataFrame:
        return pd.DataFrame(np.concatenate([p[key] for p in parts]), index=index, columns=names)

    def series(key: str, name: str) -> pd.Series:
        return pd.Series(np.concatenate([p[key] for p in parts]), index=index, name=name)

    exact = len(names) <= exact_max
    return ShapleyResult(
        values=frame("phi"),
        base=series("base", "base"),
        full=series("full", "full"),
        stderr=None if exact else frame("se"),
        output=series("output", "output"),
        method="exact" if exact else "permutation",
        task=task,
        kind=spec.kind,
    )
