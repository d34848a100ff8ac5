"""Physiological signals in WFDB format (PhysioNet) via the ``wfdb`` package.

* `WfdbSource`: one signal per record, (leads, L) float32 in physical units, with lead
  selection / reordering by name, an optional time span, and resampling to a target rate.
* `WfdbWindowSource`: fixed-length windows of every record (one sample per window).
* `WfdbBeatSource`: beat-centred segments around the beats of an annotation file
  (e.g. ``100.atr``), one sample per beat, with the beat symbol as a label.
* `WfdbHeaderSource`: header comments (age, sex, diagnoses, ...) as a tabular source.

Records are given as a folder (every ``*.hea``), a mapping ``{id: record path}`` or a list of
``(id, record path)`` pairs; a record path may end in ``.hea`` or not. (The module is named
``physio`` so that it never shadows the ``wfdb`` package.)
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers import register
from modfuse.data.readers._base import FileSource, PathsLike, resolve_paths
from modfuse.data.readers.tabular import TabularPreprocessor, TabularSchema, TabularSource
from modfuse.data.readers.wfdb_header import parse_header
from modfuse.errors import ModfuseError, ReadError
from modfuse.utils.optional import require

__all__ = [
    "BEAT_SYMBOLS",
    "LEAD_ALIASES",
    "InvalidLead",
    "WfdbBeatSource",
    "WfdbHeaderSource",
    "WfdbSource",
    "WfdbWindowSource",
    "filter_signal",
    "match_leads",
    "parse_header_comments",
    "resample",
]

BEAT_SYMBOLS = "NLRBAaJSVrFejnE/fQ?"
"""PhysioNet's beat annotation codes (non-beat annotations such as ``+`` rhythm changes are
not beats)."""


def _wfdb() -> Any:
    return require("wfdb", extra="med")


def record_base(path: Path) -> str:
    """The record name wfdb expects: the path without a ``.hea`` suffix."""
    return str(path.with_suffix("")) if path.suffix == ".hea" else str(path)


def resample(signal: np.ndarray, fs: float, target_fs: float | None) -> np.ndarray:
    """Resample (leads, L) from ``fs`` to ``target_fs`` Hz (None or equal: unchanged).

    Polyphase filtering (``scipy.signal.resample_poly``) low-passes before decimating, so
    there is no aliasing, and unlike FFT resampling it does not treat the record as periodic
    (no wrap-around ringing at the window edges).
    """
    if target_fs is None or float(target_fs) == float(fs):
        return signal
    from scipy.signal import resample_poly

    ratio = Fraction(float(target_fs) / float(fs)).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32, copy=False)


def _fit_length(signal: np.ndarray, length: int) -> np.ndarray:
    """Crop or zero-pad the last axis to ``length`` (resampling can be off by one sample)."""
    if signal.shape[-1] >= length:
        return signal[..., :length]
    return np.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(0, length - signal.shape[-1])])


InvalidLead = Literal["error", "zero"]
"""What a WFDB reader does with a lead that holds no signal in the span read: every sample
invalid (NaN: lead off, recorder flagged) or a flat line (one constant value).

* ``"error"`` (default): `ReadError` naming the record, the lead and what was found;
  the dataset's ``on_error="missing"`` then marks the modality missing for that sample and
  records it in the read-error report. A flat or empty lead never reaches a model as if it
  were an asystole.
* ``"zero"``: keep the record, the invalid samples read as 0 (the lead stays flat).

Isolated invalid samples inside an otherwise valid lead are read as 0 in both modes."""

# bytes per sample of the WFDB signal formats (PhysioNet's signal(5)); compressed FLAC
# formats (508, 516, 524) have no fixed size and are not checked
_BYTES_PER_SAMPLE = {
    "8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5, "310": 4 / 3,
    "311": 4 / 3,
}  # fmt: skip


def check_signal_files(head: Any, name: str, sample_id: Hashable) -> None:
    """Compare each signal file's size with the samples its header declares.

    A short file (an interrupted copy) would otherwise fail deep inside numpy, and a file longer
    than its header says would be cut silently to the header's length.

    Raises:
        ReadError: naming the file, the samples per lead the header expects and those found.
    """
    folder = Path(name).parent
    per_file: dict[str, list[int]] = {}
    for i, file_name in enumerate(head.file_name or []):
        per_file.setdefault(file_name, []).append(i)
    for file_name, channels in per_file.items():
        fmt = str(head.fmt[channels[0]])
        path = folder / file_name
        if fmt not in _BYTES_PER_SAMPLE or not path.is_file():
            continue  # a missing file is reported by wfdb's own FileNotFoundError
        frame = sum(int((head.samps_per_frame or [1] * len(head.fmt))[c] or 1) for c in channels)
        offset = int((head.byte_offset or [0] * len(head.fmt))[channels[0]] or 0)
        expected = math.ceil(head.sig_len * frame * _BYTES_PER_SAMPLE[fmt])
        found = path.stat().st_size - offset
        held = int(max(found, 0) / (frame * _BYTES_PER_SAMPLE[fmt]))
        if found < expected:
            raise ReadError(
                f"signal file is truncated: the header expects {head.sig_len} samples per lead "
                f"({expected} bytes), the file holds {held} ({found} bytes)",
                path=path,
                sample_id=sample_id,
            )
        if found - expected >= math.ceil(frame * _BYTES_PER_SAMPLE[fmt]):  # more than a frame's padding
            raise ReadError(
                f"the header declares {head.sig_len} samples per lead but the signal file holds {held}: "
                "the header is wrong or belongs to another record (reading it would cut the signal)",
                path=path,
                sample_id=sample_id,
            )


def check_leads(
    signal: np.ndarray, names: Sequence[str], policy: InvalidLead, path: str, sample_id: Hashable
) -> np.ndarray:
    """Apply the `InvalidLead` policy to (leads, n) physical values; NaN become 0.

    Raises:
        ReadError: with ``policy="error"``, for the first lead that is all NaN or flat.
    """
    if policy not in ("error", "zero"):
        raise ModfuseError(f"invalid_lead must be 'error' or 'zero', found {policy!r}")
    finite = np.isfinite(signal)
    all_finite = bool(finite.all())
    if policy == "error" and signal.shape[-1] > 1 and all_finite:
        # the common case, vectorised: per-lead copies of the finite samples cost 0.7 ms of a
        # 2.3 ms read of 12 leads x 5000 samples
        low, high = signal.min(axis=-1), signal.max(axis=-1)
        flat = np.flatnonzero(low == high)
        if flat.size:
            raise ReadError(
                f"lead {names[flat[0]]!r} is flat (constant {float(low[flat[0]]):g} over {signal.shape[-1]} "
                "samples); expected a signal. invalid_lead='zero' keeps flat leads",
                path=path,
                sample_id=sample_id,
            )
    elif policy == "error" and signal.shape[-1] > 1:
        for i, name in enumerate(names):
            if not finite[i].any():
                raise ReadError(
                    f"lead {name!r} has no valid sample in the {signal.shape[-1]} read (all NaN: lead off "
                    "or flagged invalid); expected a signal. invalid_lead='zero' keeps such leads as zeros",
                    path=path,
                    sample_id=sample_id,
                )
            values = signal[i, finite[i]]
            if values.size > 1 and values.min() == values.max():
                raise ReadError(
                    f"lead {name!r} is flat (constant {float(values[0]):g} over {values.size} samples); "
                    "expected a signal. invalid_lead='zero' keeps flat leads",
                    path=path,
                    sample_id=sample_id,
                )
    if not all_finite:
        # wfdb writes NaN for samples the recorder flagged invalid; encoders cannot take them
        signal = np.nan_to_num(signal, nan=0.0, posinf=0.0, neginf=0.0)
    return signal


LEAD_ALIASES: dict[str, str] = {"VX": "X", "VY": "Y", "VZ": "Z"}
"""Lead names that are the same lead (upper case): PTB spells the Frank leads vx, vy, vz.
Modified leads (MIT-BIH's MLII) are NOT aliased to the standard ones; pass
``lead_aliases={"MLII": "II"}`` to a reader when that is what you mean."""


def _lead_key(name: str, aliases: Mapping[str, str]) -> str:
    key = re.sub(r"\s+", "", str(name)).upper()
    return aliases.get(key, key)


def match_leads(
    requested: Sequence[str], available: Sequence[str], aliases: Mapping[str, str] | None = None
) -> list[str] | None:
    """The record's name of each requested lead, matched case-insensitively ('II' = 'ii') and
    through `LEAD_ALIASES` plus ``aliases`` (extra name -> lead, e.g. ``{"MLII": "II"}``).

    Returns:
        The header's names in the requested order, or None when a lead is not in the record.
    """
    table = {**LEAD_ALIASES, **{_lead_key(k, {}): _lead_key(v, {}) for k, v in (aliases or {}).items()}}
    by_key: dict[str, str] = {}
    for name in available:
        by_key.setdefault(_lead_key(name, table), name)
    found = [by_key.get(_lead_key(r, table)) for r in requested]
    return None if any(f is None for f in found) else [str(f) for f in found]


def filter_signal(
    signal: np.ndarray, fs: float, bandpass: tuple[float, float] | None = None, notch: float | None = None
) -> np.ndarray:
    """Zero-phase filtering of (leads, n) signals with ``scipy.signal``.

    Args:
        signal: (leads, n) float32.
        fs: sampling rate in Hz.
        bandpass: (low, high) cut-offs in Hz of a 4th-order Butterworth band-pass (e.g.
            (0.5, 40): baseline wander below 0.5 Hz and muscle noise above 40 Hz removed);
            ``high`` at or above Nyquist makes it a high-pass.
        notch: powerline frequency in Hz (50 or 60) removed by an IIR notch (Q = 30).

    Returns:
        (leads, n) float32, filtered forwards and backwards (no phase shift).
    """
    if bandpass is None and notch is None:
        return signal
    from scipy import signal as sig  # scikit-learn depends on scipy: always installed

    out = signal.astype(np.float64)
    nyquist = fs / 2
    if bandpass is not None:
        low, high = (float(v) for v in bandpass)
        if not 0 < low < nyquist or high <= low:
            raise ModfuseError(f"bandpass: expected 0 < low < high with low < {nyquist:g} Hz, found {bandpass}")
        sos = (
            sig.butter(4, [low, high], btype="bandpass", fs=fs, output="sos")
            if high < nyquist
            else sig.butter(4, low, btype="highpass", fs=fs, output="sos")
        )
        out = sig.sosfiltfilt(sos, out, axis=-1)
    if notch is not None:
        if not 0 < notch < nyquist:
            raise ModfuseError(f"notch: expected a frequency below Nyquist ({nyquist:g} Hz), found {notch}")
        b, a = sig.iirnotch(notch, 30.0, fs=fs)
        out = sig.filtfilt(b, a, out, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=256)
def _cached_header(name: str, mtime_ns: int, size: int) -> Any:
    """``wfdb.rdheader(name)``'s result (`parse_header`: the same fields, 0.2 ms instead of
    about 10-30 ms for a 12-lead header), parsed once per header version (mtime and size are
    part of the key): a windowed source reads the same header for every window. The object is
    shared: readers copy it before changing anything (see `_read_record`)."""
    del mtime_ns, size  # only the cache key
    _wfdb()  # the import error that names the missing extra
    return parse_header(name)


def read_header(path: Path, sample_id: Hashable) -> Any:
    """The record's parsed header (``wfdb.Record``, no signal), from the header cache.

    Raises:
        ReadError: the ``.hea`` file is missing or cannot be parsed.
    """
    name = record_base(path)
    try:
        stamp = _stamp(Path(name + ".hea"))
    except FileNotFoundError:
        raise ReadError("WFDB header file is missing", path=name + ".hea", sample_id=sample_id) from None
    try:
        return _cached_header(name, *stamp)
    except (OSError, ValueError, IndexError) as exc:
        raise ReadError(
            f"cannot read WFDB header: {type(exc).__name__}: {exc}", path=name + ".hea", sample_id=sample_id
        ) from exc


_SEGMENT_ARGS = {"file_name", "dir_name", "pn_dir", "fmt", "n_sig", "sig_len", "byte_offset", "samps_per_frame",
                 "skew", "init_value", "sampfrom", "sampto", "channels", "ignore_skew", "no_file", "sig_data",
                 "return_res"}  # fmt: skip


@functools.cache
def _segment_reader() -> Any:
    """wfdb's own single-segment signal reader (the function ``rdrecord`` calls after parsing
    the header), or None when this wfdb version lacks it or its arguments changed: readers then
    fall back to ``rdrecord``, which parses the header a second time."""
    import inspect

    wfdb = _wfdb()
    reader = getattr(getattr(getattr(wfdb, "io", None), "_signal", None), "_rd_segment", None)
    if reader is None or not hasattr(wfdb.Record, "_arrange_fields"):
        return None
    return reader if _SEGMENT_ARGS <= set(inspect.signature(reader).parameters) else None


def _read_record(head: Any, name: str, start: int, stop: int | None, channels: list[int]) -> Any:
    """Samples ``[start, stop)`` of ``channels`` as a ``wfdb.Record`` with ``p_signal``
    (samples, channels) float64, decoded from the header already parsed.

    This runs ``wfdb.rdrecord``'s single-segment steps (input checks, ``_rd_segment``, field
    arrangement, ``dac``) on a copy of ``head`` instead of calling ``rdrecord``, which would
    parse the header again: the header is read once per record (once per header version for
    windows). Multi-segment records, headers without a signal length and wfdb versions without
    these steps go through ``rdrecord``.
    """
    wfdb, reader = _wfdb(), _segment_reader()
    if reader is None or not isinstance(head, wfdb.Record) or head.sig_len is None or not head.n_sig:
        return wfdb.rdrecord(name, sampfrom=start, sampto=stop, channels=channels)
    rec = copy.copy(head)  # the cached header stays as parsed: the steps below reassign its fields
    stop = rec.sig_len if stop is None else stop
    rec.check_read_inputs(start, stop, channels, True, True, 64)
    rec.e_d_signal = reader(
        file_name=rec.file_name, dir_name=os.path.dirname(os.path.abspath(name)), pn_dir=None, fmt=rec.fmt,
        n_sig=rec.n_sig, sig_len=rec.sig_len, byte_offset=rec.byte_offset, samps_per_frame=rec.samps_per_frame,
        skew=rec.skew, init_value=rec.init_value, sampfrom=start, sampto=stop, channels=channels,
        ignore_skew=False, no_file=False, sig_data=None, return_res=64,
    )  # fmt: skip
    rec._arrange_fields(channels=channels, sampfrom=start, smooth_frames=True)
    rec.dac(expanded=False, return_res=64, inplace=True)
    return rec


def read_wfdb(
    path: Path,
    sample_id: Hashable,
    leads: Sequence[str] | None = None,
    start: int = 0,
    stop: int | None = None,
    invalid_lead: InvalidLead = "error",
    lead_aliases: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, float]:
    """Read samples ``[start, stop)`` of a record: (leads, n) float32 physical units, and fs.

    Lead names are matched with `match_leads()` (case-insensitive, with aliases). The header
    is parsed once (`read_header`, cached) and the signal decoded from it by wfdb.

    Raises:
        ReadError: header or signal file missing, unreadable, shorter or longer than its header
            declares, a requested lead absent, or (``invalid_lead="error"``) a lead without
            signal (see `InvalidLead`).
    """
    name = record_base(path)
    head = read_header(path, sample_id)
    check_signal_files(head, name, sample_id)
    names = list(head.sig_name or [])
    channels = list(range(len(names)))
    if leads:
        wanted = match_leads(leads, names, lead_aliases)
        if wanted is None:
            raise ReadError(f"expected leads {list(leads)}, found {head.sig_name}", path=name + ".hea",
                            sample_id=sample_id)  # fmt: skip
        channels = [names.index(w) for w in wanted]
    try:
        rec = _read_record(head, name, start, stop, channels)
    except FileNotFoundError as exc:
        raise ReadError(
            f"signal file {Path(exc.filename or '?').name} listed in the header is missing",
            path=exc.filename or name,
            sample_id=sample_id,
        ) from exc
    except (OSError, ValueError, IndexError) as exc:
        raise ReadError(
            f"cannot read WFDB record: {type(exc).__name__}: {exc}", path=name, sample_id=sample_id
        ) from exc
    # one cast + transpose copy: (samples, leads) float64 -> (leads, samples) float32
    signal = np.ascontiguousarray(rec.p_signal.T, dtype=np.float32)
    return check_leads(signal, list(rec.sig_name or []), invalid_lead, name, sample_id), float(rec.fs)


class _WfdbBase(FileSource):
    """Record lookup shared by the WFDB sources (ids from ``*.hea`` names)."""

    default_pattern: ClassVar[str] = "*.hea"
    library_errors: tuple[type[BaseException], ...] = (OSError, ValueError, IndexError)

    def __init__(
        self,
        records: PathsLike,
        leads: Sequence[str] | None,
        fs: float | None,
        pattern: str | None,
        collate: CollateMode,
        invalid_lead: InvalidLead = "error",
    ) -> None:
        if invalid_lead not in ("error", "zero"):
            raise ModfuseError(f"invalid_lead must be 'error' or 'zero', found {invalid_lead!r}")
        super().__init__(records, pattern=pattern, collate=collate)
        self.leads = list(leads) if leads is not None else None
        self.fs = fs
        self.invalid_lead: InvalidLead = invalid_lead

    def header(self, sample_id: Hashable) -> Any:
        """The record's ``wfdb.Record`` header (no signal read): a copy of the cached parse,
        so changing it changes no later read."""
        return copy.deepcopy(self._header(sample_id))

    def _header(self, sample_id: Hashable) -> Any:
        """The cached header itself (read-only: shared with every later read of the record)."""
        path = self.path_of(sample_id)
        if path is None:
            raise ModfuseError(f"sample {sample_id!r} has no record")
        return read_header(path, sample_id)


@register("wfdb")
class WfdbSource(_WfdbBase):
    """One signal per WFDB record.

    Args:
        records: a folder (every ``*.hea``; id = record name), a mapping ``{id: record path}``
            or ``(id, record path)`` pairs (see `PathsLike`).
        leads: lead names in the output order (default: all leads in file order). A record
            lacking one raises `ReadError` listing the leads it has.
        fs: target sampling rate in Hz (default: the record's own).
        start: start time in seconds. duration: length in seconds (default: to the end).
        pattern: glob for folders. collate: default ``"auto"`` (records of different lengths
            are padded with a mask).
        invalid_lead: a lead with no signal in the span (all NaN or flat): ``"error"``
            (default, a `ReadError`; the dataset's ``on_error="missing"`` marks the
            record missing and reports it) or ``"zero"`` (kept as zeros); see
            `InvalidLead`. A signal file shorter or longer than its header declares is
            always a `ReadError`.
        lead_aliases: extra lead synonyms (name -> lead), e.g. ``{"MLII": "II"}``; lead names
            always match case-insensitively (``"II"`` finds PTB's ``"ii"``), see `match_leads()`.
        bandpass: optional (low, high) Hz Butterworth band-pass, e.g. (0.5, 40) against baseline
            wander and muscle noise; notch: optional powerline frequency (50 or 60 Hz) to remove.
            Both zero-phase (`filter_signal()`, scipy.signal), applied at the record's own rate
            before resampling; filter over whole records or long spans (edges ring).

    Returns from ``load``:
        Tensor (leads, L) float32 in physical units (e.g. mV).

    Example:
        >>> src = WfdbSource("ecg-wfdb/", leads=["MLII", "V5"], fs=250, duration=10.0)
    """

    def __init__(
        self,
        records: PathsLike,
        *,
        leads: Sequence[str] | None = None,
        fs: float | None = None,
        start: float = 0.0,
        duration: float | None = None,
        pattern: str | None = None,
        collate: CollateMode = "auto",
        invalid_lead: InvalidLead = "error",
        lead_aliases: Mapping[str, str] | None = None,
        bandpass: tuple[float, float] | None = None,
        notch: float | None = None,
    ) -> None:
        super().__init__(records, leads, fs, pattern, collate, invalid_lead)
        self.start, self.duration = start, duration
        self.lead_aliases, self.bandpass, self.notch = dict(lead_aliases or {}), bandpass, notch

    def read(self, path: Path, sample_id: Hashable) -> torch.Tensor:
        start, stop = 0, None
        if self.start or self.duration is not None:
            # the span is in seconds, the file in samples: the rate comes from the header, which
            # read_wfdb below then finds in the header cache (parsed once)
            native = float(read_header(path, sample_id).fs)
            start = round(self.start * native)
            stop = None if self.duration is None else start + round(self.duration * native)
        signal, native = read_wfdb(path, sample_id, self.leads, start, stop, self.invalid_lead, self.lead_aliases)
        signal = filter_signal(signal, native, self.bandpass, self.notch)
        return torch.from_numpy(resample(signal, native, self.fs))


class _SegmentSource(_WfdbBase):
    """Many samples per record: ids are ``"record:k"``, `index` maps them to spans."""

    def __init__(
        self,
        records: PathsLike,
        leads: Sequence[str] | None,
        fs: float | None,
        pattern: str | None,
        collate: CollateMode,
        invalid_lead: InvalidLead = "error",
    ) -> None:
        super().__init__(records, leads, fs, pattern, collate, invalid_lead)
        rows = [row for rid in list(self.paths) if self.paths[rid] is not None for row in self._segments(rid)]
        self.index = pd.DataFrame(rows, columns=self._columns).set_index("id", drop=False)
        self.record_ids = self.ids  # ids of the records; self.ids become the segment ids
        self.ids = self.index["id"].tolist()
        # (record, start, stop) per segment: a dict lookup per sample, not a pandas row lookup
        spans = zip(self.index["record"].tolist(), self.index["start"].tolist(), self.index["stop"].tolist())
        self._spans: dict[Hashable, tuple[Hashable, int, int]] = dict(zip(self.ids, spans))

    _columns: ClassVar[list[str]] = ["id", "record", "start", "stop", "fs"]

    @abstractmethod
    def _segments(self, record_id: Hashable) -> list[tuple[Any, ...]]:
        """(id, record, start, stop, fs) rows of the samples cut from one record."""

    @property
    def groups(self) -> list[Hashable]:
        """The record of each segment, for splits grouped by record (patient)."""
        return self.index["record"].tolist()

    def has(self, sample_id: Hashable) -> bool:
        """Whether ``sample_id`` is a segment of this source (segments exist only for records
        with a file, so no file is read); `path_of` takes record ids, not segment ids."""
        return sample_id in self._spans

    def load(self, sample_id: Hashable) -> torch.Tensor | None:
        try:
            record, start, stop = self._spans[sample_id]
        except KeyError:
            raise ModfuseError(f"unknown segment id {sample_id!r}; this source has {len(self.ids)}") from None
        path = self.paths[record]
        assert path is not None  # segments are only cut from records that have a file
        try:
            signal, native = read_wfdb(path, sample_id, self.leads, int(start), int(stop), self.invalid_lead)
        except ReadError as exc:
            raise ReadError(exc.message, path=exc.path or path, sample_id=sample_id) from exc
        length = round((stop - start) * (self.fs or native) / native)
        return torch.from_numpy(_fit_length(resample(signal, native, self.fs), length))


@register("wfdb-windows")
class WfdbWindowSource(_SegmentSource):
    """Fixed-length windows over every record, one sample per window.

    Args:
        records: as in `WfdbSource`.
        window: window length in seconds. stride: step in seconds (default ``window``).
        leads, fs, pattern, collate, invalid_lead: as in `WfdbSource` (the lead check
            applies to each window).

    Attributes:
        index: DataFrame (id, record, start, stop, fs): sample spans in the record's own rate.
        groups: the record of each window (for grouped splits).

    Returns from ``load``:
        Tensor (leads, round(window * fs)) float32.
    """

    def __init__(
        self,
        records: PathsLike,
        *,
        window: float,
        stride: float | None = None,
        leads: Sequence[str] | None = None,
        fs: float | None = None,
        pattern: str | None = None,
        collate: CollateMode = "stack",
        invalid_lead: InvalidLead = "error",
    ) -> None:
        if window <= 0 or (stride is not None and stride <= 0):
            raise ModfuseError(f"window and stride must be positive seconds, found {window} and {stride}")
        self.window, self.stride = window, stride or window
        super().__init__(records, leads, fs, pattern, collate, invalid_lead)

    def _segments(self, record_id: Hashable) -> list[tuple[Any, ...]]:
        head = self._header(record_id)
        size, step = round(self.window * head.fs), round(self.stride * head.fs)
        starts = range(0, head.sig_len - size + 1, step)
        return [(f"{record_id}:{k}", record_id, s, s + size, head.fs) for k, s in enumerate(starts)]


@register("wfdb-beats")
class WfdbBeatSource(_SegmentSource):
    """Beat-centred segments from an annotation file, one sample per annotated beat.

    Beats whose segment would run past either end of the record are left out (counted in
    `edge_beats`), as are annotations that are not beats (see `BEAT_SYMBOLS`).

    Args:
        records: as in `WfdbSource`.
        extension: annotation file suffix (``"atr"`` reads ``100.atr``).
        before: seconds before the beat. after: seconds after it.
        symbols: annotation symbols kept as beats.
        leads, fs, pattern, collate, invalid_lead: as in `WfdbSource` (the lead check
            applies to each beat's segment).

    Attributes:
        index: DataFrame (id, record, start, stop, fs, beat, symbol); ``beat`` is the annotated
            sample. Use ``index["symbol"]`` as the label (e.g. N / V / A).
        groups: the record of each beat.

    Returns from ``load``:
        Tensor (leads, round((before + after) * fs)) float32.
    """

    _columns: ClassVar[list[str]] = ["id", "record", "start", "stop", "fs", "beat", "symbol"]

    def __init__(
        self,
        records: PathsLike,
        *,
        extension: str = "atr",
        before: float = 0.25,
        after: float = 0.45,
        symbols: str | Sequence[str] = BEAT_SYMBOLS,
        leads: Sequence[str] | None = None,
        fs: float | None = None,
        pattern: str | None = None,
        collate: CollateMode = "stack",
        invalid_lead: InvalidLead = "error",
    ) -> None:
        self.extension, self.before, self.after, self.symbols = extension, before, after, set(symbols)
        self.edge_beats: dict[Hashable, int] = {}
        super().__init__(records, leads, fs, pattern, collate, invalid_lead)

    def _segments(self, record_id: Hashable) -> list[tuple[Any, ...]]:
        head = self._header(record_id)
        path = self.paths[record_id]
        assert path is not None  # segments are only cut from records that have a file
        name = record_base(path)
        try:
            ann = _wfdb().rdann(name, self.extension)
        except (OSError, ValueError) as exc:
            raise ReadError(
                f"cannot read annotation file: {exc}", path=f"{name}.{self.extension}", sample_id=record_id
            ) from exc
        b, a = round(self.before * head.fs), round(self.after * head.fs)
        rows, edge = [], 0
        for beat, symbol in zip(ann.sample, ann.symbol):
            if symbol not in self.symbols:
                continue
            if beat - b < 0 or beat + a > head.sig_len:
                edge += 1
                continue
            rows.append(
                (f"{record_id}:{int(beat)}", record_id, int(beat) - b, int(beat) + a, head.fs, int(beat), symbol)
            )
        self.edge_beats[record_id] = edge
        return rows


# ---------------------------------------------------------------------- header comments
_MIT_LINE = re.compile(r"^\s*(\d{1,3})\s+([MFmf])\b")
_SEX = {"m": "M", "male": "M", "f": "F", "female": "F"}
_DIAGNOSIS_KEYS = ("diagnos", "reason for admission", "dx")


def parse_header_comments(comments: Sequence[str]) -> dict[str, Any]:
    """Age, sex, diagnoses and every ``key: value`` field from WFDB header comments.

    Understands ``key: value`` lines (PTB, PhysioNet challenges: ``age: 81``, ``sex: female``,
    ``Dx: ...``) and the MIT-BIH first line ``<age> <sex> ...``; other lines are ``notes``
    (e.g. ``Asystole``, ``False alarm`` in the 2015 challenge).

    Returns:
        ``{"age": float or NaN, "sex": "F" / "M" / None, "diagnoses": str or None,
        "notes": str or None, <lower-cased key>: value, ...}``.
    """
    fields: dict[str, Any] = {}
    notes, diagnoses = [], []
    age, sex = np.nan, None
    for line in comments:
        text = line.strip()
        key, sep, value = text.partition(":")
        key, value = key.strip().lower(), value.strip()
        mit = _MIT_LINE.match(text)
        if sep and key and not key[0].isdigit():
            fields[key] = value
            if any(k in key for k in _DIAGNOSIS_KEYS) and value.lower() not in ("", "n/a", "no"):
                diagnoses.append(value)
        elif mit and np.isnan(age):
            age, sex = float(mit.group(1)), mit.group(2).upper()
        elif text:
            notes.append(text)
    if "age" in fields:
        age = pd.to_numeric(fields["age"], errors="coerce")
    if "sex" in fields:
        sex = _SEX.get(fields["sex"].lower())
    return {
        "age": float(age),
        "sex": sex,
        "diagnoses": "; ".join(diagnoses) or None,
        "notes": "; ".join(notes) or None,
        **{k: v for k, v in fields.items() if k not in ("age", "sex")},
    }


@register("wfdb-header")
class WfdbHeaderSource(TabularSource):
    """Header comments of WFDB records as a tabular source (one row per record).

    Args:
        records: as in `WfdbSource`.
        schema: columns to use as features (default: numeric ``age``, categorical ``sex``;
            any parsed field can be named, e.g. ``smoker``).
        preprocessor: training statistics (see `TabularSource`).
        pattern: glob for folders.

    Attributes:
        frame: every parsed field per record (``record``, ``age``, ``sex``, ``diagnoses``,
            ``notes`` and each ``key: value`` comment), e.g. to build targets from diagnoses.
    """

    def __init__(
        self,
        records: PathsLike,
        schema: TabularSchema | None = None,
        preprocessor: TabularPreprocessor | str | None = None,
        *,
        pattern: str = "*.hea",
        collate: CollateMode = "stack",
    ) -> None:
        paths = resolve_paths(records, pattern=pattern)
        rows, bad = [], {}
        for rid, path in paths.items():
            if path is None:
                rows.append({"record": rid})
                continue
            try:
                comments = read_header(path, rid).comments
            except ReadError as exc:  # names the header file and the problem
                bad[rid] = exc
                comments = []
            rows.append({"record": rid, **parse_header_comments(comments)})
        frame = pd.DataFrame(rows)
        for col in ("age", "sex"):
            if col not in frame:
                frame[col] = np.nan
        schema = schema or TabularSchema(numeric=["age"], categorical=["sex"], id="record")
        super().__init__(frame, schema, preprocessor, collate=collate)
        self._header_errors = bad

    def load(self, sample_id: Hashable) -> torch.Tensor | None:
        if sample_id in self._header_errors:
            raise self._header_errors[sample_id]
        return super().load(sample_id)
