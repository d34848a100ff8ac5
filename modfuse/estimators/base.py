"""The shared estimator of `modfuse.estimators`: fit / predict machinery over modfuse models.

``X`` is a dict ``{modality: array | DataFrame | list | None}``, one DataFrame or (n, p) array
plus ``modalities={name: [columns...]}``, or one table alone (one modality); see
`modfuse.estimators.inputs`. A row of NaN (or a ``None`` entry, or ``None`` for the whole
modality) means the modality is missing for that sample. DataFrames are aligned by their index
(sample ids), never by row position (see `align_frames()`). A missing label (NaN) is refused.
Every strategy of `modfuse.fusion` works, and the estimators are scikit-learn estimators
(``clone``, ``get_params`` / ``set_params``, ``cross_val_score``, ``GridSearchCV``, ``Pipeline``).

Example:
    >>> clf = FusionClassifier(strategy="late").fit({"labs": X_labs, "ecg": X_ecg}, y)
    >>> clf.predict_proba({"labs": X_labs_new, "ecg": None})   # ECG missing for everyone
    >>> clf.explain({"labs": X_labs_new, "ecg": X_ecg_new})    # modality Shapley values
    >>> cross_val_score(FusionClassifier(modalities={"labs": ["age", "sex"], "ecg": ecg_cols}), frame, y)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from modfuse.core.tasks import TaskSpec
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.encoders.auto import build_encoders
from modfuse.errors import ModfuseError
from modfuse.estimators.inputs import InputLayout, aligned_y, check_fit_rows, checked_y, n_rows
from modfuse.training.sizing import ensemble_size, size_for
from modfuse.utils.progress import progress_enabled

if TYPE_CHECKING:
    from modfuse.training.runner import FitResult

__all__ = ["STRATEGIES", "NotFittedModelError"]

STRATEGIES = ("lego-merge", "lego-fuse", "sequential", "early", "late", "attention")
AUTO = "auto"
"""``strategy="auto"``: the strategy (and robust-training setting) chosen by inner CV, see
`modfuse.estimators.auto`."""
LEGO_DEFAULTS = {"latent_shape": (16, 32), "depth": 1, "heads": 4}
"""Lego block size for notebook-scale data (the 64x64 default latent is sized for images)."""


_E = TypeVar("_E", bound="_FusionEstimator")

Strategy = Literal["lego-merge", "lego-fuse", "sequential", "early", "late", "attention", "auto"]


class NotFittedModelError(ModfuseError, NotFittedError):
    """An estimator used before ``fit`` (scikit-learn's ``NotFittedError`` as well)."""


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
        refit: ``True`` (default): the validation run only chooses the number of epochs (its best
            epoch by the validation loss); a fresh model (same seed) is then trained on all the
            rows for that many epochs, its learning-rate schedule annealed over them. Small
            cohorts get back the validation rows, and the model ends at a low learning rate
            instead of wherever early stopping caught the one-cycle schedule. ``False``: the
            validation run's best weights are the model. Lego strategies (several training
            stages) never refit.
        strategy_kwargs: extra arguments of the fusion model (e.g. ``{"hidden": 64}``).
        random_state: seed of the split, the initialisation and the shuffling.
        device: ``"auto"`` (a GPU when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        verbose: ``True``: a progress bar and Lightning's messages; ``False``: silent; ``None``
            (default): a progress bar in a notebook or terminal, none in CI (`modfuse.utils.progress`).
        modality_dropout: missingness-aware training, ON by default: per-sample modality
            dropout during training only (a sample always keeps one modality). ``"auto"``
            (the rate validated in ``benchmarks/missing.py``, half of the main loss kept on the complete batch, late fusion excepted), a rate, a dict modality -> rate,
            or None to switch it off.
        unimodal_weight: weight of the unimodal auxiliary losses (each modality alone through
            the fused model, the task's loss); ``"auto"`` (default) or 0 / None to switch off.
        balance: gradient modulation of the encoders during training: ``"ogm-ge"``, ``"agm"``
            or None (default; see [`modfuse.training.robust`][modfuse.training.robust]).
        n_ensemble: number of models trained with seeds ``random_state + i`` (each its own
            validation split, initialisation and shuffling) whose logits are averaged, or
            ``"auto"`` (default): 3 below 250 training rows, else 1 (`modfuse.training.sizing.ensemble_size`,
            where the rule and its validation are); 1 for the Lego strategies.
        n_jobs: worker processes for the ensemble members and the ``"auto"`` inner-CV fits
            (joblib; None = 1, in this process). Each worker uses one torch thread.
        auto_strategies: candidate strategies of ``strategy="auto"`` (default
            ``("early", "late", "attention")``; the Lego strategies train one block per
            modality and cost several times more).
        auto_cv: inner folds of ``strategy="auto"``.
        modalities: when ``X`` is one DataFrame or (n, p) array: dict modality -> its columns
            (labels of the DataFrame, positions of the array); columns left out are not used.
            None: ``X`` is a dict modality -> data, or one table used as one modality. A
            parameter (not only a ``fit`` argument) so that ``cross_val_score``,
            ``GridSearchCV`` and ``Pipeline`` pass it on; ``fit(..., modalities=...)``
            overrides it.

    Attributes (after ``fit``):
        model_: the trained fusion model.
        modalities_: the modality names, in order.
        n_features_in_, feature_names_in_: the columns of ``X`` when it is one table (the
            names only for a DataFrame with string column labels).
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
        n_ensemble: int | str = "auto",
        n_jobs: int | None = None,
        auto_strategies: tuple[str, ...] | None = None,
        auto_cv: int = 3,
        modalities: Mapping[str, Any] | None = None,
        refit: bool = True,
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
        self.modalities = modalities
        self.refit = refit

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's tags: NaN cells (missing values / modalities), categorical DataFrame
        columns and dicts modality -> data are accepted, sparse matrices are not; regressors
        take several targets; training on a GPU is not bit-for-bit repeatable (cuDNN and atomic
        additions), on the CPU it is for a given ``random_state``."""
        from sklearn.base import RegressorMixin

        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.dict = True
        tags.input_tags.sparse = False
        tags.non_deterministic = _accelerator(self.device)[0] == "gpu"
        if isinstance(self, RegressorMixin):
            tags.target_tags.multi_output = True
        return tags

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
    def fit(self, X: Any, y: Any, modalities: Mapping[str, Any] | None = None) -> _FusionEstimator:
        """Train on ``X`` (NaN rows / None = missing) and ``y``.

        Args:
            X: dict modality -> (n, ...) array or DataFrame, list (graphs), or None; or one
                DataFrame / (n, p) array (with ``modalities``, else one modality).
            y: targets: labels (classifier), values (regressor), ``(time, event)`` (survival).
            modalities: dict modality -> columns of a single-table ``X`` (default: the
                ``modalities`` parameter).
        """
        modalities = modalities if modalities is not None else self.modalities
        y = checked_y(y, self)
        chosen: dict[str, Any] = {}
        if self.strategy == AUTO:
            from modfuse.estimators.auto import select_strategy

            chosen = select_strategy(self, X, y, modalities)  # inner CV on these rows only
        elif self.strategy not in STRATEGIES:
            raise ModfuseError(f"unknown strategy {self.strategy!r}; expected one of {[*STRATEGIES, AUTO]}")
        self.layout_ = InputLayout.fit(X, modalities, owner=type(self).__name__)
        data, index = self.layout_.transform(X)
        check_fit_rows(n_rows(data))
        self.modalities_ = list(data)
        if self.layout_.n_features is not None:
            self.n_features_in_ = self.layout_.n_features
        if self.layout_.feature_names is not None:
            self.feature_names_in_ = np.asarray(self.layout_.feature_names, dtype=object)
        spec, target = self._task(aligned_y(y, index))
        n = n_rows(data)
        if len(target) != n:
            raise ModfuseError(f"y has {len(target)} rows but X has {n}")
        self.task_spec_ = spec
        # kept by reference (not copied) so that subset_gap(X, y) can train its specialists
        self._fit_data = (X, y)
        runs = [self._run(chosen, data, i) for i in range(self._members(n, chosen.get("strategy", self.strategy)))]
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

    def _train_rows(self, n: int) -> int:
        """The rows of ``n`` a run trains on: less the validation share."""
        return round(n * (1 - max(self.val_fraction, 0.0)))

    def _members(self, n: int, strategy: str) -> int:
        """The ensemble's size for ``n`` rows: ``n_ensemble``, or for ``"auto"`` `ensemble_size`
        of the training rows (``n`` less the validation share) for the jointly trained
        strategies and 1 for the Lego ones (several training stages each; not measured)."""
        if self.n_ensemble == "auto":
            if strategy.startswith("lego"):
                return 1
            return ensemble_size(self._train_rows(n))
        if (
            isinstance(self.n_ensemble, bool)
            or not isinstance(self.n_ensemble, int | np.integer)
            or self.n_ensemble < 1
        ):
            raise ModfuseError(f"n_ensemble must be a positive integer or 'auto', found {self.n_ensemble!r}")
        return int(self.n_ensemble)

    def _run(self, chosen: Mapping[str, Any], data: Mapping[str, Any], member: int) -> _FusionEstimator:
        """A shallow copy of this estimator holding the settings one training run uses: the
        strategy chosen by ``"auto"``, the seed ``random_state + member`` and the ``"auto"``
        optimiser settings resolved by `size_for()` (the user's parameters stay as given, as
        scikit-learn requires)."""
        run = copy.copy(self)
        run.__dict__.update(chosen)
        run.random_state = self.random_state + member
        n_train = self._train_rows(n_rows(data))
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
            splits={"train": train.tolist(), "val": val.tolist(), "test": val.tolist()},
            batch_size=int(self.batch_size),  # a number here: _run() resolved "auto"
            seed=self.random_state,
        )
        categorical = {m: self.layout_.categorical(m) for m in data}
        encoders = build_encoders(self.encoders, data, train, size_for, categorical)
        kwargs = dict(self.strategy_kwargs or {})
        if self.strategy.startswith("lego-"):
            kwargs = {**LEGO_DEFAULTS, **kwargs}
        model = build(self.strategy, encoders=encoders, tasks={"y": spec}, **kwargs)
        if self.strategy.startswith("lego-"):
            return self._train_lego(model, datamodule)
        if not (self.refit and len(val)):
            return self._train_model(model, datamodule, has_val=len(val) > 0).model
        return self._refit(
            model, dataset, np.concatenate([train, val]), self._train_model(copy.deepcopy(model), datamodule)
        )

    def _refit(self, model: nn.Module, dataset: MultiModalDataset, rows: np.ndarray, chosen: Any) -> nn.Module:
        """``model`` (untrained) trained on ``rows`` for the best epoch count of the validation run
        ``chosen`` (a `FitResult`), with no validation."""
        import lightning as L

        epochs = (chosen.best_epoch if chosen.best_epoch is not None else (chosen.epochs or 1) - 1) + 1
        L.seed_everything(self.random_state, workers=True, verbose=False)  # the same stream as the first run
        everything = MultiModalDataModule(
            dataset,
            splits={"train": np.sort(rows).tolist(), "val": [], "test": []},
            batch_size=int(self.batch_size),
            seed=self.random_state,
        )
        return self._train_model(model, everything, has_val=False, max_epochs=epochs).model

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

    def _train_model(
        self, model: nn.Module, datamodule: MultiModalDataModule, has_val: bool = True, max_epochs: int | None = None
    ) -> FitResult:
        """The model's own training stages through the runner (one procedure per strategy)."""
        from modfuse.training.runner import fit

        return fit(
            model,
            datamodule,
            max_epochs=max_epochs or self.max_epochs,
            lr=float(self.lr),  # numbers here: _run() resolved "auto"
            batch_size=int(self.batch_size),
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
        )

    def _train_lego(self, model: nn.Module, datamodule: MultiModalDataModule) -> nn.Module:
        return self._train_model(model, datamodule).model

    # ------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedModelError(f"this {type(self).__name__} is not fitted yet: call fit(X, y) first")

    def _inputs(self, X: Any, modalities: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], pd.Index]:
        """``X`` read as in ``fit``: ({modality: data | None}, the sample ids)."""
        self._check_fitted()
        data, index = self.layout_.transform(X, modalities)
        return data, self.layout_.ids(index, n_rows(data))

    def _predict_batch(self) -> int:
        return 256 if isinstance(self.batch_size, str) else max(self.batch_size, 256)

    @torch.no_grad()
    def _logits(self, data: Mapping[str, Any]) -> Tensor:
        """(n, outputs) logits of the model on the modality data ``data``."""
        dataset = MultiModalDataset.from_arrays(data)
        _, device = _accelerator(self.device)
        model = self.model_.to(device).eval()
        loader = DataLoader(
            Subset(dataset, range(len(dataset))), batch_size=self._predict_batch(), collate_fn=dataset.collate_fn
        )
        out = [model(batch.to(device)).logits["y"].float().cpu() for batch in loader]
        return torch.cat(out)

    @abstractmethod
    def _encode_target(self, y: Any) -> np.ndarray:
        """``y`` in the form the model was trained on (class codes, standardised values...)."""

    def subset_gap(
        self,
        X: Any,
        y: Any,
        specialists: str | Mapping[Any, Any] = "train",
        X_train: Any = None,
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
        data, index = self.layout_.transform(X)
        dataset = MultiModalDataset.from_arrays(data, self._encode_target(aligned_y(y, index)))
        chosen: Any = specialists
        if isinstance(specialists, str) and specialists == "train":
            if X_train is None and not hasattr(self, "_fit_data"):
                raise ModfuseError(
                    "this estimator was loaded from a saved folder, which holds no training data: pass "
                    "X_train, y_train to train the specialists"
                )
            X_fit, y_fit = (X_train, y_train) if X_train is not None else self._fit_data
            groups = self.layout_.groups

            def fitted(subset: tuple[str, ...]) -> nn.Module:
                if self.layout_.form == "dict":
                    return clone(self).set_params(modalities=None).fit({m: X_fit[m] for m in subset}, y_fit).model_
                return clone(self).fit(X_fit, y_fit, modalities={m: groups[m] for m in subset}).model_

            chosen = fitted
        elif isinstance(specialists, Mapping):
            chosen = {k: getattr(v, "model_", v) for k, v in specialists.items()}
        _, device = _accelerator(self.device)
        return subset_gap(self.model_.to(device).eval(), dataset, chosen, metric=metric)

    def explain(self, X: Any, modalities: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Exact modality Shapley values per sample (Monte Carlo above 8 modalities).

        Args:
            X: as in ``fit`` (``modalities``: as in ``fit``; default the fitted grouping).

        Returns:
            DataFrame indexed by the sample ids (the index of ``X``'s DataFrames; row
            positions 0..n-1 for arrays): one column per modality (its contribution to
            the prediction: probability of the positive / predicted class, estimate or risk),
            ``base`` (prediction with no modality), ``full`` (with all present modalities;
            ``base`` + the row's values = ``full``) and ``output``.
        """
        from modfuse.interpret import modality_shapley

        data, ids = self._inputs(X, modalities)
        _, device = _accelerator(self.device)
        dataset = MultiModalDataset.from_arrays(data)
        frame = modality_shapley(self.model_.to(device).eval(), dataset, batch_size=self._predict_batch()).to_frame()
        frame.index = ids
        return frame

    # ------------------------------------------------------------ persistence (no pickle)
    def save(self, path: str | Path) -> Path:
        """Write the fitted estimator to the folder ``path``, without pickle: the network as
        ``model.safetensors``, the parameters and the fitted state (columns per modality,
        category codes, ``classes_``, target scaling...) as ``estimator.json``. The way to
        share a fitted estimator (see `modfuse.estimators.persist`).

        Returns:
            the folder written.
        """
        from modfuse.estimators.persist import save_estimator

        return save_estimator(self, path)

    @classmethod
    def load(cls: type[_E], path: str | Path, map_location: str | torch.device = "cpu") -> _E:
        """The estimator saved by `save` in the folder ``path``; nothing is unpickled. It
        predicts exactly what the saved one did.

        Raises:
            ReadError: naming the file, when the folder holds another class, its weights
                changed after saving, or its contents do not match.
        """
        from modfuse.estimators.persist import load_estimator

        est: _E = load_estimator(path, cls, map_location)
        return est


# where the estimators lived before the package was split by concern (documented as
# ``modfuse.estimators.base.FusionClassifier`` etc.): resolved lazily, the modules import this one
_MOVED = {
    "FusionClassifier": "modfuse.estimators.classifier",
    "FusionRegressor": "modfuse.estimators.regressor",
    "FusionSurvival": "modfuse.estimators.survival",
    "survival_target": "modfuse.estimators.survival",
    "align_frames": "modfuse.estimators.inputs",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
