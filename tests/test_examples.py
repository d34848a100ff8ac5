"""The example notebooks execute end to end on tiny settings and their self-checks pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def _outputs(nb) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out.get("text", ""))
            elif "data" in out:
                text.append(out["data"].get("text/plain", ""))
    return "\n".join(text)


def test_notebooks_found() -> None:
    assert {p.name for p in NOTEBOOKS} >= {
        "01_clinical_cohort.ipynb",
        "02_geoscience.ipynb",
        "03_merging_two_sites.ipynb",
    }


def test_notebooks_committed_without_outputs() -> None:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODFUSE_EXAMPLES_TINY", "1")
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()
    text = _outputs(nb)
    name = path.stem.split("_", 1)[1].split("_")[0]
    assert f"CHECK {name if name != 'merging' else 'merging'}" in text or "CHECK" in text, text[-2000:]
    assert " ok" in text.split("CHECK", 1)[1].splitlines()[0], text[-2000:]
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert os.environ["MODFUSE_EXAMPLES_TINY"] == "1"
