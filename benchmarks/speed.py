"""Speed and memory: modfuse's training path against a hand-written PyTorch loop on the same
model and data; inference time with k of M modalities present; merge time of Lego blocks.

Data: M in-memory tabular modalities (real-valued features drawn once from a fixed seed), each
missing for 20% of the samples (at least one modality kept per sample), binary target. Timing
data need not be real; the model and batches are the same on every path.

Training paths, each from the same initial weights, for the same epochs over the same
``DataLoader`` (``MultiModalDataModule.train_dataloader()``: shuffled, per-sample collate into a
``ModalityBatch``), AdamW (lr 1e-3, weight decay 1e-4), the same loss, no LR schedule and no
validation:

- ``modfuse``: ``FusionTask`` + ``lightning.Trainer`` (no validation, checkpointing, logger or
  progress bar). ``FusionTask`` builds AdamW with torch's fused kernel where the device
  supports it (CPU and CUDA), as it does for every user;
- ``plain loop``: ``for batch in loader: loss.backward(); opt.step()`` with
  ``torch.optim.AdamW(model.parameters(), ...)`` as a user writes it (torch's default
  implementation): the target comparison;
- ``plain loop, fused AdamW``: the same loop with the fused optimizer, so the gap to ``modfuse``
  is the training loop's own overhead (Lightning's hooks and optimizer closure);
- ``plain loop, pre-collated``: the fused loop over batches collated once beforehand (model
  compute only: the floor that no data pipeline can beat).

Throughput counts the epochs after the first: the first epoch (and, for ``modfuse``, the
Trainer's setup) is warm-up, reported apart as "setup + first epoch". The paths run
interleaved in each repeat, so a load change on the machine hits all of them; the table gives
the median over repeats and every ratio is between numbers of the same run.
Lego strategies use the latent given by ``Settings.lego_latent`` (stated in the table).

Each path's CPU time (``time.process_time``) over the same epochs is recorded as well: on a
shared machine it is the steadier measure of the work each path does per step.

Peak memory is the peak resident set size of the process during the run minus the resident
size before it, sampled every 2 ms (CPU; on CUDA ``torch.cuda.max_memory_allocated``).
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from benchmarks import common


@dataclass
class Settings:
    samples: int = 4096
    modalities: int = 3
    features: int = 32
    batch_size: int = 64
    epochs: int = 4  # the first is warm-up: throughput is measured over the others
    repeats: int = 3
    lego_latent: tuple[int, int] = (16, 64)
    lego_samples: int = 1024  # Lego blocks are ~50x slower per sample than the other models
    inference_modalities: int = 4
    inference_batch: int = 512
    merge_blocks: int = 4


QUICK = Settings(samples=2048, epochs=3, repeats=3, lego_samples=512)


class PeakRSS:
    """Peak resident memory (bytes) above the starting level, sampled by a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page = 4096
        self._stop = threading.Event()

    def _rss(self) -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * self.page
        except OSError:
            return 0

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


def data(s: Settings, modalities: int | None = None, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    m = modalities or s.modalities
    rng = np.random.default_rng(seed)
    x = {f"m{i}": rng.normal(size=(s.samples, s.features)).astype(np.float32) for i in range(m)}
    w = rng.normal(size=(m, s.features))
    logit = sum(x[f"m{i}"] @ w[i] for i in range(m)) / np.sqrt(m * s.features)
    y = (logit + 0.5 * rng.normal(size=s.samples) > 0).astype(np.float32)
    missing = rng.random((s.samples, m)) < 0.2
    missing[missing.all(1), 0] = False
    for i in range(m):
        x[f"m{i}"][missing[:, i]] = np.nan
    return x, y


def encoders(s: Settings, modalities: int | None = None) -> dict[str, nn.Module]:
    from modfuse.encoders import build

    return {
        f"m{i}": build("tabular", num_features=s.features, hidden=(64,), out_dim=32, dropout=0.0)
        for i in range(modalities or s.modalities)
    }


def _plain_loop(
    model: nn.Module, batches: Any, epochs: int, lr: float, fused: bool | None = None
) -> tuple[float, float, float]:
    """The hand-written loop; returns (seconds of the first epoch, seconds of the others, CPU
    seconds of the others). ``fused``: AdamW's fused kernel (None: torch's default)."""
    spec = next(iter(model.tasks.values()))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4, fused=fused)
    model.train()
    start = time.perf_counter()
    marks, cpu_marks = [], []
    for _ in range(epochs):
        for batch in batches:
            out = model(batch)
            loss = (
                model.compute_loss(out, batch)
                if hasattr(model, "compute_loss")
                else spec.loss(out.prediction, batch.target)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        marks.append(time.perf_counter())
        cpu_marks.append(time.process_time())
    return marks[0] - start, marks[-1] - marks[0], cpu_marks[-1] - cpu_marks[0]


class _EpochClock(Callback):
    """The wall and CPU times at which the first training epoch and the last one end."""

    first_end = last_end = first_cpu = last_cpu = 0.0

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if trainer.current_epoch == 0:
            self.first_end, self.first_cpu = now, cpu
        self.last_end, self.last_cpu = now, cpu


def _modfuse(model: nn.Module, dm: Any, epochs: int, lr: float) -> tuple[float, float, float]:
    """``FusionTask`` + ``Trainer.fit``; returns (seconds of setup + first epoch, seconds of the
    other epochs, from the end of the first epoch to the end of the last, and their CPU seconds)."""
    from modfuse import FusionTask

    task = FusionTask(model, lr=lr, weight_decay=1e-4, scheduler=None)
    clock = _EpochClock()
    tr = common.trainer(epochs, limit_val_batches=0, num_sanity_val_steps=0)
    tr.callbacks.append(clock)
    start = time.perf_counter()
    tr.fit(task, dm)
    return clock.first_end - start, clock.last_end - clock.first_end, clock.last_cpu - clock.first_cpu


PATHS = ("modfuse", "plain loop", "plain loop, fused AdamW", "plain loop, pre-collated")


def training(s: Settings, log: Callable[[str], None]) -> pd.DataFrame:
    from modfuse import MultiModalDataModule, MultiModalDataset

    if s.epochs < 2:
        raise ValueError("speed needs at least 2 epochs (the first is warm-up)")
    rows = []
    for strategy in common.strategies():
        lego = strategy in common.LEGO
        n = min(s.samples, s.lego_samples) if lego else s.samples
        x, y = data(Settings(samples=n, modalities=s.modalities, features=s.features))
        ds = MultiModalDataset.from_arrays(x, y)
        kwargs: dict[str, Any] = {"modality": "m0"} if strategy == "unimodal" else {}
        if lego:
            kwargs["latent_shape"] = s.lego_latent
        common.seed_all(0)
        try:
            init = common.build_strategy(strategy, lambda: encoders(s), "binary", **kwargs)
        except Exception as exc:
            log(f"  {strategy}: cannot build ({exc})")
            continue
        dm = MultiModalDataModule(
            ds, split="random", val_fraction=0.1, test_fraction=0.1, batch_size=s.batch_size, seed=0
        )
        dm.setup()
        n_train = len(dm.splits["train"])
        precollated = list(dm.train_dataloader())
        times: dict[str, list[float]] = {p: [] for p in PATHS}
        cpu_times: dict[str, list[float]] = {p: [] for p in PATHS}
        warmup: dict[str, list[float]] = {p: [] for p in PATHS}
        memory: dict[str, list[float]] = {p: [] for p in PATHS}
        for _ in range(s.repeats):  # interleaved, so a load change on the machine hits every path
            for path in PATHS:
                model = copy.deepcopy(init)
                common.seed_all(0)
                with PeakRSS() as mem:
                    if path == "modfuse":
                        first, rest, cpu = _modfuse(model, dm, s.epochs, 1e-3)
                    elif path == "plain loop":
                        first, rest, cpu = _plain_loop(model, dm.train_dataloader(), s.epochs, 1e-3)
                    elif path == "plain loop, fused AdamW":
                        first, rest, cpu = _plain_loop(model, dm.train_dataloader(), s.epochs, 1e-3, fused=True)
                    else:
                        first, rest, cpu = _plain_loop(model, precollated, s.epochs, 1e-3, fused=True)
                times[path].append(n_train * (s.epochs - 1) / rest)
                cpu_times[path].append(cpu)
                warmup[path].append(first)
                memory[path].append(mem.mib)
        med = {k: float(np.median(v)) for k, v in times.items()}
        # per-repeat ratios (same repeat, back to back) and their median: robust to drifting load
        per_repeat = [m / p for m, p in zip(times["modfuse"], times["plain loop"])]
        # CPU seconds of the timed epochs: every path runs in this one process on one torch
        # thread, so CPU time does not count the time other processes held the core (wall time does)
        cpu = {k: float(np.median(v)) for k, v in cpu_times.items()}
        for path in PATHS:
            rows.append(
                dict(
                    strategy=strategy,
                    path=path,
                    samples_per_s=med[path],
                    samples_per_s_all=";".join(f"{v:.0f}" for v in times[path]),
                    setup_first_epoch_s=float(np.median(warmup[path])),
                    peak_rss_mib=float(np.median(memory[path])),
                    ratio_to_plain_loop=med[path] / med["plain loop"],
                    ratio_to_plain_loop_per_repeat=";".join(
                        f"{a / b:.2f}" for a, b in zip(times[path], times["plain loop"])
                    ),
                    ratio_to_precollated=med[path] / med["plain loop, pre-collated"],
                    cpu_seconds=cpu[path],
                    ratio_to_plain_loop_cpu=cpu["plain loop"] / cpu[path],
                    cpu_ms_per_step=1e3 * cpu[path] / ((s.epochs - 1) * -(-n_train // s.batch_size)),
                    train_samples=n_train,
                    epochs=s.epochs,
                    timed_epochs=s.epochs - 1,
                    batch_size=s.batch_size,
                    latent=f"{s.lego_latent[0]}x{s.lego_latent[1]}" if lego else "",
                )
            )
        log(
            f"  {strategy}: modfuse {med['modfuse']:.0f}/s, plain loop {med['plain loop']:.0f}/s "
            f"(ratio {med['modfuse'] / med['plain loop']:.2f}; per repeat "
            f"{', '.join(f'{r:.2f}' for r in per_repeat)}; by CPU time {cpu['plain loop'] / cpu['modfuse']:.2f}), "
            f"fused {med['plain loop, fused AdamW']:.0f}/s, pre-collated {med['plain loop, pre-collated']:.0f}/s"
        )
    return pd.DataFrame(rows)


def inference(s: Settings, log: Callable[[str], None]) -> pd.DataFrame:
    from modfuse import MultiModalDataset

    m = s.inference_modalities
    x, y = data(Settings(samples=s.inference_batch, features=s.features), modalities=m)
    x = {k: np.nan_to_num(v, nan=0.1) for k, v in x.items()}  # every modality present; masked per k below
    ds = MultiModalDataset.from_arrays(x, y)
    full = ds.collate_fn([ds[i] for i in range(len(ds))])
    rows = []
    for strategy in common.strategies(exclude=("unimodal",)):
        common.seed_all(0)
        try:
            kw = {"latent_shape": s.lego_latent} if strategy in common.LEGO else {}
            model = common.build_strategy(strategy, lambda: encoders(s, m), "binary", **kw).eval()
        except Exception as exc:
            log(f"  {strategy}: cannot build ({exc})")
            continue
        for k in range(1, m + 1):
            batch = full.with_modalities([f"m{i}" for i in range(k)])
            with torch.no_grad():
                model(batch)  # warm-up
                reps = []
                for _ in range(5):
                    t = time.perf_counter()
                    model(batch)
                    reps.append(time.perf_counter() - t)
            rows.append(
                dict(
                    strategy=strategy,
                    present=k,
                    of=m,
                    batch=s.inference_batch,
                    ms_per_batch=1e3 * float(np.median(reps)),
                )
            )
        log(
            f"  {strategy}: "
            + ", ".join(f"k={r['present']} {r['ms_per_batch']:.1f} ms" for r in rows if r["strategy"] == strategy)
        )
    return pd.DataFrame(rows)


def merging(s: Settings, log: Callable[[str], None]) -> pd.DataFrame:
    try:
        from modfuse.lego import available_methods, merge
    except ImportError:
        log("  merge: modfuse.lego is not available, skipped")
        return pd.DataFrame()
    from modfuse.fusion import build

    common.seed_all(0)
    blocks = list(
        build("lego-merge", encoders=encoders(s, s.merge_blocks), tasks="binary", latent_shape=s.lego_latent).blocks
    )
    n_params = sum(p.numel() for b in blocks for p in b.parameters())
    rows = []
    # latent-space methods only: the prediction-space ones need calibrated blocks (trained on data)
    for method in available_methods(space="latent"):
        for head in ("mean", "slerp"):
            reps = []
            for _ in range(5):
                t = time.perf_counter()
                merge(blocks, method=method, head_merge=head)
                reps.append(time.perf_counter() - t)
            rows.append(
                dict(
                    method=method,
                    head_merge=head,
                    blocks=len(blocks),
                    block_parameters=n_params,
                    ms=1e3 * float(np.median(reps)),
                )
            )
    log(
        f"  merge of {len(blocks)} blocks: "
        + ", ".join(f"{r['method']}/{r['head_merge']} {r['ms']:.1f} ms" for r in rows)
    )
    return pd.DataFrame(rows)


def run(
    s: Settings, command: str, log: Callable[[str], None] = print, out_dir: Path = common.RESULTS
) -> dict[str, pd.DataFrame]:
    common.quiet()
    load_start = os.getloadavg()[0]
    train = training(s, log)
    infer = inference(s, log)
    merges = merging(s, log)
    tables: dict[str, pd.DataFrame] = {}
    if len(train):
        t = train.copy()
        t["samples/s"] = t["samples_per_s"].map(lambda v: f"{v:.0f}")
        t["setup + first epoch (s)"] = t["setup_first_epoch_s"].map(lambda v: f"{v:.2f}")
        t["peak RSS (MiB)"] = t["peak_rss_mib"].map(lambda v: f"{v:.1f}")
        t["x plain loop"] = t["ratio_to_plain_loop"].map(lambda v: f"{v:.2f}")
        t["x plain loop, per repeat"] = t["ratio_to_plain_loop_per_repeat"].str.replace(";", ", ")
        t["x pre-collated"] = t["ratio_to_precollated"].map(lambda v: f"{v:.2f}")
        t["x plain loop, CPU time"] = t["ratio_to_plain_loop_cpu"].map(lambda v: f"{v:.2f}")
        t["CPU ms per step"] = t["cpu_ms_per_step"].map(lambda v: f"{v:.2f}")
        tables[
            "Training throughput after the first epoch (median of repeats; ratio = samples/s over the plain loop's)"
        ] = t[
            [
                "strategy",
                "path",
                "train_samples",
                "samples/s",
                "x plain loop",
                "x plain loop, per repeat",
                "x plain loop, CPU time",
                "CPU ms per step",
                "x pre-collated",
                "setup + first epoch (s)",
                "peak RSS (MiB)",
            ]
        ]
    if len(infer):
        pivot = infer.pivot(index="strategy", columns="present", values="ms_per_batch").reset_index()
        pivot.columns = ["strategy", *[f"k={k} of {s.inference_modalities} (ms)" for k in pivot.columns[1:]]]
        for c in pivot.columns[1:]:
            pivot[c] = pivot[c].map(lambda v: f"{v:.1f}")
        tables[f"Inference time per batch of {s.inference_batch} with the first k of M modalities present"] = pivot
    if len(merges):
        mt = merges.copy()
        mt["ms"] = mt["ms"].map(lambda v: f"{v:.3f}")
        tables[f"Merge time of {s.merge_blocks} trained-size Lego blocks (no data)"] = mt
    raw = pd.concat(
        [train.assign(section="training"), infer.assign(section="inference"), merges.assign(section="merge")]
    )
    lat = f"{s.lego_latent[0]}x{s.lego_latent[1]}"
    notes = [
        f"training: {s.samples} samples ({s.lego_samples} for the Lego strategies), 80% of them trained on, "
        f"{s.modalities} tabular modalities of {s.features} features, 20% missing per modality, batch "
        f"{s.batch_size}, {s.epochs} epochs of which the first is warm-up (throughput over the other "
        f"{s.epochs - 1}), {s.repeats} interleaved repeats; same initial weights, DataLoader and loss on every path; "
        "AdamW: fused kernel in modfuse (FusionTask's choice on CPU/CUDA), 'plain loop' with torch's default "
        "implementation as a user writes it, 'fused AdamW' and 'pre-collated' with the fused kernel; "
        "no LR schedule, no validation",
        f"Lego strategies (training, inference, merge) use a {lat} latent",
        "peak RSS: resident memory above the level at the start of each run (CPU), sampled every 2 ms",
        "x plain loop, CPU time: the plain loop's CPU seconds over modfuse's for the timed epochs (median of "
        "repeats); every path runs in one process on one torch thread, so this ratio leaves out the time other "
        "processes held the core, which the wall-clock ratio includes; CPU ms per step: the same CPU seconds per "
        "training step",
        "the machine is shared (other processes may run): compare rows within one table, not across runs; "
        f"1-minute load average {load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end, on "
        f"{os.cpu_count()} cores (a load above the core count means other processes competed for the CPU)",
    ]
    common.write_results(
        "speed", "Speed and memory", tables, raw, command=command, seeds="0", notes=notes, out_dir=out_dir
    )
    return {"training": train, "inference": infer, "merge": merges}


__all__ = ["PeakRSS", "Settings", "run"]
