"""Scale-out: a 2-process DDP run on CPU (gloo) launched from a recipe matches a 1-process run.

With a tiny learning rate both runs end with (almost) the initial weights, so what is compared
is the distributed part: each rank reads its shard of the data, the ranks keep in step (no
hang when one rank's batch lacks a modality, see ``modfuse.training.callbacks.allow_unused_parameters``),
and the validation metrics are synchronised over all validation rows, not one rank's half.
Tolerance: 0.02 on AUROC and accuracy, 0.01 on the loss.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

from modfuse.cli import main

# 80 patients: 12 validation rows (even, so DistributedSampler adds no duplicate); 52 training
# rows, 26 per rank: the last batch of rank 0 (2 rows) has no X-ray, which used to hang DDP
ARGS = [
    "--config", "recipes/quickstart.yaml", "--data.init_args.n", "80", "--data.init_args.batch_size", "8",
    "--trainer.max_epochs", "1", "--compare", "[]", "--test_after_fit", "false", "--model.init_args.lr", "1e-5",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.accelerator", "cpu",
]  # fmt: skip
TIMEOUT_S = 180


def free_port() -> int:
    """A TCP port no process listens on now (for this run's MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_process_group(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in its own process group; on timeout kill the whole group (the ranks
    Lightning started too) and fail with the output so far."""
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"{' '.join(args[:2])} did not finish within {timeout} s:\n{out[-3000:]}") from None
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-3000:]}"
    return subprocess.CompletedProcess(args, proc.returncode, out, None)


def test_two_process_ddp_matches_one_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    # also generates the cohort before the two ranks need it; batch 16 = the global batch of two
    # ranks of 8, so both runs take the same number of optimiser steps (Adam moves every weight
    # by about lr per step, whatever the gradient's size, so the step count shows in the metrics)
    one_process = ["--data.init_args.batch_size", "16", "--trainer.default_root_dir", str(tmp_path / "one")]
    assert main(["fit", *ARGS, *one_process]) == 0
    env = {
        **os.environ,
        "MODFUSE_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        # a port of its own, so concurrent DDP runs (other tests, other users) do not collide
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.default_root_dir", str(tmp_path / "two")]
    out = run_process_group(["modfuse", "fit", *ARGS, *ddp], env, TIMEOUT_S).stdout
    assert "Starting with 2 processes" in out  # really distributed, not a silent fallback
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["models"]["EarlyFusion (recipe)"]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["models"]["EarlyFusion (recipe)"]
    assert abs(one["val/auroc"] - two["val/auroc"]) <= 0.02
    assert abs(one["val/accuracy"] - two["val/accuracy"]) <= 0.02
    assert abs(one["val/loss"] - two["val/loss"]) <= 0.01
