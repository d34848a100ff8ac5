"""Helpers the collection modules share: finding provider files, reading tables with errors
that name the file and the columns expected versus found."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from modfuse.errors import ReadError

__all__ = ["find_file", "relative", "require_columns"]


def find_file(root: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` that exists under ``root`` (or ``root`` itself when it is a file).

    Args:
        root: the user's download folder or a single file.
        names: candidate relative paths, in order of preference.
        what: description for the error message.
    """
    if root.is_file():
        return root
    for name in names:
        candidate = root / name
        if candidate.is_file():
            return candidate
    raise ReadError(f"expected {what} at one of {list(names)} (the provider's layout), found none", path=root)


def require_columns(table: pd.DataFrame, columns: Iterable[str], path: Path | str) -> None:
    """Raise a ReadError naming the file when ``table`` lacks any of ``columns``."""
    absent = [c for c in columns if c not in table.columns]
    if absent:
        raise ReadError(f"expected columns {absent}, found {list(table.columns)[:30]}", path=path)


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes (what manifests store)."""
    return path.resolve().relative_to(root.resolve()).as_posix()
