"""Old import paths of names that moved to another module keep working.

Recipes and the configs Lightning saves name classes by dotted path (``data.class_path:
modfuse.datasets.manifest.ManifestDataModule``); after a class moves, its old module keeps
answering for it through `moved_names()`, imported on first use only, so the old module does
not import the new one (which may sit in a layer above it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved_names"]


def moved_names(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` resolving ``names`` (name -> module it lives in now).

    Example:
        >>> __getattr__ = moved_names(__name__, {"ManifestDataModule": "modfuse.data.datamodules.manifest"})
    """
    table = dict(names)

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
