"""Fault tolerance: a `modfuse fit` subprocess killed mid-epoch resumes with --ckpt_path last
and ends with the same weights and metrics as an uninterrupted run with the same seed.

The position in the training order is the datamodule's checkpoint state
(``MultiModalDataModule.state_dict``); the random states are the CLI's ``RandomStates``.
All runs use one torch thread (the in-process run through the test suite's conftest, the
subprocesses through OMP_NUM_THREADS): with another thread count the floating-point sums
differ in the last bits, and Adam turns the near-zero gradients of biases that precede a
normalisation layer into visibly different steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import torch

from modfuse.cli import main
from modfuse.data.datamodule import DistributedEpochSampler, EpochSampler, MultiModalDataModule

# 96 patients: 62 train rows -> 8 batches of 8 per epoch; last.ckpt every 3 steps (mid-epoch)
ARGS = [
    "--config", "recipes/quickstart.yaml", "--data.init_args.n", "96", "--data.init_args.batch_size", "8",
    "--trainer.max_epochs", "3", "--compare", "[]", "--test_after_fit", "false", "--checkpoint_every_n_steps", "3",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
]  # fmt: skip
STEPS_PER_EPOCH = 8
TIMEOUT_S = 240


def run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run(["modfuse", *args], env=env, check=True, timeout=TIMEOUT_S)


def test_killed_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    env = {**os.environ, "MODFUSE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    # the uninterrupted reference (also generates the cohort before the subprocess needs it)
    assert main(["fit", *ARGS, "--trainer.default_root_dir", str(tmp_path / "full")]) == 0

    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(["modfuse", "fit", *ARGS, "--trainer.default_root_dir", str(killed)], env=env)
    deadline = time.monotonic() + TIMEOUT_S
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert last.exists(), "the run ended before writing a step checkpoint"
    interrupted = torch.load(last, weights_only=True, map_location="cpu")
    step = interrupted["global_step"]
    assert step % STEPS_PER_EPOCH != 0, f"checkpoint at step {step} is not mid-epoch"
    order = interrupted["SyntheticCohortDataModule"]["train_order"]
    assert (order["epoch"], order["batches"]) == divmod(step, STEPS_PER_EPOCH)
    assert not (killed / "metrics.json").exists()

    run(["fit", *ARGS, "--trainer.default_root_dir", str(killed), "--ckpt_path", "last"], env)
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())["models"]
    resumed = json.loads((killed / "metrics.json").read_text())["models"]
    for model, metrics in full.items():
        for name, value in metrics.items():
            assert abs(resumed[model][name] - value) < 1e-5, (name, value, resumed[model][name])
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    b = torch.load(last, weights_only=True, map_location="cpu")
    assert a["global_step"] == b["global_step"] == 3 * STEPS_PER_EPOCH
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6)


def test_training_order_depends_on_seed_and_epoch_and_resumes_part_way() -> None:
    points = [(2, 3)]
    sampler = EpochSampler(40, seed=7, batch_size=4, resume=lambda: points.pop() if points else None)
    resumed = list(sampler)  # the pending point: epoch 2, 3 batches already trained on
    sampler.set_epoch(2)
    whole = list(sampler)
    assert sorted(whole) == list(range(40)) and resumed == whole[12:]
    assert list(EpochSampler(40, seed=7, batch_size=4)) != list(EpochSampler(40, seed=8, batch_size=4))
    sampler.set_epoch(3)
    assert list(sampler) != whole  # a new order every epoch
    # without set_epoch (outside Lightning) each pass moves on to the next epoch's order
    plain = EpochSampler(40, seed=7, batch_size=4)
    first, second = list(plain), list(plain)
    plain.set_epoch(1)
    assert first != second and second == list(plain)


def test_distributed_order_shards_by_rank_and_resumes_part_way() -> None:
    data = list(range(41))
    shards = [DistributedEpochSampler(data, seed=7, batch_size=4, num_replicas=2, rank=r) for r in (0, 1)]
    for shard in shards:
        shard.set_epoch(5)
    a, b = (list(s) for s in shards)
    assert len(a) == len(b) == 21 and set(a) | set(b) == set(data)
    resumed = DistributedEpochSampler(data, seed=7, batch_size=4, resume=lambda: (5, 2), num_replicas=2, rank=1)
    assert list(resumed) == b[8:]


def test_datamodule_resume_point_only_during_fit() -> None:
    dm = MultiModalDataModule(seed=3)
    assert dm.state_dict() == {}  # no trainer: nothing to save
    dm.load_state_dict({"train_order": {"seed": 3, "epoch": 1, "batches": 2}})
    assert dm._take_resume_point() is None  # not fitting: evaluation must not skip batches


LEGO = [
    "--config", "recipes/lego.yaml", "--data.init_args.n", "48", "--data.init_args.batch_size", "16",
    "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
    "--compare", "[]", "--test_after_fit", "false",
]  # fmt: skip


def test_staged_lego_fit_resumes_after_its_first_stage(tmp_path: Path, monkeypatch) -> None:
    """A lego-fuse recipe stopped after its first stage (blocks) resumes with --ckpt_path last,
    runs only the chain stage, and ends with the weights of the uninterrupted run."""
    import shutil
    import sys

    from modfuse.training import runner
    from modfuse.training.task import FusionTask

    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # LightningCLI reads the recipe args only
    ran: list[list[str]] = []
    real_fit = runner.fit

    def spy(*args, **kwargs):
        ran.append(list(kwargs["stages"]))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", spy)
    full = tmp_path / "full"
    assert main(["fit", *LEGO, "--trainer.default_root_dir", str(full)]) == 0
    assert ran == [["blocks"], ["chain"]]
    stage_one = full / "checkpoints" / "stage-1-blocks.ckpt"
    assert torch.load(stage_one, weights_only=True, map_location="cpu")["modfuse_stages_done"] == ["blocks"]

    # the run folder as a run killed during the chain stage leaves it
    killed = tmp_path / "killed" / "checkpoints"
    killed.mkdir(parents=True)
    shutil.copy(stage_one, killed / "last.ckpt")
    ran.clear()
    assert main(["fit", *LEGO, "--trainer.default_root_dir", str(killed.parent), "--ckpt_path", "last"]) == 0
    assert ran == [["chain"]]
    a = torch.load(full / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    b = torch.load(killed / "best.ckpt", weights_only=True, map_location="cpu")
    assert a["modfuse_stages_done"] == b["modfuse_stages_done"] == ["blocks", "chain"]
    assert a["modfuse_model_config"] == b["modfuse_model_config"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), key
    assert type(FusionTask.load_from_checkpoint(killed / "best.ckpt").model).__name__ == "LegoFuse"

    # a finished run resumed has no stage left to run
    ran.clear()
    assert main(["fit", *LEGO, "--trainer.default_root_dir", str(killed.parent), "--ckpt_path", "last"]) == 0
    assert ran == []


def test_staged_fit_refuses_a_checkpoint_without_stages(tmp_path: Path, monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    args = ["fit", *LEGO, "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(plain)]
    assert main(args) == 2
    assert "not a checkpoint of a staged fit" in capsys.readouterr().err
