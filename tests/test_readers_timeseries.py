"""EOPatch time-series reader on the real Slovenia patch: per-date validity from cloud masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modfuse.data import MultiModalDataset
from modfuse.data.readers import EOPatchElevationSource, EOPatchSeriesSource
from modfuse.errors import ReadError


@pytest.fixture
def patch(shared_data):
    return shared_data / "eopatch-slovenia"


def test_per_date_validity_from_is_valid_and_cloud_mask(patch):
    src = EOPatchSeriesSource(patch)
    assert len(src) == 101 * 100 and src.timestamps.size == 68
    is_valid = np.load(patch / "mask" / "IS_VALID.npy")[..., 0]
    clm = np.load(patch / "mask" / "CLM.npy")[..., 0]
    ndvi = np.load(patch / "data" / "NDVI.npy")[..., 0]
    expected = is_valid & (clm == 0)
    assert 0 < expected.mean() < 1  # the patch really has cloudy dates
    for r, c in [(0, 0), (50, 37), (100, 99)]:
        sample = src.load(f"r{r}_c{c}")
        assert sample["x"].shape == (68, 1) and sample["valid"].dtype == torch.bool
        assert np.array_equal(sample["valid"].numpy(), expected[:, r, c])
        assert np.array_equal(sample["x"][:, 0].numpy(), ndvi[:, r, c])
    t = src.load("r0_c0")["t"]
    assert t[0] == 0 and bool((t[1:] > t[:-1]).all()) and t[1] == pytest.approx(20.0, abs=1e-3)  # 07-11 -> 07-31


def test_elevation_coordinates_and_dataset(patch):
    pixels = [(0, 0), (10, 20), (100, 99)]
    series = EOPatchSeriesSource(patch, pixels=pixels)
    dem = EOPatchElevationSource(patch, pixels=pixels)
    assert series.ids == dem.ids == ["r0_c0", "r10_c20", "r100_c99"]
    assert 664 <= float(dem.load("r10_c20")) <= 801
    assert series.crs.endswith("32633") and series.index["x"].is_monotonic_increasing
    assert series.index["y"].iloc[0] > series.index["y"].iloc[2]  # row 0 is the north edge
    labels = series.timeless("mask_timeless/LULC")
    ds = MultiModalDataset({"ndvi": series, "dem": dem}, targets=labels.astype(np.int64))
    batch = ds.collate_fn([ds[i] for i in range(3)])
    assert batch.inputs["ndvi"]["x"].shape == (3, 68, 1) and batch.inputs["dem"].shape == (3, 1)
    assert batch.target.dtype == torch.long
    blocks = EOPatchSeriesSource(patch).spatial_blocks(10)
    assert blocks.max() + 1 == 11 * 10 and (blocks == 0).sum() == 100


def test_broken_patch_files(patch, tmp_path):
    for sub in ("data", "mask"):
        (tmp_path / sub).mkdir()
    np.save(tmp_path / "data" / "NDVI.npy", np.load(patch / "data" / "NDVI.npy")[:, :10, :10])
    np.save(tmp_path / "mask" / "IS_VALID.npy", np.ones((68, 10, 10, 1), bool))
    np.save(tmp_path / "mask" / "CLM.npy", np.zeros((67, 10, 10, 1), np.uint8))  # one date short
    with pytest.raises(ReadError, match=r"expected \(T, H, W\) = \(68, 10, 10\).*found \(67, 10, 10\)"):
        EOPatchSeriesSource(tmp_path)
    np.save(tmp_path / "mask" / "CLM.npy", np.ones((68, 10, 10, 1), np.uint8))  # cloudy on every date
    src = EOPatchSeriesSource(tmp_path)
    assert src.load("r3_c3") is None  # no observation at all: the modality is missing
    np.save(tmp_path / "data" / "NDVI.npy", np.array([object()], dtype=object))
    with pytest.raises(ReadError, match="NDVI"):
        EOPatchSeriesSource(tmp_path)  # object arrays would need pickle: refused
