"""Per-sample image files: a multi-band GeoTIFF (EuroSAT-MS chips; reader ``geotiff``) and a
greyscale JPEG/PNG (MIMIC-CXR-JPG, CheXpert; reader ``image``).

Manifests written before these readers were registered name them by their old class paths
(``modfuse.datasets.collections._readers.GeoTiffSource``, ``...ImageSource``); `LEGACY_NAMES`
maps those strings to the registry names, so such manifests keep loading (the strings are
looked up, never imported).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers import register
from modfuse.data.readers._base import FileSource, PathsLike
from modfuse.errors import ReadError
from modfuse.utils.optional import require

__all__ = ["LEGACY_NAMES", "GeoTiffSource", "ImageSource"]

LEGACY_NAMES = {
    "modfuse.datasets.collections._readers.GeoTiffSource": "geotiff",
    "modfuse.datasets.collections._readers.ImageSource": "image",
}
"""Reader strings of older manifests -> the registry name that reads them now."""


@register("geotiff")
class GeoTiffSource(FileSource):
    """One multi-band raster file per sample (all bands of the file, in file order).

    Args:
        files: see `PathsLike`.
        bands: expected band count (a file with another count raises ReadError), or None.
        scale: divide the values by this (EuroSAT/Sentinel-2 digital numbers: 10000).
        collate: default ``"stack"``.

    Returns from ``load``:
        float32 Tensor (bands, H, W).
    """

    default_pattern: ClassVar[str] = "**/*.tif"

    def __init__(
        self, files: PathsLike, *, bands: int | None = None, scale: float = 1.0, collate: CollateMode = "stack"
    ) -> None:
        super().__init__(files, collate=collate)
        self.bands, self.scale = bands, scale

    def read(self, path: Path, sample_id: Hashable) -> torch.Tensor:
        rasterio = require("rasterio", extra="geo")
        try:
            with rasterio.open(path) as src:
                data = src.read().astype(np.float32)
        except rasterio.errors.RasterioError as exc:
            raise ReadError(f"not a readable raster: {exc}", path=path, sample_id=sample_id) from exc
        if self.bands is not None and data.shape[0] != self.bands:
            raise ReadError(f"expected {self.bands} bands, found {data.shape[0]}", path=path, sample_id=sample_id)
        return torch.from_numpy(data / self.scale)


@register("image")
class ImageSource(FileSource):
    """One greyscale image (JPEG, PNG) per sample, scaled to [0, 1].

    Args:
        files: see `PathsLike`.
        size: output (H, W) (bilinear resize), or None to keep the file's size.
        collate: default ``"auto"``.

    Returns from ``load``:
        float32 Tensor (1, H, W).
    """

    default_pattern: ClassVar[str] = "**/*.jpg"

    def __init__(self, files: PathsLike, *, size: Sequence[int] | None = None, collate: CollateMode = "auto") -> None:
        super().__init__(files, collate=collate)
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def read(self, path: Path, sample_id: Hashable) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                grey = img.convert("L")
                if self.size is not None:
                    grey = grey.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                data = np.asarray(grey, dtype=np.float32) / 255.0
        except UnidentifiedImageError as exc:
            raise ReadError(f"not an image file: {exc}", path=path, sample_id=sample_id) from exc
        return torch.from_numpy(data)[None]
