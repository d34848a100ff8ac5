"""Label-free re-calibration of a merge's blocks on unlabelled paired target rows.

Training the blocks' weights on fused pseudo-labels makes them learn each other's errors, which
the product of experts then counts twice. This adaptation trains no weight: per block it fits
only an affine map of the calibrated outputs, ``z' = a * z + b`` (a per output for binary and
multilabel, one a for multiclass; b per output), by maximising the *agreement likelihood* of the
paired rows, the likelihood of the model's dependence between the present modalities:

    log r(x) = log sum_y pi(y) prod_{i present} q_i(y | x_i) / pi_i(y)

with ``q_i`` block i's re-calibrated probabilities, ``pi_i`` their mean over the target rows
having block i (its output prior, re-measured) and ``pi`` the mean of the ``pi_i``. When every
``pi_i`` equals ``pi``, ``r`` is a normalised density ratio ``p(x_1..x_k) / prod p(x_i)`` of a
model in which the modalities are conditionally independent given y, so by Gibbs' inequality
its expected log is largest at the true posteriors: the objective is proper under the merge's
own assumption, needs no label, and has one or two parameters per block (an EM on the label
prior, Saerens-style, is its special case with ``a = 1`` and a shared bias). When the modalities
share information (conditional independence fails) the objective rewards overconfidence; the
label-free check of `modfuse.lego.adapt` (each block against the fusion of the others, on held-out
rows) then restores the source calibration.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["agreement_loglik", "fit_affine"]

KINDS = ("binary", "multiclass", "multilabel")


def _log_probs(kind: str, z: Tensor) -> Tensor:
    """(n, N, C) calibrated outputs -> log-probabilities (n, N, C, Y): Y = C classes for multiclass
    (one axis of size 1 added first), Y = 2 (absent, present) per output for binary / multilabel."""
    if kind == "multiclass":
        return z.log_softmax(-1)[:, :, None, :]
    return torch.stack([F.logsigmoid(-z), F.logsigmoid(z)], -1)


def agreement_loglik(kind: str, z: Tensor, present: Tensor) -> Tensor:
    """Per-row agreement log-likelihood ``log r(x)`` (n,) (module docstring) of calibrated block
    outputs ``z`` (n, N, C) with presence ``present`` (n, N) bool; rows need >= 1 present block
    (a row with one block has ``log r = 0``)."""
    logq = _log_probs(kind, z)  # (n, N, C', Y)
    w = present.to(z.dtype)[:, :, None, None]
    # each block's output prior on its own rows, then their mean
    prior_i = (logq.exp() * w).sum(0) / w.sum(0).clamp_min(1.0)  # (N, C', Y)
    has = present.any(0)
    prior = prior_i[has].mean(0)  # (C', Y)
    log_pi_i = prior_i.clamp_min(1e-8).log()
    terms = (w * (logq - log_pi_i[None])).sum(1) + prior.clamp_min(1e-8).log()[None]  # (n, C', Y)
    return torch.logsumexp(terms, -1).sum(-1)


def fit_affine(kind: str, z: Tensor, present: Tensor, reg: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Per-block affine re-calibration ``a * z + b`` maximising the mean agreement log-likelihood
    of the rows of ``z`` (n, N, C) with >= 2 present blocks.

    Returns:
        (a (N, C), b (N, C)); the identity (ones, zeros) when there are no such rows or the fit
        fails. ``reg`` pulls (log a, b) weakly toward 0.
    """
    n_blocks, c = z.shape[1], z.shape[2]
    ident = torch.ones(n_blocks, c), torch.zeros(n_blocks, c)
    paired = present.sum(1) >= 2
    if int(paired.sum()) < 2 or kind not in KINDS:
        return ident
    z, present = z[paired].float().detach(), present[paired]
    log_a = torch.zeros(n_blocks, 1 if kind == "multiclass" else c, requires_grad=True)
    b = torch.zeros(n_blocks, c, requires_grad=True)
    opt = torch.optim.LBFGS([log_a, b], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        zz = log_a.exp()[None] * z + b[None]
        loss = -agreement_loglik(kind, zz, present).mean() + reg * (log_a.pow(2).sum() + b.pow(2).sum())
        loss.backward()
        return loss

    try:
        opt.step(closure)
    except RuntimeError:
        return ident
    a = log_a.detach().exp().expand(n_blocks, c).clone()
    bb = b.detach().clone()
    with torch.no_grad():
        final = float(agreement_loglik(kind, a[None] * z + bb[None], present).mean())
    if not (torch.isfinite(a).all() and torch.isfinite(bb).all() and math.isfinite(final)):
        return ident
    return a, bb
