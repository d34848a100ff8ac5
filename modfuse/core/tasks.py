"""What a prediction task is: its kind (a registered class owning the loss, output activation,
metrics, target validation and main metric) and a `TaskSpec` (kind + output size).

Adding a task kind: subclass `TaskKind`, decorate it with ``@register_task_kind("name")`` (or
declare it under the ``modfuse.task_kinds`` entry-point group); every model, metric and
checkpoint path then reads it through `TaskSpec`.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import AUROC, Accuracy, F1Score
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

from modfuse.core.losses import cox_partial_nll, discrete_time_nll, survival_risk
from modfuse.core.metrics import ConcordanceIndex
from modfuse.errors import ModfuseError
from modfuse.registry import Registry

__all__ = [
    "DEFAULT_TASK",
    "TASK_KINDS",
    "TaskKind",
    "TaskSpec",
    "as_task_specs",
    "by_task",
    "check_targets",
    "register_task_kind",
]

DEFAULT_TASK = "y"
"""Name of the task when a model has a single task given as a kind string."""

Fail = Callable[[str], ModfuseError]


def _sample(ids: Sequence[Any] | None, i: int) -> Any:
    return ids[i] if ids else i


class TaskKind(ABC):
    """One kind of prediction task. Subclasses set ``main_metric`` and implement the methods.

    Every method takes the `TaskSpec` (for its output width and options). Shapes (B = batch):
    logits (B, num_outputs); targets as documented on each subclass.
    """

    main_metric: ClassVar[tuple[str, str]]
    """(metric name in `metrics()`, ``"max"`` or ``"min"``): what early stopping monitors."""

    additive_evidence: ClassVar[bool] = True
    """Whether the outputs of predictors of independent inputs add up in this kind's logit space
    (log-odds, log-hazards: a product of experts sums its experts' logits). False for a kind
    whose outputs are estimates (regression: the product of equally precise Gaussian experts is
    the mean of their estimates). `modfuse.fusion.late.SubsetCalibration` starts from it."""

    late_calibration: ClassVar[bool] = False
    """Whether late fusion's default combination (``LateFusion(combine="auto")``) calibrates
    this kind's task (`modfuse.fusion.late.SubsetCalibration`) instead of taking the plain mean.
    True where it helped on validation rows (binary, survival) and for multilabel (a set of
    binary tasks, by analogy: not measured); see `modfuse.fusion.late.LateFusion`."""

    objectives: ClassVar[tuple[str, ...]] = ()
    """Named losses a `TaskSpec` may choose with ``objective=`` (the first is the default);
    empty: the kind has one loss and ``objective`` must stay None."""

    def check_spec(self, spec: TaskSpec) -> None:
        """Raise when ``spec``'s output width or options do not fit this kind (any fits by default)."""
        return None

    @abstractmethod
    def check_target(self, spec: TaskSpec, target: Tensor, ids: Sequence[Any] | None, fail: Fail) -> Tensor:
        """The validated target in the form `loss` takes; ``fail(msg)`` builds the error."""

    @abstractmethod
    def loss(self, spec: TaskSpec, logits: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the batch for a validated target."""

    @abstractmethod
    def activate(self, spec: TaskSpec, logits: Tensor) -> Tensor:
        """Predictions from logits (probabilities, estimates or risk)."""

    @abstractmethod
    def metrics(self, spec: TaskSpec) -> MetricCollection:
        """torchmetrics for this kind; they take `metric_inputs`."""

    def metric_inputs(self, spec: TaskSpec, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(activated predictions, validated target) in the form `metrics()` expects."""
        return pred, target


TASK_KINDS: Registry[type[TaskKind]] = Registry("task kind", group="modfuse.task_kinds", base=TaskKind)
register_task_kind = TASK_KINDS.register


def _squeeze_single(spec: TaskSpec, target: Tensor) -> Tensor:
    # (B, 1) targets of a one-output task are accepted as (B,)
    if target.dim() == 2 and target.shape[1] == 1 and spec.num_outputs == 1:
        return target[:, 0]
    return target


def _check_binary_values(target: Tensor, ids: Sequence[Any] | None, fail: Fail, what: str) -> None:
    bad = ~((target == 0) | (target == 1))  # NaN is neither
    if not bad.any():
        return
    if target.dim() == 1:
        i = int(bad.nonzero()[0])
        raise fail(f"expected {what}, found {target[i].item()} at sample {_sample(ids, i)}")
    i, j = (int(k) for k in bad.nonzero()[0])
    raise fail(
        f"expected {what}, found {target[i, j].item()} for label {j} at sample "
        f"{_sample(ids, i)} ({int(bad.any(1).sum())} samples have such values)"
    )


@register_task_kind("binary")
class Binary(TaskKind):
    """Target (B,) or (B, 1) in {0, 1}; prediction: probability of class 1, (B,)."""

    main_metric = ("auroc", "max")
    late_calibration = True

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.num_outputs != 1:
            raise ModfuseError(f"a binary task has 1 output (a logit), found num_outputs={spec.num_outputs}")

    def check_target(self, spec: TaskSpec, target: Tensor, ids: Sequence[Any] | None, fail: Fail) -> Tensor:
        target = _squeeze_single(spec, target)
        if target.dim() != 1:
            raise fail(f"expected shape (B,) or (B, 1), found {tuple(target.shape)}")
        _check_binary_values(target, ids, fail, "0/1 labels")
        return target.float()

    def loss(self, spec: TaskSpec, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits[:, 0], target)

    def activate(self, spec: TaskSpec, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits[:, 0])

    def metrics(self, spec: TaskSpec) -> MetricCollection:
        return MetricCollection({"auroc": AUROC(task="binary"), "accuracy": Accuracy(task="binary")})

    def metric_inputs(self, spec: TaskSpec, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return pred, target.long()


@register_task_kind("multiclass")
class Multiclass(TaskKind):
    """Target (B,) integer classes in 0..C-1; prediction: class probabilities (B, C)."""

    main_metric = ("accuracy", "max")

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.num_outputs < 2:
            raise ModfuseError(f"a multiclass task needs num_outputs >= 2 classes, found {spec.num_outputs}")

    def check_target(self, spec: TaskSpec, target: Tensor, ids: Sequence[Any] | None, fail: Fail) -> Tensor:
        if target.dim() != 1 or (target.is_floating_point() and (target != target.round()).any()):
            raise fail(f"expected integer class indices of shape (B,), found {target.dtype} {tuple(target.shape)}")
        bad = (target < 0) | (target >= spec.num_outputs)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise fail(
                f"expected classes in 0..{spec.num_outputs - 1}, found {int(target[i])} at sample {_sample(ids, i)}"
            )
        return target.long()

    def loss(self, spec: TaskSpec, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target)

    def activate(self, spec: TaskSpec, logits: Tensor) -> Tensor:
        return torch.softmax(logits, dim=1)

    def metrics(self, spec: TaskSpec) -> MetricCollection:
        c = spec.num_outputs
        return MetricCollection(
            {
                "accuracy": Accuracy(task="multiclass", num_classes=c),
                "f1": F1Score(task="multiclass", num_classes=c, average="macro"),
                "auroc": AUROC(task="multiclass", num_classes=c),
            }
        )


@register_task_kind("multilabel")
class Multilabel(TaskKind):
    """Target (B, L) in {0, 1}; prediction: per-label probabilities (B, L)."""

    main_metric = ("auroc", "max")
    late_calibration = True

    def check_target(self, spec: TaskSpec, target: Tensor, ids: Sequence[Any] | None, fail: Fail) -> Tensor:
        b = target.shape[0] if target.dim() else 0
        if target.shape != (b, spec.num_outputs):
            raise fail(f"expected shape (B, {spec.num_outputs}), found {tuple(target.shape)}")
        _check_binary_values(target, ids, fail, "0/1 indicators")
        return target.float()

    def loss(self, spec: TaskSpec, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target)

    def activate(self, spec: TaskSpec, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)

    def metrics(self, spec: TaskSpec) -> MetricCollection:
        n = spec.num_outputs
        return MetricCollection(
            {
                "auroc": AUROC(task="multilabel", num_labels=n),
                "f1": F1Score(task="multilabel", num_labels=n, average="macro"),
            }
        )

    def metric_inputs(self, spec: TaskSpec, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return pred, target.long()


@register_task_kind("regression")
class Regression(TaskKind):
    """Target (B,) or (B, n) finite values; prediction: estimates of the same shape."""

    main_metric = ("rmse", "min")
    additive_evidence = False

    def check_target(self, spec: TaskSpec, target: Tensor, ids: Sequence[Any] | None, fail: Fail) -> Tensor:
        target = _squeeze_single(spec, target)
        b = target.shape[0] if target.dim() else 0
        want = (b,) if spec.num_outputs == 1 else (b, spec.num_outputs)
        if tuple(target.shape) != want:
            raise fail(f"expected shape {want}, found {tuple(target.shape)}")
        if not torch.isfinite(target).all():
            i = int((~torch.isfinite(target)).reshape(b, -1).any(1).nonzero()[0])
            raise fail(f"expected finite values, found {target[i].tolist()} at sample {_sample(ids, i)}")
        return target.float()

    def loss(self, spec: TaskSpec, logits: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(self.activate(spec, logits), target)

    def activate(self, spec: TaskSpec, logits: Tensor) -> Tensor:
        return logits[:, 0] if spec.num_outputs == 1 else logits

    def metrics(self, spec: TaskSpec) -> MetricCollection:
        return MetricCollection(
            {
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "r2": R2Score(),  # torchmetrics >= 1.9 infers the number of outputs
            }
        )


@register_task_kind("survival")
class Survival(TaskKind):
    """Right-censored survival. Target (B, 2) holding (time, event). Two losses (``spec.objective``):

    - ``"hazard"`` (the default): discrete-time logistic hazard (`discrete_time_nll()`) over
      K = num_outputs intervals split at ``spec.boundaries``; prediction: risk (B,) in [0, 1]
      (`survival_risk()`: the expected share of the closed intervals not survived).
    - ``"cox"``: Cox partial likelihood with Breslow ties (`cox_partial_nll()`) over each
      batch's risk sets; one output (num_outputs=1, no boundaries), the log relative risk;
      prediction: that log risk (B,), unbounded (only its order is meaningful: no baseline
      hazard is fitted, so no survival curve).
    """

    main_metric = ("cindex", "max")
    late_calibration = True
    objectives = ("hazard", "cox")

    def check_spec(self, spec: TaskSpec) -> None:
        if spec.objective == "cox":
            if spec.num_outputs != 1 or spec.boundaries:
                raise ModfuseError(
                    f"a survival task with objective='cox' has 1 output (the log risk) and no boundaries, found "
                    f"num_outputs={spec.num_outputs}, boundaries={spec.boundaries}"
                )
            return
        b = spec.boundaries
        if b is None or len(b) != spec.num_outputs - 1:
            raise ModfuseError(
                f"a survival task with {spec.num_outputs} intervals needs {spec.num_outputs - 1} interior "
                f"boundaries, found {None if b is None else len(b)}"
            )
        if any(lo >= hi for lo, hi in itertools.pairwise(b)):
            raise ModfuseError(f"survival boundaries must increase, found {b}")

    def check_target(self, spec: TaskSpec, target: Tensor, ids: Sequence[Any] | None, fail: Fail) -> Tensor:
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
                    f"expected {want}, found (time, event) = {target[i].tolist()} at sample {_sample(ids, i)} "
                    f"({int(bad.sum())} samples have such values)"
                )
        return target.float()

    def loss(self, spec: TaskSpec, logits: Tensor, target: Tensor) -> Tensor:
        if spec.objective == "cox":
            return cox_partial_nll(logits[:, 0], target[:, 0], target[:, 1])
        boundaries = torch.tensor(spec.boundaries, dtype=torch.float32, device=logits.device)
        return discrete_time_nll(logits, target[:, 0], target[:, 1], boundaries)

    def activate(self, spec: TaskSpec, logits: Tensor) -> Tensor:
        return logits[:, 0] if spec.objective == "cox" else survival_risk(logits)

    def metrics(self, spec: TaskSpec) -> MetricCollection:
        return MetricCollection({"cindex": ConcordanceIndex()})


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task.

    Args:
        kind: a registered task kind: ``binary``, ``multiclass``, ``multilabel``,
            ``regression``, ``survival``, or one added with `register_task_kind`.
        num_outputs: output width: 1 for binary, classes for multiclass, labels for multilabel,
            targets for regression, time intervals K for survival.
        boundaries: survival only: the K-1 interior interval boundaries (increasing).
        weight: weight of this task's loss in a multi-task sum.
        objective: the kind's named loss (``TaskKind.objectives``); None: the kind's default.
            Survival: ``"hazard"`` (default; K intervals) or ``"cox"`` (Cox partial likelihood,
            ``TaskSpec("survival", 1, objective="cox")``).

    Output and target shapes (B = batch size):
        logits: (B, num_outputs) for every kind.
        target: binary (B,) or (B, 1) in {0, 1}; multiclass (B,) integer classes; multilabel
        (B, L) in {0, 1}; regression (B,) or (B, n); survival (B, 2) holding (time, event).
    """

    kind: str = "binary"
    num_outputs: int = 1
    boundaries: tuple[float, ...] | None = None
    weight: float = 1.0
    objective: str | None = None
    _impl: TaskKind = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ModfuseError(f"unknown task kind {self.kind!r}; expected one of {TASK_KINDS.available()}")
        if self.num_outputs < 1:
            raise ModfuseError(f"num_outputs must be >= 1, found {self.num_outputs}")
        if self.boundaries is not None:
            object.__setattr__(self, "boundaries", tuple(float(b) for b in self.boundaries))
        impl = TASK_KINDS.get(self.kind)()
        if self.objective is not None and self.objective not in impl.objectives:
            expected = f"one of {list(impl.objectives)}" if impl.objectives else "None (the kind has one loss)"
            raise ModfuseError(f"unknown objective {self.objective!r} for a {self.kind} task; expected {expected}")
        impl.check_spec(self)
        object.__setattr__(self, "_impl", impl)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description; ``TaskSpec(**d)`` rebuilds it (boundaries as a tuple)."""
        out = {
            "kind": self.kind,
            "num_outputs": self.num_outputs,
            "boundaries": list(self.boundaries) if self.boundaries is not None else None,
            "weight": self.weight,
        }
        # only when chosen: the descriptions (and checkpoints) of default-loss tasks stay as before
        return out | ({"objective": self.objective} if self.objective is not None else {})

    def check_target(self, target: Tensor, ids: Sequence[Any] | None = None, name: str = DEFAULT_TASK) -> Tensor:
        """Validate ``target`` and return it in the form `loss()` uses; errors name the task."""

        def fail(msg: str) -> ModfuseError:
            return ModfuseError(f"target of task {name!r} ({self.kind}): {msg}")

        return self._impl.check_target(self, target, ids, fail)

    def loss(self, logits: Tensor, target: Tensor, ids: Sequence[Any] | None = None) -> Tensor:
        """Mean loss over the batch. ``logits`` (B, num_outputs); ``target`` as documented above."""
        target = self.check_target(target, ids)
        if logits.dim() != 2 or logits.shape[1] != self.num_outputs:
            raise ModfuseError(f"expected logits of shape (B, {self.num_outputs}), found {tuple(logits.shape)}")
        return self._impl.loss(self, logits.float(), target)

    def activate(self, logits: Tensor) -> Tensor:
        """Predictions from logits: probabilities (binary (B,), multiclass (B, C), multilabel
        (B, L)), estimates (regression (B,) or (B, n)), risk (survival (B,); the log risk for
        ``objective="cox"``)."""
        return self._impl.activate(self, logits.float())

    def metrics(self) -> MetricCollection:
        """torchmetrics for this task; classification metrics take probabilities, never labels."""
        return self._impl.metrics(self)

    def metric_inputs(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """(predictions, target) in the form `metrics()` expects."""
        return self._impl.metric_inputs(self, self.activate(logits), self.check_target(target))

    @property
    def main_metric(self) -> tuple[str, str]:
        """(name, mode) of the metric to monitor: AUROC/accuracy, RMSE or C-index."""
        return self._impl.main_metric


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
