"""Data-pipeline throughput: samples/s and peak RSS from raw files and from the cache.

Generates N synthetic samples on disk (into ``--work``, default a folder under the system temp
folder, never the repository): 512 x 512 16-bit DICOMs (every 4th JPEG 2000 lossless when
pylibjpeg-openjpeg can encode, else all uncompressed), 12-band 120 x 120 GeoTIFF chips (one
file per band, as Sentinel-2 products ship them), 12-lead WFDB records (10 s at 500 Hz) and a
table with missing values. For each modality it measures, each in a fresh forked process (so
peak RSS is that configuration's own, workers included):

- ``hand``: a hand-written torch Dataset reading the files with pydicom / rasterio / wfdb;
- ``reader w=0/1/2``: modfuse's reader path (``MultiModalDataset`` + collate) with 0-2 workers;
- ``cache w=0/1/2``: the same dataset written once with :func:`modfuse.data.cache.write_cache`
  and read back through :func:`modfuse.data.cache.load_cache`;
- ``cache pinned``: the cache loader with ``pin_memory=True`` and the batch moved to the model's
  device (CUDA when present, else the CPU: the transfer is then a no-op and is reported so).

Run: ``python -m benchmarks.pipeline --quick`` (N=500) or ``--n 20000``; writes
``benchmarks/results/pipeline.md`` (``--out`` to change). Peak memory against N:
``--rss 2000 20000 --n 200 --shard-mb 32 64 256`` (caches of 2000 and 20000 copies of 200
files per modality, for each shard size; see `run_rss`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
BATCH = 32


# ---------------------------------------------------------------------------- synthetic files
def j2k_available() -> bool:
    from pydicom.encoders import get_encoder
    from pydicom.uid import JPEG2000Lossless

    return bool(get_encoder(JPEG2000Lossless).is_available)


def write_dicoms(folder: Path, n: int, compress_every: int) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, SecondaryCaptureImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (np.add.outer(np.arange(512), np.arange(512)) * 4).astype(np.uint16)
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "DX", f"p{i}"
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        pixels = base + rng.integers(0, 64, (512, 512), dtype=np.uint16)
        ds.PixelData = pixels.tobytes()
        if compress_every and i % compress_every == 0:
            ds.compress(JPEG2000Lossless, pixels)
        ds.save_as(folder / f"s{i:06d}.dcm", enforce_file_format=True)


def write_chips(folder: Path, n: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(1)
    profile = {"driver": "GTiff", "height": 120, "width": 120, "count": 1, "dtype": "uint16", "crs": "EPSG:32633"}
    for i in range(n):
        chip = folder / f"s{i:06d}"
        chip.mkdir(parents=True, exist_ok=True)
        transform = from_origin(500_000 + 1200 * (i % 100), 5_000_000 - 1200 * (i // 100), 10, 10)
        for band in BANDS:
            with rasterio.open(chip / f"{band}.tif", "w", transform=transform, **profile) as dst:
                dst.write(rng.integers(0, 10_000, (1, 120, 120), dtype=np.uint16))


def write_records(folder: Path, n: int) -> None:
    """WFDB records in format 16 (interleaved little-endian int16, gain 1000/mV), written directly:
    ``wfdb.wrsamp`` takes 0.2-0.5 s per record on the benchmark machine, longer than the whole
    benchmark can spend on generating 20k records. The files are standard WFDB (header with
    initial values and checksums); ``wfdb.rdsamp`` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    t = np.arange(5000) / 500
    wave = np.sin(2 * np.pi * 1.2 * t)[:, None]
    for i in range(n):
        digital = np.round(1000 * (wave + 0.05 * rng.standard_normal((5000, 12)))).astype("<i2")
        name = f"s{i:06d}"
        (folder / f"{name}.dat").write_bytes(digital.tobytes())  # row-major (5000, 12): frame by frame
        checksums = (digital.sum(axis=0, dtype=np.int64) + 32768) % 65536 - 32768
        lines = [f"{name} 12 500 5000"] + [
            f"{name}.dat 16 1000(0)/mV 16 0 {digital[0, j]} {checksums[j]} 0 {lead}" for j, lead in enumerate(LEADS)
        ]
        (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def write_table(path: Path, n: int) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "id": [f"s{i:06d}" for i in range(n)],
            "age": rng.normal(60, 15, n).round(),
            "troponin": rng.lognormal(0, 1, n),
            "crp": rng.lognormal(1, 1, n),
            "creatinine": rng.normal(1, 0.3, n),
            "sex": rng.choice(["F", "M"], n),
        }
    )
    for column, rate in (("troponin", 0.3), ("crp", 0.15), ("creatinine", 0.05)):  # labs not always drawn
        frame.loc[rng.random(n) < rate, column] = np.nan
    frame.to_csv(path, index=False)


FOLDERS = {"dicom": "dicom", "geotiff": "s2", "wfdb": "ecg", "table": "labs"}


def generate(root: Path, n: int, log: Callable[[str], None], kinds: tuple[str, ...] = tuple(FOLDERS)) -> dict[str, Any]:
    """Write the modalities ``kinds`` for ``n`` samples under ``root`` (reused when complete;
    only those measured: 12-file GeoTIFF chips take minutes per thousand)."""
    compress = 4 if j2k_available() else 0
    writers = {
        "dicom": lambda: write_dicoms(root / "dicom", n, compress),
        "s2": lambda: write_chips(root / "s2", n),
        "ecg": lambda: write_records(root / "ecg", n),
        "labs": lambda: write_table(root / "labs.csv", n),
    }
    wanted = {FOLDERS[k] for k in kinds}
    for name, write in writers.items():  # each modality once: an interrupted run keeps the finished ones
        if name not in wanted:
            continue
        done = root / f"complete-{name}-{n}"
        if not done.exists():
            shutil.rmtree(root / name, ignore_errors=True)
            start = time.perf_counter()
            write()
            done.touch()
            log(f"generated {n} {name} samples in {time.perf_counter() - start:.0f} s")
    return {"compressed": compress}


# ---------------------------------------------------------------------------- the loops compared
class HandWritten(Dataset):
    """A plain torch Dataset over the same files, calling the libraries directly."""

    def __init__(self, kind: str, root: Path, ids: list[str]) -> None:
        self.kind, self.root, self.ids = kind, root, ids
        if kind == "table":
            self.frame = pd.read_csv(root / "labs.csv").set_index("id")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        sid = _file(self.ids[i])
        if self.kind == "dicom":
            import pydicom

            ds = pydicom.dcmread(self.root / "dicom" / f"{sid}.dcm")
            x = ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1)) + float(
                getattr(ds, "RescaleIntercept", 0)
            )
            lo = float(ds.WindowCenter) - float(ds.WindowWidth) / 2
            return torch.from_numpy(np.clip((x - lo) / float(ds.WindowWidth), 0, 1))[None]
        if self.kind == "geotiff":
            import rasterio

            bands = []
            for band in BANDS:
                with rasterio.open(self.root / "s2" / sid / f"{band}.tif") as src:
                    bands.append(src.read(1).astype(np.float32))
            return torch.from_numpy(np.stack(bands))
        if self.kind == "wfdb":
            import wfdb

            signal, _ = wfdb.rdsamp(str(self.root / "ecg" / sid))
            return torch.from_numpy(np.ascontiguousarray(signal.T, dtype=np.float32))
        row = self.frame.loc[sid]
        values = row[["age", "troponin", "crp", "creatinine"]].to_numpy(dtype=np.float32)
        return torch.from_numpy(np.append(values, np.float32(row["sex"] == "M")))


def _file(sample_id: str) -> str:
    return sample_id.split("~")[0]


def modfuse_dataset(kind: str, root: Path, ids: list[str]) -> Any:
    from modfuse.data import MultiModalDataset
    from modfuse.data.readers import DicomSource, MultiBandRasterSource, TabularSource, WfdbSource

    if kind == "dicom":
        source = DicomSource({sid: root / "dicom" / f"{_file(sid)}.dcm" for sid in ids})
    elif kind == "geotiff":
        # one folder per chip (its bands by a literal template), as chips are stored on disk:
        # a mapping band -> path would hold 12 Path objects per sample (62 MiB at N = 20000)
        scenes = {sid: root / "s2" / _file(sid) for sid in ids}
        source = MultiBandRasterSource(scenes, bands=BANDS, template="{band}.tif")
    elif kind == "wfdb":
        source = WfdbSource({sid: root / "ecg" / _file(sid) for sid in ids})
    else:
        source = TabularSource(root / "labs.csv", id="id")
    return MultiModalDataset({kind: source}, ids=ids)


class Repeated:
    """Benchmark-only source for the RSS-vs-N run: ids ``"s000001~k"`` are copies of file
    ``s000001``, consecutive in the dataset, so the file is decoded once per run of copies and
    a cache of 20k samples is written from 1000 files without 20k decodes (what is measured is
    the cache's memory when read, not decoding)."""

    def __init__(self, source: Any, ids: list[str]) -> None:
        self.source, self.ids, self.collate = source, ids, source.collate
        self._last: tuple[str, Any] | None = None

    def load(self, sample_id: str) -> Any:
        name = _file(sample_id)
        if self._last is None or self._last[0] != name:
            self._last = (name, self.source.load(name))
        return self._last[1]


class MemoryPoll:
    """Peak resident memory by kind of the measuring process (``main``) and of its DataLoader
    workers (``worker``: the largest over them), sampled from ``/proc`` every ``interval``
    seconds in a thread (Linux; elsewhere nothing is recorded).

    Per role: ``anon`` (RssAnon: heap, tensors), ``file`` (RssFile: libraries and memory-mapped
    files), ``shmem`` (RssShmem: batches handed between processes) and ``shard``: the resident
    pages of files under ``under`` (the cache folder), from ``/proc/PID/smaps``. A sample can
    miss a peak shorter than ``interval``; ``ru_maxrss`` (the RSS columns) does not."""

    KINDS = {"RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}

    def __init__(self, under: Path | None = None, interval: float = 0.05) -> None:
        self.under, self.interval = (None if under is None else str(under.resolve()) + os.sep), interval
        self.peaks: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryPoll:
        if Path("/proc/self/status").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            try:
                children = [int(c) for c in Path(f"/proc/{me}/task/{me}/children").read_text().split()]
            except OSError:
                children = []
            for pid in [me, *children]:
                sample = self._sample(pid)
                if sample:
                    peak = self.peaks.setdefault("main" if pid == me else "worker", {})
                    for kind, mib in sample.items():
                        peak[kind] = max(peak.get(kind, 0.0), mib)
            self._stop.wait(self.interval)

    def _sample(self, pid: int) -> dict[str, float] | None:
        try:  # a worker can exit between listing and reading: that sample is skipped
            status = Path(f"/proc/{pid}/status").read_text()
            smaps = Path(f"/proc/{pid}/smaps").read_text() if self.under else ""
        except OSError:
            return None
        out = {}
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in self.KINDS:
                out[self.KINDS[key]] = int(value.split()[0]) / 1024
        if len(out) < len(self.KINDS):
            return None
        if self.under:
            out["shard"] = _mapped_kib(smaps, self.under) / 1024
        return out


def _mapped_kib(smaps: str, under: str) -> int:
    """Resident KiB of the mappings of files under ``under`` in a /proc/PID/smaps text."""
    total, inside = 0, False
    for line in smaps.splitlines():
        first = line.split(maxsplit=5)
        if first and "-" in first[0] and len(first) >= 5:  # a mapping's header line
            inside = len(first) == 6 and first[5].startswith(under)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def _measure(
    make: Callable[[], tuple[Dataset, Any]], workers: int, pin: bool, queue: Any, watch: Path | None = None
) -> None:
    torch.set_num_threads(1)
    dataset, collate = make()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset[0]  # warm-up: lazy imports (MONAI, rasterio drivers) are not part of the rate
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=collate, pin_memory=pin)
    # steady state: the clock starts once each worker has delivered its first batch (worker
    # start-up is paid once per run with persistent workers, not per epoch)
    first = max(workers, 1)
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    with MemoryPoll(watch) as poll:
        batches = iter(loader)
        for k, batch in enumerate(batches):
            if pin:  # the handoff: the batch moves to the model's device (non_blocking from pinned memory)
                batch = batch.to(device, non_blocking=True) if hasattr(batch, "to") else batch
            if k < first:
                start, cpu = time.perf_counter(), time.process_time()
                continue
            n += len(batch) if isinstance(batch, torch.Tensor) else len(batch.ids)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        del batches  # joins the workers, so their peak RSS is in RUSAGE_CHILDREN
    rss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    queue.put((n / seconds, rss / 1024, n / max(cpu_seconds, 1e-9), poll.peaks))


def measure(
    make: Callable[[], tuple[Dataset, Any]], workers: int = 0, pin: bool = False, watch: Path | None = None
) -> tuple[float, float, float, dict[str, dict[str, float]]]:
    """(samples/s, peak RSS MiB, samples per CPU second of the measuring process, memory peaks
    by role and kind: `MemoryPoll`, with ``watch`` the folder whose mapped pages are counted)
    of one full pass, in a fresh forked process. The CPU rate counts only the measuring
    process, so it is the decode rate for 0 workers (where waiting for a core on a loaded
    machine does not count), and meaningless with workers."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(make, workers, pin, queue, watch))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run(
    n: int,
    work: Path,
    out: Path,
    log: Callable[[str], None],
    command: str,
    repeat: int = 1,
    kinds: tuple[str, ...] = ("dicom", "geotiff", "wfdb", "table"),
    shard_bytes: int = 256 * 2**20,
) -> pd.DataFrame:
    from benchmarks.common import machine
    from modfuse.data.cache import load_cache, write_cache

    info = generate(work / "files", n, log, kinds)
    # repeat > 1: the same files again under new sample ids ("s000001~2": file s000001)
    ids = [f"s{i:06d}" + (f"~{k}" if k else "") for k in range(repeat) for i in range(n)]
    rows = []
    for kind in kinds:
        hand = measure(lambda k=kind: (HandWritten(k, work / "files", ids), None))
        row = {"modality": kind, "hand w=0": hand[0], "hand w=0 per CPU s": hand[2]}
        rss = {"hand w=0": hand[1]}
        for w in (0, 1, 2):

            def make(k: str = kind) -> tuple[Dataset, Any]:
                ds = modfuse_dataset(k, work / "files", ids)
                return ds, ds.collate_fn

            row[f"reader w={w}"], rss[f"reader w={w}"], cpu_rate, _ = measure(make, w)
            if w == 0:
                row["reader w=0 per CPU s"] = cpu_rate
        cache = work / f"cache-{kind}-{n * repeat}"
        start = time.perf_counter()
        write_cache(
            modfuse_dataset(kind, work / "files", ids), cache, overwrite=True, num_workers=2, shard_bytes=shard_bytes
        )
        row["cache write s"] = time.perf_counter() - start
        for w in (0, 1, 2):

            def make_cached(c: Path = cache) -> tuple[Dataset, Any]:
                ds = load_cache(c)
                return ds, ds.collate_fn

            row[f"cache w={w}"], rss[f"cache w={w}"], *_ = measure(make_cached, w)
        row["cache pinned w=2"], rss["cache pinned w=2"], *_ = measure(make_cached, 2, pin=True)
        row["peak RSS MiB (max)"] = max(rss.values())
        row["RSS MiB reader w=2"] = rss["reader w=2"]
        row["RSS MiB cache w=2"] = rss["cache w=2"]
        rows.append(row)
        log(f"{kind}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "modality"))
    frame = pd.DataFrame(rows)
    write_markdown(frame, n * repeat, info, out, command, machine())
    return frame


def _write_measured(kind: str, root: Path, ids: list[str], cache: Path, shard_bytes: int, queue: Any) -> None:
    """Write the RSS run's cache in a fresh process and report (seconds, peak RSS MiB, shards)."""
    from modfuse.data import MultiModalDataset
    from modfuse.data.cache import write_cache

    torch.set_num_threads(1)
    files = sorted({_file(sid) for sid in ids})
    source = Repeated(modfuse_dataset(kind, root, files).sources[kind], ids)
    start = time.perf_counter()
    report = write_cache(MultiModalDataset({kind: source}, ids=ids), cache, overwrite=True, shard_bytes=shard_bytes)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((time.perf_counter() - start, rss, report.n_shards))


def run_rss(
    n_files: int,
    sizes: tuple[int, ...],
    work: Path,
    out: Path,
    log: Callable[[str], None],
    command: str,
    kinds: tuple[str, ...] = ("dicom", "geotiff"),
    reader: bool = False,
    shard_mb: tuple[float, ...] = (256,),
) -> pd.DataFrame:
    """Peak RSS against N: caches of each size in ``sizes`` (copies of ``n_files`` files) and
    each shard size in ``shard_mb`` written and read back with 0 and 2 workers (``reader``:
    also the reader path over the N ids, 0 workers); tables of each size through the reader
    path. Besides the peak RSS (``ru_maxrss``), a `MemoryPoll` reports the peak resident pages
    of cache shards in the reading process (w=0) and in a worker (w=2), and a worker's peak
    anonymous memory."""
    from benchmarks.common import machine, markdown_table
    from modfuse.data.cache import load_cache

    generate(work / "files", n_files, log, (*kinds, "table"))
    ctx = mp.get_context("fork")
    rows = []
    for kind in kinds:
        for mb in shard_mb:
            for size in sizes:
                repeat = -(-size // n_files)
                ids = [f"s{i:06d}" + (f"~{k}" if k else "") for i in range(n_files) for k in range(repeat)][:size]
                cache = work / f"rss-cache-{kind}-{size}"
                queue = ctx.Queue()
                args = (kind, work / "files", ids, cache, int(mb * 2**20), queue)
                proc = ctx.Process(target=_write_measured, args=args)
                proc.start()
                seconds, write_rss, n_shards = queue.get()
                proc.join()
                row = {"modality": kind, "shard MiB": mb, "N": size, "shards": n_shards, "cache write s": seconds}
                row["RSS MiB cache write"] = write_rss

                def make_cached(c: Path = cache) -> tuple[Dataset, Any]:
                    ds = load_cache(c)
                    return ds, ds.collate_fn

                for w in (0, 2):
                    rate_, rss, _, peaks = measure(make_cached, w, watch=cache)
                    row[f"cache w={w} samples/s"], row[f"RSS MiB cache w={w}"] = rate_, rss
                    role = peaks.get("worker" if w else "main", {})
                    row[f"shard pages MiB w={w}" + (" (worker)" if w else "")] = role.get("shard", float("nan"))
                    if w:
                        row["anon MiB w=2 (worker)"] = role.get("anon", float("nan"))
                row["load 1 min"] = os.getloadavg()[0]
                shutil.rmtree(cache, ignore_errors=True)  # 20k DICOMs as float32 are 20 GiB
                if reader:  # the reader path over the same N ids: every copy decoded from its file

                    def make_reader(k: str = kind, i: list[str] = ids) -> tuple[Dataset, Any]:
                        ds = modfuse_dataset(k, work / "files", i)
                        return ds, ds.collate_fn

                    row["reader w=0 samples/s"], row["RSS MiB reader w=0"], *_ = measure(make_reader, 0)
                rows.append(row)
                log(f"rss {kind} N={size}: " + ", ".join(f"{k} {v:.0f}" for k, v in row.items() if k != "modality"))
    for size in sizes:
        table = work / f"labs-{size}.csv"
        write_table(table, size)
        ids = [f"s{i:06d}" for i in range(size)]

        def make_table(t: Path = table, i: list[str] = ids) -> tuple[Dataset, Any]:
            from modfuse.data import MultiModalDataset
            from modfuse.data.readers import TabularSource

            ds = MultiModalDataset({"table": TabularSource(t, id="id")}, ids=i)
            return ds, ds.collate_fn

        rate_, rss, *_ = measure(make_table, 0)
        rows.append({"modality": "table", "N": size, "reader w=0 samples/s": rate_, "RSS MiB reader w=0": rss})
        log(f"rss table N={size}: {rate_:.0f} samples/s, {rss:.0f} MiB")
    frame = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = [
        f"## Peak RSS against N ({' vs '.join(map(str, sizes))} samples)\n",
        f"Command: `{command}`. Caches of N samples written from {n_files} files per modality (sample",
        "`s000001~k` is a copy of file `s000001`, decoded once per run of copies: this measures the",
        "cache, not decoding), each written and read in a fresh process; RSS = peak resident set of",
        "that process or of one of its workers, MiB; shard pages: peak resident pages of the cache's",
        "shard files in the reading process (w=0) or in one worker (w=2), sampled every 50 ms from",
        "/proc/PID/smaps. Tables: a generated table of N rows through `TabularSource`.\n",
        markdown_table(frame.round(1)),
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()),
        "",
    ]
    with out.open("a") as fh:
        fh.write("\n".join(text) + "\n")
    return frame


def ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """The target ratios per modality."""
    return pd.DataFrame(
        {
            "modality": frame["modality"],
            "reader/hand w=0 (>=0.90)": frame["reader w=0"] / frame["hand w=0"],
            "reader/hand w=0 per CPU s": frame["reader w=0 per CPU s"] / frame["hand w=0 per CPU s"],
            "cache/reader w=0 (>=5 dicom, geotiff)": frame["cache w=0"] / frame["reader w=0"],
            "reader w=2 / w=0 (>=1.7)": frame["reader w=2"] / frame["reader w=0"],
            "cache w=2 / w=0": frame["cache w=2"] / frame["cache w=0"],
        }
    )


def write_markdown(frame: pd.DataFrame, n: int, info: dict[str, Any], out: Path, command: str, mach: dict) -> None:
    from benchmarks.common import markdown_table

    out.parent.mkdir(parents=True, exist_ok=True)
    compressed = f"every {info['compressed']}th DICOM JPEG 2000 lossless" if info["compressed"] else "no encoder"
    text = [
        f"## N = {n} samples per modality\n",
        f"Command: `{command}`. DICOM compression: {compressed}. Batch size {BATCH}; samples/s of one full",
        "pass (files in the OS page cache after generation); RSS = peak resident set of the measuring",
        "process or of one of its workers, MiB.\n",
        markdown_table(frame.round(2)),
        "",
        markdown_table(ratios(frame).round(2)),
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in mach.items()),
        "",
    ]
    with out.open("a") as fh:
        fh.write("\n".join(text) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 500")
    parser.add_argument("--n", type=int, default=20_000, help="samples per modality (default 20000)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "modfuse-pipeline-bench")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "pipeline.md",
        help="markdown file the tables are appended to",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--repeat", type=int, default=1, help="read the N files this many times (N x repeat ids)")
    parser.add_argument("--modalities", nargs="+", default=["dicom", "geotiff", "wfdb", "table"])
    parser.add_argument(
        "--rss",
        type=int,
        nargs="+",
        metavar="N",
        help="instead: peak RSS of caches of these sizes (copies of --n files) and of tables of these sizes",
    )
    parser.add_argument(
        "--rss-reader", action="store_true", help="with --rss: also the reader path over N ids (N decodes)"
    )
    parser.add_argument(
        "--shard-mb",
        type=float,
        nargs="+",
        default=[256],
        help="cache shard size in MiB (write_cache's shard_bytes; with --rss several sizes are compared)",
    )
    args = parser.parse_args(argv)
    n = 500 if args.quick else args.n
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    command = "python -m benchmarks.pipeline " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.rss:
        kinds = tuple(args.modalities)
        sizes, mb = tuple(args.rss), tuple(args.shard_mb)
        frame = run_rss(n, sizes, args.work, args.out, log, command.strip(), kinds, args.rss_reader, mb)
        print(frame.to_string(index=False))
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
        return 0
    shard_bytes = int(args.shard_mb[0] * 2**20)
    frame = run(n, args.work, args.out, log, command.strip(), args.repeat, tuple(args.modalities), shard_bytes)
    print(frame.to_string(index=False))
    print(ratios(frame).to_string(index=False))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
