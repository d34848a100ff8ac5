"""``prepare(name, root=..., out=...)``: turn a collection a user downloaded into a manifest.

Each collection module under `modfuse.datasets.collections` registers a function
``(root, out, **options) -> Path`` that reads the provider's own layout under ``root`` and
writes a manifest folder to ``out`` (see [`modfuse.datasets.manifest`][modfuse.datasets.manifest]). Nothing is
downloaded: every collection needs files the user obtained under the provider's terms.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modfuse.errors import ModfuseError, ReadError
from modfuse.registry import Registry

__all__ = ["COLLECTIONS", "available", "prepare", "register"]

PrepareFn = Callable[..., Path]
COLLECTIONS: Registry[PrepareFn] = Registry("collection")
register = COLLECTIONS.register
"""Decorator: ``@register("name")`` makes ``prepare("name", ...)`` call the function."""

# name -> module registering it (imported on first use, so heavy readers load only when needed)
_BUILTIN = {
    "ptbxl": "modfuse.datasets.collections.ptbxl",
    "mimic_cxr": "modfuse.datasets.collections.chest_xray",
    "chexpert": "modfuse.datasets.collections.chest_xray",
    "bigearthnet": "modfuse.datasets.collections.remote_sensing",
    "eurosat": "modfuse.datasets.collections.remote_sensing",
    "tcga": "modfuse.datasets.collections.tcga",
    "moleculenet": "modfuse.datasets.collections.moleculenet",
    "esol": "modfuse.datasets.collections.moleculenet",
    "freesolv": "modfuse.datasets.collections.moleculenet",
    "lipophilicity": "modfuse.datasets.collections.moleculenet",
    "bbbp": "modfuse.datasets.collections.moleculenet",
}


def available() -> list[str]:
    """Names of the collections ``prepare`` knows."""
    return sorted(set(COLLECTIONS.available()) | set(_BUILTIN))


def get(name: str) -> PrepareFn:
    """The preparation function of collection ``name``."""
    if name not in COLLECTIONS and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])
    return COLLECTIONS.get(name)


def prepare(name: str, root: str | Path, out: str | Path, **options: Any) -> Path:
    """Read collection ``name`` from ``root`` (the provider's layout) and write a manifest to ``out``.

    Args:
        name: a collection (see `available()`): ``ptbxl``, ``mimic_cxr``, ``chexpert``,
            ``bigearthnet``, ``eurosat``, ``tcga``, ``moleculenet`` / ``esol`` / ...
        root: the folder (or, for single-file collections, the file) the user obtained.
        out: output folder for ``manifest.json``, the table and ``splits/``.
        options: collection-specific options (see each collection's docstring and card).

    Returns:
        The path of the written ``manifest.json``.

    Example:
        >>> prepare("esol", root="data/delaney-processed.csv", out="prepared/esol")  # doctest: +SKIP
    """
    fn = get(name)
    root = Path(root)
    if not root.exists():
        raise ReadError(f"the data of collection {name!r} was not found (nothing is downloaded)", path=root)
    out = Path(out)
    # a sub-folder of the download is fine; the download itself must never be overwritten
    if out.resolve() == root.resolve():
        raise ModfuseError(f"out ({out}) must not be the data root itself")
    return fn(root, out, **options)
