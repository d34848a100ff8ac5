"""mypy over the whole package, with the packages that are clean held at zero errors.

A package enters CLEAN once mypy reports nothing in it; from then on any error there fails
the suite (a ratchet, so typing only gets better). When every package is clean the list is
the whole of ``modfuse``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package folders (or top-level modules) under modfuse/ with zero mypy errors
CLEAN = [
    "core",
    "data",
    "datasets",
    "encoders",
    "fusion",
    "lego",
    "sequential",
    "interpret",
    "robust",
    "utils",
    "registry.py",
    "errors.py",
    "__init__.py",
]
ERROR = re.compile(r"^modfuse/(?P<part>[^/:]+)[^:]*:\d+: error: ", re.MULTILINE)


def errors_by_part(output: str) -> dict[str, list[str]]:
    """mypy's error lines grouped by the package folder (or module) of modfuse they are in."""
    found: dict[str, list[str]] = defaultdict(list)
    for match in ERROR.finditer(output):
        line = output[match.start() : output.find("\n", match.start())]
        found[match["part"]].append(line)
    return found


def test_error_lines_are_grouped_by_package() -> None:
    output = (
        "modfuse/lego/merge.py:3: error: bad  [misc]\n"
        "modfuse/core/model.py:9: error: worse  [arg-type]\n"
        "modfuse/errors.py:1: note: a note is not an error\n"
        "Found 2 errors in 2 files\n"
    )
    found = errors_by_part(output)
    assert sorted(found) == ["core", "lego"]
    assert found["core"] == ["modfuse/core/model.py:9: error: worse  [arg-type]"]


def test_clean_packages_have_no_mypy_errors() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra: pip install -e '.[dev]'")
    # mypy's own incremental cache (.mypy_cache) makes a developer's rerun take seconds
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode in (0, 1), result.stderr  # 2 = mypy itself failed (bad config)
    found = errors_by_part(result.stdout)
    regressions = {part: lines for part, lines in found.items() if part in CLEAN}
    assert not regressions, "\n".join(line for lines in regressions.values() for line in lines)
