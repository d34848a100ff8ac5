"""modfuse: fuse biomedical and remote-sensing modalities with per-sample missingness.

Public names are imported lazily, so ``import modfuse`` stays light and never imports the
optional extras (MONAI, torchgeo, rasterio, PyG, pydicom, captum, wfdb, RDKit).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ModalityBatch": "modfuse.data.batch",
    "MultiModalDataset": "modfuse.data.dataset",
    "MultiModalDataModule": "modfuse.data.datamodules.base",
    "FusionTask": "modfuse.training.task",
    "TaskSpec": "modfuse.core.tasks",
    "ModelOutput": "modfuse.core.model",
    "ModfuseError": "modfuse.errors",
    "LegoBlock": "modfuse.lego.block",
    "LegoMerge": "modfuse.lego.merge",
    "LegoFuse": "modfuse.lego.fuse",
    "merge": "modfuse.lego.merge",
    "fuse": "modfuse.lego.fuse",
    "SequentialFusion": "modfuse.sequential.model",
    "FusionClassifier": "modfuse.estimators",
    "FusionRegressor": "modfuse.estimators",
    "FusionSurvival": "modfuse.estimators",
    "save": "modfuse.core.io",
    "load": "modfuse.core.io",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modfuse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
