"""Attributions inside one modality with captum (IntegratedGradients, FeatureAblation).

The explained function maps one modality's input tensor to the model's prediction (the
same value as `modality_shapley()` explains: probability, estimate or risk) while every
other modality of each sample is held fixed at its observed value (and absent ones stay
absent). Only samples that have the modality are explained.

Typical layouts and their reductions:
    tabular (n, features)          -> per-feature attributions as they are;
    ECG / signals (n, leads, L)    -> `lead_importance()` (n, leads), `time_saliency()` (n, L);
    images (n, C, H, W)            -> `band_importance()` (n, C), `pixel_map()` (n, H, W).
``FeatureAblation`` with ``group_dim=1`` ablates whole leads or spectral bands at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from modfuse.core.model import FusionModel, model_device, unwrap_model
from modfuse.core.tasks import TaskSpec
from modfuse.data.batch import ModalityBatch, PaddedTensor
from modfuse.errors import ModfuseError
from modfuse.interpret.shapley import output_column, resolve_task
from modfuse.utils.optional import require

__all__ = [
    "Attribution",
    "attributed_values",
    "band_importance",
    "feature_attributions",
    "importance",
    "lead_importance",
    "pixel_map",
    "time_saliency",
]

Method = Literal["integrated_gradients", "feature_ablation"]


@dataclass
class Attribution:
    """Attributions of one modality's input.

    Attributes:
        values: same shape as ``inputs``: (n_present, ...).
        inputs: the explained input rows (n_present, ...) (``values`` of a padded input).
        ids: the n_present sample ids.
        modality: the modality explained.
        method: ``integrated_gradients`` or ``feature_ablation``.
        output: LongTensor (n_present,): the output column explained per sample.
        delta: IntegratedGradients convergence delta (n_present,), else None.
    """

    values: Tensor
    inputs: Tensor
    ids: list[Any]
    modality: str
    method: str
    output: Tensor
    delta: Tensor | None = None


def importance(values: Tensor, keep: int | Sequence[int]) -> Tensor:
    """|attribution| summed over every dimension except the sample axis and ``keep``.

    Args:
        values: (n, ...) attributions.
        keep: the dimension(s) (of ``values``, >= 1 or negative) to keep.

    Returns:
        (n, *[values.shape[k] for k in keep]).
    """
    keep = [keep] if isinstance(keep, int) else list(keep)
    keep = sorted(k % values.dim() for k in keep)
    if 0 in keep:
        raise ModfuseError("the sample axis (0) is always kept; pass feature dimensions >= 1")
    other = [d for d in range(1, values.dim()) if d not in keep]
    return values.abs().sum(dim=other) if other else values.abs()


def lead_importance(values: Tensor) -> Tensor:
    """(n, leads, L) signal attributions -> (n, leads): |attribution| summed over time."""
    _check_dims(values, 3, "(n, leads, L)")
    return importance(values, 1)


def time_saliency(values: Tensor) -> Tensor:
    """(n, leads, L) signal attributions -> (n, L): |attribution| summed over leads."""
    _check_dims(values, 3, "(n, leads, L)")
    return importance(values, 2)


def band_importance(values: Tensor, channel_dim: int = 1) -> Tensor:
    """(n, C, H, W) image attributions -> (n, C): |attribution| summed over pixels, per band."""
    return importance(values, channel_dim)


def pixel_map(values: Tensor, channel_dim: int = 1) -> Tensor:
    """(n, C, H, W) image attributions -> (n, H, W): |attribution| summed over bands."""
    _check_dims(values, 4, "(n, C, H, W)")
    return importance(values, [d for d in range(1, 4) if d != channel_dim % 4])


def _check_dims(values: Tensor, ndim: int, layout: str) -> None:
    if values.dim() != ndim:
        raise ModfuseError(f"expected attributions of shape {layout}, found {tuple(values.shape)}")


class _ModalityForward(nn.Module):
    """x (k * n, ...) -> prediction (k * n,) with x replacing ``modality`` in ``batch``.

    captum stacks k copies of the n explained rows (interpolation steps, perturbations);
    the other modalities are tiled to match, so every row keeps its own context.
    """

    def __init__(
        self, model: FusionModel, batch: ModalityBatch, modality: str, task: str, spec: TaskSpec, column: Tensor
    ) -> None:
        super().__init__()
        self.model, self.batch, self.modality = model, batch, modality
        self.task, self.spec, self.column = task, spec, column
        original = batch.inputs[modality]
        self.padded = original if isinstance(original, PaddedTensor) else None  # its mask and dim are reused
        self.keyed = isinstance(original, dict)  # {"x": values, "valid": ..., "t": ...}: x is attributed

    def forward(self, x: Tensor) -> Tensor:
        n = self.batch.batch_size
        reps = x.shape[0] // n
        batch = self.batch if reps == 1 else self.batch.select(torch.arange(n, device=x.device).repeat(reps))
        value: Any = x
        if self.padded is not None:
            value = PaddedTensor(x, self.padded.mask.repeat(reps, 1), self.padded.dim)
        if self.keyed:
            value = {**batch.inputs[self.modality], "x": x}
        batch = ModalityBatch({**batch.inputs, self.modality: value}, batch.present, batch.target, batch.ids)
        logits = self.model(batch).logits[self.task]
        out = self.spec.activate(logits)
        if out.dim() == 2:
            out = out.gather(1, self.column.repeat(reps)[:, None])[:, 0]
        return out


def _explained_rows(batch: ModalityBatch, modality: str, max_samples: int | None) -> ModalityBatch:
    if modality not in batch.present:
        raise ModfuseError(f"the batch has no modality {modality!r}; it has {batch.modalities}", modality=modality)
    index = batch.index(modality)
    if index.numel() == 0:
        raise ModfuseError("no sample of the batch has this modality; nothing to attribute", modality=modality)
    if max_samples is not None:
        index = index[:max_samples]
    rows = batch.select(index)
    x = attributed_values(rows.inputs[modality])
    if x is None:
        found = type(rows.inputs[modality]).__name__
        raise ModfuseError(
            f"attributions need a floating-point tensor input (or a dict with one under 'x'), found {found}",
            modality=modality,
        )
    return rows


def attributed_values(x: Any) -> Tensor | None:
    """The float tensor attributions are computed over: the input itself, a padded input's
    ``values``, or ``x["x"]`` of a dict input (time series ``{"x", "valid", "t"}``); else None."""
    if isinstance(x, dict):
        x = x.get("x")
    if isinstance(x, PaddedTensor):
        x = x.values
    return x if isinstance(x, Tensor) and x.is_floating_point() else None


def feature_attributions(
    model: Any,
    batch: ModalityBatch,
    modality: str,
    method: Method = "integrated_gradients",
    task: str | None = None,
    output: int | None = None,
    baselines: float | Tensor = 0.0,
    group_dim: int | None = None,
    n_steps: int = 32,
    max_samples: int | None = None,
) -> Attribution:
    """Attribute the prediction to the elements of one modality's input with captum.

    Args:
        model: any fusion model (or a FusionTask).
        batch: the samples; those without ``modality`` are skipped.
        modality: the modality whose input is attributed.
        method: ``"integrated_gradients"`` (captum ``IntegratedGradients``) or
            ``"feature_ablation"`` (captum ``FeatureAblation``: each element, or each group
            along ``group_dim``, is replaced by the baseline).
        task: the task (default: the first).
        output: the output column (default as in `modality_shapley()`: the class
            predicted with all modalities for multiclass).
        baselines: reference input: a scalar or a tensor broadcastable to one row
            (default 0, the mean of standardised inputs). NaN cells (partly missing tabular
            rows) give NaN attributions.
        group_dim: FeatureAblation only: ablate whole slices along this input dimension
            (1 = leads of (n, leads, L) or bands of (n, C, H, W)); as in captum, every
            element of a slice carries the whole slice's attribution.
        n_steps: IntegratedGradients interpolation steps.
        max_samples: explain at most this many of the samples that have the modality.

    Returns:
        An `Attribution` with ``values`` of the input's shape (n_present, ...).
    """
    attr_mod = require("captum.attr", extra="explain")
    model = unwrap_model(model)
    task, spec = resolve_task(model, task)
    rows = _explained_rows(batch.to(model_device(model)), modality, max_samples)
    x = attributed_values(rows.inputs[modality])
    assert x is not None  # checked by _explained_rows
    x = x.float()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = spec.activate(model(rows).logits[task])
        column = output_column(spec, full, output)
        forward = _ModalityForward(model, rows, modality, task, spec, column)
        values, delta = _run_captum(attr_mod, forward, x, method, baselines, group_dim, n_steps)
    finally:
        model.train(was_training)
    return Attribution(values.detach(), x.detach(), list(rows.ids), modality, method, column, delta)


def _run_captum(
    attr_mod: Any,
    forward: nn.Module,
    x: Tensor,
    method: str,
    baselines: float | Tensor,
    group_dim: int | None,
    n_steps: int,
) -> tuple[Tensor, Tensor | None]:
    if isinstance(baselines, Tensor):
        baselines = baselines.to(x.device, x.dtype).expand_as(x)
    if method == "integrated_gradients":
        if group_dim is not None:
            raise ModfuseError("group_dim applies to feature_ablation; integrated gradients attribute every element")
        ig = attr_mod.IntegratedGradients(forward)
        values, delta = ig.attribute(x, baselines=baselines, n_steps=n_steps, return_convergence_delta=True)
        return values, delta.detach()
    if method == "feature_ablation":
        mask = None if group_dim is None else _group_mask(x, group_dim)
        values = attr_mod.FeatureAblation(forward).attribute(x, baselines=baselines, feature_mask=mask)
        return values, None
    raise ModfuseError(f"unknown attribution method {method!r}; expected 'integrated_gradients' or 'feature_ablation'")


def _group_mask(x: Tensor, dim: int) -> Tensor:
    """LongTensor (1, ...) broadcastable to ``x``: the index along ``dim`` is the group id."""
    dim = dim % x.dim()
    if dim == 0:
        raise ModfuseError("group_dim must be a feature dimension (>= 1), not the sample axis")
    shape = [1] * x.dim()
    shape[dim] = x.shape[dim]
    ids = torch.arange(x.shape[dim], device=x.device).reshape(shape)
    return ids.expand(1, *x.shape[1:]).contiguous()
