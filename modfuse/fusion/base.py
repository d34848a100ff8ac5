"""The interface every fusion strategy shares, and the strategy registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

import modfuse.core.config  # noqa: F401  (records constructor arguments, so models describe themselves)
from modfuse.core.model import FusionModel, ModelOutput
from modfuse.registry import Registry

__all__ = ["STRATEGIES", "FusionModel", "ModelOutput", "available", "build", "register"]

# the built-in strategies, imported on first use so that importing modfuse.fusion stays cheap
# and free of cycles; packages add theirs through the "modfuse.fusion" entry-point group
# a strategy is a model class or a factory building one (the Lego strategies: from_encoders)
STRATEGIES: Registry[Callable[..., nn.Module]] = Registry(
    "fusion strategy",
    group="modfuse.fusion",
    lazy={
        "early": "modfuse.fusion.early:EarlyFusion",
        "late": "modfuse.fusion.late:LateFusion",
        "attention": "modfuse.fusion.attention:AttentionFusion",
        "unimodal": "modfuse.fusion.unimodal:Unimodal",
        "lego-merge": "modfuse.lego.merge:LegoMerge.from_encoders",
        "lego-fuse": "modfuse.lego.fuse:LegoFuse.from_encoders",
        "sequential": "modfuse.sequential.model:SequentialFusion",
    },
    base=nn.Module,
)
register = STRATEGIES.register


def build(
    strategy: str, /, encoders: Mapping[str, nn.Module] | None = None, tasks: Any = "binary", **kwargs: Any
) -> nn.Module:
    """Build a fusion model by strategy name, e.g. ``build("early", encoders=..., tasks="binary")``.

    Args:
        strategy: a registered name (see `available()`).
        encoders: modality -> encoder (``out_dim`` declared).
        tasks: a task kind, a TaskSpec, or a dict task name -> TaskSpec.
        **kwargs: strategy-specific arguments.
    """
    return STRATEGIES.build(strategy, encoders=encoders, tasks=tasks, **kwargs)


def available() -> list[str]:
    """Names of the registered fusion strategies (built-in, registered, or declared by entry point)."""
    return STRATEGIES.available()
