"""The README's Python example runs as written (a newcomer copies it first)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, str(README), "exec"), {})
    printed = capsys.readouterr().out
    auroc = float(re.search(r"'test/auroc': ([0-9.]+)", printed).group(1))
    assert auroc > 0.95
