"""WFDB readers on real PhysioNet records: leads, rates, beats, header comments, broken record."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("wfdb")

from modfuse.data import MultiModalDataset
from modfuse.data.readers import WfdbHeaderSource, WfdbSource, build
from modfuse.data.readers.physio import WfdbBeatSource, WfdbWindowSource, parse_header_comments
from modfuse.errors import ReadError


@pytest.fixture
def ecg(shared_data):
    return shared_data / "ecg-wfdb"


def test_record_100_two_leads_at_360_hz_and_reordering(ecg):
    src = WfdbSource({"100": ecg / "100"}, duration=5.0)
    x = src.load("100")
    assert x.shape == (2, 5 * 360) and x.dtype == torch.float32
    swapped = WfdbSource([("100", ecg / "100.hea")], leads=["V5", "MLII"], duration=5.0).load("100")
    assert torch.equal(swapped, x.flip(0))
    assert 0.1 < x[0].abs().max() < 5  # physical units (mV), not ADC counts


def test_resampling_keeps_duration_and_waveform(ecg):
    native = WfdbSource({"100": ecg / "100"}, leads=["MLII"], duration=4.0).load("100")
    down = WfdbSource({"100": ecg / "100"}, leads=["MLII"], duration=4.0, fs=250).load("100")
    assert down.shape == (1, 1000)
    # the resampled signal follows the original at matching times (away from the edges)
    t = torch.arange(100, 900)
    assert torch.corrcoef(torch.stack([down[0, t], native[0, (t * 360 / 250).round().long()]]))[0, 1] > 0.98


def test_beat_windows_from_annotations(ecg):
    src = WfdbBeatSource({"100": ecg / "100"}, before=0.2, after=0.4)
    assert len(src) > 2200 and set(src.index["symbol"]) <= set("NAV")
    assert src.index["symbol"].value_counts()["N"] > 2000
    beat = src.load(src.ids[10])
    assert beat.shape == (2, round(0.6 * 360))
    # the R peak (the annotated sample) is the largest MLII deflection near the centre
    peak = int(beat[0, 60:90].abs().argmax()) + 60
    assert abs(peak - round(0.2 * 360)) <= 8
    assert src.groups[0] == "100"


def test_fixed_windows(ecg):
    src = WfdbWindowSource({"100": ecg / "100"}, window=60.0, fs=100, leads=["MLII"])
    assert len(src) == 30 and src.ids[1] == "100:1"
    assert src.load("100:29").shape == (1, 6000)


def test_header_comments_to_table(ecg):
    src = WfdbHeaderSource({"s0010_re": ecg / "s0010_re", "100": ecg / "100", "a103l": ecg / "a103l"})
    frame = src.frame.set_index("record")
    assert frame.loc["s0010_re", "age"] == 81 and frame.loc["s0010_re", "sex"] == "F"
    assert "Myocardial infarction" in frame.loc["s0010_re", "diagnoses"]
    assert frame.loc["100", "age"] == 69 and frame.loc["100", "sex"] == "M"
    assert frame.loc["a103l", "notes"] == "Asystole; False alarm" and math.isnan(frame.loc["a103l", "age"])
    assert src.load("s0010_re").shape == (2,)


def test_parse_header_comments_unknown_fields():
    parsed = parse_header_comments(["Age: 54", "Sex: Male", "Dx: 164889003,59118001", "note"])
    assert parsed["age"] == 54 and parsed["sex"] == "M" and parsed["dx"] == "164889003,59118001"
    assert parsed["diagnoses"] == "164889003,59118001" and parsed["notes"] == "note"


def test_record_1003_without_signal_file_raise_or_missing(ecg):
    records = {"100": ecg / "100", "1003": ecg / "1003"}
    src = build("wfdb", records, duration=1.0)
    with pytest.raises(ReadError, match=r"signal file 1003\.dat listed in the header is missing") as info:
        MultiModalDataset({"ecg": src})[1]
    assert info.value.sample_id == "1003" and info.value.modality == "ecg"
    assert str(info.value.path).endswith("1003.dat")

    ds = MultiModalDataset({"ecg": src}, on_error="missing")
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch.present["ecg"].tolist() == [True, False]
    report = ds.read_error_report()
    assert report[["id", "modality"]].values.tolist() == [["1003", "ecg"]]
    assert "1003.dat" in report["error"].iloc[0]


def test_absent_lead_lists_the_leads_found(ecg):
    src = WfdbSource({"s": ecg / "s0010_re"}, leads=["MLII"], duration=0.5)
    with pytest.raises(ReadError, match=r"expected leads \['MLII'\], found \['i', 'ii'"):
        src.load("s")


def test_folder_ids_and_corrupt_header(ecg, tmp_path):
    assert set(WfdbSource(ecg).ids) == {"03700181", "100", "1003", "a103l", "p10143", "s0010_re"}
    (tmp_path / "bad.hea").write_text("bad 2 abc\nnonsense\n")
    with pytest.raises(ReadError, match="bad") as info:
        WfdbSource(tmp_path).load("bad")
    assert info.value.sample_id == "bad"


def test_lead_names_match_case_insensitively_with_aliases(ecg):
    from modfuse.data.readers.physio import match_leads

    ptb = WfdbSource({"s": ecg / "s0010_re"}, leads=["II", "aVF", "V1", "X"], duration=0.5)  # PTB spells ii, avf, vx
    signal = ptb.load("s")
    lower = WfdbSource({"s": ecg / "s0010_re"}, leads=["ii", "avf", "v1", "vx"], duration=0.5).load("s")
    assert signal.shape == (4, 500) and torch.equal(signal, lower)
    assert match_leads(["MLII"], ["MLII", "V5"]) == ["MLII"]
    assert match_leads(["II"], ["MLII", "V5"]) is None  # a modified lead is not lead II unless asked
    mit = WfdbSource({"r": ecg / "100"}, leads=["ii", "v5"], lead_aliases={"MLII": "II"}, duration=1.0)
    want = WfdbSource({"r": ecg / "100"}, leads=["MLII", "V5"], duration=1.0).load("r")
    assert torch.equal(mit.load("r"), want)


def test_optional_bandpass_and_notch_filtering(ecg):
    from scipy.signal import welch

    raw = WfdbSource({"r": ecg / "100"}, leads=["MLII"], duration=60.0).load("r")[0].numpy()
    fs = 360.0
    t = np.arange(raw.size) / fs
    noisy = raw + 0.3 * np.sin(2 * np.pi * 60 * t) + 1.0 * np.sin(2 * np.pi * 0.1 * t)  # powerline + wander
    from modfuse.data.readers.physio import filter_signal

    clean = filter_signal(noisy[None].astype(np.float32), fs, bandpass=(0.5, 40.0), notch=60.0)[0]
    freqs, power = welch(clean, fs=fs, nperseg=4096)
    _, power_raw = welch(noisy, fs=fs, nperseg=4096)
    at = lambda f: int(np.argmin(np.abs(freqs - f)))  # noqa: E731
    assert power[at(60)] < 1e-3 * power_raw[at(60)]  # powerline removed
    assert power[at(0.1)] < 1e-2 * power_raw[at(0.1)]  # baseline wander removed
    assert np.corrcoef(clean, raw - raw.mean())[0, 1] > 0.9  # the QRS complexes stay
    src = WfdbSource({"r": ecg / "100"}, leads=["MLII"], duration=10.0, bandpass=(0.5, 40.0), notch=60.0)
    filtered = src.load("r")[0].numpy()
    assert filtered.shape == (3600,) and abs(float(filtered.mean())) < 0.05


def test_a_rewritten_header_is_read_again(ecg, tmp_path):
    import os
    import shutil

    for suffix in (".hea", ".dat"):
        shutil.copy(ecg / f"100{suffix}", tmp_path / f"100{suffix}")
    src = WfdbSource({"r": tmp_path / "100"}, leads=["MLII"], duration=1.0)
    assert src.load("r").shape == (1, 360)
    header = tmp_path / "100.hea"
    before = header.stat().st_mtime_ns
    header.write_text(header.read_text().replace("MLII", "ML2X"))  # same size, another lead name
    os.utime(header, ns=(before + 10**9, before + 10**9))
    with pytest.raises(ReadError, match=r"expected leads \['MLII'\], found \['ML2X', 'V5'\]"):
        src.load("r")


RECORDS = ("100", "s0010_re", "a103l", "03700181", "p10143")  # formats 212, 16, 16 (.mat), 212, 61


@pytest.fixture
def header_parses(monkeypatch):
    """Counts wfdb header parses by record name, wherever wfdb or modfuse calls the parser."""
    import wfdb
    import wfdb.io.record

    from modfuse.data.readers import physio

    physio._cached_header.cache_clear()
    calls: list[str] = []

    def counting(parse):
        def count(name, *args, **kwargs):
            calls.append(str(name).rsplit("/", 1)[-1])
            return parse(name, *args, **kwargs)

        return count

    monkeypatch.setattr(physio, "parse_header", counting(physio.parse_header))  # modfuse's parser
    monkeypatch.setattr(wfdb, "rdheader", counting(wfdb.io.record.rdheader))
    monkeypatch.setattr(wfdb.io.record, "rdheader", counting(wfdb.io.record.rdheader))  # the one rdrecord calls
    yield calls
    physio._cached_header.cache_clear()


def test_each_header_is_parsed_once_per_record(ecg, header_parses):
    whole = WfdbSource({r: ecg / r for r in RECORDS}, invalid_lead="zero")
    spans = WfdbSource({r: ecg / r for r in RECORDS}, start=1.0, duration=2.0, invalid_lead="zero")
    for r in RECORDS:
        assert whole.load(r).shape[-1] > 0
        assert spans.load(r).shape[-1] > 0  # the seconds -> samples step reads the same header
    assert sorted(header_parses) == sorted(RECORDS)  # 2-3 parses per record before this change
    windows = WfdbWindowSource({"100": ecg / "100"}, window=10.0)
    header_parses.clear()
    for sid in windows.ids[:20]:
        assert windows.load(sid).shape == (2, 3600)
    assert header_parses == []  # parsed once when the windows were cut, not once per window


def _fields(record):
    """A header's fields, comparable with ==: lists and arrays as tuples, with each value's type."""
    as_tuple = lambda v: tuple(v.tolist() if isinstance(v, np.ndarray) else v)  # noqa: E731
    return {
        k: (
            type(v),
            as_tuple(v) if isinstance(v, list | np.ndarray) else v,
            [type(x) for x in v] if isinstance(v, list) else None,
        )
        for k, v in vars(record).items()
    }


def test_header_parser_gives_every_field_of_wfdb_rdheader(ecg, tmp_path):
    import wfdb

    from modfuse.data.readers.wfdb_header import parse_header

    # the real headers: samples per frame (212x4), skew (212:4), byte offsets (16+24), baselines,
    # units, exponent gains, base time and date, descriptions with spaces, blank and comment lines
    names = [str(p.with_suffix("")) for p in sorted(ecg.glob("*.hea"))]
    edited = tmp_path / "edited"
    text = (ecg / "03700181.hea").read_text().replace("2963.77/mV", "0/mV").replace("12.84(-1605)", "12.84")
    edited.with_suffix(".hea").write_text(text.replace("12 0 -943", "12 7 -943"))  # gain 0; baseline from ADC zero
    for name in [*names, str(edited)]:
        fast, slow = parse_header(name), wfdb.rdheader(name)
        assert type(fast) is type(slow) and _fields(fast) == _fields(slow), name
    assert parse_header(str(edited)).adc_gain[0] == 200.0 and parse_header(str(edited)).baseline[1] == 7
    # a multi-segment header is wfdb's own parse
    (tmp_path / "multi.hea").write_text("multi/2 2 360 1000\n100 500\n100 500\n")
    assert type(parse_header(str(tmp_path / "multi"))).__name__ == "MultiRecord"
    (tmp_path / "bad.hea").write_text("bad 2 360 1000\n100.dat zz\n")
    with pytest.raises(ValueError, match="signal line"):
        parse_header(str(tmp_path / "bad"))


def test_signals_equal_wfdb_rdrecord_for_every_format(ecg, monkeypatch):
    import wfdb

    from modfuse.data.readers import physio
    from modfuse.data.readers.physio import read_wfdb

    def expected(r, start, stop, names=None):
        rec = wfdb.rdrecord(str(ecg / r), sampfrom=start, sampto=stop, channel_names=names)
        return np.nan_to_num(np.ascontiguousarray(rec.p_signal.T, dtype=np.float32)), rec.fs

    for r in RECORDS:
        names = wfdb.rdheader(str(ecg / r)).sig_name
        for start, stop, leads in ((0, None, None), (123, 2123, None), (500, 1500, names[::-1][:2])):
            signal, fs = read_wfdb(ecg / r, r, leads, start, stop, invalid_lead="zero")
            want, want_fs = expected(r, start, stop, leads)
            assert signal.dtype == np.float32 and np.array_equal(signal, want) and fs == want_fs, (r, start, leads)
    # the shared cached header is not changed by a read of a span and two leads
    head = WfdbSource({"s": ecg / "s0010_re"}).header("s")
    assert len(head.sig_name) == 15 and head.sig_len == 38400
    # without wfdb's segment reader (another wfdb version) the rdrecord fallback gives the same values
    monkeypatch.setattr(physio, "_segment_reader", lambda: None)
    signal, _ = read_wfdb(ecg / "100", "100", ["V5"], 10, 1010)
    assert np.array_equal(signal, expected("100", 10, 1010, ["V5"])[0])
