"""Loading pretrained encoder weights from local files, safely.

Only two formats are read: safetensors files, and PyTorch files opened with
``torch.load(..., weights_only=True)`` (tensors and plain containers, never arbitrary pickled
objects). Nothing here downloads anything.

Pretrained convolutional backbones were trained with BatchNorm. Batch statistics would make a
sample's features depend on the other rows of its batch (and a batch holding a single present
row would fail), so pretrained BatchNorm layers are turned into `FrozenStatsBatchNorm2d`:
the affine parameters still train, the normalisation uses the stored running statistics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modfuse.errors import ModfuseError, ReadError

__all__ = [
    "FrozenStatsBatchNorm2d",
    "check_in_channels",
    "freeze_batch_norm",
    "has_batch_norm_stats",
    "load_into",
    "read_state_dict",
    "save_state_dict",
    "strip_prefix",
]

StateDict = dict[str, Tensor]


def read_state_dict(path: str | Path) -> StateDict:
    """Read a state dict from a ``.safetensors`` file or a ``.pt``/``.pth``/``.ckpt`` file.

    PyTorch files are opened with ``weights_only=True``; a Lightning checkpoint's
    ``state_dict`` entry is used when present, and a DDP ``module.`` prefix is removed.

    Args:
        path: the weights file.

    Returns:
        parameter name -> tensor (on CPU).

    Raises:
        ReadError: the file is missing, unreadable, or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ReadError("weights file not found", path=path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure of a user file becomes a ReadError naming it
        raise ReadError(f"cannot read weights ({type(exc).__name__}: {exc})", path=path) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise ReadError(f"expected a state dict (name -> tensor), found {type(state).__name__}", path=path)
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ReadError("expected a state dict (name -> tensor), found no tensors", path=path)
    return strip_prefix(tensors, "module.")


def save_state_dict(module: nn.Module | Mapping[str, Tensor], path: str | Path) -> Path:
    """Write a module's (or a dict's) tensors to ``.safetensors`` or a ``torch.save`` file.

    Args:
        module: the module, or a state dict.
        path: target file; the suffix picks the format.
    """
    path = Path(path)
    state = module.state_dict() if isinstance(module, nn.Module) else dict(module)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> StateDict:
    """Remove ``prefix`` from keys when EVERY key carries it (else return the dict unchanged)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def has_batch_norm_stats(state: Mapping[str, Tensor]) -> bool:
    """True when the state dict stores BatchNorm running statistics."""
    return any(k.endswith("running_mean") for k in state)


def check_in_channels(
    state: Mapping[str, Tensor], key: str, expected: int, source: object, what: str = "input channels"
) -> None:
    """Check that the first convolution ``key`` of a state dict takes ``expected`` channels.

    Args:
        state: the state dict.
        key: name of the first convolution's weight (out, in, *kernel).
        expected: input channels of the model being built (e.g. its band count).
        source: the file or weights name, for the message.
        what: what the channels are called in the message (e.g. "bands").
    """
    if key not in state:
        raise ModfuseError(f"weights {source}: expected a first convolution {key!r}, found none (keys: {_few(state)})")
    found = int(state[key].shape[1])
    if found != expected:
        raise ModfuseError(
            f"weights {source} were trained for {found} {what} ({key} has {found} input channels); "
            f"this encoder expects {expected} {what}"
        )


def load_into(
    module: nn.Module,
    state: Mapping[str, Tensor],
    source: object,
    ignore: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``module`` and fail loudly on anything that does not fit.

    Args:
        module: the model to fill.
        state: parameter name -> tensor.
        source: the file or weights name, for messages.
        ignore: key prefixes allowed to be missing from the file, unexpected in it, or of another
            shape (e.g. a classifier head that the encoder replaces); those keep their init.

    Raises:
        ModfuseError: missing / unexpected keys or shape mismatches, listed with expected vs found.
    """
    ignore = tuple(ignore)
    own = module.state_dict()
    skip = lambda k: k.startswith(ignore) if ignore else False  # noqa: E731
    wrong = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape and not skip(k)
    ]
    missing = [k for k in own if k not in state and not skip(k)]
    unexpected = [k for k in state if k not in own and not skip(k)]
    if wrong or missing or unexpected:
        parts = []
        if wrong:
            parts.append(f"shape mismatch: {'; '.join(wrong[:5])}")
        if missing:
            parts.append(f"missing from the file: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in the model: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise ModfuseError(f"weights {source} do not fit {type(module).__name__}: {' | '.join(parts)}")
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(usable, strict=False)


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its stored running statistics.

    Its state dict is that of ``nn.BatchNorm2d`` (pretrained weights load unchanged); weight and
    bias still train. Unlike BatchNorm in training mode it treats rows independently.

    Shapes:
        (n, C, H, W) -> (n, C, H, W).
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` (in place) by `FrozenStatsBatchNorm2d`."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, FrozenStatsBatchNorm2d):
            frozen = FrozenStatsBatchNorm2d(child.num_features, eps=child.eps, affine=child.affine)
            frozen.load_state_dict(child.state_dict())
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def _few(state: Mapping[str, Tensor]) -> str:
    keys = list(state)
    return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
