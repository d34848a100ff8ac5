"""Sentinel collections: BigEarthNet (S2 + S1 where present, multi-label) and EuroSAT-MS.

BigEarthNet v1 layout (bigearth.net)::

    root/BigEarthNet-v1.0/<S2 patch>/<S2 patch>_B01.tif ... _B12.tif, _B8A.tif (12 bands, 10/20/60 m)
                                    <S2 patch>_labels_metadata.json  {"labels": [...], "coordinates": {...}}
    root/BigEarthNet-S1-v1.0/<S1 patch>/<S1 patch>_VV.tif, _VH.tif, _labels_metadata.json
                                    ({"corresponding_s2_patch": "<S2 patch>", ...})
    root/train.csv, val.csv, test.csv   official split: one S2 patch name per line (no header)
    root/patches_with_cloud_and_shadow.csv, patches_with_seasonal_snow.csv  (excluded when present)

EuroSAT-MS layout (13-band GeoTIFF chips, 64 x 64 at 10 m, one folder per class)::

    root/.../AnnualCrop/AnnualCrop_1.tif ... root/.../SeaLake/SeaLake_3000.tif
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from modfuse.data.splits import spatial_block_split
from modfuse.datasets.collections._common import relative
from modfuse.datasets.manifest import ModalitySpec, TargetSpec, write_manifest
from modfuse.datasets.preparation import register
from modfuse.errors import ReadError
from modfuse.utils.optional import require

__all__ = ["BIGEARTHNET_S2_BANDS", "EUROSAT_CLASSES", "prepare_bigearthnet", "prepare_eurosat"]

BIGEARTHNET_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
EUROSAT_CLASSES = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)


# ---------------------------------------------------------------------------------- BigEarthNet
@register("bigearthnet")
def prepare_bigearthnet(
    root: Path,
    out: Path,
    classes: Sequence[str] | None = None,
    exclude_cloud_snow: bool = True,
    block_size: float = 12_000.0,
    seed: int = 0,
    table_format: str = "parquet",
) -> Path:
    """Prepare BigEarthNet v1 (S2, with S1 where its folder is present).

    Splits: ``official`` (the provider's train/val/test CSVs, when present) and ``spatial``
    (blocks of ``block_size`` metres per UTM zone: neighbouring patches overlap in land cover,
    so a random patch split is optimistic). The group column is the spatial block.

    Args:
        root: folder holding ``BigEarthNet-v1.0/`` (and optionally ``BigEarthNet-S1-v1.0/``).
        out: output folder.
        classes: label names in output order (default: every label found, sorted).
        exclude_cloud_snow: drop the patches the provider lists as cloudy or snowy.
        block_size: spatial block edge in metres.
        seed: seed of the spatial split.
        table_format: ``parquet`` or ``csv``.
    """
    root = Path(root)
    s2_root = root / "BigEarthNet-v1.0" if (root / "BigEarthNet-v1.0").is_dir() else root
    metas = sorted(s2_root.glob("*/*_labels_metadata.json"))
    if not metas:
        raise ReadError("expected BigEarthNet-v1.0/<patch>/<patch>_labels_metadata.json, found none", path=s2_root)
    table = pd.DataFrame([_s2_row(p, root) for p in metas])
    if exclude_cloud_snow:
        for name in ("patches_with_cloud_and_shadow.csv", "patches_with_seasonal_snow.csv"):
            if (root / name).is_file():
                bad = set(pd.read_csv(root / name, header=None)[0].astype(str))
                table = table[~table["id"].isin(bad)]
    table = table.reset_index(drop=True)
    table["s1_path"] = table["id"].map(_s1_index(root)).astype(object)
    labels = list(classes) if classes is not None else sorted({c for ls in table["labels"] for c in ls})
    for c in labels:
        table[c] = np.array([c in ls for ls in table["labels"]], dtype=np.float32)
    table["labels"] = table["labels"].map("; ".join)
    spatial, blocks = spatial_block_split(table["x"], table["y"], block_size, 0.1, 0.2, seed, crs=table["crs"].tolist())
    table["group"] = blocks
    splits = {"spatial": spatial}
    official = _official_split(root, table["id"].tolist())
    if official is not None:
        splits = {"official": official, **splits}
    s2_options = {"bands": list(BIGEARTHNET_S2_BANDS), "template": "*_{band}.tif", "res": 10.0}
    return write_manifest(
        table,
        out,
        name="bigearthnet",
        modalities={
            "s2": ModalitySpec("path", ["s2_path"], reader="raster", options=s2_options, description="12 S2 L2A bands"),
            "s1": ModalitySpec(
                "path", ["s1_path"], reader="raster", options={"bands": ["VV", "VH"], "template": "*_{band}.tif"}
            ),
        },
        targets={"land_cover": TargetSpec("multilabel", labels)},
        splits=splits,
        default_split="official" if official is not None else "spatial",
        ungrouped_splits=["official"] if official is not None else (),
        root=root,
        table_format=table_format,  # type: ignore[arg-type]
        info={"exclude_cloud_snow": exclude_cloud_snow, "block_size": block_size},
    )


def _s2_row(meta_path: Path, root: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
        c = meta["coordinates"]
        labels = list(meta["labels"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ReadError(f"expected labels and coordinates (ulx, uly, lrx, lry), found {exc!r}", path=meta_path) from exc
    patch = meta_path.parent
    return {
        "id": patch.name,
        "s2_path": relative(patch, root),
        "labels": labels,
        "x": (float(c["ulx"]) + float(c["lrx"])) / 2,
        "y": (float(c["uly"]) + float(c["lry"])) / 2,
        # UTM zone from the WKT projection: blocks never straddle two zones' coordinates
        "crs": str(meta.get("projection", ""))[:80],
    }


def _s1_index(root: Path) -> dict[str, str]:
    s1_root = root / "BigEarthNet-S1-v1.0"
    out = {}
    for meta_path in sorted(s1_root.glob("*/*_labels_metadata.json")) if s1_root.is_dir() else []:
        s2 = json.loads(meta_path.read_text()).get("corresponding_s2_patch")
        if s2:
            out[str(s2)] = relative(meta_path.parent, root)
    return out


def _official_split(root: Path, ids: list[str]) -> dict[str, np.ndarray] | None:
    files = {p: root / f"{p}.csv" for p in ("train", "val", "test")}
    if not all(f.is_file() for f in files.values()):
        return None
    position = {s: i for i, s in enumerate(ids)}
    out = {}
    for part, f in files.items():
        names = pd.read_csv(f, header=None)[0].astype(str)  # BigEarthNet-MM files add an S1 column
        out[part] = np.sort(np.array([position[n] for n in names if n in position], dtype=int))
    return out


# ---------------------------------------------------------------------------------- EuroSAT
@register("eurosat")
def prepare_eurosat(
    root: Path,
    out: Path,
    block_size: float = 5_120.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    table_format: str = "parquet",
) -> Path:
    """Prepare EuroSAT-MS (13-band chips, 10 land-cover classes).

    Split ``spatial``: chips grouped into ``block_size`` metre blocks per CRS (read from each
    GeoTIFF's georeference), so overlapping or adjacent chips never straddle partitions.

    Args:
        root: a folder containing the ten class folders (at any depth).
        out: output folder.
        block_size: spatial block edge in metres.
        val_fraction, test_fraction: fractions of blocks.
        seed: seed of the split.
        table_format: ``parquet`` or ``csv``.
    """
    rasterio = require("rasterio", extra="geo")
    root = Path(root)
    base = _eurosat_base(root)
    rows = []
    for code, cls in enumerate(EUROSAT_CLASSES):
        for f in sorted((base / cls).glob("*.tif")):
            try:
                with rasterio.open(f) as src:
                    left, bottom, right, top = src.bounds
                    crs = str(src.crs)
            except rasterio.errors.RasterioError as exc:
                raise ReadError(f"not a readable GeoTIFF: {exc}", path=f) from exc
            rows.append({"id": f.stem, "path": relative(f, root), "label": code, "class": cls,
                         "x": (left + right) / 2, "y": (bottom + top) / 2, "crs": crs})  # fmt: skip
    table = pd.DataFrame(rows)
    spatial, blocks = spatial_block_split(
        table["x"], table["y"], block_size, val_fraction, test_fraction, seed, crs=table["crs"].tolist()
    )
    table["group"] = blocks
    return write_manifest(
        table,
        out,
        name="eurosat",
        modalities={
            "s2": ModalitySpec(
                "path",
                ["path"],
                reader="geotiff",
                options={"bands": 13, "scale": 10000.0},
                description="13 Sentinel-2 L1C bands, reflectance",
            ),
        },
        targets={"land_cover": TargetSpec("multiclass", ["label"], classes=list(EUROSAT_CLASSES))},
        splits={"spatial": spatial},
        root=root,
        table_format=table_format,  # type: ignore[arg-type]
        info={"block_size": block_size, "seed": seed},
    )


def _eurosat_base(root: Path) -> Path:
    if (root / EUROSAT_CLASSES[0]).is_dir():
        return root
    for candidate in sorted(root.rglob(EUROSAT_CLASSES[0])):
        if candidate.is_dir():
            return candidate.parent
    raise ReadError(
        f"expected the EuroSAT class folders ({', '.join(EUROSAT_CLASSES[:3])}, ...), found none", path=root
    )
