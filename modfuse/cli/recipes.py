"""``modfuse fit|validate|test|predict``: recipes through LightningCLI (see
[`modfuse.cli`][modfuse.cli] for the commands, the recipe keys and the run folder layout).

`ModfuseCLI` adds modfuse's defaults to LightningCLI: checkpoints by the task's monitored
metric, CSV + TensorBoard logs, seed 0, best-checkpoint evaluation, the staged fit of Lego
models, and the recipe keys ``compare``, ``test_after_fit``, ``num_threads`` and
``checkpoint_every_n_steps``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer

from modfuse.cli.checkpoints import (
    best_checkpoint,
    check_checkpoint,
    checkpoint_path,
    use_checkpoint_model,
    use_saved_model,
)
from modfuse.cli.reports import (
    best_summary,
    describe_best,
    final_metrics,
    predictions_frame,
    print_table,
    with_labels_and_presence,
    write_metrics,
)
from modfuse.cli.stages import StagesDone, run_stages
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.errors import ModfuseError
from modfuse.training.callbacks import AtomicCheckpoint, RandomStates, allow_unused_parameters, save_atomic
from modfuse.training.optim import check_lr_scheduler, check_optimizer
from modfuse.training.runner import build_trainer, stages_of
from modfuse.training.task import FusionTask

__all__ = ["DEFAULT_ROOT", "ModfuseCLI", "run_recipe"]

DEFAULT_ROOT = "runs/default"


def run_recipe(args: Sequence[str] | None) -> ModfuseCLI:
    """Run ``fit``/``validate``/``test``/``predict`` (``args`` start with the subcommand)."""
    return ModfuseCLI(args=None if args is None else list(args))


# ---------------------------------------------------------------------------- the Lightning CLI
class ModfuseCLI(LightningCLI):
    """LightningCLI with modfuse's defaults: checkpoints by the task's monitored metric,
    CSV + TensorBoard logs, rich progress bars, seed 0, best-checkpoint evaluation."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self.random_states = RandomStates()
        self.stages_done = StagesDone()  # a staged fit's stages, recorded in its checkpoints
        self.initial_encoders: dict[str, torch.nn.Module] | None = None
        super().__init__(
            FusionTask,
            MultiModalDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--compare", type=list[str], default=[], help="strategies to train and compare")
        parser.add_argument("--test_after_fit", type=bool, default=False, help="test the best checkpoint")
        parser.add_argument(
            "--num_threads", type=int | None, default=None, help="torch CPU threads (default: torch's choice)"
        )
        parser.add_argument(
            "--checkpoint_every_n_steps", type=int, default=0, help="refresh last.ckpt every N steps (0: epochs)"
        )
        parser.add_argument(
            "--split", type=str, default="test", help="predict: the part to predict (train, val, test or all)"
        )
        # LightningCLI's optimizer: / lr_scheduler: keys (class_path + init_args, or a class name);
        # they become the task's optimizer / scheduler (see apply_optimizer_keys)
        parser.add_optimizer_args((Optimizer,))
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
        parser.set_defaults({"trainer.default_root_dir": DEFAULT_ROOT})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # LightningCLI reads the checkpoint's hyperparameters right after parsing, before any
        # hook: an unreadable or pickled-code file is a message naming it here, not a traceback
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and Path(ckpt).is_file() and Path(ckpt).suffix != ".safetensors":
            check_checkpoint(Path(ckpt))

    # ------------------------------------------------------------ config helpers
    def setting(self, key: str, default: Any = None) -> Any:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        return config.get(key, default)

    @property
    def root(self) -> Path:
        return Path(self.setting("trainer", {}).get("default_root_dir") or DEFAULT_ROOT)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer_config = self.setting("trainer", {})
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = default_loggers(self.root)
        callbacks = run_callbacks(
            self.root,
            self.model,
            trainer_config,
            self.setting("checkpoint_every_n_steps", 0),
        )
        kwargs["callbacks"] = [
            *(trainer_config.get("callbacks") or []),
            *callbacks,
            self.random_states,
            self.stages_done,
        ]
        return allow_unused_parameters(super().instantiate_trainer(**kwargs))

    # ------------------------------------------------------------ subcommand hooks
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("num_threads")
        if threads:
            torch.set_num_threads(int(threads))
            # DDP processes and Lightning's own CPU thread setting follow the same number
            os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))
        apply_optimizer_keys(config)

    def before_fit(self) -> None:
        encoders = getattr(self.model.model, "encoders", None)
        if self.setting("compare") and encoders is not None:
            # fresh, untrained copies for the strategies compared after the main fit
            self.initial_encoders = copy.deepcopy(dict(encoders))
        self.load_weights_only()
        resume = self.config_init[self.subcommand].get("ckpt_path")
        if resume == "last" and (self.root / "checkpoints" / "last.ckpt").is_file():
            check_checkpoint(self.root / "checkpoints" / "last.ckpt")
        elif isinstance(resume, str) and resume not in ("last", "best", "hpc") and not resume.startswith("registry"):
            check_checkpoint(Path(resume))

    def after_fit(self) -> None:
        name = f"{type(self.model.model).__name__} (recipe)"
        best = best_checkpoint(self.trainer)
        results = {name: self.validate_best(self.trainer, self.model, best)}
        if self.setting("test_after_fit") or self.setting("compare"):
            results[name].update(self.evaluate(self.trainer, self.model, best))
        for strategy in self.setting("compare") or []:
            results[strategy] = self.train_compared(strategy)
        if self.trainer.is_global_zero:
            summary = best_summary(best, self.model.monitor)
            write_metrics(self.root / "metrics.json", results, best, summary)
            print_table(results, title=f"modfuse fit: {self.root}\n{describe_best(summary)}")

    def validate_best(self, trainer: Trainer, task: Any, ckpt: str | None) -> dict[str, float]:
        """Validation metrics of the best checkpoint (not of the last epoch); the last
        validation's when the run kept no checkpoint."""
        if ckpt is None:
            return final_metrics(trainer, "val/")
        # the best checkpoint's metrics go to metrics.json and the summary, not into the training
        # curves: logged, they would add a second validation row for an epoch already validated
        loggers, trainer.loggers = trainer.loggers, []
        try:
            out = trainer.validate(task, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
        finally:
            trainer.loggers = loggers
        return {k: float(v) for k, v in sorted((out[0] if out else {}).items()) if k.startswith("val/")}

    def evaluate(self, trainer: Trainer, task: Any, ckpt: str | None) -> dict[str, float]:
        out = trainer.test(task, datamodule=self.datamodule, ckpt_path=ckpt, verbose=False, weights_only=True)
        return {k: float(v) for k, v in (out[0] if out else {}).items()}

    def train_compared(self, strategy: str) -> dict[str, float]:
        from modfuse.fusion import build

        if self.initial_encoders is None:
            raise ModfuseError(
                f"compare: [{strategy}] needs a recipe model with `encoders` (found {type(self.model.model).__name__})"
            )
        model = build(strategy, encoders=copy.deepcopy(self.initial_encoders), tasks=self.model.tasks)
        # the recipe task's settings (its tasks are plain dicts in hparams); "_class_path" and
        # "_instantiator" are LightningCLI's bookkeeping, not arguments
        hp = {k: v for k, v in self.model.hparams.items() if not k.startswith("_")}
        task = type(self.model)(model=model, **hp)
        root = self.root / "compare" / strategy
        kwargs = compared_trainer_kwargs(self.setting("trainer", {}))
        callbacks = run_callbacks(root, task, self.setting("trainer", {}), 0)
        trainer = build_trainer(**kwargs, default_root_dir=str(root), logger=default_loggers(root), callbacks=callbacks)
        self.fit_stages(trainer, task)
        best = best_checkpoint(trainer)
        metrics = self.validate_best(trainer, task, best)
        metrics.update(self.evaluate(trainer, task, best))
        return metrics

    def fit(self, model: FusionTask, datamodule: Any = None, ckpt_path: str | None = None, **kwargs: Any) -> None:
        self.fit_stages(self.trainer, model, ckpt_path, kwargs.get("weights_only", True))

    def fit_stages(
        self, trainer: Trainer, task: FusionTask, ckpt_path: str | None = None, weights_only: bool = True
    ) -> None:
        """Train ``task`` by its model's training stages (see [`modfuse.training.runner`][modfuse.training.runner]).

        A one-stage model trains with the recipe's trainer (checkpoints, resume, logs). A staged
        model (``lego-merge``: blocks apart; ``lego-fuse``: blocks apart, then the chain) runs
        the runner's stages with the recipe's trainer settings, writing a stage checkpoint after
        each stage but the last (see [`modfuse.cli.stages`][modfuse.cli.stages]); ``ckpt_path``
        (``last`` or a stage checkpoint) resumes after the stages it finished. The recipe's
        trainer then validates the final model and writes it as ``best.ckpt`` and ``last.ckpt``.

        Raises:
            ModfuseError: when a staged run is asked to resume from something else than
                ``last`` or a stage checkpoint file.
        """
        if stages_of(task.model) == ("model",):
            trainer.fit(task, datamodule=self.datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
            return
        seed = self.setting("seed_everything")  # True: LightningCLI drew one; False: none
        fit_kwargs = {
            "max_epochs": int(trainer.max_epochs if trainer.max_epochs is not None else -1),
            "seed": seed if type(seed) is int else None,
            "trainer_kwargs": stage_trainer_kwargs(self.setting("trainer", {})),
        }
        callback = trainer.checkpoint_callback
        folder = Path(callback.dirpath) if isinstance(callback, ModelCheckpoint) and callback.dirpath else None
        self.stages_done.done = run_stages(
            task,
            self.datamodule,
            fit_kwargs=fit_kwargs,
            folder=folder,
            resume=self.stage_checkpoint(ckpt_path, task),
            write=trainer.is_global_zero,
        )
        trainer.validate(task, datamodule=self.datamodule, verbose=False, weights_only=True)
        save_final_checkpoints(trainer, task)

    def stage_checkpoint(self, ckpt_path: str | None, task: FusionTask) -> Path | None:
        """The stage checkpoint a staged fit resumes from (None: start afresh)."""
        if ckpt_path is None:
            return None
        if ckpt_path == "last":
            last = self.root / "checkpoints" / "last.ckpt"
            if not last.is_file():
                rank_zero_warn(f"--ckpt_path last: no {last} yet; the staged fit starts from its first stage")
                return None
            return last
        if ckpt_path in ("best", "hpc") or ckpt_path.startswith("registry") or not Path(ckpt_path).is_file():
            raise ModfuseError(
                f"--ckpt_path {ckpt_path}: a {type(task.model).__name__} trains in stages "
                f"({', '.join(stages_of(task.model))}) and resumes from 'last' or a stage checkpoint file "
                "(checkpoints/stage-<i>-<name>.ckpt)"
            )
        return Path(ckpt_path)

    def before_validate(self) -> None:
        self.resolve_eval_checkpoint()

    def before_test(self) -> None:
        self.resolve_eval_checkpoint()

    def before_predict(self) -> None:
        split = self.setting("split", "test")
        if split not in ("train", "val", "test", "all"):
            raise ModfuseError(f"--split: expected train, val, test or all, found {split!r}")
        self.datamodule.predict_split = split
        self.resolve_eval_checkpoint()

    def after_test(self) -> None:
        if self.trainer.is_global_zero:
            print_table({"recipe": final_metrics(self.trainer, "test/")}, title=f"modfuse test: {self.root}")

    def resolve_eval_checkpoint(self) -> None:
        config = self.config_init[self.subcommand]
        path = checkpoint_path(self.root, config.get("ckpt_path"))
        if path.suffix == ".safetensors":  # a saved model (modfuse.save, modfuse merge): no trainer state
            use_saved_model(self.model, path)
            config["ckpt_path"] = None
        else:
            use_checkpoint_model(self.model, check_checkpoint(path), path)
            config["ckpt_path"] = str(path)
        self.load_weights_only()

    def load_weights_only(self) -> None:
        """Load checkpoints with ``torch.load(weights_only=True)``; refuse to run where the
        installed Lightning cannot take the argument (it would unpickle the file instead)."""
        config = self.config_init[self.subcommand]
        if "weights_only" not in config:
            raise ModfuseError(
                f"this Lightning's Trainer.{self.subcommand} has no weights_only argument, so a checkpoint would "
                "be unpickled (arbitrary code could run); modfuse needs lightning>=2.6"
            )
        if config["weights_only"] is None:
            config["weights_only"] = True
        elif config["weights_only"] is not True:
            raise ModfuseError("weights_only must stay true: modfuse never unpickles a checkpoint file")

    def predict(self, model: Any, datamodule: Any = None, ckpt_path: str | None = None, **kwargs: Any) -> None:
        outputs = self.trainer.predict(
            model,
            datamodule=datamodule,
            ckpt_path=ckpt_path,
            return_predictions=True,
            weights_only=kwargs.get("weights_only", True),
        )
        if self.trainer.is_global_zero and outputs:
            path = self.root / "predictions.csv"
            frame = predictions_frame(cast(list[dict[str, Any]], outputs))
            with_labels_and_presence(frame, self.datamodule.dataset, list(model.tasks)).to_csv(path, index=False)
            print(f"wrote {path} ({len(frame)} samples of the {self.datamodule.predict_split!r} split)")


# ---------------------------------------------------------------------------- recipe keys
def apply_optimizer_keys(config: Any) -> None:
    """Hand a recipe's ``optimizer:`` / ``lr_scheduler:`` (LightningCLI's keys) to its task.

    ``optimizer:`` replaces the task's optimizer and ``lr_scheduler:`` its scheduler (each
    alone: an optimizer without a scheduler keeps the task's ``scheduler``). The optimizer's
    ``lr`` and ``weight_decay`` (given, or the class's defaults as LightningCLI fills them in)
    become the task's ``lr`` / ``weight_decay``, so the training stages, the compared
    strategies and the checkpoint's hyperparameters all use the same numbers. A scheduler is
    stepped once per epoch (LightningCLI's default), so e.g. ``CosineAnnealingLR``'s ``T_max``
    counts epochs.

    Raises:
        ModfuseError: naming ``optimizer`` / ``lr_scheduler`` when a description cannot be built.
    """
    optimizer, scheduler = config.get("optimizer"), config.get("lr_scheduler")
    if optimizer is None and scheduler is None:
        return
    init = config.get("model", {}).get("init_args")
    if init is None:
        raise ModfuseError("optimizer: / lr_scheduler: need a model: section with init_args (a FusionTask)")
    if optimizer is not None:
        spec = check_optimizer(_plain(optimizer), "optimizer")
        for name in ("lr", "weight_decay"):
            value = spec["init_args"].pop(name, None)
            if value is None:
                continue
            if init.get(name) is not None and float(init.get(name)) != float(value):
                rank_zero_warn(
                    f"optimizer.init_args.{name}={value} (given or {spec['class_path']}'s default) replaces "
                    f"model.init_args.{name}={init.get(name)}"
                )
            init[name] = float(value)
        init["optimizer"] = spec
    if scheduler is not None:
        init["scheduler"] = check_lr_scheduler(_plain(scheduler), "lr_scheduler")


def _plain(value: Any) -> Any:
    """A jsonargparse Namespace as plain dicts (checkpoints store the hyperparameters)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------- trainer pieces
def default_loggers(root: Path) -> list[Any]:
    """CSV and TensorBoard loggers under ``root/csv`` and ``root/tensorboard``."""
    return [CSVLogger(str(root), name="csv"), TensorBoardLogger(str(root), name="tensorboard")]


def run_callbacks(root: Path, task: Any, trainer_config: dict[str, Any], every_n_steps: int) -> list[Any]:
    """Checkpoints (best by ``task.monitor`` + last; optionally last every N steps) and a rich
    progress bar, unless the recipe configures its own."""
    given = trainer_config.get("callbacks") or []
    callbacks: list[Any] = []
    if trainer_config.get("enable_checkpointing", True) is not False and not any(
        isinstance(c, ModelCheckpoint) for c in given
    ):
        folder = str(root / "checkpoints")
        callbacks.append(
            AtomicCheckpoint(
                dirpath=folder,
                filename="best",
                monitor=task.monitor,
                mode=task.monitor_mode,
                save_top_k=1,
                save_last=True,
                enable_version_counter=False,
            )
        )
        if every_n_steps:
            callbacks.append(
                AtomicCheckpoint(
                    dirpath=folder,
                    save_top_k=0,
                    save_last=True,
                    every_n_train_steps=every_n_steps,
                    enable_version_counter=False,
                )
            )
    if trainer_config.get("enable_progress_bar", True) is not False and not any(
        isinstance(c, ProgressBar) for c in given
    ):
        callbacks.append(RichProgressBar(leave=True))
    return callbacks


def compared_trainer_kwargs(trainer_config: dict[str, Any]) -> dict[str, Any]:
    """The recipe's trainer settings for a compared strategy (own logs, checkpoints, callbacks)."""
    skip = {"callbacks", "logger", "default_root_dir", "enable_checkpointing", "strategy", "plugins"}
    kwargs = {k: v for k, v in trainer_config.items() if k not in skip}
    strategy = trainer_config.get("strategy", "auto")
    # a strategy object belongs to one trainer; pass names through only
    kwargs["strategy"] = strategy if isinstance(strategy, str) else "auto"
    kwargs["enable_model_summary"] = False
    return kwargs


def stage_trainer_kwargs(trainer_config: dict[str, Any]) -> dict[str, Any]:
    """The recipe's trainer settings for the trainers of a staged fit (each run sets its own
    epochs; no logger, checkpoints or progress bar of their own)."""
    kwargs = compared_trainer_kwargs(trainer_config)
    for key in ("max_epochs", "enable_progress_bar"):
        kwargs.pop(key, None)
    kwargs["enable_progress_bar"] = False
    return kwargs


def save_final_checkpoints(trainer: Trainer, task: FusionTask) -> None:
    """Write the task's final weights (a staged fit's result) as the recipe checkpoint
    callback's best and last checkpoint (atomically), so ``test`` and ``--test_after_fit``
    find them as after a one-stage fit."""
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
        return
    folder = Path(callback.dirpath)
    folder.mkdir(parents=True, exist_ok=True)
    best = str(folder / f"{callback.filename or 'best'}{callback.FILE_EXTENSION}")
    save_atomic(trainer, best)
    callback.best_model_path = best
    score = trainer.callback_metrics.get(task.monitor)
    if score is not None:
        callback.best_model_score = score.detach().clone()
    if callback.save_last:
        last = str(folder / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}")
        save_atomic(trainer, last)
        callback.last_model_path = last
