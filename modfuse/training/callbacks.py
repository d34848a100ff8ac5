"""The Lightning callbacks and trainer settings every training path shares (see
[`modfuse.training.runner`][modfuse.training.runner]): best weights kept in memory, atomic
checkpoints, random states in checkpoints, and DDP's unused-parameter setting."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor

from modfuse.utils.lightning_compat import WriteHookCheckpoint, ddp_kwargs

__all__ = [
    "AtomicCheckpoint",
    "BestWeights",
    "RandomStates",
    "allow_unused_parameters",
    "rng_states",
    "set_rng_states",
]


class BestWeights(Callback):
    """Keep a real copy (``clone``) of the best weights by a monitored metric; restore them when
    the fit ends.

    A shallow ``state_dict()`` would alias the live tensors, so the "best" weights would be the
    last ones; the values are cloned. Non-finite values never count as best, and a tie keeps the
    earlier epoch.

    Args:
        monitor: the logged metric (e.g. ``"val/loss"``, ``"val/auroc"``).
        mode: ``"min"`` or ``"max"``.

    Attributes:
        best: the best value seen (None before the first validation).
        best_epoch: the epoch (0-based) of ``best``.
    """

    def __init__(self, monitor: str, mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', found {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict[str, Tensor] | None = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if better and math.isfinite(value):
            self.best = value
            self.best_epoch = int(getattr(trainer, "current_epoch", 0))
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.state is not None:
            pl_module.load_state_dict(self.state)


class AtomicCheckpoint(WriteHookCheckpoint):
    """ModelCheckpoint that writes to a temporary file and renames it into place, so a process
    killed while saving never leaves a truncated ``last.ckpt`` to resume from."""

    def write(self, trainer: L.Trainer, filepath: str, default_write: Callable[[str], None]) -> None:
        save_atomic(trainer, filepath, default_write)


def save_atomic(trainer: L.Trainer, filepath: str, write: Any = None) -> None:
    """Write a checkpoint of ``trainer`` at ``filepath`` through a temporary file renamed into
    place (``write(partial_path)`` does the writing; default ``trainer.save_checkpoint``)."""
    partial = os.path.join(os.path.dirname(filepath), f".partial-{os.getpid()}.tmp")
    (write or trainer.save_checkpoint)(partial)
    if trainer.is_global_zero:
        os.replace(partial, filepath)
    trainer.strategy.barrier("modfuse.atomic_checkpoint")


def allow_unused_parameters(trainer: L.Trainer) -> L.Trainer:
    """Let DDP reduce gradients when a process leaves some parameters unused in a step.

    With per-sample missingness, one process's batch may have no row with some modality; that
    process never runs the modality's encoder, its DDP reducer never sees those gradients,
    and the other processes wait for them forever (the 2-process hang of issue 6: rank 0's
    last batch of the epoch had no X-ray). ``find_unused_parameters=True`` makes DDP find and
    reduce such parameters every step; an explicit setting in the recipe is kept.
    """
    strategy = trainer.strategy
    kwargs = ddp_kwargs(strategy)
    if isinstance(strategy, DDPStrategy) and kwargs is not None:
        kwargs.setdefault("find_unused_parameters", True)
    return trainer


class RandomStates(Callback):
    """Saves and restores the torch / CUDA / NumPy / Python random states with checkpoints.

    Lightning restores the model, optimizer, schedulers and loop counters, and
    [`MultiModalDataModule`][modfuse.data.MultiModalDataModule] the position in the training order; this adds
    what a resumed run would otherwise still differ in from an uninterrupted one (dropout
    masks, random augmentations). In a distributed run, the states of rank 0 are saved.
    """

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "rng" in state_dict:
            set_rng_states(state_dict["rng"])


def rng_states() -> dict[str, Any]:
    """torch, CUDA, NumPy and Python RNG states in a form ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.as_tensor(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore the states saved by `rng_states()`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
