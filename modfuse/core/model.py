"""The contract every fusion model meets, whatever its strategy, and helpers that rely only on it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from modfuse.errors import ModfuseError

if TYPE_CHECKING:
    from modfuse.core.tasks import TaskSpec

__all__ = [
    "FusionModel",
    "ModelOutput",
    "PresentLogits",
    "StepTrace",
    "expect_output",
    "model_device",
    "unwrap_model",
]


@dataclass
class PresentLogits:
    """One modality's own prediction for the samples that have it.

    Attributes:
        logits: task -> (n_present, num_outputs) logits of the modality's own head.
        index: LongTensor (n_present,) of those samples' batch positions.
    """

    logits: dict[str, Tensor]
    index: Tensor

    @property
    def prediction(self) -> Tensor:
        """The logits (n_present, num_outputs) of the only task."""
        return only_task(self.logits)


@dataclass
class StepTrace:
    """The per-step predictions of a model that adds modalities one at a time.

    Attributes:
        logits: task -> (B, 1 + M, num_outputs); step 0 is the prior prediction, step i the
            one after the i-th modality of ``order`` (equal to step i-1 for samples that lack it).
        mask: BoolTensor (B, 1 + M), True where the step ran (always for step 0).
        states: (B, 1 + M, state_dim) the state after every step.
        order: the modality order of this forward pass.
    """

    logits: dict[str, Tensor]
    mask: Tensor
    states: Tensor
    order: list[str]


@dataclass
class ModelOutput:
    """What every fusion model's ``forward(batch)`` returns, whatever its strategy.

    Attributes:
        logits: task -> (B, num_outputs) logits of the fused prediction (activate them with the
            task's `TaskSpec.activate`).
        per_modality: modality -> its own prediction on its present rows, for models that
            compute one (late fusion, merged Lego blocks); empty otherwise.
        steps: the per-step predictions of sequential fusion; None for other strategies.
    """

    logits: dict[str, Tensor]
    per_modality: dict[str, PresentLogits] = field(default_factory=dict)
    steps: StepTrace | None = None

    @classmethod
    def of(cls, logits: Tensor | Mapping[str, Tensor], tasks: Mapping[str, TaskSpec], **parts: Any) -> ModelOutput:
        """An output from logits given as one tensor (single task) or a dict task -> tensor."""
        from modfuse.core.tasks import by_task

        return cls(by_task(logits, tasks), **parts)

    @property
    def prediction(self) -> Tensor:
        """The logits (B, num_outputs) of the only task (``logits[task]`` when there are several)."""
        return only_task(self.logits)


def only_task(logits: Mapping[str, Tensor]) -> Tensor:
    """The one tensor of a single-task mapping task -> tensor.

    Raises:
        ModfuseError: when there are several tasks (pick one with ``logits[task]``).
    """
    if len(logits) != 1:
        raise ModfuseError(f"the model predicts several tasks {sorted(logits)}; pick one with .logits[task]")
    return next(iter(logits.values()))


def expect_output(outputs: Any, model: Any) -> ModelOutput:
    """``outputs`` of ``model``, checked to be a `ModelOutput` (the contract of every fusion model)."""
    if not isinstance(outputs, ModelOutput):
        raise ModfuseError(
            f"{type(model).__name__}.forward returned {type(outputs).__name__}; a fusion model returns "
            "modfuse.core.ModelOutput (build one from logits with ModelOutput.of(logits, self.tasks))"
        )
    return outputs


@runtime_checkable
class FusionModel(Protocol):
    """What training, robustness and interpretation code rely on, whatever the strategy.

    Attributes:
        modalities: the modality names the model can use.
        tasks: task name -> [`TaskSpec`][modfuse.core.tasks.TaskSpec].

    ``forward(batch)`` (a `ModalityBatch`) returns a `ModelOutput`: logits per task, plus the
    per-modality or per-step parts the strategy computes. It accepts any per-sample pattern of present modalities, including none: a
    sample with no modality gets the model's prior prediction, so subset-based explanations
    have a defined f(empty). Rows never influence one another (no cross-sample operation at
    inference).

    A model may define ``compute_loss(outputs, batch) -> Tensor`` for extra terms; its task
    terms come from each task's `TaskSpec.loss`.
    """

    modalities: list[str]
    tasks: dict[str, TaskSpec]

    def __call__(self, batch: Any) -> ModelOutput: ...

    # every fusion model is an nn.Module; these are the module methods the helpers use
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]: ...


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
