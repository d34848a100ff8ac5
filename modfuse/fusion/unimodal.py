"""Unimodal baseline: one modality's encoder and head; the others are ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from modfuse.errors import ModfuseError
from modfuse.fusion.base import register
from modfuse.fusion.late import LateFusion

__all__ = ["Unimodal"]


@register("unimodal")
class Unimodal(LateFusion):
    """A model of one modality (encoder + head), for comparison with the fusion strategies.

    It accepts batches with any other modalities (they are ignored); a sample without the
    chosen modality gets the learned prior prediction.

    Args:
        encoders: modality -> encoder; with several, ``modality`` picks one and the rest are
            not kept.
        tasks: task kind, TaskSpec, or dict task -> TaskSpec.
        modality: the modality to use (required when ``encoders`` has several).
        hidden: hidden width of the head (0 for a linear head).
        dropout: dropout in the head.
        prior_weight: weight of the prior's own loss.

    Shapes:
        batch of B samples -> `ModelOutput` with logits task -> (B, num_outputs).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        modality: str | None = None,
        hidden: int = 64,
        dropout: float = 0.1,
        prior_weight: float = 1.0,
    ) -> None:
        encoders = dict(encoders or {})
        if modality is None:
            if len(encoders) != 1:
                raise ModfuseError(f"Unimodal needs modality=... to choose one of {sorted(encoders)}")
            modality = next(iter(encoders))
        if modality not in encoders:
            raise ModfuseError(
                f"no encoder for the chosen modality; encoders are {sorted(encoders)}", modality=modality
            )
        # one modality: nothing to combine
        super().__init__({modality: encoders[modality]}, tasks, hidden, dropout, prior_weight, combine="mean")
        self.modality = modality
