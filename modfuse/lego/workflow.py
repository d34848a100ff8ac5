"""Train blocks separately, then merge or fuse them: the helpers estimators and recipes call.

Typical use::

    blocks = [LegoBlock({"name": "tabular", "num_features": 10}, m) for m in ("labs", "vitals")]
    merged = fit_merge(blocks, dataset, max_epochs=20)          # no paired training at all
    fused = fit_fuse(blocks, dataset, max_epochs=20, fuse_epochs=2)

``data`` is a `MultiModalDataset` (all its samples train) or a
`MultiModalDataModule` (its train split trains, its val split validates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import lightning as L
import numpy as np
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.errors import ModfuseError
from modfuse.lego.block import LegoBlock
from modfuse.lego.calibration import calibrate as calibrate_block
from modfuse.lego.calibration import calibration_callback
from modfuse.lego.fuse import Base, LegoFuse, Trainable
from modfuse.lego.merge import HeadMerge, LegoMerge, choose_on

__all__ = [
    "blocks_stage",
    "chain_stage",
    "fit_block",
    "fit_blocks",
    "fit_fuse",
    "fit_merge",
    "fit_model",
    "fuse_chain",
    "train_rows",
]

if TYPE_CHECKING:
    from modfuse.training.runner import FitSettings, StageRun

Data = MultiModalDataset | MultiModalDataModule
Rows = Sequence[int] | np.ndarray
"""Row indices: a sequence of ints or an integer array."""


def _dataset_and_rows(data: Data, part: str = "train") -> tuple[MultiModalDataset, np.ndarray]:
    if isinstance(data, MultiModalDataModule):
        dataset, splits = data.prepared()
        if part == "all":
            return dataset, np.arange(len(dataset))
        return dataset, np.asarray(splits[part], dtype=int)
    if isinstance(data, MultiModalDataset):
        return data, np.arange(len(data)) if part in ("train", "all") else np.arange(0)
    raise ModfuseError(f"expected a MultiModalDataset or MultiModalDataModule, found {type(data).__name__}")


def train_rows(data: Data, modality: str | None = None, part: str = "train") -> np.ndarray:
    """Indices of the ``part`` rows (all rows of a plain dataset) that have ``modality``
    (every row when ``modality`` is None)."""
    dataset, rows = _dataset_and_rows(data, part)
    if modality is None or not len(rows):
        return rows
    if modality not in dataset.modalities:
        raise ModfuseError(f"the data set has no modality {modality!r}; it has {dataset.modalities}")
    has = dataset.present_matrix()[modality].to_numpy()
    return rows[has[rows]]


def _loader(
    dataset: MultiModalDataset,
    rows: Rows,
    batch_size: int,
    shuffle: bool,
    seed: int,
    transform: Any = None,
) -> DataLoader:
    import torch

    collate = dataset.collate_fn
    if transform is not None:

        def collate(samples: Sequence[Any]) -> Any:
            return transform(dataset.collate_fn(samples))

    return DataLoader(
        Subset(dataset, list(map(int, rows))),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )


def fit_model(
    model: nn.Module,
    data: Data,
    max_epochs: int = 10,
    rows: Rows | None = None,
    val_rows: Rows | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    trainer_kwargs: Mapping[str, Any] | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
    train_transform: Any = None,
    patience: int | None = None,
    monitor: str | None = None,
    mode: Literal["min", "max"] | None = None,
    restore_best: bool = False,
) -> nn.Module:
    """Train any fusion model with `FusionTask` on chosen rows (through
    [`train_task`][modfuse.training.runner.train_task]); returns the model.

    Args:
        model: the model (trained in place).
        data: a dataset or datamodule.
        max_epochs: epochs.
        rows: training rows (default: the train split / the whole dataset).
        val_rows: validation rows (default: the datamodule's val split, none for a dataset).
        batch_size: batch size.
        lr: learning rate.
        seed: seed for shuffling and initialisation done by Lightning.
        trainer_kwargs: extra ``lightning.Trainer`` arguments (accelerator, devices, callbacks...).
        task_kwargs: extra ``FusionTask`` arguments (weight_decay, scheduler, ...).
        train_transform: applied to each training batch (e.g. ``ModalityDropout(0.3)``).
        patience: early stopping on the validation rows after this many epochs without
            improvement (None: never).
        monitor, mode: the metric early stopping and ``restore_best`` follow (default: the
            task's main validation metric).
        restore_best: end with the weights of the best validation epoch.
    """
    from modfuse.training.runner import FitSettings, train_task
    from modfuse.training.task import FusionTask

    dataset, default_rows = _dataset_and_rows(data)
    fit_rows = default_rows if rows is None else np.asarray(rows, dtype=int)
    if val_rows is None and isinstance(data, MultiModalDataModule):
        val_rows = train_rows(data, part="val")
    if not len(fit_rows):
        raise ModfuseError("no training rows")
    L.seed_everything(seed, workers=True, verbose=False)
    # Lightning keeps the train/eval mode modules have when fit starts: set it explicitly
    model.train()
    task = FusionTask(model, lr=lr, **dict(task_kwargs or {}))
    train = _loader(dataset, fit_rows, batch_size, True, seed, train_transform)
    val = _loader(dataset, val_rows, batch_size, False, seed) if val_rows is not None and len(val_rows) else None
    settings = FitSettings(
        max_epochs=max_epochs,
        trainer_kwargs={"accelerator": "auto", "devices": 1, **dict(trainer_kwargs or {})},
        monitor=monitor,
        mode=mode,
        patience=patience,
        restore_best=restore_best,
    )
    train_task(task, train, val, settings)
    return model.eval()


def fit_block(
    block: LegoBlock,
    data: Data,
    max_epochs: int = 10,
    rows: Rows | None = None,
    val_rows: Rows | None = None,
    calibrate: bool = True,
    **kwargs: Any,
) -> LegoBlock:
    """Train one block alone on the rows that have its modality (default: all such train rows),
    then calibrate it on its own validation rows.

    ``rows`` restricts training further (e.g. one site's samples); rows without the modality
    are dropped. ``val_rows`` are the block's own validation rows (default: the datamodule's
    val split rows that have the modality; none for a plain dataset). With ``calibrate`` and
    at least 2 validation rows, the block's `Calibration`
    (temperature / bias, predictive spread, label prior, validation score) is measured on them
    after training and after every validation epoch (so checkpoints carry it too). Other
    arguments as in `fit_model()`.
    """
    have = train_rows(data, block.modality)
    own = have if rows is None else np.intersect1d(np.asarray(rows, dtype=int), have)
    if not len(own):
        raise ModfuseError("no training row has this modality", modality=block.modality)
    own_val: np.ndarray | None = None
    if val_rows is None and isinstance(data, MultiModalDataModule):
        own_val = train_rows(data, block.modality, part="val")
    elif val_rows is not None:
        own_val = np.intersect1d(np.asarray(val_rows, dtype=int), train_rows(data, block.modality, part="all"))
    if calibrate and own_val is not None and len(own_val) >= 2:
        # every checkpoint written during training carries the calibration of its own weights
        trainer_kwargs = dict(kwargs.pop("trainer_kwargs", None) or {})
        trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), calibration_callback()]
        kwargs["trainer_kwargs"] = trainer_kwargs
    fit_model(block, data, max_epochs, rows=own, val_rows=own_val, **kwargs)
    if calibrate and own_val is not None and len(own_val) >= 2:
        # the final weights' statistics; the label prior from all of the block's own rows
        calibrate_block(block, data, own_val, prior_rows=np.concatenate([own, own_val]))
    return block


def fit_blocks(
    blocks: Sequence[LegoBlock],
    data: Data,
    max_epochs: int = 10,
    rows: Mapping[str, Rows] | None = None,
    **kwargs: Any,
) -> list[LegoBlock]:
    """Train each block separately on its own modality's present rows (no paired data needed).

    Args:
        blocks: the blocks (trained in place).
        data: dataset or datamodule.
        max_epochs: epochs per block.
        rows: optional modality -> training rows (e.g. disjoint cohorts per modality).
        **kwargs: as in `fit_model()` (batch_size, lr, seed, trainer_kwargs, task_kwargs).
    """
    rows = rows or {}
    return [fit_block(b, data, max_epochs, rows=rows.get(b.modality), **kwargs) for b in blocks]


def fit_merge(
    blocks: Sequence[LegoBlock] | LegoMerge,
    data: Data,
    max_epochs: int = 10,
    method: str = "auto",
    head_merge: HeadMerge = "mean",
    weights: Sequence[float] | None = None,
    rows: Mapping[str, Rows] | None = None,
    **kwargs: Any,
) -> LegoMerge:
    """Train blocks separately, then merge them (no paired training).

    Args:
        blocks: untrained blocks, or a `LegoMerge` (e.g. from ``build("lego-merge", ...)``)
            whose blocks are trained in place, keeping its method, head merge and weights.
        data, max_epochs, rows, **kwargs: as in `fit_blocks()`.
        method, head_merge, weights: as in [`modfuse.lego.merge()`][modfuse.lego.merge] (ignored for a LegoMerge).
    """
    if isinstance(blocks, LegoMerge):
        fit_blocks(list(blocks.blocks), data, max_epochs, rows, **kwargs)
        return blocks.eval()
    fit_blocks(blocks, data, max_epochs, rows, **kwargs)
    return LegoMerge(blocks, method=method, head_merge=head_merge, weights=weights).eval()


def fit_fuse(
    blocks: Sequence[LegoBlock] | LegoFuse,
    data: Data,
    max_epochs: int = 10,
    fuse_epochs: int = 10,
    trainable: Trainable | None = None,
    rows: Mapping[str, Rows] | None = None,
    fuse_lr: float | Sequence[float] | None = None,
    order: str = "score",
    base: Literal["auto", "merge", "none"] = "auto",
    modality_dropout: float = 0.3,
    metric: str | None = None,
    **kwargs: Any,
) -> LegoFuse:
    """Train blocks separately, fuse copies of them, fine-tune the fuse on paired rows.

    The chain is built so that a long chain does not degrade:

    - ``order="score"``: blocks are chained best first, by their calibrated validation score
      (``block.calibration.score``); ``"given"`` keeps the order passed in;
    - ``base="auto"``: when every block is calibrated, the fuse starts as the training-free merge
      (``LegoFuse(base="merge")``: product of experts plus a zero-initialised chain correction),
      and with validation rows as the *validated* merge (per subset of modalities, the block
      alone or the merge, chosen on those rows as ``merge(..., validation=...)`` does);
    - fine-tuning applies [`ModalityDropout`][modfuse.robust.ModalityDropout] (``modality_dropout``) to the
      training batches, so the chain also learns to predict from partial inputs;
    - the budget is chosen on validation: each learning rate of ``fuse_lr`` is tried for
      ``fuse_epochs`` epochs, the best validation epoch of the best rate is kept, and if no
      epoch beats the fuse before fine-tuning, that untouched fuse is returned: on validation
      the result is never worse than where it started. A fine-tuned chain replaces the current
      choice only on clear evidence (a better metric and a per-row validation loss lower by
      more than its standard error), as a merge's subset needs over its block.

    Args:
        blocks: untrained blocks (they are trained, then copied into the fuse), or a
            `LegoFuse` (e.g. from ``build("lego-fuse", ...)``) whose own blocks are first
            trained alone and whose fused head is then re-initialised from their heads.
        data: dataset or datamodule; fine-tuning uses all training rows (absent blocks skipped),
            the choice of budget the validation rows (a datamodule's val split).
        max_epochs: epochs per block; 0 skips block training (blocks already trained).
        fuse_epochs: at most this many fine-tuning epochs (default 10).
        trainable: ``"all"``, ``"heads"`` or ``"attention+heads"`` (default: the given
            LegoFuse's setting, else ``"all"``).
        rows: optional modality -> block training rows.
        fuse_lr: learning rate(s) tried for the fine-tuning (default: ``lr`` and ``lr / 3``).
        order: ``"score"`` or ``"given"``.
        base: ``"auto"``, ``"merge"`` or ``"none"``.
        modality_dropout: per-modality drop rate of fine-tuning batches (0 disables).
        metric: the validation metric behind every choice (the base merge's per-subset choice,
            the learning rate and epoch; a key of the task's metrics, e.g. ``"f1"``; default
            the task's main metric).
        **kwargs: as in `fit_model()`.

    Returns:
        a new, fine-tuned LegoFuse in eval mode (the blocks passed in, or a given LegoFuse's
        blocks, are trained in place by the first stage and never touched by the second);
        ``fused.selection`` records the validation scores behind the choice.
    """
    given = list(blocks.blocks) if isinstance(blocks, LegoFuse) else list(blocks)
    if max_epochs > 0:
        fit_blocks(given, data, max_epochs, rows, **kwargs)
    return fuse_chain(
        blocks,
        data,
        fuse_epochs,
        trainable=trainable,
        fuse_lr=fuse_lr,
        order=order,
        base=base,
        modality_dropout=modality_dropout,
        metric=metric,
        **kwargs,
    )


def fuse_chain(
    blocks: Sequence[LegoBlock] | LegoFuse,
    data: Data,
    fuse_epochs: int = 10,
    trainable: Trainable | None = None,
    fuse_lr: float | Sequence[float] | None = None,
    order: str = "score",
    base: Literal["auto", "merge", "none"] = "auto",
    modality_dropout: float = 0.3,
    metric: str | None = None,
    **kwargs: Any,
) -> LegoFuse:
    """The second stage of `fit_fuse()`: chain (copies of) trained blocks and fine-tune the
    chain on paired rows, the budget chosen on validation (arguments as there)."""
    import copy

    given = list(blocks.blocks) if isinstance(blocks, LegoFuse) else list(blocks)
    if order == "score":
        given = _by_score(given)
    elif order != "given":
        raise ModfuseError(f"order: expected 'score' or 'given', found {order!r}")
    calibrated = all(b.calibration is not None for b in given)
    if base not in ("auto", "merge", "none"):
        raise ModfuseError(f"base: expected 'auto', 'merge' or 'none', found {base!r}")
    chosen_base: Base = "merge" if base == "merge" or (base == "auto" and calibrated) else "none"
    head_merge = blocks.head_merge if isinstance(blocks, LegoFuse) else "mean"
    train_mode = trainable or (blocks.trainable if isinstance(blocks, LegoFuse) else "all")
    dataset, _ = _dataset_and_rows(data)
    val = train_rows(data, part="val")
    fused = LegoFuse(given, trainable=train_mode, head_merge=head_merge, base=chosen_base)
    if fused.base_merge is not None and len(val) and fused.base_merge.space == "prediction":
        # start from the validated merge: per subset, the block alone unless the merge clearly helps
        batch_size = int(kwargs.get("batch_size", 256))
        validated = choose_on(fused.base_merge, _loader(dataset, val, batch_size, False, 0), metric)
        fused = LegoFuse(
            given,
            trainable=train_mode,
            head_merge=head_merge,
            base=chosen_base,
            base_subset_weights=validated.subset_weights_by_name(),
        )
    if fuse_epochs <= 0:
        return fused.eval()
    kwargs = {k: v for k, v in kwargs.items() if k not in ("patience", "monitor", "mode", "restore_best")}
    lr = kwargs.pop("lr", 1e-3)
    lrs = [lr, lr / 3] if fuse_lr is None else ([fuse_lr] if isinstance(fuse_lr, (int, float)) else list(fuse_lr))
    transform = None
    if modality_dropout > 0:
        from modfuse.training.dropout import ModalityDropout

        transform = ModalityDropout(modality_dropout, seed=int(kwargs.get("seed", 0)))
    (_, spec), *_ = fused.tasks.items()
    metric = metric or spec.main_metric[0]
    sign = -1.0 if metric in ("rmse", "mse", "mae") else 1.0
    best_score = _val_score(fused, dataset, val, metric) if len(val) else -float("inf")
    best, tried, kept = fused, {"before fine-tuning": best_score}, "before fine-tuning"
    for rate in lrs:
        candidate = copy.deepcopy(fused)
        score = _fit_best_epoch(candidate, data, fuse_epochs, val, rate, transform, sign, kwargs, metric)
        tried[f"lr {rate:g}"] = score
        if len(val) == 0 or (sign * score > sign * best_score and _clearly_better(candidate, best, dataset, val)):
            best, best_score, kept = candidate, score, f"lr {rate:g}"
    best.selection = {"validation": tried, "metric": metric, "kept": kept}
    return best.eval()


def _clearly_better(model: LegoFuse, than: LegoFuse, dataset: MultiModalDataset, rows: Rows) -> bool:
    """Whether ``model``'s per-row task loss on validation ``rows`` beats ``than``'s by more
    than its standard error (`modfuse.lego.selection.beats_block()`), the evidence a subset
    of a merge needs too: a fine-tuned chain replaces its start only on clear evidence."""
    from modfuse.lego.selection import beats_block, row_losses

    (_, spec), *_ = model.tasks.items()
    pred, target = _val_outputs(model, dataset, rows)
    start, _ = _val_outputs(than, dataset, rows)
    target = spec.check_target(target)
    return beats_block(row_losses(spec.kind, pred, target), row_losses(spec.kind, start, target))[0]


# ---------------------------------------------------------------------------- runner stages
def _stage_kwargs(data: Data, settings: FitSettings) -> dict[str, Any]:
    """fit_model() arguments of the runner's settings for the Lego stages."""
    batch = settings.batch_size or (data.batch_size if isinstance(data, MultiModalDataModule) else 32)
    return {
        "batch_size": int(batch),
        "lr": settings.lr,
        "seed": 0 if settings.seed is None else settings.seed,
        "trainer_kwargs": dict(settings.trainer_kwargs),
        "task_kwargs": dict(settings.task_kwargs),
    }


def blocks_stage(model: nn.Module, data: Data, settings: FitSettings) -> StageRun:
    """The runner's ``"blocks"`` stage: each of ``model.blocks`` trained alone (`fit_blocks()`),
    with the runner's early stopping and best weights on its own validation rows."""
    from modfuse.training.runner import StageRun

    if not isinstance(model, (LegoMerge, LegoFuse)):
        raise ModfuseError(f"the 'blocks' stage trains a LegoMerge or LegoFuse, found {type(model).__name__}")
    fit_blocks(
        list(model.blocks),
        data,
        settings.max_epochs,
        patience=settings.patience,
        monitor=settings.monitor,
        mode=settings.mode,
        restore_best=settings.restore_best,
        **_stage_kwargs(data, settings),
    )
    return StageRun(model)


def chain_stage(model: nn.Module, data: Data, settings: FitSettings) -> StageRun:
    """The runner's ``"chain"`` stage: `fuse_chain()` of the (trained) blocks of ``model`` for
    ``settings.fuse_epochs`` epochs at ``settings.fuse_lr`` (default: a third of the blocks' lr)."""
    from modfuse.training.runner import StageRun

    if not isinstance(model, LegoFuse):
        raise ModfuseError(f"the 'chain' stage fine-tunes a LegoFuse, found {type(model).__name__}")
    fuse_lr = settings.lr / 3 if settings.fuse_lr is None else settings.fuse_lr
    fused = fuse_chain(model, data, settings.fuse_epochs, fuse_lr=fuse_lr, **_stage_kwargs(data, settings))
    return StageRun(fused)


def _by_score(blocks: Sequence[LegoBlock]) -> list[LegoBlock]:
    """Blocks sorted best first by their calibrated validation score (unscored ones last)."""

    def key(b: LegoBlock) -> float:
        cal = b.calibration
        if cal is None or cal.score is None:
            return float("inf")
        (_, spec), *_ = b.tasks.items()
        return -cal.score if spec.main_metric[1] == "max" else cal.score

    return sorted(blocks, key=key)


def _val_score(model: LegoFuse, dataset: MultiModalDataset, rows: Rows, metric: str | None = None) -> float:
    """The validation ``metric`` (default: the task's main one) of ``model`` on ``rows``
    (every row, whatever it has)."""

    from modfuse.lego.validate import main_score

    (_, spec), *_ = model.tasks.items()
    pred, target = _val_outputs(model, dataset, rows)
    if metric is None or metric == spec.main_metric[0]:
        return main_score(spec, pred, target)
    from modfuse.lego.selection import oriented_score

    value = oriented_score(spec, metric, pred, target)
    return -value if metric in ("rmse", "mse", "mae") else value


def _val_outputs(model: LegoFuse, dataset: MultiModalDataset, rows: Rows) -> tuple[Tensor, Tensor]:
    """(outputs (n, C), targets) of ``model`` on ``rows`` (every row, whatever it has)."""
    import torch

    model.eval()
    outs, tgts = [], []
    with torch.no_grad():
        for batch in _loader(dataset, rows, 256, False, 0):
            out = next(iter(model(batch).logits.values()))
            target = batch.target
            if isinstance(target, Mapping):
                target = next(iter(target.values()))
            outs.append(out.cpu())
            tgts.append(target.cpu())
    return torch.cat(outs), torch.cat(tgts)


def _fit_best_epoch(
    model: LegoFuse,
    data: Data,
    epochs: int,
    val: np.ndarray,
    lr: float,
    transform: Any,
    sign: float,
    kwargs: Mapping[str, Any],
    metric: str | None = None,
) -> float:
    """Fine-tune ``model`` epoch by epoch at ``lr``; keep the best validation epoch's weights."""
    import copy

    import lightning as L

    dataset, rows = _dataset_and_rows(data)
    best_state, best = None, -float("inf") * sign

    class KeepBest(L.Callback):
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            nonlocal best_state, best
            score = _val_score(model, dataset, val, metric) if len(val) else float("nan")
            model.train()
            if not len(val) or sign * score > sign * best:
                best, best_state = score, copy.deepcopy(model.state_dict())

    trainer_kwargs = dict(kwargs.get("trainer_kwargs") or {})
    trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), KeepBest()]
    rest = {k: v for k, v in kwargs.items() if k != "trainer_kwargs"}
    fit_model(
        model,
        data,
        epochs,
        rows=rows,
        val_rows=[],
        lr=lr,
        trainer_kwargs=trainer_kwargs,
        train_transform=transform,
        **rest,
    )
    if best_state is not None:
        model.load_state_dict(best_state)
    return best
