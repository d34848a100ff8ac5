"""Raster readers on the real Sentinel-2 L1C crop (13 bands at 10/20/60 m) and broken copies."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")

from modfuse.data import MultiModalDataset  # noqa: E402
from modfuse.data.readers import MultiBandRasterSource, RasterChipSource  # noqa: E402
from modfuse.data.readers.raster import SENTINEL2_BANDS, band_statistics, stack_bands, torchgeo_dataset  # noqa: E402
from modfuse.errors import ReadError  # noqa: E402


@pytest.fixture
def s2(shared_data):
    return shared_data / "sentinel2-l1c"


def test_all_13_bands_on_the_10m_grid_keep_footprint_and_crs(s2):
    src = MultiBandRasterSource({"scene": s2})
    stack = src.read_stack("scene")
    assert stack.data.shape == (13, 1032, 1032) and stack.bands == list(SENTINEL2_BANDS)
    with rasterio.open(s2 / "s2_B01.tif") as b01:
        assert stack.crs == b01.crs and stack.crs.to_epsg() == 32618
        assert stack.bounds == tuple(b01.bounds)  # the 60 m band has the same 10.32 km footprint
    assert stack.transform.a == 10.0 and stack.valid.all()
    with rasterio.open(s2 / "s2_B04.tif") as b04:  # a 10 m band is read without resampling
        assert np.array_equal(stack.data[3], b04.read(1).astype(np.float32))
    assert src.wavelengths[1] == 492.4


def test_chips_match_torchgeo_and_random_chips_are_seeded(s2):
    bands = ["B02", "B05", "B01"]
    chips = RasterChipSource(s2, size=64, stride=256, bands=bands)
    assert len(chips) == 16 and chips.index[["row", "col"]].iloc[1].tolist() == [0, 256]
    tg = pytest.importorskip("torchgeo")
    del tg
    from torchgeo.samplers import GridGeoSampler

    ds = torchgeo_dataset(s2, bands=bands)
    query = next(iter(GridGeoSampler(ds, size=64, stride=256)))
    theirs = ds[query]["image"]
    bounds = (query[0].start, query[1].start, query[0].stop, query[1].stop)
    ours = torch.from_numpy(stack_bands([s2 / f"s2_{b}.tif" for b in bands], bands, res=10.0, bounds=bounds).data)
    # the same place through the chip source: chip bounds come from its pixel offsets
    assert chips.chip_bounds("chip1") == (chips.bounds[0] + 2560, chips.bounds[3] - 640, chips.bounds[0] + 3200,
                                          chips.bounds[3])  # fmt: skip
    assert ours.shape == theirs.shape == (3, 64, 64)
    assert torch.equal(ours[0], theirs[0].float())  # 10 m band: identical pixels
    corr = np.corrcoef(ours[1].flatten(), theirs[1].float().flatten())[0, 1]
    assert corr > 0.95  # 20 m band: both bilinear, implementations differ slightly
    a = RasterChipSource(s2, size=32, n_random=5, seed=3, bands=["B02"])
    b = RasterChipSource(s2, size=32, n_random=5, seed=3, bands=["B02"])
    assert a.index.equals(b.index) and torch.equal(a.load("chip2"), b.load("chip2"))


def test_normalisation_statistics_cached_outside_the_input(s2, tmp_path, monkeypatch):
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    files = [s2 / "s2_B02.tif", s2 / "s2_B10.tif"]
    stats = band_statistics(files, ["B02", "B10"])
    cached = list((tmp_path / "cache" / "stats").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == stats
    mtime = cached[0].stat().st_mtime_ns
    assert band_statistics(files, ["B02", "B10"]) == stats and cached[0].stat().st_mtime_ns == mtime
    with rasterio.open(files[0]) as f:
        full = f.read(1).astype(np.float64)
    assert stats["B02"]["mean"] == pytest.approx(full.mean(), rel=1e-3)  # 60 m averages keep the mean
    chip = RasterChipSource(s2, size=256, bands=["B02", "B10"], normalize=True).load("chip0")
    assert abs(float(chip.mean())) < 2 and chip.dtype == torch.float32


def test_nodata_becomes_mask(s2, tmp_path):
    stack = stack_bands([s2 / "s2_B02.tif"], ["B02"], bounds=(440040.0, 4164840.0, 440680.0, 4165480.0), nodata=65535)
    assert stack.valid.all()
    # a window reaching beyond the footprint: outside pixels are nodata, not zeros passed as data
    src = MultiBandRasterSource({"s": {"B02": s2 / "s2_B02.tif"}}, bands=["B02"], nodata=0, return_mask=True)
    out = src.load("s")
    assert out["mask"].dtype == torch.bool and out["image"].shape == (1, 1032, 1032)
    edge = stack_bands([s2 / "s2_B02.tif"], bounds=(440000.0, 4164840.0, 440680.0, 4165480.0), nodata=0)
    assert not edge.valid[0, :, :4].any() and edge.valid[0, :, 4:].all()


def test_wrong_band_count_follows_the_policy(s2, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(s2 / "s2_B02.tif", bad / "s2_B02.tif")
    with rasterio.open(s2 / "s2_B03.tif") as f:
        profile, band = f.profile, f.read(1)
    profile.update(count=3)
    with rasterio.open(bad / "s2_B03.tif", "w", **profile) as out:
        out.write(np.stack([band] * 3))
    good = {"B02": s2 / "s2_B02.tif", "B03": s2 / "s2_B03.tif"}
    src = MultiBandRasterSource({"good": good, "bad": bad}, bands=["B02", "B03"], res=60.0)
    with pytest.raises(ReadError, match="expected a single-band raster, found 3 bands") as info:
        src.load("bad")
    assert str(info.value.path).endswith("s2_B03.tif") and info.value.sample_id == "bad"
    ds = MultiModalDataset({"s2": src}, on_error="missing")
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch.present["s2"].tolist() == [True, False] and batch.inputs["s2"].shape == (1, 2, 172, 172)
    assert ds.read_error_report()["id"].tolist() == ["bad"]


def test_torchgeo_dataset_and_grid_sampler_feed_a_multimodal_dataset(s2):
    pytest.importorskip("torchgeo")
    from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

    from modfuse.data.readers import GeoDatasetSource

    bands = ["B02", "B03", "B04", "B08"]  # the 10 m bands: torchgeo and the chip source read them unresampled
    ds = torchgeo_dataset(s2, bands=bands)
    sampler = GridGeoSampler(ds, size=128, stride=128)
    queries = list(sampler)
    source = GeoDatasetSource(ds, sampler)
    assert len(source) == len(queries) == 81  # ceil((1032 - 128) / 128) + 1 = 9 per side
    mmds = MultiModalDataset({"s2": source}, targets=np.arange(81) % 2)
    batch = mmds.collate_fn([mmds[i] for i in (0, 40, 80)])
    assert batch.inputs["s2"].shape == (3, 4, 128, 128)
    for row, i in enumerate((0, 40, 80)):  # the same chips as torchgeo gives for its queries
        assert torch.equal(batch.inputs["s2"][row], ds[queries[i]]["image"].float())
    assert source.index.loc[0, ["xmin", "ymin"]].tolist() == [queries[0][0].start, queries[0][1].start]
    # the chip source's grid="torchgeo": the same 81 chips, in the same order, same pixels
    chips = RasterChipSource(s2, size=128, grid="torchgeo", bands=bands)
    assert chips.ids == source.ids
    for i in (0, 8, 40, 72, 80):  # corners (80: past the north-east edge, nodata as 0) and the middle
        q = queries[i]
        assert chips.chip_bounds(f"chip{i}") == (q[0].start, q[1].start, q[0].stop, q[1].stop)
        assert torch.equal(chips.load(f"chip{i}"), source.load(f"chip{i}"))
    assert RasterChipSource(s2, size=128, bands=bands).ids == [f"chip{i}" for i in range(64)]  # "inside" default
    gen = torch.Generator().manual_seed(5)
    random_a = GeoDatasetSource(ds, RandomGeoSampler(ds, size=32, length=4, generator=gen))
    random_b = GeoDatasetSource(ds, RandomGeoSampler(ds, size=32, length=4, generator=torch.Generator().manual_seed(5)))
    assert random_a.queries == random_b.queries  # seeded: the same chips again


def test_a_band_in_another_crs_is_reprojected(s2, tmp_path):
    from rasterio.warp import calculate_default_transform, reproject

    # the real B04 band warped to WGS 84 (as a DEM or a tile of a neighbouring zone would come)
    with rasterio.open(s2 / "s2_B04.tif") as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform, "width": width, "height": height,
                   "nodata": 0}  # fmt: skip
        with rasterio.open(tmp_path / "B04_wgs84.tif", "w", **profile) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=rasterio.enums.Resampling.bilinear)
        original = src.read(1).astype(np.float32)
    stack = stack_bands([s2 / "s2_B02.tif", tmp_path / "B04_wgs84.tif"], ["B02", "B04"], res=10.0)
    assert stack.crs.to_epsg() == 32618 and stack.data.shape == (2, 1032, 1032)
    inner = (slice(20, -20), slice(20, -20))  # away from the edges that the two warps leave nodata
    assert stack.valid[1][inner].all()
    corr = np.corrcoef(stack.data[1][inner].ravel(), original[inner].ravel())[0, 1]
    assert corr > 0.95  # back on the UTM grid, pixel for pixel (two bilinear resamplings)


def test_a_literal_band_template_reads_the_same_scene_and_names_a_missing_band(s2, tmp_path):
    bands = ["B02", "B03", "B04"]
    scene = tmp_path / "scene"
    scene.mkdir()
    for b in bands:
        shutil.copy(s2 / f"s2_{b}.tif", scene / f"{b}.tif")
    by_glob = MultiBandRasterSource({"x": s2}, bands=bands).load("x")
    literal = MultiBandRasterSource({"x": scene}, bands=bands, template="{band}.tif")
    assert literal.files("x") == [scene / f"{b}.tif" for b in bands]
    assert torch.equal(literal.load("x"), by_glob)
    (scene / "B03.tif").unlink()
    with pytest.raises(ReadError, match=r"'B03.tif' for band B03, found 0") as err:
        literal.load("x")
    assert err.value.sample_id == "x" and str(scene) in str(err.value)
