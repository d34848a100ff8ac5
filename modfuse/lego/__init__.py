"""Lego fusion: unimodal blocks that merge without training (LegoMerge) or chain and fine-tune
(LegoFuse). Importing this package registers the ``lego-merge`` and ``lego-fuse`` strategies."""

from __future__ import annotations

import importlib
from typing import Any

from modfuse.lego.adapt import adapt
from modfuse.lego.block import LegoBlock
from modfuse.lego.calibration import Calibration, calibrate
from modfuse.lego.fuse import LegoFuse, fuse
from modfuse.lego.io import from_config, load, load_any, load_checkpoint, save
from modfuse.lego.merge import LegoMerge, check_compatible, check_statistics, merge
from modfuse.lego.methods import available_methods, register_method
from modfuse.lego.validate import subset_report

__all__ = [
    "Calibration",
    "LegoBlock",
    "LegoFuse",
    "LegoMerge",
    "adapt",
    "available_methods",
    "calibrate",
    "check_compatible",
    "check_statistics",
    "fit_block",
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
    "subset_report",
]

# the training helpers import Lightning: loaded on first use
_WORKFLOW = ("fit_block", "fit_blocks", "fit_fuse", "fit_merge")


def __getattr__(name: str) -> Any:
    if name in _WORKFLOW:
        return getattr(importlib.import_module("modfuse.lego.workflow"), name)
    raise AttributeError(f"module 'modfuse.lego' has no attribute {name!r}")
