"""Missing-modality robustness: training-time dropout, missingness simulators, subset evaluation.

- :class:`ModalityDropout`: per-sample modality dropout for training (never empties a sample).
- :func:`mcar`, :func:`mar`, :func:`mnar`: seeded missingness simulators applied to datasets
  and datamodules (see :mod:`modfuse.robust.simulate`).
- :func:`evaluate_subsets`, :func:`sweep`: metrics per modality subset and per missing rate.
- :func:`robustness_report`: writes the tables (CSV) and plots (PNG).
"""

from __future__ import annotations

from modfuse.robust.dropout import ModalityDropout
from modfuse.robust.evaluate import evaluate, evaluate_subsets, modality_subsets, sweep
from modfuse.robust.report import plot_subsets, plot_sweep, robustness_report
from modfuse.robust.simulate import MaskedSource, Missingness, mar, mcar, mnar, simulate

__all__ = [
    "MaskedSource",
    "Missingness",
    "ModalityDropout",
    "evaluate",
    "evaluate_subsets",
    "mar",
    "mcar",
    "mnar",
    "modality_subsets",
    "plot_subsets",
    "plot_sweep",
    "robustness_report",
    "simulate",
    "sweep",
]
