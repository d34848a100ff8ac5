"""The one place modfuse reaches into Lightning's private internals.

Lightning exposes no public API for a few things modfuse needs (whether this training step's
values reach the loggers, how far the current epoch has got, the keyword arguments a DDP
strategy passes to ``DistributedDataParallel``, the file write of ``ModelCheckpoint``). Every
such access is a function here, so a Lightning upgrade that moves one breaks this module only,
and ``tests/test_lightning_compat.py`` checks each function against the installed Lightning
with real values. Each accessor returns None where the installed Lightning lacks the internal,
and its callers then fall back to a safe behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = [
    "WriteHookCheckpoint",
    "attached_trainer",
    "batches_done_this_epoch",
    "ddp_kwargs",
    "is_last_batch",
    "logs_this_step",
]


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The trainer ``module`` is attached to, or None (``module.trainer`` raises instead)."""
    try:
        trainer = module.trainer
    except RuntimeError:  # "... is not attached to a `Trainer`"
        return None
    return trainer if isinstance(trainer, Trainer) else None


def logs_this_step(trainer: Trainer) -> bool | None:
    """Whether values logged in the current training step are written to the loggers (every
    ``Trainer(log_every_n_steps=...)`` steps); None when this Lightning does not say."""
    connector = getattr(trainer, "_logger_connector", None)
    value = getattr(connector, "should_update_logs", None)
    return None if value is None else bool(value)


def _batch_progress(trainer: Trainer) -> Any:
    return getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)


def is_last_batch(trainer: Trainer) -> bool | None:
    """Whether the current training batch is the last of its epoch; None when unknown."""
    value = getattr(_batch_progress(trainer), "is_last_batch", None)
    return None if value is None else bool(value)


def batches_done_this_epoch(trainer: Trainer) -> int | None:
    """Training batches of the current epoch processed so far (the current one counts once its
    step has run, i.e. from ``on_train_batch_end``); None when unknown."""
    value = getattr(getattr(_batch_progress(trainer), "current", None), "processed", None)
    return None if value is None else int(value)


def ddp_kwargs(strategy: Any) -> dict[str, Any] | None:
    """The keyword arguments a DDP strategy passes to ``DistributedDataParallel`` (the live dict:
    a key set in it applies when the strategy wraps the model); None for other strategies."""
    kwargs = getattr(strategy, "_ddp_kwargs", None)
    return kwargs if isinstance(kwargs, dict) else None


class WriteHookCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose file writes go through `write()` (Lightning's own bookkeeping:
    top-k files, ``best_model_path``, ``last_model_path``, loggers, stays as it is).

    Subclasses override `write()`; the default writes the file as ``ModelCheckpoint`` does.
    """

    def write(self, trainer: Trainer, filepath: str, default_write: Callable[[str], None]) -> None:
        """Write the checkpoint of ``trainer`` at ``filepath``; ``default_write(path)`` writes it
        at any path the way ``ModelCheckpoint`` would."""
        default_write(filepath)

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        def default_write(path: str) -> None:
            super(WriteHookCheckpoint, self)._save_checkpoint(trainer, path)

        self.write(trainer, filepath, default_write)
        # Lightning remembers the path it wrote (to remove or link it later): the final one
        self._last_checkpoint_saved = filepath
