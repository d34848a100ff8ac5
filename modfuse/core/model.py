"""The contract every fusion model meets, whatever its strategy, and helpers that rely only on it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from modfuse.errors import ModfuseError

if TYPE_CHECKING:
    from modfuse.core.tasks import TaskSpec

__all__ = ["FusionModel", "Outputs", "model_device", "prediction_of", "unwrap_model"]

Outputs = Tensor | dict[str, Tensor]
"""Model predictions (logits): (B, num_outputs) for a single task, or task -> (B, num_outputs)."""


@runtime_checkable
class FusionModel(Protocol):
    """What training, robustness and interpretation code rely on, whatever the strategy.

    Attributes:
        modalities: the modality names the model can use.
        tasks: task name -> [`TaskSpec`][modfuse.core.tasks.TaskSpec].

    ``forward(batch)`` (a `ModalityBatch`) returns logits (`Outputs`), or an object with a
    ``prediction`` attribute holding them (sequential fusion also returns per-step
    predictions). It accepts any per-sample pattern of present modalities, including none: a
    sample with no modality gets the model's prior prediction, so subset-based explanations
    have a defined f(empty). Rows never influence one another (no cross-sample operation at
    inference).

    A model may define ``compute_loss(outputs, batch) -> Tensor`` for extra terms; its task
    terms come from each task's `TaskSpec.loss`.
    """

    modalities: list[str]
    tasks: dict[str, TaskSpec]

    def __call__(self, batch: Any) -> Any: ...

    # every fusion model is an nn.Module; these are the module methods the helpers use
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]: ...


def prediction_of(outputs: Any) -> Outputs:
    """The logits inside a model's outputs (the outputs themselves, or their ``.prediction``)."""
    return getattr(outputs, "prediction", outputs)


def unwrap_model(model: Any) -> nn.Module:
    """The fusion model inside ``model`` (a FusionTask's ``.model``), checked to be usable.

    Args:
        model: a fusion model, or a FusionTask / any wrapper with a ``.model`` attribute.
    """
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "modalities"):
        model = inner
    if not hasattr(model, "modalities") or not hasattr(model, "tasks") or not callable(model):
        raise ModfuseError(
            f"expected a fusion model with `modalities` and `tasks` (or a FusionTask), found {type(model).__name__}"
        )
    return model


def model_device(model: nn.Module | FusionModel) -> torch.device:
    """The device of the model's first parameter or buffer (CPU when it has none)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return torch.device("cpu")
