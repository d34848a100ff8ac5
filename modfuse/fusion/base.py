"""The interface every fusion strategy shares, and the strategy registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from torch import Tensor, nn

import modfuse.core.config  # noqa: F401  (records constructor arguments, so models describe themselves)
from modfuse.data.batch import ModalityBatch
from modfuse.registry import Registry

if TYPE_CHECKING:
    from modfuse.training.spec import TaskSpec

__all__ = ["STRATEGIES", "FusionModel", "Outputs", "available", "build", "prediction_of", "register"]

Outputs = Tensor | dict[str, Tensor]
"""Model predictions (logits): (B, num_outputs) for a single task, or task -> (B, num_outputs)."""


@runtime_checkable
class FusionModel(Protocol):
    """What training, robustness and interpretation code rely on, whatever the strategy.

    Attributes:
        modalities: the modality names the model can use.
        tasks: task name -> [`TaskSpec`][modfuse.training.spec.TaskSpec].

    ``forward(batch)`` returns logits (`Outputs`), or an object with a ``prediction``
    attribute holding them (sequential fusion also returns per-step predictions). It accepts
    any per-sample pattern of present modalities, including none: a sample with no modality
    gets the model's prior prediction, so subset-based explanations have a defined f(empty).
    Rows never influence one another (no cross-sample operation at inference).

    A model may define ``compute_loss(outputs, batch) -> Tensor``; otherwise the training loop
    sums the task losses of the predictions.
    """

    modalities: list[str]
    tasks: dict[str, TaskSpec]

    def __call__(self, batch: ModalityBatch) -> Any: ...


def prediction_of(outputs: Any) -> Outputs:
    """The logits inside a model's outputs (the outputs themselves, or their ``.prediction``)."""
    return getattr(outputs, "prediction", outputs)


# the built-in strategies, imported on first use so that importing modfuse.fusion stays cheap
# and free of cycles; packages add theirs through the "modfuse.fusion" entry-point group
STRATEGIES: Registry[type[nn.Module]] = Registry(
    "fusion strategy",
    group="modfuse.fusion",
    lazy={
        "early": "modfuse.fusion.early:EarlyFusion",
        "late": "modfuse.fusion.late:LateFusion",
        "attention": "modfuse.fusion.attention:AttentionFusion",
        "unimodal": "modfuse.fusion.unimodal:Unimodal",
        "lego-merge": "modfuse.lego.merge:LegoMerge.from_encoders",
        "lego-fuse": "modfuse.lego.fuse:LegoFuse.from_encoders",
        "sequential": "modfuse.sequential.model:SequentialFusion",
    },
    base=nn.Module,
)
register = STRATEGIES.register


def build(
    strategy: str, /, encoders: Mapping[str, nn.Module] | None = None, tasks: Any = "binary", **kwargs: Any
) -> nn.Module:
    """Build a fusion model by strategy name, e.g. ``build("early", encoders=..., tasks="binary")``.

    Args:
        strategy: a registered name (see `available()`).
        encoders: modality -> encoder (``out_dim`` declared).
        tasks: a task kind, a TaskSpec, or a dict task name -> TaskSpec.
        **kwargs: strategy-specific arguments.
    """
    return STRATEGIES.build(strategy, encoders=encoders, tasks=tasks, **kwargs)


def available() -> list[str]:
    """Names of the registered fusion strategies (built-in, registered, or declared by entry point)."""
    return STRATEGIES.available()
