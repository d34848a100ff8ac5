"""Encoder families at their default sizes: parameters and forward / forward+backward time.

Run: ``python -m benchmarks.encoders [--batch 8] [--repeats 3] [--device cpu|cuda]``.
Inputs are random tensors of realistic shapes (12-lead 10 s ECG at 500 Hz, 224x224 X-ray,
13-band 64x64 Sentinel-2 chip, 68-date series, 25-atom molecules); the numbers are model
cost only, no data loading.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks.common import machine
from modfuse.data.batch import move_to
from modfuse.encoders import build


def _molecules(n: int, atoms: int = 25, in_dim: int = 40, edge_dim: int = 10) -> Any:
    from torch_geometric.data import Batch, Data

    ring = torch.stack([torch.arange(atoms), (torch.arange(atoms) + 1) % atoms])
    edges = torch.cat([ring, ring.flip(0)], dim=1)
    graphs = [Data(x=torch.randn(atoms, in_dim), edge_index=edges, edge_attr=torch.randn(edges.shape[1], edge_dim))]
    return Batch.from_data_list(graphs * n)


# family -> (build kwargs at default sizes, batch size -> input)
CASES: dict[str, tuple[str, dict[str, Any], Callable[[int], Any]]] = {
    "tabular": ("tabular", {"num_features": 30}, lambda n: torch.randn(n, 30)),
    "omics": ("omics", {"num_features": 5000}, lambda n: torch.randn(n, 5000)),
    "ecg": ("ecg", {"leads": 12}, lambda n: torch.randn(n, 12, 5000)),
    "xray": ("xray", {}, lambda n: torch.randn(n, 1, 224, 224)),
    "spectral": ("spectral", {"bands": 13}, lambda n: torch.randn(n, 13, 64, 64)),
    "spectral_tokens": ("spectral_tokens", {}, lambda n: torch.randn(n, 12, 64, 64)),
    "timeseries": ("timeseries", {"channels": 1}, lambda n: torch.randn(n, 68, 1)),
    "timeseries (gru)": ("timeseries", {"channels": 1, "kind": "gru"}, lambda n: torch.randn(n, 68, 1)),
    "graph (GINE)": ("graph", {"in_dim": 40, "edge_dim": 10}, _molecules),
}


def _time(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (kernel selection, allocator)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def measure(
    name: str, kwargs: dict[str, Any], make: Callable[[int], Any], batch: int, repeats: int, device: torch.device
) -> dict[str, Any]:
    enc: nn.Module = build(name, **kwargs).to(device)
    x = move_to(make(batch), device)
    enc.eval()
    with torch.no_grad():
        out = enc(x)
        fwd = _time(lambda: enc(x), repeats, device)
    enc.train()

    def step() -> None:
        enc.zero_grad(set_to_none=True)
        enc(x).float().pow(2).mean().backward()

    return {
        "params (M)": sum(p.numel() for p in enc.parameters()) / 1e6,
        "output": tuple(out.shape[1:]),
        "forward ms": fwd,
        "fwd+bwd ms": _time(step, repeats, device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="*", help="families to run (default: all)")
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine()
    print(f"# encoders at default sizes, batch {args.batch}, device {device}, best of {args.repeats}")
    print(f"# {info.get('cpu')} | torch threads {info.get('torch threads')} | cuda {info.get('cuda')}")
    print(f"| {'family':<17} | params (M) | output       | forward ms | fwd+bwd ms |")
    print(f"|{'-' * 19}|------------|--------------|------------|------------|")
    for label, (name, kwargs, make) in CASES.items():
        if args.only and label not in args.only and name not in args.only:
            continue
        row = measure(name, kwargs, make, args.batch, args.repeats, device)
        print(
            f"| {label:<17} | {row['params (M)']:>10.2f} | {row['output']!s:<12} | "
            f"{row['forward ms']:>10.1f} | {row['fwd+bwd ms']:>10.1f} |"
        )


if __name__ == "__main__":
    main()
