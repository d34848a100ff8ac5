"""Lego benchmark: block overhead, merge wall time, memory against input length, subset inference.

Run: ``python -m benchmarks.lego [--batch 64] [--threads 1] [--quick]``. Prints four tables:

1. LegoBlock forward+backward time / (bare encoder + linear head) at batch ``--batch`` for the
   X-ray (DenseNet121), ECG (1-D ResNet), spectral (ResNet-18) and tabular encoders at their
   default sizes (target <= 1.10 for image/signal encoders); for tabular, smaller latents too.
2. Merge wall time for N = 2..8 blocks (ECG blocks): ``merge()`` + merged head, and the same
   plus writing the safetensors file (what ``modfuse merge`` does). Target < 1 s.
3. Activation memory of a block against 1k..64k input tokens at a fixed 64x64 latent (CUDA:
   peak allocated memory; CPU: bytes of tensors saved for backward). Target: linear.
4. Inference time of a 4-block merge (spectral encoders) with k of M = 4 modalities present
   for every sample. Target: proportional to k.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from modfuse.data.batch import ModalityBatch
from modfuse.encoders import build
from modfuse.fusion.heads import pool_tokens
from modfuse.lego import LegoBlock, merge, save


def full_batch(inputs: dict[str, Tensor], n: int) -> ModalityBatch:
    """Every sample has every modality in ``inputs``."""
    present = {m: torch.ones(n, dtype=torch.bool, device=x.device) for m, x in inputs.items()}
    return ModalityBatch(dict(inputs), present, ids=list(range(n)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    return timed_pair(fn, None, repeats, device)[0]


def timed_pair(
    a: Callable[[], object], b: Callable[[], object] | None, repeats: int, device: torch.device
) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, measured alternately (a, b, a, b, ...) after a warm-up
    of each, so that a change in machine load affects both alike."""
    fns = [a] if b is None else [a, b]
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[i].append(time.perf_counter() - t)
    medians = [statistics.median(t) for t in times]
    return medians[0], medians[-1]


class Bare(nn.Module):
    """The baseline: encoder + a linear head over its (pooled) features."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(pool_tokens(self.encoder(x)))


class TokenEmbed(nn.Module):
    """A token encoder for any input length: (n, T, d_in) -> (n, T, out_dim)."""

    def __init__(self, d_in: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, out_dim)
        self.out_dim, self.out_tokens = out_dim, None

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def fwd_bwd(model: nn.Module, arg: object) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(arg).float().sum().backward()

    return step


def overhead_rows(args: argparse.Namespace, device: torch.device) -> list[tuple]:
    b = args.batch
    side = 64 if args.quick else 224
    samples = 1000 if args.quick else 5000
    cases = [
        ("xray DenseNet121", "xray", {}, (b, 1, side, side), (64, 64)),
        ("ecg ResNet1d", "ecg", {}, (b, 12, samples), (64, 64)),
        ("spectral ResNet18", "spectral", {"bands": 13}, (b, 13, 64, 64), (64, 64)),
    ]
    cases += [("tabular MLP", "tabular", {"num_features": 30}, (b, 30), ls) for ls in args.tab_latents]
    cases = [c for c in cases if c[1] in args.encoders]
    rows = []
    for label, name, kw, shape, latent in cases:
        torch.manual_seed(0)
        encoder = build(name, **kw).to(device)
        x = torch.randn(*shape, device=device)
        bare = Bare(encoder).to(device)
        block = LegoBlock(encoder, "m", latent_shape=latent).to(device)
        t_bare, t_block = timed_pair(fwd_bwd(bare, x), fwd_bwd(block, full_batch({"m": x}, b)), args.repeats, device)
        shape_txt = "x".join(map(str, shape[1:]))
        rows.append((label, shape_txt, f"{latent[0]}x{latent[1]}", t_bare * 1e3, t_block * 1e3, t_block / t_bare))
        print(f"  {label:<18} {shape_txt:<12} latent {latent} done", flush=True)
    return rows


def merge_rows(args: argparse.Namespace) -> list[tuple]:
    rows = []
    blocks = [LegoBlock({"name": "ecg"}, f"m{i}") for i in range(8)]
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(2, 9):
            t = time.perf_counter()
            merged = merge(blocks[:n])
            merged.head_params()
            t_merge = time.perf_counter() - t
            t = time.perf_counter()
            save(merged, Path(tmp) / f"m{n}.safetensors")
            t_save = time.perf_counter() - t
            params = sum(p.numel() for p in merged.parameters())
            rows.append((n, params / 1e6, t_merge, t_merge + t_save))
    return rows


def memory_rows(args: argparse.Namespace, device: torch.device) -> list[tuple]:
    d_in, n = 16, 2
    block = LegoBlock(TokenEmbed(d_in, 64), "m", latent_shape=(64, 64)).to(device)
    rows = []
    for k in args.tokens:
        tokens = k * 1024
        x = torch.randn(n, tokens, d_in, device=device)
        batch = full_batch({"m": x}, n)
        saved = 0

        def pack(t: Tensor) -> Tensor:
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = block(batch)
        out.sum().backward()
        elapsed = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() - base if device.type == "cuda" else saved
        rows.append((tokens, peak / 2**20, peak / 2**20 / (tokens / 1024), elapsed * 1e3))
        block.zero_grad(set_to_none=True)
    return rows


def subset_rows(args: argparse.Namespace, device: torch.device) -> list[tuple]:
    b, m_total = args.batch, 4
    torch.manual_seed(0)
    blocks = [LegoBlock({"name": "spectral", "bands": 13}, f"m{i}").to(device).eval() for i in range(m_total)]
    merged = merge(blocks).eval()
    x = {f"m{i}": torch.randn(b, 13, 64, 64, device=device) for i in range(m_total)}
    rows = []
    for k in range(1, m_total + 1):
        batch = full_batch({f"m{i}": x[f"m{i}"] for i in range(m_total)}, b)
        batch = batch.with_modalities([f"m{i}" for i in range(k)])
        with torch.no_grad():
            t = timed(lambda batch=batch: merged(batch), args.repeats, device)
        rows.append((k, t * 1e3))
    return [(k, ms, ms / rows[0][1], k) for k, ms in rows]


def table(title: str, header: tuple[str, ...], rows: list[tuple], fmt: tuple[str, ...]) -> None:
    print(f"\n{title}")
    cells = [[f.format(v) for f, v in zip(fmt, r)] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64], help="input tokens / 1024")
    p.add_argument("--quick", action="store_true", help="small images/signals (smoke run, not the reported table)")
    p.add_argument("--encoders", nargs="+", default=["xray", "ecg", "spectral", "tabular"])
    p.add_argument("--only", nargs="+", default=["overhead", "merge", "memory", "subsets"])
    args = p.parse_args(argv)
    args.tab_latents = [(64, 64), (32, 32), (16, 16), (8, 16)]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch}, repeats {args.repeats}"
    )
    if "overhead" in args.only:
        rows = overhead_rows(args, device)
        table(
            f"1. LegoBlock fwd+bwd / (encoder + linear head), batch {args.batch} (target <= 1.10 image/signal)",
            ("encoder", "input", "latent", "bare ms", "block ms", "ratio"),
            rows,
            ("{}", "{}", "{}", "{:.1f}", "{:.1f}", "{:.2f}"),
        )
    if "merge" in args.only:
        table(
            "2. Merge wall time, ECG blocks (target < 1 s)",
            ("N blocks", "params (M)", "merge s", "merge+save s"),
            merge_rows(args),
            ("{}", "{:.1f}", "{:.3f}", "{:.3f}"),
        )
    if "memory" in args.only:
        what = "peak CUDA MiB" if device.type == "cuda" else "saved-for-backward MiB"
        table(
            f"3. Memory vs input tokens, latent 64x64, batch 2 ({what}; target: linear)",
            ("tokens", "MiB", "MiB per 1k tokens", "fwd+bwd ms"),
            memory_rows(args, device),
            ("{}", "{:.1f}", "{:.2f}", "{:.0f}"),
        )
    if "subsets" in args.only:
        table(
            f"4. Inference, 4-block merge (spectral 13x64x64), batch {args.batch}, k of 4 present (target ~ k)",
            ("k present", "ms", "ms / ms(k=1)", "k"),
            subset_rows(args, device),
            ("{}", "{:.0f}", "{:.2f}", "{}"),
        )


if __name__ == "__main__":
    main()
