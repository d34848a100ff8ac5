"""Preparing public collections: tiny fixtures in each provider's exact layout -> prepare ->
manifest -> MultiModalDataset -> one epoch through the collection's recipe (the real CLI).
Leakage (a patient, block or scaffold in two partitions) is asserted for every split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modfuse.data.datamodules.manifest import ManifestDataModule
from modfuse.data.splits import (
    check_disjoint_groups,
    group_split,
    multilabel_stratified_split,
    read_split,
    scaffold_split,
    spatial_block_split,
    write_split,
)
from modfuse.datasets import prepare as prepare_mod
from modfuse.datasets.manifest import ModalitySpec, read_manifest, write_manifest
from modfuse.datasets.preparation import available, prepare
from modfuse.errors import ModfuseError, ReadError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# The recipes' encoders are realistic (DenseNet121, ResNet-18); the tests swap in the small CPU
# presets through the same command-line overrides a user would type.
ENC = "--model.init_args.model.init_args.encoders"
SMALL_XRAY = f"{ENC}.image.init_args.arch=small"
SMALL_S2, SMALL_S1 = f"{ENC}.s2.init_args.backbone=small", f"{ENC}.s1.init_args.backbone=small"


def assert_no_leak(manifest_path: Path) -> None:
    """Every grouped split of the manifest keeps each group in one partition, and the split
    files cover disjoint samples."""
    m = read_manifest(manifest_path)
    for name in m.split_names:
        parts = m.split(name)
        ids = [set(np.asarray(m.ids)[idx]) for idx in parts.values()]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
        if m.split_is_grouped(name):
            groups = m.groups
            sets = {p: set(groups[idx]) for p, idx in parts.items()}
            assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])


def fit_recipe(recipe: str, manifest: Path, run_dir: Path, *overrides: str) -> dict:
    """One epoch of recipes/<recipe>.yaml through the real ``modfuse fit`` CLI; returns the
    metrics of the recipe's model it writes (``{"val/loss": ...}``)."""
    from modfuse.cli import main

    args = [
        "fit",
        "--config",
        str(RECIPES / f"{recipe}.yaml"),
        f"--data.init_args.manifest={manifest}",
        "--data.init_args.batch_size=4",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={run_dir}",
        *overrides,
    ]
    assert main(args) == 0
    models = json.loads((run_dir / "metrics.json").read_text())["models"]
    return next(v for k, v in models.items() if "recipe" in k)


# ---------------------------------------------------------------------------------- splits
def test_group_split_keeps_patients_together_and_write_refuses_leakage(tmp_path: Path) -> None:
    groups = np.repeat(np.arange(20), 3)
    parts = group_split(groups, 0.2, 0.2, seed=1)
    check_disjoint_groups(parts, groups)
    assert sum(len(v) for v in parts.values()) == 60
    ids = [f"s{i}" for i in range(60)]
    path = write_split(parts, ids, tmp_path / "s.csv", groups)
    back = read_split(path, ids, groups)
    assert all(np.array_equal(back[k], parts[k]) for k in parts)
    leaky = {"train": np.array([0, 3]), "val": np.array([1]), "test": np.array([6])}
    with pytest.raises(ModfuseError, match="leakage"):
        write_split(leaky, ids, tmp_path / "bad.csv", groups)


def test_spatial_blocks_keep_neighbours_together() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 10_000, 200), rng.uniform(0, 10_000, 200)
    parts, blocks = spatial_block_split(x, y, block_size=2_500, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert len(set(blocks)) == 16
    check_disjoint_groups(parts, blocks)
    # two chips in the same 2.5 km block never land in different partitions
    where = {i: p for p, idx in parts.items() for i in idx}
    same = [(i, j) for i in range(50) for j in range(50) if blocks[i] == blocks[j]]
    assert all(where[i] == where[j] for i, j in same)


def test_scaffold_split_is_deterministic_and_scaffold_disjoint() -> None:
    smiles = ["c1ccccc1O", "c1ccccc1N", "c1ccccc1C", "C1CCCCC1O", "C1CCCCC1N", "CCO", "CCN", "c1ccncc1C", "xx!"]
    parts, scaffolds = scaffold_split(smiles, 0.2, 0.2)
    again, _ = scaffold_split(smiles, 0.2, 0.2)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    check_disjoint_groups(parts, scaffolds)
    assert scaffolds[0] == scaffolds[1] == "c1ccccc1" and scaffolds[5] == "" and scaffolds[8].startswith("invalid:")
    assert set(parts["train"]) >= {0, 1, 2}  # the largest scaffold set fills train first


def test_multilabel_stratification_keeps_rare_labels_in_every_partition() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 5)) < [0.5, 0.3, 0.1, 0.05, 0.04]).astype(float)
    parts = multilabel_stratified_split(y, 0.2, 0.2, seed=0)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(300))
    for p, frac in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
        assert abs(len(parts[p]) / 300 - frac) < 0.03
        share = y[parts[p]].sum(0) / y.sum(0)
        assert np.all(np.abs(share - frac) < 0.1), (p, share)
    groups = np.repeat(np.arange(100), 3)
    grouped = multilabel_stratified_split(y, 0.2, 0.2, seed=0, groups=groups)
    check_disjoint_groups(grouped, groups)


# ---------------------------------------------------------------------------------- manifest format
def test_manifest_round_trip_with_explicit_missingness_and_csv(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {
            "id": ["007", "008", "009", "010"],
            "group": ["a", "a", "b", "c"],
            "f1": [1.0, np.nan, 3.0, 4.0],
            "f2": [0.5, np.nan, np.nan, 1.0],
            "y": [0, 1, 0, 1],
        }
    )
    parts = {"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([3])}
    path = write_manifest(
        table,
        tmp_path / "m",
        name="toy",
        modalities={"labs": ModalitySpec("columns", ["f1", "f2"])},
        targets={"y": {"kind": "binary", "columns": ["y"]}},
        splits={"fixed": parts},
        table_format="csv",
    )
    m = read_manifest(path.parent)
    assert m.ids == ["007", "008", "009", "010"]  # string ids survive CSV
    assert m.present()["labs"].tolist() == [True, False, True, True]
    ds = m.to_dataset()
    assert ds[1]["inputs"]["labs"] is None and ds[2]["inputs"]["labs"].tolist()[0] == 3.0
    assert ds[3]["target"].item() == 1
    with pytest.raises(ModfuseError, match="leakage"):
        write_manifest(
            table,
            tmp_path / "leak",
            name="toy",
            modalities={"labs": ModalitySpec("columns", ["f1", "f2"])},
            targets={"y": {"kind": "binary", "columns": ["y"]}},
            splits={"fixed": {"train": np.array([0]), "val": np.array([1]), "test": np.array([2, 3])}},
        )
    with pytest.raises(ModfuseError, match="lacks columns"):
        write_manifest(
            table, tmp_path / "x", name="toy", modalities={"labs": ModalitySpec("columns", ["nope"])},
            targets={}, splits={"fixed": parts},
        )  # fmt: skip
    (tmp_path / "m" / "manifest.json").write_text("{not json")
    with pytest.raises(ReadError, match="not valid JSON"):
        read_manifest(tmp_path / "m")


def test_prepare_registry_and_errors(tmp_path: Path) -> None:
    assert {"ptbxl", "mimic_cxr", "chexpert", "bigearthnet", "eurosat", "tcga", "esol"} <= set(available())
    with pytest.raises(ModfuseError, match="unknown collection"):
        prepare("nope", root=tmp_path, out=tmp_path / "o")
    with pytest.raises(ReadError, match="nothing is downloaded"):
        prepare("esol", root=tmp_path / "absent", out=tmp_path / "o")
    with pytest.raises(ReadError, match=r"delaney-processed\.csv"):
        prepare("esol", root=tmp_path, out=tmp_path / "o")
    assert callable(prepare_mod)


# ---------------------------------------------------------------------------------- ESOL (real data)
def test_esol_prepare_on_real_data_excludes_leaky_column_and_trains(shared_data: Path, tmp_path: Path) -> None:
    path = prepare("esol", root=shared_data / "esol", out=tmp_path / "esol")
    m = read_manifest(path)
    assert len(m.ids) == 1128 and m.present()["graph"].all()
    leaky = "ESOL predicted log solubility in mols per litre"
    assert leaky in m.doc["excluded_columns"] and leaky not in m.table.columns
    features = [c for s in m.modalities.values() for c in s.columns]
    assert leaky not in features and "measured log solubility in mols per litre" not in features
    assert_no_leak(path)
    scaffold = m.split("scaffold")
    assert {k: len(v) for k, v in scaffold.items()} == {"train": 902, "val": 113, "test": 113}
    ds = m.to_dataset()
    item = ds[0]
    assert item["inputs"]["graph"].x.shape[1] == 42 and item["inputs"]["descriptors"].shape == (6,)
    # train on a small slice of the real data: 40 molecules, one epoch, through the recipe
    small = tmp_path / "small.csv"
    pd.read_csv(shared_data / "esol" / "delaney-processed.csv").iloc[:40].to_csv(small, index=False)
    small_manifest = prepare("esol", root=small, out=tmp_path / "esol_small")
    metrics = fit_recipe("esol", small_manifest.parent, tmp_path / "run", "--model.init_args.model.init_args.hidden=16")
    assert np.isfinite(metrics["test/rmse"])


def test_manifest_datamodule_standardises_with_training_rows_only(shared_data: Path, tmp_path: Path) -> None:
    path = prepare("esol", root=shared_data / "esol", out=tmp_path / "esol", default_split="random")
    dm = ManifestDataModule(path.parent, batch_size=8)
    dm.setup()
    m = dm.manifest
    train = m.table.iloc[dm.splits["train"]]["Molecular Weight"]
    standardize = dm.dataset.transforms["descriptors"]
    assert standardize.mean[1].item() == pytest.approx(train.mean(), rel=1e-5)
    assert dm.dataset.groups is None  # the random split ignores scaffolds on purpose
    batch = next(iter(dm.train_dataloader()))
    assert batch.present["graph"].all() and batch.inputs["descriptors"].shape == (8, 6)


# ---------------------------------------------------------------------------------- PTB-XL
def write_ptbxl(root: Path) -> None:
    """PTB-XL layout: ptbxl_database.csv, scp_statements.csv, records100/00000/*_lr WFDB."""
    import wfdb

    rng = np.random.default_rng(0)
    leads = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
    codes = [
        "{'NORM': 100.0, 'SR': 0.0}",
        "{'IMI': 35.0, 'ABQRS': 0.0}",
        "{'NDT': 100.0}",
        "{'LVH': 50.0}",
        "{'SR': 0.0}",
    ]
    rows = []
    for ecg_id in range(1, 25):
        patient = 100 + (ecg_id + 1) // 2  # two ECGs per patient
        fold = (patient % 10) + 1
        rows.append(
            {
                "ecg_id": ecg_id,
                "patient_id": float(patient),
                "age": 300 if ecg_id == 3 else 40 + ecg_id,
                "sex": ecg_id % 2,
                "height": np.nan if ecg_id % 3 else 170.0,
                "weight": np.nan if ecg_id % 4 else 70.0,
                "report": "sinusrhythmus",
                "scp_codes": codes[ecg_id % len(codes)],
                "strat_fold": fold,
                "filename_lr": f"records100/00000/{ecg_id:05d}_lr",
                "filename_hr": f"records500/00000/{ecg_id:05d}_hr",
            }
        )
        folder = root / "records100" / "00000"
        folder.mkdir(parents=True, exist_ok=True)
        if ecg_id != 6:  # record 6 was not downloaded: its ECG is explicitly missing
            signal = rng.normal(0, 0.3, (250, 12))
            wfdb.wrsamp(
                f"{ecg_id:05d}_lr", fs=100, units=["mV"] * 12, sig_name=leads, p_signal=signal,
                fmt=["16"] * 12, write_dir=str(folder),
            )  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "ptbxl_database.csv", index=False)
    scp = pd.DataFrame(
        {
            "description": ["normal ECG", "inferior MI", "non-diagnostic T", "LVH", "sinus rhythm", "abnormal QRS"],
            "diagnostic": [1.0, 1.0, 1.0, 1.0, np.nan, np.nan],
            "form": [np.nan, np.nan, 1.0, np.nan, np.nan, 1.0],
            "rhythm": [np.nan, np.nan, np.nan, np.nan, 1.0, np.nan],
            "diagnostic_class": ["NORM", "MI", "STTC", "HYP", np.nan, np.nan],
            "diagnostic_subclass": ["NORM", "IMI", "STTC", "LVH", np.nan, np.nan],
        },
        index=pd.Index(["NORM", "IMI", "NDT", "LVH", "SR", "ABQRS"]),
    )
    scp.to_csv(root / "scp_statements.csv")


def test_ptbxl_prepare_official_folds_and_recipe(tmp_path: Path) -> None:
    root = tmp_path / "ptb-xl"
    write_ptbxl(root)
    path = prepare("ptbxl", root=root, out=tmp_path / "out")
    m = read_manifest(path)
    # ECGs whose only statement is the rhythm "SR" have no diagnostic superclass: dropped
    assert len(m.ids) == 24 - 5 and "4" not in m.ids and "6" in m.ids
    row = m.table.set_index("id").loc["1"]
    assert row["MI"] == 1 and row["NORM"] == 0  # 'IMI' -> MI
    assert m.table.set_index("id").loc["3", "age"] == 90  # the provider's 300 = over 89
    assert not m.present().loc["6", "ecg"] and m.present().loc["1", "ecg"]
    assert_no_leak(path)
    parts = m.split("official")
    folds = m.table["strat_fold"].to_numpy()
    assert set(folds[parts["test"]]) == {10} and set(folds[parts["val"]]) == {9}
    ds = m.to_dataset()
    assert ds[0]["inputs"]["ecg"].shape == (12, 250) and ds[0]["target"].shape == (5,)
    metrics = fit_recipe("ptbxl", path.parent, tmp_path / "run", f"{ENC}.ecg.init_args.widths=[8,16]")
    assert "val/loss" in metrics


# ---------------------------------------------------------------------------------- chest X-ray
def write_dicom(path: Path, pixels: np.ndarray) -> None:
    """A minimal valid DX DICOM file (pydicom)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientSex, ds.PatientAge, ds.ViewPosition = "DX", "F", "060Y", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def write_mimic(root: Path, mimic_iv: Path) -> None:
    """MIMIC-CXR layout (DICOM variant) + MIMIC-IV hosp tables, 6 patients x 2 studies."""
    from modfuse.datasets.collections.chest_xray import CHEXPERT_LABELS

    rng = np.random.default_rng(0)
    meta, split, labels, labevents = [], [], [], []
    for k, subject in enumerate(range(10000032, 10000038)):
        part = ["train", "train", "train", "train", "validate", "test"][k]
        for j in range(2):
            study, dicom = 50000000 + 10 * k + j, f"d{k}{j}"
            view = "LATERAL" if j == 1 and k == 0 else "PA"
            date = 21800101 + j  # one study per day
            meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view,
                         "StudyDate": date, "StudyTime": 120000.0, "Rows": 64, "Columns": 64})  # fmt: skip
            split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": part})
            row = {"subject_id": subject, "study_id": study}
            row.update({c: rng.choice([1.0, 0.0, -1.0, np.nan]) for c in CHEXPERT_LABELS})
            labels.append(row)
            if not (k == 2 and j == 0):  # one image not downloaded: explicitly missing
                write_dicom(
                    root / f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.dcm", rng.integers(0, 4000, (64, 64))
                )
        # creatinine 10 h before the first study (used), and one 2 h AFTER the second (must not be)
        labevents.append({"labevent_id": len(labevents), "subject_id": subject, "itemid": 50912,
                          "charttime": "2180-01-01 02:00:00", "valuenum": 1.0 + k})  # fmt: skip
        labevents.append({"labevent_id": len(labevents), "subject_id": subject, "itemid": 50912,
                          "charttime": "2180-01-02 14:00:00", "valuenum": 99.0})  # fmt: skip
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", index=False)
    pd.DataFrame(split).to_csv(root / "mimic-cxr-2.0.0-split.csv.gz", index=False)
    pd.DataFrame(labels).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False)
    (mimic_iv / "hosp").mkdir(parents=True)
    pd.DataFrame(labevents).to_csv(mimic_iv / "hosp" / "labevents.csv.gz", index=False)
    pd.DataFrame({"subject_id": range(10000032, 10000038), "gender": list("MFMFMF"), "anchor_age": range(50, 56),
                  "anchor_year": 2180, "dod": np.nan}).to_csv(mimic_iv / "hosp" / "patients.csv.gz", index=False)  # fmt: skip


def test_mimic_cxr_joins_labs_before_the_study_only(tmp_path: Path) -> None:
    root, mimic_iv = tmp_path / "mimic-cxr", tmp_path / "mimiciv"
    write_mimic(root, mimic_iv)
    path = prepare("mimic_cxr", root=root, out=tmp_path / "out", images="dicom", mimic_iv=mimic_iv, image_size=(64, 64))
    m = read_manifest(path)
    t = m.table.set_index("id")
    assert "d01" not in t.index  # lateral view dropped
    assert t.loc["d10", "creatinine"] == 2.0 and t.loc["d10", "sex"] == 1.0
    # the second study is 34 h after the first lab (inside 48 h); the 99.0 drawn after it never leaks
    assert t.loc["d11", "creatinine"] == 2.0 and (t["creatinine"] != 99.0).all()
    assert set(np.unique(t[["Atelectasis", "No Finding"]].to_numpy())) <= {0.0, 1.0}
    present = m.present()
    assert not present.loc["d20", "image"] and present.loc["d21", "image"]
    assert_no_leak(path)
    ds = m.to_dataset()
    assert ds[0]["inputs"]["image"].shape == (1, 64, 64) and ds[0]["target"].shape == (14,)
    metrics = fit_recipe("mimic_cxr", path.parent, tmp_path / "run", SMALL_XRAY)
    assert "val/loss" in metrics


def test_chexpert_official_split_and_uncertainty_policy(tmp_path: Path) -> None:
    from PIL import Image

    from modfuse.datasets.collections.chest_xray import CHEXPERT_LABELS

    root = tmp_path / "CheXpert-v1.0-small"
    rng = np.random.default_rng(0)
    rows = {"train.csv": [], "valid.csv": []}
    for p in range(1, 11):
        part = "valid" if p > 8 else "train"
        for view in ("frontal", "lateral"):
            rel = f"{part}/patient{p:05d}/study1/view1_{view}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 40), dtype=np.uint8)).save(root / rel)
            row = {"Path": f"CheXpert-v1.0-small/{rel}", "Sex": ["Male", "Female", "Unknown"][p % 3], "Age": 40 + p,
                   "Frontal/Lateral": view.capitalize(), "AP/PA": "AP" if view == "frontal" else np.nan}  # fmt: skip
            row.update({c: [-1.0, 1.0, 0.0, np.nan][(p + i) % 4] for i, c in enumerate(CHEXPERT_LABELS)})
            rows[f"{part}.csv"].append(row)
    for name, r in rows.items():
        pd.DataFrame(r).to_csv(root / name, index=False)
    path = prepare("chexpert", root=root, out=tmp_path / "out", uncertain="ones", image_size=(64, 64))
    m = read_manifest(path)
    assert len(m.ids) == 10 and m.table["AP/PA"].notna().all()
    first = m.table.iloc[0]  # patient 1: Atelectasis = [-1, 1, 0, nan][1] = 1; Cardiomegaly = 0
    assert first["Atelectasis"] == 1.0 and first["Cardiomegaly"] == 0.0 and first["Consolidation"] == 0.0
    assert m.table.iloc[3]["Atelectasis"] == 1.0  # patient 4: -1 -> 1 under U-Ones
    assert m.table.iloc[2]["Atelectasis"] == 0.0  # patient 3: blank (not mentioned) -> 0
    assert m.table.iloc[0]["sex"] == 1.0 and np.isnan(m.table.iloc[1]["sex"])  # "Unknown" -> missing
    parts = m.split("official")
    assert sorted(m.table["group"].to_numpy()[parts["test"]]) == ["patient00009", "patient00010"]
    assert_no_leak(path)
    assert m.to_dataset()[0]["inputs"]["image"].shape == (1, 64, 64)
    metrics = fit_recipe("chexpert", path.parent, tmp_path / "run", SMALL_XRAY)
    assert "val/loss" in metrics


# ---------------------------------------------------------------------------------- remote sensing
def write_tif(path: Path, data: np.ndarray, left: float, top: float, res: float, epsg: int = 32633) -> None:
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    data = data if data.ndim == 3 else data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": "uint16", "crs": f"EPSG:{epsg}", "transform": from_origin(left, top, res, res)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(np.uint16))


def test_bigearthnet_s2_s1_official_and_spatial_splits(tmp_path: Path) -> None:
    from modfuse.datasets.collections.remote_sensing import BIGEARTHNET_S2_BANDS

    root = tmp_path / "bigearthnet"
    rng = np.random.default_rng(0)
    names = []
    for k in range(8):
        name = f"S2A_MSIL2A_20170613T101031_{k}_{k}"
        names.append(name)
        left, top = 500_000 + (k % 4) * 30_000, 5_000_000 + (k // 4) * 30_000
        for band in BIGEARTHNET_S2_BANDS:
            res = 10 if band in ("B02", "B03", "B04", "B08") else 60 if band in ("B01", "B09") else 20
            write_tif(
                root / "BigEarthNet-v1.0" / name / f"{name}_{band}.tif",
                rng.integers(0, 3000, (120 // res,) * 2),
                left,
                top,
                res,
            )
        meta = {"labels": ["Coniferous forest"] + (["Pastures"] if k % 2 else []),
                "coordinates": {"ulx": left, "uly": top, "lrx": left + 120, "lry": top - 120},
                "projection": 'PROJCS["WGS 84 / UTM zone 33N"]', "acquisition_date": "2017-06-13 10:10:31"}  # fmt: skip
        (root / "BigEarthNet-v1.0" / name / f"{name}_labels_metadata.json").write_text(json.dumps(meta))
        if k < 5:  # S1 only for some patches: explicitly missing for the others
            s1 = f"S1A_IW_GRDH_{k}"
            for pol in ("VV", "VH"):
                write_tif(
                    root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_{pol}.tif", rng.integers(0, 100, (12, 12)), left, top, 10
                )
            (root / "BigEarthNet-S1-v1.0" / s1 / f"{s1}_labels_metadata.json").write_text(
                json.dumps({"corresponding_s2_patch": name})
            )
    for part, idx in (("train", [0, 1, 2, 3, 4]), ("val", [5]), ("test", [6])):  # patch 7 is cloudy
        pd.Series([names[i] for i in idx]).to_csv(root / f"{part}.csv", header=False, index=False)
    pd.Series([names[7]]).to_csv(root / "patches_with_cloud_and_shadow.csv", header=False, index=False)
    path = prepare("bigearthnet", root=root, out=tmp_path / "out", block_size=20_000)
    m = read_manifest(path)
    assert len(m.ids) == 7 and names[7] not in m.ids
    assert m.present()["s1"].tolist() == [True] * 5 + [False] * 2
    assert m.targets["land_cover"].columns == ["Coniferous forest", "Pastures"]
    assert {k: len(v) for k, v in m.split("official").items()} == {"train": 5, "val": 1, "test": 1}
    assert_no_leak(path)
    item = m.to_dataset()[0]
    assert item["inputs"]["s2"].shape == (12, 12, 12) and item["inputs"]["s1"].shape == (2, 12, 12)
    metrics = fit_recipe(
        "bigearthnet", path.parent, tmp_path / "run", '--model.init_args.model.init_args.tasks={"land_cover": {"kind": "multilabel", "num_outputs": 2}}',
        SMALL_S2, SMALL_S1,
    )  # fmt: skip
    assert "val/loss" in metrics


def test_eurosat_spatial_blocks_from_georeference(tmp_path: Path) -> None:
    from modfuse.datasets.collections.remote_sensing import EUROSAT_CLASSES

    base = tmp_path / "EuroSAT" / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    rng = np.random.default_rng(0)
    for c, cls in enumerate(EUROSAT_CLASSES):
        for i in range(1, 4):
            left = 400_000 + c * 10_000 + i * 640  # neighbouring chips of one class share a block
            write_tif(
                base / cls / f"{cls}_{i}.tif", rng.integers(0, 4000, (13, 16, 16)), left, 5_500_000 + i * 20_000, 10
            )
    path = prepare("eurosat", root=tmp_path / "EuroSAT", out=tmp_path / "out", block_size=20_000)
    m = read_manifest(path)
    assert len(m.ids) == 30 and m.targets["land_cover"].classes == list(EUROSAT_CLASSES)
    assert_no_leak(path)
    item = m.to_dataset()[m.ids.index("Forest_2")]
    assert item["inputs"]["s2"].shape == (13, 16, 16) and float(item["inputs"]["s2"].max()) < 0.41
    assert item["target"].item() == 1
    metrics = fit_recipe("eurosat", path.parent, tmp_path / "run", SMALL_S2)
    assert "val/loss" in metrics


# ---------------------------------------------------------------------------------- TCGA
def test_tcga_survival_tables_with_missing_mutations(tmp_path: Path) -> None:
    root = tmp_path / "tcga"
    root.mkdir()
    rng = np.random.default_rng(0)
    patients = [f"TCGA-{site}-{i:04d}" for i, site in enumerate(["A1", "A2", "B6", "C8", "D8"] * 6)]
    barcodes = [f"{p}-01A-11R-A144-07" for p in patients] + [f"{patients[0]}-11A-01R-A144-07"]  # + a normal
    genes = [f"GENE{g}" for g in range(30)]
    expr = pd.DataFrame(rng.gamma(2.0, 50.0, (30, len(barcodes))), index=genes, columns=barcodes)
    expr.index.name = "gene_id"
    expr.to_csv(root / "expression.tsv", sep="\t")
    maf = pd.DataFrame({"Hugo_Symbol": ["TP53", "TP53", "PIK3CA", "TTN", "PIK3CA", "CDH1"],
                        "Tumor_Sample_Barcode": [f"{patients[i]}-01A-11D-A142-09" for i in (0, 1, 2, 3, 4, 5)],
                        "Variant_Classification": ["Missense_Mutation", "Nonsense_Mutation", "Missense_Mutation",
                                                   "Silent", "Missense_Mutation", "Frame_Shift_Del"]})  # fmt: skip
    (root / "mutations.maf").write_text("#version 2.4\n" + maf.to_csv(sep="\t", index=False))
    dead = rng.random(30) < 0.5
    clinical = pd.DataFrame({"case_submitter_id": patients, "vital_status": np.where(dead, "Dead", "Alive"),
                             "days_to_death": np.where(dead, rng.integers(30, 3000, 30).astype(str), "'--"),
                             "days_to_last_follow_up": np.where(dead, "'--", rng.integers(30, 3000, 30).astype(str)),
                             "age_at_index": rng.integers(30, 80, 30), "gender": ["female", "male"] * 15})  # fmt: skip
    clinical.iloc[29, clinical.columns.get_loc("days_to_last_follow_up")] = "'--"  # no usable time: dropped
    clinical.iloc[29, clinical.columns.get_loc("vital_status")] = "Alive"
    clinical.to_csv(root / "clinical.tsv", sep="\t", index=False)
    path = prepare("tcga", root=root, out=tmp_path / "out", top_genes=10, min_mutated=2)
    m = read_manifest(path)
    assert len(m.ids) == 29
    t = m.table.set_index("id")
    assert list(m.modalities["mutations"].columns) == ["mut:PIK3CA", "mut:TP53"]  # TTN is silent, CDH1 once
    assert t.loc[patients[1], "mut:TP53"] == 1 and t.loc[patients[5], "mut:TP53"] == 0
    present = m.present()
    assert present.loc[patients[5], "mutations"] and not present.loc[patients[6], "mutations"]  # not sequenced
    assert len(m.modalities["expression"].columns) == 10
    assert_no_leak(path)
    sites = m.table["site"].to_numpy()
    site_parts = m.split("site")
    assert not set(sites[site_parts["train"]]) & set(sites[site_parts["test"]])
    spec = m.task_specs()["survival"]
    tasks = json.dumps(
        {"survival": {"kind": "survival", "num_outputs": spec.num_outputs, "boundaries": list(spec.boundaries)}}
    )
    metrics = fit_recipe(
        "tcga", path.parent, tmp_path / "run", f"--model.init_args.model.init_args.tasks={tasks}",
        f"{ENC}.expression.init_args.num_features=10", f"{ENC}.mutations.init_args.num_features=2",
    )  # fmt: skip
    assert "val/loss" in metrics
