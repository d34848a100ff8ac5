"""What the ``modfuse`` commands report: the metrics table (printed, and ``metrics.json``),
``predictions.csv`` and the ``explain`` / ``robustness`` reports (tables and PNG plots)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import torch
from lightning.pytorch import Trainer

from modfuse.cli.checkpoints import check_checkpoint, checkpoint_path, use_checkpoint_model, use_saved_model

if TYPE_CHECKING:
    from modfuse.cli.recipes import ModfuseCLI

__all__ = [
    "best_summary",
    "describe_best",
    "final_metrics",
    "predictions_frame",
    "print_table",
    "report_main",
    "with_labels_and_presence",
    "write_metrics",
]


def final_metrics(trainer: Trainer, prefix: str) -> dict[str, float]:
    """Scalar metrics of the trainer whose name starts with ``prefix`` (e.g. ``"val/"``)."""
    return {
        k: float(v)
        for k, v in sorted(trainer.callback_metrics.items())
        if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1
    }


def best_summary(best: str | None, monitor: str) -> dict[str, Any]:
    """Which checkpoint the fit's metrics come from: its path, epoch (0-based) and global step,
    and the monitored metric's name (read from the file's loop counters, memory-mapped)."""
    summary: dict[str, Any] = {"best_checkpoint": best, "monitor": monitor, "best_epoch": None, "best_step": None}
    if best is not None and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
        summary["best_epoch"], summary["best_step"] = state.get("epoch"), state.get("global_step")
    return summary


def describe_best(summary: dict[str, Any]) -> str:
    """One line naming the checkpoint the metrics table describes."""
    if summary.get("best_checkpoint") is None:
        return "metrics of the last epoch (no checkpoint kept)"
    return (
        f"metrics of the best checkpoint by {summary['monitor']}: {summary['best_checkpoint']} "
        f"(epoch {summary['best_epoch']}, step {summary['best_step']})"
    )


def write_metrics(
    path: Path, results: dict[str, dict[str, float]], best: str | None, summary: dict[str, Any] | None = None
) -> None:
    """Write the metrics table as JSON (atomically: another process may be reading it):
    ``{"best_checkpoint": path, "monitor": ..., "best_epoch": ..., "best_step": ..., "models":
    {model: {metric: value}}}``, the validation and test metrics being those of the best
    checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    content = {**(summary or {}), "best_checkpoint": best, "models": results}
    partial.write_text(json.dumps(content, indent=2))
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
    from modfuse.cli.recipes import ModfuseCLI  # it imports this module's tables

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
