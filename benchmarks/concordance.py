"""Harrell's concordance index: modfuse's `concordance_index` against scikit-survival's
``concordance_index_censored`` on the same cohorts (time, equality, memory).

Cohorts: integer times 1..59 (ties), ~40 % censoring, risks rounded to 0.1 (ties), as in
tests/test_metrics.py. Wall time is the best of ``REPEATS`` calls (one torch thread); peak
memory is tracemalloc's peak over one further call (NumPy and Python allocations; the function
counts on NumPy arrays), measured apart because tracemalloc slows every allocation.

Run: ``python -m benchmarks.concordance`` (needs scikit-survival, in the dev extra).
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

SIZES = (1_000, 10_000, 50_000)
REPEATS = 3


def cohort(n: int, seed: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(risk, time, event) with tied times and risks and ~40 % censoring."""
    rng = np.random.default_rng(seed)
    time_ = rng.integers(1, 60, n).astype(float)
    event = rng.random(n) < 0.6
    risk = np.round(rng.normal(size=n) - 0.02 * time_, 1)
    return risk, time_, event


def best_seconds(fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_mib(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def row(n: int) -> dict[str, float]:
    """One cohort size: both implementations' time, peak memory and the difference of their C."""
    from sksurv.metrics import concordance_index_censored

    from modfuse.core.metrics import concordance_index

    risk, time_, event = cohort(n)
    tensors = torch.tensor(risk), torch.tensor(time_), torch.tensor(event)

    def ours() -> float:
        return float(concordance_index(*tensors))

    def theirs() -> float:
        return float(concordance_index_censored(event, time_, risk)[0])

    return {
        "n": n,
        "modfuse s": best_seconds(ours),
        "scikit-survival s": best_seconds(theirs),
        "modfuse peak MiB": peak_mib(ours),
        "scikit-survival peak MiB": peak_mib(theirs),
        "|C - C_sksurv|": abs(ours() - theirs()),
    }


def main() -> None:
    torch.set_num_threads(1)
    rows = [row(n) for n in SIZES]
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
