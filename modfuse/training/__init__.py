"""Training: the Lightning task, task specifications, losses and metrics."""

from __future__ import annotations

from modfuse.core.losses import cumulative_hazard, discrete_time_nll, survival_risk
from modfuse.core.metrics import ConcordanceIndex, concordance_index
from modfuse.core.tasks import TaskSpec, as_task_specs
from modfuse.training.task import FusionTask

__all__ = [
    "ConcordanceIndex",
    "FusionTask",
    "TaskSpec",
    "as_task_specs",
    "concordance_index",
    "cumulative_hazard",
    "discrete_time_nll",
    "survival_risk",
]
