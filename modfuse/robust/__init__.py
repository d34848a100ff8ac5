"""Missing-modality robustness: training-time dropout, missingness simulators, subset evaluation.

- `ModalityDropout`: per-sample modality dropout for training (never empties a sample).
- `mcar()`, `mar()`, `mnar()`: seeded missingness simulators applied to datasets
  and datamodules (see [`modfuse.robust.simulate`][modfuse.robust.simulate]).
- `evaluate_subsets()`, `sweep()`: metrics per modality subset and per missing rate.
- `subset_gap()`: the fused model per modality subset next to a specialist trained on it
  (and `competition()`: which modalities the fused model under-uses).
- `RobustTraining`: what ``FusionTask(modality_dropout=..., unimodal_weight=...,
  balance=...)`` runs in each training step.
- `robustness_report()`: writes the tables (CSV) and plots (PNG).
"""

from __future__ import annotations

from modfuse.robust.evaluate import evaluate, evaluate_subsets, modality_subsets, sweep
from modfuse.robust.report import plot_subsets, plot_sweep, robustness_report
from modfuse.robust.simulate import MaskedSource, Missingness, mar, mcar, mnar, simulate
from modfuse.robust.subset_gap import (
    SubsetModel,
    competition,
    plot_subset_gap,
    subset_gap,
    train_specialists,
    write_subset_gap,
)
from modfuse.training.dropout import ModalityDropout
from modfuse.training.robust import RobustTraining

__all__ = [
    "MaskedSource",
    "Missingness",
    "ModalityDropout",
    "RobustTraining",
    "SubsetModel",
    "competition",
    "evaluate",
    "evaluate_subsets",
    "mar",
    "mcar",
    "mnar",
    "modality_subsets",
    "plot_subset_gap",
    "plot_subsets",
    "plot_sweep",
    "robustness_report",
    "simulate",
    "subset_gap",
    "sweep",
    "train_specialists",
    "write_subset_gap",
]
