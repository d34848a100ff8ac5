"""FusionTask: the one Lightning training path for every fusion model."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from lightning import LightningModule
from torch import Tensor, nn
from torchmetrics import MetricCollection

from modfuse.core.model import ModelOutput, expect_output
from modfuse.core.tasks import TaskSpec, as_task_specs, by_task, check_targets
from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError, ReadError
from modfuse.training.optim import build_lr_scheduler, build_optimizer, check_lr_scheduler, check_optimizer
from modfuse.utils.lightning_compat import attached_trainer, is_last_batch, logs_this_step

__all__ = ["FusionTask"]

log = logging.getLogger(__name__)
STAGES = ("train", "val", "test")
MODEL_CONFIG_KEY = "modfuse_model_config"
"""Checkpoint entry holding the model's JSON description."""


FUSED_DEVICES = ("cpu", "cuda")
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def can_fuse(params: Sequence[Tensor]) -> bool | None:
    """True when torch's fused Adam/AdamW kernel supports every parameter: plain tensors (not the
    DTensors of FSDP2 / tensor parallelism) of a floating dtype on CPU or CUDA. The fused kernel
    updates all parameters in one call instead of a Python loop over them (about 3x faster per
    step for the small models of the speed benchmark on CPU, the same update up to rounding);
    None leaves torch's default implementation in place."""
    ok = all(
        type(p) in (Tensor, nn.Parameter) and p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES for p in params
    )
    return True if ok else None


DROPOUT_STATE_KEY = "modfuse_modality_dropout_rng"
"""Checkpoint entry holding the modality-dropout generator state (a ByteTensor)."""


class FusionTask(LightningModule):
    """Trains, evaluates and predicts with any fusion model (in the style of torchgeo's ``BaseTask``).

    Args:
        model: a fusion model (see [`modfuse.fusion.FusionModel`][modfuse.fusion.FusionModel]), or None when a
            subclass builds it in `configure_models()`.
        tasks: the tasks, when the model does not declare ``tasks`` itself: a kind string
            (``"binary"``), a TaskSpec, or a dict name -> TaskSpec.
        lr: learning rate.
        weight_decay: AdamW weight decay.
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"``, or any ``torch.optim`` optimizer as
            ``{"class_path": ..., "init_args": {...}}`` (see [`modfuse.training.optim`][modfuse.training.optim];
            ``lr`` and ``weight_decay`` are this task's).
        scheduler: ``"cosine"`` (per step, over the whole run), ``"plateau"`` (on the monitor),
            None, or any torch scheduler as ``{"class_path": ..., "init_args": {...}}`` (stepped
            per epoch).
        monitor: metric the plateau scheduler and checkpoint callbacks follow (default: the
            main validation metric of the first task, e.g. ``"val/auroc"``).
        modality_dropout: missingness-aware training (training steps only, never validation,
            test or prediction): per-sample modality dropout rate (a float, modality -> rate,
            ``"auto"`` for the library's validated default, or None for none). See
            [`modfuse.training.robust`][modfuse.training.robust].
        unimodal_weight: weight of the unimodal auxiliary losses (the task loss of the model
            run with each modality alone); 0 / None: off, ``"auto"``: the library's default.
        balance: gradient modulation of the encoders, ``"ogm-ge"``, ``"agm"`` or None.
        balance_alpha: strength of the gradient modulation.
        full_weight: with modality dropout, the share of the main loss on the complete batch
            (``"auto"``: the library's default, see [`modfuse.training.robust`][modfuse.training.robust]).
        dropout_rows: the fraction of each batch's samples eligible for modality dropout
            (``"auto"``: the library's default).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        tasks: str | TaskSpec | Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: Literal["adamw", "adam", "sgd"] | dict[str, Any] = "adamw",
        scheduler: Literal["cosine", "plateau"] | dict[str, Any] | None = "cosine",
        monitor: str | None = None,
        modality_dropout: float | Mapping[str, float] | Literal["auto"] | None = None,
        unimodal_weight: float | Literal["auto"] | None = None,
        balance: Literal["ogm-ge", "agm"] | None = None,
        balance_alpha: float = 0.5,
        full_weight: float | Literal["auto"] | None = "auto",
        dropout_rows: float | Literal["auto"] | None = "auto",
    ) -> None:
        super().__init__()
        if isinstance(optimizer, Mapping):  # a bad description fails here, naming the argument
            optimizer = check_optimizer(optimizer, "optimizer")
        if isinstance(scheduler, Mapping):
            scheduler = check_lr_scheduler(scheduler, "scheduler")
        self.save_hyperparameters(ignore=["model", "tasks"])
        # None only until configure_models() builds it (checked just below)
        self.model: nn.Module = model  # type: ignore[assignment]
        self.configure_models()
        if self.model is None:
            raise ModfuseError("FusionTask needs a model (or a subclass whose configure_models builds one)")
        declared = getattr(self.model, "tasks", None)
        self.tasks: dict[str, TaskSpec] = as_task_specs(tasks if tasks is not None else declared or "binary")
        if declared and tasks is not None and as_task_specs(declared) != self.tasks:
            raise ModfuseError(f"the model declares tasks {declared} but FusionTask was given {self.tasks}")
        # tasks as plain dicts, so loggers (CSV, TensorBoard) and checkpoints can store them
        self.save_hyperparameters({**self.hparams, "tasks": {k: spec.to_dict() for k, spec in self.tasks.items()}})
        self.configure_metrics()
        name, mode = next(iter(self.tasks.values())).main_metric
        self.monitor = monitor or f"val/{self._metric_key(next(iter(self.tasks)), name)}"
        self.monitor_mode = mode if monitor is None else self._mode_of(monitor)
        self.read_errors: list[tuple[Any, str, str]] = []
        from modfuse.training.robust import RobustTraining

        robust = RobustTraining(
            self.model,
            modality_dropout,
            unimodal_weight,
            balance,
            balance_alpha,
            seed=torch.initial_seed() % 2**31,
            full_weight=full_weight,
            dropout_rows=dropout_rows,
        )
        self.robust = robust if robust.active else None

    # ------------------------------------------------------------------ hooks
    def setup(self, stage: str) -> None:
        """Check the datamodule's targets against the tasks before the first step, so a bad
        label (NaN, a multilabel 2, an event code 3) is an error naming the task and the sample
        instead of a NaN or wrong loss. Lightning sets the datamodule up before this hook."""
        dataset = getattr(getattr(attached_trainer(self), "datamodule", None), "dataset", None)
        targets = getattr(dataset, "targets", None)
        if stage != "predict" and targets is not None:
            check_targets(targets, self.tasks, getattr(dataset, "ids", None))

    def configure_models(self) -> None:
        """Build ``self.model`` (subclasses); the default keeps the model passed in."""

    def configure_metrics(self) -> None:
        """Create one MetricCollection per stage and task."""
        # "train" is an nn.Module attribute, hence the "_metrics" suffix on the keys
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": nn.ModuleDict({name: spec.metrics() for name, spec in self.tasks.items()})
                for stage in STAGES
            }
        )

    def configure_optimizers(self) -> Any:
        hp: Any = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt: torch.optim.Optimizer
        if not params:
            raise ModfuseError("the model has no trainable parameters")
        if isinstance(hp.optimizer, Mapping):
            opt = build_optimizer(
                hp.optimizer, params, lr=hp.lr, weight_decay=hp.weight_decay, fused=self._fused(params)
            )
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=self._fused(params))
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=self._fused(params))
        else:
            opt = torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay, momentum=0.9)
        if hp.scheduler is None:
            return opt
        if isinstance(hp.scheduler, Mapping):
            return {"optimizer": opt, "lr_scheduler": build_lr_scheduler(hp.scheduler, opt, self.monitor)}
        if hp.scheduler == "cosine":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            if total < 3:  # no room for a warm-up and an annealing phase: a constant rate
                return opt
            # 10% warm-up, but at least 2 steps: torch's one-cycle divides by the warm-up length - 1
            warmup = min(0.5, max(0.1, 2.0 / total))
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=total, pct_start=warmup)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        mode: Literal["min", "max"] = "max" if self.monitor_mode == "max" else "min"
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, patience=3, factor=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": self.monitor}}

    def _fused(self, params: Sequence[Tensor]) -> bool | None:
        """`can_fuse()`, except under mixed precision with gradient clipping: Lightning must
        unscale the gradients before clipping them, which a fused optimizer does inside its step."""
        from lightning.pytorch.plugins.precision import MixedPrecision

        trainer = attached_trainer(self)
        if trainer is not None and trainer.gradient_clip_val and isinstance(trainer.precision_plugin, MixedPrecision):
            return None
        return can_fuse(params)

    def on_train_start(self) -> None:
        self._extend_one_cycle()

    def _extend_one_cycle(self) -> None:
        """Stretch a restored one-cycle schedule to this run's length.

        Resuming from ``last.ckpt`` with a larger ``max_epochs`` restores the scheduler planned
        for the old length, which raises "Tried to step N times" once that many steps are done.
        The warm-up already ran, so only the annealing phase is re-planned: it now ends at the
        new last step (the learning rate follows the stretched cosine from the resumed step on).
        Only a restored schedule (one that has stepped) is stretched, counted in its own unit:
        optimizer steps for ``interval="step"``, epochs for ``"epoch"`` (a recipe's
        ``lr_scheduler:`` one-cycle planned over epochs), divided by its ``frequency``.
        """
        if attached_trainer(self) is None:
            return
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            if not isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) or sched.last_epoch <= 0:
                continue
            units = self.trainer.estimated_stepping_batches if config.interval == "step" else self.trainer.max_epochs
            if units is None or not 0 < units < float("inf"):  # max_epochs=-1: no last step to plan for
                continue
            total = int(units) // max(1, config.frequency)
            if sched.total_steps < total:
                sched.total_steps = total
                sched._schedule_phases[-1]["end_step"] = float(total - 1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The model's description (``class_path``/``init_args``, or a Lego model's
        # ``to_config()``) is stored as JSON text, so ``load_from_checkpoint`` and tools such as
        # ``modfuse merge`` rebuild it without unpickling anything.
        from modfuse.core.io import check_rebuilds, config_of_model

        cached = self.__dict__.get("_model_config")
        if cached is None or cached[0] is not self.model:  # described and checked once per model
            try:
                config = config_of_model(self.model)
                check_rebuilds(self.model, json.loads(json.dumps(config)))
                text: str | None = json.dumps(config)
            except ModfuseError as exc:  # e.g. a user module built from a function argument
                log.warning("checkpoints are saved without a model config (load them with model=...): %s", exc)
                text = None
            cached = self.__dict__["_model_config"] = (self.model, text)
        if cached[1] is not None:
            checkpoint[MODEL_CONFIG_KEY] = cached[1]
        dropout = self.robust.dropout if self.robust is not None else None
        if dropout is not None:
            checkpoint[DROPOUT_STATE_KEY] = dropout.generator_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a resumed run continues the modality-dropout stream where the checkpoint left it
        dropout = self.robust.dropout if self.robust is not None else None
        if dropout is not None and DROPOUT_STATE_KEY in checkpoint:
            dropout.set_generator_state(checkpoint[DROPOUT_STATE_KEY])

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> FusionTask:
        """The task of a checkpoint, its model rebuilt from the JSON config the checkpoint stores.

        The file is always read with ``torch.load(..., weights_only=True)``: nothing is
        unpickled, and the model is built from its description (see
        [`modfuse.core.config`][modfuse.core.config]), not from pickled code. Pass ``model=...`` to load the
        weights into a model you built yourself (e.g. for checkpoints without a config).

        Raises:
            ReadError: naming the file when it cannot be read or holds no model config.
        """
        from modfuse.core.io import model_from_config

        path = Path(checkpoint_path)
        if "model" not in kwargs:
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ReadError(f"cannot read the checkpoint with weights_only=True: {exc}", path=path) from exc
            if not isinstance(ckpt, Mapping) or MODEL_CONFIG_KEY not in ckpt:
                raise ReadError(
                    f"the checkpoint has no {MODEL_CONFIG_KEY!r} (its model could not be described when it "
                    "was saved); pass model=<the model> to load its weights",
                    path=path,
                )
            kwargs["model"] = model_from_config(json.loads(ckpt[MODEL_CONFIG_KEY]))
        kwargs.pop("weights_only", None)
        return super().load_from_checkpoint(  # type: ignore[return-value]
            path, map_location=map_location, strict=strict, weights_only=True, **kwargs
        )

    # ------------------------------------------------------------------ steps
    def forward(self, batch: ModalityBatch) -> ModelOutput:
        return expect_output(self.model(batch), self.model)

    def _metric_key(self, task: str, metric: str) -> str:
        return metric if len(self.tasks) == 1 else f"{task}/{metric}"

    def _mode_of(self, monitor: str) -> str:
        """``"min"`` or ``"max"`` for a logged name (``val/loss``, ``val/auroc``,
        ``val/<task>/rmse``), from the metric's own ``higher_is_better``: never from its name."""
        key = monitor.partition("/")[2]
        if key == "loss" or key.endswith("/loss"):
            return "min"
        for task, spec in self.tasks.items():
            for metric_name, metric in spec.metrics().items():
                if key == self._metric_key(task, metric_name):
                    return "max" if metric.higher_is_better else "min"
        known = ["val/loss"] + [
            f"val/{self._metric_key(t, str(m))}" for t, spec in self.tasks.items() for m in spec.metrics().keys()
        ]
        raise ModfuseError(f"monitor: {monitor!r} is not a logged metric; expected one of {known}")

    def compute_loss(self, outputs: ModelOutput, batch: ModalityBatch) -> Tensor:
        """The model's own ``compute_loss`` if it has one, else the weighted sum of task losses.

        Every strategy's task terms come from `TaskSpec.loss` (the task kind's loss); a
        different loss is a different task kind (`modfuse.core.tasks.register_task_kind`)."""
        own: Any = getattr(self.model, "compute_loss", None)
        if own is not None:
            return own(outputs, batch)
        if batch.target is None:
            raise ModfuseError("the batch has no target; training and evaluation need one")
        logits = outputs.logits
        targets = by_task(batch.target, self.tasks)
        return cast(
            Tensor, sum(spec.weight * spec.loss(logits[k], targets[k], batch.ids) for k, spec in self.tasks.items())
        )

    def _shared_step(self, batch: ModalityBatch, stage: str) -> Tensor:
        if batch.errors:
            self.read_errors.extend(batch.errors)
            self.log(
                f"{stage}/modalities_marked_missing",
                float(len(batch.errors)),
                reduce_fx="sum",
                batch_size=batch.batch_size,
            )
        outputs = self(batch)
        loss = self.compute_loss(outputs, batch)
        if stage != "train" or self._log_train_step_now():
            self.log(
                f"{stage}/loss",
                loss,
                prog_bar=stage != "test",
                batch_size=batch.batch_size,
                sync_dist=stage != "train",
            )
        if stage != "train":
            logits = outputs.logits
            targets = by_task(batch.target, self.tasks)
            for name, spec in self.tasks.items():
                coll: MetricCollection = cast(Any, self.metrics)[f"{stage}_metrics"][name]
                coll.update(*spec.metric_inputs(logits[name].detach(), targets[name]))
        return loss

    def _log_train_step_now(self) -> bool:
        """Whether this training step's loss goes to ``self.log``.

        ``train/loss`` is a per-step value, and Lightning writes per-step values to the loggers
        only every ``Trainer(log_every_n_steps=...)`` steps. Each ``self.log`` call costs about a
        millisecond of bookkeeping, which is a large part of a step for small models, so the loss
        is logged on exactly the steps the loggers record, plus the last batch of each epoch (so
        ``trainer.callback_metrics["train/loss"]`` at epoch end is the last batch's loss, as
        before). The progress bar therefore shows the loss of the latest logged step.
        """
        trainer = attached_trainer(self)
        if trainer is None:
            return True
        logs, last = logs_this_step(trainer), is_last_batch(trainer)
        if logs is None or last is None:  # a Lightning version without these internals: log every step
            return True
        return logs or last

    def training_step(self, batch: ModalityBatch, batch_idx: int) -> Tensor:
        if self.robust is not None:
            return self.robust.step(self, batch)
        return self._shared_step(batch, "train")

    def on_after_backward(self) -> None:
        if self.robust is not None:
            self.robust.modulate(self.model)

    def validation_step(self, batch: ModalityBatch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: ModalityBatch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        stage_metrics: Any = self.metrics[f"{stage}_metrics"]
        for name, coll in stage_metrics.items():
            for metric, value in coll.compute().items():
                self.log(f"{stage}/{self._metric_key(name, metric)}", value, prog_bar=stage == "val", sync_dist=True)
            coll.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def predict_step(self, batch: ModalityBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Per-sample predictions with ids: ``{"ids": [...], "<task>": activated predictions}``."""
        logits = self(batch).logits
        out: dict[str, Any] = {"ids": list(batch.ids)}
        for name, spec in self.tasks.items():
            out[name] = spec.activate(logits[name]).detach().cpu()
        return out
