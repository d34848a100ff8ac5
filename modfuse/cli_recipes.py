"""Recipes through LightningCLI and the explain/robustness reports: the part of the ``modfuse``
command line that needs torch and Lightning (see [`modfuse.cli`][modfuse.cli] for the commands, the
recipe keys and the run folder layout)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from modfuse.data.datamodule import MultiModalDataModule
from modfuse.errors import ModfuseError, ReadError
from modfuse.training.callbacks import AtomicCheckpoint, RandomStates, allow_unused_parameters, save_atomic
from modfuse.training.runner import build_trainer, stages_of
from modfuse.training.task import FusionTask

__all__ = ["ModfuseCLI", "check_checkpoint", "checkpoint_path", "report_main", "run_recipe"]

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
        parser.set_defaults({"trainer.default_root_dir": DEFAULT_ROOT})

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyperparameters while parsing, before any hook:
        # an unreadable or pickled-code file is a message naming it here, not a traceback
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and Path(ckpt).is_file() and Path(ckpt).suffix != ".safetensors":
            check_checkpoint(Path(ckpt))
        super()._parse_ckpt_path()

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
        kwargs["callbacks"] = [*(trainer_config.get("callbacks") or []), *callbacks, self.random_states]
        return allow_unused_parameters(super().instantiate_trainer(**kwargs))

    # ------------------------------------------------------------ subcommand hooks
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        threads = config.get("num_threads")
        if threads:
            torch.set_num_threads(int(threads))
            # DDP processes and Lightning's own CPU thread setting follow the same number
            os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))

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
        results = {name: final_metrics(self.trainer, "val/")}
        best = best_checkpoint(self.trainer)
        if self.setting("test_after_fit") or self.setting("compare"):
            results[name].update(self.evaluate(self.trainer, self.model, best))
        for strategy in self.setting("compare") or []:
            results[strategy] = self.train_compared(strategy)
        if self.trainer.is_global_zero:
            write_metrics(self.root / "metrics.json", results, best)
            print_table(results, title=f"modfuse fit: {self.root}")

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
        metrics = final_metrics(trainer, "val/")
        metrics.update(self.evaluate(trainer, task, best_checkpoint(trainer)))
        return metrics

    def fit(self, model: FusionTask, datamodule: Any = None, ckpt_path: str | None = None, **kwargs: Any) -> None:
        self.fit_stages(self.trainer, model, ckpt_path, kwargs.get("weights_only", True))

    def fit_stages(
        self, trainer: Trainer, task: FusionTask, ckpt_path: str | None = None, weights_only: bool = True
    ) -> None:
        """Train ``task`` by its model's training stages (see [`modfuse.training.runner`][modfuse.training.runner]).

        A one-stage model trains with the recipe's trainer (checkpoints, resume, logs). A staged
        model (``lego-merge``: blocks apart; ``lego-fuse``: blocks apart, then the chain) runs
        the runner's stages with the recipe's trainer settings; the recipe's trainer then
        validates the final model and writes it as ``best.ckpt`` and ``last.ckpt``.

        Raises:
            ModfuseError: when a staged run is asked to resume (its stages are not resumable).
        """
        if stages_of(task.model) == ("model",):
            trainer.fit(task, datamodule=self.datamodule, ckpt_path=ckpt_path, weights_only=weights_only)
            return
        from modfuse.training.runner import fit

        if ckpt_path is not None:
            raise ModfuseError(
                f"--ckpt_path {ckpt_path}: a {type(task.model).__name__} trains in stages "
                f"({', '.join(stages_of(task.model))}) that cannot resume from a checkpoint; run fit again"
            )
        seed = self.setting("seed_everything")  # True: LightningCLI drew one; False: none
        fit(
            task,
            self.datamodule,
            max_epochs=int(trainer.fit_loop.max_epochs),
            seed=seed if type(seed) is int else None,
            trainer_kwargs=stage_trainer_kwargs(self.setting("trainer", {})),
        )
        trainer.validate(task, datamodule=self.datamodule, verbose=False, weights_only=True)
        save_final_checkpoints(trainer, task)

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
            frame = predictions_frame(outputs)
            with_labels_and_presence(frame, self.datamodule.dataset, list(model.tasks)).to_csv(path, index=False)
            print(f"wrote {path} ({len(frame)} samples of the {self.datamodule.predict_split!r} split)")


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


def use_checkpoint_model(task: FusionTask, checkpoint: dict[str, Any], path: Path) -> None:
    """Put the checkpoint's own model in ``task`` when the recipe's model trains in stages.

    A staged fit may leave a model of another structure than the recipe builds (``lego-fuse``
    chains the trained blocks best first, on top of their merge), so its model is rebuilt from
    the description the checkpoint stores; one-stage models load into the recipe's model.

    Raises:
        ModfuseError: naming the file when a staged model's checkpoint holds no description.
    """
    if stages_of(task.model) == ("model",):
        return
    from modfuse.core.io import model_from_config
    from modfuse.training.task import MODEL_CONFIG_KEY

    if MODEL_CONFIG_KEY not in checkpoint:
        raise ModfuseError(
            f"{path}: the checkpoint of a {type(task.model).__name__} (trained in stages) holds no model "
            "description to rebuild it from; evaluate the saved model instead (modfuse.save -> .safetensors)"
        )
    task.model = model_from_config(json.loads(checkpoint[MODEL_CONFIG_KEY]))


def best_checkpoint(trainer: Trainer) -> str | None:
    """Path of the best checkpoint of the last fit, or None when there is none."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") if callback is not None else ""
    return path or None


def use_saved_model(task: FusionTask, path: Path) -> None:
    """Put the model of a ``.safetensors`` file (``modfuse.save``, ``modfuse merge``) in ``task``.

    The file's own model is used (e.g. a merged model evaluated on a fuse recipe's data); it must
    predict the recipe's tasks.

    Raises:
        ModfuseError: naming the file when its tasks differ from the recipe's.
    """
    from modfuse.core.io import load
    from modfuse.core.tasks import as_task_specs

    model = load(path)
    tasks = as_task_specs(getattr(model, "tasks", None) or "binary")
    if tasks != task.tasks:
        raise ModfuseError(f"{path}: the saved model predicts {tasks}, the recipe's task {task.tasks}")
    task.model = model


def checkpoint_path(root: Path, requested: str | None) -> Path:
    """The checkpoint ``test``/``validate``/``predict`` load: ``best`` (default), ``last`` or a file.

    Raises:
        ModfuseError: when the checkpoint does not exist.
    """
    if requested in (None, "best", "last"):
        name = "last.ckpt" if requested == "last" else "best.ckpt"
        path = root / "checkpoints" / name
    else:
        path = Path(requested)
    if not path.is_file():
        raise ModfuseError(
            f"no checkpoint at {path}: run `modfuse fit` with the same config first "
            "(checkpoints go to <trainer.default_root_dir>/checkpoints), or pass --ckpt_path FILE"
        )
    return path


def check_checkpoint(path: Path) -> dict[str, Any]:
    """Read a Lightning checkpoint with ``torch.load(weights_only=True)`` and return it.

    Raises:
        ReadError: naming the file when it is not a readable checkpoint: truncated, a folder,
            not a checkpoint, or holding pickled objects beyond tensors and plain containers
            (which are refused, never run).
    """
    path = Path(path)
    if path.is_dir():
        raise ReadError("expected a checkpoint file, found a folder", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc).strip().splitlines()
        raise ReadError(
            "the checkpoint holds pickled objects that are not weights; modfuse reads checkpoints with "
            f"weights_only=True and runs no code from them ({detail[-1] if detail else type(exc).__name__})",
            path=path,
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ReadError(
            f"not a readable checkpoint (truncated or not written by modfuse fit): {type(exc).__name__}: {exc}",
            path=path,
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ReadError("expected a Lightning checkpoint (a dict with a 'state_dict')", path=path)
    return state


# ---------------------------------------------------------------------------- results
def final_metrics(trainer: Trainer, prefix: str) -> dict[str, float]:
    """Scalar metrics of the trainer whose name starts with ``prefix`` (e.g. ``"val/"``)."""
    return {
        k: float(v)
        for k, v in sorted(trainer.callback_metrics.items())
        if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1
    }


def write_metrics(path: Path, results: dict[str, dict[str, float]], best: str | None) -> None:
    """Write the metrics table as JSON (atomically: another process may be reading it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps({"best_checkpoint": best, "models": results}, indent=2))
    os.replace(partial, path)


def print_table(results: dict[str, dict[str, float]], title: str) -> None:
    """Print one row per metric and one column per model with rich."""
    from rich.console import Console
    from rich.table import Table

    metrics = sorted({k for values in results.values() for k in values})
    table = Table(title=title)
    table.add_column("metric")
    for name in results:
        table.add_column(name, justify="right")
    for metric in metrics:
        table.add_row(metric, *(f"{v[metric]:.4f}" if metric in v else "-" for v in results.values()))
    Console().print(table)


def predictions_frame(outputs: list[dict[str, Any]]) -> Any:
    """Per-sample predictions (``FusionTask.predict_step`` outputs) as a DataFrame with ``id``."""
    import pandas as pd

    frame: dict[str, list[Any]] = {"id": [i for out in outputs for i in out["ids"]]}
    for task in (k for k in outputs[0] if k != "ids"):
        values = torch.cat([out[task].reshape(len(out["ids"]), -1) for out in outputs]).numpy()
        if values.shape[1] == 1:
            frame[task] = list(values[:, 0])
        else:
            for j in range(values.shape[1]):
                frame[f"{task}_{j}"] = list(values[:, j])
    return pd.DataFrame(frame)


def with_labels_and_presence(frame: Any, dataset: Any, tasks: list[str]) -> Any:
    """Add each sample's label (``<task>_true``, when the dataset has targets) and which of
    its modalities were present (``present_<modality>``: known without reading a file, and
    False where a read error marked the modality missing) to a predictions frame."""
    position = {sid: i for i, sid in enumerate(dataset.ids)}
    rows = [position[sid] for sid in frame["id"]]
    targets = dataset.targets
    if targets is not None:
        by_task = targets if isinstance(targets, dict) else {tasks[0]: targets}
        for task, values in by_task.items():
            chosen = values[rows]
            if chosen.ndim == 1:
                frame[f"{task}_true"] = chosen
            else:
                for j in range(chosen.shape[1]):
                    frame[f"{task}_true_{j}"] = chosen[:, j]
    present = dataset.present_matrix().iloc[rows]
    failed = {(repr(e["id"]), e["modality"]) for e in dataset.read_errors}
    for m in present.columns:
        frame[f"present_{m}"] = [bool(p) and (repr(sid), m) not in failed for sid, p in zip(frame["id"], present[m])]
    return frame


# ---------------------------------------------------------------------------- explain / robustness
def report_main(command: str, argv: Sequence[str], description: str = "") -> int:
    """``modfuse explain|robustness --config X.yaml [--ckpt_path P] [--out_dir D] [overrides]``."""
    parser = argparse.ArgumentParser(prog=f"modfuse {command}", description=description, add_help=False)
    parser.add_argument(
        "--ckpt_path",
        default=None,
        help="checkpoint or saved .safetensors model (default: <root>/checkpoints/best.ckpt)",
    )
    parser.add_argument("--out_dir", default=None, help=f"output folder (default: <root>/{command})")
    if command == "robustness":
        parser.add_argument("--rates", type=float, nargs="+", default=None, help="missing rates of the sweep")
        parser.add_argument("--seeds", type=int, nargs="+", default=None, help="simulation seeds per rate")
        parser.add_argument("--kinds", nargs="*", default=None, help="missingness mechanisms (mcar, mnar, ...)")
        parser.add_argument(
            "--subset_gap",
            action="store_true",
            help="also train a specialist per modality subset (the recipe's model, lr and max_epochs) and "
            "write subset_gap.csv/.png and competition.csv",
        )
    else:
        parser.add_argument("--max_samples", type=int, default=None, help="explain at most this many samples")
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        print(f"\nrecipe options of modfuse {command} (the same as for modfuse test):\n")
        with mock.patch.object(sys, "argv", sys.argv[:1]), contextlib.suppress(SystemExit):
            ModfuseCLI(args=["--help"], run=False)  # LightningCLI prints its parser's help and exits
        return 0
    options, rest = parser.parse_known_args(list(argv))
    # the recipe options go to LightningCLI as args; it warns when sys.argv carries them too
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = ModfuseCLI(args=list(rest), run=False)
    task, datamodule = cli.model, cli.datamodule
    ckpt = checkpoint_path(cli.root, options.ckpt_path)
    if ckpt.suffix == ".safetensors":
        use_saved_model(task, ckpt)
    else:
        state = check_checkpoint(ckpt)
        use_checkpoint_model(task, state, ckpt)
        task.load_state_dict(state["state_dict"])
    task.eval()
    datamodule.setup("test")
    out_dir = Path(options.out_dir or cli.root / command)
    extra = {
        k: v for k, v in vars(options).items() if k not in ("ckpt_path", "out_dir", "subset_gap") and v is not None
    }
    if getattr(options, "subset_gap", False):
        extra.update(specialist_options(cli))
    table = _run_report(command, task, datamodule, out_dir, extra)
    _print_frame(table, f"modfuse {command}: {out_dir}")
    return 0


def specialist_options(cli: ModfuseCLI) -> dict[str, Any]:
    """robustness_report arguments that train the subset specialists with the recipe's budget:
    its ``trainer.max_epochs`` and its task's settings (lr, weight decay, missingness-aware
    training), so a specialist differs from the recipe's model only in the modalities it sees."""
    hp = {k: v for k, v in cli.model.hparams.items() if not k.startswith("_") and k != "tasks"}
    epochs = cli.setting("trainer", {}).get("max_epochs") or 10
    return {"specialists": "train", "specialist_epochs": int(epochs), "specialist_task_kwargs": hp}


def _run_report(command: str, task: Any, datamodule: Any, out_dir: Path, extra: dict[str, Any]) -> Any:
    if command == "robustness":
        from modfuse.robust import robustness_report

        return robustness_report(task, datamodule, out_dir, **extra)
    from modfuse.interpret import explain_report

    return explain_report(task, datamodule, out_dir, **extra)


def _print_frame(frame: Any, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for row in frame.head(40).itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
