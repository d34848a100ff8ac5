"""The one training runner: a strategy name is one procedure wherever it trains (estimator,
recipe CLI, benchmark helper), the best weights restored are the best validation epoch's,
and a model's declared stages run in order."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from benchmarks import common
from modfuse import FusionClassifier, MultiModalDataModule, MultiModalDataset
from modfuse.cli import main
from modfuse.cli.recipes import ModfuseCLI, stage_trainer_kwargs
from modfuse.encoders import build as build_encoder
from modfuse.fusion import build
from modfuse.training import runner
from modfuse.training.runner import STAGES, StageRun, build_trainer, fit, stages_of

ENCODER = {"name": "tabular", "num_features": 3, "hidden": [8], "out_dim": 8, "dropout": 0.0}


def fresh_encoders() -> dict[str, nn.Module]:
    options = {k: v for k, v in ENCODER.items() if k != "name"}
    return {m: build_encoder(ENCODER["name"], **options) for m in "ab"}


SETTINGS = {"max_epochs": 1, "lr": 3e-3, "batch_size": 16}


def arrays(n: int = 96) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    X = {m: rng.normal(size=(n, 3)).astype("float32") for m in "ab"}
    X["b"][: n // 4] = np.nan  # a quarter of the samples lack b
    y = (X["a"][:, 0] + np.nan_to_num(X["b"][:, 1]) > 0).astype(int)
    return X, y


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert torch.equal(value, sb[key]), key


def test_estimator_and_benchmark_lego_fuse_are_the_runner_procedure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The estimator's and the benchmark helper's lego-fuse both train the blocks apart, then
    fine-tune the chain: from one initial model and datamodule they end with the same weights."""
    started: dict[str, Any] = {}
    real_fit = runner.fit

    def spy(model: nn.Module, data: Any, **kwargs: Any) -> runner.FitResult:
        started.update(model=copy.deepcopy(model), data=data)
        return real_fit(model, data, **kwargs)

    monkeypatch.setattr(runner, "fit", spy)
    X, y = arrays()
    clf = FusionClassifier(
        strategy="lego-fuse",
        encoders={"a": ENCODER, "b": ENCODER},
        weight_decay=1e-4,
        random_state=0,
        device="cpu",
        modality_dropout=None,
        unimodal_weight=None,
        **SETTINGS,
    ).fit(X, y)
    monkeypatch.undo()
    estimator_model = clf.model_

    data: MultiModalDataModule = started["data"]
    bench = common.fit(copy.deepcopy(started["model"]), data, epochs=1, lr=3e-3, weight_decay=1e-4)
    assert bench.extra["stages"] == ["blocks", "chain"]
    assert_same_parameters(estimator_model, bench.model)

    # and that procedure is not end-to-end training of the chain from fresh blocks
    chain_only = fit(copy.deepcopy(started["model"]), data, max_epochs=1, lr=3e-3, stages=["model"])
    assert any(
        not torch.equal(v, chain_only.model.state_dict()[k])
        for k, v in bench.model.state_dict().items()
        if k in chain_only.model.state_dict()
    )


def test_recipe_lego_fuse_is_the_runner_procedure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``modfuse fit`` on recipes/lego.yaml runs the runner's stages: its best.ckpt holds the
    weights runner.fit gives the same recipe's model and data."""
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # LightningCLI reads the recipe args only
    args = [
        "--config", "recipes/lego.yaml", "--data.init_args.n", "48", "--data.init_args.batch_size", "16",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"), "--compare", "[]", "--test_after_fit", "false",
    ]  # fmt: skip
    assert main(["fit", *args]) == 0
    saved = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert (
        saved["state_dict"].keys()
        == torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")[
            "state_dict"
        ].keys()
    )

    cli = ModfuseCLI(args=args, run=False)  # the same recipe, model and data, built in-process
    result = fit(
        cli.model, cli.datamodule, max_epochs=1, seed=0, trainer_kwargs=stage_trainer_kwargs(cli.setting("trainer"))
    )
    assert result.stages == ["blocks", "chain"] and cli.model.model is result.model
    state = cli.model.state_dict()
    assert saved["state_dict"].keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(saved["state_dict"][key], value), key


def test_best_weights_restored_are_the_best_validation_epochs() -> None:
    X, y = arrays(128)
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, y), batch_size=16, seed=0)
    encoders = fresh_encoders()
    model = build("early", encoders=encoders, tasks="binary")
    seen: list[tuple[float, dict[str, torch.Tensor]]] = []

    class Record(L.Callback):
        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking:
                state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
                seen.append((float(trainer.callback_metrics["val/loss"]), state))

    # the *highest* validation loss is "best" here, so the best epoch is not the last one
    result = fit(
        model,
        dm,
        max_epochs=4,
        lr=1e-2,
        monitor="val/loss",
        mode="max",
        trainer_kwargs={"accelerator": "cpu", "callbacks": [Record()]},
    )
    losses = [loss for loss, _ in seen]
    best = int(np.argmax(losses))
    assert len(seen) == 4 and result.stages == ["model"] and result.epochs == 4
    assert result.best_epoch == best != 3 and result.best_score == pytest.approx(losses[best])
    for key, value in model.state_dict().items():
        assert torch.equal(value, seen[best][1][key]), key
    assert not all(torch.equal(v, seen[-1][1][k]) for k, v in model.state_dict().items())


def test_declared_stages_run_in_order_and_the_last_model_is_returned() -> None:
    calls: list[str] = []
    final = nn.Linear(1, 1)

    def first(model: nn.Module, data: Any, settings: runner.FitSettings) -> StageRun:
        calls.append(f"first:{settings.max_epochs}")
        return StageRun(model)

    def second(model: nn.Module, data: Any, settings: runner.FitSettings) -> StageRun:
        calls.append(f"second:{type(model).__name__}")
        return StageRun(final)

    STAGES.add("test-first", first, overwrite=True)
    STAGES.add("test-second", second, overwrite=True)

    class TwoStage(nn.Linear):
        training_stages = ("test-first", "test-second")

    result = fit(TwoStage(1, 1), None, max_epochs=3)
    assert calls == ["first:3", "second:TwoStage"]
    assert result.stages == ["test-first", "test-second"] and result.model is final and not final.training


def test_strategies_declare_their_procedure() -> None:
    encoders = fresh_encoders()
    lego = {"latent_shape": (8, 16), "heads": 2, "depth": 1}
    assert stages_of(build("lego-fuse", encoders=encoders, tasks="binary", **lego)) == ("blocks", "chain")
    assert stages_of(build("lego-merge", encoders=encoders, tasks="binary", **lego)) == ("blocks",)
    for name in ("early", "late", "attention", "sequential"):
        assert stages_of(build(name, encoders=encoders, tasks="binary")) == ("model",), name
    with pytest.raises(Exception, match="monitor and mode"):
        fit(build("early", encoders=encoders, tasks="binary"), None, monitor="val/loss")


def test_build_trainer_lets_ddp_reduce_unused_parameters() -> None:
    trainer = build_trainer(1, accelerator="cpu", strategy="ddp", devices=1)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is True
    kept = build_trainer(1, accelerator="cpu", strategy=DDPStrategy(find_unused_parameters=False), devices=1)
    assert kept.strategy._ddp_kwargs["find_unused_parameters"] is False
    plain = build_trainer(2)
    assert plain.max_epochs == 2 and plain.logger is None and not plain.checkpoint_callbacks
