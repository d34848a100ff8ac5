"""Fusion strategies behind one interface (`FusionModel`) and a registry (`build()`)."""

from __future__ import annotations

from modfuse.fusion.attention import AttentionFusion
from modfuse.fusion.base import STRATEGIES, FusionModel, Outputs, available, build, prediction_of, register
from modfuse.fusion.early import EarlyFusion
from modfuse.fusion.late import LateFusion
from modfuse.fusion.unimodal import Unimodal

__all__ = [
    "STRATEGIES",
    "AttentionFusion",
    "EarlyFusion",
    "FusionModel",
    "LateFusion",
    "Outputs",
    "Unimodal",
    "available",
    "build",
    "prediction_of",
    "register",
]
