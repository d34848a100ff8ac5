"""The preprocessing cache: exact round trips for every modality kind, shard-disjoint DDP
ranks and workers, mid-epoch resume, and the bad-input policy while preprocessing."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("rasterio")
pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

from pydicom.data import get_testdata_file
from safetensors import safe_open

from modfuse.data import ArraySource, MultiModalDataset
from modfuse.data.cache import CachedDataModule, ShardEpochSampler, load_cache, write_cache
from modfuse.data.readers import DicomSource, RasterChipSource, SmilesSource, WfdbWindowSource
from modfuse.errors import ModfuseError, ReadError

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")


def same(a, b) -> bool:
    """Exact equality of two cached values: tensors (dtype, shape, bytes), dicts, PyG graphs."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if hasattr(a, "edge_index"):  # a PyG graph: the same attributes with the same values
        return type(a) is type(b) and set(a.keys()) == set(b.keys()) and all(same(a[k], b[k]) for k in a.keys())
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture
def mixed(shared_data) -> MultiModalDataset:
    """Five modality kinds from real files; each sample lacks some of them."""
    chips = RasterChipSource(shared_data / "sentinel2-l1c", size=24, n_random=3, seed=1, bands=["B02", "B05", "B01"])
    ecg = WfdbWindowSource({"100": shared_data / "ecg-wfdb" / "100"}, window=2.0, fs=100, leads=["MLII", "V5"])
    ecg_ids = ecg.ids[:3]
    dicom = DicomSource({"ct": CT, "mr": MR}, spatial_size=(32, 32))
    smiles = SmilesSource(["CCO", "c1ccccc1O", None, "CC(=O)N"], ids=["ct", "mr", chips.ids[0], ecg_ids[0]])
    table = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    table[1] = np.nan  # "mr" has no table row
    ids = ["ct", "mr", *chips.ids, *ecg_ids]
    sources = {"xray": dicom, "s2": chips, "ecg": ecg, "mol": smiles, "labs": ArraySource(table, ids)}
    return MultiModalDataset(
        sources, targets=np.arange(len(ids)) % 2, ids=ids, groups=[f"g{i % 3}" for i in range(len(ids))]
    )


def test_round_trip_is_exact_for_every_modality_with_missing_values(mixed, tmp_path):
    report = write_cache(mixed, tmp_path / "cache", shard_size=3)
    assert report.n_samples == 8 and report.n_shards == 3 and report.read_errors == []
    assert report.present == {"xray": 2, "s2": 3, "ecg": 3, "mol": 3, "labs": 7}
    cached = load_cache(tmp_path / "cache")
    assert cached.ids == mixed.ids and cached.modalities == mixed.modalities
    assert cached.groups.tolist() == mixed.groups.tolist()
    assert cached.present_matrix().equals(_present(mixed))
    for i in range(len(mixed)):
        raw, back = mixed[i], cached[i]
        assert torch.equal(raw["target"], back["target"])
        for m in mixed.modalities:
            assert same(raw["inputs"][m], back["inputs"][m]), (raw["id"], m)
    assert cached[0]["inputs"]["mol"].smiles == "CCO"
    # a missing modality is not stored at all (no zero-filled tensor); one stored per present value
    with safe_open(str(tmp_path / "cache" / "shard-00000.safetensors"), "pt") as shard:
        keys = set(shard.keys())
    assert "1/labs" not in keys and "0/labs" in keys and "0/s2" not in keys
    assert {"0/mol/x", "0/mol/edge_index", "0/mol/edge_attr"} <= keys
    # the cached dataset collates like the raw one
    batch, raw_batch = cached.collate_fn([cached[i] for i in range(4)]), mixed.collate_fn([mixed[i] for i in range(4)])
    assert all(torch.equal(batch.present[m], raw_batch.present[m]) for m in mixed.modalities)
    assert torch.equal(batch.inputs["labs"], raw_batch.inputs["labs"])


def test_round_trip_is_exact_for_tables_and_pixel_series(shared_data, tmp_path):
    import pandas as pd

    from modfuse.data.readers import EOPatchSeriesSource, TabularSchema, TabularSource

    series = EOPatchSeriesSource(shared_data / "eopatch-slovenia", pixels=[(0, 0), (50, 37), (100, 99)])
    frame = pd.DataFrame({"age": [61.0, np.nan, 45.0], "sex": ["F", None, "M"]}, index=series.ids)
    table = TabularSource(
        frame, TabularSchema(numeric=["age"], categorical=["sex"])
    )  # the second row: every cell missing
    ds = MultiModalDataset({"pixel": series, "labs": table}, targets=np.array([0.5, 1.5, 2.5]))
    write_cache(ds, tmp_path / "c", shard_size=2)
    cached = load_cache(tmp_path / "c")
    assert cached[1]["inputs"]["labs"] is None and cached.present_matrix().equals(ds.present_matrix())
    for i in range(3):
        raw, back = ds[i], cached[i]
        assert (
            set(back["inputs"]["pixel"]) == {"x", "valid", "t"} and back["inputs"]["pixel"]["valid"].dtype == torch.bool
        )
        assert all(same(raw["inputs"][m], back["inputs"][m]) for m in ds.modalities), raw["id"]
        assert torch.equal(raw["target"], back["target"])


def _present(ds: MultiModalDataset):
    return ds.present_matrix().assign(
        **{m: [ds[i]["inputs"][m] is not None for i in range(len(ds))] for m in ds.modalities}
    )


def test_shards_close_at_a_byte_budget_and_readers_map_few_shards(tmp_path):
    images = np.random.default_rng(0).random((10, 64, 64), dtype=np.float32)  # 16 KiB each
    images[3] = np.nan  # missing: takes no bytes
    ds = MultiModalDataset.from_arrays({"img": images}, y=np.arange(10))
    report = write_cache(ds, tmp_path / "c", shard_bytes=3 * 64 * 64 * 4)
    store = load_cache(tmp_path / "c").cache
    assert report.n_shards == 3 and store.shard_starts.tolist() == [0, 3, 7]  # row 3 is missing: no bytes
    assert store.shard_of([0, 2, 3, 6, 7, 9]).tolist() == [0, 0, 1, 1, 2, 2]
    cached = load_cache(tmp_path / "c")
    for i in (9, 0, 5, 1):
        assert torch.equal(cached[i]["inputs"]["img"], torch.from_numpy(images[i]))
    assert sorted(cached.cache._handles) == [0, 1]  # at most max_open=2 open shards, least recent closed
    # a worker closing shards as it goes (and trimming its heap then) reads every value exact
    back = [
        item["inputs"]["img"] for batch in DataLoader(cached, num_workers=1, collate_fn=_uncollated) for item in batch
    ]
    expected = [None if i == 3 else torch.from_numpy(images[i]) for i in range(10)]  # row 3 is missing
    assert len(back) == 10 and all(same(b, e) for b, e in zip(back, expected))


def _uncollated(items):
    return items


class _Values:
    """A source whose one sample holds a dict of tensors of many dtypes and shapes."""

    collate = "list"
    ids = ["a"]

    def __init__(self, values):
        self.values = values

    def load(self, sample_id):
        return self.values


def test_values_of_every_dtype_and_shape_come_back_exact_and_writable(tmp_path):
    rng = np.random.default_rng(0)
    values = {
        "f32": torch.from_numpy(rng.random((3, 5), dtype=np.float32)),
        "bf16": torch.randn(4, 2).to(torch.bfloat16),
        "f16": torch.randn(7).half(),
        "f64": torch.tensor(np.pi, dtype=torch.float64),  # a 0-d scalar
        "i16": torch.tensor([-32768, 0, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.arange(256, dtype=torch.uint8).reshape(16, 16),
        "i64": torch.tensor([2**62, -1]),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "empty": torch.zeros(0, 4),
        "strided": torch.arange(20.0).reshape(4, 5).t(),  # not contiguous when written
        "image": torch.from_numpy(rng.random((256, 256), dtype=np.float32)),  # 256 KiB: a large value
    }
    write_cache(MultiModalDataset({"v": _Values(values)}, ids=["a"]), tmp_path / "c")
    cached = load_cache(tmp_path / "c")
    back = cached[0]["inputs"]["v"]
    assert same(values, back)
    back["f32"] += 1  # a value read is the caller's own tensor: changing it changes nothing stored
    back["image"] *= 2
    again = cached[0]["inputs"]["v"]
    assert torch.equal(again["f32"], values["f32"]) and torch.equal(again["image"], values["image"])
    # read in a DataLoader worker and handed back uncollated (through shared memory): the same values
    (batch,) = DataLoader(cached, batch_size=1, num_workers=1, collate_fn=_uncollated)
    assert same(values, batch[0]["inputs"]["v"])


def test_truncated_or_corrupt_shard_is_a_read_error_naming_the_file(tmp_path):
    ds = MultiModalDataset.from_arrays({"img": np.ones((4, 8, 8), np.float32)}, y=np.zeros(4))
    write_cache(ds, tmp_path / "c")
    shard = tmp_path / "c" / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    cached = load_cache(tmp_path / "c")
    assert torch.equal(cached[0]["inputs"]["img"], torch.ones(8, 8))  # the first values are intact
    with pytest.raises(ReadError, match="truncated") as info:
        cached[3]
    assert "shard-00000.safetensors" in str(info.value)
    # a header whose byte range does not fit the value's shape (tampered): refused, not reshaped
    write_cache(ds, tmp_path / "d")
    other = tmp_path / "d" / "shard-00000.safetensors"
    raw = other.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = raw[8 : 8 + length].decode().replace("[8,8]", "[8,9]", 1)
    assert len(header) == length  # same length: only the shape changed
    other.write_bytes(raw[:8] + header.encode() + raw[8 + length :])
    with pytest.raises(ReadError, match="does not hold shape") as info:
        load_cache(tmp_path / "d")[0]
    assert "shard-00000.safetensors" in str(info.value)
    shard.write_bytes(b"not a shard at all")
    with pytest.raises(ReadError, match="not a safetensors shard") as info:
        load_cache(tmp_path / "c")[0]
    assert "shard-00000.safetensors" in str(info.value)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_reading_a_cache_keeps_no_shard_mapped_in_memory(tmp_path):
    """A reader's memory is the values it returns, not the shards it has read: a memory-mapped
    shard kept every page read resident (up to max_open x shard_bytes per worker)."""
    ds = MultiModalDataset.from_arrays({"img": np.ones((64, 256, 256), np.float32)}, y=np.zeros(64))  # 16 MiB
    write_cache(ds, tmp_path / "c", shard_bytes=2**23)
    cached = load_cache(tmp_path / "c")
    assert cached.cache.n_shards == 2
    assert all(torch.equal(cached[i]["inputs"]["img"], torch.ones(256, 256)) for i in range(64))
    assert len(cached.cache._handles) == 2  # both shards open
    assert str(tmp_path / "c") not in Path("/proc/self/maps").read_text()


def test_cache_refuses_to_overwrite_and_leaves_no_temporary_folder(tmp_path):
    ds = MultiModalDataset.from_arrays({"a": np.ones((4, 2))}, y=np.zeros(4))
    write_cache(ds, tmp_path / "c")
    with pytest.raises(ModfuseError, match="exists already"):
        write_cache(ds, tmp_path / "c")
    write_cache(ds, tmp_path / "c", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


@pytest.fixture
def bad_dicoms(tmp_path) -> tuple:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom file at all" * 10)
    files = {"ct": CT, "bad": broken, "mr": MR}
    labs = ArraySource(np.ones((3, 2), dtype=np.float32), list(files))
    return files, broken, {"xray": DicomSource(files, spatial_size=(16, 16)), "labs": labs}


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_file_raises_naming_file_sample_and_modality(bad_dicoms, tmp_path, workers):
    _, broken, sources = bad_dicoms
    ds = MultiModalDataset(sources, on_error="raise")
    with pytest.raises(ReadError) as err:
        write_cache(ds, tmp_path / "c", num_workers=workers)
    assert err.value.sample_id == "bad" and err.value.modality == "xray" and str(broken) in str(err.value)
    assert not (tmp_path / "c").exists() and not list(tmp_path.glob(".c.tmp-*"))  # nothing half-written


def test_bad_file_with_on_error_missing_is_reported_not_dropped(bad_dicoms, tmp_path):
    _, broken, sources = bad_dicoms
    ds = MultiModalDataset(sources, on_error="missing")
    report = write_cache(ds, tmp_path / "c")
    assert [(e["id"], e["modality"]) for e in report.read_errors] == [("bad", "xray")]
    assert str(broken) in report.read_errors[0]["error"]
    cached = load_cache(tmp_path / "c")
    assert cached.ids == ["ct", "bad", "mr"]  # the sample stays, with its other modality
    assert cached[1]["inputs"]["xray"] is None and torch.equal(cached[1]["inputs"]["labs"], torch.ones(2))
    assert cached.read_error_report()[["id", "modality"]].values.tolist() == [["bad", "xray"]]
    assert json.loads((tmp_path / "c" / "index.json").read_text())["read_errors"][0]["id"] == "bad"


def test_ddp_ranks_and_workers_read_disjoint_complete_shards():
    shards = np.arange(32) // 4  # 8 shards of 4 samples
    for epoch in (0, 1):
        per_rank = []
        for rank in (0, 1):
            sampler = ShardEpochSampler(shards, seed=5, batch_size=4, num_replicas=2, rank=rank, num_workers=2)
            sampler.set_epoch(epoch)
            order = list(sampler)
            assert len(order) == len(sampler) == 16
            per_rank.append(order)
            # DataLoader worker w gets batches w, w + 2, ...: each reads 2 whole shards of its own
            workers = [{int(shards[i]) for b in range(w, 4, 2) for i in order[4 * b : 4 * b + 4]} for w in (0, 1)]
            assert all(len(s) == 2 for s in workers) and not workers[0] & workers[1]
        assert sorted(per_rank[0] + per_rank[1]) == list(range(32))  # every sample once per epoch
        rank_shards = [set(shards[o].tolist()) for o in per_rank]
        assert not rank_shards[0] & rank_shards[1] and len(rank_shards[0]) == 4  # whole shards
    first = ShardEpochSampler(shards, seed=5, batch_size=4)
    assert list(first) != list(first)  # without set_epoch each iteration is the next epoch's order


def test_uneven_ranks_are_padded_like_distributed_sampler():
    shards = np.arange(7) // 3
    orders = [list(ShardEpochSampler(shards, seed=0, batch_size=2, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [len(o) for o in orders] == [4, 4] and set(orders[0] + orders[1]) == set(range(7))


def test_mid_epoch_resume_from_the_cache_reproduces_the_order(tmp_path):
    n = 40
    ds = MultiModalDataset.from_arrays({"a": np.arange(n * 2, dtype=np.float32).reshape(n, 2)}, y=np.arange(n) % 2)
    splits = {"train": list(range(30)), "val": list(range(30, 35)), "test": list(range(35, 40))}
    write_cache(ds, tmp_path / "c", shard_size=8, splits=splits)

    def epoch_ids(resume=None):
        dm = CachedDataModule(str(tmp_path / "c"), batch_size=4, seed=3)
        dm.setup()
        dm._resume_at = resume
        loader = dm.train_dataloader()
        if resume is None:
            list(loader)  # epoch 0 ...
        return [b.ids for b in loader]  # ... then epoch 1 (or the resumed epoch)

    full = epoch_ids()
    resumed = epoch_ids(resume=(1, 3))
    assert resumed == full[3:] and len(full) == 8
    assert sorted(i for b in full for i in b) == list(range(30))  # the saved training split
    dm = CachedDataModule(str(tmp_path / "c"))
    dm.setup()
    assert dm.splits["val"].tolist() == list(range(30, 35))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_rank(rank: int, world: int, port: int, cache: str, out: str) -> None:
    """One gloo process: read its shard of the cache for two epochs, gather every rank's ids."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        ds = load_cache(cache)
        sampler = ShardEpochSampler(ds.cache.shard_of(range(len(ds))), seed=1, batch_size=3)  # rank from the group
        loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=sampler, collate_fn=ds.collate_fn)
        seen = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            mine = [i for batch in loader for i in batch.ids]
            gathered: list = [None] * world
            dist.all_gather_object(gathered, mine)
            seen.append(gathered)
        if rank == 0:
            Path(out).write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_run_reads_every_cached_sample_once_per_epoch(tmp_path):
    n = 24
    ds = MultiModalDataset.from_arrays({"a": np.arange(n, dtype=np.float32)[:, None]}, y=np.zeros(n))
    write_cache(ds, tmp_path / "c", shard_size=4)
    args = (2, free_port(), str(tmp_path / "c"), str(tmp_path / "seen.json"))
    # fork: the ranks start in milliseconds (spawn re-imports torch: a minute on a loaded CPU)
    torch.multiprocessing.start_processes(_read_rank, args=args, nprocs=2, join=True, start_method="fork")
    for ranks in json.loads((tmp_path / "seen.json").read_text()):
        assert sorted(ranks[0] + ranks[1]) == list(range(n))  # each sample exactly once, no padding needed
        shards = [{i // 4 for i in ids} for ids in ranks]
        assert not shards[0] & shards[1]  # disjoint whole shards


def test_prepare_cache_command_then_fit_from_the_cache(tmp_path, monkeypatch):
    import yaml

    from modfuse.cli import main

    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "mfcache"))
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # LightningCLI warns when pytest's arguments are there
    quick = ["--config", "recipes/quickstart.yaml", "--data.init_args.n", "40"]
    assert main(["prepare-cache", *quick, "-o", str(tmp_path / "c"), "--shard_size", "8"]) == 0
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert (
        len(index["ids"]) == 40
        and len(index["shard_starts"]) == 5
        and set(index["modalities"]) == {"xray", "ecg", "labs"}
    )
    assert sorted(i for part in index["splits"].values() for i in part) == list(
        range(40)
    )  # the recipe's splits are kept
    recipe = yaml.safe_load(Path("recipes/quickstart.yaml").read_text())
    recipe["data"] = {
        "class_path": "modfuse.data.cache.CachedDataModule",
        "init_args": {"cache_dir": str(tmp_path / "c"), "batch_size": 8},
    }
    recipe.update(compare=[], test_after_fit=False)
    recipe["trainer"].update(max_epochs=1, default_root_dir=str(tmp_path / "run"), logger=False)
    recipe["trainer"]["enable_progress_bar"] = False
    (tmp_path / "cached.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["fit", "--config", str(tmp_path / "cached.yaml")]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
