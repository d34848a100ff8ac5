"""Block calibration: what a block knows about its own outputs, measured on its own validation rows.

A prediction-space merge (``poe``, ``precision``, ``hazard``; [`modfuse.lego.methods`][modfuse.lego.methods]) needs,
for each block, outputs that are calibrated probabilities (or a known predictive spread) and the
label prior the block was trained under. Both are measured at block-training time from the
block's own rows only: no other site's data is ever needed.

- classification (binary, multilabel): per-output Platt scaling ``z' = z / T + b``;
  multiclass: one temperature (no bias, so the block's decisions stay its own); fitted by
  minimising the log-loss of the validation rows (L-BFGS) against Platt's regularised
  targets (so a small, perfectly separated validation set gives a finite temperature).
- regression: the held-out residual variance per output (the predictive spread).
- survival: the block's mean per-interval hazard logit on its validation rows (its baseline).
- every kind: the label prior (class frequencies / label rates / mean and variance of the
  target) of the block's training and validation rows, and the block's validation score.

The result is a `Calibration` stored on ``block.calibration``; it is part of
``block.to_config()``, hence of the block's safetensors artefact and of its Lightning checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from modfuse.core.tasks import TaskSpec
from modfuse.errors import ModfuseError

if TYPE_CHECKING:
    from modfuse.data.datamodule import MultiModalDataModule
    from modfuse.data.dataset import MultiModalDataset
    from modfuse.lego.block import LegoBlock
    from modfuse.lego.workflow import Rows

__all__ = ["Calibration", "calibrate", "calibration_callback", "fit_calibration", "output_prior"]

PRIOR_EPS = 1e-4
"""Probabilities are clipped to [eps, 1 - eps] before taking log-odds of a prior."""


@dataclass
class Calibration:
    """A block's calibration statistics (all lists have one entry per output).

    Attributes:
        kind: the task kind the statistics are for.
        temperature: output scale divisor ``T`` (classification; 1.0 elsewhere).
        bias: offset added after scaling (classification; 0.0 elsewhere).
        prior: the label prior: class frequencies (multiclass), positive rates (binary,
            multilabel), target mean (regression), baseline hazard logits (survival).
        prior_var: regression: variance of the target; empty otherwise.
        spread: regression: held-out residual variance (predictive variance) per output.
        n_val: validation rows the statistics come from.
        n_prior: rows the label prior comes from.
        score: the block's main validation metric (after calibration), e.g. AUROC or RMSE.
        metric: the name of that metric.
        output_prior: classification: the block's mean calibrated probability per output on
            its validation rows (empty: use ``prior``). The product of experts divides by this
            prior, not by the label frequencies: a block's calibrated probabilities average to
            it, so the correction cancels exactly what the block adds. With a class that is
            (almost) absent from the block's rows, the label frequency is ~0 while the block
            still gives it ~1 %, and dividing by the label frequency inflated that class k - 1
            times over (eopatch: every pixel after adaptation went to the absent class).
    """

    kind: str
    temperature: list[float]
    bias: list[float]
    prior: list[float]
    prior_var: list[float]
    spread: list[float]
    n_val: int
    n_prior: int
    score: float | None = None
    metric: str | None = None
    output_prior: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``Calibration(**d)`` rebuilds it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        return cls(**dict(d))

    # ------------------------------------------------------------------ application
    def apply(self, logits: Tensor) -> Tensor:
        """Calibrated outputs (n, C) from raw block outputs (n, C).

        Classification: calibrated logits (log-probabilities up to a constant for multiclass);
        regression and survival: the outputs unchanged.
        """
        t = logits.new_tensor(self.temperature)
        b = logits.new_tensor(self.bias)
        return logits.float() / t + b

    def prior_logits(self, device: torch.device | None = None) -> Tensor:
        """(C,) the prior in the merge's output space: log-odds (binary, multilabel), log
        frequencies (multiclass), the target mean (regression), baseline logits (survival)."""
        classify = self.kind in ("binary", "multilabel", "multiclass")
        p = torch.tensor(self.output_prior if classify and self.output_prior else self.prior, device=device)
        p = p.float()
        if self.kind in ("binary", "multilabel"):
            p = p.clamp(PRIOR_EPS, 1 - PRIOR_EPS)
            return torch.log(p) - torch.log1p(-p)
        if self.kind == "multiclass":
            return torch.log(p.clamp_min(PRIOR_EPS))
        return p


def _platt(logits: Tensor, target: Tensor, per_output: bool, multiclass: bool) -> tuple[Tensor, Tensor]:
    """Fit ``z / T + b`` by L-BFGS on the log-loss; returns (T (C,), b (C,)). Multiclass fits
    the temperature only, so the block's own decisions (argmax) are unchanged by calibration."""
    c = logits.shape[1]
    log_t = torch.zeros(c if per_output else 1, requires_grad=True)
    bias = torch.zeros(c, requires_grad=not multiclass)
    opt = torch.optim.LBFGS(
        [log_t, bias] if not multiclass else [log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe"
    )

    soft = _platt_targets(target, c, multiclass)

    def loss_fn() -> Tensor:
        z = logits / log_t.exp() + bias
        if multiclass:
            loss = -(soft * z.log_softmax(-1)).sum(-1).mean()
        else:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, soft)
        # a weak pull to the identity keeps a tiny or separable validation set from exploding T
        return loss + 1e-3 * (log_t.pow(2).sum() + bias.pow(2).sum())

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    t = log_t.detach().exp().clamp(1e-2, 1e2).expand(c).clone()
    b = bias.detach().clone()
    if not (torch.isfinite(t).all() and torch.isfinite(b).all()):
        t, b = torch.ones(c), torch.zeros(c)
    return t, b


def _platt_targets(target: Tensor, c: int, multiclass: bool) -> Tensor:
    """Platt's regularised targets: positives ``(N+ + 1) / (N+ + 2)``, negatives ``1 / (N- + 2)``
    per output (multiclass: one-hot smoothed by ``C / (n + C)``). On a small validation set that
    the block separates perfectly, 0/1 targets drive the fitted temperature to 0 (infinitely
    confident outputs, which then dominate a product of experts); these targets keep it finite."""
    if multiclass:
        eps = c / (target.shape[0] + c)
        return torch.nn.functional.one_hot(target.long(), c).float() * (1 - eps) + eps / c
    pos = target.sum(0, keepdim=True)
    neg = target.shape[0] - pos
    return torch.where(target > 0.5, (pos + 1) / (pos + 2), 1 / (neg + 2))


def _prior(spec: TaskSpec, target: Tensor) -> tuple[list[float], list[float]]:
    """(prior, prior_var) of ``target`` (already checked by the spec)."""
    if spec.kind == "binary":
        return [float(target.float().mean())], []
    if spec.kind == "multiclass":
        counts = torch.bincount(target.long(), minlength=spec.num_outputs).float()
        # one pseudo-count per class keeps a class absent from the rows at a small probability
        return ((counts + 1) / (counts.sum() + spec.num_outputs)).tolist(), []
    if spec.kind == "multilabel":
        return target.float().mean(0).tolist(), []
    if spec.kind == "regression":
        t = target.float().reshape(target.shape[0], -1)
        return t.mean(0).tolist(), t.var(0, unbiased=True).clamp_min(1e-12).tolist()
    return [], []  # survival: the baseline comes from the block's outputs


def fit_calibration(spec: TaskSpec, logits: Tensor, target: Tensor, prior_target: Tensor | None = None) -> Calibration:
    """Calibration statistics from a block's validation outputs.

    Args:
        spec: the block's task.
        logits: (n_val, C) raw block outputs on its validation rows.
        target: the validation targets (shapes as in `TaskSpec`).
        prior_target: targets the label prior is measured on (default: ``target``).

    Raises:
        ModfuseError: with fewer than 2 validation rows.
    """
    n = logits.shape[0]
    if n < 2:
        raise ModfuseError(f"calibration needs at least 2 validation rows, found {n}")
    logits = logits.detach().float().cpu()
    target = spec.check_target(target.detach().cpu())
    c = spec.num_outputs
    ones, zeros = [1.0] * c, [0.0] * c
    prior, prior_var = _prior(spec, target if prior_target is None else spec.check_target(prior_target.cpu()))
    spread: list[float] = []
    temperature, bias = ones, zeros
    if spec.kind in ("binary", "multilabel", "multiclass"):
        tgt = target.float().reshape(n, c) if spec.kind != "multiclass" else target
        t, b = _platt(logits, tgt, per_output=spec.kind != "multiclass", multiclass=spec.kind == "multiclass")
        temperature, bias = t.tolist(), b.tolist()
    elif spec.kind == "regression":
        resid = target.reshape(n, -1) - logits.reshape(n, -1)
        spread = resid.pow(2).mean(0).clamp_min(1e-12).tolist()
    else:  # survival: the block's own baseline hazard logits
        prior = logits.mean(0).tolist()
    cal = Calibration(
        kind=spec.kind,
        temperature=[float(v) for v in temperature],
        bias=[float(v) for v in bias],
        prior=[float(v) for v in prior],
        prior_var=[float(v) for v in prior_var],
        spread=[float(v) for v in spread],
        n_val=n,
        n_prior=int(n if prior_target is None else prior_target.shape[0]),
    )
    cal.metric, cal.score = _score(spec, cal.apply(logits), target)
    cal.output_prior = output_prior(spec.kind, cal.apply(logits))
    return cal


def output_prior(kind: str, calibrated: Tensor) -> list[float]:
    """Mean calibrated probability per output (n, C) -> (C,) list; empty for regression and
    survival. Needs no labels: `modfuse.lego.adapt` re-measures it on unlabelled target rows."""
    if kind == "multiclass":
        return calibrated.float().softmax(-1).mean(0).tolist()
    if kind in ("binary", "multilabel"):
        return torch.sigmoid(calibrated.float()).mean(0).tolist()
    return []


def _score(spec: TaskSpec, logits: Tensor, target: Tensor) -> tuple[str, float | None]:
    name, _ = spec.main_metric
    try:
        metrics = spec.metrics()
        metrics.update(*spec.metric_inputs(logits, target))
        value = float(metrics.compute()[name])
    except (ValueError, RuntimeError):  # e.g. AUROC of a one-class validation set
        return name, None
    return name, value if math.isfinite(value) else None


@torch.no_grad()
def block_outputs(block: LegoBlock, loader: Any) -> tuple[Tensor, Tensor]:
    """(raw logits of the rows that have the block's modality, their targets) over a loader."""
    was = block.training
    block.eval()
    outs, tgts = [], []
    device = next(block.parameters()).device
    for batch in loader:
        batch = batch.to(device)
        index = batch.index(block.modality)
        if index.numel() == 0:
            continue
        logits = block(batch).prediction
        target = batch.target
        if isinstance(target, Mapping):
            target = target[next(iter(block.tasks))]
        outs.append(logits.index_select(0, index).cpu())
        tgts.append(target.index_select(0, index.to(target.device)).cpu())
    block.train(was)
    if not outs:
        return torch.zeros(0, 1), torch.zeros(0)
    return torch.cat(outs), torch.cat(tgts)


def calibrate(
    block: LegoBlock,
    data: MultiModalDataset | MultiModalDataModule,
    rows: Rows,
    prior_rows: Rows | None = None,
    batch_size: int = 256,
) -> Calibration:
    """Measure ``block``'s calibration on its validation ``rows`` and store it on the block.

    Args:
        block: a trained [`LegoBlock`][modfuse.lego.LegoBlock].
        data: the block's own [`MultiModalDataset`][modfuse.data.MultiModalDataset] (or datamodule).
        rows: the block's validation rows (rows without its modality are skipped).
        prior_rows: rows whose targets give the label prior (default: ``rows``), e.g. the
            block's training and validation rows together.

    Returns:
        the `Calibration`, also set as ``block.calibration``.
    """
    from torch.utils.data import DataLoader, Subset

    from modfuse.data.datamodule import MultiModalDataModule

    dataset = data.prepared()[0] if isinstance(data, MultiModalDataModule) else data
    loader = DataLoader(Subset(dataset, [int(r) for r in rows]), batch_size=batch_size, collate_fn=dataset.collate_fn)
    logits, target = block_outputs(block, loader)
    (_, spec), *_ = block.tasks.items()
    prior_target = None
    if prior_rows is not None and dataset.targets is not None:
        targets = dataset.targets
        if isinstance(targets, Mapping):
            targets = targets[next(iter(block.tasks))]
        has = dataset.present_matrix()[block.modality].to_numpy()
        keep = np.asarray([int(r) for r in prior_rows if has[int(r)]], dtype=int)
        prior_target = torch.as_tensor(np.asarray(targets)[keep])
        if spec.kind == "multiclass":
            prior_target = prior_target.long()
    cal = fit_calibration(spec, logits, target, prior_target)
    block.calibration = cal
    return cal


def calibration_callback() -> Any:
    """A Lightning callback that re-measures a LegoBlock's calibration after every validation
    epoch, so that every checkpoint saved after it carries the statistics of its own weights."""
    from lightning.pytorch.callbacks import Callback

    class CalibrateOnValidation(Callback):
        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.sanity_checking:
                return
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            model = pl_module.model
            logits, target = block_outputs(model, loader)
            if logits.shape[0] >= 2:
                (_, spec), *_ = model.tasks.items()
                model.calibration = fit_calibration(spec, logits, target)

    return CalibrateOnValidation()
