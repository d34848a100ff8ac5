"""Scale-out: a 2-process DDP run on CPU (gloo) launched from a recipe matches a 1-process run.

With a tiny learning rate both runs end with (almost) the initial weights, so what is compared
is the distributed part: data sharding across the two ranks and the synchronisation of the
validation metrics. Tolerance: 0.02 on AUROC and accuracy, 0.01 on the loss.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from modfuse.cli import main

# 80 patients: 12 validation rows (even, so DistributedSampler adds no duplicate)
ARGS = [
    "--config", "recipes/quickstart.yaml", "--data.init_args.n", "80", "--data.init_args.batch_size", "8",
    "--trainer.max_epochs", "1", "--compare", "[]", "--test_after_fit", "false", "--model.init_args.lr", "1e-5",
    "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.accelerator", "cpu",
]  # fmt: skip


@pytest.mark.skip(
    reason="the 2-process gloo run hangs after start-up (both ranks sleep, no checkpoint); see issue 6 report"
)
def test_two_process_ddp_matches_one_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    assert main(["fit", *ARGS, "--trainer.default_root_dir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "MODFUSE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.default_root_dir", str(tmp_path / "two")]
    subprocess.run(["modfuse", "fit", *ARGS, *ddp], env=env, check=True, timeout=300)
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())["models"]["EarlyFusion (recipe)"]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())["models"]["EarlyFusion (recipe)"]
    assert abs(one["val/auroc"] - two["val/auroc"]) <= 0.02
    assert abs(one["val/accuracy"] - two["val/accuracy"]) <= 0.02
    assert abs(one["val/loss"] - two["val/loss"]) <= 0.01
