"""The documentation site builds with ``mkdocs build --strict`` (broken links, missing API objects
and missing included files are errors)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("mkdocs") is None, reason="mkdocs is not installed (extra: docs)")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    # the API reference really rendered the documented objects
    api = (site / "api" / "data" / "index.html").read_text(encoding="utf-8")
    assert "ModalityBatch" in api and "MultiModalDataModule" in api
    bench = (site / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "RMSE" in bench
