"""Save and load blocks, merged and fused models: safetensors weights + a JSON config, no pickle.

The config (``model.to_config()``) is stored as JSON text in the safetensors metadata under
``"modfuse_config"``, so one ``.safetensors`` file is a complete, shareable artefact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from modfuse.core.io import check_rebuilds, model_from_config, read
from modfuse.errors import ModfuseError, ReadError
from modfuse.lego.block import LegoBlock
from modfuse.lego.fuse import LegoFuse
from modfuse.lego.merge import LegoMerge

__all__ = ["from_config", "load", "load_any", "load_checkpoint", "save"]

CONFIG_KEY = "modfuse_config"
TYPES: dict[str, Any] = {"LegoBlock": LegoBlock, "LegoMerge": LegoMerge, "LegoFuse": LegoFuse}


def from_config(config: Mapping[str, Any]) -> nn.Module:
    """Build a (freshly initialised) block, merged or fused model from its ``to_config()``."""
    kind = config.get("type")
    if kind not in TYPES:
        raise ModfuseError(f"model config: expected type one of {sorted(TYPES)}, found {kind!r}")
    return TYPES[kind].from_config(config)


def save(model: LegoBlock | LegoMerge | LegoFuse, path: str | Path) -> Path:
    """Write ``model``'s weights and config to a ``.safetensors`` file.

    Args:
        model: a LegoBlock, LegoMerge or LegoFuse (its encoders described as in
            [`modfuse.lego.block.describe_encoder()`][modfuse.lego.block.describe_encoder]).
        path: output file.

    Returns:
        the path written.
    """
    path = Path(path)
    config = json.dumps(model.to_config())
    check_rebuilds(model, json.loads(config))  # an undescribable encoder fails here, not at load time
    # safetensors refuses shared or non-contiguous storage: store independent contiguous copies
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={CONFIG_KEY: config, "format": "pt"})
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model written by `save()` (or by ``modfuse merge``), in eval mode.

    Raises:
        ReadError: naming the file when it is not a modfuse safetensors file or does not match
            its config.
    """
    path = Path(path)
    config, state = read(path, map_location)
    model = from_config(config)
    _load_state(model, state, path)
    return model.to(map_location).eval()


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ReadError(
            f"weights do not match the model config: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}",
            path=path,
        )


def load_checkpoint(path: str | Path) -> nn.Module:
    """Rebuild the model of a Lightning checkpoint written by ``FusionTask`` (no unpickling).

    The checkpoint is read with ``torch.load(..., weights_only=True)``; the model is rebuilt
    from the JSON config ``FusionTask`` stores (``"modfuse_model_config"``) and given the
    ``model.``-prefixed weights of the state dict.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ReadError(f"cannot read the checkpoint with weights_only=True: {exc}", path=path) from exc
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ReadError("expected a Lightning checkpoint with a 'state_dict'", path=path)
    if "modfuse_model_config" not in ckpt:
        raise ReadError(
            "the checkpoint has no 'modfuse_model_config' (it was not written by FusionTask, or its model "
            "could not be described as JSON when it was saved)",
            path=path,
        )
    model = model_from_config(json.loads(ckpt["modfuse_model_config"]))
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    _load_state(model, state, path)
    return model.eval()


def load_any(path: str | Path) -> nn.Module:
    """A block or model from a ``.safetensors`` file (`save()`) or a Lightning ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise ReadError("file not found", path=path)
    return load(path) if path.suffix == ".safetensors" else load_checkpoint(path)
