"""`ManifestDataModule`: a datamodule over a prepared manifest (`modfuse.datasets.manifest`) and
one of its fixed splits, for the recipes of the public collections (``recipes/esol.yaml``, ...)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modfuse.core.tasks import TaskSpec
from modfuse.data.datamodules.base import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.transforms import Standardizer
from modfuse.datasets.manifest import Manifest, read_manifest

__all__ = ["ManifestDataModule"]


class ManifestDataModule(MultiModalDataModule):
    """A `MultiModalDataModule` over a prepared manifest and one of its fixed splits.

    Args:
        manifest: the folder written by ``prepare`` (or its ``manifest.json``).
        split_name: which fixed split to use (default: the manifest's default split).
        modalities: the modalities to load (default: all).
        root: data folder override for ``path`` modalities.
        standardize: standardise ``columns`` modalities with statistics of the training
            partition only (never val/test, which would leak).
        on_error: bad-file policy (``"raise"`` or ``"missing"``).
        batch_size, num_workers, pin_memory, seed, train_transform: as in
            `MultiModalDataModule`.
    """

    def __init__(
        self,
        manifest: str | Path,
        split_name: str | None = None,
        modalities: Sequence[str] | None = None,
        root: str | Path | None = None,
        standardize: bool = True,
        on_error: Literal["raise", "missing"] = "raise",
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
        train_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__(
            dataset=None,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
            train_transform=train_transform,
        )
        self.manifest_path = Path(manifest)
        self.split_name = split_name
        self.modalities = None if modalities is None else list(modalities)
        self.root = root
        self.standardize = standardize
        self.on_error = on_error
        self.manifest: Manifest | None = None

    def build_dataset(self) -> MultiModalDataset:
        self.manifest = read_manifest(self.manifest_path, self.root)
        self.given_splits = self.manifest.split(self.split_name)
        transforms = self._standardizers(self.given_splits["train"]) if self.standardize else None
        return self.manifest.to_dataset(
            self.modalities,
            on_error=self.on_error,
            transforms=transforms,
            with_groups=self.manifest.split_is_grouped(self.split_name),
        )

    def _standardizers(self, train_rows: np.ndarray) -> dict[str, Standardizer]:
        assert self.manifest is not None
        out = {}
        for m, spec in self.manifest.modalities.items():
            if spec.kind != "columns" or (self.modalities is not None and m not in self.modalities):
                continue
            values = self.manifest.table[spec.columns].iloc[train_rows].to_numpy(dtype=np.float64, na_value=np.nan)
            codes = np.isin(spec.columns, spec.categorical)  # category codes stay codes
            out[m] = Standardizer.fit(values, keep=codes)
        return out

    def task_specs(self) -> dict[str, TaskSpec]:
        """The manifest's tasks (reads the manifest if needed)."""
        if self.manifest is None:
            self.manifest = read_manifest(self.manifest_path, self.root)
        return self.manifest.task_specs()
