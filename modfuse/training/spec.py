"""What a prediction task is: its kind, output size, loss, activation and metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import AUROC, Accuracy, F1Score
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from modfuse.errors import ModfuseError
from modfuse.training.losses import cumulative_hazard, discrete_time_nll
from modfuse.training.metrics import ConcordanceIndex

__all__ = ["DEFAULT_TASK", "TaskKind", "TaskSpec", "as_task_specs", "by_task", "check_targets"]

TaskKind = Literal["binary", "multiclass", "multilabel", "regression", "survival"]
KINDS = ("binary", "multiclass", "multilabel", "regression", "survival")
DEFAULT_TASK = "y"
"""Name of the task when a model has a single task given as a kind string."""


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task.

    Args:
        kind: ``binary``, ``multiclass``, ``multilabel``, ``regression`` or ``survival``.
        num_outputs: output width: 1 for binary, classes for multiclass, labels for multilabel,
            targets for regression, time intervals K for survival.
        boundaries: survival only: the K-1 interior interval boundaries (increasing).
        weight: weight of this task's loss in a multi-task sum.

    Output and target shapes (B = batch size):
        logits: (B, num_outputs) for every kind.
        target: binary (B,) or (B, 1) in {0, 1}; multiclass (B,) integer classes; multilabel
        (B, L) in {0, 1}; regression (B,) or (B, n); survival (B, 2) holding (time, event).
    """

    kind: TaskKind = "binary"
    num_outputs: int = 1
    boundaries: tuple[float, ...] | None = None
    weight: float = 1.0
    _b: Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModfuseError(f"unknown task kind {self.kind!r}; expected one of {list(KINDS)}")
        if self.num_outputs < 1:
            raise ModfuseError(f"num_outputs must be >= 1, found {self.num_outputs}")
        if self.kind == "binary" and self.num_outputs != 1:
            raise ModfuseError(f"a binary task has 1 output (a logit), found num_outputs={self.num_outputs}")
        if self.kind == "multiclass" and self.num_outputs < 2:
            raise ModfuseError(f"a multiclass task needs num_outputs >= 2 classes, found {self.num_outputs}")
        if self.kind == "survival":
            if self.boundaries is None or len(self.boundaries) != self.num_outputs - 1:
                raise ModfuseError(
                    f"a survival task with {self.num_outputs} intervals needs {self.num_outputs - 1} interior "
                    f"boundaries, found {None if self.boundaries is None else len(self.boundaries)}"
                )
            if any(b >= a for b, a in zip(self.boundaries, self.boundaries[1:])):
                raise ModfuseError(f"survival boundaries must increase, found {self.boundaries}")
            object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
            object.__setattr__(self, "_b", torch.tensor(self.boundaries, dtype=torch.float32))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description; ``TaskSpec(**d)`` rebuilds it (boundaries as a tuple)."""
        return {
            "kind": self.kind,
            "num_outputs": self.num_outputs,
            "boundaries": list(self.boundaries) if self.boundaries is not None else None,
            "weight": self.weight,
        }

    # ------------------------------------------------------------------ targets
    def check_target(self, target: Tensor, ids: Sequence[Any] | None = None, name: str = DEFAULT_TASK) -> Tensor:
        """Validate ``target`` and return it in the form `loss()` uses; errors name the task."""

        def fail(msg: str) -> ModfuseError:
            return ModfuseError(f"target of task {name!r} ({self.kind}): {msg}")

        b = target.shape[0] if target.dim() else 0
        if (
            self.kind in ("binary", "multiclass", "regression")
            and target.dim() == 2
            and target.shape[1] == 1
            and self.num_outputs == 1
        ):
            target = target[:, 0]
        if self.kind == "binary":
            if target.dim() != 1:
                raise fail(f"expected shape (B,) or (B, 1), found {tuple(target.shape)}")
            bad = ~((target == 0) | (target == 1))
            if bad.any():
                i = int(bad.nonzero()[0])
                raise fail(f"expected 0/1 labels, found {target[i].item()} at sample {ids[i] if ids else i}")
            return target.float()
        if self.kind == "multiclass":
            if target.dim() != 1 or (target.is_floating_point() and (target != target.round()).any()):
                raise fail(f"expected integer class indices of shape (B,), found {target.dtype} {tuple(target.shape)}")
            bad = (target < 0) | (target >= self.num_outputs)
            if bad.any():
                i = int(bad.nonzero()[0])
                raise fail(
                    f"expected classes in 0..{self.num_outputs - 1}, found {int(target[i])} at sample {ids[i] if ids else i}"
                )
            return target.long()
        if self.kind == "multilabel":
            if target.shape != (b, self.num_outputs):
                raise fail(f"expected shape (B, {self.num_outputs}), found {tuple(target.shape)}")
            bad = ~((target == 0) | (target == 1))  # NaN is neither
            if bad.any():
                i, j = (int(k) for k in bad.nonzero()[0])
                raise fail(
                    f"expected 0/1 indicators, found {target[i, j].item()} for label {j} at sample "
                    f"{ids[i] if ids else i} ({int(bad.any(1).sum())} samples have such values)"
                )
            return target.float()
        if self.kind == "regression":
            want = (b,) if self.num_outputs == 1 else (b, self.num_outputs)
            if tuple(target.shape) != want:
                raise fail(f"expected shape {want}, found {tuple(target.shape)}")
            if not torch.isfinite(target).all():
                i = int((~torch.isfinite(target)).reshape(b, -1).any(1).nonzero()[0])
                raise fail(f"expected finite values, found {target[i].tolist()} at sample {ids[i] if ids else i}")
            return target.float()
        if target.dim() != 2 or target.shape[1] != 2:
            raise fail(f"expected (time, event) of shape (B, 2), found {tuple(target.shape)}")
        time, event = target[:, 0].double(), target[:, 1].double()
        for bad, want in (
            (~torch.isfinite(time) | (time < 0), "finite times >= 0"),
            (~((event == 0) | (event == 1)), "event codes 0 (censored) or 1 (event)"),
        ):
            if bad.any():
                i = int(bad.nonzero()[0])
                raise fail(
                    f"expected {want}, found (time, event) = {target[i].tolist()} at sample {ids[i] if ids else i} "
                    f"({int(bad.sum())} samples have such values)"
                )
        return target.float()

    # ------------------------------------------------------------------ loss / outputs
    def loss(self, logits: Tensor, target: Tensor, ids: Sequence[Any] | None = None) -> Tensor:
        """Mean loss over the batch. ``logits`` (B, num_outputs); ``target`` as documented above."""
        target = self.check_target(target, ids)
        if logits.dim() != 2 or logits.shape[1] != self.num_outputs:
            raise ModfuseError(f"expected logits of shape (B, {self.num_outputs}), found {tuple(logits.shape)}")
        logits = logits.float()
        if self.kind == "binary":
            return F.binary_cross_entropy_with_logits(logits[:, 0], target)
        if self.kind == "multiclass":
            return F.cross_entropy(logits, target)
        if self.kind == "multilabel":
            return F.binary_cross_entropy_with_logits(logits, target)
        if self.kind == "regression":
            return F.mse_loss(logits[:, 0] if self.num_outputs == 1 else logits, target)
        return discrete_time_nll(logits, target[:, 0], target[:, 1], self._b.to(logits.device))

    def activate(self, logits: Tensor) -> Tensor:
        """Predictions from logits: probabilities (binary (B,), multiclass (B, C), multilabel
        (B, L)), estimates (regression (B,) or (B, n)), risk (survival (B,))."""
        logits = logits.float()
        if self.kind == "binary":
            return torch.sigmoid(logits[:, 0])
        if self.kind == "multiclass":
            return torch.softmax(logits, dim=1)
        if self.kind == "multilabel":
            return torch.sigmoid(logits)
        if self.kind == "regression":
            return logits[:, 0] if self.num_outputs == 1 else logits
        return cumulative_hazard(logits)

    def decide(self, logits: Tensor) -> Tensor:
        """Hard predictions: labels for classification, estimates/risk otherwise."""
        p = self.activate(logits)
        if self.kind == "binary":
            return (p >= 0.5).long()
        if self.kind == "multiclass":
            return p.argmax(dim=1)
        if self.kind == "multilabel":
            return (p >= 0.5).long()
        return p

    def metrics(self) -> MetricCollection:
        """torchmetrics for this task; classification metrics take probabilities, never labels."""
        if self.kind == "binary":
            return MetricCollection({"auroc": AUROC(task="binary"), "accuracy": Accuracy(task="binary")})
        if self.kind == "multiclass":
            c = self.num_outputs
            return MetricCollection(
                {
                    "accuracy": Accuracy(task="multiclass", num_classes=c),
                    "f1": F1Score(task="multiclass", num_classes=c, average="macro"),
                    "auroc": AUROC(task="multiclass", num_classes=c),
                }
            )
        if self.kind == "multilabel":
            n = self.num_outputs
            return MetricCollection(
                {
                    "auroc": AUROC(task="multilabel", num_labels=n),
                    "f1": F1Score(task="multilabel", num_labels=n, average="macro"),
                }
            )
        if self.kind == "regression":
            return MetricCollection(
                {
                    "rmse": MeanSquaredError(squared=False),
                    "mae": MeanAbsoluteError(),
                    "r2": R2Score(),  # torchmetrics >= 1.9 infers the number of outputs
                }
            )
        return MetricCollection({"cindex": ConcordanceIndex()})

    def metric_inputs(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(predictions, target) in the form `metrics()` expects."""
        target = self.check_target(target)
        pred = self.activate(logits)
        if self.kind in ("binary", "multilabel"):
            return pred, target.long()
        return pred, target

    @property
    def main_metric(self) -> tuple[str, str]:
        """(name, mode) of the metric to monitor: AUROC/accuracy, RMSE or C-index."""
        return {
            "binary": ("auroc", "max"),
            "multiclass": ("accuracy", "max"),
            "multilabel": ("auroc", "max"),
            "regression": ("rmse", "min"),
            "survival": ("cindex", "max"),
        }[self.kind]


def as_task_specs(tasks: Any, num_outputs: int | None = None) -> dict[str, TaskSpec]:
    """Normalise a task description to ``{name: TaskSpec}``.

    Accepts a kind string (``"binary"``; single task named ``"y"``), a `TaskSpec`, or a
    mapping name -> TaskSpec / kind string / dict of TaskSpec arguments.
    """
    if isinstance(tasks, (str, TaskSpec)):
        tasks = {DEFAULT_TASK: tasks}
    if not isinstance(tasks, Mapping) or not tasks:
        raise ModfuseError(f"expected a task kind, a TaskSpec or a dict of them, found {tasks!r}")
    specs: dict[str, TaskSpec] = {}
    for name, t in tasks.items():
        if isinstance(t, TaskSpec):
            specs[name] = t
        elif isinstance(t, str):
            n = num_outputs if num_outputs is not None else 1
            specs[name] = TaskSpec(t, n)
        elif isinstance(t, Mapping):
            args = dict(t)
            if "boundaries" in args and args["boundaries"] is not None:
                args["boundaries"] = tuple(args["boundaries"])
            specs[name] = TaskSpec(**args)
        else:
            raise ModfuseError(f"task {name!r}: expected a TaskSpec, kind or dict, found {t!r}")
    return specs


def check_targets(targets: Any, tasks: Mapping[str, TaskSpec], ids: Sequence[Any] | None = None) -> None:
    """Validate a whole dataset's targets (an array, or a dict task -> array) against ``tasks``
    up front, so a bad label is an error naming the task and the sample before any training."""
    if targets is None:
        return
    for name, values in by_task(_as_tensor_tree(targets), tasks).items():
        tasks[name].check_target(values, ids, name)


def _as_tensor_tree(targets: Any) -> Any:
    if isinstance(targets, Mapping):
        return {k: _as_tensor_tree(v) for k, v in targets.items()}
    return torch.tensor(np.asarray(targets))  # a copy: the dataset's arrays may be read-only


def by_task(values: Tensor | Mapping[str, Tensor] | None, tasks: Mapping[str, TaskSpec]) -> dict[str, Tensor]:
    """Per-task view of model outputs or targets: a single tensor belongs to the single task."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        missing = set(tasks) - set(values)
        if missing:
            raise ModfuseError(f"expected values for tasks {sorted(tasks)}, missing {sorted(missing)}")
        return {k: values[k] for k in tasks}
    if len(tasks) != 1:
        raise ModfuseError(f"expected a dict over the tasks {sorted(tasks)}, found a single tensor")
    return {next(iter(tasks)): values}
