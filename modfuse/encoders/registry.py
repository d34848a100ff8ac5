"""The encoder registry (kept apart so encoder modules can register without import cycles)."""

from __future__ import annotations

from typing import Any

from torch import nn

from modfuse.registry import Registry

__all__ = ["ENCODERS", "available", "build", "register"]

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")
register = ENCODERS.register
"""Decorator: ``@register("name")`` makes an encoder class buildable by name."""


def build(name: str, /, **kwargs: Any) -> nn.Module:
    """Build a registered encoder, e.g. ``build("tabular", num_features=30)``."""
    return ENCODERS.build(name, **kwargs)


def available() -> list[str]:
    """Names of the registered encoders."""
    return ENCODERS.available()
