"""Metrics not in torchmetrics: Harrell's concordance index for censored survival data."""

from __future__ import annotations

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

    Args:
        risk: (N,) predicted risk (higher means earlier event).
        time: (N,) observed times.
        event: (N,) 1 for an observed event, 0 for censored.

    Returns:
        Scalar tensor in [0, 1]; NaN when no pair is comparable.
    """
    risk, time, event = risk.double().flatten(), time.double().flatten(), event.bool().flatten()
    earlier = time[:, None] < time[None, :]
    tied_time = (time[:, None] == time[None, :]) & ~event[None, :]
    comparable = event[:, None] & (earlier | tied_time)
    comparable.fill_diagonal_(False)
    ordered = (risk[:, None] > risk[None, :]).double() + 0.5 * (risk[:, None] == risk[None, :]).double()
    n = comparable.sum()
    if n == 0:
        return torch.tensor(float("nan"))
    return (ordered * comparable).sum() / n


class ConcordanceIndex(Metric):
    """torchmetrics wrapper of :func:`concordance_index` (accumulates all predictions)."""

    higher_is_better = True
    full_state_update = False

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
