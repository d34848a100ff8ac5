"""One progress bar for every long operation (Shapley values, sweeps, subset evaluation, block
training loops): rich, like Lightning's ``RichProgressBar`` that the CLI uses. Training
(the estimators with ``verbose=None``, `fit_block()` / `fit_model()`, the subset-gap
specialists) shows Lightning's own bar under the same rule (`progress_enabled()`).

Whether a bar shows: ``verbose=True`` / ``False`` when the caller says so; by default it shows
in a terminal or a notebook and stays quiet in CI (``CI`` set) or when output is redirected.
``MODFUSE_PROGRESS=0`` / ``1`` overrides the default for a whole session.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress", "progress_enabled"]

T = TypeVar("T")


def progress_enabled(verbose: bool | None = None) -> bool:
    """Whether to show a bar: ``verbose`` if given, else ``MODFUSE_PROGRESS``, else interactive
    output (a terminal or a Jupyter kernel) outside CI."""
    if verbose is not None:
        return bool(verbose)
    forced = os.environ.get("MODFUSE_PROGRESS")
    if forced is not None:
        return forced.strip().lower() not in ("", "0", "false", "no")
    if os.environ.get("CI"):
        return False
    return _in_notebook() or bool(getattr(sys.stderr, "isatty", lambda: False)())


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell else None
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


def progress(
    items: Iterable[T], description: str, total: int | None = None, verbose: bool | None = None
) -> Iterator[T]:
    """Yield ``items`` while a rich progress bar (if `progress_enabled()`) counts them.

    Args:
        items: what to iterate.
        description: the bar's label, e.g. ``"Shapley values"``.
        total: number of items when ``items`` has no ``len`` (None: an indeterminate bar).
        verbose: force the bar on or off (None: the default of `progress_enabled()`).
    """
    if not progress_enabled(verbose):
        yield from items
        return
    from rich.progress import track

    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    yield from track(items, description=description, total=total, transient=True)
