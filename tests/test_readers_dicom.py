"""DICOM readers on pydicom's bundled real files and on corrupted copies of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("monai")

from pydicom.data import get_testdata_file  # noqa: E402

from modfuse.data import MultiModalDataset  # noqa: E402
from modfuse.data.readers import DicomMetadataSource, DicomSource, DicomWaveformSource  # noqa: E402
from modfuse.data.readers.dicom import parse_age, window_bounds  # noqa: E402
from modfuse.errors import ReadError  # noqa: E402

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")
ECG = get_testdata_file("waveform_ecg.dcm")
RTDOSE = get_testdata_file("rtdose.dcm")  # 15 frames


def test_ct_rescale_gives_hounsfield_units():
    ds = pydicom.dcmread(CT)
    hu = DicomSource({"ct": CT}, window=None).load("ct")
    assert hu.shape == (1, 128, 128) and hu.dtype == torch.float32
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert float(ds.RescaleIntercept) == -1024
    assert torch.equal(hu[0], torch.from_numpy(expected))


def test_mr_file_window_and_fixed_window():
    ds = pydicom.dcmread(MR)
    raw = ds.pixel_array.astype(np.float32)
    lo, hi = window_bounds(float(ds.WindowCenter), float(ds.WindowWidth))
    x = DicomSource({"mr": MR}).load("mr")
    assert x.shape == (1, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert torch.allclose(x[0], torch.from_numpy(np.clip((raw - lo) / (hi - lo), 0, 1)), atol=1e-6)
    soft = DicomSource({"ct": CT}, window=(40, 400)).load("ct")
    assert soft.min() == 0 and soft.max() == 1  # CT_small spans more than the soft-tissue window


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(MR)
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = tmp_path / "mono1.dcm"
    ds.save_as(inverted)
    normal = DicomSource({"a": MR}).load("a")
    flipped = DicomSource({"a": inverted}).load("a")
    assert torch.allclose(flipped, 1 - normal)
    hu_normal = DicomSource({"a": MR}, window=None).load("a")
    hu_flipped = DicomSource({"a": inverted}, window=None).load("a")
    # mirrored within the storable range: signed 16-bit MR_small gives -32768 + 32767
    assert ds.PixelRepresentation == 1 and ds.BitsStored == 16
    assert torch.equal(hu_normal + hu_flipped, torch.full_like(hu_normal, -1.0))


def test_resize_respacing_and_multiframe():
    assert DicomSource({"ct": CT}, spatial_size=(32, 48)).load("ct").shape == (1, 32, 48)
    spacing = float(pydicom.dcmread(CT).PixelSpacing[0])
    assert DicomSource({"ct": CT}, pixdim=(1.0, 1.0)).load("ct").shape == (1, *[round(128 * spacing)] * 2)
    frames = DicomSource({"rt": RTDOSE}, window=None).load("rt")
    assert frames.shape == (1, 15, 10, 10)
    assert DicomSource({"rt": RTDOSE}, spatial_size=(15, 20, 20)).load("rt").shape == (1, 15, 20, 20)


def test_truncated_and_non_dicom_files_follow_the_policy(tmp_path):
    data = open(CT, "rb").read()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) // 2])
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("this is a text file")
    src = DicomSource({"ok": CT, "cut": truncated, "txt": not_dicom, "none": None})
    with pytest.raises(ReadError, match=r"truncated|pixel data") as info:
        src.load("cut")
    assert info.value.path == truncated and info.value.sample_id == "cut"
    with pytest.raises(ReadError, match="not a readable DICOM file"):
        src.load("txt")
    ds = MultiModalDataset({"xray": src}, on_error="missing")
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    assert batch.present["xray"].tolist() == [True, False, False, False]
    assert sorted(ds.read_error_report()["id"]) == ["cut", "txt"]  # "none" is simply missing


def test_metadata_fields_as_tabular_source():
    src = DicomMetadataSource({"ct": CT, "mr": MR, "ecg": ECG})
    frame = src.frame.set_index("id")
    assert frame.loc["ecg", "PatientAge"] == 42 and frame.loc["ecg", "PatientSex"] == "F"
    assert frame.loc["mr", "Modality"] == "MR" and pd.isna(frame.loc["ct", "PatientSex"])  # "O" = unknown
    assert src.feature_names == ["PatientAge", "PatientSex", "ViewPosition", "Modality"]
    assert src.load("mr").shape == (4,)
    assert parse_age("018M") == 1.5 and np.isnan(parse_age(""))


def test_waveform_ecg_as_signal():
    src = DicomWaveformSource({"e": ECG})
    x = src.load("e")
    ds = pydicom.dcmread(ECG)
    assert x.shape == (12, 10000) and torch.allclose(x, torch.from_numpy(ds.waveform_array(0).T.astype(np.float32)))
    assert src.lead_names[:3] == ["I", "II", "III"]
    picked = DicomWaveformSource({"e": ECG}, group="MEDIAN BEAT", leads=["V1", "Lead II"], fs=500).load("e")
    assert picked.shape == (2, 600)
    with pytest.raises(ReadError, match=r"absent: \['X9'\]"):
        DicomWaveformSource({"e": ECG}, leads=["X9"]).load("e")


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_window_equals_pydicom_apply_windowing(tmp_path, function):
    from pydicom.pixels import apply_rescale, apply_windowing

    from modfuse.data.readers.dicom import _window_output_range

    ds = pydicom.dcmread(CT)
    ds.WindowCenter, ds.WindowWidth = [40.0, 300.0], [400.0, 1500.0]  # multi-valued: the first is used
    ds.VOILUTFunction = function
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    ds = pydicom.dcmread(path)
    lo, hi = _window_output_range(ds)
    reference = (apply_windowing(apply_rescale(ds.pixel_array, ds), ds) - lo) / (hi - lo)
    x = DicomSource({"ct": path}).load("ct")
    assert x.shape == (1, 128, 128) and x.dtype == torch.float32
    clipped = float((x == 0).float().mean())  # a linear window clips CT_small; a sigmoid never reaches 0
    assert (0 < clipped < 1 if function != "SIGMOID" else clipped == 0) and float(x.max()) <= 1
    assert torch.allclose(x[0].double(), torch.from_numpy(reference), atol=1e-6)


def test_non_unit_rescale_slope_matches_pydicom(tmp_path):
    from pydicom.pixels import apply_rescale

    ds = pydicom.dcmread(CT)
    ds.RescaleSlope, ds.RescaleIntercept = 0.37, -1024.5
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    ds = pydicom.dcmread(path)
    hu = DicomSource({"ct": path}, window=None).load("ct")
    assert torch.equal(hu[0], torch.from_numpy(apply_rescale(ds.pixel_array, ds).astype(np.float32)))
