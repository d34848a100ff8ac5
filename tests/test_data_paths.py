"""Old import and class paths of moved data classes and helpers keep working: recipes, saved
Lightning configs (``data.class_path``) and user code name them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modfuse.registry import import_path

MOVED = {
    "modfuse.datasets.manifest.ManifestDataModule": "modfuse.data.datamodules.manifest.ManifestDataModule",
    "modfuse.datasets.domains.EOPatchLandCoverDataModule": "modfuse.data.datamodules.eopatch.EOPatchLandCoverDataModule",
    "modfuse.datasets.domains.MoleculeCSVDataModule": "modfuse.data.datamodules.molecules.MoleculeCSVDataModule",
    "modfuse.datasets.domains.terrain_features": "modfuse.data.datamodules.eopatch.terrain_features",
    "modfuse.datasets.synthetic.SyntheticCohortDataModule": "modfuse.data.datamodules.synthetic.SyntheticCohortDataModule",
    "modfuse.datasets.synthetic.MemoizedSource": "modfuse.data.sources.MemoizedSource",
    "modfuse.data.cache.CachedDataModule": "modfuse.data.datamodules.cached.CachedDataModule",
    "modfuse.data.datamodule.MultiModalDataModule": "modfuse.data.datamodules.base.MultiModalDataModule",
    "modfuse.data.datamodule.EpochSampler": "modfuse.data.datamodules.base.EpochSampler",
    "modfuse.data.datamodule.split_indices": "modfuse.data.splits.split_indices",
    "modfuse.data.datamodule.check_disjoint_groups": "modfuse.data.splits.check_disjoint_groups",
    "modfuse.datasets.splits.scaffold_split": "modfuse.data.splits.scaffold_split",
    "modfuse.datasets.splits.write_split": "modfuse.data.splits.write_split",
    "modfuse.robust.MaskedSource": "modfuse.data.sources.MaskedSource",
    "modfuse.MultiModalDataModule": "modfuse.data.datamodules.base.MultiModalDataModule",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_names_the_moved_object(old: str) -> None:
    assert import_path(old) is import_path(MOVED[old])


def test_every_datamodule_is_exported_from_the_datamodules_package() -> None:
    from modfuse.data import datamodules

    for name in datamodules.__all__:
        assert getattr(datamodules, name).__module__.startswith("modfuse.data.datamodules.")
    with pytest.raises(AttributeError, match="NoSuchModule"):
        datamodules.NoSuchModule  # noqa: B018


def test_importing_the_data_package_does_not_import_the_data_sets_layer() -> None:
    """modfuse.data stays below modfuse.datasets at run time too (the datamodules over data sets
    load on first use)."""
    code = "import sys, modfuse.data, modfuse.data.datamodules; print(any(m.startswith('modfuse.datasets') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
