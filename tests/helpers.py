"""Small test doubles shared by several test files (the tests folder is on sys.path under pytest)."""

from __future__ import annotations

import torch
from torch import nn

from modfuse.data.batch import ModalityBatch
from modfuse.encoders import build


class CountingEncoder(nn.Module):
    """A tabular encoder that records how many rows it was given (to prove gather-encode)."""

    def __init__(self, num_features: int, out_dim: int = 6) -> None:
        super().__init__()
        self.inner = build("tabular", num_features=num_features, hidden=(8,), out_dim=out_dim, dropout=0.0)
        self.out_dim = out_dim
        self.num_features = num_features
        self.rows: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return self.inner(x)


def without_modality(batch: ModalityBatch, modality: str) -> ModalityBatch:
    """``batch`` with no key at all for ``modality`` (a wiring error, unlike an absent modality,
    which keeps its key with an all-False ``present`` mask)."""
    return ModalityBatch(
        {m: v for m, v in batch.inputs.items() if m != modality},
        {m: p for m, p in batch.present.items() if m != modality},
        batch.target,
        batch.ids,
    )


class Recorder(nn.Module):
    """Wraps a fusion model and records, per call, the training flag and modalities per sample."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.modalities, self.tasks = model, model.modalities, model.tasks
        self.calls: list[tuple[bool, torch.Tensor]] = []

    def forward(self, batch):
        counts = torch.stack([batch.present[m] for m in self.modalities], 1).sum(1)
        self.calls.append((self.training, counts.cpu()))
        return self.model(batch)


def record_fit_and_test(recorder: Recorder, X: dict, y, **task_kwargs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One epoch of ``FusionTask(recorder, **task_kwargs)`` on 96 samples (64 training rows in
    batches of 16, 16 validation, 16 test), then its test; returns the recorded (training,
    evaluation) calls: per forward pass, the number of modalities of each sample."""
    import lightning as L
    import numpy as np

    from modfuse import FusionTask, MultiModalDataModule, MultiModalDataset

    rows = np.arange(96)
    dm = MultiModalDataModule(
        MultiModalDataset.from_arrays(X, y),
        splits={"train": rows[:64], "val": rows[64:80], "test": rows[80:]},
        batch_size=16,
    )
    task = FusionTask(recorder, **task_kwargs)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(task, datamodule=dm)
    trainer.test(task, datamodule=dm, verbose=False)
    return [c for training, c in recorder.calls if training], [c for training, c in recorder.calls if not training]
