"""Datamodules that read a domain's real files directly (no ``prepare`` step), for the recipes
``recipes/remote_sensing.yaml`` and ``recipes/molecules.yaml``.

- `EOPatchLandCoverDataModule`: per-pixel land cover from an eo-learn EOPatch folder: the
  Sentinel-2 time series of each pixel (NDVI by default; any ``data/`` bands) with the dates
  lost to clouds marked invalid, plus terrain from the DEM; labels from ``LULC``; split by
  spatial blocks, because neighbouring pixels are correlated and a random pixel split leaks.
- `MoleculeCSVDataModule`: a MoleculeNet-style CSV (SMILES + descriptor columns +
  a target) read as a molecular graph + a descriptor table; scaffold or random split; the
  columns a configuration marks as leaky (ESOL's ``ESOL predicted ...``) can never be features.

Both standardise their tabular modality with statistics of the training partition only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.sources import ArraySource
from modfuse.data.splits import check_disjoint_groups, split_indices
from modfuse.data.transforms import Standardizer
from modfuse.errors import ModfuseError, ReadError

__all__ = ["EOPatchLandCoverDataModule", "MoleculeCSVDataModule", "terrain_features"]


# ---------------------------------------------------------------------------------- remote sensing
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
        sources = {"series": series, "elevation": ArraySource(elevation, ids, collate="stack")}
        return MultiModalDataset(sources, targets=target, ids=ids, groups=groups, transforms=transforms)

    def describe(self) -> dict[str, Any]:
        """Pixels, class counts (by label value), share of cloud-free dates, split sizes."""
        if self.dataset is None:
            self.setup()
        assert self.dataset is not None and self.labels is not None and self.splits is not None
        series = self.dataset.sources["series"]
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


# ---------------------------------------------------------------------------------- molecules
class MoleculeCSVDataModule(MultiModalDataModule):
    """A MoleculeNet-style CSV read directly: molecular graph (from SMILES) + descriptor table.

    Modalities: ``graph`` (RDKit atom/bond features through
    `SmilesSource`; a SMILES RDKit cannot parse makes the graph
    missing for that molecule, it is never dropped) and ``descriptors`` (the numeric
    ``descriptors`` columns, standardised with training statistics; an all-empty row is a
    missing modality). The target is one numeric column.

    Column names come from a known configuration (``config="esol"``, see
    `modfuse.datasets.collections.moleculenet.CONFIGS`) or are given explicitly; explicit
    arguments override the configuration. Columns in the configuration's ``exclude`` (e.g.
    ESOL's ``ESOL predicted log solubility in mols per litre``, a model's prediction of the
    target) and in ``exclude`` here are refused as descriptors.

    This is the direct variant of the ``esol`` collection (``prepare("esol", ...)`` + a
    [`ManifestDataModule`][modfuse.datasets.manifest.ManifestDataModule]): same columns, same scaffold split,
    no manifest written.

    Args:
        path: the CSV (or Parquet) file.
        config: a MoleculeNet configuration name, or None (then ``smiles_column`` and
            ``target_column`` are required).
        smiles_column, target_column, id_column: column names (override the configuration).
        descriptors: descriptor columns (override the configuration; ``[]`` for graph only).
        exclude: more columns that must never be features.
        split: ``"scaffold"`` (Bemis-Murcko, deterministic, largest scaffolds in train, as
            DeepChem) or ``"random"`` (seeded).
        standardize: standardise descriptors with training-partition statistics.
        val_fraction, test_fraction: split sizes.
        batch_size, num_workers, pin_memory, seed, train_transform: as in
            [`MultiModalDataModule`][modfuse.data.MultiModalDataModule].
    """

    def __init__(
        self,
        path: str | Path = "data/delaney-processed.csv",
        config: str | None = "esol",
        smiles_column: str | None = None,
        target_column: str | None = None,
        id_column: str | None = None,
        descriptors: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        split: Literal["scaffold", "random"] = "scaffold",
        standardize: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(
            None,
            split="random",
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            train_transform=train_transform,
        )
        if split not in ("scaffold", "random"):
            raise ModfuseError(f"split: expected 'scaffold' or 'random', found {split!r}")
        self.path, self.split_kind, self.standardize = Path(path), split, standardize
        cfg = self._config(config)
        self.smiles_column = smiles_column or (cfg.smiles if cfg else None)
        self.target_column = target_column or (next(iter(cfg.targets.values())) if cfg else None)
        self.id_column = id_column or (cfg.id_column if cfg else None)
        self.descriptors = list(descriptors) if descriptors is not None else list(cfg.descriptors if cfg else ())
        self.excluded = {**(dict(cfg.exclude) if cfg else {}), **{c: "excluded by the caller" for c in exclude}}
        if self.smiles_column is None or self.target_column is None:
            raise ModfuseError("without a config, smiles_column and target_column are required")
        leaky = sorted(set(self.excluded) & ({*self.descriptors, self.smiles_column}))
        if leaky:
            raise ModfuseError(f"columns {leaky} must never be features: {[self.excluded[c] for c in leaky]}")
        if self.target_column in self.descriptors:
            raise ModfuseError(f"the target column {self.target_column!r} cannot be a descriptor")
        self.invalid_smiles: list[Hashable] = []

    @staticmethod
    def _config(name: str | None) -> Any:
        if name is None:
            return None
        from modfuse.datasets.collections.moleculenet import CONFIGS

        if name not in CONFIGS:
            raise ModfuseError(f"unknown MoleculeNet configuration {name!r}; expected one of {sorted(CONFIGS)} or None")
        return CONFIGS[name]

    def _read(self) -> pd.DataFrame:
        if not self.path.is_file():
            raise ReadError("expected a MoleculeNet-style CSV; set data.init_args.path to it", path=self.path)
        try:
            frame = pd.read_parquet(self.path) if self.path.suffix == ".parquet" else pd.read_csv(self.path)
        except (OSError, ValueError) as exc:
            raise ReadError(f"cannot read the table: {exc}", path=self.path) from exc
        wanted = [
            self.smiles_column,
            self.target_column,
            *self.descriptors,
            *([self.id_column] if self.id_column else []),
        ]
        absent = [c for c in wanted if c not in frame.columns]
        if absent:
            raise ReadError(f"expected columns {absent}, found columns {list(frame.columns)}", path=self.path)
        return frame

    def build_dataset(self) -> MultiModalDataset:
        from modfuse.data.readers.molecules import SmilesSource
        from modfuse.data.splits import murcko_scaffolds, scaffold_split

        frame = self._read()
        ids: list[Hashable] = (
            frame[self.id_column].astype(str).tolist()
            if self.id_column and not frame[self.id_column].astype(str).duplicated().any()
            else [f"row{i:06d}" for i in range(len(frame))]  # names repeat in some MoleculeNet files
        )
        target = pd.to_numeric(frame[self.target_column], errors="coerce").to_numpy(dtype=np.float32)
        if np.isnan(target).any():
            rows = np.flatnonzero(np.isnan(target))[:5].tolist()
            raise ReadError(
                f"target column {self.target_column!r} is empty or not numeric in rows {rows}", path=self.path
            )
        smiles = frame[self.smiles_column].astype(str).str.strip().tolist()
        n = len(frame)
        if self.split_kind == "scaffold":
            parts, scaffolds = scaffold_split(smiles, self.val_fraction, self.test_fraction)
            groups: np.ndarray | None = scaffolds
        else:
            scaffolds = murcko_scaffolds(smiles)
            parts = split_indices(n, "random", self.val_fraction, self.test_fraction, seed=self.seed)
            groups = None
        invalid = np.char.startswith(scaffolds.astype(str), "invalid:")
        self.invalid_smiles = [ids[i] for i in np.flatnonzero(invalid)]
        graph = SmilesSource([None if bad else s for s, bad in zip(smiles, invalid)], ids, path=self.path)
        sources: dict[str, Any] = {"graph": graph}
        transforms = None
        if self.descriptors:
            values = frame[self.descriptors].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
            sources["descriptors"] = ArraySource(values, ids, collate="stack")
            if self.standardize:
                transforms = {"descriptors": Standardizer.fit(values, rows=parts["train"])}
        check_disjoint_groups(parts, groups)
        self.given_splits = parts
        return MultiModalDataset(sources, targets=target, ids=ids, groups=groups, transforms=transforms)
