"""Late fusion: every modality predicts on its own; the present modalities' logits are combined:
their plain mean or the calibrated mean of `SubsetCalibration` (chosen per task kind by default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from modfuse.core.model import ModelOutput, PresentLogits
from modfuse.core.tasks import TASK_KINDS, TaskSpec, as_task_specs, by_task
from modfuse.data.batch import ModalityBatch, encode_present
from modfuse.encoders.base import EncoderDict
from modfuse.errors import ModfuseError
from modfuse.fusion.base import register
from modfuse.fusion.early import check_encoders
from modfuse.fusion.heads import FeatureStandardizer, RowStandardizer, TaskHeads, has_linear_path, pool_tokens

__all__ = [
    "COMBINES",
    "STANDARDIZES",
    "LateFusion",
    "PriorLogits",
    "SubsetCalibration",
    "calibrated_tasks",
    "encode_pooled",
    "feature_map",
    "task_loss",
]

COMBINES = ("auto", "calibrated", "mean")
STANDARDIZES = ("auto", "running", "row", "none")


def feature_map(standardize: str, encoder: nn.Module) -> nn.Module:
    """The map between one modality's encoder and its late-fusion head, (n, d) -> (n, d).

    ``"running"``: `FeatureStandardizer`; ``"row"``: `RowStandardizer`; ``"none"``: identity;
    ``"auto"``: ``"running"`` for an encoder without a linear path (`has_linear_path`), whose
    output scale is arbitrary (a row's norm carries the graph's size), ``"row"`` for one with a
    linear path (see `LateFusion` for the selection).
    """
    if standardize not in STANDARDIZES:
        raise ModfuseError(f"standardize must be one of {list(STANDARDIZES)}, found {standardize!r}")
    if standardize == "auto":
        standardize = "row" if has_linear_path(encoder) else "running"
    if standardize == "running":
        return FeatureStandardizer(cast(int, encoder.out_dim))
    return RowStandardizer() if standardize == "row" else nn.Identity()


def _per_modality(standardize: str | Mapping[str, str], modality: str, modalities: list[str]) -> str:
    if isinstance(standardize, str):
        return standardize
    unknown = sorted(set(standardize) - set(modalities))
    if unknown:
        raise ModfuseError(f"standardize names modalities {unknown} that the model does not have ({modalities})")
    return standardize.get(modality, "auto")


def encode_pooled(encoder: nn.Module, batch: ModalityBatch, modality: str) -> tuple[Tensor, Tensor]:
    """Pooled features of the present rows of ``modality``.

    Returns:
        features: (n_present, out_dim) (token encoders are mean-pooled).
        index: LongTensor (n_present,) of their batch positions.

    Raises:
        ModfuseError: when the batch does not know ``modality`` at all (a modality absent from
            every sample still has an all-False ``present`` mask, so this is a wiring error).
    """
    if modality not in batch.present:
        raise ModfuseError(f"the batch has no modality {modality!r}; it has {batch.modalities}", modality=modality)
    features, index = encode_present(encoder, batch, modality)
    return pool_tokens(features), index


def task_loss(tasks: Mapping[str, TaskSpec], logits: Mapping[str, Tensor], batch: ModalityBatch) -> Tensor:
    """Weighted sum over tasks of each TaskSpec's loss on logits (B, num_outputs) per task."""
    if batch.target is None:
        raise ModfuseError("the batch has no target; training and evaluation need one")
    targets = by_task(batch.target, tasks)
    terms = [spec.weight * spec.loss(logits[k], targets[k], batch.ids) for k, spec in tasks.items()]
    return torch.stack(terms).sum()


class PriorLogits(nn.Module):
    """One learned logit vector per task: the prediction for a sample with no modality.

    Trained on every sample (it learns the marginal, e.g. the base rate of a binary task), so a
    fusion model has a meaningful f(empty) even when no training sample was empty.

    Args:
        tasks: task name -> TaskSpec.

    Shapes:
        ``forward(B)`` -> dict task -> (B, num_outputs).
    """

    def __init__(self, tasks: Mapping[str, TaskSpec]) -> None:
        super().__init__()
        self.logits = nn.ParameterDict({k: nn.Parameter(torch.zeros(spec.num_outputs)) for k, spec in tasks.items()})

    def forward(self, batch_size: int) -> dict[str, Tensor]:
        return {k: p.expand(batch_size, -1) for k, p in self.logits.items()}


class SubsetCalibration(nn.Module):
    """The calibrated mean of the present modalities' logits, for one task.

    For a sample with the set S of present modalities (k = |S|) and per-modality logits f_m::

        fused = scale[k] * sum_{m in S} w_m f_m / sum_{m in S} w_m + offset[k]

    with w_m = exp(u_m) > 0, and scale[1] = 1, offset[1] = 0 fixed, so a modality alone is its
    own head's prediction. Why: when each head is also trained to predict alone (modality
    dropout, the unimodal losses of robust training), f_m is the logit of p(y | x_m), and the
    logit of p(y | x_S) is larger and weighs the modalities unequally. Under conditional
    independence of the modalities it is their product of experts: the sum of the present
    logits minus (k - 1) times the prior's. The plain mean can reach it only by distorting the
    single-modality heads, which their own losses resist; the learned weights, scales and
    offsets absorb it instead. They start at the product of equal experts: scale k where the
    kind's evidence adds in logit space (``TaskKind.additive_evidence``: binary, multiclass,
    multilabel, survival), 1 for regression (the product of equally precise Gaussian experts
    is their mean); weights equal, offsets 0.

    Args:
        modalities: modality names (the order of ``log_weights``).
        spec: the task's TaskSpec.

    Shapes:
        ``forward(sums, weight_sums, count)``: ``sums`` (B, num_outputs), the sums of w_m f_m
        over the present modalities; ``weight_sums`` (B,) the sums of their w_m; ``count`` (B,)
        the number of present modalities -> (B, num_outputs).
    """

    def __init__(self, modalities: list[str], spec: TaskSpec) -> None:
        super().__init__()
        n = len(modalities)
        self.index = {m: i for i, m in enumerate(modalities)}
        self.log_weights = nn.Parameter(torch.zeros(n))
        # row k - 1 holds the parameters for k present modalities; row 0 (one modality) is unused
        poe = torch.arange(1, n + 1, dtype=torch.float32).log()[:, None]
        adds = TASK_KINDS.get(spec.kind).additive_evidence
        self.log_scale = nn.Parameter(poe if adds else torch.zeros(n, 1))
        self.offset = nn.Parameter(torch.zeros(n, spec.num_outputs))

    def modality_weight(self, modality: str) -> Tensor:
        """w_m, a scalar tensor."""
        return self.log_weights[self.index[modality]].exp()

    def forward(self, sums: Tensor, weight_sums: Tensor, count: Tensor) -> Tensor:
        row = (count.long() - 1).clamp_min(0)
        mean = sums / weight_sums.clamp_min(1e-12)[:, None]
        calibrated = self.log_scale.exp()[row] * mean + self.offset[row]
        return torch.where((row == 0)[:, None], mean, calibrated)


def calibrated_tasks(tasks: Mapping[str, TaskSpec], combine: str = "auto") -> list[str]:
    """The tasks a late fusion with ``combine`` calibrates: ``"auto"``, those whose kind says so
    (``TaskKind.late_calibration``: binary, multilabel, survival); ``"calibrated"``, all;
    ``"mean"``, none."""
    if combine not in COMBINES:
        raise ModfuseError(f"combine must be one of {list(COMBINES)}, found {combine!r}")
    if combine == "mean":
        return []
    return [k for k, spec in tasks.items() if combine == "calibrated" or TASK_KINDS.get(spec.kind).late_calibration]


@register("late")
class LateFusion(nn.Module):
    """Combination of the logits that each present modality's own head predicts.

    Each modality is a complete unimodal model (encoder, feature map, head). A
    sample's logits combine those of its present modalities (``combine``); a sample with none
    gets the learned prior logits. One present modality: its own head's logits, whatever
    ``combine``.

    Args:
        encoders: modality -> encoder with ``out_dim``.
        tasks: task kind, TaskSpec, or dict task -> TaskSpec.
        hidden: hidden width of each modality head (0 for a linear head).
        dropout: dropout in the heads.
        prior_weight: weight of the prior's own loss (the prior is fitted to every sample; its
            parameters get no other gradient unless training samples have no modality).
        combine: ``"auto"`` (the default: per task, `SubsetCalibration` where the task kind
            says so, ``TaskKind.late_calibration``: binary, multilabel, survival; the plain mean
            for multiclass and regression), ``"calibrated"`` (every task) or ``"mean"`` (the
            plain mean of the present logits for every task). Chosen on validation rows only,
            robust training on (the estimators' default), calibrated minus plain mean: binary,
            the generated linear problem of the small-cohort tests (seeds 7-9, 101, 102; 1000
            rows each) +1.0 points complete-data accuracy (81.9 -> 82.9 %; robust training off:
            83.6 %) and +0.6 over the modality subsets; binary, breast cancer (20 % of training
            folds 0-2) +0.0 complete and over subsets; survival C-index (25 % of training
            folds) veterans +0.0 / +2.0 / -1.1, WHAS500 +2.9 / +4.9 points; multiclass, digits
            quadrants (folds 0-1) -0.7 / -0.3 complete, -0.3 / -2.1 over subsets, eopatch land
            cover -0.6 / +0.6 and -0.2 / +0.5; regression, ESOL RMSE 0.625 -> 0.655 and 0.667 -> 0.727 (folds 0-1).
            Tables: ``benchmarks/results/missing_selection.md``.
        standardize: the map between each encoder and its head (`feature_map`): ``"auto"``
            (the default), ``"running"``, ``"row"`` or ``"none"`` for every modality, or a
            dict modality -> one of them (modalities it leaves out get ``"auto"``). ``"auto"``
            keeps running statistics for encoders without a linear path (an ESOL graph encoder:
            RMSE 0.766 against 1.076 per row, validation split of fold 0) and maps a
            linear-path encoder's features per row, chosen on validation rows only (``python
            -m benchmarks.late_combine --linear-maps running row none``; table in
            ``benchmarks/results/missing_selection.md``). Robust training on, linear-path map
            running / row / none: C-index WHAS500 0.694 / 0.768 / 0.769, veterans 0.677 /
            0.699 / 0.670; ESOL RMSE 0.646 / 0.608 / 0.606; the linear problem, breast cancer
            and digits within 1.2 points of each other. "none" was the first choice but kept
            0.892 of the specialist's accuracy with only the hard modality of
            ``tests/test_robust_default.py`` present, on that test's own seed 0 (per row 0.958,
            running 1.007; all three >= 0.96 on seeds 1-3), so the per-row map, within noise
            of "none" elsewhere and the best on veterans, is the default.

    Shapes:
        batch of B samples -> `ModelOutput`: fused logits task -> (B, num_outputs), and
        ``per_modality`` (each modality head's logits on its present rows).
    """

    robust_full_weight = 0.0
    """The robust-training default ``full_weight="auto"`` reads (`modfuse.training.robust`):
    the complete prediction is built from the per-modality heads (its only joint part, the
    calibration, is trained by the complete rows of the dropped batch as well), and on
    validation the term cost late fusion with the plain mean (3 of 4 pairs) and did not help
    it calibrated (linear problem, seeds 101 / 102: 82.5 / 83.9 % with it, 81.4 / 84.7 %
    without)."""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        hidden: int = 64,
        dropout: float = 0.1,
        prior_weight: float = 1.0,
        combine: str = "auto",
        standardize: str | Mapping[str, str] = "auto",
    ) -> None:
        super().__init__()
        self.encoders = EncoderDict(check_encoders(encoders))
        self.modalities = list(self.encoders)
        self.tasks = as_task_specs(tasks)
        self.standardize = nn.ModuleDict(
            {m: feature_map(_per_modality(standardize, m, self.modalities), enc) for m, enc in self.encoders.items()}
        )
        self.heads = nn.ModuleDict(
            {m: TaskHeads(enc.out_dim, self.tasks, hidden, dropout) for m, enc in self.encoders.items()}
        )
        self.prior = PriorLogits(self.tasks)
        self.prior_weight = prior_weight
        self.combine = combine
        chosen = calibrated_tasks(self.tasks, combine)
        self.calibration = nn.ModuleDict({k: SubsetCalibration(self.modalities, self.tasks[k]) for k in chosen})

    def unimodal_logits(self, batch: ModalityBatch, modality: str) -> PresentLogits:
        """Logits of one modality's own model for its present rows: task -> (n_present, k), and the index."""
        features, index = encode_pooled(self.encoders[modality], batch, modality)
        return PresentLogits(self.heads[modality](self.standardize[modality](features)), index)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        b = batch.batch_size
        count = torch.zeros(b, device=batch.device)
        sums = {k: torch.zeros(b, spec.num_outputs, device=batch.device) for k, spec in self.tasks.items()}
        weight_sums = {k: torch.zeros(b, device=batch.device) for k in self.tasks}
        per_modality = {m: self.unimodal_logits(batch, m) for m in self.modalities}
        calibration = {k: cast(SubsetCalibration, c) for k, c in self.calibration.items()}
        for m, part in per_modality.items():
            ones = torch.ones_like(part.index, dtype=count.dtype)
            count = count.index_add(0, part.index, ones)
            for k in self.tasks:
                w = ones * calibration[k].modality_weight(m) if k in calibration else ones
                weight_sums[k] = weight_sums[k].index_add(0, part.index, w)
                sums[k] = sums[k].index_add(0, part.index, w[:, None] * part.logits[k].to(sums[k].dtype))
        combined = {
            k: calibration[k](s, weight_sums[k], count)
            if k in calibration
            else s / weight_sums[k].clamp_min(1)[:, None]
            for k, s in sums.items()
        }
        prior = self.prior(b)
        seen = (count > 0)[:, None]
        fused = {k: torch.where(seen, c, prior[k]) for k, c in combined.items()}
        return ModelOutput(fused, per_modality)

    def compute_loss(self, outputs: ModelOutput, batch: ModalityBatch) -> Tensor:
        """Task loss of the fused logits; its gradient also trains the prior (``prior_weight``
        times the prior's own loss on the batch).

        The prior's term adds nothing to the returned value (``x - x.detach()``), so the logged
        ``loss`` is the fused prediction's task loss, comparable with every other strategy's.
        """
        fused = task_loss(self.tasks, outputs.logits, batch)
        prior = self.prior_weight * task_loss(self.tasks, self.prior(batch.batch_size), batch)
        return fused + (prior - prior.detach())
