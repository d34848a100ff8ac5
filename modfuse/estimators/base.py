"""Scikit-learn style estimators for notebooks: ``FusionClassifier``, ``FusionRegressor``,
``FusionSurvival``.

``X`` is a dict ``{modality: array | DataFrame | list | None}`` with one row per sample; a
row of NaN (or a ``None`` entry, or ``None`` for the whole modality) means the modality is
missing for that sample. DataFrames are aligned by their index (sample ids), never by row
position: the rows follow the first DataFrame's order, and indexes that hold different ids are
refused (see `align_frames()`). A missing label (NaN) is refused. Every strategy of `modfuse.fusion` works, and the estimators
are compatible with ``sklearn.base.clone``, ``get_params`` and ``set_params``.

Example:
    >>> clf = FusionClassifier(strategy="late").fit({"labs": X_labs, "ecg": X_ecg}, y)
    >>> clf.predict_proba({"labs": X_labs_new, "ecg": None})   # ECG missing for everyone
    >>> clf.explain({"labs": X_labs_new, "ecg": X_ecg_new})    # modality Shapley values
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from modfuse.core.tasks import TaskSpec
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.data.transforms import Standardizer
from modfuse.errors import ModfuseError
from modfuse.training.sizing import Sizing, size_for
from modfuse.utils.progress import progress_enabled

__all__ = ["STRATEGIES", "FusionClassifier", "FusionRegressor", "FusionSurvival", "align_frames"]

STRATEGIES = ("lego-merge", "lego-fuse", "sequential", "early", "late", "attention")
AUTO = "auto"
"""``strategy="auto"``: the strategy (and robust-training setting) chosen by inner CV, see
`modfuse.estimators.auto`."""
LEGO_DEFAULTS = {"latent_shape": (16, 32), "depth": 1, "heads": 4}
"""Lego block size for notebook-scale data (the 64x64 default latent is sized for images)."""
Strategy = Literal["lego-merge", "lego-fuse", "sequential", "early", "late", "attention", "auto"]


# ---------------------------------------------------------------------------- inputs
def _as_modality(values: Any, modality: str) -> Any:
    """A modality's rows as a float array (tables, signals, images) or a list (graphs)."""
    if values is None or isinstance(values, list):
        return values
    if isinstance(values, pd.DataFrame):
        bad = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
        if bad:
            raise ModfuseError(f"non-numeric columns {bad[:5]}: encode categories as numbers first", modality=modality)
        return values.to_numpy(dtype=np.float32, na_value=np.nan)
    array = values.numpy() if isinstance(values, Tensor) else np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ModfuseError(f"expected numeric values, found dtype {array.dtype}", modality=modality)
    if array.ndim < 2:
        raise ModfuseError(f"expected rows of features (n, ...), found shape {array.shape}", modality=modality)
    return array.astype(np.float32)


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


def _check_X(X: Any, modalities: list[str] | None = None) -> dict[str, Any]:
    if not isinstance(X, Mapping) or not X:
        raise ModfuseError("X must be a non-empty dict {modality: array | DataFrame | None}")
    X, _ = align_frames(X)
    data = {str(m): _as_modality(v, str(m)) for m, v in X.items()}
    if modalities is not None:
        unknown = sorted(set(data) - set(modalities))
        if unknown:
            raise ModfuseError(f"unknown modalities {unknown}; the model was fitted on {modalities}")
        # a modality left out at prediction time is missing for every sample
        data = {m: data.get(m) for m in modalities}
    lengths = {m: len(v) for m, v in data.items() if v is not None}
    if not lengths:
        raise ModfuseError("every modality of X is None: there is nothing to learn from or predict with")
    if len(set(lengths.values())) > 1:
        raise ModfuseError(f"modalities have different numbers of rows: {lengths}")
    return data


def _n_rows(data: Mapping[str, Any]) -> int:
    return next(len(v) for v in data.values() if v is not None)


def _present_rows(values: Any) -> np.ndarray:
    """Bool (n,): rows that are not missing (not None, not all-NaN)."""
    if isinstance(values, list):
        return np.array([v is not None for v in values])
    flat = values.reshape(len(values), -1)
    return ~np.isnan(flat).all(axis=1)


# ---------------------------------------------------------------------------- encoders
def auto_encoder(values: Any, rows: np.ndarray, modality: str, sizing: Sizing | None = None) -> nn.Module:
    """A default encoder for a modality from the shape of its data.

    2-D (n, features): ``tabular`` with the training rows' mean/std, sized by the data
    (`modfuse.training.sizing.size_for()` of the training rows and columns, unless ``sizing``
    is given) and with a linear path (a regularised linear projection beside the MLP); 3-D (n, leads, samples):
    ``ecg``; 4-D (n, channels, H, W): ``spectral`` (a small CNN, any channel count); a list of
    PyG graphs: ``graph``.
    """
    from modfuse.encoders import build

    if isinstance(values, list):
        first = next((v for v in values if v is not None), None)
        if first is None or not hasattr(first, "edge_index"):
            raise ModfuseError("a list modality must hold PyG graphs (Data objects) or None", modality=modality)
        importlib.import_module("modfuse.encoders.graph")
        return build("graph", in_dim=int(first.num_node_features), out_dim=64)
    train = values[rows][_present_rows(values[rows])]
    if values.ndim == 2:
        stats = Standardizer.fit(train)
        sizing = sizing or size_for(len(rows), values.shape[1])
        return build(
            "tabular",
            num_features=values.shape[1],
            hidden=list(sizing.hidden),
            out_dim=sizing.out_dim,
            dropout=sizing.dropout,
            **stats.to_dict(),
            linear=True,
        )
    if values.ndim == 3:
        importlib.import_module("modfuse.encoders.ecg")
        return build("ecg", leads=values.shape[1], widths=[16, 32, 64], blocks=1, out_dim=64)
    if values.ndim == 4:
        importlib.import_module("modfuse.encoders.spectral")
        return build("spectral", bands=values.shape[1], out_dim=64)
    raise ModfuseError(f"no automatic encoder for data of shape {values.shape}; pass encoders=...", modality=modality)


def _encoders(spec: Any, data: Mapping[str, Any], rows: np.ndarray) -> dict[str, nn.Module]:
    from modfuse.encoders import build

    if spec == "auto" or spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise ModfuseError(f"encoders must be 'auto' or a dict modality -> module / spec, found {spec!r}")
    out: dict[str, nn.Module] = {}
    for m, values in data.items():
        given = spec.get(m, "auto")
        if isinstance(given, nn.Module):
            out[m] = copy.deepcopy(given)  # fit() must not train the user's object in place
        elif isinstance(given, Mapping):
            kwargs = dict(given)
            name = kwargs.pop("name")
            with contextlib.suppress(ModuleNotFoundError):
                importlib.import_module(f"modfuse.encoders.{name}")
            out[m] = build(name, **kwargs)
        elif values is None:
            raise ModfuseError("no data to choose an automatic encoder from; pass encoders={...}", modality=m)
        else:
            out[m] = auto_encoder(values, rows, m)
    return out


# ---------------------------------------------------------------------------- training helpers
@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Silence Lightning's info messages and routine warnings unless ``verbose``."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _accelerator(device: str) -> tuple[str, torch.device]:
    if device == "auto":
        cuda = torch.cuda.is_available()
        return ("gpu" if cuda else "cpu"), torch.device("cuda" if cuda else "cpu")
    dev = torch.device(device)
    return ("gpu" if dev.type == "cuda" else dev.type), dev


# ---------------------------------------------------------------------------- the estimators
class _FusionEstimator(BaseEstimator, ABC):
    """Shared fit / predict machinery (see the subclasses for the task-specific parts).

    Args:
        strategy: ``"early"``, ``"late"``, ``"attention"``, ``"sequential"``, ``"lego-fuse"``
            or ``"lego-merge"`` (blocks trained separately, then merged without paired training),
            or ``"auto"``: chosen with the robust-training setting by inner cross-validation on
            the training data (``cv_results_``, ``best_strategy_``, ``best_params_``), then refit.
        encoders: ``"auto"`` (chosen from each modality's data shape) or a dict modality ->
            ``nn.Module`` (with ``out_dim``) or ``{"name": "tabular", **kwargs}`` spec.
        max_epochs: upper bound on training epochs (early stopping usually ends sooner).
        batch_size: samples per batch, or ``"auto"`` (sized by the data, see
            `modfuse.training.sizing`).
        lr: peak learning rate of the one-cycle (warm-up + cosine) schedule, or ``"auto"``.
        weight_decay: AdamW weight decay, or ``"auto"`` (larger for small or wide data).
        patience: epochs without improvement of the validation loss before stopping (the weights
            of its best epoch are kept).
        val_fraction: share of the training data held out for early stopping.
        strategy_kwargs: extra arguments of the fusion model (e.g. ``{"hidden": 64}``).
        random_state: seed of the split, the initialisation and the shuffling.
        device: ``"auto"`` (a GPU when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        verbose: ``True``: a progress bar and Lightning's messages; ``False``: silent; ``None``
            (default): a progress bar in a notebook or terminal, none in CI (`modfuse.utils.progress`).
        modality_dropout: missingness-aware training, ON by default: per-sample modality
            dropout during training only (a sample always keeps one modality). ``"auto"``
            (the rate validated in ``benchmarks/missing.py``), a rate, a dict modality -> rate,
            or None to switch it off.
        unimodal_weight: weight of the unimodal auxiliary losses (each modality alone through
            the fused model, the task's loss); ``"auto"`` (default) or 0 / None to switch off.
        balance: gradient modulation of the encoders during training: ``"ogm-ge"``, ``"agm"``
            or None (default; see [`modfuse.training.robust`][modfuse.training.robust]).
        n_ensemble: number of models trained with seeds ``random_state + i`` (each its own
            validation split, initialisation and shuffling) whose logits are averaged.
        n_jobs: worker processes for the ensemble members and the ``"auto"`` inner-CV fits
            (joblib; None = 1, in this process). Each worker uses one torch thread.
        auto_strategies: candidate strategies of ``strategy="auto"`` (default
            ``("early", "late", "attention")``; the Lego strategies train one block per
            modality and cost several times more).
        auto_cv: inner folds of ``strategy="auto"``.
    """

    def __init__(
        self,
        strategy: Strategy = "early",
        encoders: Any = "auto",
        max_epochs: int = 100,
        batch_size: int | str = "auto",
        lr: float | str = "auto",
        weight_decay: float | str = "auto",
        patience: int = 10,
        val_fraction: float = 0.15,
        strategy_kwargs: dict[str, Any] | None = None,
        random_state: int = 0,
        device: str = "auto",
        verbose: bool | None = None,
        modality_dropout: float | dict[str, float] | str | None = "auto",
        unimodal_weight: float | str | None = "auto",
        balance: str | None = None,
        n_ensemble: int = 1,
        n_jobs: int | None = None,
        auto_strategies: tuple[str, ...] | None = None,
        auto_cv: int = 3,
    ) -> None:
        self.strategy = strategy
        self.encoders = encoders
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.val_fraction = val_fraction
        self.strategy_kwargs = strategy_kwargs
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.modality_dropout = modality_dropout
        self.unimodal_weight = unimodal_weight
        self.balance = balance
        self.n_ensemble = n_ensemble
        self.n_jobs = n_jobs
        self.auto_strategies = auto_strategies
        self.auto_cv = auto_cv

    def _robust_kwargs(self) -> dict[str, Any]:
        """The FusionTask arguments of missingness-aware training."""
        return {
            "modality_dropout": self.modality_dropout,
            "unimodal_weight": self.unimodal_weight,
            "balance": self.balance,
        }

    # ------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
        """(task spec, training targets) from the user's ``y``."""

    def _stratify(self, target: np.ndarray) -> np.ndarray | None:
        return None

    # ------------------------------------------------------------ fit
    def fit(self, X: Mapping[str, Any], y: Any) -> _FusionEstimator:
        """Train on ``X`` (dict modality -> rows; NaN rows / None = missing) and ``y``.

        Args:
            X: dict modality -> (n, ...) array or DataFrame, list (graphs), or None.
            y: targets: labels (classifier), values (regressor), ``(time, event)`` (survival).
        """
        chosen: dict[str, Any] = {}
        if self.strategy == AUTO:
            from modfuse.estimators.auto import select_strategy

            chosen = select_strategy(self, X, y)  # inner CV on these rows only
        elif self.strategy not in STRATEGIES:
            raise ModfuseError(f"unknown strategy {self.strategy!r}; expected one of {[*STRATEGIES, AUTO]}")
        data = _check_X(X)
        self.modalities_ = list(data)
        self.feature_names_ = {m: list(X[m].columns) for m in data if isinstance(X[m], pd.DataFrame)}
        spec, target = self._task(_aligned_y(y, align_frames(X)[1]))
        n = _n_rows(data)
        if len(target) != n:
            raise ModfuseError(f"y has {len(target)} rows but X has {n}")
        self.task_spec_ = spec
        # kept by reference (not copied) so that subset_gap(X, y) can train its specialists
        self._fit_data = (X, y)
        runs = [self._run(chosen, data, i) for i in range(max(int(self.n_ensemble), 1))]
        with _quiet(bool(self.verbose)):
            if len(runs) == 1:
                models = [runs[0]._train(data, target, spec, *runs[0]._split(n, target))]
            else:
                from modfuse.estimators.auto import train_members

                models = train_members(runs, data, target, spec, self.n_jobs)
        if len(models) == 1:
            self.model_ = models[0]
        else:
            from modfuse.estimators.auto import SeedEnsemble

            self.model_ = SeedEnsemble(models)
        self.model_.eval()
        return self

    def _run(self, chosen: Mapping[str, Any], data: Mapping[str, Any], member: int) -> _FusionEstimator:
        """A shallow copy of this estimator holding the settings one training run uses: the
        strategy chosen by ``"auto"``, the seed ``random_state + member`` and the ``"auto"``
        optimiser settings resolved by `size_for()` (the user's parameters stay as given, as
        scikit-learn requires)."""
        run = copy.copy(self)
        run.__dict__.update(chosen)
        run.random_state = self.random_state + member
        n_train = round(_n_rows(data) * (1 - max(self.val_fraction, 0.0)))
        widths = [int(np.prod(v.shape[1:])) for v in data.values() if isinstance(v, np.ndarray)]
        sizing = size_for(n_train, max(widths, default=1))
        for name in ("batch_size", "lr", "weight_decay"):
            if isinstance(getattr(run, name), str):
                if getattr(run, name) != "auto":
                    raise ModfuseError(f"{name} must be a number or 'auto', found {getattr(run, name)!r}")
                setattr(run, name, getattr(sizing, name))
        return run

    def _split(self, n: int, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(n)
        if self.val_fraction <= 0:
            return rows, rows[:0]
        try:
            train, val = train_test_split(
                rows, test_size=self.val_fraction, random_state=self.random_state, stratify=self._stratify(target)
            )
        except ValueError as exc:
            raise ModfuseError(
                f"{n} samples are too few to hold out val_fraction={self.val_fraction} of them for validation "
                f"({exc}); give more samples, or pass val_fraction=0 to train on all of them without early stopping"
            ) from None
        return np.sort(train), np.sort(val)

    def _train(
        self, data: dict[str, Any], target: np.ndarray, spec: TaskSpec, train: np.ndarray, val: np.ndarray
    ) -> nn.Module:
        import lightning as L

        from modfuse.fusion import build

        L.seed_everything(self.random_state, workers=True, verbose=False)
        dataset = MultiModalDataset.from_arrays(data, target)
        datamodule = MultiModalDataModule(
            dataset,
            splits={"train": train, "val": val, "test": val},
            batch_size=self.batch_size,
            seed=self.random_state,
        )
        encoders = _encoders(self.encoders, data, train)
        kwargs = dict(self.strategy_kwargs or {})
        if self.strategy.startswith("lego-"):
            kwargs = {**LEGO_DEFAULTS, **kwargs}
        model = build(self.strategy, encoders=encoders, tasks={"y": spec}, **kwargs)
        if self.strategy.startswith("lego-"):
            return self._train_lego(model, datamodule)
        return self._train_model(model, datamodule, has_val=len(val) > 0)

    def _trainer_kwargs(self) -> dict[str, Any]:
        accelerator, _ = _accelerator(self.device)
        return {
            "accelerator": accelerator,
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": progress_enabled(self.verbose),
            "enable_model_summary": False,
        }

    def _train_model(self, model: nn.Module, datamodule: MultiModalDataModule, has_val: bool = True) -> nn.Module:
        """The model's own training stages through the runner (one procedure per strategy)."""
        from modfuse.training.runner import fit

        return fit(
            model,
            datamodule,
            max_epochs=self.max_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            task_kwargs={"weight_decay": self.weight_decay, "scheduler": "cosine", **self._robust_kwargs()},
            trainer_kwargs=self._trainer_kwargs(),
            # the validation loss, not the task's main metric (the runner's default): on the held-out
            # rows of small data AUROC / C-index are step functions of a few dozen samples and stop
            # training early (generated 300-row linear problem, seed 7, 1000 test rows: late fusion
            # 0.643 accuracy monitoring AUROC vs 0.766 monitoring the loss; early 0.796 both)
            monitor="val/loss",
            mode="min",
            patience=self.patience,
            seed=self.random_state,
        ).model

    def _train_lego(self, model: nn.Module, datamodule: MultiModalDataModule) -> nn.Module:
        return self._train_model(model, datamodule)

    # ------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ModfuseError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")

    def _dataset(self, X: Mapping[str, Any]) -> MultiModalDataset:
        self._check_fitted()
        for m, names in self.feature_names_.items():
            if isinstance(X.get(m), pd.DataFrame) and list(X[m].columns) != names:
                raise ModfuseError(f"columns differ from the ones seen in fit: expected {names[:5]}...", modality=m)
        return MultiModalDataset.from_arrays(_check_X(X, self.modalities_))

    def _predict_batch(self) -> int:
        return 256 if isinstance(self.batch_size, str) else max(self.batch_size, 256)

    @torch.no_grad()
    def _logits(self, X: Mapping[str, Any]) -> Tensor:
        from modfuse.core.model import prediction_of
        from modfuse.core.tasks import by_task

        dataset = self._dataset(X)
        _, device = _accelerator(self.device)
        model = self.model_.to(device).eval()
        loader = DataLoader(
            Subset(dataset, range(len(dataset))), batch_size=self._predict_batch(), collate_fn=dataset.collate_fn
        )
        out = [by_task(prediction_of(model(batch.to(device))), model.tasks)["y"].float().cpu() for batch in loader]
        return torch.cat(out)

    def _encode_target(self, y: Any) -> np.ndarray:
        """``y`` in the form the model was trained on (class codes, standardised values...)."""
        return survival_target(y)

    def subset_gap(
        self,
        X: Mapping[str, Any],
        y: Any,
        specialists: str | Mapping[Any, Any] = "train",
        X_train: Mapping[str, Any] | None = None,
        y_train: Any = None,
        metric: str | None = None,
    ) -> pd.DataFrame:
        """This model on every modality subset of ``X`` next to a specialist trained on it alone.

        With ``specialists="train"`` each specialist is a clone of this estimator (same
        strategy, encoders spec, epochs, patience and missingness-aware training) fitted on the
        subset's modalities of ``X_train, y_train`` (default: the data given to ``fit``).
        See [`modfuse.robust.subset_gap()`][modfuse.robust.subset_gap] for the table; the metric (default: accuracy,
        RMSE of the standardised target, or C-index) is computed on ``X, y``.

        Args:
            X, y: evaluation data (as in ``fit``).
            specialists: ``"train"`` or a dict subset -> fitted estimator of this kind (or
                fusion model) using that subset's modalities.
            X_train, y_train: training data of the specialists.
            metric: a metric name of the task (``"accuracy"``, ``"auroc"``, ``"rmse"``, ...).

        Returns:
            The subset-gap DataFrame (2^M - 1 rows for M <= 8 modalities).
        """
        from sklearn.base import clone

        from modfuse.robust.subset_gap import subset_gap

        self._check_fitted()
        default = {"binary": "accuracy", "multiclass": "accuracy", "regression": "rmse", "survival": "cindex"}
        metric = metric or default.get(self.task_spec_.kind)
        dataset = MultiModalDataset.from_arrays(_check_X(X, self.modalities_), self._encode_target(y))
        if isinstance(specialists, str) and specialists == "train":
            X_fit, y_fit = (X_train, y_train) if X_train is not None else self._fit_data

            def fitted(subset: tuple[str, ...]) -> nn.Module:
                return clone(self).fit({m: X_fit[m] for m in subset}, y_fit).model_

            specialists = fitted
        elif isinstance(specialists, Mapping):
            specialists = {k: getattr(v, "model_", v) for k, v in specialists.items()}
        _, device = _accelerator(self.device)
        return subset_gap(self.model_.to(device).eval(), dataset, specialists, metric=metric)

    def explain(self, X: Mapping[str, Any]) -> pd.DataFrame:
        """Exact modality Shapley values per sample (Monte Carlo above 8 modalities).

        Returns:
            DataFrame indexed by row position: one column per modality (its contribution to
            the prediction: probability of the positive / predicted class, estimate or risk),
            ``base`` (prediction with no modality), ``full`` (with all present modalities;
            ``base`` + the row's values = ``full``) and ``output``.
        """
        from modfuse.interpret import modality_shapley

        dataset = self._dataset(X)
        _, device = _accelerator(self.device)
        result = modality_shapley(self.model_.to(device).eval(), dataset, batch_size=self._predict_batch())
        return result.to_frame()


class FusionClassifier(ClassifierMixin, _FusionEstimator):
    """Multimodal classifier (binary or multiclass) with per-sample missing modalities.

    Arguments are those of the shared estimator: ``strategy``, ``encoders``, ``max_epochs``,
    ``batch_size``, ``lr``, ``weight_decay``, ``patience``, ``val_fraction``,
    ``strategy_kwargs``, ``random_state``, ``device``, ``verbose`` (see the module docstring
    and `_FusionEstimator`).

    Attributes:
        classes_: the class labels seen in ``fit``.
        model_: the trained fusion model.
    """

    def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
        names = list(y.index) if isinstance(y, pd.Series) else None
        y = np.asarray(y)
        if y.ndim != 1:
            raise ModfuseError(f"expected labels of shape (n,), found {y.shape}")
        empty = np.flatnonzero(pd.isna(y))
        if len(empty):
            first = [names[i] for i in empty[:5]] if names is not None else empty[:5].tolist()
            raise ModfuseError(
                f"y has {len(empty)} missing labels (NaN/None), e.g. at samples {first}; a missing label is not a "
                "class: drop those samples (their modalities may still be missing, their label may not)"
            )
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ModfuseError(f"a classifier needs at least two classes, found {list(self.classes_)}")
        k = len(self.classes_)
        return (TaskSpec("binary") if k == 2 else TaskSpec("multiclass", k)), codes.astype(np.int64)

    def _encode_target(self, y: Any) -> np.ndarray:
        y = np.asarray(y)
        codes = np.searchsorted(self.classes_, y).clip(0, len(self.classes_) - 1)
        unseen = sorted(set(y[self.classes_[codes] != y].tolist()))
        if unseen:
            raise ModfuseError(f"labels {unseen[:5]} were not seen in fit (classes: {list(self.classes_)})")
        return codes.astype(np.int64)

    def _stratify(self, target: np.ndarray) -> np.ndarray | None:
        counts = np.bincount(target)
        return target if counts.min() >= 2 else None

    def predict_proba(self, X: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities (n, n_classes), columns in the order of ``classes_``."""
        logits = self._logits(X)  # checks that the model is fitted
        p = self.task_spec_.activate(logits).numpy()
        return np.stack([1 - p, p], axis=1) if p.ndim == 1 else p

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        """Most probable class per sample."""
        proba = self.predict_proba(X)  # checks that the model is fitted
        return self.classes_[proba.argmax(axis=1)]


class FusionRegressor(RegressorMixin, _FusionEstimator):
    """Multimodal regressor (one target or several); targets are standardised for training
    and predictions are returned in the original units. ``score`` is R²."""

    def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
        y = np.asarray(y, dtype=np.float32)
        if y.ndim not in (1, 2) or not np.isfinite(y).all():
            raise ModfuseError(f"expected finite targets of shape (n,) or (n, k), found shape {y.shape}")
        scaler = Standardizer.fit(y)  # float32 statistics: predictions keep the dtype of y
        self.y_mean_ = scaler.mean.reshape(y.shape[1:]).astype(np.float32)
        self.y_std_ = scaler.std.reshape(y.shape[1:]).astype(np.float32)
        outputs = 1 if y.ndim == 1 else y.shape[1]
        return TaskSpec("regression", outputs), ((y - self.y_mean_) / self.y_std_).astype(np.float32)

    def _encode_target(self, y: Any) -> np.ndarray:
        return ((np.asarray(y, dtype=np.float32) - self.y_mean_) / self.y_std_).astype(np.float32)

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        """Estimates (n,) or (n, k) in the units of ``y``."""
        z = self.task_spec_.activate(self._logits(X)).numpy()
        return z * self.y_std_ + self.y_mean_

    def score(self, X: Mapping[str, Any], y: Any, sample_weight: Any = None) -> float:
        return float(r2_score(y, self.predict(X), sample_weight=sample_weight))


class FusionSurvival(_FusionEstimator):
    """Multimodal discrete-time survival model (hazard per interval, censoring aware).

    ``y`` is ``(time, event)`` (two arrays), an (n, 2) array, or a structured array with a
    boolean event field and a time field (scikit-survival's layout). The interval boundaries
    are the quantiles of the observed event times.

    Args:
        n_intervals: number of discrete time intervals K (K-1 boundaries).
        other arguments: as in `FusionClassifier`.
    """

    def __init__(
        self,
        strategy: Strategy = "early",
        encoders: Any = "auto",
        n_intervals: int = 10,
        max_epochs: int = 100,
        batch_size: int | str = "auto",
        lr: float | str = "auto",
        weight_decay: float | str = "auto",
        patience: int = 10,
        val_fraction: float = 0.15,
        strategy_kwargs: dict[str, Any] | None = None,
        random_state: int = 0,
        device: str = "auto",
        verbose: bool | None = None,
        modality_dropout: float | dict[str, float] | str | None = "auto",
        unimodal_weight: float | str | None = "auto",
        balance: str | None = None,
        n_ensemble: int = 1,
        n_jobs: int | None = None,
        auto_strategies: tuple[str, ...] | None = None,
        auto_cv: int = 3,
    ) -> None:
        super().__init__(
            strategy,
            encoders,
            max_epochs,
            batch_size,
            lr,
            weight_decay,
            patience,
            val_fraction,
            strategy_kwargs,
            random_state,
            device,
            verbose,
            modality_dropout,
            unimodal_weight,
            balance,
            n_ensemble,
            n_jobs,
            auto_strategies,
            auto_cv,
        )
        self.n_intervals = n_intervals

    def _task(self, y: Any) -> tuple[TaskSpec, np.ndarray]:
        target = survival_target(y)
        events = target[target[:, 1] > 0, 0]
        if len(events) < 2:
            raise ModfuseError(f"survival needs at least 2 observed events, found {len(events)}")
        qs = np.quantile(events, np.linspace(0, 1, self.n_intervals + 1)[1:-1])
        boundaries = tuple(float(b) for b in np.unique(qs))
        self.boundaries_ = boundaries
        return TaskSpec("survival", len(boundaries) + 1, boundaries), target

    def _stratify(self, target: np.ndarray) -> np.ndarray | None:
        return target[:, 1].astype(int) if 0 < target[:, 1].sum() < len(target) - 1 else None

    def predict(self, X: Mapping[str, Any]) -> np.ndarray:
        """Risk score per sample in [0, 1] (the expected share of the closed intervals not survived,
        `modfuse.core.losses.survival_risk`; higher = earlier event)."""
        return self.task_spec_.activate(self._logits(X)).numpy()

    def score(self, X: Mapping[str, Any], y: Any) -> float:
        """Harrell's concordance index of the predicted risk."""
        from modfuse.core.metrics import concordance_index

        target = torch.as_tensor(survival_target(y))
        return float(concordance_index(torch.as_tensor(self.predict(X)), target[:, 0], target[:, 1]))


def _aligned_y(y: Any, index: pd.Index | None) -> Any:
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


def survival_target(y: Any) -> np.ndarray:
    """(n, 2) float array of (time, event) from the accepted ``y`` layouts."""
    if isinstance(y, np.ndarray) and y.dtype.names:
        names = y.dtype.names
        event = next((n for n in names if y.dtype[n].kind == "b"), names[0])
        time = next(n for n in names if n != event)
        out = np.stack([y[time].astype(np.float64), y[event].astype(np.float64)], axis=1)
    elif isinstance(y, tuple) and len(y) == 2:
        out = np.stack([np.asarray(y[0], dtype=np.float64), np.asarray(y[1], dtype=np.float64)], axis=1)
    else:
        out = np.asarray(y, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] != 2:
        raise ModfuseError(
            f"survival y must be (time, event), an (n, 2) array or a structured array, found {out.shape}"
        )
    if not np.isfinite(out).all() or (out[:, 0] < 0).any() or not np.isin(out[:, 1], (0, 1)).all():
        raise ModfuseError("survival y: times must be finite and >= 0, events 0/1")
    return out.astype(np.float32)
