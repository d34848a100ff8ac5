"""X-ray encoder: MONAI DenseNet121 (2D) with optional pretrained weights from a local file, or a
small CNN preset for CPU runs and tiny test images (``arch="small"``)."""

from __future__ import annotations

import re
from collections import OrderedDict
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

__all__ = ["XRayEncoder"]

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
    ) -> None:
        super().__init__()
        if arch not in _MIN_SIZE:
            raise ModfuseError(f"arch: expected one of {sorted(_MIN_SIZE)}, found {arch!r}")
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
            load_into(self.net, state, weights_path, ignore=_HEAD_KEYS)

    def forward(self, x: Tensor) -> Tensor:
        """(n, in_channels, H, W) -> (n, out_dim)."""
        check_ndim(x, 4, "(n, channels, height, width)")
        check_size(x, 1, self.in_channels, "number of image channels")
        least = _MIN_SIZE[self.arch]
        if min(x.shape[2:]) < least:
            raise ModfuseError(f"image size: expected at least {least}x{least}, found {tuple(x.shape[2:])}")
        x = x.float()
        check_finite(x, "X-ray image")
        return self.net(x)
