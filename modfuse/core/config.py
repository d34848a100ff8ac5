"""Describe any model or encoder as ``{"class_path": ..., "init_args": {...}}`` and rebuild it.

How the description is captured: importing this module (every modfuse module that builds
models does) installs a recorder on ``torch.nn.Module.__new__`` that keeps the arguments each
module is constructed with (``module._modfuse_init``). Nothing else changes: the module is
built exactly as before. So a fusion model, a registry-built encoder, a ``class_path`` encoder
of a recipe, and ``wrap(monai.networks.nets.DenseNet121(...))`` or a timm ViT built after that
import are all described the same way, recursively (a module argument is itself described).

`describe()` turns the recorded arguments into JSON-ready values; anything it cannot
describe (a function, a tensor, a module built before modfuse was imported, a class defined
inside a function) raises `ConfigError` naming where it sits and what to do.

Security: `instantiate()` imports the dotted ``class_path`` of each entry and builds it
only if it is a ``torch.nn.Module`` subclass or a value type modfuse lists (``TaskSpec``);
class-valued arguments (``act_layer: torch.nn.GELU``) must be ``nn.Module`` subclasses too.
A saved model file therefore cannot make the loader call an arbitrary function (such as
``os.system``); it can only import installed modules and construct modules from them, so only
load files from sources you trust with the packages you have installed.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from modfuse.errors import ModfuseError
from modfuse.registry import import_path

__all__ = ["ConfigError", "class_path_of", "describe", "instantiate", "is_description"]

INIT_ATTR = "_modfuse_init"
"""Instance attribute holding ``(args, kwargs)`` of the constructor call, or a reason string."""

# non-module classes a config may build: the path -> how to describe an instance (to_dict()).
# Strings, so this bottom layer imports none of the layers above it.
VALUE_TYPES = ("modfuse.core.tasks.TaskSpec",)
# class paths written by earlier modfuse versions -> where the class lives now, so saved
# models keep loading after a move
MOVED = {"modfuse.training.spec.TaskSpec": "modfuse.core.tasks.TaskSpec"}

TUPLE, DICT, CLASS, DTYPE, ARGS = "__tuple__", "__dict__", "__class__", "__dtype__", "__args__"


class ConfigError(ModfuseError):
    """An object that cannot be described as (or rebuilt from) a JSON config."""


# ---------------------------------------------------------------------------- the recorder
def _recording_new(cls: type, *args: Any, **kwargs: Any) -> Any:
    nxt = super(nn.Module, cls).__new__  # type: ignore[misc]
    obj = nxt(cls) if nxt is object.__new__ else nxt(cls, *args, **kwargs)
    # tensors are not kept (a description could not hold them, and a reference would keep, and
    # deep copies duplicate, their memory), nor iterators (consumed by the constructor, and
    # generators cannot be deep-copied)
    # nor functions (no JSON form; keeping them would also make the module unpicklable)
    values = (*args, *kwargs.values())
    if any(isinstance(v, Tensor) for v in values):
        record: Any = "it was constructed with a tensor argument"
    elif any(isinstance(v, Iterator) for v in values):
        record = "it was constructed from an iterator"
    elif any(callable(v) and not isinstance(v, (type, nn.Module)) for v in values):
        fn = next(v for v in values if callable(v) and not isinstance(v, (type, nn.Module)))
        record = (
            f"it was constructed with a function argument ({getattr(fn, '__qualname__', fn)!r}), which has no JSON form"
        )
    else:
        record = (args, kwargs)
    object.__setattr__(obj, INIT_ATTR, record)
    return obj


def _install_recorder() -> None:
    if nn.Module.__dict__.get("__new__") is not _recording_new:
        nn.Module.__new__ = _recording_new  # type: ignore[assignment]


_install_recorder()


# ---------------------------------------------------------------------------- describe
def class_path_of(cls: type) -> str:
    """``"package.module.Class"`` of ``cls``; refuses classes that cannot be imported by path."""
    path = f"{cls.__module__}.{cls.__qualname__}"
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise ConfigError(
            f"cannot describe an instance of {path}: a class defined inside a function or in a script "
            "run as __main__ cannot be imported by a new process; define it at module level in an "
            "importable module"
        )
    return path


def _is_value_type(cls: type) -> bool:
    return f"{cls.__module__}.{cls.__qualname__}" in VALUE_TYPES


def describe(obj: Any, where: str = "model") -> Any:
    """The JSON-ready description of ``obj`` (a module, or a value passed to a constructor).

    Modules become ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` with their
    constructor arguments described recursively; tuples, dicts with non-string keys, classes
    and dtypes get small tagged forms so that `instantiate()` rebuilds them exactly.

    Args:
        obj: what to describe.
        where: its position, for error messages (e.g. ``"model.encoders.xray"``).

    Raises:
        ConfigError: naming ``where`` and saying what to do, for anything not describable.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, nn.Module):
        return _describe_module(obj, where)
    if isinstance(obj, list):
        return [describe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return {TUPLE: [describe(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") and k != "class_path" for k in obj):
            return {k: describe(v, f"{where}.{k}") for k, v in obj.items()}
        return {DICT: [[describe(k, f"{where} key"), describe(v, f"{where}[{k!r}]")] for k, v in obj.items()]}
    if isinstance(obj, torch.dtype):
        return {DTYPE: str(obj).removeprefix("torch.")}
    if isinstance(obj, type):
        if not (issubclass(obj, nn.Module) or _is_value_type(obj)):
            raise ConfigError(f"cannot describe {where}: the class {obj.__qualname__} is not a torch.nn.Module")
        return {CLASS: class_path_of(obj)}
    if _is_value_type(type(obj)):
        return {"class_path": class_path_of(type(obj)), "init_args": describe(obj.to_dict(), where)}
    raise ConfigError(
        f"cannot describe {where}: a {type(obj).__qualname__} value ({obj!r:.60}) has no JSON form; "
        "pass JSON values (numbers, strings, lists, dicts), modules or nn.Module classes to constructors instead"
    )


def _describe_module(module: nn.Module, where: str) -> dict[str, Any]:
    cls = type(module)
    record = module.__dict__.get(INIT_ATTR)
    if record is None or isinstance(record, str):
        reason = record or "it was built before modfuse was imported"
        raise ConfigError(
            f"cannot describe {where} ({cls.__qualname__}): {reason}. Build it after importing modfuse "
            "(e.g. `import modfuse.encoders` before constructing the network) from JSON values, modules "
            "or nn.Module classes, or give the encoder by registry name (modfuse.encoders.build(name, **kwargs))"
        )
    path = class_path_of(cls)
    args, kwargs = record
    try:
        bound = inspect.signature(cls).bind(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot describe {where} ({path}): its recorded arguments do not bind: {exc}") from exc
    positional: list[Any] = []
    init_args: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.POSITIONAL_ONLY:
            positional.append(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            # arguments before *args must stay positional too
            positional = [bound.arguments[n] for n in list(bound.arguments)[: list(bound.arguments).index(name)]]
            init_args = {}
            positional.extend(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            init_args.update(value)
        else:
            init_args[name] = value
    out: dict[str, Any] = {"class_path": path, "init_args": describe(init_args, where)}
    if positional:
        out[ARGS] = describe(positional, where)
    return out


def is_description(value: Any) -> bool:
    """Whether ``value`` looks like ``{"class_path": ..., "init_args": ...}``."""
    return isinstance(value, Mapping) and isinstance(value.get("class_path"), str)


# ---------------------------------------------------------------------------- instantiate
def _buildable(path: str, where: str) -> type:
    obj = import_path(MOVED.get(path, path))
    if isinstance(obj, type) and (issubclass(obj, nn.Module) or _is_value_type(obj)):
        return obj
    raise ConfigError(
        f"{where}: refusing to build {path!r}: a saved config may only name torch.nn.Module subclasses "
        f"(or the modfuse value types {list(VALUE_TYPES)}), found {type(obj).__name__}"
    )


def instantiate(config: Any, where: str = "model") -> Any:
    """Rebuild what `describe()` described (freshly initialised modules, weights aside).

    Args:
        config: a description (``{"class_path": ..., "init_args": ...}`` or any value within one).
        where: its position, for error messages.

    Raises:
        ConfigError: when a ``class_path`` is not an importable ``nn.Module`` subclass or
            modfuse value type (see the module docstring: no arbitrary callable is ever run).
    """
    if isinstance(config, list):
        return [instantiate(v, f"{where}[{i}]") for i, v in enumerate(config)]
    if not isinstance(config, Mapping):
        return config
    if TUPLE in config:
        return tuple(instantiate(v, f"{where}[{i}]") for i, v in enumerate(config[TUPLE]))
    if DICT in config:
        return {instantiate(k, where): instantiate(v, f"{where}[{k!r}]") for k, v in config[DICT]}
    if DTYPE in config:
        dtype = getattr(torch, str(config[DTYPE]), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"{where}: unknown dtype {config[DTYPE]!r}")
        return dtype
    if CLASS in config:
        return _buildable(str(config[CLASS]), where)
    if is_description(config):
        cls = _buildable(config["class_path"], where)
        kwargs = {k: instantiate(v, f"{where}.{k}") for k, v in (config.get("init_args") or {}).items()}
        args = instantiate(config.get(ARGS) or [], where)
        try:
            return cls(*args, **kwargs)
        except ModfuseError:
            raise
        except Exception as exc:
            raise ConfigError(f"{where}: building {config['class_path']} from its config failed: {exc}") from exc
    return {k: instantiate(v, f"{where}.{k}") for k, v in config.items()}
