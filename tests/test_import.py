"""`import modfuse` stays light: no optional extra is imported until a feature needs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modfuse.errors import MissingExtraError
from modfuse.utils.optional import require

EXTRAS = ("monai", "torchgeo", "rasterio", "torch_geometric", "pydicom", "captum", "wfdb", "rdkit")


def test_import_modfuse_loads_no_extras() -> None:
    code = (
        "import sys, modfuse, modfuse.data, modfuse.encoders, modfuse.fusion, modfuse.training; "
        f"print(' '.join(m for m in {EXTRAS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_extra_names_the_install_command() -> None:
    with pytest.raises(MissingExtraError, match=r'pip install "modfuse\[geo\]"'):
        require("a_module_that_is_not_installed_anywhere", extra="geo")


def test_public_names_resolve() -> None:
    import modfuse

    assert modfuse.ModalityBatch.__name__ == "ModalityBatch"
    assert callable(modfuse.MultiModalDataset.from_arrays)
    with pytest.raises(AttributeError):
        _ = modfuse.not_a_name
