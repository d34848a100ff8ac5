"""DICOM via pydicom (+ MONAI intensity/resize transforms): images, metadata, waveforms.

* :class:`DicomSource`: pixel data as float32 (C, H, W), or (C, F, H, W) for multi-frame files,
  with the modality LUT (rescale slope/intercept, e.g. Hounsfield units for CT), VOI windowing
  to [0, 1], MONOCHROME1 inversion, and resizing or respacing to a target.
* :class:`DicomMetadataSource`: header fields (age, sex, view position, modality, ...) as a
  tabular source.
* :class:`DicomWaveformSource`: waveforms stored in DICOM (e.g. a 12-lead ECG) as
  (leads, samples) float32 signals.

Files are given as a folder (``pattern`` default ``"*.dcm"``; use ``"**/*"`` for nested
folders of extension-less files), a mapping ``{id: path}`` or a list of ``(id, path)`` pairs.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers import register
from modfuse.data.readers._base import FileSource, PathsLike, resolve_paths
from modfuse.data.readers.physio import resample
from modfuse.data.readers.tabular import TabularPreprocessor, TabularSchema, TabularSource
from modfuse.errors import ModfuseError, ReadError
from modfuse.utils.optional import require

__all__ = ["DicomMetadataSource", "DicomSource", "DicomWaveformSource", "read_dicom", "window_bounds"]

Window = Literal["dicom"] | tuple[float, float] | None


def _pydicom() -> Any:
    return require("pydicom", extra="med")


def _dicom_errors() -> tuple[type[BaseException], ...]:
    errors = _pydicom().errors
    return (errors.InvalidDicomError, OSError, ValueError, EOFError, KeyError, AttributeError, TypeError)


def read_dicom(path: Path, sample_id: Hashable, stop_before_pixels: bool = False) -> Any:
    """``pydicom.dcmread`` with its exceptions turned into :class:`ReadError` naming the file."""
    try:
        return _pydicom().dcmread(path, stop_before_pixels=stop_before_pixels)
    except _dicom_errors() as exc:
        raise ReadError(
            f"not a readable DICOM file: {type(exc).__name__}: {exc}", path=path, sample_id=sample_id
        ) from exc


def _first(value: Any) -> float:
    """WindowCenter / WindowWidth may be multi-valued; the first is the default view."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        return float(value)
    return float(value[0])


def window_bounds(center: float, width: float) -> tuple[float, float]:
    """The value range a linear DICOM window maps onto [0, 1] (PS3.3 C.11.2.1.2.1)."""
    if width < 1:
        raise ModfuseError(f"window width must be >= 1, found {width}")
    return center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2


def _stored_range(ds: Any) -> tuple[float, float]:
    """Modality values of the smallest and largest storable pixel (for MONOCHROME1 mirroring)."""
    bits = int(ds.get("BitsStored", 16))
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.get("PixelRepresentation", 0) else (0, 2**bits - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return lo * slope + intercept, hi * slope + intercept


@register("dicom")
class DicomSource(FileSource):
    """DICOM images, one file per sample.

    Processing order: pixel data -> modality LUT (rescale slope / intercept: CT gives
    Hounsfield units) -> VOI window to [0, 1] -> MONOCHROME1 inversion -> channel-first ->
    resize (``spatial_size``) or respacing (``pixdim``).

    Args:
        files: a folder, a mapping ``{id: path}`` or ``(id, path)`` pairs (see
            :data:`~modfuse.data.readers._base.PathsLike`); ``None`` = missing for that sample.
        window: ``"dicom"`` (default): the file's first WindowCenter/WindowWidth (or its VOI
            LUT), scaled to [0, 1]; files without VOI are min-max scaled per image.
            ``(center, width)``: a fixed window, e.g. ``(40, 400)`` for CT soft tissue.
            ``None``: modality values (e.g. HU), no scaling.
        spatial_size: output (H, W) (or (F, H, W) for multi-frame) via ``monai.transforms.Resize``.
        pixdim: target pixel spacing in mm (row, column); the image is resized so one pixel
            covers ``pixdim`` (uses PixelSpacing / ImagerPixelSpacing). Not with ``spatial_size``.
        pattern: glob for folders. collate: default ``"auto"``.

    Returns from ``load``:
        float32 Tensor (C, H, W) with C = 1 (grey) or 3 (colour); multi-frame: (C, F, H, W).

    Raises (from ``load``):
        ReadError: not DICOM, truncated, no pixel data, or pixel data that cannot be decoded.
    """

    default_pattern: ClassVar[str] = "*.dcm"

    def __init__(
        self,
        files: PathsLike,
        *,
        window: Window = "dicom",
        spatial_size: Sequence[int] | None = None,
        pixdim: Sequence[float] | None = None,
        pattern: str | None = None,
        collate: CollateMode = "auto",
    ) -> None:
        if spatial_size is not None and pixdim is not None:
            raise ModfuseError("give spatial_size or pixdim, not both")
        if window is not None and window != "dicom" and len(window) != 2:
            raise ModfuseError(f"window must be 'dicom', (center, width) or None, found {window!r}")
        super().__init__(files, pattern=pattern, collate=collate)
        self.window, self.spatial_size, self.pixdim = window, spatial_size, pixdim
        self.library_errors = _dicom_errors()

    def read(self, path: Path, sample_id: Hashable) -> torch.Tensor:
        ds = read_dicom(path, sample_id)
        if "PixelData" not in ds:
            raise ReadError("the file has no pixel data (PixelData element)", path=path, sample_id=sample_id)
        pixels = _pydicom().pixels
        try:
            values = pixels.apply_rescale(ds.pixel_array, ds).astype(np.float32, copy=False)
        except _dicom_errors() as exc:
            raise ReadError(
                f"cannot decode pixel data (truncated or unsupported): {exc}", path=path, sample_id=sample_id
            ) from exc
        values = self._intensity(values, ds)
        image = torch.from_numpy(np.ascontiguousarray(_channel_first(values, ds)))
        return self._resize(image, ds)

    def _intensity(self, values: np.ndarray, ds: Any) -> np.ndarray:
        """VOI window to [0, 1] and MONOCHROME1 inversion (bright = dense everywhere)."""
        inverted = ds.get("PhotometricInterpretation") == "MONOCHROME1"
        if self.window is None:
            if inverted:
                lo, hi = _stored_range(ds)
                values = lo + hi - values
            return values
        if self.window == "dicom" and "VOILUTSequence" in ds and "WindowCenter" not in ds:
            values = _pydicom().pixels.apply_voi_lut(values, ds).astype(np.float32)
            lo, hi = 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        elif self.window == "dicom" and "WindowCenter" in ds:
            lo, hi = window_bounds(_first(ds.WindowCenter), _first(ds.WindowWidth))
        elif self.window == "dicom":
            lo, hi = float(values.min()), float(values.max())  # no VOI in the file
        else:
            lo, hi = window_bounds(*self.window)
        scale = require("monai.transforms", extra="med").ScaleIntensityRange
        out = scale(a_min=lo, a_max=max(hi, lo + 1e-6), b_min=0.0, b_max=1.0, clip=True)(values)
        out = np.asarray(out, dtype=np.float32)
        return 1.0 - out if inverted else out

    def _resize(self, image: torch.Tensor, ds: Any) -> torch.Tensor:
        size = self.spatial_size
        if self.pixdim is not None:
            spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
            if spacing is None:
                raise ReadError("pixdim needs PixelSpacing or ImagerPixelSpacing, found neither")
            hw = image.shape[-2:]
            size = [*image.shape[1:-2], *(max(1, round(n * float(s) / p)) for n, s, p in zip(hw, spacing, self.pixdim))]
        if size is None:
            return image
        if len(size) != image.dim() - 1:
            raise ReadError(f"spatial_size {tuple(size)} does not fit an image of shape {tuple(image.shape)}")
        resize = require("monai.transforms", extra="med").Resize
        mode = "bilinear" if image.dim() == 3 else "trilinear"
        out = resize(spatial_size=tuple(size), mode=mode, anti_aliasing=True)(image)
        return torch.as_tensor(np.asarray(out), dtype=torch.float32)


def _channel_first(values: np.ndarray, ds: Any) -> np.ndarray:
    """(H, W) -> (1, H, W); (F, H, W) -> (1, F, H, W); colour (..., 3) -> (3, ...)."""
    colour = int(ds.get("SamplesPerPixel", 1)) > 1
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if colour:
        return np.moveaxis(values, -1, 0)
    if frames > 1 and values.ndim == 2:  # one-frame read of a multi-frame file
        values = values[None]
    return values[None]


# ---------------------------------------------------------------------- metadata
_AGE = re.compile(r"^\s*(\d+)\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}
DEFAULT_FIELDS = ("PatientAge", "PatientSex", "ViewPosition", "Modality")


def parse_age(value: Any) -> float:
    """DICOM Age String (``"061Y"``, ``"018M"``, ``"003W"``, ``"010D"``) in years; NaN if absent."""
    match = _AGE.match(str(value)) if value not in (None, "") else None
    if not match:
        return float("nan")
    return int(match.group(1)) * _AGE_UNITS[match.group(2).upper()]


def _field(ds: Any, keyword: str) -> Any:
    value = ds.get(keyword)
    if keyword == "PatientAge":
        return parse_age(value)
    if keyword == "PatientSex":
        return {"M": "M", "F": "F"}.get(str(value).strip().upper()) if value else None  # "O" / "" -> unknown
    if value is None or value == "":
        return None
    return str(value) if not isinstance(value, (int, float)) else value


@register("dicom-metadata")
class DicomMetadataSource(TabularSource):
    """DICOM header fields as a tabular source (pixel data is not read).

    Args:
        files: as in :class:`DicomSource`.
        fields: DICOM keywords to read (default age, sex, view position, modality). Age
            strings become years; sex is ``"M"`` / ``"F"`` (``"O"`` and blanks are missing).
        schema: feature roles (default: ``PatientAge`` numeric, the other fields categorical).
        preprocessor: training statistics (see :class:`TabularSource`).
        pattern: glob for folders.

    Attributes:
        frame: one row per file: ``id`` and the fields.
    """

    def __init__(
        self,
        files: PathsLike,
        fields: Sequence[str] = DEFAULT_FIELDS,
        schema: TabularSchema | None = None,
        preprocessor: TabularPreprocessor | str | None = None,
        *,
        pattern: str = "*.dcm",
        collate: CollateMode = "stack",
    ) -> None:
        rows, bad = [], {}
        for sid, path in resolve_paths(files, pattern=pattern).items():
            row: dict[str, Any] = {"id": sid}
            if path is not None:
                try:
                    ds = read_dicom(path, sid, stop_before_pixels=True)
                    row.update({f: _field(ds, f) for f in fields})
                except ReadError as exc:
                    bad[sid] = exc
            rows.append(row)
        frame = pd.DataFrame(rows, columns=["id", *fields])
        numeric = [f for f in fields if f == "PatientAge" or pd.api.types.is_numeric_dtype(frame[f].dropna())]
        numeric = [f for f in numeric if frame[f].notna().any() or f == "PatientAge"]
        schema = schema or TabularSchema(numeric, [f for f in fields if f not in numeric], id="id")
        super().__init__(frame, schema, preprocessor, collate=collate)
        self._read_errors = bad

    def load(self, sample_id: Hashable) -> torch.Tensor | None:
        if sample_id in self._read_errors:
            raise self._read_errors[sample_id]
        return super().load(sample_id)


# ---------------------------------------------------------------------- waveforms
def short_lead_name(name: str) -> str:
    """``"Lead I (Einthoven)"`` -> ``"I"``, ``"Lead aVR"`` -> ``"aVR"``."""
    return re.sub(r"\s*\(.*\)\s*$", "", re.sub(r"^\s*Lead\s+", "", name)).strip()


@register("dicom-waveform")
class DicomWaveformSource(FileSource):
    """Waveforms stored in DICOM (ECG, haemodynamic, ...), one file per sample.

    Args:
        files: as in :class:`DicomSource`.
        group: which multiplex group of the WaveformSequence (0: the first, e.g. the rhythm
            strip of a 12-lead ECG), or its MultiplexGroupLabel (e.g. ``"RHYTHM"``).
        leads: channel names in output order (``"II"`` or ``"Lead II"``, case-insensitive);
            default all channels in file order.
        fs: target sampling rate in Hz (default: the file's).
        pattern: glob for folders. collate: default ``"auto"``.

    Returns from ``load``:
        float32 Tensor (leads, samples) in the channels' physical units (pydicom applies the
        channel sensitivity and baseline; ECGs are usually in µV).

    Attributes:
        lead_names: after a load, the short names of the channels last returned.
    """

    default_pattern: ClassVar[str] = "*.dcm"

    def __init__(
        self,
        files: PathsLike,
        *,
        group: int | str = 0,
        leads: Sequence[str] | None = None,
        fs: float | None = None,
        pattern: str | None = None,
        collate: CollateMode = "auto",
    ) -> None:
        super().__init__(files, pattern=pattern, collate=collate)
        self.group, self.leads, self.fs = group, list(leads) if leads else None, fs
        self.lead_names: list[str] = []
        self.library_errors = _dicom_errors()

    def _group_index(self, ds: Any, path: Path, sample_id: Hashable) -> int:
        groups = ds.get("WaveformSequence")
        if not groups:
            raise ReadError("the file has no WaveformSequence", path=path, sample_id=sample_id)
        if isinstance(self.group, int):
            if not 0 <= self.group < len(groups):
                raise ReadError(f"expected waveform group {self.group}, found {len(groups)} groups", path=path)
            return self.group
        labels = [str(g.get("MultiplexGroupLabel", "")) for g in groups]
        if self.group not in labels:
            raise ReadError(f"expected a waveform group labelled {self.group!r}, found {labels}", path=path)
        return labels.index(self.group)

    def read(self, path: Path, sample_id: Hashable) -> torch.Tensor:
        ds = read_dicom(path, sample_id)
        index = self._group_index(ds, path, sample_id)
        group = ds.WaveformSequence[index]
        names = [short_lead_name(c.ChannelSourceSequence[0].CodeMeaning) for c in group.ChannelDefinitionSequence]
        signal = np.asarray(ds.waveform_array(index), dtype=np.float32).T  # (channels, samples)
        if self.leads:
            lookup = {n.lower(): i for i, n in enumerate(names)}
            wanted = [short_lead_name(lead).lower() for lead in self.leads]
            absent = [lead for lead, w in zip(self.leads, wanted) if w not in lookup]
            if absent:
                raise ReadError(f"expected leads {self.leads}, found {names} (absent: {absent})", path=path)
            rows = [lookup[w] for w in wanted]
            signal, names = signal[rows], [names[i] for i in rows]
        self.lead_names = names
        return torch.from_numpy(np.ascontiguousarray(resample(signal, float(group.SamplingFrequency), self.fs)))
