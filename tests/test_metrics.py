"""Harrell's concordance index: equal to scikit-survival's, and linear-memory at scale."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from modfuse.core.metrics import ConcordanceIndex, concordance_index

sksurv_metrics = pytest.importorskip("sksurv.metrics", reason="scikit-survival is in the dev extra")


def _cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Risks with ties (rounded), times with ties (integers) and ~40% censoring."""
    rng = np.random.default_rng(seed)
    time_ = rng.integers(1, 60, n).astype(float)
    event = rng.random(n) < 0.6
    risk = np.round(rng.normal(size=n) - 0.02 * time_, 1)
    return risk, time_, event


@pytest.mark.parametrize("n, seed", [(2, 0), (7, 1), (60, 2), (500, 3)])
def test_concordance_equals_scikit_survival_with_tied_times_and_risks(n: int, seed: int) -> None:
    risk, time_, event = _cohort(n, seed)
    event[0] = True  # at least one event so some pair is comparable
    expected = sksurv_metrics.concordance_index_censored(event, time_, risk)[0]
    got = concordance_index(torch.tensor(risk), torch.tensor(time_), torch.tensor(event))
    assert float(got) == pytest.approx(expected, abs=1e-12)


def test_concordance_on_10k_samples_equals_scikit_survival_with_linear_memory() -> None:
    """The 10k-sample case of the issue: the same C as scikit-survival's, with O(N) memory.

    (Its speed, under 1 s, is measured by ``benchmarks/concordance.py``, not asserted here.)
    tracemalloc sees NumPy's and Python's allocations, and `concordance_index` turns its inputs
    into NumPy arrays before counting, so every allocation of the counting is seen: the peak
    stays under a few MB at 10k (about 0.4 MB), where an N x N float64 pair matrix alone would
    be 800 MB, and it grows linearly with N (x4 in N: about x4 in peak; pair matrices: x16)."""
    risk, time_, event = _cohort(10_000, 4)
    got = concordance_index(torch.tensor(risk), torch.tensor(time_), torch.tensor(event))
    assert float(got) == pytest.approx(sksurv_metrics.concordance_index_censored(event, time_, risk)[0], abs=1e-12)
    peaks = {}
    for n in (2_500, 10_000):
        tensors = tuple(torch.tensor(a) for a in _cohort(n, 4))
        tracemalloc.start()
        concordance_index(*tensors)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[10_000] < 8 * 2**20, peaks
    assert peaks[10_000] < 6 * peaks[2_500], peaks


def test_concordance_hand_computed_and_undefined_cases() -> None:
    # times 1 (event), 2 (event), 3 (censored): pairs (1,2), (1,3), (2,3) are comparable
    time_ = torch.tensor([1.0, 2.0, 3.0])
    event = torch.tensor([1, 1, 0])
    assert float(concordance_index(torch.tensor([3.0, 2.0, 1.0]), time_, event)) == 1.0
    assert float(concordance_index(torch.tensor([1.0, 2.0, 3.0]), time_, event)) == 0.0
    assert float(concordance_index(torch.tensor([1.0, 1.0, 1.0]), time_, event)) == 0.5
    assert torch.isnan(concordance_index(torch.tensor([1.0, 2.0]), time_[:2], torch.tensor([0, 0])))


def test_metric_accumulates_batches_like_one_call() -> None:
    risk, time_, event = _cohort(300, 5)
    metric = ConcordanceIndex()
    target = torch.stack([torch.tensor(time_), torch.tensor(event, dtype=torch.float64)], dim=1)
    for chunk in torch.arange(300).split(64):
        metric.update(torch.tensor(risk)[chunk], target[chunk])
    assert float(metric.compute()) == pytest.approx(sksurv_metrics.concordance_index_censored(event, time_, risk)[0])
