"""Save a fitted estimator without pickle: ``est.save(folder)`` / ``FusionClassifier.load(folder)``.

A saved estimator is a folder of two files, safe to share: loading unpickles nothing, and
builds the network as `modfuse.load` does (``nn.Module`` classes only, see
[`modfuse.core.config`][modfuse.core.config]):

- ``model.safetensors``: the fitted network, written by `modfuse.save`
  ([`modfuse.core.io`][modfuse.core.io]: the weights and the network's JSON description);
- ``estimator.json``: the estimator's class, its parameters (``get_params()``), its fitted
  preprocessing state and attributes (the input layout: form of ``X``, columns of each
  modality, category codes, row widths; ``modalities_``, ``n_features_in_``,
  ``feature_names_in_``, ``task_spec_``, ``classes_``, ``y_mean_`` / ``y_std_``,
  ``boundaries_``, ``cv_results_``..., every public attribute ending in ``_``), and the SHA-256
  of ``model.safetensors``.

`load_estimator` checks the format, the class, the SHA-256 of the weights, the parameter
names, and that the network has the saved modalities and task; any mismatch is a `ReadError`
naming the file and what was expected vs found. A loaded estimator predicts exactly (bit for
bit, on the same device) what the saved one did. The training data (kept by ``fit`` for
``subset_gap(specialists="train")``) is not saved.

Values are written as JSON; a value JSON has no form for becomes a tagged object: ``{"__tuple__":
[...]}``, ``{"__ndarray__": [...], "dtype": "<f4", "shape": [...]}``, ``{"__scalar__": v,
"dtype": "<i8"}`` (NumPy scalars), ``{"__float__": "nan"}``, ``{"__dict__": [[key, value],
...]}`` (keys that are not strings, or that begin with ``__``), ``{"__taskspec__": {...}}``, ``{"__dataclass__":
"InputLayout", "fields": {...}}`` (the two layout classes only) and ``{"__module__":
description}`` (an ``nn.Module`` parameter, e.g. an encoder passed in ``encoders=``: rebuilt
from its description with fresh weights; the fitted weights are those of
``model.safetensors``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modfuse.core.config import ConfigError, describe, instantiate
from modfuse.core.tasks import TaskSpec
from modfuse.errors import ModfuseError, ReadError
from modfuse.estimators.inputs import InputLayout, TableCodes

if TYPE_CHECKING:
    from modfuse.estimators.base import _FusionEstimator

__all__ = ["FORMAT", "META_FILE", "VERSION", "WEIGHTS_FILE", "load_estimator", "save_estimator"]

FORMAT = "modfuse-estimator"
VERSION = 1
META_FILE = "estimator.json"
WEIGHTS_FILE = "model.safetensors"
ESTIMATORS = {
    "modfuse.estimators.classifier.FusionClassifier": "FusionClassifier",
    "modfuse.estimators.regressor.FusionRegressor": "FusionRegressor",
    "modfuse.estimators.survival.FusionSurvival": "FusionSurvival",
}
"""The classes `load_estimator` builds without being told which (class path -> name in
`modfuse.estimators`); a subclass loads with its own ``load``."""
DATACLASSES: dict[str, type] = {"InputLayout": InputLayout, "TableCodes": TableCodes}
SKIPPED = ("model_",)
"""Fitted attributes not in ``estimator.json``: the network is ``model.safetensors``."""


# ---------------------------------------------------------------------------- JSON values
def _encode(value: Any, where: str) -> Any:
    """``value`` as JSON-ready data (tagged forms, see the module docstring).

    Raises:
        ConfigError: naming ``where`` (the parameter or attribute) for a value with no form.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.integer):
        return value
    if isinstance(value, float) and not isinstance(value, np.floating):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic):
        if value.dtype.kind not in "biufUS":
            raise ConfigError(f"{where}: a NumPy {value.dtype} scalar has no JSON form")
        return {"__scalar__": _encode(value.item(), where), "dtype": value.dtype.str}
    if isinstance(value, np.ndarray):
        return _encode_array(value, where)
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
        return {"__dict__": [[_encode(k, where), _encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, TaskSpec):
        return {"__taskspec__": value.to_dict()}
    if dataclasses.is_dataclass(value) and type(value).__name__ in DATACLASSES:
        fields = {f.name: _encode(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
        return {"__dataclass__": type(value).__name__, "fields": fields}
    if isinstance(value, nn.Module):
        return {"__module__": describe(value)}
    raise ConfigError(
        f"{where} holds a {type(value).__module__}.{type(value).__qualname__}, which has no JSON form: save supports "
        "numbers, strings, lists, tuples, dicts, NumPy arrays and modules"
    )


def _encode_array(array: np.ndarray, where: str) -> dict[str, Any]:
    if array.dtype.kind not in "biufUSO":
        raise ConfigError(f"{where}: a NumPy array of dtype {array.dtype} has no JSON form")
    flat = array.reshape(-1)
    items = [_encode(v, where) for v in (flat.tolist() if array.dtype.kind != "O" else list(flat))]
    return {"__ndarray__": items, "dtype": array.dtype.str, "shape": list(array.shape)}


def _decode(value: Any) -> Any:
    """The inverse of `_encode` (an unknown tag is an error, never code)."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__float__" in value:
        return float(value["__float__"])
    if "__scalar__" in value:
        return np.array(_decode(value["__scalar__"]), dtype=np.dtype(value["dtype"]))[()]
    if "__ndarray__" in value:
        items = [_decode(v) for v in value["__ndarray__"]]
        dtype = np.dtype(value["dtype"])
        if dtype.kind != "O":
            return np.asarray(items, dtype=dtype).reshape(value["shape"])
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(value["shape"])
    if "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    if "__taskspec__" in value:
        return TaskSpec(**_decode(value["__taskspec__"]))
    if "__dataclass__" in value:
        cls = DATACLASSES.get(value["__dataclass__"])
        if cls is None:
            raise ModfuseError(f"unknown saved class {value['__dataclass__']!r}; expected one of {sorted(DATACLASSES)}")
        fields = {k: _decode(v) for k, v in value["fields"].items()}
        known = {f.name for f in dataclasses.fields(cls)}
        if set(fields) != known:
            raise ModfuseError(f"{cls.__name__} fields: expected {sorted(known)}, found {sorted(fields)}")
        return cls(**fields)
    if "__module__" in value:
        return instantiate(value["__module__"])  # builds nn.Module subclasses only
    return {k: _decode(v) for k, v in value.items()}


# ---------------------------------------------------------------------------- save
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def fitted_attributes(est: _FusionEstimator) -> dict[str, Any]:
    """The public fitted attributes of ``est`` (names ending in ``_``) but the network."""
    return {k: v for k, v in vars(est).items() if k.endswith("_") and not k.startswith("_") and k not in SKIPPED}


def save_estimator(est: _FusionEstimator, path: str | Path) -> Path:
    """Write the fitted ``est`` to the folder ``path`` (created; its two files replaced).

    Returns:
        the folder.

    Raises:
        NotFittedModelError: ``est`` is not fitted.
        ConfigError: before anything is written, naming the parameter or attribute that has no
            JSON form (or the part of the network that cannot be described).
    """
    import modfuse

    est._check_fitted()
    params = est.get_params(deep=False)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "modfuse_version": modfuse.__version__,
        "class": _class_path(type(est)),
        "params": {k: _encode(v, f"parameter {k!r}") for k, v in params.items()},
        "fitted": {k: _encode(v, f"attribute {k!r}") for k, v in fitted_attributes(est).items()},
    }
    folder = Path(path)
    weights = modfuse.save(est.model_, folder / WEIGHTS_FILE)  # creates the folder once the network is described
    meta["weights"] = {"file": WEIGHTS_FILE, "sha256": _sha256(weights)}
    text = json.dumps(meta, indent=1, allow_nan=False)
    (folder / META_FILE).write_text(text + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------- load
def _read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / META_FILE
    if not folder.is_dir():
        raise ReadError(
            f"not a saved estimator: expected a folder holding {META_FILE} and {WEIGHTS_FILE} (written by est.save)",
            path=folder,
        )
    if not meta_path.is_file():
        raise ReadError(
            f"file not found: a saved estimator folder holds {META_FILE} and {WEIGHTS_FILE}", path=meta_path
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(f"not valid JSON ({exc})", path=meta_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ReadError(f"expected format {FORMAT!r}, found {found!r}", path=meta_path)
    if meta.get("version") != VERSION:
        raise ReadError(
            f"expected format version {VERSION}, found {meta.get('version')!r} (written by modfuse "
            f"{meta.get('modfuse_version')})",
            path=meta_path,
        )
    missing = [k for k in ("class", "params", "fitted", "weights") if k not in meta]
    if missing:
        raise ReadError(f"entries {missing} are missing (expected class, params, fitted, weights)", path=meta_path)
    return meta


def _estimator_class(stored: str, expected: type | None, meta_path: Path) -> type:
    import modfuse.estimators as estimators

    if expected is not None:
        if stored != _class_path(expected):
            name = ESTIMATORS.get(stored, stored)
            raise ReadError(
                f"holds a {name} ({stored}), expected a {expected.__name__} ({_class_path(expected)}): load it with "
                f"{stored.rsplit('.', 1)[-1]}.load or modfuse.estimators.load_estimator",
                path=meta_path,
            )
        return expected
    if stored not in ESTIMATORS:
        raise ReadError(
            f"holds a {stored}, expected one of {sorted(ESTIMATORS.values())}: load a subclass with its own load(path)",
            path=meta_path,
        )
    cls: type = getattr(estimators, ESTIMATORS[stored])
    return cls


def _check_weights(folder: Path, meta: Mapping[str, Any]) -> Path:
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ReadError(f"file not found: the network of the estimator in {folder / META_FILE}", path=weights)
    expected = meta["weights"].get("sha256") if isinstance(meta["weights"], Mapping) else None
    found = _sha256(weights)
    if found != expected:
        raise ReadError(
            f"SHA-256 {found} differs from the {expected} recorded in {META_FILE}: the weights were changed or "
            "replaced after the estimator was saved",
            path=weights,
        )
    return weights


def _check_model(est: _FusionEstimator, model: nn.Module, weights: Path) -> None:
    """The network's modalities and task are the ones the estimator was fitted with."""
    saved = list(getattr(est, "modalities_", []))
    found = list(getattr(model, "modalities", saved))
    if found != saved:
        raise ReadError(f"the network reads modalities {found}, the estimator expects {saved}", path=weights)
    tasks = getattr(model, "tasks", None)
    spec = getattr(est, "task_spec_", None)
    if isinstance(tasks, Mapping) and spec is not None and tasks.get("y") != spec:
        raise ReadError(f"the network's task is {tasks.get('y')}, the estimator expects {spec}", path=weights)


def load_estimator(path: str | Path, cls: type | None = None, map_location: str | torch.device = "cpu") -> Any:
    """The fitted estimator saved by `save_estimator` in the folder ``path``.

    Args:
        path: the folder written by ``est.save(path)``.
        cls: the expected class (``FusionClassifier.load`` passes its own); None: any of
            `FusionClassifier`, `FusionRegressor`, `FusionSurvival`, as recorded in the file.
        map_location: where the network's weights are read to (``predict`` then moves the
            network to the estimator's ``device``, as after ``fit``).

    Raises:
        ReadError: naming the file, when the folder is not a saved estimator, holds another
            class, its weights changed after saving, or its contents do not match.
    """
    import modfuse

    folder = Path(path)
    meta = _read_meta(folder)
    meta_path = folder / META_FILE
    est_cls = _estimator_class(meta["class"], cls, meta_path)
    try:
        params = {k: _decode(v) for k, v in meta["params"].items()}
        fitted = {k: _decode(v) for k, v in meta["fitted"].items()}
    except (ModfuseError, TypeError, ValueError, KeyError) as exc:
        raise ReadError(f"cannot read the saved values: {exc}", path=meta_path) from None
    known = set(est_cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ReadError(
            f"parameters {unknown} are not parameters of {est_cls.__name__} (expected some of {sorted(known)})",
            path=meta_path,
        )
    bad = [k for k in fitted if not k.endswith("_") or k.startswith("_") or k in SKIPPED]
    if bad or not isinstance(fitted.get("layout_"), InputLayout):
        raise ReadError(
            f"fitted attributes: expected public names ending in '_' with an InputLayout 'layout_', found {sorted(fitted)}",
            path=meta_path,
        )
    est = est_cls(**params)
    for name, value in fitted.items():
        setattr(est, name, value)
    weights = _check_weights(folder, meta)
    with torch.random.fork_rng(devices=[]):  # building the network must not move the user's seed
        model = modfuse.load(weights, map_location=map_location)
    _check_model(est, model, weights)
    est.model_ = model.eval()
    return est
