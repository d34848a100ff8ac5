"""Which checkpoint a ``modfuse`` command loads, read safely, and the model it puts in the task.

``test``, ``validate``, ``predict``, ``explain`` and ``robustness`` load
``<trainer.default_root_dir>/checkpoints/best.ckpt`` unless ``--ckpt_path`` names another
file (or ``last``): a Lightning ``.ckpt`` (read with ``torch.load(weights_only=True)``) or a
``.safetensors`` model written by ``modfuse.save`` or ``modfuse merge``.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer

from modfuse.errors import ModfuseError, ReadError
from modfuse.training.runner import stages_of
from modfuse.training.task import FusionTask

__all__ = [
    "best_checkpoint",
    "check_checkpoint",
    "checkpoint_path",
    "use_checkpoint_model",
    "use_saved_model",
]


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
