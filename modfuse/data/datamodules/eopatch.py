"""Per-pixel land cover read directly from an eo-learn EOPatch folder (no ``prepare`` step), for
``recipes/remote_sensing.yaml``: the Sentinel-2 time series of each pixel (NDVI by default; any
``data/`` bands) with the dates lost to clouds marked invalid, plus terrain from the DEM;
labels from ``LULC``; split by spatial blocks, because neighbouring pixels are correlated and
a random pixel split leaks. The terrain modality is standardised with statistics of the
training partition only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modfuse.data.datamodules.base import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.sources import ArraySource, Source
from modfuse.data.splits import split_indices
from modfuse.data.transforms import Standardizer
from modfuse.errors import ModfuseError, ReadError

__all__ = ["EOPatchLandCoverDataModule", "terrain_features"]


def terrain_features(dem: np.ndarray, pixel_size: float = 10.0, window: int = 5) -> np.ndarray:
    """Elevation, slope and relative elevation per pixel from a DEM.

    Args:
        dem: (H, W) elevation in metres.
        pixel_size: pixel edge in metres (10 m for Sentinel-2 patches).
        window: side of the neighbourhood whose mean elevation is subtracted (odd).

    Returns:
        (H, W, 3) float32: elevation (m), slope (degrees), elevation minus the ``window`` x
        ``window`` neighbourhood mean (m; > 0 on ridges, < 0 in valleys).
    """
    dem = np.asarray(dem, dtype=np.float64)
    if dem.ndim != 2:
        raise ModfuseError(f"dem: expected an (H, W) array, found shape {dem.shape}")
    gy, gx = np.gradient(dem, pixel_size)
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    r = window // 2
    pad = np.pad(dem, r, mode="edge")
    h, w = dem.shape
    local = np.mean([pad[i : i + h, j : j + w] for i in range(window) for j in range(window)], axis=0)
    return np.stack([dem, slope, dem - local], axis=-1).astype(np.float32)


class EOPatchLandCoverDataModule(MultiModalDataModule):
    """Per-pixel land cover from an EOPatch: a Sentinel-2 time series with cloud gaps + terrain.

    Each labelled pixel is one sample with two modalities:

    - ``series``: ``{"x": (T, C), "valid": (T,), "t": (T,) days}`` from
      `EOPatchSeriesSource` (C = the channels of ``features``); a
      date is invalid where ``IS_VALID`` is false or the cloud mask ``CLM`` is set, and a pixel
      with no valid date at all has the modality missing. For ``timeseries`` encoders.
    - ``elevation``: ``terrain_features`` of ``data_timeless/DEM`` (elevation, slope, relative
      elevation: 3 columns) or the DEM value alone (``terrain=False``: 1 column), standardised
      with training statistics. For ``tabular`` encoders.

    The target is the index of the pixel's ``label`` layer value in ``classes`` (multiclass).
    Pixels whose value is in ``nodata`` (LULC 0 = "no data") are dropped. The split is by
    ``block`` x ``block`` pixel tiles (`EOPatchSeriesSource.spatial_blocks()`): every pixel of
    a tile lands in one partition.

    Args:
        root: the EOPatch folder (e.g. ``eopatch-slovenia``).
        features: time-dependent layers (``data/NDVI``; ``data/BANDS`` too where the patch has
            the 13-band cube), concatenated along channels.
        valid_masks, cloud_masks: per-date masks (see `EOPatchSeriesSource`).
        label: the timeless class layer.
        nodata: label values that are not a class (those pixels are dropped).
        classes: the label values, in output order (default: every value of the whole layer
            except ``nodata``, sorted; computed before ``pixel_stride``, so a thinned run keeps
            the same classes).
        terrain: elevation + slope + relative elevation (3 columns) instead of elevation only.
        block: spatial block edge in pixels (10 px = 100 m at 10 m resolution).
        pixel_stride: keep every ``pixel_stride``-th row and column (1 = every pixel; larger for
            quick runs).
        standardize: standardise ``elevation`` with training-partition statistics.
        val_fraction, test_fraction: fractions of the blocks in val and test.
        batch_size, num_workers, pin_memory, seed, train_transform: as in
            [`MultiModalDataModule`][modfuse.data.MultiModalDataModule].
    """

    def __init__(
        self,
        root: str | Path = "data/eopatch-slovenia",
        features: Sequence[str] = ("data/NDVI",),
        valid_masks: Sequence[str] = ("mask/IS_VALID",),
        cloud_masks: Sequence[str] = ("mask/CLM",),
        label: str = "mask_timeless/LULC",
        nodata: Sequence[int] = (0,),
        classes: Sequence[int] | None = None,
        terrain: bool = True,
        block: int = 10,
        pixel_stride: int = 1,
        standardize: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(
            None,
            split="group",
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            train_transform=train_transform,
        )
        if block < 1 or pixel_stride < 1:
            raise ModfuseError(f"block and pixel_stride must be >= 1, found block={block}, pixel_stride={pixel_stride}")
        self.root = Path(root)
        self.features, self.valid_masks, self.cloud_masks = list(features), list(valid_masks), list(cloud_masks)
        self.label, self.nodata = label, [int(v) for v in nodata]
        self.classes = None if classes is None else [int(c) for c in classes]
        self.terrain, self.block, self.pixel_stride = terrain, block, pixel_stride
        self.standardize = standardize
        self.labels: pd.Series | None = None  # label value per pixel id, after build_dataset

    def build_dataset(self) -> MultiModalDataset:
        from modfuse.data.readers.timeseries import EOPatchSeriesSource, load_feature

        if not self.root.is_dir():
            raise ReadError(
                "expected an EOPatch folder (data/, mask/, data_timeless/, mask_timeless/); "
                "set data.init_args.root to it",
                path=self.root,
            )
        layer = load_feature(self.root, self.label, 3)[..., 0].astype(np.int64)
        classes = self.classes or sorted(set(np.unique(layer).tolist()) - set(self.nodata))
        if not classes:
            raise ModfuseError(f"{self.label}: no class left after removing nodata values {self.nodata}")
        self.classes = classes
        keep = np.zeros(layer.shape, dtype=bool)
        keep[:: self.pixel_stride, :: self.pixel_stride] = True
        keep &= np.isin(layer, classes)
        pixels = np.argwhere(keep)
        series = EOPatchSeriesSource(
            self.root, self.features, valid_masks=self.valid_masks, cloud_masks=self.cloud_masks, pixels=pixels
        )
        ids = series.ids
        rows, cols = pixels[:, 0], pixels[:, 1]
        dem = load_feature(self.root, "data_timeless/DEM", 3)[..., 0]
        if dem.shape != layer.shape:
            raise ReadError(f"DEM shape {dem.shape} differs from the label layer's {layer.shape}", path=self.root)
        values = terrain_features(dem) if self.terrain else dem[..., None].astype(np.float32)
        elevation = values[rows, cols]
        target = np.searchsorted(classes, layer[rows, cols])
        self.labels = pd.Series(layer[rows, cols], index=pd.Index(ids), name=self.label)
        groups = series.spatial_blocks(self.block)
        # the split is made here (not in setup) so the elevation statistics come from training rows only
        self.given_splits = split_indices(
            len(ids), "group", self.val_fraction, self.test_fraction, groups=groups, seed=self.seed
        )
        transforms = (
            {"elevation": Standardizer.fit(elevation, rows=self.given_splits["train"])} if self.standardize else None
        )
        sources: dict[str, Source] = {"series": series, "elevation": ArraySource(elevation, ids, collate="stack")}
        return MultiModalDataset(sources, targets=target, ids=ids, groups=groups, transforms=transforms)

    def describe(self) -> dict[str, Any]:
        """Pixels, class counts (by label value), share of cloud-free dates, split sizes."""
        if self.dataset is None:
            self.setup()
        from modfuse.data.readers.timeseries import EOPatchSeriesSource

        assert self.dataset is not None and self.labels is not None and self.splits is not None
        series = self.dataset.sources["series"]
        assert isinstance(series, EOPatchSeriesSource) and self.dataset.groups is not None  # built so
        idx = series.index
        valid = series.valid[:, idx["row"].to_numpy(), idx["col"].to_numpy()]
        return {
            "pixels": len(self.dataset),
            "classes": self.classes,
            "class_counts": {int(k): int(v) for k, v in self.labels.value_counts().sort_index().items()},
            "valid_date_fraction": float(valid.mean()),
            "dates": int(valid.shape[0]),
            "blocks": len(np.unique(self.dataset.groups)),
            "split_sizes": {k: len(v) for k, v in self.splits.items()},
        }
