"""Multispectral image encoders: a 2D CNN for any band count, and spectral-spatial tokens.

``spectral``: a timm backbone (ResNet-18 by default, the architecture of torchgeo's
Sentinel-2 / Landsat pretrained weights) whose first convolution takes ``bands`` channels.
Pretrained weights come from a torchgeo ``WeightsEnum`` member (downloaded by torchgeo, for
online users) or from a local state dict file (offline). The band count is checked against
the weights BEFORE anything is downloaded or loaded. ``backbone="small"`` is a four-layer CNN
(`SmallCNN`, about 0.1 M parameters) for CPU runs, smoke tests and tiny chips.

``spectral_tokens``: in the spirit of SpectralGPT, 3D patches over (band group x space)
embedded by one Conv3d, with separable spectral and spatial position embeddings and a small
transformer; it returns tokens for attention-based fusion.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from modfuse.encoders.base import Encoder, check_finite, check_ndim, check_size
from modfuse.encoders.registry import register
from modfuse.encoders.weights import (
    check_in_channels,
    download_state_dict,
    freeze_batch_norm,
    has_batch_norm_stats,
    load_into,
    match_bands,
    normalization_of,
    read_state_dict,
    select_in_channels,
    strip_prefixes,
)
from modfuse.errors import ModfuseError
from modfuse.utils.optional import require

__all__ = ["SMALL_WIDTHS", "SmallCNN", "SpectralEncoder", "SpectralTokenEncoder", "resolve_weights"]

Norm = Literal["group", "frozen_batch"]
_HEAD_KEYS = ("fc.", "head.", "classifier.")
SMALL = "small"
SMALL_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)
"""Channels of the four stride-2 stages of the ``small`` preset."""


class SmallCNN(nn.Sequential):
    """A small 2D CNN for any number of input channels: the ``small`` preset of the spectral
    and X-ray encoders (CPU runs, smoke tests, tiny images).

    Each stage ``i`` (``conv{i}``, ``norm{i}``, ``act{i}``) is a 3x3 convolution with stride 2, a
    normalisation and a ReLU; the last stage is globally average pooled. ``conv1`` is the first
    convolution, as in timm/torchvision ResNets, so local weight files load like any backbone's.

    Args:
        in_channels: input channels (bands).
        widths: output channels of each stage (multiples of 8 for GroupNorm).
        norm: ``"group"`` (GroupNorm, 8 groups: a row never depends on its batch) or
            ``"batch"`` (BatchNorm2d, e.g. to be frozen after pretraining).

    Shapes:
        input (n, in_channels, H, W), any H, W >= 1 -> output (n, widths[-1]).
    """

    def __init__(self, in_channels: int, widths: Sequence[int] = SMALL_WIDTHS, norm: str = "group") -> None:
        if norm not in ("group", "batch"):
            raise ModfuseError(f"norm: expected 'group' or 'batch', found {norm!r}")
        if not widths or (norm == "group" and any(w % 8 for w in widths)):
            raise ModfuseError(f"widths: expected stage widths that are multiples of 8, found {list(widths)}")
        layers: dict[str, nn.Module] = {}
        width = in_channels
        for i, out in enumerate(widths, start=1):
            layers[f"conv{i}"] = nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False)
            layers[f"norm{i}"] = nn.GroupNorm(8, out) if norm == "group" else nn.BatchNorm2d(out)
            layers[f"act{i}"] = nn.ReLU(inplace=True)
            width = out
        super().__init__(OrderedDict(layers))
        self.num_features = width

    def forward(self, x: Tensor) -> Tensor:
        """(n, in_channels, H, W) -> (n, widths[-1])."""
        return super().forward(x).mean(dim=(2, 3))


def resolve_weights(weights: Any) -> Any:
    """A torchgeo ``WeightsEnum`` member from the member itself or its name.

    Names like ``"ResNet18_Weights.SENTINEL2_ALL_MOCO"`` keep encoder configs JSON-serialisable.
    """
    if weights is None or not isinstance(weights, str):
        return weights
    models = require("torchgeo.models", extra="geo")
    try:
        return models.get_weight(weights)
    except Exception as exc:  # torchgeo raises different errors for unknown names across versions
        raise ModfuseError(f"weights: expected a torchgeo weights name, found {weights!r} ({exc})") from exc


def _check_enum(weights: Any, bands: int, backbone: str, adapt: bool) -> None:
    """Check a weights enum's metadata against the encoder, before any download."""
    meta = getattr(weights, "meta", None)
    if not isinstance(meta, dict) or "in_chans" not in meta:
        raise ModfuseError(f"weights {weights!r}: expected a torchgeo WeightsEnum member with meta['in_chans']")
    if int(meta["in_chans"]) != bands and not adapt:
        names = f" ({', '.join(meta['bands'])})" if meta.get("bands") else ""
        raise ModfuseError(
            f"weights {weights!r} were trained for {meta['in_chans']} bands{names}; "
            f"this encoder expects {bands} bands: select those bands in the data, build with bands={meta['in_chans']}, "
            "or give the data's band names (bands=[...]) with adapt_bands=True to keep the filters of those bands"
        )
    model = meta.get("model")
    if model and model != backbone:
        raise ModfuseError(f"weights {weights!r} are for backbone {model!r}; this encoder has backbone {backbone!r}")


def _trained_bands(weights: Any, weight_bands: Sequence[str] | None) -> list[str] | None:
    """The band names the weights were trained on: declared, or from the enum's metadata."""
    if weight_bands is not None:
        return list(weight_bands)
    meta = getattr(weights, "meta", None)
    return list(meta["bands"]) if isinstance(meta, dict) and meta.get("bands") else None


@register("spectral")
class SpectralEncoder(Encoder):
    """2D CNN over multispectral images with any number of bands.

    The backbone is ``timm.create_model(backbone, in_chans=bands, num_classes=0)``: its first
    convolution takes ``bands`` channels and its classifier is removed, so it returns globally
    pooled features, projected to ``out_dim`` when that differs from the backbone width.
    ``backbone="small"`` is the CPU preset instead: `SmallCNN` (four stride-2 3x3
    convolutions, 16-32-64-128 channels, about 0.1 M parameters for 13 bands; no timm), for
    smoke tests, CPU runs and chips of any size. The default stays ResNet-18.

    Normalisation: ``"group"`` (GroupNorm) for training from scratch, so a row's features never
    depend on its batch; ``"frozen_batch"`` for BatchNorm-pretrained weights (the pretrained
    running statistics are used, affine parameters still train). ``norm=None`` picks
    ``"frozen_batch"`` when pretrained weights with BatchNorm statistics are given, else ``"group"``.

    Band names and pretrained weights: give ``bands`` as the data's band names (e.g. a
    reader's ``source.bands``) and they are compared, in order, with the bands the weights
    were trained on (torchgeo's ``meta["bands"]``, or ``weight_bands=`` for a local file);
    spellings are normalised (``B1`` = ``B01``, ``B8a`` = ``B8A``). Another order or another
    set of bands is refused with both lists, unless ``adapt_bands=True``: the first
    convolution then keeps the pretrained filters of the data's bands, by name and in the
    data's order (a 12-band BigEarthNet chip without B10 reuses 13-band Sentinel-2 weights;
    the kept filters are the pretrained ones, unchanged).

    Input normalisation: with weights from a torchgeo enum, the ``Normalize`` step of the
    weight's ``transforms`` (e.g. ``/ 10000`` for the SSL4EO-S12 Sentinel-2 weights) is
    applied to the input by default (``normalize=None``), so raw reflectances go in as they
    were given to the pretrained model; its resizing and cropping are not applied.

    Args:
        bands: number of spectral bands (input channels), or their names in channel order;
            checked on every input and against the weights.
        backbone: timm model name (torchgeo's weights exist for ``resnet18``, ``resnet50``, ...),
            or ``"small"`` (`SmallCNN`; local ``weights_path`` files only).
        out_dim: output width (None: the backbone's feature width, 512 for ResNet-18, 128 for
            ``"small"``).
        weights: a torchgeo ``WeightsEnum`` member (or its name), e.g.
            ``torchgeo.models.ResNet18_Weights.SENTINEL2_ALL_MOCO`` (13 bands); needs internet
            the first time (torchgeo's download cache), unless ``weights_path`` is given too:
            the enum then only describes the local file (bands, normalisation, backbone).
        weights_path: a local state dict (``.pt``/``.pth`` read with ``weights_only=True``, or
            ``.safetensors``) of the timm backbone (keys as in ``backbone.state_dict()``; a
            ``backbone.`` or ``model.`` prefix is removed, so a torchgeo ``ClassificationTask``
            checkpoint loads; classifier keys are ignored).
        weight_bands: the band names a local ``weights_path`` was trained on, in its order
            (default: the enum's ``meta["bands"]``, or none: then only the count is checked).
        adapt_bands: keep the pretrained filters of the data's bands by name when the data has
            a subset of the trained bands or another order (needs band names, see above).
        normalize: apply the weights' input normalisation (None: when the enum declares one).
        ignore_keys: more key prefixes of the file to leave out (kept at their init when the
            model has them).
        strict: False allows keys missing from the file or unknown to the model (warned).
        norm: ``"group"``, ``"frozen_batch"`` or None (auto); given to timm as ``norm_layer``, so
            it applies to backbones built from BatchNorm blocks (ResNet, ResNeXt, RegNet, ...).

    Shapes:
        input (n, bands, H, W) -> output (n, out_dim).
    """

    input_mean: Tensor | None  # buffers (1, bands, 1, 1), or None without input normalisation
    input_std: Tensor | None

    def __init__(
        self,
        bands: int | Sequence[str],
        backbone: str = "resnet18",
        out_dim: int | None = None,
        weights: Any = None,
        weights_path: str | Path | None = None,
        norm: Norm | None = None,
        weight_bands: Sequence[str] | None = None,
        adapt_bands: bool = False,
        normalize: bool | None = None,
        ignore_keys: Sequence[str] = (),
        strict: bool = True,
    ) -> None:
        super().__init__()
        self.band_names: list[str] | None = None if isinstance(bands, int) else [str(b) for b in bands]
        bands = bands if isinstance(bands, int) else len(bands)
        small = backbone == SMALL
        if small and weights is not None:
            raise ModfuseError(
                "backbone='small' has no torchgeo weights; use a timm backbone (e.g. 'resnet18') "
                "with weights=, or weights_path= with a state dict of the small network"
            )
        timm = None if small else require("timm", extra="geo")
        weights = resolve_weights(weights)
        source = weights_path if weights_path is not None else repr(weights)
        trained = _trained_bands(weights, weight_bands)
        index = None  # the trained band of each data band, when the first convolution is cut
        if trained is not None and self.band_names is not None:  # before the download
            index = match_bands(self.band_names, trained, source, adapt_bands)
        if weights is not None:
            _check_enum(weights, bands, backbone, adapt=index is not None)  # before the download
        state = None
        if weights_path is not None:
            state = strip_prefixes(read_state_dict(weights_path), ("model.", "backbone."))
        elif weights is not None:
            state = download_state_dict(weights)
        if state is not None:  # before building the backbone
            first = "conv1" if timm is None else timm.models.get_pretrained_cfg_value(backbone, "first_conv") or "conv1"
            if index is not None and trained is not None:
                check_in_channels(state, f"{first}.weight", len(trained), source, "bands")
                state = select_in_channels(state, f"{first}.weight", index)
            check_in_channels(state, f"{first}.weight", bands, source, "bands")
        self._set_input_normalization(weights, normalize, index, source)
        if norm is None:
            norm = "frozen_batch" if state is not None and has_batch_norm_stats(state) else "group"
        if norm not in ("group", "frozen_batch"):
            raise ModfuseError(f"norm: expected 'group', 'frozen_batch' or None, found {norm!r}")
        self.bands, self.norm = bands, norm
        self.backbone: nn.Module
        if timm is None:
            self.backbone = SmallCNN(bands, SMALL_WIDTHS, "group" if norm == "group" else "batch")
        else:
            self.backbone = timm.create_model(
                backbone,
                pretrained=False,  # never let timm download; weights come from torchgeo or a file
                in_chans=bands,
                num_classes=0,
                norm_layer="groupnorm" if norm == "group" else "batchnorm2d",
            )
        if norm == "frozen_batch":
            freeze_batch_norm(self.backbone)
        if state is not None:
            load_into(self.backbone, state, source, ignore=(*_HEAD_KEYS, *ignore_keys), strict=strict)
        width = int(cast(Any, self.backbone).num_features)  # timm models and SmallCNN both define it
        self.out_dim = width if out_dim is None else out_dim
        self.proj: nn.Module = nn.Identity() if self.out_dim == width else nn.Linear(width, self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(n, bands, H, W) -> (n, out_dim)."""
        check_ndim(x, 4, "(n, bands, height, width)")
        check_size(x, 1, self.bands, "number of spectral bands")
        x = x.float()
        check_finite(x, "multispectral image")
        if self.input_mean is not None and self.input_std is not None:
            x = (x - self.input_mean) / self.input_std
        return self.proj(self.backbone(x))

    def _set_input_normalization(
        self, weights: Any, normalize: bool | None, index: list[int] | None, source: object
    ) -> None:
        """Buffers (1, bands or 1, 1, 1) of the weights' input normalisation, or None."""
        stats = normalization_of(weights) if weights is not None else None
        if normalize and stats is None:
            raise ModfuseError(f"normalize=True, but weights {source} declare no Normalize step in their transforms")
        self.register_buffer("input_mean", None, persistent=False)
        self.register_buffer("input_std", None, persistent=False)
        if stats is None or normalize is False:
            return
        mean, std = (torch.tensor(v, dtype=torch.float32) for v in stats)
        if index is not None and len(mean) > 1:  # per-band statistics follow the kept bands
            mean, std = mean[index], std[index]
        # not persistent: they follow from the weights named in the config, like the architecture
        self.register_buffer("input_mean", mean.reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("input_std", std.reshape(1, -1, 1, 1), persistent=False)


@register("spectral_tokens")
class SpectralTokenEncoder(Encoder):
    """Spectral-spatial tokens: 3D patches over (band group x space), then a transformer.

    The image is seen as a (bands, H, W) volume; a Conv3d with kernel and stride
    (band_group, patch_size, patch_size) embeds each patch of ``band_group`` adjacent bands x
    ``patch_size`` x ``patch_size`` pixels, as in SpectralGPT. Position embeddings are separable
    (one per band group + one per spatial patch), then ``depth`` pre-norm transformer layers
    (attention within each image only) and a final LayerNorm.

    Args:
        bands: number of bands (a multiple of ``band_group``).
        band_group: adjacent bands per token.
        image_size: image height = width (a multiple of ``patch_size``), checked on input.
        patch_size: spatial patch side.
        out_dim: token width.
        depth: transformer layers.
        heads: attention heads (``out_dim`` must be a multiple).
        dropout: dropout probability.

    Shapes:
        input (n, bands, image_size, image_size) -> tokens (n, out_tokens, out_dim) with
        ``out_tokens = (bands // band_group) * (image_size // patch_size) ** 2``.
    """

    def __init__(
        self,
        bands: int = 12,
        band_group: int = 3,
        image_size: int = 64,
        patch_size: int = 8,
        out_dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if bands % band_group:
            raise ModfuseError(f"bands: expected a multiple of band_group={band_group}, found {bands}")
        if image_size % patch_size:
            raise ModfuseError(f"image_size: expected a multiple of patch_size={patch_size}, found {image_size}")
        if out_dim % heads:
            raise ModfuseError(f"out_dim: expected a multiple of heads={heads}, found {out_dim}")
        self.bands, self.image_size = bands, image_size
        self.groups, self.side = bands // band_group, image_size // patch_size
        self.out_dim = out_dim
        self.out_tokens = self.groups * self.side**2
        self.embed = nn.Conv3d(
            1, out_dim, (band_group, patch_size, patch_size), stride=(band_group, patch_size, patch_size)
        )
        self.pos_spectral = nn.Parameter(torch.randn(1, self.groups, 1, out_dim) * 0.02)
        self.pos_spatial = nn.Parameter(torch.randn(1, 1, self.side**2, out_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            out_dim, heads, 4 * out_dim, dropout, batch_first=True, norm_first=True, activation="gelu"
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(n, bands, H, W) -> (n, out_tokens, out_dim)."""
        check_ndim(x, 4, "(n, bands, height, width)")
        check_size(x, 1, self.bands, "number of spectral bands")
        check_size(x, 2, self.image_size, "image height")
        check_size(x, 3, self.image_size, "image width")
        x = x.float()
        check_finite(x, "multispectral image")
        n = x.shape[0]
        h = self.embed(x[:, None])  # (n, d, groups, side, side)
        h = h.flatten(3).permute(0, 2, 3, 1)  # (n, groups, side*side, d)
        h = (h + self.pos_spectral + self.pos_spatial).reshape(n, self.out_tokens, self.out_dim)
        return self.norm(self.blocks(h))
