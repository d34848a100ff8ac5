"""The user's ``X`` as modality data: the input forms of the estimators and their checks.

Three forms of ``X`` are accepted (see `InputLayout`):

- a dict ``{modality: (n, ...) array | DataFrame | list of graphs | None}`` (a NaN row or a
  ``None`` entry: the modality is missing for that sample);
- one DataFrame plus ``modalities={"labs": [columns...], "vitals": [...]}``: each modality is a
  group of the frame's columns (a row whose columns of a modality are all NaN: missing);
- one (n, p) array plus ``modalities={"labs": [column positions...], ...}``.

A single table without ``modalities`` is one modality named ``"features"``. The single-table
forms are what scikit-learn's ``cross_val_score``, ``GridSearchCV`` and ``Pipeline`` pass
between steps (they index rows of one table, not of a dict).

Categorical columns of a DataFrame (``category`` dtype, or strings in an ``object`` / ``str``
column) become integer codes learned on the training rows, and the automatic tabular encoder
embeds them (see `modfuse.encoders.tabular.TabularEncoder`'s ``categorical``). Embeddings rather
than one-hot columns: the encoder already embeds integer codes, its width does not grow with the
number of categories, the numeric standardisation leaves the codes alone, and an embedding is a
learned linear map of the one-hot vector anyway. A column of ``k`` kept categories has codes
``0..k-1``, then:

- ``k``, the "unknown" category: a label unseen in ``fit`` (with a warning naming it), and a
  label seen in fewer than `MIN_CATEGORY_ROWS` training rows (an embedding fitted on one row
  memorises that row; pooled, those rows teach the "unknown" embedding what a new label should
  predict). Without such rare training labels the "unknown" embedding keeps its initial values,
  and the warning says so;
- NaN, a missing cell: the encoder's "missing" embedding (a missing value is not a new label).

A categorical column with more than ``max(MAX_CATEGORIES_FLOOR, n / MIN_CATEGORY_ROWS)``
distinct labels over its ``n`` non-missing training rows (fewer than 2 rows per label on
average: an identifier such as a patient id, one label per row) is refused, naming the column:
such embeddings learn nothing that carries to new samples. Drop the column (or make it the
index: the sample ids), or encode it yourself (a ``ColumnTransformer`` with a ``TargetEncoder``
in a ``Pipeline`` before the estimator) and pass numbers.

Other checks follow scikit-learn's conventions: sparse matrices, complex numbers, 1-D ``X``,
empty ``X`` (0 samples or 0 columns) and non-numeric object arrays are refused with the reason;
an object array of numbers is read as floats.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import is_classifier
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.multiclass import type_of_target
from torch import Tensor

from modfuse.errors import InputTypeError, ModfuseError

__all__ = [
    "MAX_CATEGORIES_FLOOR",
    "MIN_CATEGORY_ROWS",
    "SINGLE_MODALITY",
    "InputLayout",
    "align_frames",
    "aligned_y",
    "check_fit_rows",
    "checked_y",
    "n_rows",
    "take_rows",
]

SINGLE_MODALITY = "features"
"""The modality name of a single table given without ``modalities=``."""
MIN_CATEGORY_ROWS = 2
"""A category label needs this many training rows to get its own code (fewer: "unknown")."""
MAX_CATEGORIES_FLOOR = 20
"""A categorical column may always have this many labels, whatever the number of rows."""


# ---------------------------------------------------------------------------- dict form helpers
def align_frames(X: Mapping[str, Any]) -> tuple[dict[str, Any], pd.Index | None]:
    """Align the DataFrames of ``X`` by their index (sample ids), never by row position.

    The row order is the first DataFrame's; another DataFrame whose index holds the same ids
    in another order is reordered to it. Indexes that differ as sets, or that repeat an id, are
    refused (rows of different patients would be fused). Arrays, lists and ``y`` are positional:
    they follow the first DataFrame's order.

    Returns:
        (X with its DataFrames in one row order, that order's index or None without DataFrames).
    """
    frames = {m: v for m, v in X.items() if isinstance(v, pd.DataFrame)}
    if len(frames) < 2:
        return dict(X), next(iter(frames.values())).index if frames else None
    (first, ref), *others = frames.items()
    out = dict(X)
    for m, frame in [(first, ref), *others]:
        if frame.index.has_duplicates:
            dup = frame.index[frame.index.duplicated()].unique().tolist()
            raise ModfuseError(
                f"the DataFrame's index repeats sample ids {dup[:5]}: rows cannot be aligned", modality=m
            )
    for m, frame in others:
        if frame.index.equals(ref.index):
            continue
        only_ref, only_here = ref.index.difference(frame.index), frame.index.difference(ref.index)
        if len(only_ref) or len(only_here):
            raise ModfuseError(
                f"the DataFrames of {first!r} and {m!r} are indexed by different samples "
                f"({len(only_ref)} ids only in {first!r}, e.g. {only_ref[:5].tolist()}; {len(only_here)} only in "
                f"{m!r}, e.g. {only_here[:5].tolist()}). DataFrames are aligned by index: give every modality "
                "the same ids (a missing modality is a row of NaN)",
                modality=m,
            )
        out[m] = frame.reindex(ref.index)  # same ids in another order: follow the first DataFrame
    return out, ref.index


def aligned_y(y: Any, index: pd.Index | None) -> Any:
    """``y`` in the row order of X's DataFrames when it is a Series/DataFrame indexed by the same
    ids (a default 0..n-1 index is positional); refused when its ids differ from X's."""
    if index is None or not isinstance(y, (pd.Series, pd.DataFrame)) or y.index.equals(index):
        return y
    if isinstance(y.index, pd.RangeIndex) and not isinstance(index, pd.RangeIndex):
        return y  # positional labels beside id-indexed DataFrames
    if y.index.has_duplicates or len(y.index.symmetric_difference(index)):
        raise ModfuseError(
            f"y is indexed by other sample ids than X's DataFrames (e.g. {index.difference(y.index)[:5].tolist()} "
            f"only in X, {y.index.difference(index)[:5].tolist()} only in y): align them by id first"
        )
    return y.reindex(index)


def n_rows(data: Mapping[str, Any]) -> int:
    """Rows of the first modality that is not None."""
    return next(len(v) for v in data.values() if v is not None)


def checked_y(y: Any, estimator: Any) -> Any:
    """``y`` checked the way scikit-learn checks it, before the estimator reads it.

    Refused: no ``y``; a continuous ``y`` given to a classifier (its distinct values would
    become classes). A column vector (n, 1) given to a classifier is raveled to (n,) with
    scikit-learn's ``DataConversionWarning``. Other forms are left to the estimator's task.
    """
    name = type(estimator).__name__
    if y is None:
        raise ModfuseError(f"{name} requires y to be passed, but the target y is None")
    if not is_classifier(estimator):
        return y
    if isinstance(y, pd.DataFrame) and y.shape[1] == 1:
        y = _column_vector(y.iloc[:, 0])
    elif not isinstance(y, (pd.Series, pd.DataFrame)):
        y = np.asarray(y)  # lists, and array-likes that are not arrays
        if y.ndim == 2 and y.shape[1] == 1:
            y = _column_vector(y[:, 0])
    values = np.asarray(y)
    if values.ndim == 1 and values.dtype.kind == "f" and not np.isnan(values).any():
        kind = type_of_target(values)
        if kind == "continuous":
            raise ModfuseError(
                f"y is continuous (type_of_target: {kind!r}; {len(np.unique(values))} distinct values for "
                f"{len(values)} samples): {name} needs class labels; use FusionRegressor for a continuous target"
            )
    return y


def _column_vector(y: Any) -> Any:
    warnings.warn(
        "A column-vector y was passed when a 1d array was expected. Please change the shape of y to "
        "(n_samples,), for example using ravel().",
        DataConversionWarning,
        stacklevel=4,
    )
    return y


def check_fit_rows(n: int) -> None:
    """Refuse fitting on fewer than 2 samples (nothing to learn a model from)."""
    if n < 2:
        raise ModfuseError(f"X has {n} sample (n_samples={n}): at least 2 samples are needed to fit")


def take_rows(X: Any, rows: np.ndarray) -> Any:
    """The rows ``rows`` (positions) of ``X`` in any input form (dict, DataFrame, array)."""
    if isinstance(X, (pd.DataFrame, pd.Series)):
        return X.iloc[rows]
    if not isinstance(X, Mapping):
        return np.asarray(X)[rows]
    out: dict[str, Any] = {}
    for m, v in X.items():
        if v is None:
            out[m] = None
        elif isinstance(v, list):
            out[m] = [v[i] for i in rows]
        else:
            out[m] = take_rows(v, rows)
    return out


# ---------------------------------------------------------------------------- columns
def _is_categorical(column: pd.Series) -> bool:
    """A column of category labels: ``category`` dtype, or strings (object / string dtype)."""
    if isinstance(column.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(column.dtype):
        return True
    return False


def _check_column(column: pd.Series, modality: str) -> None:
    """Refuse a column that is neither numeric nor categorical (dates, complex, mixed objects)."""
    name = column.name
    if pd.api.types.is_bool_dtype(column.dtype) or (
        pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_complex_dtype(column.dtype)
    ):
        return
    if isinstance(column.dtype, pd.CategoricalDtype):
        return
    if pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype):
        odd = [v for v in column.dropna().tolist() if not isinstance(v, str)]
        if not odd:
            return
        raise ModfuseError(
            f"column {name!r} has dtype {column.dtype} holding {type(odd[0]).__name__} values (e.g. {odd[0]!r}): "
            "expected numbers or category labels (all strings); convert the column to one type",
            modality=modality,
        )
    raise ModfuseError(
        f"column {name!r} has dtype {column.dtype}: expected numbers (int, float, bool) or category labels "
        "(str, 'category'); convert it first (e.g. dates to days since an origin)",
        modality=modality,
    )


@dataclass
class TableCodes:
    """One modality's columns as a float matrix: numbers as they are, categories as codes.

    Args:
        columns: the modality's columns, in order.
        categories: column position -> the category labels kept in ``fit`` (code = position;
            code ``len(labels)`` is "unknown").
        rare: column position -> the labels seen in fewer than `MIN_CATEGORY_ROWS` training
            rows (coded "unknown", without a warning at predict time).
    """

    columns: list[Any]
    categories: dict[int, list[Any]] = field(default_factory=dict)
    rare: dict[int, list[Any]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, modality: str) -> TableCodes:
        """Learn the category labels of ``frame``'s categorical columns (sorted; a
        ``category`` dtype keeps its own order)."""
        table = cls(list(frame.columns))
        for i, name in enumerate(frame.columns):
            column = frame.iloc[:, i]
            _check_column(column, modality)
            if not _is_categorical(column):
                continue
            counts = column.dropna().astype(object).value_counts()
            if counts.empty:
                raise ModfuseError(f"categorical column {name!r} has no value in the training rows", modality=modality)
            _check_cardinality(name, len(counts), int(counts.sum()), modality)
            if isinstance(column.dtype, pd.CategoricalDtype):
                labels = [c for c in column.cat.categories if c in counts.index]
            else:
                labels = sorted(counts.index.tolist())
            table.categories[i] = [c for c in labels if counts[c] >= MIN_CATEGORY_ROWS]
            table.rare[i] = sorted((c for c in labels if counts[c] < MIN_CATEGORY_ROWS), key=str)
        return table

    @property
    def cardinalities(self) -> dict[int, int]:
        """Column position -> number of codes, the kept labels and "unknown" (the tabular
        encoder's ``categorical``; it adds the "missing" embedding)."""
        return {i: len(levels) + 1 for i, levels in self.categories.items()}

    def transform(self, frame: pd.DataFrame, modality: str) -> np.ndarray:
        """(n, len(columns)) float32: numbers, category codes ("unknown" = number of kept
        labels), NaN for a missing cell."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for i in range(len(self.columns)):
            column = frame.iloc[:, i]
            _check_column(column, modality)
            if i not in self.categories:
                if _is_categorical(column):
                    raise ModfuseError(
                        f"column {column.name!r} holds category labels but was numeric in fit", modality=modality
                    )
                out[:, i] = column.to_numpy(dtype=np.float32, na_value=np.nan)
                continue
            out[:, i] = self._codes(column, i, modality)
        return out

    def _codes(self, column: pd.Series, i: int, modality: str) -> np.ndarray:
        levels = self.categories[i]
        values = column.astype(object)
        codes = pd.Index(levels, dtype=object).get_indexer(values).astype(np.float32)  # -1: not a kept label
        missing = values.isna().to_numpy()
        codes[(codes < 0) & ~missing] = len(levels)  # rare in fit or never seen: "unknown"
        codes[missing] = np.nan
        unseen = sorted(set(values.dropna().tolist()) - set(levels) - set(self.rare[i]), key=str)
        if unseen:
            learned = (
                f"its embedding was learned on the training rows of the rare labels {self.rare[i][:5]}"
                if self.rare[i]
                else f"no label had fewer than {MIN_CATEGORY_ROWS} training rows, so its embedding is untrained"
            )
            warnings.warn(
                f"modality {modality!r}, column {column.name!r}: categories {unseen[:5]} were not seen in fit; "
                f"they are coded as the 'unknown' category ({learned})",
                stacklevel=5,
            )
        return codes


def _check_cardinality(name: Any, n_labels: int, n_rows: int, modality: str) -> None:
    """Refuse an identifier-like categorical column (see the module's docstring for the rule)."""
    limit = max(MAX_CATEGORIES_FLOOR, n_rows / MIN_CATEGORY_ROWS)
    if n_labels <= limit:
        return
    raise ModfuseError(
        f"categorical column {name!r} has {n_labels} distinct labels for {n_rows} training rows (more than "
        f"max({MAX_CATEGORIES_FLOOR}, rows / {MIN_CATEGORY_ROWS}) = {int(limit)}): it looks like an identifier, and "
        "one embedding per label learns nothing that carries to new samples. Drop the column (or make it the "
        "DataFrame's index: the sample ids), or encode it yourself (e.g. a ColumnTransformer with a "
        "TargetEncoder in a Pipeline before the estimator) and pass numbers",
        modality=modality,
    )


def _refuse_sparse(values: Any, modality: str | None) -> None:
    if sparse.issparse(values):  # before any Mapping test: a dok_matrix is a dict
        raise ModfuseError(
            f"sparse input is not supported (found a scipy.sparse {type(values).__name__}): the networks take dense "
            "rows; pass X.toarray() when it fits in memory",
            modality=modality,
        )


def _numeric(values: Any, modality: str | None) -> np.ndarray:
    """``values`` as a numeric array, refused with scikit-learn's reasons when it is not one:
    sparse, complex, or an object array that does not convert to floats."""
    _refuse_sparse(values, modality)
    array = values.numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.dtype.kind == "c":
        raise ModfuseError(f"Complex data not supported (dtype {array.dtype}): pass real numbers", modality=modality)
    if array.dtype.kind == "O":
        try:
            return array.astype(np.float64)  # an object array of numbers (e.g. DataFrame.values of mixed dtypes)
        except (TypeError, ValueError) as exc:  # NumPy's class kept: TypeError for a dict, ValueError for 'abc'
            error = InputTypeError if isinstance(exc, TypeError) else ModfuseError
            raise error(
                f"expected numbers, found an object array that does not convert to floats ({exc}); give category "
                "labels in a DataFrame column (they are then encoded)",
                modality=modality,
            ) from None
    return array


def _as_array(values: Any, modality: str) -> Any:
    """A modality's rows as a float array (tables, signals, images) or a list (graphs)."""
    if values is None or isinstance(values, list):
        return values
    array = _numeric(values, modality)
    if array.dtype.kind not in "biuf":
        raise ModfuseError(
            f"expected numeric values, found dtype {array.dtype}; give category labels in a DataFrame column "
            "(they are then encoded)",
            modality=modality,
        )
    if array.ndim < 2:
        raise ModfuseError(f"expected rows of features (n, ...), found shape {array.shape}", modality=modality)
    if array.ndim == 2 and array.shape[1] == 0 and len(array):
        raise ModfuseError(f"0 feature(s) (shape={array.shape}) while a minimum of 1 is required.", modality=modality)
    return array.astype(np.float32)


def _column_groups(X: pd.DataFrame | np.ndarray, modalities: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """modality -> its columns (labels of a DataFrame, positions of an array), checked."""
    labels = list(X.columns) if isinstance(X, pd.DataFrame) else list(range(X.shape[1]))
    if modalities is None:
        return {SINGLE_MODALITY: labels}
    if not isinstance(modalities, Mapping) or not modalities:
        raise ModfuseError(f"modalities must be a non-empty dict modality -> list of columns, found {modalities!r}")
    known = set(labels)
    owner: dict[Any, str] = {}
    groups: dict[str, list[Any]] = {}
    for m, cols in modalities.items():
        m = str(m)
        if isinstance(cols, (str, int)) or not isinstance(cols, Sequence | pd.Index | np.ndarray):
            raise ModfuseError(f"expected a list of columns, found {cols!r}", modality=m)
        cols = list(cols)
        if not cols:
            raise ModfuseError("the modality lists no column", modality=m)
        unknown = [c for c in cols if c not in known]
        if unknown:
            what = "columns" if isinstance(X, pd.DataFrame) else f"column positions (the array has {len(labels)})"
            raise ModfuseError(f"{what} {unknown[:5]} are not in X (X has {labels[:8]}...)", modality=m)
        for c in cols:
            if c in owner:
                raise ModfuseError(
                    f"column {c!r} is listed in two modalities, {owner[c]!r} and {m!r}: a column belongs to one",
                    modality=m,
                )
            owner[c] = m
        groups[m] = cols
    return groups


# ---------------------------------------------------------------------------- the layout
@dataclass
class InputLayout:
    """How ``X`` was given in ``fit``, so that later ``X`` are read the same way.

    Built by `InputLayout.fit` on the training ``X``; `transform` turns any later ``X`` of the
    same form into ``{modality: (n, ...) float array | list | None}`` and its sample ids.

    Attributes:
        form: ``"dict"``, ``"frame"`` (one DataFrame) or ``"array"`` (one 2-D array).
        groups: single-table forms: modality -> its columns (labels or positions).
        tables: modality -> `TableCodes` for every table modality given as a DataFrame.
        n_features: single-table forms: number of columns of ``X``.
        feature_names: ``"frame"`` form with string column labels: ``X``'s columns.
        row_shapes: dict form: modality -> the width ``(p,)`` of its (n, p) table array in ``fit``
            (signals and images are left to their encoders, some of which take other sizes).
        owner: the estimator's class name, for the messages.
    """

    form: str
    modalities: list[str]
    groups: dict[str, list[Any]] = field(default_factory=dict)
    tables: dict[str, TableCodes] = field(default_factory=dict)
    n_features: int | None = None
    feature_names: list[str] | None = None
    row_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    owner: str = "the estimator"

    @classmethod
    def fit(cls, X: Any, modalities: Mapping[str, Any] | None = None, owner: str = "the estimator") -> InputLayout:
        """The layout of the training ``X`` (categories are learned on its rows)."""
        layout = cls._fit(X, modalities)
        layout.owner = owner
        return layout

    @classmethod
    def _fit(cls, X: Any, modalities: Mapping[str, Any] | None) -> InputLayout:
        _refuse_sparse(X, None)
        if isinstance(X, Mapping):
            if modalities is not None:
                raise ModfuseError(
                    "modalities= groups the columns of one table; X is already a dict modality -> data: "
                    "pass one or the other"
                )
            if not X:
                raise ModfuseError("X must be a non-empty dict {modality: array | DataFrame | None}")
            tables = {str(m): TableCodes.fit(v, str(m)) for m, v in X.items() if isinstance(v, pd.DataFrame)}
            shapes = {
                str(m): tuple(np.shape(v)[1:])
                for m, v in X.items()
                if v is not None and not isinstance(v, (list, pd.DataFrame)) and np.ndim(v) == 2
            }
            return cls("dict", [str(m) for m in X], tables=tables, row_shapes=shapes)
        table = _single_table(X)
        groups = _column_groups(table, modalities)
        layout = cls("frame" if isinstance(table, pd.DataFrame) else "array", list(groups), groups)
        layout.n_features = table.shape[1]
        if isinstance(table, pd.DataFrame):
            layout.tables = {m: TableCodes.fit(table[cols], m) for m, cols in groups.items()}
            if all(isinstance(c, str) for c in table.columns):
                layout.feature_names = list(table.columns)
        return layout

    def categorical(self, modality: str) -> dict[int, int]:
        """Column position -> number of categories of ``modality`` (empty when none)."""
        table = self.tables.get(modality)
        return table.cardinalities if table is not None else {}

    def transform(self, X: Any, modalities: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], pd.Index | None]:
        """``X`` (of the form seen in ``fit``) as ``({modality: data | None}, sample ids or None)``.

        A modality left out of ``X`` (a dict key, or all its columns of a table) is missing for
        every sample.
        """
        _refuse_sparse(X, None)
        if self.form == "dict":
            return self._transform_dict(X, modalities)
        if isinstance(X, Mapping):
            raise ModfuseError(f"the model was fitted on one table (modalities {self.modalities}); X is a dict")
        table = _single_table(X)
        if modalities is not None and {str(m): list(c) for m, c in modalities.items()} != self.groups:
            raise ModfuseError(f"modalities= differs from the one given in fit: {self.groups}")
        if isinstance(table, pd.DataFrame) != (self.form == "frame"):
            expected = "a DataFrame" if self.form == "frame" else "an array"
            raise ModfuseError(f"the model was fitted on {expected}; X is a {type(X).__name__}")
        data: dict[str, Any] = {}
        if isinstance(table, pd.DataFrame):
            present = set(table.columns)
            for m, cols in self.groups.items():
                missing = [c for c in cols if c not in present]
                if len(missing) == len(cols):
                    data[m] = None  # the whole modality left out: missing for every sample
                elif missing:
                    raise ModfuseError(f"X lacks columns {missing[:5]} of this modality", modality=m)
                else:
                    data[m] = self.tables[m].transform(table[cols], m)
            return _checked(data), table.index
        if table.shape[1] != self.n_features:
            raise ModfuseError(
                f"X has {table.shape[1]} features, but {self.owner} is expecting {self.n_features} features as "
                "input (the columns of X in fit)"
            )
        array = _as_array(table, "X")
        return _checked({m: array[:, cols] for m, cols in self.groups.items()}), None

    def _transform_dict(self, X: Any, modalities: Mapping[str, Any] | None) -> tuple[dict[str, Any], pd.Index | None]:
        if modalities is not None or not isinstance(X, Mapping) or not X:
            raise ModfuseError(f"the model was fitted on a dict modality -> data ({self.modalities}); pass one")
        X, index = align_frames(X)
        unknown = sorted(set(map(str, X)) - set(self.modalities))
        if unknown:
            raise ModfuseError(f"unknown modalities {unknown}; the model was fitted on {self.modalities}")
        data: dict[str, Any] = {}
        for m in self.modalities:
            values = X.get(m)
            if isinstance(values, pd.DataFrame):
                table = self.tables.get(m)
                if table is None or list(values.columns) != table.columns:
                    expected = table.columns[:5] if table is not None else "an array"
                    raise ModfuseError(f"columns differ from the ones seen in fit: expected {expected}...", modality=m)
                data[m] = table.transform(values, m)
            else:
                data[m] = _as_array(values, m)  # a modality left out is missing for every sample
                fitted_shape = self.row_shapes.get(m)
                if data[m] is not None and fitted_shape is not None and data[m].shape[1:] != fitted_shape:
                    raise ModfuseError(
                        f"rows of shape {data[m].shape[1:]}, but {self.owner} was fitted on rows of shape {fitted_shape}",
                        modality=m,
                    )
        return _checked(data), index

    def ids(self, index: pd.Index | None, n: int) -> pd.Index:
        """The sample ids of a transformed ``X``: its DataFrame index, else 0..n-1."""
        return index if index is not None else pd.RangeIndex(n)


def _single_table(X: Any) -> pd.DataFrame | np.ndarray:
    if isinstance(X, pd.DataFrame):
        if X.columns.has_duplicates:
            dup = X.columns[X.columns.duplicated()].unique().tolist()
            raise ModfuseError(f"X repeats columns {dup[:5]}: every column needs its own name")
        if X.index.has_duplicates:
            dup = X.index[X.index.duplicated()].unique().tolist()
            raise ModfuseError(f"X's index repeats sample ids {dup[:5]}")
        if X.shape[1] == 0 and len(X):
            raise ModfuseError(f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
        return X
    array = _numeric(X, None)
    if array.ndim != 2:
        hint = (
            "; Reshape your data: X.reshape(-1, 1) if it is one feature, X.reshape(1, -1) if it is one sample"
            if array.ndim == 1
            else ""
        )
        raise ModfuseError(
            f"X must be a dict modality -> data, a DataFrame or a 2-D array (n, columns); found shape {array.shape}"
            + hint
        )
    if array.shape[1] == 0 and len(array):
        raise ModfuseError(f"X has 0 feature(s) (shape={array.shape}) while a minimum of 1 is required.")
    return array


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    lengths = {m: len(v) for m, v in data.items() if v is not None}
    if not lengths:
        raise ModfuseError("every modality of X is None: there is nothing to learn from or predict with")
    if not any(lengths.values()):
        raise ModfuseError("X has 0 samples: there is nothing to learn from or predict with")
    if len(set(lengths.values())) > 1:
        raise ModfuseError(f"modalities have different numbers of rows: {lengths}")
    return data
