"""The domain recipes (recipes/remote_sensing.yaml, recipes/molecules.yaml) driven through the real
``modfuse fit`` CLI for one tiny epoch on the real files under ../shared/data, their datamodules
(modfuse.data.datamodules.eopatch, modfuse.data.datamodules.molecules), and the small CPU presets of the X-ray and spectral encoders."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modfuse.data.datamodules.eopatch import EOPatchLandCoverDataModule, terrain_features
from modfuse.data.datamodules.molecules import MoleculeCSVDataModule
from modfuse.errors import ModfuseError, ReadError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
ENC = "--model.init_args.model.init_args.encoders"


def fit(recipe: str, run_dir: Path, *overrides: str) -> tuple[dict[str, float], pd.DataFrame, dict]:
    """One epoch of recipes/<recipe>.yaml through ``modfuse fit``; returns the recipe model's final
    metrics (metrics.json), the CSV log and the best checkpoint (loaded with weights_only=True)."""
    from modfuse.cli import main

    args = [
        "fit",
        "--config",
        str(RECIPES / f"{recipe}.yaml"),
        "--trainer.max_epochs=1",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={run_dir}",
        *overrides,
    ]
    assert main(args) == 0
    models = json.loads((run_dir / "metrics.json").read_text())["models"]
    metrics = models["EarlyFusion (recipe)"]
    (log,) = sorted((run_dir / "csv").glob("version_*/metrics.csv"))
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    return metrics, pd.read_csv(log), ckpt


def assert_trained(log: pd.DataFrame, ckpt: dict, steps: int) -> None:
    """Every training batch of the epoch ran an optimizer step with a finite loss."""
    losses = log["train/loss"].dropna()
    assert len(losses) == steps and np.isfinite(losses).all()
    assert ckpt["global_step"] == steps and ckpt["epoch"] == 0


# ---------------------------------------------------------------------------------- remote sensing
def test_remote_sensing_recipe_fits_one_epoch_on_the_real_eopatch(shared_data: Path, tmp_path: Path) -> None:
    metrics, log, ckpt = fit(
        "remote_sensing",
        tmp_path / "run",
        f"--data.init_args.root={shared_data / 'eopatch-slovenia'}",
        "--data.init_args.pixel_stride=4",  # 637 of the 9945 labelled pixels
        "--data.init_args.batch_size=64",
        f"{ENC}.series.init_args.hidden=16",
        f"{ENC}.series.init_args.layers=1",
    )
    assert_trained(log, ckpt, steps=math.ceil(438 / 64))  # 438 training pixels (see the datamodule test)
    for part in ("val", "test"):
        assert 0.0 <= metrics[f"{part}/accuracy"] <= 1.0 and 0.0 <= metrics[f"{part}/f1"] <= 1.0
        assert np.isfinite(metrics[f"{part}/loss"])
    assert log["val/accuracy"].notna().sum() == 1  # validated after the epoch
    head = [v for k, v in ckpt["state_dict"].items() if k.endswith("weight") and v.dim() == 2][-1]
    assert head.shape[0] == 5  # one logit per LULC class 1, 2, 3, 4, 8


def test_eopatch_datamodule_spatial_blocks_cloud_gaps_and_training_statistics(shared_data: Path) -> None:
    root = shared_data / "eopatch-slovenia"
    dm = EOPatchLandCoverDataModule(root, block=10, batch_size=32)
    dm.setup()
    info = dm.describe()
    # class 0 ("no data", 155 pixels) is dropped; the others keep their real counts
    assert info["pixels"] == 101 * 100 - 155 and info["classes"] == [1, 2, 3, 4, 8]
    assert info["class_counts"] == {1: 11, 2: 7601, 3: 1777, 4: 358, 8: 198}
    assert 0.5 < info["valid_date_fraction"] < 0.7 and info["dates"] == 68  # clouds remove ~40% of dates
    # neighbours stay together: no 10 x 10 block in two partitions
    groups = dm.dataset.groups
    blocks = {p: set(groups[idx]) for p, idx in dm.splits.items()}
    assert not (blocks["train"] & blocks["val"] or blocks["train"] & blocks["test"] or blocks["val"] & blocks["test"])
    assert sum(len(v) for v in dm.splits.values()) == info["pixels"]
    # elevation is standardised with statistics of the training pixels only
    train = torch.stack([dm.dataset[i]["inputs"]["elevation"] for i in dm.splits["train"]])
    torch.testing.assert_close(train.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    test = torch.stack([dm.dataset[i]["inputs"]["elevation"] for i in dm.splits["test"]])
    assert test.mean(0).abs().max() > 1e-3  # not re-centred on the test pixels
    # a batch: per-date validity from the cloud mask reaches the encoder input, targets are class indices
    batch = next(iter(dm.train_dataloader()))
    series = batch.inputs["series"]
    assert series["x"].shape == (32, 68, 1) and series["valid"].dtype == torch.bool
    assert 0 < series["valid"].float().mean() < 1 and batch.target.max() <= 4
    first = dm.dataset[0]
    r, c = map(int, first["id"][1:].split("_c"))
    ndvi = np.load(root / "data" / "NDVI.npy")[:, r, c, 0]
    cloud = np.load(root / "mask" / "CLM.npy")[:, r, c, 0]
    valid = np.load(root / "mask" / "IS_VALID.npy")[:, r, c, 0].astype(bool)
    assert first["inputs"]["series"]["valid"].numpy().tolist() == (valid & (cloud == 0)).tolist()
    np.testing.assert_allclose(first["inputs"]["series"]["x"][:, 0].numpy(), ndvi)
    label = np.load(root / "mask_timeless" / "LULC.npy")[r, c, 0]
    assert [1, 2, 3, 4, 8][int(first["target"])] == label


def test_eopatch_thinned_run_keeps_every_class_and_refuses_bad_settings(shared_data: Path, tmp_path: Path) -> None:
    dm = EOPatchLandCoverDataModule(shared_data / "eopatch-slovenia", pixel_stride=4, terrain=False)
    dm.setup()
    info = dm.describe()
    assert info["pixels"] == 637 and info["split_sizes"] == {"train": 438, "val": 72, "test": 127}
    assert dm.classes == [1, 2, 3, 4, 8] and 1 not in info["class_counts"]  # class 1 thinned away, output kept
    assert dm.dataset[0]["inputs"]["elevation"].shape == (1,)  # terrain=False: the DEM value only
    with pytest.raises(ReadError, match="EOPatch folder"):
        EOPatchLandCoverDataModule(tmp_path / "absent").setup()
    with pytest.raises(ModfuseError, match="pixel_stride"):
        EOPatchLandCoverDataModule(tmp_path, pixel_stride=0)


def test_terrain_features_slope_and_relative_elevation() -> None:
    ramp = np.tile(np.arange(7, dtype=float) * 10.0, (7, 1))  # rises 10 m per 10 m pixel eastwards
    out = terrain_features(ramp)
    assert out.shape == (7, 7, 3)
    np.testing.assert_allclose(out[..., 1], 45.0, atol=1e-4)  # slope 1 -> 45 degrees
    assert out[3, 3, 2] == pytest.approx(0.0)  # on a plane the neighbourhood mean is the value itself
    peak = np.zeros((5, 5))
    peak[2, 2] = 25.0
    assert terrain_features(peak)[2, 2, 2] == pytest.approx(24.0)  # 25 - 25 / 25


# ---------------------------------------------------------------------------------- molecules
def test_molecules_recipe_fits_one_epoch_on_the_real_esol_csv(shared_data: Path, tmp_path: Path) -> None:
    metrics, log, ckpt = fit(
        "molecules",
        tmp_path / "run",
        f"--data.init_args.path={shared_data / 'esol' / 'delaney-processed.csv'}",
        "--model.init_args.model.init_args.hidden=16",
        f"{ENC}.graph.init_args.hidden=16",
        f"{ENC}.graph.init_args.layers=1",
    )
    assert_trained(log, ckpt, steps=math.ceil(902 / 64))  # the scaffold split's 902 training molecules
    for part in ("val", "test"):
        assert np.isfinite(metrics[f"{part}/rmse"]) and metrics[f"{part}/rmse"] > 0
    assert log["val/rmse"].notna().sum() == 1


def test_molecule_csv_datamodule_matches_the_esol_manifest_and_excludes_the_leaky_column(
    shared_data: Path, tmp_path: Path
) -> None:
    from modfuse.datasets.manifest import read_manifest
    from modfuse.datasets.preparation import prepare

    csv = shared_data / "esol" / "delaney-processed.csv"
    dm = MoleculeCSVDataModule(csv, batch_size=16)
    dm.setup()
    leaky = "ESOL predicted log solubility in mols per litre"
    assert leaky in dm.excluded and leaky not in dm.descriptors and len(dm.descriptors) == 6
    assert dm.target_column == "measured log solubility in mols per litre" and dm.invalid_smiles == []
    # the same scaffold split as prepare("esol") + ManifestDataModule (recipes/esol.yaml)
    m = read_manifest(prepare("esol", root=csv, out=tmp_path / "esol"))
    ids = np.asarray(dm.dataset.ids)
    for part, idx in m.split("scaffold").items():
        assert set(ids[dm.splits[part]]) == set(np.asarray(m.ids)[idx]), part
    # descriptors standardised with training statistics only; targets are the measured values
    frame = pd.read_csv(csv)
    weight = frame["Molecular Weight"].to_numpy()[dm.splits["train"]]
    standardize = dm.dataset.transforms["descriptors"]
    assert standardize.mean[1].item() == pytest.approx(weight.mean(), rel=1e-5)
    item = dm.dataset[5]
    assert item["target"].item() == pytest.approx(frame["measured log solubility in mols per litre"][5])
    assert item["inputs"]["graph"].x.shape[1] == 42 and item["inputs"]["descriptors"].shape == (6,)
    batch = next(iter(dm.train_dataloader()))
    assert batch.inputs["graph"].num_graphs == 16 and batch.present["descriptors"].all()
    # the leaky column can never become a feature, and neither can the target
    with pytest.raises(ModfuseError, match="must never be features"):
        MoleculeCSVDataModule(csv, descriptors=["Molecular Weight", leaky])
    with pytest.raises(ModfuseError, match="cannot be a descriptor"):
        MoleculeCSVDataModule(csv, descriptors=["measured log solubility in mols per litre"])
    with pytest.raises(ReadError, match="expected columns"):
        MoleculeCSVDataModule(csv, descriptors=["LogP"]).setup()


def test_molecule_csv_random_split_and_unparseable_smiles_is_a_missing_graph(tmp_path: Path) -> None:
    pytest.importorskip("rdkit")
    csv = tmp_path / "mols.csv"
    smiles = ["CCO", "c1ccccc1", "not-a-smiles", "CCN", "CC(=O)O", "c1ccncc1", "CCCC", "OCCO", "C1CCCCC1", "CO"]
    pd.DataFrame({"smiles": smiles, "y": np.arange(10.0), "d": np.r_[np.nan, np.arange(9.0)]}).to_csv(csv, index=False)
    dm = MoleculeCSVDataModule(
        csv, config=None, smiles_column="smiles", target_column="y", descriptors=["d"], split="random", batch_size=10
    )
    dm.setup()
    assert dm.invalid_smiles == ["row000002"] and dm.dataset.groups is None
    assert sorted(np.concatenate(list(dm.splits.values())).tolist()) == list(range(10))
    assert dm.dataset[2]["inputs"]["graph"] is None and dm.dataset[0]["inputs"]["descriptors"] is None
    with pytest.raises(ModfuseError, match="smiles_column and target_column"):
        MoleculeCSVDataModule(csv, config=None)
    with pytest.raises(ReadError, match=r"set data\.init_args\.path"):
        MoleculeCSVDataModule(tmp_path / "absent.csv").setup()


# ---------------------------------------------------------------------------------- small presets
def test_small_presets_are_light_row_independent_and_keep_the_realistic_defaults(tmp_path: Path) -> None:
    import inspect

    from modfuse.encoders import build
    from modfuse.encoders.spectral import SpectralEncoder
    from modfuse.encoders.weights import save_state_dict
    from modfuse.encoders.xray import XRayEncoder

    assert inspect.signature(XRayEncoder).parameters["arch"].default == "densenet121"
    assert inspect.signature(SpectralEncoder).parameters["backbone"].default == "resnet18"
    xray = build("xray", arch="small", out_dim=16).eval()
    s2 = build("spectral", bands=13, backbone="small", out_dim=32).eval()
    for enc, x in ((xray, torch.randn(3, 1, 16, 16)), (s2, torch.randn(3, 13, 12, 12))):
        assert sum(p.numel() for p in enc.parameters()) < 150_000
        with torch.no_grad():
            together, alone = enc(x), enc(x[1:2])
        assert together.shape == (3, enc.out_dim)
        torch.testing.assert_close(together[1:2], alone)  # GroupNorm: a row never depends on its batch
    with pytest.raises(ModfuseError, match="at least 8x8"):
        xray(torch.randn(1, 1, 4, 4))
    with pytest.raises(ModfuseError, match="arch"):
        build("xray", arch="tiny")
    with pytest.raises(ModfuseError, match="no torchgeo weights"):
        build("spectral", bands=13, backbone="small", weights="ResNet18_Weights.SENTINEL2_ALL_MOCO")
    # local weights of the small networks load, with the channel count checked first
    path = save_state_dict(s2.backbone, tmp_path / "small.safetensors")
    again = build("spectral", bands=13, backbone="small", weights_path=str(path), out_dim=32)
    torch.testing.assert_close(again.backbone.conv1.weight, s2.backbone.conv1.weight)
    with pytest.raises(ModfuseError, match="13 bands"):
        build("spectral", bands=12, backbone="small", weights_path=str(path))
    xpath = save_state_dict(xray.net, tmp_path / "xray.pt")
    loaded = build("xray", arch="small", weights_path=str(xpath), out_dim=4)
    torch.testing.assert_close(loaded.net.features.conv1.weight, xray.net.features.conv1.weight)
    # the presets need neither MONAI nor timm
    code = (
        "import sys; from modfuse.encoders import build; build('xray', arch='small'); "
        "build('spectral', bands=4, backbone='small'); print([m for m in ('monai', 'timm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
