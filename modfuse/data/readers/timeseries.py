"""Satellite image time series in the eo-learn EOPatch layout, as per-pixel samples.

An EOPatch folder holds ``data/<NAME>.npy`` (T, H, W, C) time-dependent bands, ``mask/``
(T, H, W, 1) per-date masks (``IS_VALID``, cloud mask ``CLM``), ``data_timeless/`` and
``mask_timeless/`` (H, W, C) layers (``DEM`` elevation, ``LULC`` labels), ``timestamps.json``
and ``bbox.geojson``. Each pixel is one sample: `EOPatchSeriesSource` gives its series as
``{"x": (T, C), "valid": (T,), "t": (T,)}`` (what the time-series encoder takes: a date is
missing where the pixel is invalid or cloudy), `EOPatchTimelessSource` its timeless
values (e.g. elevation) as a tabular row. Pixel rows/columns and map coordinates are in
``index`` so spatial-block splits are possible (neighbouring pixels are correlated).

Arrays are read with ``numpy.load(allow_pickle=False)``: no pickle is ever loaded.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers import register
from modfuse.errors import ModfuseError, ReadError

__all__ = ["EOPatchElevationSource", "EOPatchSeriesSource", "EOPatchTimelessSource", "load_feature"]


def load_feature(root: Path, name: str, ndim: int) -> np.ndarray:
    """``root/<name>.npy`` with its number of dimensions checked (no pickles)."""
    path = root / f"{name}.npy"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ReadError(f"cannot read EOPatch feature {name!r}: {exc}", path=path) from exc
    if array.ndim != ndim:
        raise ReadError(f"expected a {ndim}-D array for {name!r}, found shape {array.shape}", path=path)
    return array


class _PixelSource:
    """Pixel ids, positions and map coordinates shared by the EOPatch sources."""

    def __init__(
        self, root: str | Path, height: int, width: int, pixels: Sequence[tuple[int, int]] | np.ndarray | None
    ) -> None:
        self.root = Path(root)
        if pixels is None:
            rows, cols = np.divmod(np.arange(height * width), width)
        else:
            rows, cols = np.asarray(pixels, dtype=int).reshape(-1, 2).T
            if len(rows) and (rows.min() < 0 or rows.max() >= height or cols.min() < 0 or cols.max() >= width):
                raise ModfuseError(f"pixels must lie in the {height} x {width} patch")
        self.shape = (height, width)
        self.index = pd.DataFrame({"id": [f"r{r}_c{c}" for r, c in zip(rows, cols)], "row": rows, "col": cols})
        self._add_coordinates()
        self.ids = self.index["id"].tolist()
        # id -> (row, col) as plain ints: a pandas lookup per sample costs more than the read itself
        self._pos = {sid: (int(r), int(c)) for sid, r, c in zip(self.ids, rows, cols)}

    def _add_coordinates(self) -> None:
        """Pixel centres in the patch CRS from ``bbox.geojson`` (absent: no x / y columns)."""
        path = self.root / "bbox.geojson"
        self.crs: str | None = None
        if not path.is_file():
            return
        try:
            geo = json.loads(path.read_text())
            ring = np.asarray(geo["coordinates"][0], dtype=float)
            self.crs = geo.get("crs", {}).get("properties", {}).get("name")
        except (ValueError, KeyError, IndexError) as exc:
            raise ReadError(f"cannot read the patch bounding box: {exc}", path=path) from exc
        (left, bottom), (right, top) = ring.min(0), ring.max(0)
        height, width = self.shape
        self.index["x"] = left + (self.index["col"] + 0.5) * (right - left) / width
        self.index["y"] = top - (self.index["row"] + 0.5) * (top - bottom) / height

    def _where(self, sample_id: Hashable) -> tuple[int, int]:
        try:
            return self._pos[sample_id]
        except KeyError:
            raise ModfuseError(f"unknown pixel id {sample_id!r}; ids look like 'r12_c40'") from None

    def spatial_blocks(self, block: int = 10) -> np.ndarray:
        """Group id per pixel: which ``block`` x ``block`` tile it lies in (for grouped splits)."""
        blocks_per_row = -(-self.shape[1] // block)
        return (self.index["row"].to_numpy() // block) * blocks_per_row + self.index["col"].to_numpy() // block

    def timeless(self, name: str = "mask_timeless/LULC") -> pd.Series:
        """A timeless single-band layer per pixel (e.g. LULC labels), indexed by pixel id."""
        layer = load_feature(self.root, name, 3)[..., 0]
        return pd.Series(layer[self.index["row"], self.index["col"]], index=pd.Index(self.ids), name=name)

    def __len__(self) -> int:
        return len(self.ids)


@register("eopatch-series")
class EOPatchSeriesSource(_PixelSource):
    """Per-pixel time series of an EOPatch with per-date validity.

    A date is valid for a pixel when every ``valid_masks`` entry is true there, every
    ``cloud_masks`` entry is 0 there, and no band value is NaN.

    Args:
        root: the EOPatch folder.
        features: time-dependent bands (``data/NDVI`` ...), concatenated along channels.
        valid_masks: masks where True means observed (default ``mask/IS_VALID``).
        cloud_masks: masks where nonzero means cloud (default ``mask/CLM``).
        pixels: (row, col) pairs to use (default every pixel).
        collate: default ``"auto"`` (dict values are stacked key-wise).

    Attributes:
        index: DataFrame (id, row, col, x, y): pixel position and map coordinates (``crs``).
        timestamps: the T acquisition times (``pandas.DatetimeIndex``).

    Returns from ``load``:
        ``{"x": (T, C) float32, "valid": (T,) bool, "t": (T,) float32 days since the first date}``;
        None for a pixel with no valid date at all (that modality is missing for it).
    """

    def __init__(
        self,
        root: str | Path,
        features: Sequence[str] = ("data/NDVI",),
        *,
        valid_masks: Sequence[str] = ("mask/IS_VALID",),
        cloud_masks: Sequence[str] = ("mask/CLM",),
        pixels: Sequence[tuple[int, int]] | np.ndarray | None = None,
        collate: CollateMode = "auto",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ReadError("expected an EOPatch folder", path=root)
        bands = [load_feature(root, f, 4) for f in features]
        shape = bands[0].shape[:3]
        valid = np.ones(shape, dtype=bool)
        for name in [*features, *valid_masks, *cloud_masks]:
            array = bands[list(features).index(name)] if name in features else load_feature(root, name, 4)
            if array.shape[:3] != shape:
                raise ReadError(f"expected (T, H, W) = {shape} like {features[0]!r}, found {array.shape[:3]}",
                                path=root / f"{name}.npy")  # fmt: skip
            if name in valid_masks:
                valid &= array[..., 0].astype(bool)
            elif name in cloud_masks:
                valid &= array[..., 0] == 0
        values = np.concatenate(bands, axis=-1).astype(np.float32)
        valid &= ~np.isnan(values).any(-1)
        # stored pixel-major (H, W, T, C): one pixel's series is one contiguous slice, where in
        # the file's (T, H, W, C) layout it is a strided gather that cost more than the rest of
        # `load`; `values` / `valid` are (T, H, W, ...) views of the same memory
        self._pixel_x = np.ascontiguousarray(values.transpose(1, 2, 0, 3))
        self._pixel_valid = np.ascontiguousarray(valid.transpose(1, 2, 0))
        del values
        self.values: np.ndarray = self._pixel_x.transpose(2, 0, 1, 3)
        self.valid: np.ndarray = self._pixel_valid.transpose(2, 0, 1)
        self._observed = np.asarray(self._pixel_valid.any(axis=-1))  # (H, W): pixels with at least one valid date
        self.timestamps = self._timestamps(root, shape[0])
        days = (self.timestamps - self.timestamps[0]).total_seconds() / 86400.0
        self._days = torch.as_tensor(np.asarray(days, dtype=np.float32))
        self.collate = collate
        super().__init__(root, shape[1], shape[2], pixels)

    @staticmethod
    def _timestamps(root: Path, n: int) -> pd.DatetimeIndex:
        path = root / "timestamps.json"
        if not path.is_file():
            return pd.DatetimeIndex(pd.to_datetime(np.arange(n), unit="D"))  # unknown dates: daily steps
        try:
            times = pd.DatetimeIndex(pd.to_datetime(json.loads(path.read_text())))
        except (ValueError, TypeError) as exc:
            raise ReadError(f"cannot parse timestamps: {exc}", path=path) from exc
        if len(times) != n:
            raise ReadError(f"expected {n} timestamps (one per date of the data), found {len(times)}", path=path)
        return times

    def load(self, sample_id: Hashable) -> dict[str, torch.Tensor] | None:
        r, c = self._where(sample_id)
        if not self._observed[r, c]:
            return None
        return {
            "x": torch.from_numpy(self._pixel_x[r, c].copy()),
            "valid": torch.from_numpy(self._pixel_valid[r, c].copy()),
            "t": self._days,
        }


@register("eopatch-timeless")
class EOPatchTimelessSource(_PixelSource):
    """Per-pixel timeless values of an EOPatch (e.g. elevation) as a tabular row.

    Args:
        root: the EOPatch folder.
        features: timeless layers (H, W, C), concatenated (default ``data_timeless/DEM``).
        pixels: (row, col) pairs to use (default every pixel).
        collate: default ``"stack"``.

    Returns from ``load``:
        float32 Tensor (C,); None where every value is NaN.
    """

    def __init__(
        self,
        root: str | Path,
        features: Sequence[str] = ("data_timeless/DEM",),
        *,
        pixels: Sequence[tuple[int, int]] | np.ndarray | None = None,
        collate: CollateMode = "stack",
    ) -> None:
        root = Path(root)
        layers = [load_feature(root, f, 3) for f in features]
        shapes = {layer.shape[:2] for layer in layers}
        if len(shapes) > 1:
            raise ReadError(f"timeless layers {list(features)} have different (H, W): {sorted(shapes)}", path=root)
        self.values = np.concatenate(layers, axis=-1).astype(np.float32)
        self.feature_names = list(features)
        self.collate = collate
        height, width = self.values.shape[:2]
        super().__init__(root, height, width, pixels)

    def load(self, sample_id: Hashable) -> torch.Tensor | None:
        r, c = self._where(sample_id)
        row = self.values[r, c]
        return None if bool(np.isnan(row).all()) else torch.from_numpy(row.copy())


@register("eopatch-elevation")
def EOPatchElevationSource(root: str | Path, **kwargs: Any) -> EOPatchTimelessSource:
    """Elevation (``data_timeless/DEM``, metres) per pixel as a one-column tabular source."""
    return EOPatchTimelessSource(root, ("data_timeless/DEM",), **kwargs)
