"""Losses for survival: the discrete-time hazard negative log-likelihood and the Cox partial
likelihood."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cox_partial_nll", "cumulative_hazard", "discrete_time_nll", "survival_bins", "survival_risk"]


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


def cox_partial_nll(log_risk: Tensor, time: Tensor, event: Tensor) -> Tensor:
    """Cox partial-likelihood negative log-likelihood with Breslow's handling of tied times.

    ``-1/E * sum_{i: event_i} [eta_i - log sum_{j: time_j >= time_i} exp(eta_j)]`` with
    ``eta = log_risk`` and E the number of events. Every sample whose time is tied with an event's
    time is in that event's risk set (Breslow), so tied events share one denominator. The risk
    sets are those of the batch: with mini-batches this is the usual stochastic estimate of the
    full-data partial likelihood.

    Computed in O(B log B): samples are sorted latest first, a ``logcumsumexp`` gives each one
    the log of the sum over the samples at or after its time (numerically stable for any scale of
    ``eta``), read at the end of its group of tied times.

    Args:
        log_risk: (B,) log relative risk (the linear predictor); higher means an earlier event.
        time: (B,) event/censoring times.
        event: (B,) 1 where the event was observed, 0 where censored.

    Returns:
        The loss per event (scalar); 0 (still attached to ``log_risk``'s graph) for a batch
        without events, which carries no partial-likelihood information.
    """
    time, order = torch.sort(time.reshape(-1), descending=True, stable=True)
    eta = log_risk.reshape(-1)[order]
    ev = event.reshape(-1)[order].to(eta.dtype)
    log_at_or_after = torch.logcumsumexp(eta, dim=0)
    # Breslow: a sample's risk set holds every sample tied with it, i.e. up to its tie group's end
    _, counts = torch.unique_consecutive(time, return_counts=True)
    group_end = torch.repeat_interleave(torch.cumsum(counts, 0) - 1, counts)
    log_denominator = log_at_or_after[group_end]
    n_events = ev.sum()
    return -(ev * (eta - log_denominator)).sum() / n_events.clamp(min=1)
