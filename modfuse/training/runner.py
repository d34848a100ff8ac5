"""The one training runner: every path that trains a model (the ``modfuse`` CLI, the estimators,
the Lego workflow helpers, the subset specialists, the benchmarks) builds its Trainer with
`build_trainer()` and runs a model's training procedure with `fit()`.

A model declares its procedure as a sequence of stage names (``training_stages``); a strategy
name therefore means one procedure wherever it is trained:

| stage | what it does |
| --- | --- |
| ``"model"`` | the whole model through [`FusionTask`][modfuse.training.task.FusionTask] (every strategy but the Lego ones) |
| ``"blocks"`` | each Lego block alone on the rows that have its modality, then calibrated on its own validation rows |
| ``"chain"`` | the trained blocks chained into a fresh `LegoFuse` (best block first, merge as base when calibrated), fine-tuned on paired rows, the budget chosen on validation |

``LegoMerge`` declares ``("blocks",)`` (merging needs no training); ``LegoFuse`` declares
``("blocks", "chain")``.

Example:
    >>> result = fit(build("lego-fuse", encoders=encs, tasks="binary"), datamodule, max_epochs=20)
    >>> result.model, result.stages
    (LegoFuse(...), ['blocks', 'chain'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import nn

from modfuse.errors import ModfuseError
from modfuse.registry import Registry
from modfuse.training.callbacks import BestWeights, allow_unused_parameters
from modfuse.utils.progress import progress_enabled

__all__ = [
    "FUSE_EPOCHS",
    "STAGES",
    "FitResult",
    "FitSettings",
    "StageRun",
    "build_trainer",
    "fit",
    "stages_of",
    "train_task",
]

FUSE_EPOCHS = 5
"""Fine-tuning epochs of the ``"chain"`` stage (its learning rate: a third of the blocks')."""

Mode = Literal["min", "max"]
Stage = Callable[[nn.Module, Any, "FitSettings"], "StageRun"]
"""A stage: (model, data, settings) -> what it left."""

STAGES: Registry[Stage] = Registry(
    "training stage",
    lazy={
        "model": "modfuse.training.runner:whole_model_stage",
        "blocks": "modfuse.lego.workflow:blocks_stage",
        "chain": "modfuse.lego.workflow:chain_stage",
    },
)


def build_trainer(
    max_epochs: int | None = None,
    callbacks: Sequence[Any] = (),
    *,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    logger: Any = False,
    enable_checkpointing: bool | None = None,
    enable_progress_bar: bool | None = None,
    enable_model_summary: bool = False,
    **kwargs: Any,
) -> L.Trainer:
    """The one place a ``lightning.Trainer`` is built (the CLI's comes from LightningCLI and gets
    the same DDP setting through `allow_unused_parameters()`).

    Defaults suit in-process training (no logger or summary; a progress bar in notebooks and
    terminals but not in CI, `progress_enabled()`; checkpoints only by
    the ``ModelCheckpoint`` callbacks given, Lightning's default one never); every other
    ``lightning.Trainer`` argument (precision, strategy, limit_val_batches...) passes
    through. A DDP strategy reduces the gradients of parameters a process left unused (a batch
    without some modality never runs its encoder).
    """
    if enable_progress_bar is None:
        enable_progress_bar = progress_enabled()
    if enable_checkpointing is None:
        enable_checkpointing = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=list(callbacks),
        accelerator=accelerator,
        devices=devices,
        logger=logger,
        enable_checkpointing=enable_checkpointing,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=enable_model_summary,
        **kwargs,
    )
    return allow_unused_parameters(trainer)


@dataclass
class FitSettings:
    """What every stage reads (see `fit()` for the meaning of each)."""

    max_epochs: int = 10
    lr: float = 1e-3
    batch_size: int | None = None
    seed: int | None = None
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    monitor: str | None = None
    mode: Mode | None = None
    patience: int | None = None
    restore_best: bool = True
    fuse_epochs: int = FUSE_EPOCHS
    fuse_lr: float | Sequence[float] | None = None
    task: Any = None  # a FusionTask given to fit(): the "model" stage trains it as it is

    def keeper(self, task: Any) -> tuple[list[Any], BestWeights | None]:
        """Fresh early-stopping / best-weights callbacks for one training run of ``task``."""
        monitor = self.monitor or task.monitor
        mode = self.mode or task.monitor_mode
        callbacks: list[Any] = []
        if self.patience is not None:
            callbacks.append(EarlyStopping(monitor, patience=self.patience, mode=mode))
        best = BestWeights(monitor, mode) if self.restore_best else None
        if best is not None:
            callbacks.append(best)
        return callbacks, best


@dataclass
class StageRun:
    """What one stage leaves: its model (possibly a new one), and for a single Lightning fit
    its trainer and BestWeights callback."""

    model: nn.Module
    trainer: L.Trainer | None = None
    best: BestWeights | None = None


@dataclass
class FitResult:
    """What `fit()` returns.

    Attributes:
        model: the trained model in eval mode (a ``"chain"`` stage returns a new `LegoFuse`).
        stages: the stages that ran, in order.
        best_epoch: the restored best validation epoch of the last stage with one (None: none).
        best_score: its monitored value.
        epochs: epochs run by the last stage that was one Lightning fit (None: none was).
    """

    model: nn.Module
    stages: list[str]
    best_epoch: int | None = None
    best_score: float | None = None
    epochs: int | None = None


def stages_of(model: nn.Module) -> tuple[str, ...]:
    """The training stages ``model`` declares (``model.training_stages``), default ``("model",)``."""
    declared = getattr(model, "training_stages", None)
    if callable(declared):
        declared = declared()
    return tuple(declared) if declared else ("model",)


def fit(
    model: nn.Module,
    data: Any,
    *,
    max_epochs: int = 10,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    trainer_kwargs: Mapping[str, Any] | None = None,
    monitor: str | None = None,
    mode: Mode | None = None,
    patience: int | None = None,
    restore_best: bool = True,
    fuse_epochs: int = FUSE_EPOCHS,
    fuse_lr: float | Sequence[float] | None = None,
    stages: Sequence[str] | None = None,
) -> FitResult:
    """Run the training stages ``model`` declares (see the module's table), in order.

    Args:
        model: a fusion model, or a [`FusionTask`][modfuse.training.task.FusionTask]: its lr and
            other settings then apply to every stage, and a ``"model"`` stage trains it as given.
        data: a `MultiModalDataModule` (its train split trains, its val split validates) or,
            for Lego stages, a `MultiModalDataset` (all rows train).
        max_epochs: epochs of the ``"model"`` stage and of each block of ``"blocks"``.
        lr: learning rate (default: the task's, else 1e-3).
        batch_size: batch size of the Lego stages' loaders (default: the datamodule's, else 32).
        seed: the seed of the Lego stages' runs (each re-seeds Lightning with it; default 0).
            A ``"model"`` stage leaves the global random state as it finds it (the
            datamodule's seed orders the batches).
        task_kwargs: other ``FusionTask`` arguments (weight_decay, modality_dropout, ...).
        trainer_kwargs: other `build_trainer()` arguments (accelerator, precision, ...).
        monitor, mode: the metric that early stopping and the best weights follow (default:
            the task's main validation metric and its direction); give both or neither.
        patience: stop a run after this many validations without improvement (None: never).
        restore_best: end each run with the weights of its best validation epoch.
        fuse_epochs: fine-tuning epochs of the ``"chain"`` stage.
        fuse_lr: its learning rate(s) (default: ``lr / 3``).
        stages: run these stages instead of the declared ones.

    Returns:
        a `FitResult`.
    """
    from modfuse.training.task import FusionTask

    if (monitor is None) != (mode is None):
        raise ModfuseError(f"give monitor and mode together (found monitor={monitor!r}, mode={mode!r})")
    task = model if isinstance(model, FusionTask) else None
    hp: dict[str, Any] = {}
    if task is not None:
        hp = {k: v for k, v in task.hparams.items() if not k.startswith("_") and k != "tasks"}
        model = task.model
    hp.update(task_kwargs or {})
    default_lr = hp.pop("lr", 1e-3)
    settings = FitSettings(
        max_epochs=max_epochs,
        lr=float(lr if lr is not None else default_lr),
        batch_size=batch_size,
        seed=seed,
        task_kwargs=hp,
        trainer_kwargs=dict(trainer_kwargs or {}),
        monitor=monitor,
        mode=mode,
        patience=patience,
        restore_best=restore_best,
        fuse_epochs=fuse_epochs,
        fuse_lr=fuse_lr,
        task=task,
    )
    names = list(stages if stages is not None else stages_of(model))
    result = FitResult(model, [])
    for name in names:
        run = STAGES.get(name)(model, data, settings)
        model = run.model
        result.stages.append(name)
        if run.trainer is not None:
            result.epochs = int(run.trainer.current_epoch)
        if run.best is not None and run.best.best_epoch is not None:
            result.best_epoch, result.best_score = run.best.best_epoch, run.best.best
    result.model = model.eval()
    if task is not None:
        task.model = result.model
    return result


def train_task(
    task: Any,
    train: Any,
    val: Any = None,
    settings: FitSettings | None = None,
    callbacks: Sequence[Any] = (),
) -> tuple[L.Trainer, BestWeights | None]:
    """One Lightning fit of ``task``: on a datamodule (``train``) or on loaders.

    Early stopping and the best weights follow ``settings`` when there is validation data.

    Returns:
        (the trainer, its BestWeights callback or None).
    """
    settings = settings or FitSettings()
    kwargs = dict(settings.trainer_kwargs)
    has_val = val is not None or _has_val(train)
    keep, best = settings.keeper(task) if has_val else ([], None)
    if not has_val:
        kwargs["limit_val_batches"] = 0
    extra = [*kwargs.pop("callbacks", []), *callbacks, *keep]
    trainer = build_trainer(settings.max_epochs, extra, **kwargs)
    if isinstance(train, L.LightningDataModule):
        trainer.fit(task, datamodule=train)
    else:
        trainer.fit(task, train, val)
    return trainer, best


def _has_val(data: Any) -> bool:
    splits = getattr(data, "splits", None)
    if not isinstance(data, L.LightningDataModule):
        return False
    if splits is None:
        data.setup("fit")
        splits = getattr(data, "splits", None)
    return splits is None or len(splits.get("val", ())) > 0


def whole_model_stage(model: nn.Module, data: Any, settings: FitSettings) -> StageRun:
    """The ``"model"`` stage: the whole model through ``FusionTask`` on a datamodule."""
    from modfuse.training.task import FusionTask

    given = settings.task
    task = given if given is not None and given.model is model else None
    if task is None:
        task = FusionTask(model, lr=settings.lr, **settings.task_kwargs)
    trainer, best = train_task(task, data, settings=settings)
    return StageRun(task.model, trainer, best)
