"""The example notebooks execute end to end on tiny settings, their self-checks pass, and the
figures they show are modfuse's own plots, displayed inline."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
MIN_PLOTS = {"01_clinical_cohort": 10, "02_geoscience": 5, "03_merging_two_sites": 2}
NEEDS_SHARED_DATA = {"02_geoscience"}


def _parse(code: str) -> ast.Module:
    return ast.parse("\n".join(line for line in code.splitlines() if not line.startswith("%")))


def _plot_call(source: str) -> str | None:
    """The plot function a cell ends with (``plot_...(...)`` as its last statement), else None."""
    body = _parse(source).body
    last = body[-1] if body else None
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Call) and isinstance(last.value.func, ast.Name):
        return last.value.func.id if last.value.func.id.startswith("plot_") else None
    return None


def _plot_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and _plot_call(c.source)]


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


def _modfuse_imports(code: str) -> set[str]:
    tree = _parse(code)
    return {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("modfuse")
        for alias in node.names
    }


def test_notebooks_use_the_library_plots_not_pyplot() -> None:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "pyplot" not in code and "plt." not in code, path.name
        plots = _plot_cells(nb)
        assert len(plots) >= MIN_PLOTS[path.stem], (path.name, len(plots))
        called = {_plot_call(c.source) for c in plots}
        assert called <= _modfuse_imports(code), (path.name, called - _modfuse_imports(code))


def test_notebooks_committed_without_outputs() -> None:
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> None:
    if path.stem in NEEDS_SHARED_DATA:
        monkeypatch.setenv("MODFUSE_SHARED_DATA", str(request.getfixturevalue("shared_data")))
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
    for cell in _plot_cells(nb):  # every modfuse plot is displayed inline as an image
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) == 1, cell.source
        assert len(images[0]["data"]["image/png"]) > 5000, cell.source  # a drawn figure, not an empty canvas
    assert os.environ["MODFUSE_EXAMPLES_TINY"] == "1"
