"""X-ray encoder: MONAI DenseNet121 (2D) with optional pretrained weights from a local file, or a
small CNN preset for CPU runs and tiny test images (``arch="small"``).

Weight presets (`XRAY_PRESETS`) declare what a family of pretrained weights expects as input.
``preset="xrv"``: torchxrayvision's DenseNet121 weights were trained on single-channel
224 x 224 radiographs scaled to [-1024, 1024] (``xrv.datasets.normalize(img, maxval)``),
while `DicomSource` (and most image pipelines) give [0, 1]: the preset maps the input range
``input_range`` (default (0, 1)) linearly onto [-1024, 1024] inside the encoder, and leaves out
the weights' ``op_threshs`` (per-pathology operating points, not a network parameter).
Resize the images to 224 x 224 in the reader (``DicomSource(spatial_size=(224, 224))``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from modfuse.encoders.base import Encoder, check_finite, check_ndim, check_size
from modfuse.encoders.registry import register
from modfuse.encoders.spectral import SMALL_WIDTHS, SmallCNN
from modfuse.encoders.weights import (
    StateDict,
    check_in_channels,
    freeze_batch_norm,
    has_batch_norm_stats,
    load_into,
    read_state_dict,
)
from modfuse.errors import ModfuseError
from modfuse.utils.optional import require

__all__ = ["XRAY_PRESETS", "XRayEncoder", "XRayPreset"]

Norm = Literal["group", "frozen_batch"]
Arch = Literal["densenet121", "small"]

# torchvision / torchxrayvision DenseNet keys ("denselayer1.norm1.weight", older "norm.1.weight")
# -> MONAI's ("denselayer1.layers.norm1.weight"), as MONAI does for its own hub weights.
_TV_KEY = re.compile(
    r"^(.*denselayer\d+)\.(norm|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_HEAD_KEYS = ("class_layers.out.", "classifier.")
# DenseNet121: five halvings (stem conv, stem pool, three transitions) must leave >= 1 pixel;
# the small CNN only has padded stride-2 convolutions (any size works; 8 keeps some context)
_MIN_SIZE = {"densenet121": 32, "small": 8}
_FIRST_CONV = {"densenet121": "features.conv0.weight", "small": "features.conv1.weight"}


class _SmallXRayNet(nn.Module):
    """The ``small`` preset: [`SmallCNN`][modfuse.encoders.spectral.SmallCNN] features + a linear
    head named like MONAI's DenseNet (``features``, ``class_layers.out``)."""

    def __init__(self, in_channels: int, out_dim: int, norm: str, dropout: float) -> None:
        super().__init__()
        self.features = SmallCNN(in_channels, SMALL_WIDTHS, norm)
        self.class_layers = nn.Sequential(
            OrderedDict(dropout=nn.Dropout(dropout), out=nn.Linear(self.features.num_features, out_dim))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.class_layers(self.features(x))


@dataclass(frozen=True)
class XRayPreset:
    """What a family of pretrained X-ray weights expects.

    Attributes:
        value_range: the (low, high) intensity range the weights were trained on; the
            encoder maps its ``input_range`` linearly onto it.
        image_size: the training resolution (documented; resize in the reader).
        in_channels: image channels of the weights.
        ignore_keys: state dict keys of such files that are not network parameters.
    """

    value_range: tuple[float, float]
    image_size: int
    in_channels: int = 1
    ignore_keys: tuple[str, ...] = ()


XRAY_PRESETS: dict[str, XRayPreset] = {
    # torchxrayvision: xrv.datasets.normalize maps [0, maxval] to [-1024, 1024]; 224 x 224, 1 channel
    "xrv": XRayPreset(value_range=(-1024.0, 1024.0), image_size=224, in_channels=1, ignore_keys=("op_threshs",)),
}
"""Weight presets of the ``xray`` encoder (name -> `XRayPreset`)."""


def _monai_keys(state: StateDict) -> StateDict:
    return {_TV_KEY.sub(r"\1.layers.\2\3.\4", k): v for k, v in state.items()}


@register("xray")
class XRayEncoder(Encoder):
    """DenseNet121 (MONAI, ``spatial_dims=2``) for radiographs, pooled to ``out_dim``.

    The DenseNet features (1024 channels) are globally average pooled and linearly projected
    to ``out_dim`` (MONAI's ``class_layers``). ``arch="small"`` replaces DenseNet121 (7 M
    parameters) by a four-layer CNN ([`SmallCNN`][modfuse.encoders.spectral.SmallCNN], 16-32-64-128
    channels, about 0.1 M parameters; images from 8x8): for CPU runs, smoke tests and tiny
    images. DenseNet121 stays the default. Normalisation: ``"group"`` (GroupNorm, 32
    groups) when training from scratch, so a row's features never depend on its batch;
    ``"frozen_batch"`` for BatchNorm-pretrained weights (the stored running statistics are used
    in training too, the affine parameters still train). ``norm=None`` picks ``"frozen_batch"``
    when the weights file holds BatchNorm statistics, else ``"group"``.

    Args:
        in_channels: image channels (1 for radiographs).
        out_dim: output width.
        weights_path: optional local state dict (``.pt``/``.pth`` read with
            ``weights_only=True``, or ``.safetensors``) in MONAI or torchvision DenseNet121
            key layout (for ``arch="small"``: the small network's own keys, as in
            ``encoder.net.state_dict()``); a classifier head in the file is ignored. Nothing
            is downloaded.
        norm: ``"group"``, ``"frozen_batch"`` or None (auto, see above).
        dropout: dropout inside dense layers (``small``: before the linear head).
        arch: ``"densenet121"`` (default) or ``"small"``.
        preset: a name in `XRAY_PRESETS` (``"xrv"``: torchxrayvision weights): its input range
            is applied and its non-parameter keys are ignored (see the module doc).
        input_range: the (low, high) range of the images given to the encoder, mapped onto the
            preset's range (default (0, 1), what `DicomSource` returns); only with ``preset``.
        ignore_keys: more key prefixes of the weights file to leave out.
        strict: False allows keys missing from the file or unknown to the model (warned).

    Shapes:
        input (n, in_channels, H, W) with H, W >= 32 (``small``: >= 8) -> output (n, out_dim).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 512,
        weights_path: str | Path | None = None,
        norm: Norm | None = None,
        dropout: float = 0.0,
        arch: Arch = "densenet121",
        preset: str | None = None,
        input_range: tuple[float, float] = (0.0, 1.0),
        ignore_keys: Sequence[str] = (),
        strict: bool = True,
    ) -> None:
        super().__init__()
        if arch not in _MIN_SIZE:
            raise ModfuseError(f"arch: expected one of {sorted(_MIN_SIZE)}, found {arch!r}")
        if preset is not None and preset not in XRAY_PRESETS:
            raise ModfuseError(f"preset: expected one of {sorted(XRAY_PRESETS)}, found {preset!r}")
        self.preset = XRAY_PRESETS[preset] if preset is not None else None
        self.scale, self.shift = self._input_map(input_range)
        ignore = (*_HEAD_KEYS, *ignore_keys, *(self.preset.ignore_keys if self.preset else ()))
        state = _monai_keys(read_state_dict(weights_path)) if weights_path is not None else None
        if state is not None:  # before building the (slow) network
            check_in_channels(state, _FIRST_CONV[arch], in_channels, weights_path, "image channels")
        if norm is None:
            norm = "frozen_batch" if state is not None and has_batch_norm_stats(state) else "group"
        if norm not in ("group", "frozen_batch"):
            raise ModfuseError(f"norm: expected 'group', 'frozen_batch' or None, found {norm!r}")
        self.in_channels, self.out_dim, self.norm, self.arch = in_channels, out_dim, norm, arch
        self.net: nn.Module
        if arch == "small":
            self.net = _SmallXRayNet(in_channels, out_dim, "group" if norm == "group" else "batch", dropout)
        else:
            nets = require("monai.networks.nets", extra="med")
            self.net = nets.DenseNet121(
                spatial_dims=2,
                in_channels=in_channels,
                out_channels=out_dim,
                norm=("group", {"num_groups": 32}) if norm == "group" else "batch",
                dropout_prob=dropout,
            )
        if norm == "frozen_batch":
            freeze_batch_norm(self.net)
        if state is not None:
            load_into(self.net, state, weights_path, ignore=ignore, strict=strict)

    def forward(self, x: Tensor) -> Tensor:
        """(n, in_channels, H, W) -> (n, out_dim)."""
        check_ndim(x, 4, "(n, channels, height, width)")
        check_size(x, 1, self.in_channels, "number of image channels")
        least = _MIN_SIZE[self.arch]
        if min(x.shape[2:]) < least:
            raise ModfuseError(f"image size: expected at least {least}x{least}, found {tuple(x.shape[2:])}")
        x = x.float()
        check_finite(x, "X-ray image")
        if self.preset is not None:
            x = x * self.scale + self.shift
        return self.net(x)

    def _input_map(self, input_range: tuple[float, float]) -> tuple[float, float]:
        """(scale, shift) mapping ``input_range`` linearly onto the preset's value range."""
        low, high = (float(v) for v in input_range)
        if not high > low:
            raise ModfuseError(f"input_range: expected (low, high) with high > low, found {tuple(input_range)}")
        if self.preset is None:
            return 1.0, 0.0
        lo, hi = self.preset.value_range
        scale = (hi - lo) / (high - low)
        return scale, lo - low * scale
