"""Moved to `modfuse.data.datamodules.eopatch` and `modfuse.data.datamodules.molecules`; the class
paths recipes and saved configs name here keep working."""

from __future__ import annotations

from modfuse.utils.moved import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "EOPatchLandCoverDataModule": "modfuse.data.datamodules.eopatch",
        "terrain_features": "modfuse.data.datamodules.eopatch",
        "MoleculeCSVDataModule": "modfuse.data.datamodules.molecules",
    },
)
