"""Losses, including the discrete-time hazard negative log-likelihood for survival."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cumulative_hazard", "discrete_time_nll", "survival_bins", "survival_risk"]


def survival_bins(time: Tensor, boundaries: Tensor) -> Tensor:
    """Interval index of each time: interval k is ``(b[k-1], b[k]]`` with ``b[-1] = -inf`` and
    ``b[K-1] = +inf`` for the K-1 interior ``boundaries``.

    Args:
        time: (B,) event or censoring times.
        boundaries: (K-1,) increasing interior cut points.

    Returns:
        LongTensor (B,) with values in ``0..K-1``.
    """
    return torch.searchsorted(boundaries.to(time), time.contiguous(), right=False)


def discrete_time_nll(logits: Tensor, time: Tensor, event: Tensor, boundaries: Tensor) -> Tensor:
    """Discrete-time (logistic hazard) negative log-likelihood with right censoring.

    The model gives one hazard logit per interval, ``h_k = sigmoid(logits[:, k])``. A sample
    whose time falls in interval j contributes
    ``-[sum_{k<j} log(1 - h_k) + log h_j]`` when the event was observed, and
    ``-sum_{k<=j} log(1 - h_k)`` when censored (it survived interval j).

    Args:
        logits: (B, K) hazard logits.
        time: (B,) event/censoring times.
        event: (B,) 1 where the event was observed, 0 where censored.
        boundaries: (K-1,) interior interval boundaries.

    Returns:
        The mean loss over the batch (scalar).
    """
    k = logits.shape[1]
    j = survival_bins(time, boundaries)
    steps = torch.arange(k, device=logits.device)
    # log(1 - h) = -softplus(logit); log h = -softplus(-logit)
    log_survive = -F.softplus(logits)
    log_hazard = -F.softplus(-logits)
    before = (steps[None, :] < j[:, None]).to(logits.dtype)
    at = (steps[None, :] == j[:, None]).to(logits.dtype)
    ev = event.to(logits.dtype)[:, None]
    ll = (before * log_survive).sum(1) + (at * (ev * log_hazard + (1 - ev) * log_survive)).sum(1)
    return -ll.mean()


def cumulative_hazard(logits: Tensor) -> Tensor:
    """Cumulative hazard (B,) over all K intervals of hazard logits (B, K): ``sum_k -log(1 - h_k)``.

    Not the survival task's risk score (see `survival_risk()`): the open last interval's hazard
    is fitted only on the longest survivors and dominates this sum.
    """
    return F.softplus(logits).sum(dim=1)


def survival_risk(logits: Tensor) -> Tensor:
    """Risk score (B,) in [0, 1] from hazard logits (B, K); higher means an earlier event.

    ``1 - mean_{k < K-1} S_k`` with ``S_k = prod_{j <= k} (1 - h_j)``: the expected share of the
    K-1 closed intervals not survived (a restricted mean survival time in interval units, negated
    and scaled). The open last interval ``(b[K-2], inf)`` is left out on purpose: with little
    censoring almost everyone who reaches it has the event there, so its hazard logit is pushed
    up on the longest survivors' (lowest-risk) features; summed into a cumulative hazard it
    ranked patients backwards (Harrell's C 0.31 on the veterans training rows for late fusion).
    Weighting each interval by the chance of being alive in it also keeps a high-risk patient's
    score from the late intervals, which are extrapolated for them. One interval (K = 1): its
    hazard ``h_0``.
    """
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    log_survival = torch.cumsum(-F.softplus(logits[:, :-1]), dim=1)
    return 1 - log_survival.exp().mean(dim=1)
