"""What the file readers share: mapping sample ids to files, and turning a library's
exceptions into [`ReadError`][modfuse.errors.ReadError] naming the file and the sample."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeAlias

import pandas as pd

from modfuse.data.collate import CollateMode
from modfuse.errors import ModfuseError, ReadError

__all__ = ["FileSource", "PathsLike", "resolve_paths"]

PathsLike: TypeAlias = (
    str
    | os.PathLike[str]
    | Mapping[Hashable, "str | os.PathLike[str] | None"]
    | Iterable[tuple[Hashable, "str | os.PathLike[str] | None"]]
    | Iterable["str | os.PathLike[str]"]
    | pd.Series
)
"""Where a file reader finds its files: a folder (globbed with the reader's ``pattern``, the
id is the path relative to the folder without its suffix), a mapping ``{id: path}``, a pandas
Series (index = ids), a list of ``(id, path)`` pairs, or a list of paths (id = file stem). A
``None`` / NaN / empty path marks the modality missing for that sample."""


def _is_missing_path(path: Any) -> bool:
    return path is None or (isinstance(path, float) and path != path) or (isinstance(path, str) and not path.strip())


def _from_folder(folder: Path, pattern: str, strip_suffix: bool) -> dict[Hashable, Path]:
    if not folder.is_dir():
        raise ReadError(f"expected a folder of files matching {pattern!r}, found no such folder", path=folder)
    files = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not files:
        raise ReadError(f"no files matching {pattern!r} in this folder", path=folder)
    out: dict[Hashable, Path] = {}
    for p in files:
        rel = p.relative_to(folder)
        out[(rel.with_suffix("") if strip_suffix else rel).as_posix()] = p
    return out


def resolve_paths(paths: PathsLike, *, pattern: str = "*", strip_suffix: bool = True) -> dict[Hashable, Path | None]:
    """Map sample ids to file paths (``None`` = missing for that sample).

    Args:
        paths: see `PathsLike`.
        pattern: glob pattern used when ``paths`` is a folder (``"**/*.dcm"`` recurses).
        strip_suffix: drop the file suffix from ids derived from file names.

    Returns:
        ``{sample_id: Path or None}`` in a stable order (sorted for folders, given order otherwise).
    """
    if isinstance(paths, (str, os.PathLike)):
        return dict(_from_folder(Path(paths), pattern, strip_suffix))
    if isinstance(paths, pd.Series):
        paths = paths.to_dict()
    items: Iterable[Any] = paths.items() if isinstance(paths, Mapping) else paths
    out: dict[Hashable, Path | None] = {}
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            p = Path(item)
            sid: Hashable = p.with_suffix("").name if strip_suffix else p.name
        else:
            sid, p = item
        if sid in out:
            raise ModfuseError(f"sample id {sid!r} is given two files ({out[sid]} and {p})")
        out[sid] = None if _is_missing_path(p) else Path(p)
    return out


class FileSource:
    """Base class of the readers that read one file (or record) per sample.

    Subclasses implement `read()`; ``load`` handles the id lookup, missing entries and the
    conversion of the library's exceptions (``library_errors``) into `ReadError`.

    Args:
        paths: see `PathsLike`.
        pattern: glob pattern when ``paths`` is a folder.
        collate: collate mode of this modality.
    """

    # per instance where a library is imported lazily (pydicom: its errors are known once loaded)
    library_errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    default_pattern: ClassVar[str] = "*"
    strip_suffix: ClassVar[bool] = True

    def __init__(self, paths: PathsLike, *, pattern: str | None = None, collate: CollateMode = "auto") -> None:
        self.paths = resolve_paths(paths, pattern=pattern or self.default_pattern, strip_suffix=self.strip_suffix)
        self.ids = list(self.paths)
        self.collate = collate

    def __len__(self) -> int:
        return len(self.ids)

    def path_of(self, sample_id: Hashable) -> Path | None:
        """The file of ``sample_id`` (None when the modality is missing for it)."""
        try:
            return self.paths[sample_id]
        except KeyError:
            raise ModfuseError(f"unknown sample id {sample_id!r}; this reader has {len(self.ids)} ids") from None

    def load(self, sample_id: Hashable) -> Any | None:
        """Read the sample's value; None when its path is missing; ReadError for a bad file."""
        path = self.path_of(sample_id)
        if path is None:
            return None
        try:
            return self.read(path, sample_id)
        except ReadError as exc:
            if exc.path is None:
                raise ReadError(exc.message, path=path, modality=exc.modality, sample_id=sample_id) from exc
            raise
        except ModfuseError:
            raise
        except self.library_errors as exc:
            raise ReadError(f"{type(exc).__name__}: {exc}", path=path, sample_id=sample_id) from exc

    def read(self, path: Path, sample_id: Hashable) -> Any:
        """Read one file; raise ReadError (or one of ``library_errors``) on bad input.

        Subclasses that read one file per sample implement this; those that cut many samples
        from one file (the WFDB window and beat sources) override ``load`` instead.
        """
        raise NotImplementedError(f"{type(self).__name__} reads per sample through load(), not read()")
