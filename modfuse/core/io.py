"""``modfuse.save`` / ``modfuse.load``: any model as one ``.safetensors`` file, no pickle.

The file holds the weights (``state_dict``) and, in its metadata under ``"modfuse_config"``,
the JSON description of the model ([`modfuse.core.config.describe()`][modfuse.core.config.describe]: ``class_path`` and
``init_args``, nested modules described recursively). Loading rebuilds the model from that
description ([`instantiate()`][modfuse.core.config.instantiate], which only constructs ``nn.Module``
subclasses and modfuse value types) and loads the weights strictly, so predictions are
identical. Files written by ``modfuse.lego.save`` and ``modfuse merge`` (Lego configs with a
``"type"``) load too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from modfuse.core.config import ConfigError, describe, instantiate, is_description
from modfuse.errors import ModfuseError, ReadError
from modfuse.registry import Registry

__all__ = [
    "CONFIG_KEY",
    "check_rebuilds",
    "config_of_model",
    "load",
    "load_state",
    "model_from_config",
    "read",
    "save",
]

CONFIG_KEY = "modfuse_config"

MODEL_TYPES: Registry[Any] = Registry(
    "model config type",
    lazy={
        "LegoBlock": "modfuse.lego.block:LegoBlock.from_config",
        "LegoMerge": "modfuse.lego.merge:LegoMerge.from_config",
        "LegoFuse": "modfuse.lego.fuse:LegoFuse.from_config",
        "SeedEnsemble": "modfuse.estimators.auto:SeedEnsemble.from_config",
    },
)
"""Models with their own config format (``{"type": name, ...}`` from ``to_config()``) -> the
function rebuilding them; strings, so this layer imports none of the model packages."""


def config_of_model(model: nn.Module) -> dict[str, Any]:
    """The JSON-ready description of ``model``: its own ``to_config()`` when it has one (Lego
    models), else the generic ``class_path``/``init_args`` description.

    Raises:
        ConfigError: naming the part of the model that cannot be described.
    """
    to_config = getattr(model, "to_config", None)
    return to_config() if callable(to_config) else describe(model)


def model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model from `config_of_model()` output (either form)."""
    if is_description(config):
        model = instantiate(config)
    elif isinstance(config, Mapping) and config.get("type") in MODEL_TYPES:
        model = MODEL_TYPES.get(config["type"])(config)
    else:
        raise ReadError(
            f"a model config has a 'class_path' or a 'type' in {MODEL_TYPES.available()}, found keys {sorted(config)}"
        )
    if not isinstance(model, nn.Module):
        raise ReadError(f"the config describes a {type(model).__name__}, not a model")
    return model


def check_rebuilds(model: nn.Module, config: Mapping[str, Any]) -> None:
    """Check that ``config`` rebuilds a model with ``model``'s weight names and shapes.

    The rebuild runs on the ``meta`` device (no memory, no initialisation cost) and leaves the
    random state untouched. It catches what a description cannot hold, such as an attribute
    set on a module after it was built (``enc.out_dim = 8``).

    Raises:
        ConfigError: saying what differs, so the problem shows at save time, not at load time.
    """
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                rebuilt = model_from_config(config)
        except ModfuseError as exc:
            raise ConfigError(f"the description of {type(model).__name__} does not rebuild it: {exc}") from exc
        except Exception:  # a constructor that computes on real tensors: rebuild on the CPU
            rebuilt = model_from_config(config)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:5]
        raise ConfigError(
            f"the description of {type(model).__name__} rebuilds different weights ({diff}): a module was "
            "changed after it was built; build it in its final form (e.g. wrap(module, out_dim) rather than "
            "setting attributes)"
        )


def save(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s weights and description to one ``.safetensors`` file.

    Args:
        model: any fusion model, Lego block/merge/fuse or encoder (see
            [`modfuse.core.config`][modfuse.core.config] for what can be described).
        path: output file (``.safetensors``); parent folders are created.

    Returns:
        the path written.

    Raises:
        ConfigError: before anything is written, when a part of the model cannot be described.
    """
    path = Path(path)
    config = json.dumps(config_of_model(model))
    check_rebuilds(model, json.loads(config))
    # safetensors refuses shared or non-contiguous storage: store independent contiguous copies
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={CONFIG_KEY: config, "format": "pt"})
    return path


def read(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and the weights stored in a modfuse ``.safetensors`` file.

    Raises:
        ReadError: naming the file when it is not a safetensors file written by modfuse.
    """
    path = Path(path)
    if not path.is_file():
        raise ReadError("file not found", path=path)
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error type for corrupt headers
        raise ReadError(f"cannot read safetensors file: {exc}", path=path) from exc
    if CONFIG_KEY not in meta:
        raise ReadError(f"no {CONFIG_KEY!r} entry in the safetensors metadata (not written by modfuse)", path=path)
    return json.loads(meta[CONFIG_KEY]), state


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Load ``state`` into ``model`` strictly; the error names ``path`` and the mismatch."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise ReadError(f"weights do not match the model: {exc}", path=path) from exc
    if result.missing_keys or result.unexpected_keys:
        raise ReadError(
            f"weights do not match the model config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}",
            path=path,
        )


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model saved by `save()` (or ``modfuse.lego.save``, ``modfuse merge``), in eval mode.

    Raises:
        ReadError: naming the file when it is not a modfuse file or its weights do not match.
        ConfigError: when its config names something that may not be built (see
            [`modfuse.core.config`][modfuse.core.config]).
    """
    config, state = read(path, map_location)
    model = model_from_config(config)
    load_state(model, state, path)
    return model.to(map_location).eval()
