"""The manifest format: one table of samples plus a JSON description, and fixed split files.

A prepared collection is a folder::

    out/
      manifest.json        what the table means (format documented in docs/datasets/manifest.md)
      manifest.parquet     one row per sample (or manifest.csv)
      splits/<name>.csv    fixed splits: id,split[,group]

The table holds the sample id, the group id used for splitting (patient, block, scaffold),
the label columns, one path column or one set of value columns per modality, and one explicit
``has_<modality>`` column per modality (missingness is never implied by a fill value).
`read_manifest()` loads it back; `Manifest.to_dataset()` builds the
[`MultiModalDataset`][modfuse.data.MultiModalDataset];
[`ManifestDataModule`][modfuse.data.datamodules.manifest.ManifestDataModule] does both for recipes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from modfuse.core.tasks import TaskSpec, check_targets
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.readers.tabular import short_rows
from modfuse.data.sources import ArraySource, Source
from modfuse.data.splits import PARTITIONS, read_split, split_frame
from modfuse.errors import ModfuseError, ReadError
from modfuse.utils.moved import moved_names

__all__ = [
    "FORMAT",
    "VERSION",
    "Manifest",
    "ModalitySpec",
    "TargetSpec",
    "read_manifest",
    "write_manifest",
]

FORMAT = "modfuse-manifest"
VERSION = 1
ModalityKind = Literal["columns", "path", "value"]
SpecT = TypeVar("SpecT", "ModalitySpec", "TargetSpec")


@dataclass
class ModalitySpec:
    """How one modality is stored in the manifest table.

    Args:
        kind: ``columns`` (a set of numeric columns, one feature each), ``path`` (one column
            holding a file or record path relative to the manifest's ``root``) or ``value`` (one
            column holding an inline value such as a SMILES string).
        columns: the table columns (one for ``path`` and ``value``).
        reader: for ``path``/``value``: the name of a reader in [`modfuse.data.readers`][modfuse.data.readers]
            (``wfdb``, ``dicom``, ``raster``, ``smiles``, ...).
        options: keyword arguments for the reader.
        description: free text for humans (units, provenance).
        categorical: ``columns`` modalities: the columns holding integer category codes
            (never standardised; NaN = missing).
    """

    kind: ModalityKind
    columns: list[str]
    reader: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    categorical: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("columns", "path", "value"):
            raise ModfuseError(f"modality kind must be 'columns', 'path' or 'value', found {self.kind!r}")
        if not self.columns:
            raise ModfuseError("a modality needs at least one column")
        if self.kind != "columns" and (len(self.columns) != 1 or not self.reader):
            raise ModfuseError(f"a {self.kind!r} modality needs exactly one column and a reader, found {self}")


@dataclass
class TargetSpec:
    """One task's label columns.

    Args:
        kind: a [`TaskSpec`][modfuse.training.TaskSpec] kind.
        columns: binary/multiclass/regression: one column (or several regression targets);
            multilabel: one 0/1 column per label; survival: ``[time, event]``.
        classes: multiclass: class names in code order (the column holds codes 0..C-1).
        boundaries: survival: interior interval boundaries for the discrete-time model.
    """

    kind: str
    columns: list[str]
    classes: list[str] | None = None
    boundaries: list[float] | None = None

    def task_spec(self) -> TaskSpec:
        """The matching `TaskSpec`."""
        if self.kind == "multiclass":
            return TaskSpec("multiclass", len(self.classes or []))
        if self.kind == "survival":
            b = tuple(self.boundaries or ())
            return TaskSpec("survival", len(b) + 1, b)
        if self.kind in ("multilabel", "regression"):
            return TaskSpec(self.kind, len(self.columns))  # type: ignore[arg-type]
        return TaskSpec(self.kind)  # type: ignore[arg-type]


def has_column(modality: str) -> str:
    """Name of the explicit presence column of ``modality``."""
    return f"has_{modality}"


def _as_spec(value: Any, cls: type[SpecT], where: str) -> SpecT:
    """``value`` as a ``cls`` (a spec or its dict form); a bad form raises naming ``where``."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ModfuseError(f"{where}: expected a {cls.__name__} or its dict form, found {type(value).__name__}")
    try:
        return cls(**value)
    except TypeError as exc:  # an unknown or missing key
        raise ModfuseError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------- writing
def write_manifest(
    table: pd.DataFrame,
    out: str | Path,
    *,
    name: str,
    modalities: Mapping[str, ModalitySpec | Mapping[str, Any]],
    targets: Mapping[str, TargetSpec | Mapping[str, Any]],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    default_split: str | None = None,
    ungrouped_splits: Sequence[str] = (),
    id_column: str = "id",
    group_column: str | None = "group",
    root: str | Path | None = None,
    excluded_columns: Mapping[str, str] | None = None,
    table_format: Literal["parquet", "csv"] = "parquet",
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a manifest folder and return the path of its ``manifest.json``.

    The ``has_<modality>`` columns are computed here (a ``columns`` modality is present when
    any of its cells is observed, a ``path``/``value`` modality when its cell is not empty),
    unless the table already has them, in which case they must agree with the data.

    Every argument is checked, and every file is rendered in memory (the table, the split files,
    ``manifest.json``), before anything is written: a bad argument raises `ModfuseError` and
    leaves no folder or file behind. The files are then written atomically, ``manifest.json``
    last (its presence marks a complete folder); a folder this call created is removed again if
    writing fails (e.g. a full disk).

    Args:
        table: one row per sample.
        out: output folder (created).
        name: collection name.
        modalities: modality -> `ModalitySpec` (or its dict form).
        targets: task -> `TargetSpec` (or its dict form).
        splits: split name -> ``{"train": idx, "val": idx, "test": idx}`` row indices.
        default_split: the split recipes use (default: the first one).
        ungrouped_splits: splits that deliberately ignore the groups (e.g. MoleculeNet's random
            split beside its scaffold split); every other split is refused if it puts one group
            in two partitions, and is checked again when read.
        id_column: column of unique sample ids (written as strings).
        group_column: column of split groups (patient, block, scaffold), or None.
        root: folder that ``path`` columns are relative to (the user's download).
        excluded_columns: provider columns deliberately left out -> why (e.g. leakage).
        table_format: ``parquet`` (default) or ``csv``.
        info: extra provenance written verbatim (licence, version, options used).
    """
    # every check runs, and every file is rendered, before the first byte is written: a bad
    # argument leaves no half-written folder
    out = Path(out)
    _check_arguments(table, out, name, modalities, targets, splits, ungrouped_splits, table_format, excluded_columns)
    mods = {m: _as_spec(s, ModalitySpec, f"modalities.{m}") for m, s in modalities.items()}
    tasks = {t: _as_spec(s, TargetSpec, f"targets.{t}") for t, s in targets.items()}
    for m, spec in mods.items():
        _check_reader_name(spec, f"modalities.{m}.reader")
    leaky = sorted({c for s in mods.values() for c in s.columns} & set(excluded_columns or {}))
    if leaky:
        raise ModfuseError(f"columns {leaky} are in excluded_columns and must not be modality columns")
    table = _checked_table(table, mods, tasks, id_column, group_column)
    default_split = default_split or next(iter(splits))
    if default_split not in splits:
        raise ModfuseError(f"default split {default_split!r} is not one of {sorted(splits)}")
    table_name = f"manifest.{table_format}"
    split_files: dict[str, dict[str, Any]] = {}
    split_texts: dict[str, str] = {}
    for split_name, parts in splits.items():
        grouped = group_column is not None and split_name not in ungrouped_splits
        split_files[split_name] = {"file": f"splits/{split_name}.csv", "grouped": grouped}
        groups = table[group_column].to_numpy(dtype=object) if grouped and group_column else None
        try:
            split_texts[split_name] = split_frame(parts, table[id_column].tolist(), groups).to_csv(index=False)
        except ModfuseError as exc:
            raise ModfuseError(f"split {split_name!r}: {exc}") from exc
    table_bytes = _render_table(table, table_format)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "table": table_name,
        "id": id_column,
        "group": group_column,
        "root": None if root is None else str(Path(root).resolve()),
        "modalities": {m: asdict(s) for m, s in mods.items()},
        "targets": {t: asdict(s) for t, s in tasks.items()},
        "splits": split_files,
        "default_split": default_split,
        "excluded_columns": dict(excluded_columns or {}),
        "num_samples": len(table),
        "info": dict(info or {}),
    }
    try:
        text = json.dumps(doc, indent=2, default=_json_default) + "\n"
    except (TypeError, ValueError) as exc:  # e.g. an info value with no JSON form
        raise ModfuseError(f"the manifest description cannot be written as JSON: {exc}") from None
    files = {table_name: table_bytes, **{f["file"]: split_texts[s].encode() for s, f in split_files.items()}}
    return _write_folder(out, files, text.encode())


def _check_arguments(
    table: Any,
    out: Path,
    name: Any,
    modalities: Any,
    targets: Any,
    splits: Any,
    ungrouped_splits: Any,
    table_format: Any,
    excluded_columns: Any,
) -> None:
    """The checks of `write_manifest()` that need no spec or column (types, names, formats)."""
    if not isinstance(table, pd.DataFrame):
        raise ModfuseError(f"table: expected a pandas DataFrame, found {type(table).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise ModfuseError(f"name: expected a non-empty string, found {name!r}")
    for field_name, value in (("modalities", modalities), ("targets", targets), ("splits", splits)):
        if not isinstance(value, Mapping):
            raise ModfuseError(f"{field_name}: expected a mapping, found {type(value).__name__}")
    if not modalities or not splits:
        raise ModfuseError("a manifest needs at least one modality and one fixed split")
    for split_name, parts in splits.items():
        if not isinstance(parts, Mapping) or "train" not in parts or set(parts) - set(PARTITIONS):
            found = sorted(parts) if isinstance(parts, Mapping) else type(parts).__name__
            raise ModfuseError(
                f"split {split_name!r}: expected partitions {list(PARTITIONS)} with 'train', found {found}"
            )
        if "/" in str(split_name) or str(split_name).startswith("."):
            raise ModfuseError(f"split name {split_name!r} must be a plain file name (it names splits/<name>.csv)")
    if isinstance(ungrouped_splits, str):
        raise ModfuseError(f"ungrouped_splits: expected a list of split names, found the string {ungrouped_splits!r}")
    unknown = sorted(set(ungrouped_splits) - set(splits))
    if unknown:
        raise ModfuseError(f"ungrouped_splits names unknown splits {unknown}; the splits are {sorted(splits)}")
    if table_format not in ("parquet", "csv"):
        raise ModfuseError(f"table_format must be 'parquet' or 'csv', found {table_format!r}")
    if excluded_columns is not None and not isinstance(excluded_columns, Mapping):
        raise ModfuseError(
            f"excluded_columns: expected a mapping column -> reason, found {type(excluded_columns).__name__}"
        )
    if out.exists() and not out.is_dir():
        raise ModfuseError(f"the manifest output {out} exists and is not a folder")


def _render_table(table: pd.DataFrame, table_format: str) -> bytes:
    """The table file's bytes (rendered before anything is written: a column pyarrow cannot
    store, such as one mixing numbers and strings, fails here and names itself)."""
    buffer = io.BytesIO()
    try:
        if table_format == "parquet":
            table.to_parquet(buffer, index=False)
        else:
            buffer.write(table.to_csv(index=False).encode())
    except (TypeError, ValueError, ImportError) as exc:  # pyarrow's errors subclass these
        raise ModfuseError(
            f"the manifest table cannot be written as {table_format}: {type(exc).__name__}: {exc}"
        ) from None
    return buffer.getvalue()


def _write_folder(out: Path, files: Mapping[str, bytes], manifest_json: bytes) -> Path:
    """Write ``files`` (relative path -> bytes) and then ``manifest.json`` into ``out``, each
    atomically; a folder created here is removed again when a write fails."""
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        for relative, data in files.items():
            target = out / relative
            target.parent.mkdir(parents=True, exist_ok=True)

            def write(p: Path, d: bytes = data) -> None:
                p.write_bytes(d)

            _atomic(target, write)
        # manifest.json last: its presence marks a complete folder
        path = out / "manifest.json"
        _atomic(path, lambda p: p.write_bytes(manifest_json))
    except BaseException:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)  # the outermost folder this call made
        raise
    return path


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary sibling renamed into place (never a truncated file)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to manifest.json")


def _checked_table(
    table: pd.DataFrame,
    mods: Mapping[str, ModalitySpec],
    tasks: Mapping[str, TargetSpec],
    id_column: str,
    group_column: str | None,
) -> pd.DataFrame:
    table = table.reset_index(drop=True).copy()
    needed = [id_column, *([group_column] if group_column else [])]
    needed += [c for s in mods.values() for c in s.columns] + [c for s in tasks.values() for c in s.columns]
    absent = [c for c in dict.fromkeys(needed) if c not in table.columns]
    if absent:
        raise ModfuseError(f"manifest table lacks columns {absent}; it has {list(table.columns)}")
    if table[id_column].isna().any():
        raise ModfuseError(f"sample id column {id_column!r} has empty cells")
    table[id_column] = table[id_column].astype(str)
    dup = table[id_column][table[id_column].duplicated()].unique()
    if len(dup):
        raise ModfuseError(f"sample ids must be unique, found duplicates {list(dup[:5])}")
    if group_column and table[group_column].isna().any():
        raise ModfuseError(f"group column {group_column!r} has empty cells (every sample needs a group)")
    for m, spec in mods.items():
        observed = _observed(table, spec)
        col = has_column(m)
        if col in table.columns:
            given = table[col].astype(bool).to_numpy()
            wrong = np.flatnonzero(given & ~observed)
            if len(wrong):
                raise ModfuseError(
                    f"{col} is True but the data is empty for samples {table[id_column].iloc[wrong[:5]].tolist()}",
                    modality=m,
                )
            table[col] = given
        else:
            table[col] = observed
    return table


def _observed(table: pd.DataFrame, spec: ModalitySpec) -> np.ndarray:
    if spec.kind == "columns":
        return table[spec.columns].notna().any(axis=1).to_numpy()
    cells = table[spec.columns[0]]
    return (cells.notna() & (cells.astype(str).str.strip() != "")).to_numpy()


# ---------------------------------------------------------------------------------- reading
@dataclass
class Manifest:
    """A manifest loaded by `read_manifest()`.

    Attributes:
        path: the ``manifest.json`` file.
        table: the sample table.
        doc: the JSON description.
        root: folder that ``path`` modalities are relative to.
    """

    path: Path
    table: pd.DataFrame
    doc: dict[str, Any]
    root: Path | None

    @property
    def name(self) -> str:
        return str(self.doc["name"])

    @property
    def ids(self) -> list[str]:
        return self.table[self.doc["id"]].astype(str).tolist()

    @property
    def groups(self) -> np.ndarray | None:
        col = self.doc.get("group")
        return None if not col else self.table[col].to_numpy(dtype=object)

    @property
    def modalities(self) -> dict[str, ModalitySpec]:
        return {m: ModalitySpec(**s) for m, s in self.doc["modalities"].items()}

    @property
    def targets(self) -> dict[str, TargetSpec]:
        return {t: TargetSpec(**s) for t, s in self.doc["targets"].items()}

    @property
    def split_names(self) -> list[str]:
        return list(self.doc["splits"])

    def task_specs(self) -> dict[str, TaskSpec]:
        """Task name -> `TaskSpec` for [`FusionTask`][modfuse.training.FusionTask]."""
        return {t: s.task_spec() for t, s in self.targets.items()}

    def split_is_grouped(self, name: str | None = None) -> bool:
        """Whether split ``name`` keeps every group in one partition."""
        return bool(self.doc["splits"][name or self.doc["default_split"]]["grouped"])

    def split(self, name: str | None = None) -> dict[str, np.ndarray]:
        """Row indices of the fixed split ``name`` (default: the manifest's default split)."""
        name = name or self.doc["default_split"]
        if name not in self.doc["splits"]:
            raise ModfuseError(f"manifest {self.path} has no split {name!r}; it has {self.split_names}")
        entry = self.doc["splits"][name]
        inside = _Contained(self.path.parent, "manifest.json", what="the manifest's folder")
        file = inside.path(entry["file"], field=f"splits.{name}.file")
        return read_split(file, self.ids, self.groups if entry["grouped"] else None)

    def present(self) -> pd.DataFrame:
        """Bool table ids x modalities from the explicit ``has_<modality>`` columns."""
        return pd.DataFrame(
            {m: self.table[has_column(m)].astype(bool).to_numpy() for m in self.modalities},
            index=pd.Index(self.ids, name="id"),
        )

    def target_array(self) -> np.ndarray | dict[str, np.ndarray]:
        """Targets for `MultiModalDataset` (an array for one task, else a dict)."""
        arrays = {t: self._target(t, s) for t, s in self.targets.items()}
        check_targets(arrays, self.task_specs(), self.ids)  # errors name the task and the sample
        return next(iter(arrays.values())) if len(arrays) == 1 else arrays

    def _target(self, task: str, spec: TargetSpec) -> np.ndarray:
        values = self.table[spec.columns]
        if spec.kind in ("binary", "multiclass"):
            col = values.iloc[:, 0]
            if col.isna().any():
                bad = self.table[self.doc["id"]][col.isna()].tolist()[:5]
                raise ModfuseError(f"task {task!r}: label column {spec.columns[0]!r} is empty for samples {bad}")
            return col.to_numpy(dtype=np.int64)
        arr = values.to_numpy(dtype=np.float32)
        return arr[:, 0] if spec.kind == "regression" and arr.shape[1] == 1 else arr

    def sources(self, modalities: Sequence[str] | None = None) -> dict[str, Source]:
        """One [`Source`][modfuse.data.Source] per modality (rows with ``has_<m>`` False are missing)."""
        specs = self.modalities
        chosen = list(modalities) if modalities is not None else list(specs)
        unknown = [m for m in chosen if m not in specs]
        if unknown:
            raise ModfuseError(f"unknown modalities {unknown}; the manifest has {list(specs)}")
        return {m: self._source(m, specs[m]) for m in chosen}

    def _source(self, modality: str, spec: ModalitySpec) -> Source:
        present = self.table[has_column(modality)].astype(bool).to_numpy()
        ids = self.ids
        if spec.kind == "columns":
            values = self.table[spec.columns].to_numpy(dtype=np.float32, na_value=np.nan).copy()
            values[~present] = np.nan  # the explicit flag wins over partially filled cells
            return ArraySource(values, ids)
        factory = _reader_factory(spec, f"modalities.{modality}.reader")
        cells = self.table[spec.columns[0]]
        if spec.kind == "path":
            inside = _Contained(self._require_root(modality), f"modalities.{modality} (column {spec.columns[0]!r})")
            entries = {sid: (str(inside.path(c, sid)) if ok else None) for sid, c, ok in zip(ids, cells, present)}
            return factory(entries, **spec.options)
        entries_v = [c if ok else None for c, ok in zip(cells, present)]
        return factory(entries_v, ids=ids, **spec.options)

    def _require_root(self, modality: str) -> Path:
        if self.root is None:
            raise ModfuseError(
                f"modality {modality!r} holds paths relative to the data root, but the manifest has no root; "
                "pass root= to read_manifest",
                modality=modality,
            )
        if not self.root.is_dir():
            raise ReadError("data root of the manifest is not a folder (pass root= to point at it)", path=self.root)
        return self.root

    def to_dataset(
        self,
        modalities: Sequence[str] | None = None,
        on_error: Literal["raise", "missing"] = "raise",
        transforms: Mapping[str, Callable[[Any], Any]] | None = None,
        with_groups: bool = True,
    ) -> MultiModalDataset:
        """Build the `MultiModalDataset` (ids, groups and targets from the table).

        Args:
            modalities: the modalities to load (default: all).
            on_error: bad-file policy of the dataset.
            transforms: modality -> callable applied to each loaded value.
            with_groups: attach the group column (the datamodule then refuses any split that
                puts one group in two partitions); False for a deliberately ungrouped split.
        """
        return MultiModalDataset(
            self.sources(modalities),
            targets=self.target_array(),
            ids=self.ids,
            groups=self.groups if with_groups else None,
            on_error=on_error,
            transforms=transforms,
        )


def read_manifest(path: str | Path, root: str | Path | None = None) -> Manifest:
    """Load a manifest folder (or its ``manifest.json``).

    Args:
        path: the output folder of ``prepare`` or its ``manifest.json``.
        root: data folder that ``path`` modalities are relative to (default: the one recorded
            when the manifest was written), for data moved after preparation.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise ReadError("manifest not found (expected the folder written by prepare, or its manifest.json)", path=path)
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReadError(f"manifest.json is not valid JSON: {exc}", path=path) from exc
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ReadError(
            f"expected format {FORMAT!r} version {VERSION}, found {doc.get('format')!r} version {doc.get('version')}",
            path=path,
        )
    _check_doc(doc, path)
    folder = _Contained(path.parent, "manifest.json", what="the manifest's folder")
    table_path = folder.path(doc["table"], field="table")
    if not table_path.is_file():
        raise ReadError("the manifest table is missing", path=table_path)
    if table_path.suffix == ".parquet":
        table = pd.read_parquet(table_path)
    else:
        # ids and paths must stay strings ("00001" is not 1)
        text_cols = {doc["id"]} | {
            s["columns"][0] for s in doc["modalities"].values() if s["kind"] in ("path", "value")
        }
        table = pd.read_csv(table_path, dtype=dict.fromkeys(text_cols, str), keep_default_na=True)
        short = short_rows(table_path)  # pandas pads them with NaN: a cut or edited table
        if short:
            raise ReadError(
                f"{len(short)} rows of the table lack fields: {next(iter(short.values()))}", path=table_path
            )
    root_value = root if root is not None else doc.get("root")
    manifest = Manifest(path, table, doc, None if root_value is None else Path(root_value))
    _check_loaded(manifest)
    return manifest


def _check_reader_name(spec: ModalitySpec, field: str) -> None:
    """Refuse a reader that is neither a registry name nor one of modfuse's own classes."""
    if spec.kind != "columns":
        _reader_factory(spec, field, build=False)


def _reader_factory(spec: ModalitySpec, field: str, build: bool = True) -> Any:
    """The reader class a ``path``/``value`` modality names (looked up, never imported by name)."""
    from modfuse.data import readers
    from modfuse.data.readers.images import LEGACY_NAMES

    name = spec.reader
    if isinstance(name, str):
        name = LEGACY_NAMES.get(name, name)  # the reader strings of older manifests
    if isinstance(name, str) and name in readers.available():
        return readers.get(name) if build else None
    raise ModfuseError(
        f"manifest field {field}: {spec.reader!r} is not a reader name. A manifest describes data, never code: "
        f"it names a registered reader ({', '.join(readers.available())}); nothing it names is imported"
    )


def _check_doc(doc: Any, path: Path) -> None:
    """Check the description's structure and reader names before any file is read or class built."""
    if not isinstance(doc, dict):
        raise ReadError(f"manifest.json must hold a JSON object, found {type(doc).__name__}", path=path)
    for key, kind in (("table", str), ("id", str), ("modalities", dict), ("targets", dict), ("splits", dict)):
        if not isinstance(doc.get(key), kind):
            raise ReadError(f"manifest field {key}: expected a {kind.__name__}, found {doc.get(key)!r:.80}", path=path)
    for m, entry in doc["modalities"].items():
        try:
            spec = ModalitySpec(**entry)
        except (TypeError, ModfuseError) as exc:
            raise ReadError(f"manifest field modalities.{m}: {exc}", path=path) from None
        if not isinstance(spec.options, dict):
            raise ReadError(f"manifest field modalities.{m}.options: expected an object", path=path)
        _check_reader_name(spec, f"modalities.{m}.reader")
    for t, entry in doc["targets"].items():
        try:
            TargetSpec(**entry)
        except TypeError as exc:
            raise ReadError(f"manifest field targets.{t}: {exc}", path=path) from None
    for name, entry in doc["splits"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ReadError(f"manifest field splits.{name}: expected {{'file': ..., 'grouped': ...}}", path=path)


class _Contained:
    """Resolves the paths a manifest holds against one folder and refuses any that leave it.

    Symlinks are resolved (a link inside the folder that points outside is refused too); for a
    path that does not exist as given (a WFDB record named without its ``.hea``/``.dat``
    suffix), the files in its folder that start with its name are checked instead.
    """

    def __init__(self, root: Path, field: str, what: str = "the data root") -> None:
        self.given = root
        self.root = Path(os.path.realpath(root))
        self.field, self.what = field, what
        self._escaping: dict[Path, set[str]] = {}

    def path(self, cell: Any, sample_id: Any = None, field: str | None = None) -> Path:
        full = self.given / str(cell)
        real = Path(os.path.realpath(full))
        if self._outside(real) or (not real.exists() and self._escaping_sibling(real)):
            where = f"manifest field {field or self.field}" + ("" if sample_id is None else f", sample {sample_id!r}")
            raise ReadError(
                f"{where}: path {str(cell)!r} resolves outside {self.what} {self.root}; every path in a "
                "manifest must stay inside it (no '..', absolute paths or symlinks leading out)",
                sample_id=sample_id,
            )
        return full

    def _outside(self, real: Path) -> bool:
        return real != self.root and self.root not in real.parents

    def _escaping_sibling(self, real: Path) -> bool:
        folder = real.parent
        if folder not in self._escaping:
            escaping = set()
            if folder.is_dir():
                for entry in os.scandir(folder):
                    if entry.is_symlink() and self._outside(Path(os.path.realpath(entry.path))):
                        escaping.add(entry.name)
            self._escaping[folder] = escaping
        name = real.name
        return any(n == name or n.startswith(name + ".") for n in self._escaping[folder])


def _check_loaded(manifest: Manifest) -> None:
    doc, table = manifest.doc, manifest.table
    needed = [doc["id"], *([doc["group"]] if doc.get("group") else [])]
    for m, s in doc["modalities"].items():
        needed += [*s["columns"], has_column(m)]
    for s in doc["targets"].values():
        needed += s["columns"]
    absent = [c for c in dict.fromkeys(needed) if c not in table.columns]
    if absent:
        raise ReadError(f"the manifest table lacks columns {absent} that manifest.json declares", path=manifest.path)
    if len(table) != doc.get("num_samples", len(table)):
        raise ReadError(
            f"manifest.json declares {doc['num_samples']} samples, the table has {len(table)}", path=manifest.path
        )


# the datamodule over a manifest moved to the datamodules; its old class path keeps working
__getattr__ = moved_names(__name__, {"ManifestDataModule": "modfuse.data.datamodules.manifest"})
