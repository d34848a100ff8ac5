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


# ---------------------------------------------------------------------- rasters
@pytest.fixture
def s2(shared_data):
    pytest.importorskip("rasterio")
    return shared_data / "sentinel2-l1c"


def _band_copy(s2, path, band="B03", *, shift=None, fill=None, nodata=None):
    """A copy of one real band, optionally moved by ``shift`` metres east or filled with ``fill``."""
    import rasterio
    from rasterio.transform import Affine

    with rasterio.open(s2 / f"s2_{band}.tif") as f:
        profile, data = f.profile, f.read(1)
    if shift is not None:
        t = profile["transform"]
        profile["transform"] = Affine(t.a, t.b, t.c + shift, t.d, t.e, t.f)
    if fill is not None:
        data = np.full_like(data, fill)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as out:
        out.write(data, 1)
    return path


def test_raster_nodata_everywhere_is_missing_and_reported(s2, tmp_path):
    from modfuse.data.readers import MultiBandRasterSource

    empty = _band_copy(s2, tmp_path / "empty_B03.tif", fill=0, nodata=0)
    scenes = {"good": {"B02": s2 / "s2_B02.tif", "B03": s2 / "s2_B03.tif"}, "empty": {"B02": empty, "B03": empty}}
    src = MultiBandRasterSource(scenes, bands=["B02", "B03"], res=120.0)
    with pytest.raises(ReadError, match="expected valid pixels, found none in any band") as info:
        src.load("empty")
    assert str(info.value.path).endswith("empty_B03.tif")
    ds = MultiModalDataset({"s2": src}, on_error="missing")
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch.present["s2"].tolist() == [True, False]
    assert ds.read_error_report()[["id", "modality"]].values.tolist() == [["empty", "s2"]]


def test_raster_band_shifted_off_the_scene_is_an_error(s2, tmp_path):
    from modfuse.data.readers import MultiBandRasterSource

    shifted = _band_copy(s2, tmp_path / "s2_B03.tif", shift=20_000.0)  # 20 km east of the scene
    src = MultiBandRasterSource({"s": {"B02": s2 / "s2_B02.tif", "B03": shifted}}, bands=["B02", "B03"], res=120.0)
    with pytest.raises(ReadError, match=r"found none in band\(s\) \['B03'\]") as info:
        src.load("s")
    assert info.value.path == shifted and info.value.sample_id == "s"


def test_raster_chip_bounds_outside_the_file_is_an_error_and_partial_nodata_keeps_a_mask(s2, tmp_path):
    from modfuse.data.readers import RasterChipSource
    from modfuse.encoders import wrap

    chips = RasterChipSource(s2, size=64, stride=256, bands=["B02"], return_mask=True)
    outside = (chips.bounds[2] + 1000, chips.bounds[1], chips.bounds[2] + 1640, chips.bounds[1] + 640)
    chips.chip_bounds = lambda sid: outside if sid == "chip1" else type(chips).chip_bounds(chips, sid)
    with pytest.raises(ReadError, match="found none in any band inside bounds"):
        chips.load("chip1")
    # a chip half over the edge: present, and the batch carries which pixels are valid
    half = (chips.bounds[0] - 320, chips.bounds[3] - 640, chips.bounds[0] + 320, chips.bounds[3])
    chips.chip_bounds = lambda sid: half
    ds = MultiModalDataset({"s2": chips}, ids=["chip0", "chip2"], on_error="missing")
    batch = ds.collate_fn([ds[0], ds[1]])
    mask = batch.inputs["s2"]["mask"]
    assert batch.present["s2"].all() and mask.shape == (2, 64, 64)
    assert not mask[:, :, :32].any() and mask[:, :, 32:].all()
    seen = []
    encoder = wrap(_MaskedMean(seen), out_dim=1)
    encoder(batch.inputs["s2"])
    assert seen == [(2, 1, 64, 64)]


class _MaskedMean(__import__("torch").nn.Module):
    """Mean over the valid pixels only: the mask reaches a user encoder."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def forward(self, x):
        image, mask = x["image"], x["mask"][:, None].float()
        self.seen.append(tuple(image.shape))
        return ((image * mask).sum((1, 2, 3)) / mask.sum((1, 2, 3)))[:, None]


def test_raster_corrupted_tiff_error_names_the_file(s2, tmp_path):
    from modfuse.data.readers import MultiBandRasterSource

    data = (s2 / "s2_B03.tif").read_bytes()
    cut = tmp_path / "s2_B03.tif"
    cut.write_bytes(data[: len(data) // 2])
    src = MultiBandRasterSource({"s": {"B02": s2 / "s2_B02.tif", "B03": cut}}, bands=["B02", "B03"])
    with pytest.raises(ReadError, match="cannot read band B03") as info:
        src.load("s")
    assert info.value.path == cut and info.value.sample_id == "s"
    ds = MultiModalDataset({"s2": src}, on_error="missing")
    assert ds[0]["inputs"]["s2"] is None
    assert "modality 's2'" in ds.read_error_report()["error"].iloc[0] and str(cut) in ds.read_errors[0]["error"]


def test_raster_statistics_cache_is_atomic_and_keyed_by_nodata(s2, tmp_path, monkeypatch):
    import os

    from modfuse.data.readers.raster import band_statistics

    cache = tmp_path / "cache"
    files = [s2 / "s2_B02.tif"]
    real_replace = os.replace

    def interrupted(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError, match="disk full"):
        band_statistics(files, ["B02"], cache_root=cache)
    assert list((cache / "stats").iterdir()) == []  # neither a half-written file nor a temporary left behind
    monkeypatch.setattr(os, "replace", real_replace)
    stats = band_statistics(files, ["B02"], cache_root=cache)
    (written,) = (cache / "stats").glob("*.json")
    written.write_text(written.read_text()[:10])  # a file half-written by an older version
    assert band_statistics(files, ["B02"], cache_root=cache) == stats
    # another nodata value changes the statistics, so it must change the key
    from modfuse.data.readers.raster import stack_bands

    darkest = float(stack_bands(files, res=60.0, resampling="average").data.min())  # a value on the stats grid
    masked = band_statistics(files, ["B02"], cache_root=cache, nodata=darkest)
    assert masked["B02"]["mean"] > stats["B02"]["mean"] and len(list((cache / "stats").glob("*.json"))) == 2


# ---------------------------------------------------------------------- BatchNorm encoders
def _batch_norm_encoders():
    """(name, factory, input shape) of BatchNorm networks wrapped, and of the built-in image encoders."""
    from torch import nn

    from modfuse.encoders import wrap
    from modfuse.encoders.spectral import SmallCNN, SpectralEncoder
    from modfuse.encoders.xray import XRayEncoder

    def torchvision_resnet(norm):
        tv = pytest.importorskip("torchvision")
        net = tv.models.resnet18(num_classes=8)
        return wrap(net, out_dim=8, norm=norm)

    def monai_densenet(norm):
        nets = pytest.importorskip("monai.networks.nets")
        return wrap(nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=8), out_dim=8, norm=norm)

    def bn_mlp(norm):
        return wrap(nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU()), out_dim=16, norm=norm)

    def small_cnn_batch(norm):
        return wrap(nn.Sequential(SmallCNN(4, norm="batch"), nn.Flatten()), out_dim=128, norm=norm)

    return [
        ("torchvision-resnet18-freeze", lambda: torchvision_resnet("freeze"), (3, 32, 32)),
        ("torchvision-resnet18-group", lambda: torchvision_resnet("group"), (3, 32, 32)),
        ("monai-densenet121-freeze", lambda: monai_densenet("freeze"), (1, 32, 32)),
        ("monai-densenet121-group", lambda: monai_densenet("group"), (1, 32, 32)),
        ("mlp-batchnorm1d-freeze", lambda: bn_mlp("freeze"), (6,)),
        ("mlp-batchnorm1d-group", lambda: bn_mlp("group"), (6,)),
        ("smallcnn-batch-freeze", lambda: small_cnn_batch("freeze"), (4, 16, 16)),
        ("xray-densenet121", lambda: XRayEncoder(out_dim=8), (1, 32, 32)),
        ("xray-small-frozen-batch", lambda: XRayEncoder(out_dim=8, arch="small", norm="frozen_batch"), (1, 32, 32)),
        ("spectral-resnet18", lambda: SpectralEncoder(bands=4, backbone="resnet18"), (4, 32, 32)),
        (
            "spectral-resnet18-frozen",
            lambda: SpectralEncoder(bands=4, backbone="resnet18", norm="frozen_batch"),
            (4, 32, 32),
        ),
    ]


@pytest.mark.parametrize("case", _batch_norm_encoders(), ids=lambda c: c[0])
def test_batchnorm_encoder_trains_on_one_present_sample_and_rows_are_independent(case):
    import torch

    _, factory, shape = case
    torch.manual_seed(0)
    encoder = factory().train()
    one = torch.randn(1, *shape)
    out = encoder(one)  # one present row in training mode: "Expected more than 1 value per channel" before
    out.sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in encoder.parameters())
    mates_a, mates_b = torch.randn(3, *shape), 5 + 3 * torch.randn(3, *shape)
    with torch.no_grad():
        alone = encoder(one)
        with_a = encoder(torch.cat([one, mates_a]))[:1]
        with_b = encoder(torch.cat([one, mates_b]))[:1]
    assert encoder.training
    assert torch.allclose(alone, with_a, atol=1e-4) and torch.allclose(alone, with_b, atol=1e-4)


def test_wrap_refuses_batchnorm_it_cannot_make_row_independent():
    from torch import nn

    from modfuse.encoders import wrap
    from modfuse.errors import ModfuseError

    stats_free = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False))
    with pytest.raises(ModfuseError, match=r"track_running_stats=False.*norm=.group."):
        wrap(stats_free, out_dim=8)
    converted = wrap(stats_free, out_dim=8, norm="group")
    assert isinstance(converted.module[1], nn.GroupNorm) and converted.module[1].num_groups == 1
    with pytest.raises(ModfuseError, match="norm must be"):
        wrap(nn.Linear(4, 8), out_dim=8, norm="batch")


# ---------------------------------------------------------------------- DICOM
@pytest.fixture
def dicom_files():
    pytest.importorskip("pydicom")
    pytest.importorskip("monai")
    from pydicom.data import get_testdata_file

    return lambda name: get_testdata_file(name, download=False)  # shipped with pydicom


def test_dicom_palette_color_is_looked_up_to_rgb(dicom_files):
    import pydicom
    import torch

    from modfuse.data.readers import DicomSource

    path = dicom_files("examples_palette.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR" and ds.SamplesPerPixel == 1
    image = DicomSource({"p": path}).load("p")
    rgb = pydicom.pixels.apply_color_lut(ds.pixel_array, ds).astype(np.float32) / 65535  # 16-bit table
    assert image.shape == (3, 350, 800) and 0 <= image.min() and image.max() <= 1
    assert torch.allclose(image, torch.from_numpy(np.moveaxis(rgb, -1, 0)), atol=1e-6)
    assert not torch.equal(image[0], image[2])  # colours, not one index plane copied


def test_dicom_sigmoid_voi_lut_function_is_applied(dicom_files, tmp_path):
    import pydicom
    import torch

    from modfuse.data.readers import DicomSource

    ds = pydicom.dcmread(dicom_files("MR_small.dcm"))
    ds.VOILUTFunction = "SIGMOID"
    sigmoid = tmp_path / "sigmoid.dcm"
    ds.save_as(sigmoid)
    linear = DicomSource({"a": dicom_files("MR_small.dcm")}).load("a")
    curved = DicomSource({"a": sigmoid}).load("a")
    assert not torch.allclose(linear, curved, atol=1e-3)
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    raw = ds.pixel_array.astype(np.float64)
    expected = 1 / (1 + np.exp(-4 * (raw - c) / w))  # PS3.3 C.11.2.1.3.1, output range scaled to [0, 1]
    assert torch.allclose(curved[0], torch.from_numpy(expected).float(), atol=1e-5)
    assert 0 < float(curved.min()) and float(curved.max()) < 1  # a sigmoid never clips


@pytest.mark.parametrize(
    ("name", "same_as"),
    [
        ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm"),  # JPEG Lossless, Process 14 [Selection Value 1]
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),  # JPEG-LS lossless
        ("JPEGLSNearLossless_16.dcm", None),  # JPEG-LS near-lossless
    ],
)
def test_dicom_jpeg_lossless_and_jpeg_ls_decode_with_the_med_extra(dicom_files, name, same_as):
    import re
    from pathlib import Path

    import pydicom
    import torch

    from modfuse.data.readers import DicomSource

    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    med = re.search(r"^med = \[(.*?)\]", pyproject, re.S | re.M).group(1)  # (tomllib is 3.11+)
    assert all(p in med for p in ("pylibjpeg>=", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle"))
    path = dicom_files(name)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID.is_compressed
    ds = MultiModalDataset({"img": DicomSource({"x": path}, window=None)}, on_error="missing")
    image = ds[0]["inputs"]["img"]
    assert image is not None and ds.read_error_report().empty
    if same_as is not None:
        plain = DicomSource({"x": dicom_files(same_as)}, window=None).load("x")
        assert torch.equal(image, plain)  # lossless: the very pixels of the uncompressed (or RLE) file


def test_dicom_grey_and_rgb_in_one_batch(dicom_files):
    from modfuse.data.readers import DicomSource
    from modfuse.errors import ModfuseError

    files = {"grey": dicom_files("MR_small.dcm"), "rgb": dicom_files("SC_rgb_jpeg.dcm")}
    mixed = MultiModalDataset({"img": DicomSource(files, spatial_size=(32, 32))})
    with pytest.raises(ModfuseError, match=r"grey: \(1, 32, 32\), rgb: \(3, 32, 32\).*channels=3") as info:
        mixed.collate_fn([mixed[0], mixed[1]])
    assert "modality 'img'" in str(info.value)
    for channels in (1, 3):
        ds = MultiModalDataset({"img": DicomSource(files, spatial_size=(32, 32), channels=channels)})
        batch = ds.collate_fn([ds[0], ds[1]])
        assert batch.inputs["img"].shape == (2, channels, 32, 32)
    grey3 = DicomSource(files, channels=3).load("grey")
    assert grey3.shape == (3, 64, 64) and (grey3[0] == grey3[2]).all()


def test_dicom_multi_frame_file_where_single_frame_is_expected_fails_at_read_time(dicom_files):
    from modfuse.data.readers import DicomSource

    files = {"ct": dicom_files("CT_small.dcm"), "rt": dicom_files("rtdose.dcm")}  # rtdose: 15 frames
    with pytest.raises(ReadError, match=r"expected 1 frame\(s\) per image, found 15") as info:
        DicomSource(files, frames=1).load("rt")
    assert str(info.value.path).endswith("rtdose.dcm")
    ds = MultiModalDataset({"img": DicomSource(files, frames=1, spatial_size=(16, 16))}, on_error="missing")
    batch = ds.collate_fn([ds[0], ds[1]])  # the batch builds: the multi-frame file became missing
    assert batch.present["img"].tolist() == [True, False] and batch.inputs["img"].shape == (1, 1, 16, 16)
    assert ds.read_error_report()["id"].tolist() == ["rt"]


def test_dicom_header_only_file_through_metadata_source_is_reported(dicom_files, tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from modfuse.data.readers import DicomMetadataSource

    header_only = Dataset()
    header_only.file_meta = FileMetaDataset()
    header_only.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header_only.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR image storage
    header_only.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = tmp_path / "header_only.dcm"
    header_only.save_as(path, enforce_file_format=True)
    src = DicomMetadataSource({"mr": dicom_files("MR_small.dcm"), "hdr": path})
    with pytest.raises(ReadError, match="found none of them") as info:
        src.load("hdr")
    assert info.value.path == path
    ds = MultiModalDataset({"meta": src}, on_error="missing")
    assert ds[0]["inputs"]["meta"] is not None and ds[1]["inputs"]["meta"] is None
    assert ds.read_error_report()[["id", "modality"]].values.tolist() == [["hdr", "meta"]]
