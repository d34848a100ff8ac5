"""Plot of a sequential model's per-step contributions: how each modality's step moved the
prediction, from the prior (no modality) to the final prediction (matplotlib, no pyplot).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from modfuse.errors import ModfuseError

__all__ = ["plot_sequential", "prediction_path"]


def prediction_path(contributions: Any, task: str | None = None) -> np.ndarray:
    """(B, M + 1) prediction after each step: column 0 is the prior, column M the final.

    For a task with several outputs per sample (multiclass probabilities) the path of the
    class predicted at the end is returned.

    Args:
        contributions: a `SequentialContributions` (``model.contributions(batch)``).
        task: the task (default: the only one).
    """
    name = contributions._task(task)
    delta = contributions.delta[name].detach().cpu().double()
    initial = contributions.initial[name].detach().cpu().double()
    if delta.dim() == 3:  # (B, M, K): follow the finally predicted class
        final = contributions.final[name].detach().cpu()
        column = final.argmax(1)
        delta = delta.gather(2, column[:, None, None].expand(-1, delta.shape[1], 1))[..., 0]
        initial = initial.gather(1, column[:, None])[:, 0]
    elif delta.dim() != 2:
        raise ModfuseError(f"task {name!r}: contributions of shape {tuple(delta.shape)} cannot be plotted")
    steps = initial[:, None] + delta.cumsum(1)
    return np.concatenate([initial[:, None].numpy(), steps.numpy()], axis=1)


def plot_sequential(
    contributions: Any,
    task: str | None = None,
    samples: Sequence[Hashable] | None = None,
    max_lines: int = 20,
    cohort: bool | None = None,
    ylabel: str = "prediction",
) -> Figure:
    """Prediction after each modality's step (x: prior, then the modalities in step order).

    Per-sample view: one line per sample (``samples`` or the first ``max_lines``); a step the
    sample lacked is flat (its contribution is exactly 0) and drawn with a hollow marker.
    Cohort view: the mean path with its 10-90% band, and the mean |contribution| of each step
    as bars on a second axis.

    Args:
        contributions: a `SequentialContributions` (``model.contributions(batch)``).
        task: the task (default: the only one).
        samples: ids of the samples to draw (per-sample view).
        max_lines: at most this many lines without ``samples``.
        cohort: cohort summary (default: when there are more samples than ``max_lines`` and
            no ``samples`` are given).
        ylabel: y-axis label (e.g. ``"probability of class 1"``).
    """
    path = prediction_path(contributions, task)
    present = contributions.present.detach().cpu().numpy().astype(bool)
    ids = list(contributions.ids) or list(range(len(path)))
    labels = ["prior", *contributions.modalities]
    cohort = (samples is None and len(path) > max_lines) if cohort is None else cohort
    fig = Figure(figsize=(max(5.0, 1.3 * len(labels) + 2), 4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    if cohort:
        _draw_cohort(ax, x, path)
        ax.set_title(f"prediction after each step, {len(path)} samples")
    else:
        rows = [ids.index(s) for s in samples] if samples is not None else list(range(min(max_lines, len(path))))
        for r in rows:
            (line,) = ax.plot(x, path[r], lw=1.2, label=str(ids[r]))
            hollow = np.concatenate([[False], ~present[r]])
            ax.plot(x[~hollow], path[r][~hollow], "o", color=line.get_color(), ms=5)
            ax.plot(x[hollow], path[r][hollow], "o", mfc="none", color=line.get_color(), ms=5)
        if len(rows) <= 10:
            ax.legend(title="sample", fontsize=8, loc="best")
        ax.set_title("prediction after each step (hollow: modality absent)")
    ax.set_xticks(x, labels)
    ax.set_xlabel("step (modality added)")
    ax.set_ylabel(ylabel)
    return fig


def _draw_cohort(ax: Any, x: np.ndarray, path: np.ndarray) -> None:
    low, high = np.percentile(path, [10, 90], axis=0)
    ax.fill_between(x, low, high, color="tab:blue", alpha=0.2, label="10-90% of samples")
    ax.plot(x, path.mean(0), "o-", color="tab:blue", label="mean")
    ax.legend(fontsize=8, loc="upper left")
    bars = ax.twinx()
    step = np.abs(np.diff(path, axis=1)).mean(0)
    bars.bar(x[1:], step, width=0.35, color="tab:orange", alpha=0.5)
    bars.set_ylabel("mean |change| of the step", color="tab:orange")
    ax.set_zorder(bars.get_zorder() + 1)  # the path above the bars
    ax.patch.set_visible(False)
