"""Train blocks separately, then merge or fuse them: the helpers estimators and recipes call.

Typical use::

    blocks = [LegoBlock({"name": "tabular", "num_features": 10}, m) for m in ("labs", "vitals")]
    merged = fit_merge(blocks, dataset, max_epochs=20)          # no paired training at all
    fused = fit_fuse(blocks, dataset, max_epochs=20, fuse_epochs=2)

``data`` is a :class:`MultiModalDataset` (all its samples train) or a
:class:`MultiModalDataModule` (its train split trains, its val split validates).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import numpy as np
from torch import nn
from torch.utils.data import DataLoader, Subset

from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.errors import ModfuseError
from modfuse.lego.block import LegoBlock
from modfuse.lego.calibration import calibrate as calibrate_block
from modfuse.lego.calibration import calibration_callback
from modfuse.lego.fuse import LegoFuse, Trainable
from modfuse.lego.merge import HeadMerge, LegoMerge

__all__ = ["fit_block", "fit_blocks", "fit_fuse", "fit_merge", "fit_model", "train_rows"]

Data = MultiModalDataset | MultiModalDataModule


def _dataset_and_rows(data: Data, part: str = "train") -> tuple[MultiModalDataset, np.ndarray]:
    if isinstance(data, MultiModalDataModule):
        data.setup()
        if part == "all":
            return data.dataset, np.arange(len(data.dataset))
        return data.dataset, np.asarray(data.splits[part], dtype=int)
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


def _loader(dataset: MultiModalDataset, rows: Sequence[int], batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    import torch

    return DataLoader(
        Subset(dataset, list(map(int, rows))),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=dataset.collate_fn,
        generator=torch.Generator().manual_seed(seed),
    )


def _trainer(max_epochs: int, trainer_kwargs: Mapping[str, Any] | None) -> L.Trainer:
    kwargs: dict[str, Any] = {
        "max_epochs": max_epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "auto",
        "devices": 1,
    }
    kwargs.update(trainer_kwargs or {})
    return L.Trainer(**kwargs)


def fit_model(
    model: nn.Module,
    data: Data,
    max_epochs: int = 10,
    rows: Sequence[int] | None = None,
    val_rows: Sequence[int] | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    trainer_kwargs: Mapping[str, Any] | None = None,
    task_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Train any fusion model with :class:`FusionTask` on chosen rows; returns the model.

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
    """
    from modfuse.training.task import FusionTask

    dataset, default_rows = _dataset_and_rows(data)
    rows = default_rows if rows is None else np.asarray(rows, dtype=int)
    if val_rows is None and isinstance(data, MultiModalDataModule):
        val_rows = train_rows(data, part="val")
    if not len(rows):
        raise ModfuseError("no training rows")
    L.seed_everything(seed, workers=True, verbose=False)
    # Lightning keeps the train/eval mode modules have when fit starts: set it explicitly
    model.train()
    task = FusionTask(model, lr=lr, **dict(task_kwargs or {}))
    train = _loader(dataset, rows, batch_size, True, seed)
    val = _loader(dataset, val_rows, batch_size, False, seed) if val_rows is not None and len(val_rows) else None
    _trainer(max_epochs, trainer_kwargs).fit(task, train, val)
    return model.eval()


def fit_block(
    block: LegoBlock,
    data: Data,
    max_epochs: int = 10,
    rows: Sequence[int] | None = None,
    val_rows: Sequence[int] | None = None,
    calibrate: bool = True,
    **kwargs: Any,
) -> LegoBlock:
    """Train one block alone on the rows that have its modality (default: all such train rows),
    then calibrate it on its own validation rows.

    ``rows`` restricts training further (e.g. one site's samples); rows without the modality
    are dropped. ``val_rows`` are the block's own validation rows (default: the datamodule's
    val split rows that have the modality; none for a plain dataset). With ``calibrate`` and
    at least 2 validation rows, the block's :class:`~modfuse.lego.calibration.Calibration`
    (temperature / bias, predictive spread, label prior, validation score) is measured on them
    after training and after every validation epoch (so checkpoints carry it too). Other
    arguments as in :func:`fit_model`.
    """
    have = train_rows(data, block.modality)
    rows = have if rows is None else np.intersect1d(np.asarray(rows, dtype=int), have)
    if not len(rows):
        raise ModfuseError("no training row has this modality", modality=block.modality)
    if val_rows is None and isinstance(data, MultiModalDataModule):
        val_rows = train_rows(data, block.modality, part="val")
    elif val_rows is not None:
        val_rows = np.intersect1d(np.asarray(val_rows, dtype=int), train_rows(data, block.modality, part="all"))
    if calibrate and val_rows is not None and len(val_rows) >= 2:
        # every checkpoint written during training carries the calibration of its own weights
        trainer_kwargs = dict(kwargs.pop("trainer_kwargs", None) or {})
        trainer_kwargs["callbacks"] = [*trainer_kwargs.get("callbacks", []), calibration_callback()]
        kwargs["trainer_kwargs"] = trainer_kwargs
    fit_model(block, data, max_epochs, rows=rows, val_rows=val_rows, **kwargs)
    if calibrate and val_rows is not None and len(val_rows) >= 2:
        # the final weights' statistics; the label prior from all of the block's own rows
        calibrate_block(block, data, val_rows, prior_rows=np.concatenate([rows, val_rows]))
    return block


def fit_blocks(
    blocks: Sequence[LegoBlock],
    data: Data,
    max_epochs: int = 10,
    rows: Mapping[str, Sequence[int]] | None = None,
    **kwargs: Any,
) -> list[LegoBlock]:
    """Train each block separately on its own modality's present rows (no paired data needed).

    Args:
        blocks: the blocks (trained in place).
        data: dataset or datamodule.
        max_epochs: epochs per block.
        rows: optional modality -> training rows (e.g. disjoint cohorts per modality).
        **kwargs: as in :func:`fit_model` (batch_size, lr, seed, trainer_kwargs, task_kwargs).
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
    rows: Mapping[str, Sequence[int]] | None = None,
    **kwargs: Any,
) -> LegoMerge:
    """Train blocks separately, then merge them (no paired training).

    Args:
        blocks: untrained blocks, or a :class:`LegoMerge` (e.g. from ``build("lego-merge", ...)``)
            whose blocks are trained in place, keeping its method, head merge and weights.
        data, max_epochs, rows, **kwargs: as in :func:`fit_blocks`.
        method, head_merge, weights: as in :func:`modfuse.lego.merge` (ignored for a LegoMerge).
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
    fuse_epochs: int = 2,
    trainable: Trainable | None = None,
    rows: Mapping[str, Sequence[int]] | None = None,
    fuse_lr: float | None = None,
    **kwargs: Any,
) -> LegoFuse:
    """Train blocks separately, fuse copies of them, fine-tune the fuse on paired rows.

    Args:
        blocks: untrained blocks (they are trained, then copied into the fuse), or a
            :class:`LegoFuse` (e.g. from ``build("lego-fuse", ...)``) whose own blocks are first
            trained alone and whose fused head is then re-initialised from their heads.
        data: dataset or datamodule; fine-tuning uses all training rows (absent blocks skipped).
        max_epochs: epochs per block; 0 skips block training (blocks already trained).
        fuse_epochs: fine-tuning epochs (default 2).
        trainable: ``"all"``, ``"heads"`` or ``"attention+heads"`` (default: the given
            LegoFuse's setting, else ``"all"``).
        rows: optional modality -> block training rows.
        fuse_lr: learning rate of the fine-tuning (default: ``lr``).
        **kwargs: as in :func:`fit_model`.

    Returns:
        a new, fine-tuned LegoFuse in eval mode (the blocks passed in, or a given LegoFuse's
        blocks, are trained in place by the first stage and never touched by the second).
    """
    given = list(blocks.blocks) if isinstance(blocks, LegoFuse) else list(blocks)
    if max_epochs > 0:
        fit_blocks(given, data, max_epochs, rows, **kwargs)
    if isinstance(blocks, LegoFuse):
        fused = LegoFuse(given, trainable=trainable or blocks.trainable, head_merge=blocks.head_merge)
    else:
        fused = LegoFuse(given, trainable=trainable or "all")
    if fuse_epochs > 0:
        if fuse_lr is not None:
            kwargs = {**kwargs, "lr": fuse_lr}
        fit_model(fused, data, fuse_epochs, **kwargs)
    return fused.eval()
