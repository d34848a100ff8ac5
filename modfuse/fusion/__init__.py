"""Fusion strategies behind one interface (`FusionModel`) and a registry (`build()`)."""

from __future__ import annotations

from modfuse.fusion.attention import AttentionFusion
from modfuse.fusion.base import STRATEGIES, FusionModel, ModelOutput, available, build, register
from modfuse.fusion.early import EarlyFusion
from modfuse.fusion.late import LateFusion
from modfuse.fusion.unimodal import Unimodal

__all__ = [
    "STRATEGIES",
    "AttentionFusion",
    "EarlyFusion",
    "FusionModel",
    "LateFusion",
    "ModelOutput",
    "Unimodal",
    "available",
    "build",
    "register",
]
