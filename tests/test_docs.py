"""The documentation site builds with ``mkdocs build --strict`` (broken links, missing API objects
and missing included files are errors)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _build(site: Path, cwd: Path) -> Path:
    """``mkdocs build --strict -f ROOT/mkdocs.yml`` run from ``cwd``; returns the site folder."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return site


@pytest.mark.skipif(shutil.which("mkdocs") is None, reason="mkdocs is not installed (extra: docs)")
@pytest.mark.parametrize("where", ["repository root", "another folder"])
def test_mkdocs_build_strict(tmp_path: Path, where: str) -> None:
    cwd = ROOT if where == "repository root" else tmp_path
    site = _build(tmp_path / "site", cwd)
    assert (site / "index.html").is_file()
    # the API reference really rendered the documented objects
    api = (site / "api" / "data" / "index.html").read_text(encoding="utf-8")
    assert "ModalityBatch" in api and "MultiModalDataModule" in api
    # the Benchmarks page includes the committed tables whatever the working folder
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    for table in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        if f'"benchmarks/results/{table.name}"' in (ROOT / "docs" / "benchmarks" / "index.md").read_text():
            rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
            # the first decimal number of the data rows (after header and rule): a measured value
            # (a table's first row may hold only whole numbers, e.g. samples/s rounded)
            found = re.search(r"\d+\.\d+", "\n".join(rows[2:]))
            assert found, f"{table.name} has no measured decimal value in its data rows"
            assert found.group(0) in bench, f"{table.name} is missing from the Benchmarks page"
    assert "RMSE" in bench and bench.count("<table") >= 3
    # docstrings render as Markdown: no raw reStructuredText roles on the API pages
    for page in sorted((site / "api").rglob("*.html")):
        raw = re.findall(r":(?:class|func|meth|attr|mod|data|obj|exc):<code>", page.read_text(encoding="utf-8"))
        assert not raw, f"{page.relative_to(site)} shows {len(raw)} raw roles"
    # every dataset card renders as its own page (the links from the manifest page resolve)
    for card in sorted((ROOT / "datasets").glob("*/README.md")):
        page = site / "datasets" / "cards" / card.parent.name / "index.html"
        title = card.read_text().splitlines()[0].lstrip("# ").split(" (")[0]
        assert title in page.read_text(encoding="utf-8"), card


def test_docstrings_use_markdown_not_rest_roles() -> None:
    """mkdocstrings renders Markdown: a ``:class:`X` `` role would show as raw text on the API pages."""
    role = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|obj|exc):`")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "modfuse").rglob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if role.search(line)
    ]
    assert not offenders, offenders
