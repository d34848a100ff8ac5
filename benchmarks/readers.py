"""Reader throughput: samples per CPU second through each modfuse reader versus a plain loop
over the same library call, and DataLoader throughput (wall clock) with 0 and 2 workers.

Run: ``python -m benchmarks.readers [--repeats N] [--only NAME ...]`` (needs ../shared/data and
the med/geo/graph extras); ``--only`` keeps the cases whose name contains one of the words.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.common import DATA  # ../shared/data or $MODFUSE_SHARED_DATA


def rates(fns: Sequence[Callable[[Any], Any]], items: Sequence[Any], repeats: int = 5) -> list[float]:
    """Best-of-``repeats`` samples per CPU second of each of ``fns`` over ``items``.

    CPU time of this process (``time.process_time``: user + system, every thread), not wall
    time: on a machine shared with other jobs, wall time also counts the time spent waiting
    for a core, which moved single rows by 30-80 % between runs. The passes are interleaved
    (f1, f2, f1, f2, ...) so that what load still does hits both sides alike."""
    for fn in fns:
        fn(items[0])  # warm-up: lazy imports, first-touch caches
    best = [0.0] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.process_time()
            for item in items:
                fn(item)
            best[k] = max(best[k], len(items) / max(time.process_time() - start, 1e-9))
    return best


def smiles_case() -> tuple[str, Callable, Callable, list]:
    from modfuse.data.readers import SmilesSource, smiles_to_graph

    frame = pd.read_csv(DATA / "esol" / "delaney-processed.csv")
    src = SmilesSource(frame["smiles"].str.strip().tolist())
    ids = src.ids[:300]
    return "smiles -> graph", src.load, lambda i: smiles_to_graph(src.smiles_of(i)), ids


def wfdb_case() -> tuple[str, Callable, Callable, list]:
    import wfdb

    from modfuse.data.readers import WfdbWindowSource

    src = WfdbWindowSource({"100": DATA / "ecg-wfdb" / "100"}, window=10.0)
    rows = src.index

    def plain(sid: str) -> np.ndarray:
        r = rows.loc[sid]
        rec = wfdb.rdrecord(str(DATA / "ecg-wfdb" / "100"), sampfrom=int(r.start), sampto=int(r.stop))
        return torch.from_numpy(np.ascontiguousarray(rec.p_signal.T, dtype=np.float32))

    return "wfdb 10 s window", src.load, plain, src.ids[:100]


def wfdb_record_case() -> tuple[str, Callable, Callable, list]:
    """The first 10 s of whole records, every read a header-cache miss (as in one pass over
    more than the cache's 256 records, e.g. the pipeline benchmark's 20k): the header-parsing
    cost is paid by both sides."""
    import wfdb

    from modfuse.data.readers import WfdbSource
    from modfuse.data.readers.physio import _cached_header

    names = ["100", "s0010_re", "a103l", "03700181", "p10143"]
    paths = {f"{r}#{k}": DATA / "ecg-wfdb" / r for k in range(12) for r in names}
    src = WfdbSource(paths, duration=10.0, invalid_lead="zero")
    rate = {r: wfdb.rdheader(str(DATA / "ecg-wfdb" / r)).fs for r in names}  # a plain loop knows its rates

    def reader(sid: str) -> torch.Tensor:
        _cached_header.cache_clear()
        return src.load(sid)

    def plain(sid: str) -> torch.Tensor:
        r = sid.split("#")[0]
        signal, _ = wfdb.rdsamp(str(DATA / "ecg-wfdb" / r), sampto=round(10 * rate[r]))
        return torch.from_numpy(np.nan_to_num(np.ascontiguousarray(signal.T, dtype=np.float32)))

    return "wfdb 10 s of a record (header uncached)", reader, plain, src.ids


def dicom_window_case() -> tuple[str, Callable, Callable, list]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_rescale, apply_windowing

    from modfuse.data.readers import DicomSource

    path = get_testdata_file("MR_small.dcm")  # WindowCenter 600, WindowWidth 1600, 16-bit signed
    src = DicomSource({i: path for i in range(300)})

    def plain(_: int) -> torch.Tensor:
        ds = pydicom.dcmread(path)
        values = apply_windowing(apply_rescale(ds.pixel_array, ds), ds)  # onto [-32768, 32767]
        return torch.from_numpy(((values + 32768) / 65535).astype(np.float32)[None])

    return "dicom MR file window", src.load, plain, src.ids


def dicom_case() -> tuple[str, Callable, Callable, list]:
    import pydicom
    from pydicom.data import get_testdata_file

    from modfuse.data.readers import DicomSource

    path = get_testdata_file("CT_small.dcm")
    src = DicomSource({i: path for i in range(200)}, window=None)

    def plain(_: int) -> torch.Tensor:
        ds = pydicom.dcmread(path)
        return torch.from_numpy(pydicom.pixels.apply_rescale(ds.pixel_array, ds).astype(np.float32)[None])

    return "dicom CT (HU)", src.load, plain, src.ids


def raster_case() -> tuple[str, Callable, Callable, list]:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    from modfuse.data.readers import RasterChipSource

    src = RasterChipSource(DATA / "sentinel2-l1c", size=128)

    def plain(sid: str) -> torch.Tensor:
        bounds = src.chip_bounds(sid)
        out = []
        for f in src._files:
            with rasterio.open(f) as r:
                w = from_bounds(*bounds, transform=r.transform)
                out.append(r.read(1, window=w, out_shape=(128, 128), resampling=Resampling.bilinear))
        return torch.from_numpy(np.stack(out).astype(np.float32))

    return "raster 13-band chip 128", src.load, plain, src.ids[:40]


def eopatch_case() -> tuple[str, Callable, Callable, list]:
    from modfuse.data.readers import EOPatchSeriesSource

    src = EOPatchSeriesSource(DATA / "eopatch-slovenia")
    # the arrays as a plain loop holds them: (T, H, W, C) as the EOPatch files store them
    values, valid = np.ascontiguousarray(src.values), np.ascontiguousarray(src.valid)

    def plain(sid: str) -> dict[str, torch.Tensor]:
        r, c = src._where(sid)
        return {"x": torch.from_numpy(values[:, r, c].copy()), "valid": torch.from_numpy(valid[:, r, c].copy())}

    return "eopatch pixel series", src.load, plain, src.ids[:3000]


def tabular_case() -> tuple[str, Callable, Callable, list]:
    from modfuse.data.readers import TabularSchema, TabularSource
    from modfuse.data.transforms import Standardizer

    frame = pd.read_csv(DATA / "esol" / "delaney-processed.csv")
    cols = ["Minimum Degree", "Molecular Weight", "Number of H-Bond Donors", "Number of Rings"]
    src = TabularSource(frame, TabularSchema(numeric=cols))
    values = frame[cols].to_numpy(np.float32)
    scaler = Standardizer.fit(values)
    return "tabular row", src.load, lambda i: torch.from_numpy(scaler.transform(values[i])), src.ids


def loader_rate(workers: int) -> float:
    from torch.utils.data import DataLoader

    from modfuse.data import MultiModalDataset
    from modfuse.data.readers import SmilesSource, TabularSchema, TabularSource

    frame = pd.read_csv(DATA / "esol" / "delaney-processed.csv")
    cols = ["Minimum Degree", "Molecular Weight", "Number of H-Bond Donors", "Number of Rings"]
    ds = MultiModalDataset(
        {"mol": SmilesSource(frame["smiles"].tolist()), "desc": TabularSource(frame, TabularSchema(numeric=cols))},
        targets=frame["measured log solubility in mols per litre"].to_numpy(np.float32),
    )
    loader = DataLoader(ds, batch_size=64, num_workers=workers, collate_fn=ds.collate_fn)
    start = time.perf_counter()
    n = sum(len(batch) for batch in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="passes per side; the best is kept (default 5)")
    parser.add_argument("--only", nargs="*", default=[], help="run the cases whose name contains one of these")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    cases = (smiles_case, wfdb_case, wfdb_record_case, dicom_case, dicom_window_case, raster_case, eopatch_case)
    for case in (*cases, tabular_case):
        name, reader, plain, ids = case()
        if args.only and not any(word in name for word in args.only):
            continue
        r, p = rates([reader, plain], ids, repeats=args.repeats)
        rows.append(
            {"reader": name, "reader samples/CPU s": r, "plain samples/CPU s": p, "overhead %": 100 * (p / r - 1)}
        )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    print()
    for workers in () if args.only else (0, 2):
        print(f"DataLoader ESOL (SMILES graph + descriptors), batch 64, workers={workers}: "
              f"{loader_rate(workers):,.0f} samples/s")  # fmt: skip


if __name__ == "__main__":
    main()
