"""Optimizers and learning-rate schedulers described as ``class_path`` / ``init_args``, the way
LightningCLI's ``optimizer:`` and ``lr_scheduler:`` keys describe them::

    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.001, weight_decay: 0.01}
    lr_scheduler:
      class_path: torch.optim.lr_scheduler.CosineAnnealingLR
      init_args: {T_max: 20}

A bare class name (``AdamW``, ``StepLR``) is looked up in ``torch.optim`` /
``torch.optim.lr_scheduler``. [`FusionTask`][modfuse.training.task.FusionTask] takes such a
description as ``optimizer=`` / ``scheduler=``; `check_optimizer()` and `check_lr_scheduler()`
validate one up front (the class, its arguments and their values, by building it on a dummy
parameter), with an error naming the key.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from modfuse.errors import ModfuseError

__all__ = ["build_lr_scheduler", "build_optimizer", "check_lr_scheduler", "check_optimizer"]

SCHEDULER_BASES = (LRScheduler, ReduceLROnPlateau)


def _resolve(spec: Any, key: str, bases: tuple[type, ...], home: str) -> tuple[type, dict[str, Any], str]:
    """(class, init_args, class path) of a description; ModfuseError naming ``key`` when it is malformed."""
    init_args: Mapping[str, Any]
    if isinstance(spec, str):
        class_path, init_args = spec, {}
    elif isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"class_path", "init_args"})
        if unknown or "class_path" not in spec:
            raise ModfuseError(
                f"{key}: expected {{class_path: ..., init_args: {{...}}}}, found keys {sorted(spec)}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        class_path, init_args = str(spec["class_path"]), spec.get("init_args") or {}
        if not isinstance(init_args, Mapping):
            raise ModfuseError(f"{key}.init_args: expected a mapping of arguments, found {init_args!r}")
    else:
        raise ModfuseError(f"{key}: expected a class name or {{class_path, init_args}}, found {spec!r}")
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module or home), name)
    except (ImportError, AttributeError) as exc:
        raise ModfuseError(f"{key}: cannot import {class_path!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        expected = " or ".join(f"{b.__module__}.{b.__name__}" for b in bases)
        raise ModfuseError(f"{key}: {class_path!r} is not a {expected} subclass")
    return cls, dict(init_args), class_path if module else f"{home}.{name}"


def _build(cls: type, first: Any, init_args: Mapping[str, Any], key: str) -> Any:
    try:
        return cls(first, **init_args)
    except (TypeError, ValueError, KeyError) as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in init_args.items())
        raise ModfuseError(f"{key}: {cls.__module__}.{cls.__name__}({args}) cannot be built: {exc}") from None


def _probe_params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(1))]


def check_optimizer(spec: Any, key: str = "optimizer") -> dict[str, Any]:
    """Validate an optimizer description (built once on a dummy parameter, so a bad value such as
    a negative lr is reported now, not at the first training step).

    Returns:
        the description as ``{"class_path": "module.Class", "init_args": {...}}``.

    Raises:
        ModfuseError: naming ``key``: not importable, not an ``Optimizer``, an unknown or missing
            argument, or a value the optimizer refuses.
    """
    cls, init_args, path = _resolve(spec, key, (Optimizer,), "torch.optim")
    _build(cls, _probe_params(), init_args, key)
    return {"class_path": path, "init_args": init_args}


def check_lr_scheduler(spec: Any, key: str = "lr_scheduler") -> dict[str, Any]:
    """Validate a learning-rate scheduler description (built once on a dummy optimizer).

    Returns:
        the description as ``{"class_path": "module.Class", "init_args": {...}}``.

    Raises:
        ModfuseError: naming ``key``, as `check_optimizer()`.
    """
    cls, init_args, path = _resolve(spec, key, SCHEDULER_BASES, "torch.optim.lr_scheduler")
    _build(cls, torch.optim.SGD(_probe_params(), lr=0.1), init_args, key)
    return {"class_path": path, "init_args": init_args}


def build_optimizer(
    spec: Any, params: Iterable[torch.Tensor], *, lr: float, weight_decay: float, fused: bool | None = None
) -> Optimizer:
    """The optimizer a description names, over ``params``.

    ``lr`` and ``weight_decay`` are the task's (they replace the description's, so every
    training stage's learning rate applies); ``fused`` is passed to optimizers that take it
    when the description leaves it unset.
    """
    cls, init_args, _ = _resolve(spec, "optimizer", (Optimizer,), "torch.optim")
    accepted = inspect.signature(cls).parameters
    init_args["lr"] = lr
    if "weight_decay" in accepted:
        init_args["weight_decay"] = weight_decay
    if "fused" in accepted and init_args.get("fused") is None and cls in (torch.optim.Adam, torch.optim.AdamW):
        init_args["fused"] = fused
    built: Optimizer = _build(cls, list(params), init_args, "optimizer")
    return built


def build_lr_scheduler(spec: Any, optimizer: Optimizer, monitor: str) -> dict[str, Any]:
    """Lightning's scheduler configuration for a description: stepped once per epoch (as with
    LightningCLI's ``lr_scheduler:``); a plateau scheduler follows its own ``monitor`` or, for
    torch's ``ReduceLROnPlateau``, the task's ``monitor``."""
    cls, init_args, _ = _resolve(spec, "lr_scheduler", SCHEDULER_BASES, "torch.optim.lr_scheduler")
    scheduler = _build(cls, optimizer, init_args, "lr_scheduler")
    config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
    if isinstance(scheduler, ReduceLROnPlateau):
        config["monitor"] = getattr(scheduler, "monitor", None) or monitor
    return config
