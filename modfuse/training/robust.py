"""Missingness-aware training: modality dropout, unimodal auxiliary losses, gradient modulation.

A jointly trained fusion model learns to lean on its easiest modality (the "modality
competition" of AGM and CRMT): its other encoders, and its fusion head on inputs without the
preferred modality, are never made to stand alone, so predictions collapse when that modality
is absent. `RobustTraining` is what [`FusionTask`][modfuse.training.task.FusionTask] runs in
each training step to counter it (never at validation, test or prediction):

- ``modality_dropout``: per-sample modality dropout (`ModalityDropout`, a sample never
  loses its last modality) before the forward pass; ``dropout_rows`` is the fraction of the
  samples of a batch eligible for it (the others stay complete).
- ``full_weight``: the share of the main loss computed on the complete (undropped) batch:
  ``(1 - full_weight) * loss(dropped batch) + full_weight * loss(batch)``, so the fused model
  keeps being trained on the inputs it sees most at test time.
- ``unimodal_weight``: an auxiliary loss per modality m, the task's own loss of the fused model
  run with only m on the samples that have m (for late fusion: each modality's head trained
  alone; for early / attention fusion: the fused head and encoder m trained to predict from m).
- ``balance``: gradient modulation of the encoders after the backward pass: ``"ogm-ge"``
  (the dominant modality's encoder gradients scaled down by ``1 - tanh(alpha * (ratio - 1))``
  where ``ratio`` is its unimodal confidence over the others', plus Gaussian noise of the
  gradient's own spread) or ``"agm"`` (every encoder's gradients scaled by
  ``exp(-alpha * (c_m - mean c))`` where ``c_m`` is a running mean of the modality's marginal
  contribution to the fused loss, loss without m minus loss with everything).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from modfuse.core.model import FusionModel
from modfuse.core.tasks import TaskSpec, by_task
from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError
from modfuse.training.dropout import ModalityDropout

__all__ = [
    "AUTO_DROPOUT",
    "AUTO_DROPOUT_ROWS",
    "AUTO_FULL_WEIGHT",
    "AUTO_UNIMODAL_WEIGHT",
    "Balance",
    "RobustTraining",
    "auto_dropout",
    "auto_full_weight",
]

Balance = Literal["ogm-ge", "agm"]
BALANCES = ("ogm-ge", "agm")

AUTO_DROPOUT = 0.3
"""Per-modality dropout rate of ``modality_dropout="auto"`` (for two or more modalities).

Chosen on validation splits of breast cancer and digits quadrants (``python -m
benchmarks.missing --select``, ``benchmarks/results/missing_selection.md``): with the unimodal
losses, rates 0.15 / 0.3 / 0.5 gave mean validation accuracies over all modality subsets of
92.6 / 93.0 / 92.7 % (no missingness-aware training: 88.3 %)."""

AUTO_UNIMODAL_WEIGHT = 0.5
"""Weight of the unimodal auxiliary losses of ``unimodal_weight="auto"`` (same selection as
AUTO_DROPOUT: dropout 0.3 alone 90.9 %, with weight 0.5 93.0 %, with weight 1.0 93.0 %; the
gradient modulations OGM-GE / AGM on top gave 92.5 / 92.0 %, so ``balance`` stays off)."""


AUTO_FULL_WEIGHT = 0.5
"""Share of the main loss on the complete batch of ``full_weight="auto"`` (with dropout on):
half of it on the dropped batch, half on the complete one (late fusion: 0, see
`auto_full_weight`).

With dropout in every step the fused model's main loss rarely sees a complete input, which
cost complete-data accuracy. Chosen on validation splits only (``python -m benchmarks.missing
--select``, ``benchmarks/results/missing_selection.md``: the linear problem of the small-cohort
tests drawn with seeds 101 / 102, 1000 validation rows each; 20 % of training fold 0 of breast
cancer and digits; early and late fusion): mean over those 8 (data set, split, strategy) pairs,
complete-data accuracy none / dropout 0.3 + unimodal 0.5 (the previous default) / the same +
full_weight 0.5: 90.36 / 90.16 / 90.41 %; mean over modality subsets 78.20 / 83.34 / 83.31 %
(early fusion gains most: breast cancer complete 96.7 -> 98.9 %; late fusion on the linear
problem is not helped: 82.95 / 82.10 / 81.40 %, its cost there comes from the unimodal loss:
dropout alone 83.35 %). Dropout on half of the rows instead (``dropout_rows=0.5``, 6 pairs:
digits not run) gave 87.58 / 81.29 % against full_weight 0.5's 87.92 / 81.44 % on those pairs.
The price: one more forward and backward pass per training step. Per strategy, the term helped
early fusion on every pair (complete data better or tied in 4 of 4) and not late fusion (worse
in 3 of 4, tied in 1), so late fusion keeps 0: with it, the 8 pairs give 90.64 % complete and
83.49 % over subsets. Attention and sequential fusion, validated afterwards the same way on 7
pairs each (linear seeds 101 / 102, breast-cancer folds 0-2, digits folds 0-1), keep 0.5:
complete data with full_weight 0 / 0.5 attention 93.67 / 94.03 %, sequential 94.11 / 93.98 %
(a tie: 2 better, 2 tied, 3 worse by one validation sample each), over subsets 87.57 / 87.83
and 88.03 / 87.87 %. lego-fuse's chain fine-tuning takes 0.5 too, with no measured effect (its
fine-tuned chain was never kept on those splits); lego-merge's single-modality blocks never
drop anything."""

AUTO_DROPOUT_ROWS = 1.0
"""Fraction of the samples eligible for modality dropout of ``dropout_rows="auto"`` (every
sample: dropout on half of the rows lost to ``full_weight``, see `AUTO_FULL_WEIGHT`)."""


def auto_full_weight(model: nn.Module) -> float:
    """The ``"auto"`` full_weight: the model's own ``robust_full_weight`` where its strategy
    declares one (late fusion: 0, whose complete prediction is built from its per-modality
    heads; on validation the term cost it), else `AUTO_FULL_WEIGHT` (validated for early,
    attention and sequential fusion)."""
    return float(getattr(model, "robust_full_weight", AUTO_FULL_WEIGHT))


def auto_dropout(n_modalities: int) -> float:
    """The ``"auto"`` dropout rate: 0 for a single modality (nothing to drop), else AUTO_DROPOUT."""
    return 0.0 if n_modalities < 2 else AUTO_DROPOUT


def _auto_number(value: float | str | None, auto: float, name: str, default: float) -> float:
    if value == "auto":
        return auto
    if isinstance(value, str):
        raise ModfuseError(f"{name} must be a number, 'auto' or None, found {value!r}")
    return default if value is None else float(value)


def _check_balance(balance: str | None) -> str | None:
    if balance is not None and balance not in BALANCES:
        raise ModfuseError(f"balance must be one of {list(BALANCES)} or None, found {balance!r}")
    return balance


class RobustTraining:
    """The missingness-aware parts of a training step (see the module docstring).

    Args:
        model: the fusion model (``modalities``, ``tasks``; ``encoders`` for ``balance``).
        modality_dropout: a rate, modality -> rate, ``"auto"`` (`auto_dropout()`) or None.
        unimodal_weight: weight of the unimodal auxiliary losses (0 or None: off; ``"auto"``:
            `AUTO_UNIMODAL_WEIGHT` for two or more modalities).
        balance: ``"ogm-ge"``, ``"agm"`` or None.
        balance_alpha: strength of the modulation.
        seed: seed of the dropout's random generator.
        full_weight: share in [0, 1] of the main loss computed on the complete batch (the rest
            on the dropped one); ``"auto"``: `auto_full_weight()`. Only used with dropout.
        dropout_rows: fraction in (0, 1] of each batch's samples eligible for dropout;
            ``"auto"``: `AUTO_DROPOUT_ROWS`.
    """

    def __init__(
        self,
        model: nn.Module,
        modality_dropout: float | Mapping[str, float] | str | None = None,
        unimodal_weight: float | str | None = None,
        balance: str | None = None,
        balance_alpha: float = 0.5,
        seed: int = 0,
        full_weight: float | str | None = "auto",
        dropout_rows: float | str | None = "auto",
    ) -> None:
        self.modalities = list(getattr(model, "modalities", []))
        self.tasks: dict[str, TaskSpec] = cast(FusionModel, model).tasks
        many = len(self.modalities) > 1
        if modality_dropout == "auto":
            modality_dropout = auto_dropout(len(self.modalities))
        elif isinstance(modality_dropout, str):
            raise ModfuseError(f"modality_dropout must be a rate, a dict, 'auto' or None, found {modality_dropout!r}")
        rows = _auto_number(dropout_rows, AUTO_DROPOUT_ROWS, "dropout_rows", default=1.0)
        self.dropout = ModalityDropout(modality_dropout, seed=seed, rows=rows) if modality_dropout and many else None
        full = _auto_number(full_weight, auto_full_weight(model), "full_weight", default=0.0)
        if not 0.0 <= full <= 1.0:
            raise ModfuseError(f"full_weight must be in [0, 1], found {full}")
        # without dropout the complete batch is the training batch: nothing to add
        self.full_weight = full if self.dropout is not None else 0.0
        weight = _auto_number(unimodal_weight, AUTO_UNIMODAL_WEIGHT, "unimodal_weight", default=0.0)
        self.unimodal_weight = weight if many else 0.0
        self.balance = _check_balance(balance) if many else None
        self.alpha = float(balance_alpha)
        if self.balance and not isinstance(getattr(model, "encoders", None), (Mapping, nn.ModuleDict)):
            raise ModfuseError(
                f"balance={balance!r} needs a model with per-modality `encoders`, found {type(model).__name__}"
            )
        self.coefficients: dict[str, float] = {}
        self._contribution: dict[str, float] = {}

    @property
    def active(self) -> bool:
        """Whether anything differs from plain training."""
        return bool(self.dropout is not None or self.unimodal_weight or self.balance)

    # ------------------------------------------------------------------ pieces of a step
    def drop(self, batch: ModalityBatch) -> ModalityBatch:
        """The batch after modality dropout (the batch itself when dropout is off)."""
        return batch if self.dropout is None else self.dropout(batch)

    def subset_losses(self, model: nn.Module, batch: ModalityBatch, keep: list[str], rows: Tensor) -> Tensor:
        """Task loss of ``model`` run with modalities ``keep`` only, on the samples ``rows`` (B,) bool."""
        logits = model(batch.with_modalities(keep)).logits
        targets = by_task(batch.target, self.tasks)
        ids = [i for i, r in zip(batch.ids, rows.tolist()) if r]
        terms = [spec.weight * spec.loss(logits[k][rows], targets[k][rows], ids) for k, spec in self.tasks.items()]
        return torch.stack(terms).sum()

    def unimodal_losses(self, model: nn.Module, batch: ModalityBatch, grad: bool) -> dict[str, Tensor]:
        """modality -> the task loss of the model with only that modality, on the samples that have it."""
        out = {}
        with torch.set_grad_enabled(grad):
            for m in self.modalities:
                rows = batch.present.get(m)
                if rows is not None and bool(rows.any()):
                    out[m] = self.subset_losses(model, batch, [m], rows)
        return out

    def _update_balance(self, model: nn.Module, batch: ModalityBatch, unimodal: Mapping[str, Tensor]) -> None:
        if self.balance == "ogm-ge":
            if len(unimodal) < 2:
                self.coefficients = {}
                return
            # confidence of each modality alone: exp(-loss), the geometric mean of p(true label)
            score = {m: math.exp(-float(v.detach())) for m, v in unimodal.items()}
            coeff = {}
            for m, s in score.items():
                others = [score[o] for o in score if o != m]
                ratio = s / max(sum(others) / len(others), 1e-8)
                coeff[m] = 1.0 - math.tanh(self.alpha * max(ratio - 1.0, 0.0))
            self.coefficients = coeff
            return
        # agm: marginal contribution of m (loss without m minus loss with all), running mean
        with torch.no_grad():
            for m in self.modalities:
                rows = batch.present.get(m)
                if rows is None or not bool(rows.any()):
                    continue
                rest = [o for o in self.modalities if o != m]
                without = float(self.subset_losses(model, batch, rest, rows))
                with_all = float(self.subset_losses(model, batch, self.modalities, rows))
                c = without - with_all
                self._contribution[m] = 0.9 * self._contribution.get(m, c) + 0.1 * c
        if not self._contribution:
            return
        mean = sum(self._contribution.values()) / len(self._contribution)
        self.coefficients = {
            m: math.exp(-self.alpha * max(min(c - mean, 5.0), -5.0)) for m, c in self._contribution.items()
        }

    def step(self, task: Any, batch: ModalityBatch) -> Tensor:
        """One training step of ``task`` (a FusionTask) on ``batch``: the loss to back-propagate.

        Logs ``train/unimodal_loss`` (the mean over modalities of their auxiliary losses),
        with ``full_weight``, ``train/full_loss`` (the loss on the complete batch) and, with
        ``balance``, ``train/balance/<modality>`` (the gradient coefficients).
        """
        loss = task._shared_step(self.drop(batch), "train")
        # per-step values reach the loggers only on logging steps: log them only then (as train/loss)
        log_now = task._log_train_step_now()
        if self.full_weight > 0:
            full = task.compute_loss(task(batch), batch)
            if log_now:
                task.log("train/full_loss", full.detach(), batch_size=batch.batch_size)
            loss = (1.0 - self.full_weight) * loss + self.full_weight * full
        want_unimodal = self.unimodal_weight > 0 or self.balance == "ogm-ge"
        unimodal = self.unimodal_losses(task.model, batch, grad=self.unimodal_weight > 0) if want_unimodal else {}
        if self.unimodal_weight > 0 and unimodal:
            aux = torch.stack(list(unimodal.values())).mean()
            if log_now:
                task.log("train/unimodal_loss", aux.detach(), batch_size=batch.batch_size)
            loss = loss + self.unimodal_weight * aux
        if self.balance:
            self._update_balance(task.model, batch, unimodal)
            for m, c in self.coefficients.items():
                task.log(f"train/balance/{m}", c, batch_size=batch.batch_size)
        return loss

    @torch.no_grad()
    def modulate(self, model: nn.Module) -> None:
        """Scale each encoder's gradients by its coefficient (after backward, before the step).

        OGM-GE adds Gaussian noise with the gradient's own standard deviation to a damped
        encoder's gradients (its "generalisation enhancement"), which keeps the damped encoder
        exploring instead of only slowing down.
        """
        if not self.balance:
            return
        encoders = cast(Mapping[str, nn.Module], model.encoders)
        for m, c in self.coefficients.items():
            for p in encoders[m].parameters():
                if p.grad is None:
                    continue
                spread = float(p.grad.std()) if p.grad.numel() > 1 else 0.0
                p.grad.mul_(c)
                if self.balance == "ogm-ge" and c < 1.0 and spread > 0:
                    p.grad.add_(torch.randn_like(p.grad) * spread)
