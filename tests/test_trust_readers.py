"""Issue 16, readers: no bad file is silently turned into data.

Each test is named after the case it covers; the broken inputs are copies of real files
(PhysioNet WFDB records, Sentinel-2 bands, pydicom's test files) damaged inside ``tmp_path``.
"""

from __future__ import annotations

import numpy as np
import pytest

from modfuse.data import MultiModalDataset
from modfuse.errors import ReadError


# ---------------------------------------------------------------------- WFDB
def _wfdb_copy(shared_data, tmp_path, name="rec", *, nan_lead=None, flat_lead=None, samples=720):
    """Two seconds of MIT-BIH record 100 (MLII, V5) rewritten in format 212 under tmp_path."""
    wfdb = pytest.importorskip("wfdb")
    rec = wfdb.rdrecord(str(shared_data / "ecg-wfdb" / "100"), sampto=samples)
    signal = rec.p_signal.copy()
    if nan_lead is not None:
        signal[:, nan_lead] = np.nan  # written as the format's invalid value: read back as NaN
    if flat_lead is not None:
        signal[:, flat_lead] = 0.0
    wfdb.wrsamp(
        name, fs=rec.fs, units=rec.units, sig_name=rec.sig_name, p_signal=signal, fmt=["212", "212"],
        adc_gain=rec.adc_gain, baseline=rec.baseline, write_dir=str(tmp_path),
    )  # fmt: skip
    return tmp_path / name


def test_wfdb_all_nan_lead_is_not_read_as_a_flat_line(shared_data, tmp_path):
    from modfuse.data.readers import WfdbSource

    bad = _wfdb_copy(shared_data, tmp_path, "leadoff", nan_lead=1)
    good = _wfdb_copy(shared_data, tmp_path, "good")
    with pytest.raises(ReadError, match=r"lead 'V5' has no valid sample.*all NaN") as info:
        WfdbSource({"leadoff": bad}).load("leadoff")
    assert "leadoff" in str(info.value)
    # on_error="missing": the record is missing for that sample and reported, the good one stays
    ds = MultiModalDataset({"ecg": WfdbSource({"leadoff": bad, "good": good})}, on_error="missing")
    assert ds[0]["inputs"]["ecg"] is None and ds[1]["inputs"]["ecg"].shape == (2, 720)
    report = ds.read_error_report()
    assert report[["id", "modality"]].values.tolist() == [["leadoff", "ecg"]]
    # the documented opt-out keeps the old zero-filled lead
    kept = WfdbSource({"leadoff": bad}, invalid_lead="zero").load("leadoff")
    assert kept.shape == (2, 720) and float(kept[1].abs().max()) == 0.0 and float(kept[0].abs().max()) > 0


def test_wfdb_flat_lead_is_an_error(shared_data, tmp_path):
    from modfuse.data.readers import WfdbSource, WfdbWindowSource

    flat = _wfdb_copy(shared_data, tmp_path, "flat", flat_lead=0)
    with pytest.raises(ReadError, match=r"lead 'MLII' is flat \(constant 0"):
        WfdbSource({"flat": flat}).load("flat")
    windows = WfdbWindowSource({"flat": flat}, window=1.0)
    with pytest.raises(ReadError, match="is flat"):
        windows.load(windows.ids[0])
    assert WfdbSource({"flat": flat}, leads=["V5"]).load("flat").shape == (1, 720)  # only the read leads count


def test_wfdb_truncated_dat_names_the_file_and_the_samples(shared_data, tmp_path):
    from modfuse.data.readers import WfdbSource

    rec = _wfdb_copy(shared_data, tmp_path, "cut")
    dat = tmp_path / "cut.dat"
    dat.write_bytes(dat.read_bytes()[:1000])  # 2160 bytes for 720 samples x 2 leads in format 212
    with pytest.raises(ReadError) as info:
        WfdbSource({"cut": rec}).load("cut")
    message = str(info.value)
    assert "truncated" in message and "expects 720 samples per lead (2160 bytes)" in message
    assert "holds 333 (1000 bytes)" in message and "cut.dat" in message and "broadcast" not in message
    ds = MultiModalDataset({"ecg": WfdbSource({"cut": rec})}, on_error="missing")
    assert ds[0]["inputs"]["ecg"] is None and "truncated" in ds.read_error_report()["error"].iloc[0]


def test_wfdb_header_claiming_fewer_samples_than_the_file_is_an_error(shared_data, tmp_path):
    from modfuse.data.readers import WfdbSource

    rec = _wfdb_copy(shared_data, tmp_path, "short")
    header = tmp_path / "short.hea"
    header.write_text(header.read_text().replace("short 2 360 720", "short 2 360 360", 1))
    with pytest.raises(ReadError, match=r"declares 360 samples per lead but the signal file holds 720"):
        WfdbSource({"short": rec}).load("short")


# ---------------------------------------------------------------------- read-error report
def _dicom_cohort(tmp_path, n=6):
    """n readable copies of pydicom's MR_small and one text file posing as DICOM ("bad")."""
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from modfuse.data.readers import DicomSource

    files = {f"s{i}": get_testdata_file("MR_small.dcm") for i in range(n)}
    bad = tmp_path / "bad.dcm"
    bad.write_text("not a DICOM file")
    files["bad"] = str(bad)
    return MultiModalDataset({"mr": DicomSource(files)}, targets=np.arange(n + 1) % 2, on_error="missing")


@pytest.mark.parametrize("workers", [0, 2])
def test_read_error_report_survives_workers_and_has_no_duplicates(tmp_path, workers):
    from modfuse.data import MultiModalDataModule

    ds = _dicom_cohort(tmp_path)
    dm = MultiModalDataModule(ds, splits={"train": list(range(len(ds)))}, batch_size=3, num_workers=workers)
    for _ in range(3):  # three epochs read the bad file three times
        batches = list(dm.train_dataloader())
        assert sum(len(b.errors) for b in batches) == 1
    report = ds.read_error_report()
    assert len(report) == 1 and report.loc[0, "id"] == "bad" and report.loc[0, "modality"] == "mr"
    assert "bad.dcm" in report.loc[0, "error"]
