"""`SyntheticCohortDataModule`: the synthetic quickstart cohort (`modfuse.datasets.synthetic`) as a
datamodule, for ``recipes/quickstart.yaml``, ``recipes/lego.yaml`` and ``recipes/sequential.yaml``."""

from __future__ import annotations

from typing import Any

from modfuse.data.datamodules.base import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.splits import SplitKind
from modfuse.datasets.synthetic import DEFAULT_MISSING, MODALITIES, MissingArg, SyntheticCohort, synthetic_cohort

__all__ = ["SyntheticCohortDataModule"]


class SyntheticCohortDataModule(MultiModalDataModule):
    """The synthetic cohort as a datamodule (for recipes: ``class_path`` this class).

    Args:
        n: number of patients.
        cohort_seed: the generator's seed (the split seed is ``seed``).
        missing: base missing rates (see `synthetic_cohort()`).
        root: where to write the cohort (default: the user cache).
        on_error: bad-input policy of the dataset.
        in_memory: keep each sample in memory after its first read through the readers (the
            files are still read by the real DICOM/WFDB/CSV readers, once).
        split, val_fraction, test_fraction, batch_size, num_workers, pin_memory, seed: as in
            [`MultiModalDataModule`][modfuse.data.MultiModalDataModule].
    """

    def __init__(
        self,
        n: int = 600,
        cohort_seed: int = 0,
        missing: dict[str, float] | float | None = None,
        root: str | None = None,
        on_error: str = "raise",
        in_memory: bool = True,
        split: SplitKind = "stratified",
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            None,
            split=split,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            seed=seed,
        )
        self.n, self.cohort_seed, self.root, self.on_error = n, cohort_seed, root, on_error
        self.in_memory = in_memory
        self.missing: MissingArg = DEFAULT_MISSING if missing is None else missing

    def cohort(self) -> SyntheticCohort:
        """The cohort on disk (generated on first use)."""
        return synthetic_cohort(self.n, self.cohort_seed, self.missing, self.root)

    def prepare_data(self) -> None:
        self.cohort()

    def build_dataset(self) -> MultiModalDataset:
        return self.cohort().dataset(on_error=self.on_error, in_memory=self.in_memory)

    def describe(self) -> dict[str, Any]:
        """Share of patients with each modality, and of positive labels."""
        table = self.cohort().table
        return {"n": len(table), "positive": float(table["label"].mean())} | {
            f"has_{m}": float(table[f"has_{m}"].mean()) for m in MODALITIES
        }
