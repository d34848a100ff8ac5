"""Two small file readers the collections need beyond [`modfuse.data.readers`][modfuse.data.readers]: a
multi-band GeoTIFF per sample (EuroSAT-MS chips) and a greyscale JPEG/PNG per sample
(MIMIC-CXR-JPG, CheXpert). Manifests name them by class path, e.g.
``"reader": "modfuse.datasets.collections._readers.GeoTiffSource"``; only the paths listed in
`OWN_READERS` are accepted (a manifest is data: it never names code to import)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers._base import FileSource, PathsLike
from modfuse.errors import ReadError
from modfuse.utils.optional import require

__all__ = ["OWN_READERS", "GeoTiffSource", "ImageSource", "reader_class"]


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
                    grey = grey.resize((self.size[1], self.size[0]), Image.BILINEAR)
                data = np.asarray(grey, dtype=np.float32) / 255.0
        except UnidentifiedImageError as exc:
            raise ReadError(f"not an image file: {exc}", path=path, sample_id=sample_id) from exc
        return torch.from_numpy(data)[None]


OWN_READERS: dict[str, type] = {
    f"{__name__}.GeoTiffSource": GeoTiffSource,
    f"{__name__}.ImageSource": ImageSource,
}
"""The class paths a manifest may name besides the reader registry's names: modfuse's own
readers, looked up in this table (nothing named by a manifest is ever imported)."""


def reader_class(name: str) -> Any:
    """One of modfuse's own reader classes by its ``module.Class`` path (see `OWN_READERS`).

    Raises:
        ReadError: for any other name; nothing is imported.
    """
    try:
        return OWN_READERS[name]
    except KeyError:
        raise ReadError(
            f"reader {name!r} is not one of modfuse's own reader classes {sorted(OWN_READERS)}; "
            "a manifest names a registered reader (modfuse.data.readers.available()) or one of these"
        ) from None
