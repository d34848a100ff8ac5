"""A staged recipe fit (``lego-merge``: blocks apart; ``lego-fuse``: blocks apart, then the chain)
that can resume: after each stage but the last the task is written as a stage checkpoint,
``checkpoints/stage-<i>-<name>.ckpt`` and ``checkpoints/last.ckpt``, recording the stages done,
the model's description, its weights and the random states.

``modfuse fit --ckpt_path last`` (or ``--ckpt_path checkpoints/stage-1-blocks.ckpt``) rebuilds
the model of the checkpoint, restores the random states and runs the remaining stages, so a run
stopped after its first stage ends with the weights of an uninterrupted run. A stage is the unit
of resumption: a run killed inside a stage repeats that stage from the last stage checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import Callback

from modfuse.cli.checkpoints import check_checkpoint, use_checkpoint_model
from modfuse.errors import ModfuseError
from modfuse.training.callbacks import rng_states, set_rng_states
from modfuse.training.runner import stages_of
from modfuse.training.task import FusionTask

__all__ = ["STAGES_DONE_KEY", "StagesDone", "resume_stages", "run_stages", "save_stage_checkpoint"]

STAGES_DONE_KEY = "modfuse_stages_done"
"""Checkpoint entry: the names of the training stages that produced the checkpoint's weights."""
RNG_KEY = "modfuse_rng_states"
"""Checkpoint entry: the random states when the last finished stage ended."""


class StagesDone(Callback):
    """Records the finished stages in the checkpoints the recipe's trainer writes (the final
    ``best.ckpt`` / ``last.ckpt`` of a staged fit), so resuming a finished run runs nothing."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if self.done:
            checkpoint[STAGES_DONE_KEY] = list(self.done)


def run_stages(
    task: FusionTask,
    datamodule: Any,
    *,
    fit_kwargs: Mapping[str, Any],
    folder: Path | None,
    resume: Path | None = None,
    write: bool = True,
) -> list[str]:
    """Run the stages of ``task.model`` not yet done (all, or those after ``resume``'s).

    Args:
        task: the recipe's task (its model is replaced by each stage's result).
        datamodule: the recipe's data.
        fit_kwargs: [`runner.fit`][modfuse.training.runner.fit] arguments (max_epochs, seed,
            trainer_kwargs).
        folder: where stage checkpoints go (None: nowhere).
        resume: a stage checkpoint to continue from.
        write: whether this process writes the stage checkpoints (rank zero).

    Returns:
        the stages done, in order (all of them).
    """
    from modfuse.training import runner

    stages = stages_of(task.model)
    done = resume_stages(task, resume, stages) if resume is not None else []
    for name in stages[len(done) :]:
        runner.fit(task, datamodule, stages=[name], **fit_kwargs)
        done.append(name)
        if folder is not None and write and len(done) < len(stages):
            save_stage_checkpoint(task, folder, done)
    return done


def resume_stages(task: FusionTask, path: Path, stages: Sequence[str]) -> list[str]:
    """Put the model, weights and random states of stage checkpoint ``path`` in ``task``.

    Returns:
        the stages the checkpoint had done.

    Raises:
        ModfuseError: naming the file when it is not a stage checkpoint of this recipe's model.
    """
    state = check_checkpoint(path)
    done = state.get(STAGES_DONE_KEY)
    if not isinstance(done, list):
        raise ModfuseError(
            f"--ckpt_path {path}: not a checkpoint of a staged fit (it records no finished stages); a "
            f"{type(task.model).__name__} trains in stages ({', '.join(stages)}) and resumes from the "
            "stage checkpoints its fit writes (checkpoints/last.ckpt, checkpoints/stage-<i>-<name>.ckpt)"
        )
    if list(stages[: len(done)]) != done:
        raise ModfuseError(
            f"--ckpt_path {path}: the checkpoint finished the stages {done}, but the recipe's "
            f"{type(task.model).__name__} trains in the stages {list(stages)}"
        )
    use_checkpoint_model(task, state, path)
    task.load_state_dict(state["state_dict"])
    task.on_load_checkpoint(state)
    if RNG_KEY in state:
        set_rng_states(state[RNG_KEY])
    return list(done)


def save_stage_checkpoint(task: FusionTask, folder: Path, done: Sequence[str]) -> Path:
    """Write ``task`` after the stages ``done`` as ``stage-<i>-<name>.ckpt`` and ``last.ckpt``
    in ``folder`` (each atomically). The file is a Lightning-style checkpoint (``state_dict``,
    ``hyper_parameters``, the model's description) that ``torch.load(weights_only=True)``,
    ``FusionTask.load_from_checkpoint`` and ``modfuse test --ckpt_path`` read.

    Returns:
        the stage checkpoint's path.
    """
    checkpoint: dict[str, Any] = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
        STAGES_DONE_KEY: list(done),
        RNG_KEY: rng_states(),
    }
    task.on_save_checkpoint(checkpoint)  # the model's description (and the dropout stream)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"stage-{len(done)}-{done[-1]}.ckpt"
    for target in (path, folder / "last.ckpt"):
        partial = folder / f".partial-{os.getpid()}.tmp"
        torch.save(checkpoint, partial)
        os.replace(partial, target)
    return path
