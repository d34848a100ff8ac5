"""Tables (CSV or Parquet via pandas) with a schema and fitted, saveable preprocessing.

A `TabularSchema` names the id, target, numeric and categorical columns. A
`TabularPreprocessor` is fitted on the training table (per-column mean and standard
deviation, category maps) and saved as JSON with the model, so inference applies the training
statistics. `TabularSource` turns each row into the float vector that
[`modfuse.encoders.tabular.TabularEncoder`][modfuse.encoders.tabular.TabularEncoder] takes: standardised numeric columns, then
categorical codes (``NaN`` = missing cell; the encoder adds missing indicators).

Bad cells, documented behaviour:
    * NaN / empty cell: kept as NaN (a partially observed row is still used).
    * every feature cell NaN: the modality is missing for that sample (``load`` returns None).
    * ``inf`` / ``-inf`` or text in a numeric column: ``load`` raises `ReadError` naming
      the sample, the column and the value (the dataset's ``on_error`` policy applies).
    * a category not seen in training: NaN code (the encoder's "missing" category).
    * a CSV row with fewer fields than the header (pandas would pad it with NaN): ``load``
      raises `ReadError` naming the row and the absent columns (see `short_rows()`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from modfuse.data.collate import CollateMode
from modfuse.data.readers import register
from modfuse.data.transforms import Standardizer
from modfuse.errors import ModfuseError, ReadError

__all__ = ["TabularPreprocessor", "TabularSchema", "TabularSource", "read_table"]


@dataclass
class TabularSchema:
    """Which columns of a table play which role.

    Args:
        numeric: numeric feature columns.
        categorical: categorical feature columns (any values; mapped to integer codes).
        id: the sample-id column (default: the table's index).
        target: target column(s), excluded from the features.
    """

    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    id: str | None = None
    target: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.target, str):
            self.target = [self.target]
        self.numeric, self.categorical, self.target = list(self.numeric), list(self.categorical), list(self.target)
        roles = [*self.numeric, *self.categorical, *self.target, *([self.id] if self.id else [])]
        dupes = sorted({c for c in roles if roles.count(c) > 1})
        if dupes:
            raise ModfuseError(f"columns {dupes} are given more than one role in the schema")
        if not self.numeric and not self.categorical:
            raise ModfuseError("a tabular schema needs at least one numeric or categorical column")

    @property
    def features(self) -> list[str]:
        """Feature columns in output order: numeric, then categorical."""
        return [*self.numeric, *self.categorical]

    @classmethod
    def infer(
        cls, frame: pd.DataFrame, *, id: str | None = None, target: str | Sequence[str] = (), max_categories: int = 20
    ) -> TabularSchema:
        """Guess the roles from dtypes.

        Numeric (non-bool) columns are numeric; other columns (text, bool, category) with at
        most ``max_categories`` distinct values are categorical; a text column with more
        values raises, since it is probably free text or a mistyped numeric column.
        """
        target = [target] if isinstance(target, str) else list(target)
        numeric, categorical = [], []
        for col in frame.columns:
            if col == id or col in target:
                continue
            series = frame[col]
            if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
                numeric.append(str(col))
            elif series.nunique(dropna=True) <= max_categories:
                categorical.append(str(col))
            else:
                raise ModfuseError(
                    f"column {col!r} is text with {series.nunique()} distinct values (more than "
                    f"max_categories={max_categories}); give the schema explicitly"
                )
        return cls(numeric=numeric, categorical=categorical, id=id, target=target)


def read_table(table: str | os.PathLike[str] | pd.DataFrame, **kwargs: Any) -> pd.DataFrame:
    """A DataFrame from a table file, or an existing DataFrame as it is.

    Parquet (``.parquet``, ``.pq``) or delimited text by suffix: ``.tsv`` and ``.txt`` are
    tab-separated unless ``sep`` is given, anything else comma-separated. ``kwargs`` go to
    ``pandas.read_csv`` (``usecols``, ``index_col``, ``na_values``, ...) or, for Parquet,
    ``columns`` to ``pandas.read_parquet``.

    Raises:
        ReadError: naming the file, for a file pandas cannot read.
    """
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path, columns=kwargs.get("columns"))
        kwargs.setdefault("sep", "\t" if suffix in (".tsv", ".txt") else ",")
        kwargs.setdefault("low_memory", False)  # one dtype per column, not one per chunk
        return pd.read_csv(path, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ReadError(f"cannot read the table: {type(exc).__name__}: {exc}", path=path) from exc


def short_rows(path: Path | None) -> dict[int, str]:
    """Rows of a CSV/TSV file with fewer fields than its header, by row position.

    pandas pads such a row with NaN, which would read as missing values; an empty field
    (``a,,c``) is a missing value, an absent one is a malformed row, reported per sample.
    """
    if path is None or path.suffix.lower() not in (".csv", ".tsv", ".txt"):
        return {}
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","  # as read_table
    out: dict[int, str] = {}
    with path.open(newline="") as handle:
        rows = (r for r in csv.reader(handle, delimiter=delimiter) if r)  # pandas skips blank lines
        header = next(rows, [])
        for i, row in enumerate(rows):
            if len(row) < len(header):
                absent = header[len(row) :]
                out[i] = (
                    f"row {i + 1} has {len(row)} fields, the header has {len(header)} (no field for {absent[:5]}); "
                    "a missing value is an empty field (a,,c), an absent field is a malformed row"
                )
    return out


def _category_key(value: Any) -> str | None:
    """Categories are matched as strings, so JSON round trips keep them (1 and "1" agree)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value)


class TabularPreprocessor:
    """Training statistics: mean/std per numeric column and sorted categories per categorical
    column. Fit once on the training table, save with `save()`, reload with `load()`.

    Args:
        schema: the table's schema.
        mean: numeric column -> mean. std: numeric column -> standard deviation.
        categories: categorical column -> its categories (as strings), code = position.
    """

    def __init__(
        self,
        schema: TabularSchema,
        mean: dict[str, float],
        std: dict[str, float],
        categories: dict[str, list[str]],
    ) -> None:
        self.schema, self.mean, self.std, self.categories = schema, mean, std, categories

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: TabularSchema) -> TabularPreprocessor:
        """Statistics of ``frame`` (by the rule of `Standardizer`: NaN and inf cells ignored, a constant column gets std 1)."""
        _check_columns(frame, schema.features, None)
        numeric = (
            np.stack(
                [pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64) for col in schema.numeric],
                axis=1,
            )
            if schema.numeric
            else np.zeros((len(frame), 0))
        )
        fitted = Standardizer.fit(numeric)
        mean = dict(zip(schema.numeric, fitted.mean.tolist()))
        std = dict(zip(schema.numeric, fitted.std.tolist()))
        categories = {
            col: sorted({k for k in map(_category_key, frame[col].tolist()) if k is not None})
            for col in schema.categorical
        }
        return cls(schema, mean, std, categories)

    def transform(self, frame: pd.DataFrame, path: Any = None) -> tuple[np.ndarray, dict[int, str]]:
        """Features of every row and the problems found per row.

        Returns:
            values: (n_rows, n_features) float32; NaN for missing cells (and bad cells).
            problems: row position -> description of its inf / non-numeric cells.
        """
        _check_columns(frame, self.schema.features, path)
        out = np.full((len(frame), len(self.schema.features)), np.nan, dtype=np.float32)
        problems: dict[int, list[str]] = {}
        for j, col in enumerate(self.schema.numeric):
            raw = frame[col]
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, copy=True)
            text = np.isnan(values) & raw.notna().to_numpy() & (raw.astype(str).str.strip() != "").to_numpy()
            for i in np.flatnonzero(np.isinf(values) | text):
                problems.setdefault(int(i), []).append(
                    f"column {col!r} holds {_show(raw.iloc[i])}, expected a finite number"
                )
            values[~np.isfinite(values)] = np.nan
            out[:, j] = (values - self.mean[col]) / self.std[col]
        for k, col in enumerate(self.schema.categorical):
            codes = {c: float(i) for i, c in enumerate(self.categories[col])}
            keys = map(_category_key, frame[col].tolist())
            out[:, len(self.schema.numeric) + k] = [codes.get(key, np.nan) if key else np.nan for key in keys]
        return out, {i: "; ".join(msgs) for i, msgs in problems.items()}

    def encoder_kwargs(self) -> dict[str, Any]:
        """Arguments for ``TabularEncoder`` matching this output (columns already standardised)."""
        n_num = len(self.schema.numeric)
        categorical = {n_num + k: len(self.categories[c]) for k, c in enumerate(self.schema.categorical)}
        return {"num_features": len(self.schema.features), "categorical": categorical}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": asdict(self.schema), "mean": self.mean, "std": self.std, "categories": self.categories}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TabularPreprocessor:
        return cls(TabularSchema(**state["schema"]), state["mean"], state["std"], state["categories"])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics as JSON (no pickle: safe to share and to load)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TabularPreprocessor:
        """Read statistics saved by `save()`."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReadError(f"not a modfuse tabular preprocessing file: {exc}", path=path) from exc


def _show(value: Any) -> str:
    """A cell as the user wrote it (``inf``, ``'abc'``), not as NumPy reprs it."""
    return repr(value) if isinstance(value, str) else str(value)


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], path: Any) -> None:
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ReadError(f"expected columns {absent}, found columns {list(frame.columns)}", path=path)


@register("tabular")
class TabularSource:
    """One table row per sample, as a float vector (n_features,) for the tabular encoder.

    Args:
        table: a CSV / Parquet path or a DataFrame.
        schema: column roles; default `TabularSchema.infer()` (with ``id`` and ``target``).
        preprocessor: training statistics (a `TabularPreprocessor` or the path of its
            JSON). Default: fitted on this table (do this for the training table only, then
            pass ``source.preprocessor`` or its saved JSON to the validation / test sources).
        id: id column when ``schema`` is inferred. target: target column(s) when inferred.
        collate: collate mode (default ``"stack"``).

    Attributes:
        feature_names: output column order. frame: the table as read.

    Example:
        >>> train = TabularSource("labs_train.csv", TabularSchema(["age", "crp"], ["sex"], id="pid"))
        >>> train.preprocessor.save("labs_stats.json")
        >>> test = TabularSource("labs_test.csv", train.schema, preprocessor="labs_stats.json")
    """

    def __init__(
        self,
        table: str | os.PathLike[str] | pd.DataFrame,
        schema: TabularSchema | None = None,
        preprocessor: TabularPreprocessor | str | os.PathLike[str] | None = None,
        *,
        id: str | None = None,
        target: str | Sequence[str] = (),
        collate: CollateMode = "stack",
    ) -> None:
        self.path = None if isinstance(table, pd.DataFrame) else Path(table)
        self.frame = read_table(table)
        self.schema = schema or TabularSchema.infer(self.frame, id=id, target=target)
        if isinstance(preprocessor, (str, os.PathLike)):
            preprocessor = TabularPreprocessor.load(preprocessor)
        self.preprocessor = preprocessor or TabularPreprocessor.fit(self.frame, self.schema)
        self.ids = self._ids()
        self._row = {sid: i for i, sid in enumerate(self.ids)}
        self._values, self._problems = self.preprocessor.transform(self.frame, self.path)
        for i, problem in short_rows(self.path).items():
            self._problems[i] = "; ".join(filter(None, (problem, self._problems.get(i))))
        self._empty = np.isnan(self._values).all(axis=1)  # rows with every cell missing, found once
        self.feature_names = self.schema.features
        self.collate = collate

    def _ids(self) -> list[Hashable]:
        sid = self.schema.id
        if sid is not None and sid not in self.frame.columns:
            raise ReadError(f"expected an id column {sid!r}, found columns {list(self.frame.columns)}", path=self.path)
        ids = list(self.frame[sid] if sid else self.frame.index)
        dupes = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
        if dupes:
            raise ReadError(f"sample ids must be unique; repeated: {dupes[:5]}", path=self.path)
        return ids

    def load(self, sample_id: Hashable) -> torch.Tensor | None:
        """Features (n_features,) float32 of ``sample_id``; None when every cell is missing."""
        try:
            i = self._row[sample_id]
        except KeyError:
            raise ModfuseError(f"unknown sample id {sample_id!r}; this table has {len(self.ids)} rows") from None
        if i in self._problems:
            raise ReadError(self._problems[i], path=self.path, sample_id=sample_id)
        return None if self._empty[i] else torch.from_numpy(self._values[i].copy())

    def has(self, sample_id: Hashable) -> bool:
        """Whether the table has a row for ``sample_id`` with at least one observed cell."""
        i = self._row.get(sample_id)
        return i is not None and not self._empty[i]

    def targets(self) -> pd.DataFrame:
        """The target columns indexed by sample id (for ``MultiModalDataset(targets=...)``)."""
        _check_columns(self.frame, self.schema.target, self.path)
        return self.frame[self.schema.target].set_axis(pd.Index(self.ids), axis=0)

    def __len__(self) -> int:
        return len(self.ids)
