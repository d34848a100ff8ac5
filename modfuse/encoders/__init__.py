"""Encoders: a registry of unimodal encoders, one file per modality family.

Families: ``tabular``, ``omics``, ``ecg``, ``xray``, ``spectral`` (and ``spectral_tokens``),
``timeseries``, ``graph``. Heavy libraries (MONAI, torchgeo, PyG) are imported only when an
encoder that needs them is built.
"""

from __future__ import annotations

from modfuse.encoders import ecg, graph, omics, spectral, tabular, timeseries, xray  # noqa: F401  (each import registers its family)
from modfuse.encoders.base import Encoder
from modfuse.encoders.registry import ENCODERS, available, build, config_of, register
from modfuse.encoders.wrap import WrappedEncoder, wrap

__all__ = ["ENCODERS", "Encoder", "WrappedEncoder", "available", "build", "config_of", "register", "wrap"]
