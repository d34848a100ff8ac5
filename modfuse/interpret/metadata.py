"""What the data knows about a modality's axes: column names, lead names and sampling rate,
band names and wavelengths, dates. Plots and reports label their axes with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

__all__ = ["ModalityInfo", "modality_info"]


@dataclass
class ModalityInfo:
    """Axis labels of one modality (None where the source does not say).

    Attributes:
        feature_names: tabular column names, in input order.
        lead_names: signal lead (channel) names, in input order.
        fs: signal sampling rate in Hz.
        band_names: spectral band names, in channel order.
        wavelengths: centre wavelength (nm) per band (None for an unknown band).
        timestamps: acquisition times of a time series, one per date.
    """

    feature_names: list[str] | None = None
    lead_names: list[str] | None = None
    fs: float | None = None
    band_names: list[str] | None = None
    wavelengths: list[float | None] | None = None
    timestamps: pd.DatetimeIndex | None = None


def _dataset_of(data: Any) -> Any:
    """The MultiModalDataset behind a datamodule, DataLoader, Subset or dataset (None if none)."""
    seen = 0
    while data is not None and not hasattr(data, "sources") and seen < 8:
        data = getattr(data, "dataset", None)
        seen += 1
    return data


def _source_of(data: Any, modality: str) -> Any:
    dataset = _dataset_of(data)
    source: Any = getattr(dataset, "sources", {}).get(modality) if dataset is not None else None
    while hasattr(source, "source") and not hasattr(source, "load_signal"):  # MemoizedSource, MaskedSource
        inner = source.source
        if inner is source:
            break
        source = inner
    return source


def modality_info(data: Any, modality: str) -> ModalityInfo:
    """Axis labels of ``modality`` from the reader behind ``data``.

    Tabular readers give ``feature_names``; WFDB readers their ``leads`` and ``fs`` (the
    first record's header when the reader keeps the file's own); DICOM waveforms their channel
    names (read from the first file) and ``fs`` when resampled; raster readers their ``bands`` and ``wavelengths``; EOPatch series their
    ``timestamps``.

    Args:
        data: a datamodule, DataLoader, MultiModalDataset (or Subset); anything else gives an
            empty `ModalityInfo`.
        modality: the modality name.
    """
    source = _source_of(data, modality)
    if source is None:
        return ModalityInfo()
    info = ModalityInfo()
    names = getattr(source, "feature_names", None)
    info.feature_names = [str(n) for n in names] if names else None
    if hasattr(source, "wavelengths") and getattr(source, "bands", None):
        info.band_names = [str(b) for b in source.bands]
        info.wavelengths = list(source.wavelengths)
    if getattr(source, "timestamps", None) is not None:
        info.timestamps = pd.DatetimeIndex(source.timestamps)
    if hasattr(source, "header") or hasattr(source, "lead_names"):
        info.lead_names, info.fs = _signal_axes(source)
    return info


def _signal_axes(source: Any) -> tuple[list[str] | None, float | None]:
    leads = getattr(source, "leads", None) or getattr(source, "lead_names", None) or None
    fs = getattr(source, "fs", None)
    first = _first_with_file(source)
    if (leads is None or fs is None) and hasattr(source, "header") and first is not None:
        head = source.header(first)
        leads = leads or list(head.sig_name or []) or None
        fs = fs if fs is not None else float(head.fs)
    if leads is None and hasattr(source, "lead_names") and not hasattr(source, "header") and first is not None:
        source.load(first)  # a DICOM waveform names its channels once a file is read
        leads = source.lead_names or None
    return ([str(n) for n in leads] if leads else None), (float(fs) if fs else None)


def _first_with_file(source: Any) -> Any:
    """The first id whose file exists: a record id for WFDB segment sources (their sample ids
    are ``record:k`` segments), else a sample id."""
    paths = getattr(source, "paths", None)
    ids = getattr(source, "record_ids", None) or getattr(source, "ids", [])
    for sample_id in ids:
        if paths is None or paths.get(sample_id) is not None:
            return sample_id
    return None
