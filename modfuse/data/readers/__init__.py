"""Readers for real file formats; each one is a [`Source`][modfuse.data.Source].

Every reader maps sample ids to files (a folder, a mapping ``{id: path}`` or a list of
``(id, path)`` pairs) or to in-memory values (SMILES strings, PyG graphs), and its
``load(sample_id)`` returns the sample's value, ``None`` when the modality is missing for that
sample, or raises [`modfuse.errors.ReadError`][modfuse.errors.ReadError] naming the file, the sample and the
problem. [`MultiModalDataset`][modfuse.data.MultiModalDataset] applies the one bad-input policy
(``on_error="raise"`` or ``"missing"``) to those errors; readers never drop a sample.

This package stays light: the heavy libraries (pydicom, MONAI, rasterio, torchgeo, wfdb,
RDKit, PyG) are imported only when a reader is built or used. Reader classes are exported
lazily, and the registry knows the built-in readers by name without importing them.

Example:
    >>> from modfuse.data.readers import build, available
    >>> "smiles" in available()
    True
    >>> source = build("smiles", ["CCO", "c1ccccc1"], ids=["ethanol", "benzene"])
"""

from __future__ import annotations

import importlib
from typing import Any

from modfuse.registry import Registry

__all__ = [
    "ATOM_FEATURES",
    "BOND_FEATURES",
    "READERS",
    "DicomMetadataSource",
    "DicomSource",
    "DicomWaveformSource",
    "EOPatchElevationSource",
    "EOPatchSeriesSource",
    "EOPatchTimelessSource",
    "GeoDatasetSource",
    "GeoTiffSource",
    "GraphSource",
    "ImageSource",
    "MultiBandRasterSource",
    "RasterChipSource",
    "SmilesSource",
    "TabularSchema",
    "TabularSource",
    "WfdbBeatSource",
    "WfdbHeaderSource",
    "WfdbSource",
    "WfdbWindowSource",
    "available",
    "build",
    "get",
    "register",
    "smiles_to_graph",
]

# name -> module that registers it when imported (imported on first use only); packages add
# readers through the "modfuse.readers" entry-point group
_BUILTIN = {
    "smiles": "modfuse.data.readers.molecules",
    "graphs": "modfuse.data.readers.molecules",
    "tabular": "modfuse.data.readers.tabular",
    "wfdb": "modfuse.data.readers.physio",
    "wfdb-beats": "modfuse.data.readers.physio",
    "wfdb-windows": "modfuse.data.readers.physio",
    "wfdb-header": "modfuse.data.readers.physio",
    "dicom": "modfuse.data.readers.dicom",
    "dicom-metadata": "modfuse.data.readers.dicom",
    "dicom-waveform": "modfuse.data.readers.dicom",
    "raster": "modfuse.data.readers.raster",
    "raster-chips": "modfuse.data.readers.raster",
    "torchgeo": "modfuse.data.readers.raster",
    "eopatch-series": "modfuse.data.readers.timeseries",
    "eopatch-elevation": "modfuse.data.readers.timeseries",
    "eopatch-timeless": "modfuse.data.readers.timeseries",
    "geotiff": "modfuse.data.readers.images",
    "image": "modfuse.data.readers.images",
}

READERS: Registry[Any] = Registry("reader", group="modfuse.readers", lazy=_BUILTIN)
register = READERS.register
"""Decorator: ``@register("name")`` makes a reader class buildable by name."""

_EXPORTS = {
    "SmilesSource": "molecules",
    "GraphSource": "molecules",
    "smiles_to_graph": "molecules",
    "ATOM_FEATURES": "molecules",
    "BOND_FEATURES": "molecules",
    "TabularSchema": "tabular",
    "TabularSource": "tabular",
    "WfdbSource": "physio",
    "WfdbBeatSource": "physio",
    "WfdbHeaderSource": "physio",
    "WfdbWindowSource": "physio",
    "DicomSource": "dicom",
    "DicomMetadataSource": "dicom",
    "DicomWaveformSource": "dicom",
    "MultiBandRasterSource": "raster",
    "RasterChipSource": "raster",
    "GeoDatasetSource": "raster",
    "EOPatchSeriesSource": "timeseries",
    "EOPatchElevationSource": "timeseries",
    "EOPatchTimelessSource": "timeseries",
    "GeoTiffSource": "images",
    "ImageSource": "images",
}


def get(name: str) -> Any:
    """The reader class registered as ``name`` (built-in readers are imported on demand)."""
    return READERS.get(name)


def build(name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Build the reader registered as ``name``, e.g. ``build("wfdb", "records/", leads=["II"])``."""
    return get(name)(*args, **kwargs)


def available() -> list[str]:
    """Names of the built-in and user-registered readers."""
    return READERS.available()


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
