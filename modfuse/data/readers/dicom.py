"""DICOM via pydicom (+ MONAI intensity/resize transforms): images, metadata, waveforms.

* `DicomSource`: pixel data as float32 (C, H, W), or (C, F, H, W) for multi-frame files,
  with the modality LUT (rescale slope/intercept, e.g. Hounsfield units for CT), VOI windowing
  to [0, 1], MONOCHROME1 inversion, and resizing or respacing to a target.
* `DicomMetadataSource`: header fields (age, sex, view position, modality, ...) as a
  tabular source.
* `DicomWaveformSource`: waveforms stored in DICOM (e.g. a 12-lead ECG) as
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
    """``pydicom.dcmread`` with its exceptions turned into `ReadError` naming the file."""
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
    channel conversion (``channels``) -> resize (``spatial_size``) or respacing (``pixdim``).
    PALETTE COLOR images are looked up in their colour table (``pydicom.pixels.apply_color_lut``)
    to RGB, scaled to [0, 1] by the table's range. Compressed transfer syntaxes (JPEG baseline,
    JPEG lossless, JPEG-LS, JPEG 2000, RLE) are decoded by the pylibjpeg plugins of the ``med``
    extra.

    Args:
        files: a folder, a mapping ``{id: path}`` or ``(id, path)`` pairs (see
            `PathsLike`); ``None`` = missing for that sample.
        window: ``"dicom"`` (default): the file's first WindowCenter/WindowWidth with its
            VOILUTFunction (LINEAR, LINEAR_EXACT or SIGMOID, via
            ``pydicom.pixels.apply_windowing``), or its VOI LUT, scaled to [0, 1]; files without
            VOI are min-max scaled per image.
            ``(center, width)``: a fixed window, e.g. ``(40, 400)`` for CT soft tissue.
            ``None``: modality values (e.g. HU), no scaling.
        spatial_size: output (H, W) (or (F, H, W) for multi-frame) via ``monai.transforms.Resize``.
        pixdim: target pixel spacing in mm (row, column); the image is resized so one pixel
            covers ``pixdim`` (uses PixelSpacing / ImagerPixelSpacing). Not with ``spatial_size``.
        channels: convert every image to this many channels (1: RGB to grey by BT.601 luma;
            3: grey repeated), so grey and colour files can share a batch. Default None: as
            stored; a batch mixing 1- and 3-channel images is then a collate error naming the
            samples and their shapes.
        frames: the number of frames each file must hold (e.g. ``1`` for radiographs); a file
            with another count is a `ReadError` at read time, so ``on_error="missing"``
            applies. Default None: any (multi-frame files give (C, F, H, W)).
        pattern: glob for folders. collate: default ``"stack"`` (images of one modality share
            a shape; ``"pad"`` pads one varying dimension with a mask).

    Returns from ``load``:
        float32 Tensor (C, H, W) with C = 1 (grey) or 3 (colour); multi-frame: (C, F, H, W).

    Raises (from ``load``):
        ReadError: not DICOM, truncated, no pixel data, pixel data that cannot be decoded, or
            a frame count other than ``frames``.
    """

    default_pattern: ClassVar[str] = "*.dcm"

    def __init__(
        self,
        files: PathsLike,
        *,
        window: Window = "dicom",
        spatial_size: Sequence[int] | None = None,
        pixdim: Sequence[float] | None = None,
        channels: int | None = None,
        frames: int | None = None,
        pattern: str | None = None,
        collate: CollateMode = "stack",
    ) -> None:
        if spatial_size is not None and pixdim is not None:
            raise ModfuseError("give spatial_size or pixdim, not both")
        if channels not in (None, 1, 3):
            raise ModfuseError(f"channels must be 1, 3 or None, found {channels!r}")
        if frames is not None and frames < 1:
            raise ModfuseError(f"frames must be a positive frame count or None, found {frames!r}")
        if window is not None and window != "dicom" and len(window) != 2:
            raise ModfuseError(f"window must be 'dicom', (center, width) or None, found {window!r}")
        super().__init__(files, pattern=pattern, collate=collate)
        self.window, self.spatial_size, self.pixdim = window, spatial_size, pixdim
        self.channels, self.frames = channels, frames
        self.library_errors = _dicom_errors()

    def read(self, path: Path, sample_id: Hashable) -> torch.Tensor:
        ds = read_dicom(path, sample_id)
        if "PixelData" not in ds:
            raise ReadError("the file has no pixel data (PixelData element)", path=path, sample_id=sample_id)
        found = int(ds.get("NumberOfFrames", 1) or 1)
        if self.frames is not None and found != self.frames:
            raise ReadError(
                f"expected {self.frames} frame(s) per image, found {found} (a multi-frame series?)",
                path=path,
                sample_id=sample_id,
            )
        pixels = _pydicom().pixels
        try:
            if _is_palette(ds):  # stored values are indices into the file's colour table
                values = pixels.apply_color_lut(ds.pixel_array, ds).astype(np.float32)
            else:
                values = _modality_values(ds.pixel_array, ds)
        except _dicom_errors() as exc:
            raise ReadError(
                f"cannot decode pixel data (truncated or unsupported): {exc}", path=path, sample_id=sample_id
            ) from exc
        values = self._palette_intensity(values, ds) if _is_palette(ds) else self._intensity(values, ds)
        image = torch.from_numpy(np.ascontiguousarray(_channel_first(values, ds)))
        return self._resize(_to_channels(image, self.channels, path, sample_id), ds)

    def _palette_intensity(self, rgb: np.ndarray, ds: Any) -> np.ndarray:
        """PALETTE COLOR looked up to RGB: scaled by the table's range to [0, 1] (``window=None``:
        the table's values). A VOI window does not apply to colour."""
        if self.window is None:
            return rgb
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return np.clip(rgb / float(2**bits - 1), 0.0, 1.0).astype(np.float32)

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
        elif self.window == "dicom" and "WindowCenter" in ds and (bounds := _linear_window(ds)) is not None:
            lo, hi = bounds  # a linear VOI window is an affine map and a clip: one float32 pass below
        elif self.window == "dicom" and "WindowCenter" in ds:
            # pydicom applies the file's VOILUTFunction (LINEAR, LINEAR_EXACT or SIGMOID) and maps
            # the window onto the output range [y_min, y_max], which is scaled to [0, 1] here
            values = _pydicom().pixels.apply_windowing(values.astype(np.float64), ds)
            lo, hi = _window_output_range(ds)
        elif self.window == "dicom":
            lo, hi = float(values.min()), float(values.max())  # no VOI in the file
        else:
            lo, hi = window_bounds(*self.window)
        out = _scale_to_unit(values, lo, max(hi, lo + 1e-6))
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


def _modality_values(pixels: np.ndarray, ds: Any) -> np.ndarray:
    """Stored pixels -> modality values (float32) by the modality LUT (PS3.3 C.11.1).

    ``pydicom.pixels.apply_rescale`` computes in float64; an integer intercept with slope 1
    on pixels of up to 16 bits is exact in float32, so that common case (CT, radiographs, files
    without rescale) is one float32 pass and no float64 copy."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    plain = not ds.get("ModalityLUTSequence") and int(ds.get("BitsStored", 16) or 16) <= 16
    if plain and (slope is None or intercept is None):  # pydicom rescales only with both present
        return pixels.astype(np.float32)
    if plain and float(slope) == 1 and float(intercept).is_integer():
        out = pixels.astype(np.float32)
        out += float(intercept)
        return out
    return _pydicom().pixels.apply_rescale(pixels, ds).astype(np.float32, copy=False)


def _linear_window(ds: Any) -> tuple[float, float] | None:
    """The modality values a LINEAR or LINEAR_EXACT VOI window maps onto [0, 1], or None
    when ``pydicom.pixels.apply_windowing`` must do it (SIGMOID, an invalid width, colour).

    pydicom maps the window onto the output range [y_min, y_max], which the reader then scales
    to [0, 1]; for a linear function that composition is ``clip((x - lo) / (hi - lo), 0, 1)``
    with these bounds (PS3.3 C.11.2.1.2.1 and C.11.2.1.3.2), whatever the output range."""
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if ds.get("PhotometricInterpretation") not in ("MONOCHROME1", "MONOCHROME2") or "WindowWidth" not in ds:
        return None
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    if function == "LINEAR" and width >= 1:
        return window_bounds(center, width)
    if function == "LINEAR_EXACT" and width > 0:
        return center - width / 2, center + width / 2
    return None


def _scale_to_unit(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``clip((values - lo) / (hi - lo), 0, 1)`` as float32 in one new array (as MONAI's
    ``ScaleIntensityRange(lo, hi, 0, 1, clip=True)``, without its per-call tensor wrapping)."""
    out = np.subtract(values, lo, dtype=np.float32)
    out /= np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0, out=out)


def _is_palette(ds: Any) -> bool:
    return ds.get("PhotometricInterpretation") == "PALETTE COLOR"


def _window_output_range(ds: Any) -> tuple[float, float]:
    """The range ``pydicom.pixels.apply_windowing`` maps a window onto (PS3.3 C.11.2.1.2)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        return lo * slope + intercept, hi * slope + intercept
    return float(lo), float(hi)


_LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601 weights of R, G, B


def _to_channels(image: torch.Tensor, channels: int | None, path: Path, sample_id: Hashable) -> torch.Tensor:
    """(C, ...) -> (channels, ...): grey repeated to 3 channels, or RGB to grey by luma."""
    have = image.shape[0]
    if channels is None or have == channels:
        return image
    if have == 1 and channels == 3:
        return image.expand(3, *image.shape[1:]).contiguous()
    if have == 3 and channels == 1:
        return torch.tensordot(_LUMA.to(image.dtype), image, dims=1)[None]
    raise ReadError(f"expected an image with 1 or 3 channels to convert to {channels}, found {have}", path=path)


def _channel_first(values: np.ndarray, ds: Any) -> np.ndarray:
    """(H, W) -> (1, H, W); (F, H, W) -> (1, F, H, W); colour (..., 3) -> (3, ...)."""
    colour = int(ds.get("SamplesPerPixel", 1)) > 1 or _is_palette(ds)
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
        files: as in `DicomSource`.
        fields: DICOM keywords to read (default age, sex, view position, modality). Age
            strings become years; sex is ``"M"`` / ``"F"`` (``"O"`` and blanks are missing).
        schema: feature roles (default: ``PatientAge`` numeric, the other fields categorical).
        preprocessor: training statistics (see `TabularSource`).
        pattern: glob for folders.

    A file that is not DICOM, or holds none of ``fields`` (e.g. only the file meta header),
    raises `ReadError` when its sample is loaded (``on_error="missing"``: missing and
    reported), rather than passing for a sample whose fields are all unknown.

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
                    if not any(f in ds for f in fields):  # e.g. file meta only: a row of NaN is no data
                        raise ReadError(
                            f"expected header fields {list(fields)}, found none of them "
                            f"({len(ds)} data elements; a header-only or non-image file?)",
                            path=path,
                            sample_id=sid,
                        )
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
        files: as in `DicomSource`.
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
