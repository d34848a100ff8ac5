"""Fusion strategies behind one interface (:class:`FusionModel`) and a registry (:func:`build`)."""

from __future__ import annotations

from modfuse.fusion.base import STRATEGIES, FusionModel, Outputs, available, build, prediction_of, register
from modfuse.fusion.early import EarlyFusion

__all__ = ["STRATEGIES", "EarlyFusion", "FusionModel", "Outputs", "available", "build", "prediction_of", "register"]
