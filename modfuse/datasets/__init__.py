"""Data sets: the synthetic quickstart cohort and preparation of real public collections."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "synthetic_cohort": "modfuse.datasets.synthetic",
    "prepare": "modfuse.datasets.preparation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modfuse.datasets' has no attribute {name!r}")
