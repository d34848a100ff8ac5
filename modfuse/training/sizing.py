"""Training defaults sized by the data: encoder width/depth, dropout, weight decay, learning
rate and batch size from the number of training samples and features.

Why: a fixed ``hidden=[64]`` MLP trained with weight decay 1e-4 on a few hundred patients
over-fits and loses to a penalised linear model. The rule below shrinks capacity and raises
regularisation as the cohort gets smaller or the features outnumber the samples, and every
tabular encoder built from it carries a linear path (see `TabularEncoder(linear=True)`), so a
fused model contains a penalised linear model as a special case.

The rule (``n`` training samples, ``p`` features of the modality):

- width: ``clip(2 ** round(log2(2 * sqrt(n))), 16, 128)`` (n=100: 16, n=455: 32, n=2000: 64,
  n >= 4100: 128); one hidden layer below 5000 samples, two above;
- dropout: 0.3 below 300 samples, 0.2 below 3000, 0.1 above;
- weight decay (AdamW, decoupled): ``1e-2`` when ``p > n / 10`` (wide data), ``1e-3`` otherwise;
- learning rate: ``3e-3`` (the one-cycle peak; unchanged from the previous default);
- batch size: ``clip(n // 16, 16, 128)``, so an epoch is about 16 steps for small data and the
  early-stopping signal is updated often enough without over-long epochs on large data.

How it was chosen: the width rule is the usual "a few parameters per sample" bound for an
MLP whose first layer is shared by all features; the dropout/weight-decay steps were compared
on the inner validation split of the training folds of ``benchmarks/small_cohorts.py``
(never on its test folds) at the three values listed, and the larger regulariser kept when
the validation scores tied. It is a rule, not a search: pass explicit numbers to the
estimators (or ``strategy="auto"`` for a search of the strategy) to override it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Sizing", "size_for"]


@dataclass(frozen=True)
class Sizing:
    """Data-sized training defaults (see the module docstring for the rule)."""

    hidden: tuple[int, ...]
    out_dim: int
    dropout: float
    weight_decay: float
    lr: float
    batch_size: int


def size_for(n_samples: int, n_features: int) -> Sizing:
    """Defaults for ``n_samples`` training rows and ``n_features`` input columns (the widest
    modality for the optimiser settings, each modality's own for its encoder).

    Example:
        >>> size_for(455, 30)
        Sizing(hidden=(32,), out_dim=32, dropout=0.2, weight_decay=0.001, lr=0.003, batch_size=28)
    """
    n = max(int(n_samples), 1)
    p = max(int(n_features), 1)
    width = int(min(max(2 ** round(math.log2(2 * math.sqrt(n))), 16), 128))
    hidden = (width,) if n < 5000 else (width, width)
    dropout = 0.3 if n < 300 else (0.2 if n < 3000 else 0.1)
    weight_decay = 1e-2 if p > n / 10 else 1e-3
    return Sizing(
        hidden=hidden,
        out_dim=width,
        dropout=dropout,
        weight_decay=weight_decay,
        lr=3e-3,
        batch_size=int(min(max(n // 16, 16), 128)),
    )
