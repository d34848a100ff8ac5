"""A preprocessing cache: decode every modality of a dataset once, read it back fast.

`write_cache()` runs each sample of a [`MultiModalDataset`][modfuse.data.MultiModalDataset] through its
own sources (so a DICOM arrives windowed and resized, a raster as a chip, a WFDB record as
windows, a SMILES string as a PyG graph, a table row as an array: whatever the source's
``load`` returns) and stores the values in shards; `load_cache()` returns a
``MultiModalDataset`` whose sources are `CachedSource` objects reading those shards, so
the datamodule, collate and samplers work unchanged. `CachedDataModule` trains from a
cache folder (the recipe key: ``data: {class_path: modfuse.data.datamodules.cached.CachedDataModule,
init_args: {cache_dir: DIR}}``) and `ShardEpochSampler` reads it in shard order, each
DDP rank (and each DataLoader worker) its own run of whole shards.

Format (``modfuse-cache/1``), chosen after comparing LitData, zarr and safetensors shards:

- one ``shard-NNNNN.safetensors`` file per run of consecutive samples (at most ``shard_size``
  samples and about ``shard_bytes`` bytes: a 512 x 512 float32 image is 1 MiB), with one tensor
  per stored value (``"{row}/{modality}"``, or ``"{row}/{modality}/{field}"`` for dicts and PyG
  graphs) and the non-tensor parts (a graph's ``smiles``) as JSON in the file's metadata;
- ``meta.safetensors``: presence (N, M) bool, the shard of each sample and the targets with
  their dtypes; ``index.json``: ids, modalities, collate modes, groups, splits and the
  preprocessing read errors.

Why safetensors shards: (1) exact round trips: a tensor comes back with its dtype, shape and
bytes, and a PyG graph is rebuilt from its tensors and JSON attributes, without pickle (the
project never unpickles a user file; LitData's ``optimize`` serialises objects such as graphs
with pickle, and zarr has no natural home for ragged graphs, dicts of tensors and per-sample
shapes); (2) random access: the header of a shard gives the byte range of every value, and one
value is one positional read of those bytes, without touching the others, which the map-style
datasets, the random splits and the resumable samplers of this library need, while streaming
formats (WebDataset tars, LitData chunks) are built for sequential reads; (3) disjoint shards per
rank / worker come from the sampler, which can hand each rank a contiguous run of shards
because the shard of every sample is known up front. Presence is kept per sample: a missing
modality has no tensor at all (not a zero-filled one). Shards are plain files, so the same
folder works on a local disk, a shared file system (many nodes read it at once) or object
storage mounted as a file system (s3fs, gcsfuse); a node can also copy its ranks' shards to a
local disk first.

Memory when reading: a process (the main one or each DataLoader worker) holds the index (ids,
presence, targets: a few bytes per sample) and the values it is returning, nothing of the
shards themselves. The shard bytes pass through the operating system's page cache, which is
shared by all processes, reclaimable, and in no process's resident set, so a reader's peak RSS
is its baseline plus the batches in flight and depends neither on the number of samples nor on
``shard_bytes`` (measured: ``benchmarks/results/pipeline.md``). Each value is read into a new
tensor, and a DataLoader worker hands the C heap's freed pages back to the system whenever it
closes a shard (glibc's ``malloc_trim``; without it the workers' heaps fragmented and grew
with the number of samples read). An earlier version memory-mapped the shards (safetensors'
``safe_open``): every page read stayed resident until its shard was closed, up to
``max_open`` x ``shard_bytes`` (512 MiB) per process. The shard size now only sets the unit of
the shard-order shuffle and of the per-rank split (larger shards: more samples mixed inside a
batch) and the number of files.

Values are cached after the dataset's per-modality ``transforms``: those must be deterministic
preprocessing; random augmentation belongs in the datamodule's ``train_transform`` (applied to
batches read from the cache, as from files).
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import shutil
import struct
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from modfuse.data.collate import CollateMode
from modfuse.data.dataset import MultiModalDataset
from modfuse.errors import ModfuseError, ReadError
from modfuse.utils.moved import moved_names

__all__ = [
    "FORMAT",
    "CacheReport",
    "CacheStore",
    "CachedSource",
    "ShardEpochSampler",
    "load_cache",
    "write_cache",
]

FORMAT = "modfuse-cache/1"
_JSON_SCALARS = (str, int, float, bool, type(None))


# ---------------------------------------------------------------------------- encoding values
def _encode(value: Any, key: str, modality: str, sample_id: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One value -> (tensors by key, entry) where entry = {"kind", "fields", "extra"}."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return {key: _plain(value)}, {"kind": "tensor"}
    if _is_graph(value):
        items, kind = dict(value.items()), "graph"
    elif isinstance(value, Mapping):
        items, kind = dict(value), "dict"
    else:
        raise ModfuseError(
            f"cannot cache a value of type {type(value).__name__}: expected a Tensor, an array, a dict of "
            "tensors or a PyG graph",
            modality=modality,
            sample_id=sample_id,
        )
    tensors, extra = {}, {}
    for name, item in items.items():
        if isinstance(item, np.ndarray):
            item = torch.from_numpy(np.ascontiguousarray(item))
        if isinstance(item, torch.Tensor):
            tensors[f"{key}/{name}"] = _plain(item)
        elif isinstance(item, _JSON_SCALARS):
            extra[str(name)] = item
        else:
            raise ModfuseError(
                f"cannot cache field {name!r} of type {type(item).__name__} (tensors and JSON scalars only)",
                modality=modality,
                sample_id=sample_id,
            )
    return tensors, {"kind": kind, "fields": [k.rsplit("/", 1)[1] for k in tensors], "extra": extra}


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    # safetensors stores contiguous tensors that share no memory with another stored one
    return tensor.detach().cpu().contiguous().clone()


def _is_graph(value: Any) -> bool:
    return hasattr(value, "edge_index") and hasattr(value, "num_nodes") and hasattr(value, "items")


def _decode(handle: Any, key: str, entry: Mapping[str, Any]) -> Any:
    if entry["kind"] == "tensor":
        return handle.get_tensor(key)
    values: dict[str, Any] = {name: handle.get_tensor(f"{key}/{name}") for name in entry["fields"]}
    values.update(entry["extra"])
    if entry["kind"] == "dict":
        return values
    from torch_geometric.data import Data

    return Data(**values)


# ---------------------------------------------------------------------------- writing
@dataclass
class CacheReport:
    """What `write_cache()` wrote.

    Attributes:
        path: the cache folder. n_samples, n_shards: sizes. present: modality -> stored values.
        read_errors: ``{"id", "modality", "error"}`` per value marked missing because its file
            was bad (``on_error="missing"``). seconds: wall time.
    """

    path: Path
    n_samples: int
    n_shards: int
    present: dict[str, int]
    read_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class _Decoding(Dataset):
    """dataset[i] in a worker; an exception comes back as a marker (it is re-raised in the
    main process by reading the sample again, so the user sees the dataset's own error)."""

    def __init__(self, dataset: MultiModalDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except Exception as exc:
            return {"failed": index, "error": f"{type(exc).__name__}: {exc}"}


def _first(items: list[Any]) -> Any:
    return items[0]


def write_cache(
    dataset: MultiModalDataset,
    out_dir: str | os.PathLike[str],
    *,
    shard_size: int = 1024,
    shard_bytes: int = 256 * 2**20,
    num_workers: int = 0,
    splits: Mapping[str, Sequence[int]] | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CacheReport:
    """Decode every sample of ``dataset`` once and store it in a cache folder.

    The folder is written under a temporary name beside ``out_dir`` and renamed when complete,
    so an interrupted run leaves no half-written cache behind.

    Args:
        dataset: the dataset; its ``on_error`` decides what a bad file does: ``"raise"`` stops
            with the dataset's error (naming the file, sample and modality); ``"missing"``
            stores no value for that modality and sample and records the error in the cache's
            read-error report (`CacheReport.read_errors`, ``index.json``).
        out_dir: the cache folder to create.
        shard_size: at most this many samples per shard (consecutive dataset indices).
        shard_bytes: a shard is closed once its tensors reach this many bytes. Readers do not
            hold shards in memory (values are read one by one), so this sets the unit of the
            shard-order shuffle (`ShardEpochSampler` mixes samples within a shard) and the
            number of files, not the readers' memory.
        num_workers: DataLoader worker processes decoding in parallel.
        splits: optional ``{"train": idx, ...}`` saved with the cache (used by
            `CachedDataModule`).
        overwrite: replace an existing ``out_dir``.
        progress: optional callable ``(done, total)`` called after each shard.

    Returns:
        A `CacheReport`.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ModfuseError(f"the cache folder {out} exists already (pass overwrite=True to replace it)")
    if shard_size < 1:
        raise ModfuseError(f"shard_size must be >= 1, found {shard_size}")
    ids = [_json_id(sid) for sid in dataset.ids]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        modalities = dataset.modalities
        n = len(dataset)
        presence = np.zeros((n, len(modalities)), dtype=bool)
        errors: list[dict[str, Any]] = []
        loader = DataLoader(_Decoding(dataset), batch_size=1, num_workers=num_workers, collate_fn=_first)
        shard: dict[str, torch.Tensor] = {}
        entries: dict[str, Any] = {}
        n_shards, size, starts = 0, 0, [0]  # starts: the first row of each shard
        for index, item in enumerate(loader):
            if "failed" in item:
                dataset[item["failed"]]  # raises the dataset's own error, naming file and modality
                raise ModfuseError(f"sample {dataset.ids[index]!r} failed in a worker: {item['error']}")
            for sid, modality, message in item.get("errors", ()):
                errors.append({"id": _json_id(sid), "modality": modality, "error": message})
            for j, modality in enumerate(modalities):
                value = item["inputs"][modality]
                if value is None:
                    continue
                key = f"{index}/{modality}"
                tensors, entry = _encode(value, key, modality, dataset.ids[index])
                shard.update(tensors)
                size += sum(t.numel() * t.element_size() for t in tensors.values())
                entries[key] = entry
                presence[index, j] = True
            if index + 1 - starts[-1] >= shard_size or size >= shard_bytes or index + 1 == n:
                _save_shard(tmp / _shard_name(n_shards), shard, entries)
                shard, entries, n_shards, size = {}, {}, n_shards + 1, 0
                starts.append(index + 1)
                if progress is not None:
                    progress(index + 1, n)
        if n == 0:
            raise ModfuseError("the dataset has no samples to cache")
        _save_meta(tmp, dataset, ids, presence, starts[:-1], splits, errors)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    present = {m: int(presence[:, j].sum()) for j, m in enumerate(modalities)}
    return CacheReport(out, n, n_shards, present, errors, time.perf_counter() - start)


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


def _save_shard(path: Path, tensors: dict[str, torch.Tensor], entries: dict[str, Any]) -> None:
    save_file(tensors, str(path), metadata={"modfuse": json.dumps(entries)})


def _json_id(sample_id: Hashable) -> Any:
    if isinstance(sample_id, (np.integer, np.str_)):
        sample_id = sample_id.item()
    if not isinstance(sample_id, (str, int)) or isinstance(sample_id, bool):
        raise ModfuseError(f"cache sample ids must be strings or integers, found {sample_id!r}")
    return sample_id


def _save_meta(
    folder: Path,
    dataset: MultiModalDataset,
    ids: list[Any],
    presence: np.ndarray,
    starts: list[int],
    splits: Mapping[str, Sequence[int]] | None,
    errors: list[dict[str, Any]],
) -> None:
    meta = {"presence": torch.from_numpy(presence)}
    targets = dataset.targets
    if isinstance(targets, dict):
        meta.update({f"target/{k}": torch.from_numpy(np.array(v)) for k, v in targets.items()})
    elif targets is not None:
        meta["target"] = torch.from_numpy(np.array(targets))  # a copy: targets are read-only views
    save_file(meta, str(folder / "meta.safetensors"))
    groups = None if dataset.groups is None else [_json_id(g) for g in dataset.groups.tolist()]
    index = {
        "format": FORMAT,
        "ids": ids,
        "modalities": {m: {"collate": c} for m, c in dataset.collate_modes.items()},
        "shard_starts": starts,
        "multitask": isinstance(targets, dict),
        "groups": groups,
        "splits": None if splits is None else {k: [int(i) for i in v] for k, v in splits.items()},
        "read_errors": errors,
    }
    (folder / "index.json").write_text(json.dumps(index))


# ---------------------------------------------------------------------------- reading
# safetensors dtype names (the format's header) -> torch dtypes; the optional ones exist in newer torch
_DTYPES: dict[str, torch.dtype] = {
    name: dtype
    for name, dtype in {
        "BOOL": torch.bool,
        "U8": torch.uint8,
        "I8": torch.int8,
        "I16": torch.int16,
        "U16": getattr(torch, "uint16", None),
        "I32": torch.int32,
        "U32": getattr(torch, "uint32", None),
        "I64": torch.int64,
        "U64": getattr(torch, "uint64", None),
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "F32": torch.float32,
        "F64": torch.float64,
        "C64": torch.complex64,
        "F8_E4M3": getattr(torch, "float8_e4m3fn", None),
        "F8_E5M2": getattr(torch, "float8_e5m2", None),
    }.items()
    if dtype is not None
}
_MAX_HEADER = 100_000_000  # the limit safetensors itself puts on a header


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None with another C library: musl, macOS, Windows)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def _release_freed_memory() -> None:
    """In a DataLoader worker, give the free pages of the C heap back to the system (called
    once per shard the worker closes).

    Why: each value read is a new tensor (an image, a chip: 0.5-1 MiB). glibc serves such
    sizes from its heap once its mmap threshold has risen (after the first large free), and in
    DataLoader workers, which also allocate and free each batch before it goes to shared
    memory, that heap fragments and is not returned: a worker reading a 20k-sample GeoTIFF
    cache grew from 0.8 to 1.6-1.9 GiB (``benchmarks/results/pipeline.md``). Trimming once per
    shard keeps it flat; a value in its own memory map did too, at twice the CPU per value.
    Not in the main process: reading there (0 workers) did not grow, and a trim walks the whole
    heap (40 ms for a fragmented 0.5 GB one), which a training process can have.
    """
    trim = _malloc_trim()
    if trim is not None and get_worker_info() is not None:
        trim(0)


class _Shard:
    """One shard file, its values read with positional reads into fresh tensors.

    Not a memory map (safetensors' ``safe_open``): a mapped page a reader has touched stays in
    its resident set until the map is closed, so each process (and each DataLoader worker)
    held up to ``max_open`` x ``shard_bytes`` of shard pages; a positional read leaves the
    bytes in the OS page cache only, so a reader's memory is the values it returns. The file
    is the safetensors layout (8-byte little-endian header length, JSON header of
    ``dtype``, ``shape`` and ``data_offsets`` per tensor, then the data), written by
    ``safetensors.torch.save_file``.
    """

    def __init__(self, path: Path) -> None:
        if sys.byteorder != "little":
            raise ReadError("the cache stores little-endian values; this host is big-endian", path=path)
        self.path, self._lock = path, threading.Lock()
        self._file = open(path, "rb")  # closed by close(), when the store drops the shard
        try:
            size = os.fstat(self._file.fileno()).st_size
            (length,) = struct.unpack("<Q", self._read(8, 0))
            if not 0 < length <= min(_MAX_HEADER, size - 8):
                raise ReadError(f"not a safetensors shard: header length {length} in a file of {size} bytes", path=path)
            try:
                header = json.loads(self._read(length, 8))
            except ValueError as exc:
                raise ReadError(f"not a safetensors shard: its header is not JSON ({exc})", path=path) from exc
            if not isinstance(header, dict):
                raise ReadError("not a safetensors shard: its header is not a JSON object", path=path)
            self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
            self._tensors: dict[str, dict[str, Any]] = header
            self._data, self._size = 8 + length, size
        except BaseException:
            self._file.close()
            raise

    def get_tensor(self, key: str) -> torch.Tensor:
        """The stored tensor ``key`` (its dtype and shape), read into a new tensor."""
        info = self._tensors[key]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ReadError(f"value {key!r} has dtype {info['dtype']!r}, which this torch cannot hold", path=self.path)
        begin, end = info["data_offsets"]
        expected = math.prod(info["shape"]) * torch.empty(0, dtype=dtype).element_size()
        if not 0 <= begin <= end or end - begin != expected:
            raise ReadError(
                f"value {key!r}: byte range [{begin}, {end}) does not hold shape {info['shape']} of {info['dtype']}",
                path=self.path,
            )
        if self._data + end > self._size:
            raise ReadError(
                f"the shard is truncated: value {key!r} ends at byte {self._data + end}, the file has {self._size}",
                path=self.path,
            )
        raw = torch.empty(end - begin, dtype=torch.uint8)
        self._read_into(raw.numpy().data, self._data + begin)  # the tensor's own bytes
        return raw.view(dtype).reshape(info["shape"])

    def keys(self) -> list[str]:
        return list(self._tensors)

    def close(self) -> None:
        self._file.close()

    def _read(self, n: int, offset: int) -> bytes:
        buffer = bytearray(n)
        self._read_into(memoryview(buffer), offset)
        return bytes(buffer)

    def _read_into(self, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):  # positional: no shared file offset, safe from any thread
                got = os.preadv(self._file.fileno(), [view[done:]], offset + done)
            else:  # Windows: no positional read in os
                with self._lock:
                    self._file.seek(offset + done)
                    got = self._file.readinto(view[done:])
            if not got:
                raise ReadError(
                    f"the shard ended at byte {offset + done}, expected {len(view) - done} more", path=self.path
                )
            done += got


class CacheStore:
    """Random access to a cache folder's values (shards are opened lazily, once per process).

    Args:
        path: the folder written by `write_cache()`.

    Attributes:
        ids: the sample ids, in dataset order.
        modalities: modality -> ``{"collate": mode}``.
        presence: (N, M) bool, which sample has which modality.
        shard_starts: the first row of each shard. n_shards: their number.
        groups, splits, read_errors: as saved by `write_cache()`.
        max_open: shard files kept open at once per process (least recently used closed);
            an open shard costs a file descriptor and its parsed header, not its data.
    """

    def __init__(self, path: str | os.PathLike[str], max_open: int = 2) -> None:
        self.path, self.max_open = Path(path), max_open
        index_file = self.path / "index.json"
        if not index_file.is_file():
            raise ReadError("expected a modfuse cache folder (index.json), found none", path=self.path)
        index = json.loads(index_file.read_text())
        if index.get("format") != FORMAT:
            raise ReadError(f"expected cache format {FORMAT!r}, found {index.get('format')!r}", path=index_file)
        self.ids: list[Any] = index["ids"]
        self.modalities: dict[str, dict[str, Any]] = index["modalities"]
        self.shard_starts = np.asarray(index["shard_starts"], dtype=np.int64)
        self.n_shards = len(self.shard_starts)
        self.groups = index["groups"]
        self.splits = index["splits"]
        self.read_errors: list[dict[str, Any]] = index["read_errors"]
        self._multitask = index["multitask"]
        meta = _Shard(self.path / "meta.safetensors")
        try:
            self.presence = meta.get_tensor("presence").numpy()
            self._meta = {k: meta.get_tensor(k).numpy() for k in meta.keys() if k != "presence"}
        finally:
            meta.close()
        self.row = {sid: i for i, sid in enumerate(self.ids)}
        self._handles: dict[int, tuple[_Shard, dict[str, Any]]] = {}  # insertion order = recency
        self._pid = os.getpid()

    @property
    def targets(self) -> np.ndarray | dict[str, np.ndarray] | None:
        if self._multitask:
            return {k.split("/", 1)[1]: v for k, v in self._meta.items()}
        return self._meta.get("target")

    def shard_of(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """The shard number of each dataset row."""
        return np.searchsorted(self.shard_starts, np.asarray(rows, dtype=np.int64), side="right") - 1

    def value(self, row: int, modality: str) -> Any:
        """The stored value of ``modality`` at dataset row ``row`` (None when not stored)."""
        handle, entries = self._handle(int(self.shard_of([row])[0]))
        key = f"{row}/{modality}"
        entry = entries.get(key)
        return None if entry is None else _decode(handle, key, entry)

    def _handle(self, shard: int) -> tuple[_Shard, dict[str, Any]]:
        if self._pid != os.getpid():  # a forked worker opens its own files (the parent's share an offset)
            self._handles, self._pid = {}, os.getpid()
        if shard in self._handles:
            self._handles[shard] = self._handles.pop(shard)  # most recently used last
        else:
            if len(self._handles) >= self.max_open:
                while len(self._handles) >= self.max_open:
                    self._handles.pop(next(iter(self._handles)))[0].close()
                _release_freed_memory()
            path = self.path / _shard_name(shard)
            try:
                handle = _Shard(path)
            except OSError as exc:
                raise ReadError(f"cannot open cache shard: {exc}", path=path) from exc
            try:
                entries = json.loads(handle.metadata["modfuse"])
            except (KeyError, ValueError) as exc:
                handle.close()
                raise ReadError(f"not a modfuse cache shard (no valid 'modfuse' metadata): {exc}", path=path) from exc
            self._handles[shard] = (handle, entries)
        return self._handles[shard]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # open files do not travel to worker processes
        return state


class CachedSource:
    """One modality of a cache, as a [`Source`][modfuse.data.Source].

    Args:
        store: the cache. modality: the modality name. collate: collate mode (default: the
            one saved with the cache, i.e. the original source's).

    ``load(sample_id)`` returns the value the original source returned (same type, dtype,
    shape and values); ``ids`` are the samples that have it.
    """

    def __init__(self, store: CacheStore, modality: str, collate: CollateMode | None = None) -> None:
        if modality not in store.modalities:
            raise ModfuseError(f"the cache has modalities {list(store.modalities)}, not {modality!r}")
        self.store, self.modality = store, modality
        column = list(store.modalities).index(modality)
        self.ids = [sid for sid, p in zip(store.ids, store.presence[:, column]) if p]
        self.collate: CollateMode = collate or store.modalities[modality]["collate"]

    def load(self, sample_id: Hashable) -> Any | None:
        row = self.store.row.get(sample_id)
        if row is None:
            raise ModfuseError(f"unknown sample id {sample_id!r}", modality=self.modality)
        return self.store.value(row, self.modality)

    def __len__(self) -> int:
        return len(self.ids)


def load_cache(
    path: str | os.PathLike[str], transforms: Mapping[str, Callable[[Any], Any]] | None = None
) -> MultiModalDataset:
    """A [`MultiModalDataset`][modfuse.data.MultiModalDataset] reading a cache folder.

    Args:
        path: the folder written by `write_cache()`.
        transforms: optional modality -> callable applied to each value read.

    Returns:
        The dataset, with the same ids, targets, groups and modalities as the cached one;
        its `read_errors` start with the errors found while preprocessing, and its
        ``cache`` attribute is the `CacheStore`.
    """
    store = CacheStore(path)
    sources = {m: CachedSource(store, m) for m in store.modalities}
    dataset = MultiModalDataset(
        sources, targets=store.targets, ids=store.ids, groups=store.groups, transforms=transforms
    )
    dataset.read_errors = list(store.read_errors)
    dataset.cache = store  # type: ignore[attr-defined]
    return dataset


# ---------------------------------------------------------------------------- shard-order sampling
class ShardEpochSampler(DistributedSampler):
    """Training order in whole shards: disjoint runs of shards per rank and per worker.

    Epoch ``e``'s order depends only on (seed, e): the shards are shuffled, then the samples
    inside each shard; the concatenation is cut into ``num_replicas`` contiguous, equal parts
    (the first samples are repeated to even them, as `DistributedSampler` does), so each
    rank reads its own run of shards (a rank shares at most its two boundary shards). Inside a
    rank, with ``num_workers > 1``, the rank's batches are split into one contiguous run per
    worker and interleaved so that the DataLoader's worker ``w`` (which gets batches
    ``w, w + W, ...``) reads run ``w``. ``resume`` works as in
    [`EpochSampler`][modfuse.data.datamodules.base.EpochSampler]: a pending ``(epoch, batches to skip)``
    starts the iteration part-way into that epoch.

    Args:
        shards: (n,) shard number of each position of the (training) subset.
        seed: shuffling seed (the same on every rank).
        batch_size: the per-process batch size.
        resume: callable returning the pending resume point or None.
        num_replicas, rank: the process group (default: the initialised one, else one process).
        num_workers: the DataLoader's worker processes.
    """

    def __init__(
        self,
        shards: np.ndarray | Sequence[int],
        seed: int,
        batch_size: int,
        resume: Callable[[], tuple[int, int] | None] | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        num_workers: int = 0,
    ) -> None:
        self.shards = np.asarray(shards, dtype=np.int64)
        if num_replicas is None and not torch.distributed.is_initialized():
            num_replicas, rank = 1, 0  # one process (DistributedSampler would ask the process group)
        # DistributedSampler only takes len() of its dataset: the shard positions stand in for it
        super().__init__(
            range(len(self.shards)),  # type: ignore[arg-type]  # torch types the argument Dataset; any Sized works
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
        )
        self.batch_size, self.resume, self.num_workers = batch_size, resume, num_workers
        self._explicit_epoch = False

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._explicit_epoch = True

    def order(self, epoch: int) -> list[int]:
        """This rank's positions for ``epoch`` (a whole epoch, before any resume skip)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        unique = np.unique(self.shards)
        full: list[int] = []
        for k in torch.randperm(len(unique), generator=generator).tolist():
            members = np.flatnonzero(self.shards == unique[k])
            full.extend(members[torch.randperm(len(members), generator=generator).numpy()].tolist())
        full += full[: self.total_size - len(full)]  # even parts, as DistributedSampler pads
        mine = full[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]
        return _per_worker(mine, self.batch_size, self.num_workers)

    def __iter__(self) -> Iterator[int]:
        point = self.resume() if self.resume else None
        epoch, skip = point or (self.epoch, 0)
        if not self._explicit_epoch:  # without set_epoch, each iteration moves to the next epoch
            self.epoch = epoch + 1
        self._explicit_epoch = False
        return iter(self.order(epoch)[skip * self.batch_size :])

    def __len__(self) -> int:
        return self.num_samples


def _per_worker(order: list[int], batch_size: int, workers: int) -> list[int]:
    """Reorder whole batches so that worker ``w`` of ``workers`` gets a contiguous run."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if workers <= 1 or len(batches) <= workers:
        return order
    tail = batches.pop() if len(batches[-1]) < batch_size else None  # a short batch must stay last
    runs = [
        batches[math.floor(w * len(batches) / workers) : math.floor((w + 1) * len(batches) / workers)]
        for w in range(workers)
    ]
    out: list[int] = []
    for step in range(max(map(len, runs))):
        for run in runs:
            if step < len(run):
                out.extend(run[step])
    return out + (tail or [])


# the datamodule moved to the datamodules; its old class path (written by ``modfuse prepare-cache``
# and the docs) keeps working
__getattr__ = moved_names(__name__, {"CachedDataModule": "modfuse.data.datamodules.cached"})
