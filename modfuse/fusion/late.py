"""Late fusion: every modality predicts on its own; the present modalities' logits are averaged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from modfuse.core.model import ModelOutput, PresentLogits
from modfuse.core.tasks import TaskSpec, as_task_specs, by_task
from modfuse.data.batch import ModalityBatch, encode_present
from modfuse.encoders.base import EncoderDict
from modfuse.errors import ModfuseError
from modfuse.fusion.base import register
from modfuse.fusion.early import check_encoders
from modfuse.fusion.heads import FeatureStandardizer, TaskHeads, pool_tokens

__all__ = ["LateFusion", "PriorLogits", "encode_pooled", "task_loss"]


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


@register("late")
class LateFusion(nn.Module):
    """Average of the logits that each present modality's own head predicts.

    Each modality is a complete unimodal model (encoder, `FeatureStandardizer`, head). A
    sample's logits are the mean over its present modalities; a sample with none gets the
    learned prior logits.

    Args:
        encoders: modality -> encoder with ``out_dim``.
        tasks: task kind, TaskSpec, or dict task -> TaskSpec.
        hidden: hidden width of each modality head (0 for a linear head).
        dropout: dropout in the heads.
        prior_weight: weight of the prior's own loss (the prior is fitted to every sample; its
            parameters get no other gradient unless training samples have no modality).

    Shapes:
        batch of B samples -> `ModelOutput`: fused logits task -> (B, num_outputs), and
        ``per_modality`` (each modality head's logits on its present rows).
    """

    robust_full_weight = 0.0
    """The robust-training default ``full_weight="auto"`` reads (`modfuse.training.robust`):
    the complete prediction is the mean of the per-modality heads, so no joint part is left for
    a complete-batch loss term to train, and on validation the term cost late fusion."""

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        hidden: int = 64,
        dropout: float = 0.1,
        prior_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.encoders = EncoderDict(check_encoders(encoders))
        self.modalities = list(self.encoders)
        self.tasks = as_task_specs(tasks)
        self.standardize = nn.ModuleDict({m: FeatureStandardizer(enc.out_dim) for m, enc in self.encoders.items()})
        self.heads = nn.ModuleDict(
            {m: TaskHeads(enc.out_dim, self.tasks, hidden, dropout) for m, enc in self.encoders.items()}
        )
        self.prior = PriorLogits(self.tasks)
        self.prior_weight = prior_weight

    def unimodal_logits(self, batch: ModalityBatch, modality: str) -> PresentLogits:
        """Logits of one modality's own model for its present rows: task -> (n_present, k), and the index."""
        features, index = encode_pooled(self.encoders[modality], batch, modality)
        return PresentLogits(self.heads[modality](self.standardize[modality](features)), index)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        b = batch.batch_size
        count = torch.zeros(b, device=batch.device)
        sums = {k: torch.zeros(b, spec.num_outputs, device=batch.device) for k, spec in self.tasks.items()}
        per_modality = {m: self.unimodal_logits(batch, m) for m in self.modalities}
        for part in per_modality.values():
            count = count.index_add(0, part.index, torch.ones_like(part.index, dtype=count.dtype))
            sums = {k: s.index_add(0, part.index, part.logits[k].to(s.dtype)) for k, s in sums.items()}
        prior = self.prior(b)
        seen = (count > 0)[:, None]
        fused = {k: torch.where(seen, s / count.clamp_min(1)[:, None], prior[k]) for k, s in sums.items()}
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
