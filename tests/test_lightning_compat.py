"""modfuse.utils.lightning_compat against the installed Lightning: each accessor of a private
internal gives the real value (not None, not a constant) in a real fit, so a Lightning upgrade
that moves an internal fails here instead of silently changing modfuse's behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from modfuse.training.callbacks import allow_unused_parameters
from modfuse.utils.lightning_compat import (
    WriteHookCheckpoint,
    attached_trainer,
    batches_done_this_epoch,
    ddp_kwargs,
    is_last_batch,
    logs_this_step,
)

BATCHES = 5  # per epoch


class Recorder(L.LightningModule):
    """A linear model that records what the compat accessors say at every training step."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.steps: list[dict[str, Any]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        trainer = attached_trainer(self)
        assert trainer is not None
        self.steps.append(
            {
                "epoch": trainer.current_epoch,
                "batch": batch_idx,
                "global_step": trainer.global_step,
                "logs": logs_this_step(trainer),
                "last": is_last_batch(trainer),
                "done": batches_done_this_epoch(trainer),
            }
        )
        self.log("loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class DoneAtBatchEnd(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int | None]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.seen.append((batch_idx, batches_done_this_epoch(trainer)))


class CountingCheckpoint(WriteHookCheckpoint):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.written: list[str] = []

    def write(self, trainer: L.Trainer, filepath: str, default_write: Any) -> None:
        self.written.append(filepath)
        default_write(filepath)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCHES * 4, 2, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("compat")
    model = Recorder()
    assert attached_trainer(model) is None  # before any fit
    done = DoneAtBatchEnd()
    checkpoint = CountingCheckpoint(
        dirpath=str(root / "ckpt"), filename="e{epoch}", monitor="val_loss", save_top_k=1, save_last=True
    )
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=CSVLogger(str(root), name="csv"),
        log_every_n_steps=2,
        callbacks=[done, checkpoint],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader(), loader())
    return {"model": model, "trainer": trainer, "done": done, "checkpoint": checkpoint, "root": root}


def test_attached_trainer_is_the_fitting_trainer(run: dict[str, Any]) -> None:
    assert attached_trainer(run["model"]) is run["trainer"]


def test_logs_this_step_matches_the_steps_the_logger_wrote(run: dict[str, Any]) -> None:
    metrics = pd.read_csv(next(Path(run["root"]).rglob("metrics.csv")))
    written = set(metrics.dropna(subset=["loss"])["step"].astype(int))
    said = {s["global_step"] for s in run["model"].steps if s["logs"]}
    assert said == written and 0 < len(written) < len(run["model"].steps)  # every 2nd of 15 steps


def test_is_last_batch_only_on_each_epochs_last_batch(run: dict[str, Any]) -> None:
    steps = run["model"].steps
    assert len(steps) == 3 * BATCHES
    assert [s["last"] for s in steps] == [s["batch"] == BATCHES - 1 for s in steps]


def test_batches_done_counts_the_epochs_processed_batches(run: dict[str, Any]) -> None:
    # during a step the current batch is not yet processed; after it, it is
    assert [s["done"] for s in run["model"].steps] == [s["batch"] for s in run["model"].steps]
    assert run["done"].seen == [(i, i + 1) for _ in range(3) for i in range(BATCHES)]


def test_write_hook_sees_every_write_and_lightning_keeps_its_bookkeeping(run: dict[str, Any]) -> None:
    checkpoint: CountingCheckpoint = run["checkpoint"]
    folder = Path(checkpoint.dirpath or "")
    files = sorted(p.name for p in folder.glob("*.ckpt"))
    # top-1 by val_loss: older best files were removed; last.ckpt refreshed every epoch
    assert len(files) == 2 and "last.ckpt" in files
    assert Path(checkpoint.best_model_path).name in files and Path(checkpoint.last_model_path).name == "last.ckpt"
    assert len(checkpoint.written) >= 4 and set(map(Path, checkpoint.written)) >= {folder / f for f in files}
    state = torch.load(checkpoint.best_model_path, weights_only=True, map_location="cpu")
    assert set(state["state_dict"]) == {"layer.weight", "layer.bias"}


def test_ddp_kwargs_is_the_strategys_live_dict() -> None:
    strategy = DDPStrategy(find_unused_parameters=False, static_graph=False)
    kwargs = ddp_kwargs(strategy)
    assert kwargs == {"find_unused_parameters": False, "static_graph": False}
    kwargs["bucket_cap_mb"] = 5
    assert ddp_kwargs(strategy) == {**kwargs, "bucket_cap_mb": 5}
    assert ddp_kwargs(object()) is None
    # the runner's DDP setting goes through it and reaches the strategy
    trainer = allow_unused_parameters(L.Trainer(accelerator="cpu", strategy="ddp", devices=1, logger=False))
    assert ddp_kwargs(trainer.strategy) == {"find_unused_parameters": True}
