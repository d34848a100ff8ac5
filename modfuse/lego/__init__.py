"""Lego fusion: unimodal blocks that merge without training (LegoMerge) or chain and fine-tune
(LegoFuse). Importing this package registers the ``lego-merge`` and ``lego-fuse`` strategies."""

from __future__ import annotations

import importlib
from typing import Any

from modfuse.lego.block import LegoBlock
from modfuse.lego.fuse import LegoFuse, fuse
from modfuse.lego.io import from_config, load, load_any, load_checkpoint, save
from modfuse.lego.merge import LegoMerge, LegoOutput, check_compatible, merge
from modfuse.lego.methods import available_methods, register_method

__all__ = [
    "LegoBlock",
    "LegoFuse",
    "LegoMerge",
    "LegoOutput",
    "available_methods",
    "check_compatible",
    "fit_blocks",
    "fit_fuse",
    "fit_merge",
    "from_config",
    "fuse",
    "load",
    "load_any",
    "load_checkpoint",
    "merge",
    "register_method",
    "save",
]

# the training helpers import Lightning: loaded on first use
_WORKFLOW = ("fit_blocks", "fit_fuse", "fit_merge")


def __getattr__(name: str) -> Any:
    if name in _WORKFLOW:
        return getattr(importlib.import_module("modfuse.lego.workflow"), name)
    raise AttributeError(f"module 'modfuse.lego' has no attribute {name!r}")
