"""Robustness report: tables (CSV) and plots (PNG) of metric per modality subset and per missing rate."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from modfuse.core.model import unwrap_model
from modfuse.errors import ModfuseError
from modfuse.robust.evaluate import MetricArg, as_fusion, evaluate_subsets, sweep

__all__ = ["main_column", "metric_columns", "plot_subsets", "plot_sweep", "robustness_report"]

log = logging.getLogger(__name__)

_NOT_METRICS = {"subset", "size", "n", "n_observed", "kind", "rate", "seed", "missing_fraction"}


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a table from `evaluate_subsets()` or `sweep()`."""
    return [c for c in frame.columns if c not in _NOT_METRICS]


def main_column(model: Any, table: pd.DataFrame) -> str:
    """The column of the first task's main metric (e.g. ``auroc``), else the first metric column."""
    tasks = as_fusion(unwrap_model(model)).tasks
    task, spec = next(iter(tasks.items()))
    name = spec.main_metric[0]
    for column in (name, f"{task}/{name}"):
        if column in table.columns:
            return column
    return metric_columns(table)[0]


def plot_subsets(table: pd.DataFrame, metric: str | None = None) -> Figure:
    """Horizontal bar chart of one metric per modality subset (largest subsets on top).

    Args:
        table: output of `evaluate_subsets()`.
        metric: the column to plot (default: the first metric column).
    """
    metric = metric or metric_columns(table)[0]
    rows = table.sort_values(["size", "subset"], ascending=[True, False])
    fig = Figure(figsize=(7, 0.5 + 0.3 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{min(int(s) - 1, 9)}" for s in rows["size"]]
    ax.barh(rows["subset"], rows[metric], color=colors)
    ax.set_xlabel(metric)
    ax.set_ylabel("modalities used")
    ax.set_title(f"{metric} per modality subset (n={int(table['n'].iloc[0])})")
    return fig


def plot_sweep(table: pd.DataFrame, metric: str | None = None) -> Figure:
    """Metric against the measured missing fraction, one line per missingness kind.

    The x-axis is the share of (sample, modality) pairs actually absent in the evaluated data
    (``missing_fraction``, mean over seeds), not the removal probability ``p``: a mechanism
    that targets part of the samples, or keeps one modality per sample, removes less than
    ``p``. Points are labelled with their ``p``; error bars are the sd over seeds.

    Args:
        table: output of `sweep()`.
        metric: the column to plot (default: the first metric column).
    """
    metric = metric or metric_columns(table)[0]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for kind, part in table.groupby("kind", sort=False):
        stats = part.groupby("rate").agg(
            mean=(metric, "mean"), std=(metric, "std"), missing=("missing_fraction", "mean")
        )
        stats = stats.fillna({"std": 0.0})
        ax.errorbar(stats["missing"], stats["mean"], yerr=stats["std"], marker="o", capsize=3, label=str(kind))
        for rate, row in stats.iterrows():
            ax.annotate(
                f"p={rate:g}", (row["missing"], row["mean"]), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    ax.set_xlabel("measured missing fraction (absent sample-modality pairs)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} under simulated missingness")
    ax.legend(title="mechanism")
    return fig


def robustness_report(
    model: Any,
    data: Any,
    out_dir: str | Path,
    metric: MetricArg = None,
    rates: Sequence[float] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9),
    kinds: Sequence[str] = ("mcar", "mnar", "mnar-flip"),
    seeds: Sequence[int] = (0, 1, 2),
    batch_size: int = 64,
    specialists: Any = None,
    specialist_epochs: int = 10,
    specialist_task_kwargs: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Evaluate every modality subset and missing-rate sweeps, and write the files.

    Files written to ``out_dir``:
        ``subsets.csv`` / ``subsets.png``: one row (bar) per non-empty modality subset.
        ``sweep.csv`` / ``sweep.png``: metric against missing rate, one line per mechanism
        (only when ``data`` supports simulation: a dataset, a datamodule or a DataLoader over a
        MultiModalDataset; ``kinds=()`` skips it).

    Args:
        model: a fusion model or a FusionTask (its ``.model`` is used).
        data: a datamodule (its test split), a MultiModalDataset, or a DataLoader of ModalityBatch.
        out_dir: output folder (created).
        metric: which metrics (see [`modfuse.robust.evaluate.MetricArg`][modfuse.robust.evaluate.MetricArg]); plots show the
            task's main metric when computed, else the first.
        rates: missing rates of the sweep.
        kinds: mechanisms of the sweep (``mcar``, ``mar``, ``mnar``, ``mar-flip``, ``mnar-flip``).
        seeds: simulation seeds per rate.
        batch_size: batch size when ``data`` is a dataset.
        specialists: None (no subset gap), ``"train"`` (trained on ``data``, a datamodule, for
            ``specialist_epochs`` epochs with FusionTask arguments ``specialist_task_kwargs``)
            or a dict subset -> model.
        specialist_epochs: training budget of each specialist.
        specialist_task_kwargs: FusionTask arguments of the specialists (lr, ...).

    Returns:
        The subset table (as in ``subsets.csv``).
    """
    model = unwrap_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = evaluate_subsets(model, data, metric, batch_size=batch_size)
    table.to_csv(out / "subsets.csv", index=False)
    plot_subsets(table, main_column(model, table)).savefig(out / "subsets.png", dpi=100)
    if kinds:
        try:
            swept = sweep(model, data, rates, kinds, seeds, metric, batch_size)
        except ModfuseError as exc:
            if "simulated missingness needs" not in str(exc):
                raise
            log.warning("skipped the missing-rate sweep: %s", exc)
        else:
            swept.to_csv(out / "sweep.csv", index=False)
            plot_sweep(swept, main_column(model, swept)).savefig(out / "sweep.png", dpi=100)
    if specialists is not None:
        from modfuse.robust.subset_gap import subset_gap, write_subset_gap

        gaps = subset_gap(
            model,
            data,
            specialists,
            max_epochs=specialist_epochs,
            task_kwargs=specialist_task_kwargs,
            batch_size=batch_size,
        )
        write_subset_gap(gaps, out)
    return table
