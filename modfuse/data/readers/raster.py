"""Multispectral rasters via rasterio, interoperable with torchgeo.

Single-band files at mixed resolutions (Sentinel-2: 10, 20 and 60 m) are read onto one target
grid (bounds + resolution) with a chosen resampling method; nodata becomes a validity mask;
band names and centre wavelengths are kept in order. `MultiBandRasterSource` gives one
sample per scene, `RasterChipSource` chips a scene on a grid or at random (seeded), and
`torchgeo_dataset()` wraps the same files as a torchgeo ``RasterDataset`` so torchgeo's
samplers (``GridGeoSampler``, ``RandomGeoSampler``) and transforms apply unchanged.

Per-band normalisation statistics are computed once per scene and cached as JSON under
``cache_dir("stats")`` (never next to the input, which may be read-only).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers import register
from modfuse.data.transforms import Standardizer
from modfuse.errors import ModfuseError, ReadError
from modfuse.utils.cache import cache_dir
from modfuse.utils.optional import require

__all__ = [
    "SENTINEL2_BANDS",
    "BandStack",
    "GeoDatasetSource",
    "MultiBandRasterSource",
    "RasterChipSource",
    "band_statistics",
    "check_valid_pixels",
    "stack_bands",
    "torchgeo_dataset",
]

SENTINEL2_BANDS: dict[str, tuple[float, float]] = {
    "B01": (442.7, 60.0),
    "B02": (492.4, 10.0),
    "B03": (559.8, 10.0),
    "B04": (664.6, 10.0),
    "B05": (704.1, 20.0),
    "B06": (740.5, 20.0),
    "B07": (782.8, 20.0),
    "B08": (832.8, 10.0),
    "B8A": (864.7, 20.0),
    "B09": (945.1, 60.0),
    "B10": (1373.5, 60.0),
    "B11": (1613.7, 20.0),
    "B12": (2202.4, 20.0),
}
"""Sentinel-2 MSI band -> (centre wavelength in nm, native resolution in m), in torchgeo's order."""

Bounds = tuple[float, float, float, float]  # (left, bottom, right, top) in CRS units


@dataclass
class BandStack:
    """Bands read onto one grid.

    Attributes:
        data: (C, H, W) float32; nodata pixels hold 0.
        valid: (C, H, W) bool, False where a band had nodata (or lay outside its file).
        bands: band names, in channel order.
        crs: the grid's CRS (a ``rasterio.crs.CRS``).
        transform: the grid's affine transform. bounds: (left, bottom, right, top).
    """

    data: np.ndarray
    valid: np.ndarray
    bands: list[str]
    crs: Any
    transform: Any
    bounds: Bounds


def _resampling(name: str) -> Any:
    enums = require("rasterio.enums", extra="geo")
    try:
        return enums.Resampling[name]
    except KeyError:
        raise ModfuseError(
            f"unknown resampling {name!r}; expected one of {[r.name for r in enums.Resampling]}"
        ) from None


def stack_bands(
    files: Sequence[str | Path],
    bands: Sequence[str] | None = None,
    *,
    res: float | None = None,
    bounds: Bounds | None = None,
    resampling: str = "bilinear",
    nodata: float | None = None,
    sample_id: Hashable | None = None,
) -> BandStack:
    """Read single-band files onto one grid.

    Args:
        files: one single-band raster per band, in output order.
        bands: band names (default: file stems).
        res: target pixel size in CRS units (default: the finest of the files).
        bounds: target (left, bottom, right, top) (default: the first file's bounds).
        resampling: a ``rasterio.enums.Resampling`` name. ``"bilinear"`` (default) suits
            reflectances upsampled from 20/60 m; use ``"nearest"`` for class maps and
            ``"average"`` when coarsening.
        nodata: the nodata value (default: each file's own; files without one are all valid).
        sample_id: named in errors.

    Raises:
        ReadError: a file cannot be opened, has more than one band, or has no CRS.

    Bands in another CRS than the first file's are reprojected onto the target grid
    (``rasterio.vrt.WarpedVRT`` with the same ``resampling``; pixels they do not cover are
    nodata), e.g. Sentinel-2 tiles of two UTM zones, or a DEM in EPSG:4326.
    """
    rasterio = require("rasterio", extra="geo")

    paths = [Path(f) for f in files]
    bands = list(bands) if bands is not None else [f.stem for f in paths]
    opened = []
    # one GDAL environment for every band: outside one, rasterio.open sets up and tears down its
    # own per file, which cost more than reading a 120 x 120 band
    env = rasterio.Env()
    env.__enter__()
    try:
        for f in paths:
            try:
                opened.append(rasterio.open(f))
            except (rasterio.errors.RasterioIOError, OSError) as exc:
                raise ReadError(f"cannot open raster: {exc}", path=f, sample_id=sample_id) from exc
        crs, bounds = opened[0].crs, bounds or tuple(opened[0].bounds)
        res = res or min(min(s.res) for s in opened)
        height, width = round((bounds[3] - bounds[1]) / res), round((bounds[2] - bounds[0]) / res)
        data = np.zeros((len(paths), height, width), dtype=np.float32)
        valid = np.ones((len(paths), height, width), dtype=bool)
        for i, band_file in enumerate(opened):
            _check_band(band_file, sample_id)
            fill = nodata if nodata is not None else band_file.nodata
            # a band in another CRS is warped onto the target grid itself (GDAL warp, same resampling)
            src = band_file
            if band_file.crs != crs:
                src = _warped(band_file, crs, bounds, (height, width), resampling, fill)
            try:
                read = _read_onto_grid(src, bounds, (height, width), resampling, fill)
            except (rasterio.errors.RasterioError, OSError) as exc:  # e.g. a truncated or corrupted TIFF
                raise ReadError(
                    f"cannot read band {bands[i]} (corrupted or truncated file?): {type(exc).__name__}: {exc}"
                    f"{_gdal_cause(exc)}",
                    path=paths[i],
                    sample_id=sample_id,
                ) from exc
            finally:
                if src is not band_file:
                    src.close()
            mask, values = np.ma.getmaskarray(read), np.ma.getdata(read)
            if nodata is not None:
                mask |= values == nodata
            data[i], valid[i] = np.where(mask, 0, values), ~mask
    finally:
        for src in opened:
            src.close()
        env.__exit__()
    transform = rasterio.transform.from_bounds(*bounds, width, height)
    return BandStack(data, valid, bands, crs, transform, bounds)


def _read_onto_grid(src: Any, bounds: Bounds, shape: tuple[int, int], resampling: str, fill: float | None) -> Any:
    """Band 1 of ``src`` on the (height, width) grid over ``bounds``: masked where nodata."""
    from rasterio.enums import MaskFlags
    from rasterio.windows import from_bounds

    if tuple(src.bounds) == tuple(bounds) and src.shape == shape:
        # already on the target grid (a chip read whole): a plain read, no window or resampling,
        # and no mask to read when the file declares every pixel valid
        return src.read(1, masked=fill is not None or src.mask_flag_enums[0] != [MaskFlags.all_valid])
    window = from_bounds(*bounds, transform=src.transform)
    # boundless reads go through a slow VRT in rasterio: only when the grid leaves the file
    inside = window.col_off >= 0 and window.row_off >= 0 and window.col_off + window.width <= src.width + 1e-6
    inside = inside and window.row_off + window.height <= src.height + 1e-6
    return src.read(
        1, window=window, out_shape=shape, resampling=_resampling(resampling),
        boundless=not inside, fill_value=fill if fill is not None else 0, masked=True,
    )  # fmt: skip


def _warped(src: Any, crs: Any, bounds: Bounds, shape: tuple[int, int], resampling: str, fill: float | None) -> Any:
    """``src`` reprojected onto the target grid (``rasterio.vrt.WarpedVRT``): a (height, width)
    grid over ``bounds`` in ``crs``; pixels the source does not cover are nodata (``fill``, else 0)."""
    rasterio = require("rasterio", extra="geo")
    from rasterio.vrt import WarpedVRT

    height, width = shape
    return WarpedVRT(
        src, crs=crs, transform=rasterio.transform.from_bounds(*bounds, width, height), width=width, height=height,
        resampling=_resampling(resampling), nodata=fill if fill is not None else 0,
    )  # fmt: skip


def _gdal_cause(exc: BaseException) -> str:
    """GDAL's own reason, which rasterio keeps as the exception's cause ("See previous exception")."""
    cause = exc.__cause__ or exc.__context__
    return f" ({cause})" if cause is not None and str(cause) not in str(exc) else ""


def check_valid_pixels(stack: BandStack, files: Sequence[Path], sample_id: Hashable | None) -> None:
    """Raise when a band of ``stack`` has no valid pixel (a chip must hold data in every band).

    Nodata everywhere, a band whose file lies beside the scene (shifted georeferencing), or
    bounds outside the files all give bands without a single valid pixel; read as zeros they
    would pass for a dark image. A band with *some* nodata is kept (see ``return_mask``).

    Raises:
        ReadError: naming the empty bands, the first one's file and the bounds read.
    """
    empty = [i for i in range(len(stack.bands)) if not stack.valid[i].any()]
    if not empty:
        return
    which = "any band" if len(empty) == len(stack.bands) else f"band(s) {[stack.bands[i] for i in empty]}"
    raise ReadError(
        f"expected valid pixels, found none in {which} inside bounds {tuple(round(b, 3) for b in stack.bounds)}"
        " (nodata everywhere, or the file does not cover these bounds)",
        path=files[empty[0]],
        sample_id=sample_id,
    )


def _check_band(src: Any, sample_id: Hashable | None) -> None:
    if src.count != 1:
        raise ReadError(f"expected a single-band raster, found {src.count} bands", path=src.name, sample_id=sample_id)
    if src.crs is None:
        raise ReadError("expected a georeferenced raster, found no CRS", path=src.name, sample_id=sample_id)


_GLOB_CHARS = re.compile(r"[*?\[]")


def _band_files(scene: str | Path | Mapping[str, Any], bands: Sequence[str], template: str) -> list[Path]:
    """The file of each band: from a mapping band -> path, or by ``template`` in a folder."""
    if isinstance(scene, Mapping):
        absent = [b for b in bands if b not in scene]
        if absent:
            raise ReadError(f"expected bands {list(bands)}, the scene lacks {absent}")
        return [Path(scene[b]) for b in bands]
    folder = Path(scene)
    files = []
    for b in bands:
        name = template.format(band=b)
        # a literal name needs one stat, not a directory listing per band (12 per chip)
        found = sorted(folder.glob(name)) if _GLOB_CHARS.search(name) else [folder / name]
        found = [f for f in found if f.is_file()]
        if len(found) != 1:
            raise ReadError(f"expected one file matching {name!r} for band {b}, found {len(found)}", path=folder)
        files.append(found[0])
    return files


_STATS_VERSION = 2  # bump when the statistics are computed differently


def _stats_key(
    files: Sequence[Path], bands: Sequence[str], res: float | None, resampling: str, nodata: float | None
) -> str:
    """Everything the statistics depend on: each file's identity and version, the band names,
    the grid, the resampling, the nodata value, and how they are computed."""
    parts = [f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files]
    settings = json.dumps([list(bands), res, resampling, nodata, _STATS_VERSION])
    return hashlib.sha1("|".join([*parts, settings]).encode()).hexdigest()[:20]


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a reader
    (another worker, a later run) sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def band_statistics(
    files: Sequence[str | Path],
    bands: Sequence[str] | None = None,
    *,
    res: float | None = 60.0,
    resampling: str = "average",
    nodata: float | None = None,
    cache_root: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """Per-band mean and standard deviation over valid pixels, computed once and cached.

    The statistics are computed on a coarse grid (``res``, default 60 m with ``"average"``
    resampling: every pixel contributes, 36x fewer values than at 10 m) and stored as JSON in
    ``cache_dir("stats")``, keyed by the files' paths, sizes and modification times, the band
    names, ``res``, ``resampling`` and ``nodata``; the file is written atomically (temporary
    file + rename), and an unreadable cache file is recomputed.

    Returns:
        ``{band: {"mean": m, "std": s}}``.
    """
    paths = [Path(f) for f in files]
    bands = list(bands) if bands is not None else [f.stem for f in paths]
    cached = cache_dir("stats", root=cache_root) / f"bands-{_stats_key(paths, bands, res, resampling, nodata)}.json"
    if cached.is_file():
        try:
            stats = json.loads(cached.read_text())
            if isinstance(stats, dict) and all(b in stats for b in bands):
                return stats
        except (OSError, ValueError):  # unreadable (e.g. left half-written by an older version): recompute
            pass
    stack = stack_bands(paths, bands, res=res, resampling=resampling, nodata=nodata)
    stats = {}
    for b, values, ok in zip(bands, stack.data, stack.valid):  # band by band: one band's pixels in memory
        fitted = Standardizer.fit(values[ok])
        stats[b] = {"mean": float(fitted.mean[0]), "std": float(fitted.std[0])}
    _write_atomically(cached, json.dumps(stats, indent=1))
    return stats


class _SceneReader:
    """Settings shared by the scene and chip sources."""

    def __init__(
        self,
        bands: Sequence[str],
        res: float | None,
        resampling: str,
        nodata: float | None,
        template: str,
        normalize: bool,
        return_mask: bool,
        collate: CollateMode,
    ) -> None:
        self.bands, self.res, self.resampling, self.nodata = list(bands), res, resampling, nodata
        self.template, self.normalize, self.return_mask, self.collate = template, normalize, return_mask, collate
        self._stats: dict[Hashable, tuple[np.ndarray, np.ndarray]] = {}
        _resampling(resampling)  # fail at construction on a misspelt method

    @property
    def wavelengths(self) -> list[float | None]:
        """Centre wavelength (nm) of each output band (None for bands not in SENTINEL2_BANDS)."""
        return [SENTINEL2_BANDS[b][0] if b in SENTINEL2_BANDS else None for b in self.bands]

    def _output(self, stack: BandStack, files: list[Path], key: Hashable) -> torch.Tensor | dict[str, torch.Tensor]:
        data = stack.data
        if self.normalize:
            if key not in self._stats:
                stats = band_statistics(files, self.bands, nodata=self.nodata)
                self._stats[key] = (
                    np.array([stats[b]["mean"] for b in self.bands], dtype=np.float32)[:, None, None],
                    np.array([stats[b]["std"] for b in self.bands], dtype=np.float32)[:, None, None],
                )
            mean, std = self._stats[key]
            data = np.where(stack.valid, (data - mean) / std, 0.0).astype(np.float32)  # nodata -> the mean
        image = torch.from_numpy(data)
        if self.return_mask:
            return {"image": image, "mask": torch.from_numpy(stack.valid.all(0))}
        return image


@register("raster")
class MultiBandRasterSource(_SceneReader):
    """One multispectral scene per sample, all bands on one grid.

    Args:
        scenes: sample id -> scene, where a scene is a folder holding one file per band (found
            by ``template``) or a mapping band -> file path; or one folder (a single scene whose
            id is the folder name); ``None`` = missing for that sample.
        bands: band names in output order (default: the 13 Sentinel-2 bands).
        res: target resolution in CRS units (default: the finest band, e.g. 10 m).
        resampling: rasterio resampling name (default ``"bilinear"``).
        nodata: nodata value (default: each file's own).
        template: file pattern of a band inside a scene folder (``{band}`` is replaced); a
            name without ``*``, ``?`` or ``[`` is taken as it is (no directory listing).
        normalize: standardise each band with cached per-scene statistics (`band_statistics()`).
        return_mask: return ``{"image": (C, H, W), "mask": (H, W) bool}`` instead of the image
            (``mask``: True where every band is valid). Batches then hold
            ``inputs[m] = {"image": (n, C, H, W), "mask": (n, H, W)}``, so an encoder that takes
            the dict (e.g. one made with [`wrap()`][modfuse.encoders.wrap]) sees which pixels are
            nodata; the built-in spectral encoders take the image alone.
        collate: default ``"auto"``.

    Bad input (each a `ReadError` naming the file and the sample; the dataset's
    ``on_error="missing"`` marks the sample's modality missing and reports it): a band without
    one valid pixel (nodata everywhere, a file beside the scene, bounds outside the files), a
    corrupted or truncated file, a multi-band file, a file without CRS (a band in another CRS is
    reprojected). A scene with *some* nodata
    pixels stays present (nodata pixels read as 0; ``return_mask`` gives the mask).

    Returns from ``load``:
        float32 Tensor (C, H, W) (nodata pixels: 0, or the band mean when normalised).

    Example:
        >>> src = MultiBandRasterSource("sentinel2-l1c/")  # id "sentinel2-l1c"
        >>> src.load("sentinel2-l1c").shape
        torch.Size([13, 1032, 1032])
    """

    def __init__(
        self,
        scenes: str | Path | Mapping[Hashable, Any],
        bands: Sequence[str] = tuple(SENTINEL2_BANDS),
        *,
        res: float | None = None,
        resampling: str = "bilinear",
        nodata: float | None = None,
        template: str = "*{band}.tif",
        normalize: bool = False,
        return_mask: bool = False,
        collate: CollateMode = "auto",
    ) -> None:
        super().__init__(bands, res, resampling, nodata, template, normalize, return_mask, collate)
        self.scenes: dict[Hashable, Any] = (
            {Path(scenes).name: scenes} if isinstance(scenes, (str, Path)) else dict(scenes)
        )
        self.ids = list(self.scenes)

    def files(self, sample_id: Hashable) -> list[Path]:
        """The band files of a scene, in band order."""
        try:
            scene = self.scenes[sample_id]
        except KeyError:
            raise ModfuseError(f"unknown scene id {sample_id!r}; this source has {self.ids}") from None
        try:
            return _band_files(scene, self.bands, self.template)
        except ReadError as exc:
            raise ReadError(exc.message, path=exc.path, sample_id=sample_id) from exc

    def read_stack(self, sample_id: Hashable, bounds: Bounds | None = None) -> BandStack:
        """The scene (or the part inside ``bounds``) with its grid: data, valid mask, CRS, transform."""
        return self._stack(self.files(sample_id), sample_id, bounds)

    def _stack(self, files: list[Path], sample_id: Hashable, bounds: Bounds | None = None) -> BandStack:
        return stack_bands(
            files, self.bands, res=self.res, bounds=bounds, resampling=self.resampling, nodata=self.nodata,
            sample_id=sample_id,
        )  # fmt: skip

    def load(self, sample_id: Hashable) -> torch.Tensor | dict[str, torch.Tensor] | None:
        if self.scenes[sample_id] is None:
            return None
        files = self.files(sample_id)  # resolved once: a folder scene costs a look-up per band
        stack = self._stack(files, sample_id)
        check_valid_pixels(stack, files, sample_id)
        return self._output(stack, files, sample_id)

    def __len__(self) -> int:
        return len(self.ids)


@register("raster-chips")
class RasterChipSource(_SceneReader):
    """Square chips of one multispectral scene, on a regular grid or at seeded random places.

    Each chip is read through a windowed read of every band file (the scene is never loaded
    whole), so large scenes work.

    Args:
        scene: a folder with one file per band, or a mapping band -> path.
        size: chip side in output pixels.
        stride: grid step in pixels (default ``size``: no overlap). Ignored when ``n_random``.
        n_random: draw this many chips at random positions instead of a grid.
        grid: ``"inside"`` (default): grid chips from the top-left corner, row by row, all
            inside the scene (a remainder narrower than ``size`` is left out).
            ``"torchgeo"``: the chips of torchgeo's ``GridGeoSampler(size, stride)`` on the same
            scene, in its order: from the bottom-left (south-west) corner, row by row
            northwards, ``ceil((side - size) / stride) + 1`` chips per side, so the last row
            and column reach past the scene edge (those pixels are nodata, read as 0 as torchgeo
            does) and the whole scene is covered.
        seed: seed of the random positions (same seed, same chips).
        bands, res, resampling, nodata, template, normalize, return_mask, collate: as in
            `MultiBandRasterSource`.

    Attributes:
        index: DataFrame (id, row, col, x, y): pixel offset of each chip on the scene grid and
            its centre in CRS units (for spatial-block splits).
        crs, bounds: the scene grid.

    Returns from ``load``:
        float32 Tensor (C, size, size). A chip with a band without one valid pixel raises
        `ReadError` (missing and reported under ``on_error="missing"``); a chip with some
        nodata stays present, its mask given by ``return_mask``.
    """

    def __init__(
        self,
        scene: str | Path | Mapping[str, Any],
        size: int = 256,
        *,
        stride: int | None = None,
        n_random: int | None = None,
        seed: int = 0,
        grid: Literal["inside", "torchgeo"] = "inside",
        bands: Sequence[str] = tuple(SENTINEL2_BANDS),
        res: float | None = None,
        resampling: str = "bilinear",
        nodata: float | None = None,
        template: str = "*{band}.tif",
        normalize: bool = False,
        return_mask: bool = False,
        collate: CollateMode = "stack",
    ) -> None:
        super().__init__(bands, res, resampling, nodata, template, normalize, return_mask, collate)
        self.size = size
        self._files = _band_files(scene, self.bands, template)
        rasterio = require("rasterio", extra="geo")
        resolutions = []
        for f in self._files:
            try:
                with rasterio.open(f) as src:
                    resolutions.append(min(src.res))
                    if f == self._files[0]:
                        self.crs, self.bounds = src.crs, tuple(src.bounds)
            except (rasterio.errors.RasterioIOError, OSError) as exc:
                raise ReadError(f"cannot open raster: {exc}", path=f) from exc
        self.res: float = float(res if res is not None else min(resolutions))  # the chips' grid: always set
        height = round((self.bounds[3] - self.bounds[1]) / self.res)
        width = round((self.bounds[2] - self.bounds[0]) / self.res)
        if size > min(height, width):
            raise ModfuseError(f"chip size {size} exceeds the scene grid ({height} x {width} pixels)")
        if grid not in ("inside", "torchgeo"):
            raise ModfuseError(f"grid: expected 'inside' or 'torchgeo', found {grid!r}")
        self.grid = grid
        self.index = self._layout(height, width, stride or size, n_random, seed)
        self.ids = self.index["id"].tolist()
        self._row = {sid: i for i, sid in enumerate(self.ids)}

    def _layout(self, height: int, width: int, stride: int, n_random: int | None, seed: int) -> pd.DataFrame:
        if n_random is not None:
            rng = np.random.default_rng(seed)
            rows = rng.integers(0, height - self.size + 1, n_random)
            cols = rng.integers(0, width - self.size + 1, n_random)
        elif self.grid == "torchgeo":  # GridGeoSampler: offsets from the south-west corner, south row first
            ups = np.arange(math.ceil((height - self.size) / stride) + 1) * stride
            rights = np.arange(math.ceil((width - self.size) / stride) + 1) * stride
            rows = np.repeat(height - self.size - ups, len(rights))  # rows counted from the top
            cols = np.tile(rights, len(ups))
        else:
            grid = np.stack(
                np.meshgrid(np.arange(0, height - self.size + 1, stride), np.arange(0, width - self.size + 1, stride)),
                -1,
            ).reshape(-1, 2)
            rows, cols = grid[:, 0], grid[:, 1]
        frame = pd.DataFrame({"row": rows, "col": cols})
        if n_random is None and self.grid == "inside":  # grid chips in reading order: row by row
            frame = frame.sort_values(["row", "col"], kind="stable").reset_index(drop=True)
        return self._named(frame)

    def _named(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Add chip ids and centres in CRS units to a (row, col) frame."""
        frame.insert(0, "id", [f"chip{i}" for i in range(len(frame))])
        frame["x"] = self.bounds[0] + (frame["col"] + self.size / 2) * self.res
        frame["y"] = self.bounds[3] - (frame["row"] + self.size / 2) * self.res
        return frame

    def chip_bounds(self, sample_id: Hashable) -> Bounds:
        """(left, bottom, right, top) of a chip in CRS units."""
        r = self.index.iloc[self._row[sample_id]]
        left = self.bounds[0] + r["col"] * self.res
        top = self.bounds[3] - r["row"] * self.res
        return left, top - self.size * self.res, left + self.size * self.res, top

    def load(self, sample_id: Hashable) -> torch.Tensor | dict[str, torch.Tensor]:
        if sample_id not in self._row:
            raise ModfuseError(f"unknown chip id {sample_id!r}; this source has {len(self.ids)} chips")
        stack = stack_bands(
            self._files, self.bands, res=self.res, bounds=self.chip_bounds(sample_id), resampling=self.resampling,
            nodata=self.nodata, sample_id=sample_id,
        )  # fmt: skip
        check_valid_pixels(stack, self._files, sample_id)
        return self._output(stack, self._files, "scene")

    def __len__(self) -> int:
        return len(self.ids)


def torchgeo_dataset(
    paths: str | Path | Sequence[str | Path],
    bands: Sequence[str] = tuple(SENTINEL2_BANDS),
    *,
    template: str = "*_{band}.tif",
    res: float | None = 10.0,
    resampling: str = "bilinear",
    transforms: Any = None,
) -> Any:
    """The same band files as a torchgeo ``RasterDataset`` (``separate_files=True``).

    torchgeo's samplers then cut chips: ``GridGeoSampler(ds, size=256)``, and ``ds[query]``
    returns ``{"image": (C, H, W), "crs", "bounds"}`` with the bands in ``bands`` order.

    Args:
        paths: folder(s) holding one file per band.
        bands: band names in output order.
        template: band file name pattern with ``{band}`` (``"*_{band}.tif"`` matches ``s2_B02.tif``).
        res: target resolution in CRS units.
        resampling: rasterio resampling name.
        transforms: torchgeo-style sample transform.
    """
    datasets = require("torchgeo.datasets", extra="geo")
    method = _resampling(resampling)
    glob = template.format(band=bands[0])
    # the regex finds the band inside a file name so torchgeo can swap in the other bands
    head, _, tail = template.partition("{band}")
    regex = re.escape(head).replace(r"\*", ".*") + r"(?P<band>" + "|".join(map(re.escape, bands)) + ")"
    regex += re.escape(tail).replace(r"\*", ".*") + "$"

    raster_dataset: Any = datasets.RasterDataset  # imported at run time: torchgeo is optional

    class BandFiles(raster_dataset):
        filename_glob = glob
        filename_regex = regex
        separate_files = True
        all_bands: ClassVar[tuple[str, ...]] = tuple(bands)

        @property
        def resampling(self) -> Any:
            return method

    return BandFiles(paths, res=res, bands=list(bands), transforms=transforms)


@register("torchgeo")
class GeoDatasetSource:
    """Any torchgeo ``GeoDataset`` + sampler as a modfuse modality: one sample per query.

    The sampler's queries (``GridGeoSampler``, ``RandomGeoSampler``, ...) are drawn once, at
    construction, so the samples are fixed: ``chip{i}`` is the i-th query, and loading it is
    ``dataset[query][key]``, exactly what a torchgeo ``DataLoader`` would give for that query
    (the dataset's own transforms included). Seed a random sampler (its ``generator``) to
    draw the same chips again.

    Args:
        dataset: a torchgeo ``GeoDataset`` (``RasterDataset``, ``VectorDataset``, an
            intersection of both, e.g. from `torchgeo_dataset()`).
        sampler: a torchgeo ``GeoSampler`` over ``dataset``.
        key: the sample entry to return (``"image"``; ``"mask"`` for label rasters).
        prefix: sample ids are ``f"{prefix}{i}"``.
        collate: default ``"stack"`` (chips of one size).

    Attributes:
        index: DataFrame (id, xmin, xmax, ymin, ymax, x, y): each query's bounds and centre
            in the dataset's CRS (for spatial-block splits).
        crs: the dataset's CRS.

    Returns from ``load``:
        float32 Tensor, e.g. (C, H, W) for ``"image"``.
    """

    def __init__(
        self, dataset: Any, sampler: Any, *, key: str = "image", prefix: str = "chip", collate: CollateMode = "stack"
    ) -> None:
        self.dataset, self.key, self.collate = dataset, key, collate
        self.queries = list(sampler)
        self.ids = [f"{prefix}{i}" for i in range(len(self.queries))]
        self._row = {sid: i for i, sid in enumerate(self.ids)}
        self.crs = getattr(dataset, "crs", None)
        spans = [(q[0].start, q[0].stop, q[1].start, q[1].stop) for q in self.queries]
        self.index = pd.DataFrame(spans, columns=["xmin", "xmax", "ymin", "ymax"])
        self.index.insert(0, "id", self.ids)
        self.index["x"] = (self.index["xmin"] + self.index["xmax"]) / 2
        self.index["y"] = (self.index["ymin"] + self.index["ymax"]) / 2

    def query_of(self, sample_id: Hashable) -> Any:
        """The torchgeo query of a sample (a tuple of x, y, t slices)."""
        if sample_id not in self._row:
            raise ModfuseError(f"unknown sample id {sample_id!r}; this source has {len(self.ids)} queries")
        return self.queries[self._row[sample_id]]

    def has(self, sample_id: Hashable) -> bool:
        return sample_id in self._row

    def load(self, sample_id: Hashable) -> torch.Tensor:
        query = self.query_of(sample_id)
        try:
            sample = self.dataset[query]
        except Exception as exc:  # torchgeo raises IndexError / RasterioError for bad queries or files
            raise ReadError(f"torchgeo dataset failed on query {query}: {type(exc).__name__}: {exc}",
                            sample_id=sample_id) from exc  # fmt: skip
        if self.key not in sample:
            raise ReadError(f"expected key {self.key!r} in the torchgeo sample, found {sorted(sample)}",
                            sample_id=sample_id)  # fmt: skip
        return torch.as_tensor(sample[self.key]).float()

    def __len__(self) -> int:
        return len(self.ids)
