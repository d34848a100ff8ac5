"""Prediction heads shared by the fusion strategies."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from modfuse.core.tasks import TaskSpec

__all__ = ["TaskHeads", "pool_tokens"]


def pool_tokens(features: Tensor) -> Tensor:
    """(n, tokens, d) -> (n, d) by the mean over tokens; (n, d) passes through."""
    return features.mean(dim=1) if features.dim() == 3 else features


class TaskHeads(nn.Module):
    """One head per task over a shared representation.

    Args:
        in_dim: width of the representation.
        tasks: task name -> TaskSpec.
        hidden: hidden width of each head (0 for a linear head).
        dropout: dropout before the output layer.

    Shapes:
        (B, in_dim) -> dict task -> logits (B, num_outputs).
    """

    def __init__(self, in_dim: int, tasks: Mapping[str, TaskSpec], hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.task_names = list(tasks)

        def head(spec: TaskSpec) -> nn.Module:
            if hidden:
                return nn.Sequential(
                    nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, spec.num_outputs)
                )
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, spec.num_outputs))

        self.heads = nn.ModuleDict({name: head(spec) for name, spec in tasks.items()})

    def forward(self, h: Tensor) -> dict[str, Tensor]:
        return {name: self.heads[name](h) for name in self.task_names}
