"""The ``modfuse`` command line driven over every recipe in recipes/ (1 epoch, tiny sizes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from modfuse.cli import COMMANDS, main
from modfuse.cli.checkpoints import checkpoint_path
from modfuse.datasets.synthetic import MODALITIES, synthetic_cohort
from modfuse.errors import ModfuseError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
TINY = ["--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]


N = 48  # patients of the tiny synthetic cohort


def synthetic_overrides(root: Path) -> list[str]:
    return [
        *TINY,
        "--data.init_args.n",
        str(N),
        "--data.init_args.batch_size",
        "16",
        "--trainer.default_root_dir",
        str(root),
    ]


def assert_pngs_open(folder: Path, names: list[str]) -> None:
    for name in names:
        with Image.open(folder / name) as image:
            image.load()  # decodes the whole file
            assert image.format == "PNG" and min(image.size) > 50, name


def data_class(recipe: Path) -> str:
    return yaml.safe_load(recipe.read_text())["data"]["class_path"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MODFUSE_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def quickstart_run(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny quickstart fit (with one compared strategy), shared by the tests below."""
    root = tmp_path_factory.mktemp("quickstart")
    args = ["fit", "--config", "recipes/quickstart.yaml", *synthetic_overrides(root), "--compare", "[late]"]
    assert main(args) == 0
    return root


def test_help_lists_all_nine_commands() -> None:
    out = subprocess.run(["modfuse", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("fit", "validate", "test", "predict", "merge", "adapt", "explain", "robustness", "prepare-cache"):
        assert f"  {command} " in out
    assert len(COMMANDS) == 9


@pytest.mark.parametrize("command", ["merge", "adapt", "explain", "robustness", "prepare-cache"])
def test_command_help_is_plain_text_and_lists_the_recipe_options(command: str) -> None:
    out = subprocess.run(["modfuse", command, "--help"], capture_output=True, text=True, check=True).stdout
    own, _, recipe = out.partition("recipe options of")  # the recipe part is LightningCLI's (Lightning's text)
    assert "``" not in own and ":class:" not in own and "][modfuse." not in out
    if command in ("explain", "robustness"):
        assert "--ckpt_path" in own and "--trainer.max_epochs" in recipe and "--data" in recipe


def test_unknown_command_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err


def test_quickstart_fit_writes_checkpoints_and_metrics_table(quickstart_run: Path) -> None:
    assert (quickstart_run / "checkpoints" / "best.ckpt").is_file()
    assert (quickstart_run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((quickstart_run / "metrics.json").read_text())
    models = metrics["models"]
    assert set(models) == {"EarlyFusion (recipe)", "late"}
    for values in models.values():
        assert 0.0 <= values["test/auroc"] <= 1.0 and "val/loss" in values
    # every checkpoint (best, last with the RNG and training-order state, compared strategies)
    # loads without unpickling arbitrary objects
    checkpoints = sorted(quickstart_run.rglob("*.ckpt"))
    assert len(checkpoints) == 4
    for path in checkpoints:
        state = torch.load(path, weights_only=True, map_location="cpu")
        assert state["hyper_parameters"]["tasks"] == {
            "y": {"kind": "binary", "num_outputs": 1, "boundaries": None, "weight": 1.0}
        }


def test_test_and_predict_use_the_best_checkpoint(quickstart_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--config", "recipes/quickstart.yaml", *synthetic_overrides(quickstart_run)]
    assert main(["test", *base]) == 0
    by_default = capsys.readouterr().out
    assert "test/auroc" in by_default
    # an explicit file: LightningCLI rebuilds the task from the checkpoint's hparams (tasks as dicts)
    assert main(["test", *base, "--ckpt_path", str(quickstart_run / "checkpoints" / "best.ckpt")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "test/auroc" in line)
    assert row in by_default
    assert main(["predict", *base]) == 0
    predictions = pd.read_csv(quickstart_run / "predictions.csv")
    assert list(predictions.columns) == ["id", "y", "y_true", "present_xray", "present_ecg", "present_labs"]
    assert predictions["y"].between(0, 1).all() and predictions["id"].str.startswith("P").all()
    assert set(predictions["y_true"].unique()) <= {0, 1} and not predictions["present_xray"].all()  # missing x-rays
    test_ids = set(predictions["id"])
    assert main(["predict", *base, "--split", "all"]) == 0
    everyone = pd.read_csv(quickstart_run / "predictions.csv")
    assert len(everyone) > len(test_ids) and test_ids < set(everyone["id"]) and everyone["id"].is_unique
    assert main(["predict", *base, "--split", "train"]) == 0
    train = pd.read_csv(quickstart_run / "predictions.csv")
    assert not set(train["id"]) & test_ids  # train and test disjoint
    assert main(["predict", *base, "--split", "val"]) == 0
    val = pd.read_csv(quickstart_run / "predictions.csv")
    assert not set(val["id"]) & (test_ids | set(train["id"]))
    assert len(everyone) == N and set(everyone["id"]) == set(train["id"]) | set(val["id"]) | test_ids
    # labels and presence are the cohort's own, row by row (the ids of the generated files)
    truth = synthetic_cohort(N).table.set_index("id").loc[everyone["id"]]
    assert everyone["y_true"].tolist() == truth["label"].tolist()
    for modality in MODALITIES:
        assert everyone[f"present_{modality}"].tolist() == truth[f"has_{modality}"].astype(bool).tolist(), modality


def test_quickstart_test_prints_no_library_warning(quickstart_run: Path, cache: Path) -> None:
    """A fresh process (warnings are shown once per process) running the quickstart's test step
    prints neither the read-only-array warning nor Lightning's transfer_batch_to_device warning."""
    env = {**os.environ, "MODFUSE_CACHE": str(cache), "PYTHONWARNINGS": "default"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "modfuse.cli",
            "test",
            "--config",
            "recipes/quickstart.yaml",
            *synthetic_overrides(quickstart_run),
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "test/auroc" in output
    assert "not writable" not in output
    assert "transfer_batch_to_device" not in output


def test_load_from_checkpoint_predicts_like_modfuse_predict_and_a_saved_model_does_too(
    quickstart_run: Path, tmp_path: Path
) -> None:
    import modfuse
    from modfuse.datasets.synthetic import SyntheticCohortDataModule
    from modfuse.training.task import FusionTask

    # the model is rebuilt from the checkpoint's JSON config (no model=..., nothing unpickled)
    task = FusionTask.load_from_checkpoint(quickstart_run / "checkpoints" / "best.ckpt").eval()
    assert type(task.model).__name__ == "EarlyFusion" and task.hparams.lr == 0.003
    base = ["--config", "recipes/quickstart.yaml", *synthetic_overrides(quickstart_run)]
    assert main(["predict", *base]) == 0
    by_cli = pd.read_csv(quickstart_run / "predictions.csv").set_index("id")["y"]
    datamodule = SyntheticCohortDataModule(n=N, batch_size=16)
    datamodule.setup("predict")
    with torch.no_grad():
        rows = [task.predict_step(batch, i) for i, batch in enumerate(datamodule.predict_dataloader())]
    ours = pd.Series(torch.cat([r["y"] for r in rows]).reshape(-1).numpy(), index=[i for r in rows for i in r["ids"]])
    assert len(ours) == len(by_cli) > 0
    np.testing.assert_array_equal(by_cli.loc[ours.index].to_numpy(np.float32), ours.to_numpy(np.float32))
    # the same model as one .safetensors file: `modfuse predict` gives the same predictions
    saved = modfuse.save(task.model, tmp_path / "quickstart.safetensors")
    assert main(["predict", *base, "--ckpt_path", str(saved)]) == 0
    from_file = pd.read_csv(quickstart_run / "predictions.csv").set_index("id")["y"]
    pd.testing.assert_series_equal(from_file, by_cli)


def test_robustness_report_one_row_per_subset(quickstart_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = quickstart_run / "robustness-report"
    best = quickstart_run / "checkpoints" / "best.ckpt"
    args = ["robustness", "--config", "recipes/quickstart.yaml", *synthetic_overrides(quickstart_run)]
    args += ["--ckpt_path", str(best), "--out_dir", str(out), "--rates", "0", "0.5", "--seeds", "0", "--kinds", "mcar"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    subsets = pd.read_csv(out / "subsets.csv")
    expected = {"+".join(c) for k in (1, 2, 3) for c in combinations(MODALITIES, k)}
    assert len(subsets) == 7 and set(subsets["subset"]) == expected
    assert subsets["n"].nunique() == 1 and subsets["auroc"].between(0, 1).all()
    sweep = pd.read_csv(out / "sweep.csv")
    assert sorted(zip(sweep["kind"], sweep["rate"])) == [("mcar", 0.0), ("mcar", 0.5)]
    assert_pngs_open(out, ["subsets.png", "sweep.png"])
    # the printed table is the subset table
    assert "modfuse robustness" in printed
    full = subsets.set_index("subset").loc["xray+ecg+labs"]
    row = next(line for line in printed.splitlines() if "xray+ecg+labs" in line)
    assert f"{full['auroc']:.4f}" in row and f"{full['accuracy']:.4f}" in row


def test_robustness_subset_gap_trains_specialists(quickstart_run: Path) -> None:
    out = quickstart_run / "robustness-gap"
    args = ["robustness", "--config", "recipes/quickstart.yaml", *synthetic_overrides(quickstart_run)]
    assert main([*args, "--out_dir", str(out), "--kinds", "--subset_gap"]) == 0
    gaps = pd.read_csv(out / "subset_gap.csv")
    assert len(gaps) == 7 and {"fused", "specialist", "gap"} <= set(gaps.columns)
    subsets = pd.read_csv(out / "subsets.csv").set_index("subset")
    # the fused column is the same evaluation as the subset table
    np.testing.assert_allclose(gaps.set_index("subset")["fused"], subsets.loc[gaps["subset"], "auroc"], atol=1e-6)
    assert set(pd.read_csv(out / "competition.csv")["modality"]) == set(MODALITIES)
    assert_pngs_open(out, ["subset_gap.png"])


def test_explain_report_shapley_values_and_plots(quickstart_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = quickstart_run / "explain-report"
    args = ["explain", "--config", "recipes/quickstart.yaml", *synthetic_overrides(quickstart_run)]
    assert main([*args, "--out_dir", str(out)]) == 0  # default checkpoint: best.ckpt
    printed = capsys.readouterr().out
    shapley = pd.read_csv(out / "shapley.csv", dtype={"id": str})
    assert len(shapley) >= 5 and shapley["id"].is_unique
    values = shapley[list(MODALITIES)].to_numpy()
    # efficiency: per sample the modality values add up to f(all) - f(none)
    np.testing.assert_allclose(values.sum(axis=1), shapley["full"] - shapley["base"], atol=1e-4)
    # a modality the patient lacks contributes nothing
    truth = synthetic_cohort(N).table.set_index("id").loc[shapley["id"]]
    for j, modality in enumerate(MODALITIES):
        absent = ~truth[f"has_{modality}"].to_numpy(dtype=bool)
        assert np.all(values[absent, j] == 0), modality
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"shapley_cohort.png", "waterfall_0.png"} <= set(pngs)
    assert_pngs_open(out, pngs)
    assert "modfuse explain" in printed and shapley["id"].iloc[0] in printed


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModfuseError, match="run `modfuse fit`"):
        checkpoint_path(tmp_path, None)


SYNTHETIC_RECIPES = [
    r for r in RECIPES if r.stem != "quickstart" and data_class(r).endswith("SyntheticCohortDataModule")
]


@pytest.mark.parametrize("recipe", SYNTHETIC_RECIPES, ids=[r.stem for r in SYNTHETIC_RECIPES])
def test_every_synthetic_recipe_fits_one_tiny_epoch(recipe: Path, cache: Path, tmp_path: Path) -> None:
    args = ["fit", "--config", str(recipe), *synthetic_overrides(tmp_path), "--compare", "[]"]
    assert main(args) == 0
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_every_recipe_is_driven_through_the_cli_by_a_test() -> None:
    """Recipes on the synthetic cohort run above (quickstart in the shared fixture); recipes that
    read real or prepared data run on tiny fixtures in the files that build those fixtures."""
    tests = Path(__file__).resolve().parent
    driven = {"quickstart"} | {r.stem for r in SYNTHETIC_RECIPES}
    for name in ("test_datasets_prepare.py", "test_recipes_domain.py"):
        driven |= set(re.findall(r"\bfit(?:_recipe)?\(\s*\"(\w+)\"", (tests / name).read_text()))
    assert {r.stem for r in RECIPES} <= driven, f"recipes no test fits: {sorted({r.stem for r in RECIPES} - driven)}"
