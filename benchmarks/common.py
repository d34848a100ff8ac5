"""Shared benchmark plumbing: the run environment, training through ``FusionTask``, result tables."""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MODFUSE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"

LIBRARIES = ("modfuse", "torch", "lightning", "torchmetrics", "torch_geometric", "rdkit", "numpy", "sklearn")

# The Lego strategies (their latent shape is a benchmark setting)
LEGO = ("lego-merge", "lego-fuse")


def quiet() -> None:
    """Silence Lightning's banners and the warnings of small CPU runs."""
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # no /proc (not Linux): the CPU model is simply not reported
        pass
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu cores (os)": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    for lib in LIBRARIES:
        try:
            info[lib] = getattr(importlib.import_module(lib), "__version__", "?")
        except ImportError:
            info[lib] = "not installed"
    return info


def seed_all(seed: int) -> None:
    import lightning as L

    L.seed_everything(seed, workers=True, verbose=False)


# ---------------------------------------------------------------------------- training


@dataclass
class Fit:
    """Result of one training run."""

    model: nn.Module
    predictions: dict[str, np.ndarray]  # split -> activated predictions, aligned with the split indices
    seconds: float
    epochs: int
    best_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def trainer(max_epochs: int, callbacks: Sequence[Any] = (), **kwargs: Any) -> Any:
    """A CPU trainer from the library's runner (no logger, checkpoints or progress bar)."""
    from modfuse.training.runner import build_trainer

    return build_trainer(
        max_epochs, callbacks, accelerator="cpu", deterministic=False, enable_progress_bar=False, **kwargs
    )


def predict(model: nn.Module, loader: Any) -> np.ndarray:
    """Activated predictions of a single-task model over a loader (in loader order)."""
    spec = next(iter(model.tasks.values()))
    model.eval()
    out = []
    with torch.no_grad():
        for batch in loader:
            logits = model(batch).prediction
            out.append(spec.activate(logits).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def fit(
    model: nn.Module,
    datamodule: Any,
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    select_best: bool = True,
    patience: int | None = None,
    parts: Sequence[str] = ("test",),
) -> Fit:
    """Train ``model`` by its own training stages through the library's runner
    (`modfuse.training.runner.fit`: one FusionTask fit, cosine one-cycle schedule over
    ``epochs``; for the Lego strategies blocks apart, then the chain), stop a run early when the
    validation metric has not improved for ``patience`` epochs (None: run all ``epochs``), keep
    the weights of the best validation epoch when ``select_best``, and predict ``parts``. Only
    the validation split steers training."""
    from modfuse.training.runner import fit as run

    start = time.perf_counter()
    result = run(
        model,
        datamodule,
        max_epochs=epochs,
        lr=lr,
        task_kwargs={"weight_decay": weight_decay},
        trainer_kwargs={
            "accelerator": "cpu",
            "deterministic": False,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
        },
        patience=patience,
        restore_best=select_best,
    )
    seconds = time.perf_counter() - start
    preds = {p: predict(result.model, _loader(datamodule, p)) for p in parts}
    return Fit(result.model, preds, seconds, result.epochs or 0, result.best_epoch, {"stages": result.stages})


def _loader(datamodule: Any, part: str) -> Any:
    return (
        {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader, "test": datamodule.test_dataloader}[
            part
        ]()
        if part != "train"
        else datamodule._loader("train", shuffle=False)
    )


# ---------------------------------------------------------------------------- strategies


def strategies(exclude: Sequence[str] = ()) -> list[str]:
    """The fusion strategies registered in this installation (unimodal handled apart)."""
    from modfuse.fusion import available

    return [s for s in available() if s not in exclude]


def build_strategy(name: str, encoders: Callable[[], dict[str, nn.Module]], tasks: Any, **kwargs: Any) -> nn.Module:
    """``modfuse.fusion.build`` with fresh encoders."""
    from modfuse.fusion import build

    return build(name, encoders=encoders(), tasks=tasks, **kwargs)


# ---------------------------------------------------------------------------- results


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (as the committed tables cite it)."""
    try:
        return str(path.resolve().relative_to(ROOT.resolve()))
    except ValueError:
        return str(path)


def write_results(
    name: str,
    title: str,
    tables: Mapping[str, pd.DataFrame],
    raw: pd.DataFrame,
    *,
    command: str,
    seeds: Sequence[int] | str,
    notes: Sequence[str] = (),
    out_dir: Path = RESULTS,
) -> Path:
    """Write ``<name>.md`` (tables, notes, machine, versions, seeds, command) and ``<name>.csv`` (raw rows)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw.to_csv(out_dir / f"{name}.csv", index=False)
    parts = [f"### {title}", ""]
    for caption, frame in tables.items():
        if caption:
            parts += [f"**{caption}**", ""]
        parts += [markdown_table(frame), ""]
    parts += [f"- {n}" for n in notes]
    parts += [
        f"- seeds: {seeds if isinstance(seeds, str) else ', '.join(map(str, seeds))}",
        f"- command: `{command}`",
        f"- raw rows: `{_shown(out_dir / f'{name}.csv')}`",
        "- machine: " + "; ".join(f"{k} {v}" for k, v in machine().items()),
        "",
    ]
    path = out_dir / f"{name}.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
