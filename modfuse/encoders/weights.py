"""Loading pretrained encoder weights from local files, safely.

Only two formats are read: safetensors files, and PyTorch files opened with
``torch.load(..., weights_only=True)`` (tensors and plain containers, never arbitrary pickled
objects). Nothing here downloads anything.

Band names are compared in a canonical spelling (`band_key()`: ``B1`` = ``B01``, ``B8a`` =
``B8A``), in order, with the bands a weight was trained on (`match_bands()`); with
``adapt=True`` the first convolution keeps the pretrained filters of the bands present, by name
(`select_in_channels()`), so a 12-band chip (BigEarthNet has no B10) reuses 13-band weights.

Pretrained convolutional backbones were trained with BatchNorm. Batch statistics would make a
sample's features depend on the other rows of its batch (and a batch holding a single present
row would fail), so pretrained BatchNorm layers are turned into `FrozenStatsBatchNorm2d`:
the affine parameters still train, the normalisation uses the stored running statistics.
"""

from __future__ import annotations

import re
import urllib.error
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modfuse.errors import ModfuseError, ReadError

__all__ = [
    "FrozenStatsBatchNorm2d",
    "band_key",
    "check_in_channels",
    "download_state_dict",
    "freeze_batch_norm",
    "has_batch_norm_stats",
    "load_into",
    "match_bands",
    "normalization_of",
    "read_state_dict",
    "save_state_dict",
    "select_in_channels",
    "strip_prefix",
    "strip_prefixes",
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
    state: Any
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


def strip_prefixes(state: Mapping[str, Tensor], prefixes: Iterable[str]) -> StateDict:
    """Remove each of ``prefixes`` in turn where EVERY key carries it (see `strip_prefix()`).

    E.g. ``("model.", "backbone.")`` turns a torchgeo ``ClassificationTask`` checkpoint
    (``model.conv1.weight``) or a wrapped backbone into the bare network's keys.
    """
    out = dict(state)
    for prefix in prefixes:
        out = strip_prefix(out, prefix)
    return out


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
    strict: bool = True,
) -> None:
    """Load ``state`` into ``module`` and fail loudly on anything that does not fit.

    Args:
        module: the model to fill.
        state: parameter name -> tensor.
        source: the file or weights name, for messages.
        ignore: key prefixes allowed to be missing from the file, unexpected in it, or of another
            shape (e.g. a classifier head that the encoder replaces, or torchxrayvision's
            ``op_threshs``); those keep their init.
        strict: when False, keys missing from the file or absent from the model are allowed
            (and listed in a ``UserWarning``); a shape mismatch is still an error.

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
    if not strict and (missing or unexpected):
        warnings.warn(
            f"weights {source} loaded with strict=False: {len(missing)} model keys kept their init "
            f"({missing[:5]}), {len(unexpected)} file keys were not used ({unexpected[:5]})",
            UserWarning,
            stacklevel=3,
        )
        missing, unexpected = [], []
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


_BAND = re.compile(r"^(.*?B)0*(\d+)([A-Z]?)$")


def band_key(name: str) -> str:
    """The canonical spelling of a band name: upper case, band numbers with two digits
    (as Sentinel-2 product files spell them).

    ``"B1"``, ``"b01"`` -> ``"B01"``; ``"B8a"``, ``"B08A"`` -> ``"B8A"``; ``"SR_B1"`` -> ``"SR_B01"``;
    names without a band number (``"VV"``, ``"B6_VCID_1"``) are only upper-cased.
    """
    upper = str(name).strip().upper()
    found = _BAND.match(upper)
    if not found:
        return upper
    number = int(found[2])  # Sentinel-2 spells B01 .. B12 with two digits, but B8A with one
    return f"{found[1]}{number}{found[3]}" if found[3] else f"{found[1]}{number:02d}"


def match_bands(bands: Sequence[str], trained: Sequence[str], source: object, adapt: bool = False) -> list[int] | None:
    """Where each of the data's ``bands`` sits among the bands a weight was ``trained`` on.

    Names are compared with `band_key()` (``B1`` = ``B01``, ``B8a`` = ``B8A``).

    Args:
        bands: the data's band names, in channel order.
        trained: the weight's band names, in its channel order (torchgeo's ``meta["bands"]``).
        source: the weights, for messages.
        adapt: allow a subset of the trained bands, or another order (the first convolution is
            then cut to those bands by `select_in_channels()`).

    Returns:
        None when the bands are the trained ones in the trained order; otherwise the index in
        ``trained`` of each data band (only with ``adapt=True``).

    Raises:
        ModfuseError: a data band the weights never saw, or (without ``adapt``) another band
            list or order; the message gives both lists.
    """
    have, want = [band_key(b) for b in bands], [band_key(b) for b in trained]
    if have == want:
        return None
    unknown = [b for b, k in zip(bands, have) if k not in want]
    lists = f"the weights' bands {list(trained)}, the data's bands {list(bands)}"
    if unknown:
        raise ModfuseError(f"weights {source} were not trained on bands {unknown} ({lists})")
    if len(set(have)) != len(have):
        raise ModfuseError(f"band names repeat: {list(bands)}")
    if not adapt:
        what = "in another order" if sorted(have) == sorted(want) else "a different set of bands"
        raise ModfuseError(
            f"weights {source}: the data has {what} ({lists}); read the bands in the weights' "
            "order, or pass adapt_bands=True to keep the pretrained filters of these bands by name"
        )
    return [want.index(k) for k in have]


def select_in_channels(state: Mapping[str, Tensor], key: str, index: Sequence[int]) -> StateDict:
    """Keep the input channels ``index`` (in that order) of the first convolution ``key``.

    The kept filters are the pretrained ones, unchanged (not rescaled): a dropped band's
    filters are simply gone, as if that band read 0 after the weights' normalisation.
    Shapes: ``state[key]`` (out, C, k, k) -> (out, len(index), k, k).
    """
    out = dict(state)
    out[key] = state[key][:, list(index)].clone()
    return out


def normalization_of(weights: Any) -> tuple[list[float], list[float]] | None:
    """(mean, std) of the ``Normalize`` step of a torchgeo weight's ``transforms``, or None.

    torchgeo weights carry their input normalisation as ``weights.transforms`` (a torchvision
    or kornia module chain, e.g. ``Resize, CenterCrop, Normalize(mean=[0], std=[10000])``);
    only the normalisation is taken (resizing and cropping belong to the data, not to the
    encoder). A single value applies to every band.
    """
    transforms = getattr(weights, "transforms", None)
    steps: list[Any] = list(transforms.modules()) if isinstance(transforms, nn.Module) else [transforms]
    steps += list(getattr(transforms, "transforms", []) or [])
    for step in steps:
        if type(step).__name__ == "Normalize" and hasattr(step, "mean") and hasattr(step, "std"):
            flat = lambda v: [float(x) for x in torch.as_tensor(v, dtype=torch.float64).flatten()]  # noqa: E731
            return flat(step.mean), flat(step.std)
    return None


def download_state_dict(weights: Any) -> StateDict:
    """``weights.get_state_dict()`` (torchgeo/torchvision download it once into their cache).

    Raises:
        ModfuseError: when the download fails (no network): naming the URL and how to use a
            local copy instead (``weights_path=``, with ``weights=`` still describing it).
    """
    try:
        return dict(weights.get_state_dict(progress=False))
    except (urllib.error.URLError, OSError, ConnectionError) as exc:
        url = getattr(weights, "url", "?")
        raise ModfuseError(
            f"weights {weights!r}: cannot download {url} ({type(exc).__name__}: {exc}). Offline? "
            f"Fetch that file once where there is network, then pass weights_path=<the file> together with "
            f"weights={weights!r} (its band names and normalisation still apply; nothing is downloaded)"
        ) from exc


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
