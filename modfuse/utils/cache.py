"""Where modfuse caches derived files (normalisation statistics, the synthetic cohort)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(*parts: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A writable cache folder, created on demand.

    Resolution order: ``root`` (the caller's choice), ``$MODFUSE_CACHE``,
    ``$XDG_CACHE_HOME/modfuse``, ``~/.cache/modfuse``. Never inside the data folders a user
    reads from (those may be read-only).

    Args:
        *parts: sub-folders, e.g. ``cache_dir("stats")``.
        root: explicit base folder.
    """
    if root is not None:
        base = Path(root)
    elif os.environ.get("MODFUSE_CACHE"):
        base = Path(os.environ["MODFUSE_CACHE"])
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modfuse"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
