"""LightningCLI's ``optimizer:`` / ``lr_scheduler:`` recipe keys (class_path + init_args) and the
fit summary of ``modfuse fit`` (the best checkpoint's path and metrics, not the last epoch's)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from modfuse.cli import main
from modfuse.errors import ModfuseError
from modfuse.fusion import build
from modfuse.training.optim import check_lr_scheduler, check_optimizer
from modfuse.training.task import FusionTask

ADAMW = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01, "betas": [0.8, 0.9]}}
COSINE = {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR", "init_args": {"T_max": 3}}


@pytest.mark.parametrize(
    ("check", "spec", "message"),
    [
        (check_optimizer, "torch.optim.AdamWW", r"optimizer: cannot import 'torch.optim.AdamWW'"),
        (check_optimizer, "torch.nn.Linear", r"optimizer: 'torch.nn.Linear' is not a torch.optim.*Optimizer"),
        (check_optimizer, {"class_path": "AdamW", "init_args": {"betaz": 1}}, r"optimizer: .*AdamW\(betaz=1\).*betaz"),
        (check_optimizer, {"class_path": "SGD", "init_args": {"lr": -1.0}}, r"optimizer: .*Invalid learning rate"),
        (check_optimizer, {"class": "SGD"}, r"optimizer: expected \{class_path"),
        (check_lr_scheduler, {"class_path": "CosineAnnealingLR"}, r"lr_scheduler: .*CosineAnnealingLR.*T_max"),
        (check_lr_scheduler, "torch.optim.SGD", r"lr_scheduler: 'torch.optim.SGD' is not a"),
    ],
)
def test_a_bad_description_is_an_error_naming_the_key(check, spec, message: str) -> None:
    with pytest.raises(ModfuseError, match=message):
        check(spec)


def test_fusion_task_builds_the_described_optimizer_and_scheduler() -> None:
    from modfuse.encoders import build as build_encoder

    encoders = {m: build_encoder("tabular", num_features=3, hidden=[4], out_dim=4) for m in "ab"}
    task = FusionTask(build("early", encoders=encoders, tasks="binary"), lr=0.02, optimizer=ADAMW, scheduler=COSINE)
    config = task.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]
    assert type(opt) is torch.optim.AdamW and type(sched["scheduler"]) is torch.optim.lr_scheduler.CosineAnnealingLR
    group = opt.param_groups[0]
    # lr and weight_decay are the task's (every training stage's own lr applies); the rest the description's
    assert (
        group["lr"] == 0.02
        and group["weight_decay"] == task.hparams.weight_decay
        and tuple(group["betas"]) == (0.8, 0.9)
    )
    assert sched["interval"] == "epoch" and sched["scheduler"].T_max == 3
    with pytest.raises(ModfuseError, match=r"scheduler: .*StepLR"):
        FusionTask(build("early", encoders=encoders, tasks="binary"), scheduler={"class_path": "StepLR"})


def quickstart(root: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", "recipes/quickstart.yaml", "--data.init_args.n", "48", "--data.init_args.batch_size", "16",
        "--trainer.max_epochs", "3", "--trainer.enable_progress_bar", "false", "--compare", "[]",
        "--trainer.default_root_dir", str(root), *extra,
    ]  # fmt: skip


def test_recipe_optimizer_keys_train_and_the_summary_is_the_best_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    root = tmp_path / "run"
    args = quickstart(root, "--optimizer", "SGD", "--optimizer.lr", "0.05", "--optimizer.momentum", "0.5")
    args += ["--lr_scheduler", json.dumps(COSINE)]
    assert main(args) == 0
    printed = capsys.readouterr().out

    # the optimizer and scheduler the recipe named trained the model, and the checkpoint records them
    last = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    hp = last["hyper_parameters"]
    assert hp["optimizer"]["class_path"] == "torch.optim.SGD" and hp["optimizer"]["init_args"]["momentum"] == 0.5
    assert hp["lr"] == 0.05 and hp["scheduler"]["class_path"] == "torch.optim.lr_scheduler.CosineAnnealingLR"
    group = last["optimizer_states"][0]["param_groups"][0]
    assert group["momentum"] == 0.5 and "betas" not in group
    # cosine annealing over T_max=3 epochs, stepped per epoch; last.ckpt is written at the third
    # epoch's validation, after two scheduler steps: lr = 0.05 * (1 + cos(pi * 2 / 3)) / 2
    assert last["lr_schedulers"][0]["last_epoch"] == 2
    assert group["lr"] == pytest.approx(0.05 * (1 + math.cos(math.pi * 2 / 3)) / 2, abs=1e-9)

    # the summary: the best checkpoint (by val/auroc), its epoch, and its validation metrics
    summary = json.loads((root / "metrics.json").read_text())
    best = torch.load(summary["best_checkpoint"], weights_only=True, map_location="cpu")
    assert summary["monitor"] == "val/auroc" and summary["best_epoch"] == best["epoch"]
    logged = pd.read_csv(next((root / "csv").rglob("metrics.csv"))).dropna(subset=["val/auroc"])
    logged = logged[logged["epoch"] < 3].groupby("epoch").first()  # the fit's validations, one per epoch
    assert best["epoch"] == int(logged["val/auroc"].idxmax()) != 2  # the first best epoch, not the last
    metrics = summary["models"]["EarlyFusion (recipe)"]
    for name in ("val/auroc", "val/loss"):
        assert metrics[name] == pytest.approx(float(logged.loc[best["epoch"], name]), abs=1e-5), name
    assert "metrics of the best checkpoint by val/auroc" in " ".join(printed.split())
    # not the last epoch's metrics (its AUROC may tie with the best one's on 15 validation rows)
    last_epoch = (float(logged.loc[2, "val/auroc"]), float(logged.loc[2, "val/loss"]))
    assert (metrics["val/auroc"], metrics["val/loss"]) != pytest.approx(last_epoch)
    # and its test metrics are the best checkpoint's: what `modfuse test --ckpt_path <best>` prints
    assert {"test/auroc", "test/loss"} <= set(metrics)  # the quickstart recipe has test_after_fit: true
    assert main(["test", *quickstart(root)[1:], "--ckpt_path", summary["best_checkpoint"]]) == 0
    table = capsys.readouterr().out
    for name in ("test/auroc", "test/loss"):
        printed_value = float(re.search(rf"{re.escape(name)}\W+([-\d.]+)", table).group(1))  # 4 decimals
        assert metrics[name] == pytest.approx(printed_value, abs=5.1e-5), name
