"""Training defaults sized by the data: encoder width/depth, dropout, weight decay, learning
rate and batch size from the number of training samples and features.

Why: a fixed ``hidden=[64]`` MLP trained with weight decay 1e-4 on a few hundred patients
over-fits and loses to a penalised linear model. The rule below shrinks capacity and raises
regularisation as the cohort gets smaller or the features outnumber the samples, and every
tabular encoder built from it carries a linear path (see `TabularEncoder(linear=True)`): its
output holds a linear function of its inputs beside the MLP's. (The fusion MLP on top is still
nonlinear; a wrapper adding a linear term straight to the logits was tried and scored lower on
validation, 0.808 vs 0.831 on the generated linear problem, so it was not kept.)

The rule (``n`` training samples, ``p`` features of the modality):

- width: ``clip(2 ** round(log2(2 * sqrt(n))), 16, 128)`` (n=100: 16, n=455: 32, n=2000: 64,
  n >= 4100: 128); one hidden layer below 5000 samples, two above;
- dropout: 0.3 below 300 samples, 0.2 below 3000, 0.1 above;
- weight decay (AdamW, decoupled): ``1e-2`` when ``p > n / 10`` (wide data), ``1e-3`` otherwise;
- learning rate: ``3e-3`` (the one-cycle peak; unchanged from the previous default);
- batch size: ``clip(n // 16, 16, 128)``, so an epoch is about 16 steps for small data and the
  early-stopping signal is updated often enough without over-long epochs on large data.

How it was chosen: the width rule is the usual "a few parameters per sample" bound for an
MLP whose first layer sees every feature; the dropout / weight-decay / batch-size steps are
conventional values, NOT the result of a search. The only checks made were on validation
rows (never a benchmark's test folds): on an inner 70/30 split of a breast-cancer training
fold, early fusion scored 0.978 with this rule, 0.971 with batch size 64, 0.978 with weight
decay 1e-2 and 0.978 with robust training off (a logistic regression: 0.985); on a generated
300-sample linear problem (another seed than the test's) early fusion scored 0.81-0.83 against
a logistic regression's 0.86. Later checks on seed 7 of that problem (300 training rows, 1000
scoring rows, never the test's seed 0; logistic regression 0.855): early / late fusion 0.796 /
0.766 with these defaults, 0.814 / 0.822 with robust training off, 0.796 / 0.767 with weight
decay 1e-2 (AdamW's decoupled decay at this learning rate barely moves the weights: not the
lever), 0.789 / 0.778 with lr 1e-3, 0.819 / 0.745 with patience 30 (max_epochs 200), early 0.841 with
``n_ensemble=5`` (it is not the default: 5x the cost; with robust training off as well, early /
late 0.848 / 0.852), and 0.796 / 0.643 when early stopping
follows AUROC instead of the validation loss (kept on the loss).

Two changes of the estimators followed (measured on seeds 7, 8 and 9 of that problem, each
scored on its own 1000 extra rows; logistic regression with C by 5-fold CV 0.859 / 0.864 / 0.845):

- the automatic tabular encoder starts as its linear path (the MLP's output layer initialised
  at zero, `TabularEncoder(linear=True)`);
- ``refit=True``: the validation rows only choose the epoch count, then a fresh model is trained
  on all the rows for that many epochs with the schedule annealed over them.

With both, seed 7: early / late 0.800 / 0.794 (robust training on, the default) and
0.847 / 0.843 (robust training off); seed 8: 0.858 / 0.855 and 0.866 / 0.859; seed 9: 0.846 /
0.831 and 0.837 / -. Linear late-fusion heads (``strategy_kwargs={"hidden": 0}``) gave late
0.818 / 0.856 / 0.844 there (seeds 7 / 8 / 9, robust on) but lowered the veterans lung-cancer
C-index of ``benchmarks/small_cohorts.py`` (2 folds) from 0.723 to 0.662, so they are not the
default; nor is an early-fusion MLP as wide as the encoders (+2.8 / -0.4 / 0.0 points). Robust training (``modality_dropout`` 0.3 and ``unimodal_weight`` 0.5, the default of
`modfuse.training.robust`) remains the largest cost on complete data of a small cohort: on seed 7
modality dropout alone costs early / late 2.6 / 3.9 points against robust training off, the
unimodal loss alone 0.9 / 1.9. So the defaults reach a penalised linear model on some seeds
only; ``benchmarks/small_cohorts.py`` measures them on real cohorts.

Those numbers predate a fusion-side change: early fusion then standardised every modality's
features per row, which divides each linear encoder's score by its row's own norm; it now
leaves the rows of linear-path encoders unchanged (`modfuse.fusion.heads.scale_free`, whose
docstring holds the comparison). On seeds 7 / 8 / 9 / 10 (1000 scoring rows each), early
fusion minus the logistic regression: -0.9 / -0.4 / -0.9 / +0.5 points with robust training
off (per row: -2.4 / -3.4 / -0.8 / -1.4), -4.0 / -1.2 / +0.0 / -1.4 with it on (per row:
-5.3 / -2.4 / -0.9 / -2.2).

Pass explicit numbers to the estimators (or ``strategy="auto"`` to choose the
strategy) to override it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ENSEMBLE_BELOW", "ENSEMBLE_MEMBERS", "Sizing", "ensemble_size", "size_for"]

ENSEMBLE_BELOW = 250
"""Training sets with fewer rows get an ensemble under ``n_ensemble="auto"`` (see `ensemble_size`)."""
ENSEMBLE_MEMBERS = 3
"""Members of that ensemble."""


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


def ensemble_size(n_samples: int) -> int:
    """The estimators' ``n_ensemble="auto"``: `ENSEMBLE_MEMBERS` models (seeds ``random_state +
    i``, their logits averaged) below `ENSEMBLE_BELOW` training rows, else 1.

    Why: on a hundred rows or fewer one training run's result moves with its seed (the validation
    split that chooses the epoch count, the initialisation, the order of the batches) by more
    than the differences between settings, and an average of three runs removes much of that
    spread; a run costs seconds there, so three cost little. Chosen on validation rows only
    (``python -m benchmarks.late_combine --candidates default --ensembles 1 3``, with
    ``--strategy early`` and ``late``; table in ``benchmarks/results/missing_selection.md``).

    Example:
        >>> ensemble_size(120), ensemble_size(5000)
        (3, 1)
    """
    return ENSEMBLE_MEMBERS if int(n_samples) < ENSEMBLE_BELOW else 1
