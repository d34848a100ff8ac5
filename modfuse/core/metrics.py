"""Metrics not in torchmetrics: Harrell's concordance index for censored survival data."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["ConcordanceIndex", "concordance_index"]


def concordance_index(risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Harrell's C: the fraction of comparable pairs whose risks are ordered like their times.

    A pair (i, j) is comparable when ``time_i < time_j`` and i had the event, or when
    ``time_i == time_j``, i had the event and j was censored (j is known to have outlived i's
    event time). It is concordant when ``risk_i > risk_j``; tied risks count one half. Pairs of
    two events at the same time are not comparable.

    Runs in O(N log N) time and O(N) memory: samples are visited from the latest time to the
    earliest, and a Fenwick tree over risk ranks counts, for each event, the lower and tied risks
    among the samples already known to outlive it.

    Args:
        risk: (N,) predicted risk (higher means earlier event).
        time: (N,) observed times.
        event: (N,) 1 for an observed event, 0 for censored.

    Returns:
        Scalar tensor in [0, 1]; NaN when no pair is comparable.
    """
    risk_np = risk.detach().double().flatten().cpu().numpy()
    time_np = time.detach().double().flatten().cpu().numpy()
    event_np = event.detach().bool().flatten().cpu().numpy()
    concordant, tied, comparable = _count_pairs(risk_np, time_np, event_np)
    if comparable == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return torch.tensor((concordant + 0.5 * tied) / comparable, dtype=torch.float64)


def _count_pairs(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[int, int, int]:
    """(concordant, risk-tied, comparable) pair counts of Harrell's C, in O(N log N)."""
    # rank 1..R of each distinct risk: the Fenwick tree is indexed by rank
    distinct, rank = np.unique(risk, return_inverse=True)
    tree = _Fenwick(len(distinct))
    order = np.lexsort((event, -time))  # latest time first; within one time, censored first
    concordant = tied = comparable = 0
    start = 0
    while start < len(order):
        stop = start
        while stop < len(order) and time[order[stop]] == time[order[start]]:
            stop += 1
        group = order[start:stop]
        # censored samples of this time outlive its events: they join the tree before the events ask
        for j in group[~event[group]]:
            tree.add(int(rank[j]) + 1)
        for i in group[event[group]]:
            r = int(rank[i]) + 1
            below, at_most = tree.prefix(r - 1), tree.prefix(r)
            concordant += below
            tied += at_most - below
            comparable += tree.total
        for i in group[event[group]]:
            tree.add(int(rank[i]) + 1)
        start = stop
    return concordant, tied, comparable


class _Fenwick:
    """Counts of inserted ranks 1..size with O(log size) insert and prefix count."""

    def __init__(self, size: int) -> None:
        self.counts = [0] * (size + 1)
        self.total = 0

    def add(self, rank: int) -> None:
        self.total += 1
        while rank < len(self.counts):
            self.counts[rank] += 1
            rank += rank & -rank

    def prefix(self, rank: int) -> int:
        """Number of inserted ranks <= rank."""
        count = 0
        while rank > 0:
            count += self.counts[rank]
            rank -= rank & -rank
        return count


class ConcordanceIndex(Metric):
    """torchmetrics wrapper of `concordance_index()` (accumulates all predictions)."""

    higher_is_better = True
    full_state_update = False

    risk: list[Tensor]  # states (lists until synced)
    time: list[Tensor]
    event: list[Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("risk", default=[], dist_reduce_fx="cat")
        self.add_state("time", default=[], dist_reduce_fx="cat")
        self.add_state("event", default=[], dist_reduce_fx="cat")

    def update(self, risk: Tensor, target: Tensor) -> None:
        """Args: risk (B,); target (B, 2) holding (time, event)."""
        self.risk.append(risk.detach().flatten())
        self.time.append(target[:, 0].detach())
        self.event.append(target[:, 1].detach())

    def compute(self) -> Tensor:
        cat = lambda xs: torch.cat(xs) if isinstance(xs, list) else xs  # noqa: E731
        return concordance_index(cat(self.risk), cat(self.time), cat(self.event))
