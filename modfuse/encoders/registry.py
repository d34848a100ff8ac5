"""The encoder registry (kept apart so encoder modules can register without import cycles)."""

from __future__ import annotations

from typing import Any

from torch import nn

from modfuse.registry import Registry

__all__ = ["ENCODERS", "available", "build", "register"]

ENCODERS: Registry[type[nn.Module]] = Registry("encoder", group="modfuse.encoders", base=nn.Module)
register = ENCODERS.register
"""Decorator: ``@register("name")`` makes an encoder class buildable by name."""


def build(name: str, /, **kwargs: Any) -> nn.Module:
    """Build a registered encoder, e.g. ``build("tabular", num_features=30)``.

    The encoder remembers how it was built (``encoder_config``: ``{"name": ..., **kwargs}``),
    so saved models can rebuild it from JSON (kwargs must then be JSON-serialisable).
    """
    encoder = ENCODERS.build(name, **kwargs)
    encoder.encoder_config = {"name": name, **kwargs}
    return encoder


def config_of(encoder: nn.Module) -> dict[str, Any] | None:
    """How ``encoder`` was built by `build()` (None for modules built otherwise)."""
    return getattr(encoder, "encoder_config", None)


def available() -> list[str]:
    """Names of the registered encoders."""
    return ENCODERS.available()
