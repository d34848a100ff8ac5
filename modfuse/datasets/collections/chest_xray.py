"""Chest X-ray collections: MIMIC-CXR (DICOM or -JPG) joined with MIMIC-IV tables, and
CheXpert, through one mechanism: an ``image`` path modality, a tabular modality, and the 14
CheXpert labels (multi-label) with an explicit policy for uncertain (-1) and blank labels.

MIMIC-CXR layout (PhysioNet, credentialed access)::

    root/mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, StudyDate, StudyTime
    root/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train/validate/test)
    root/mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, 14 labels (1, 0, -1, blank)
    root/files/p10/p10000032/s50414267/<dicom_id>.jpg   (.dcm in MIMIC-CXR proper)
    mimic_iv/hosp/labevents.csv[.gz]         subject_id, itemid, charttime, valuenum
    mimic_iv/hosp/d_labitems.csv[.gz]        itemid, label
    mimic_iv/hosp/patients.csv[.gz]          subject_id, gender, anchor_age

CheXpert layout (Stanford AIMI)::

    root/train.csv, root/valid.csv   Path, Sex, Age, Frontal/Lateral, AP/PA, 14 labels
    root/train/patient00001/study1/view1_frontal.jpg   (Path starts with "CheXpert-v1.0[-small]/")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from modfuse.data.readers.tabular import read_table
from modfuse.data.splits import group_split
from modfuse.datasets.collections._common import find_file, require_columns
from modfuse.datasets.manifest import ModalitySpec, TargetSpec, write_manifest
from modfuse.datasets.preparation import register
from modfuse.errors import ModfuseError, ReadError

__all__ = ["CHEXPERT_LABELS", "DEFAULT_LAB_ITEMS", "prepare_chexpert", "prepare_mimic_cxr"]

CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
DEFAULT_LAB_ITEMS: dict[int, str] = {
    50912: "creatinine",
    51222: "hemoglobin",
    51301: "wbc",
    50983: "sodium",
    50971: "potassium",
    51265: "platelets",
    50931: "glucose",
    50882: "bicarbonate",
}
"""MIMIC-IV ``itemid`` -> column name of the default laboratory panel."""
IMAGE_READER = "image"
Uncertain = Literal["zeros", "ones"]


def label_matrix(table: pd.DataFrame, uncertain: Uncertain) -> pd.DataFrame:
    """The 14 labels as 0/1: 1 positive; 0 negative or blank (not mentioned); -1 (uncertain)
    -> 0 (``zeros``) or 1 (``ones``), the U-Zeros / U-Ones policies of the CheXpert paper."""
    if uncertain not in ("zeros", "ones"):
        raise ModfuseError(f"uncertain must be 'zeros' or 'ones', found {uncertain!r}")
    values = table[list(CHEXPERT_LABELS)].apply(pd.to_numeric, errors="coerce").fillna(0.0)
    return values.replace(-1.0, 1.0 if uncertain == "ones" else 0.0).astype(np.float32)


def _image_spec(kind: str, size: Sequence[int]) -> ModalitySpec:
    if kind == "dicom":
        return ModalitySpec("path", ["image_path"], reader="dicom", options={"spatial_size": list(size)})
    return ModalitySpec("path", ["image_path"], reader=IMAGE_READER, options={"size": list(size)})


def _with_existing(table: pd.DataFrame, root: Path, column: str) -> pd.DataFrame:
    # an image the user has not downloaded is an explicitly missing modality, not a crash
    exists = np.array([isinstance(p, str) and (root / p).is_file() for p in table[column]])
    table[column] = np.where(exists, table[column], None)
    return table


# ---------------------------------------------------------------------------------- MIMIC-CXR
@register("mimic_cxr")
def prepare_mimic_cxr(
    root: Path,
    out: Path,
    mimic_iv: str | Path | None = None,
    images: Literal["jpg", "dicom"] = "jpg",
    frontal_only: bool = True,
    uncertain: Uncertain = "zeros",
    lab_items: Mapping[int, str] | None = None,
    lab_window_hours: float = 48.0,
    image_size: Sequence[int] = (224, 224),
    table_format: str = "parquet",
) -> Path:
    """Prepare MIMIC-CXR(-JPG), optionally joined with MIMIC-IV labs and demographics.

    Args:
        root: the MIMIC-CXR(-JPG) folder (metadata/split/chexpert tables and ``files/``).
        out: output folder.
        mimic_iv: the MIMIC-IV folder (``hosp/``), or None for images only.
        images: ``jpg`` (MIMIC-CXR-JPG) or ``dicom`` (MIMIC-CXR).
        frontal_only: keep PA/AP views only.
        uncertain: policy for uncertain labels (see `label_matrix()`).
        lab_items: MIMIC-IV ``itemid`` -> column name (default `DEFAULT_LAB_ITEMS`).
        lab_window_hours: a lab counts for an image when drawn at most this long before the
            study (never after it: a later lab would leak the follow-up).
        image_size: output image size.
        table_format: ``parquet`` or ``csv``.
    """
    root = Path(root)
    meta = _read_one(root, "metadata", ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"])
    split = _read_one(root, "split", ["dicom_id", "split"])
    labels = _read_one(root, "chexpert", ["subject_id", "study_id", *CHEXPERT_LABELS])
    table = meta.merge(split[["dicom_id", "split"]], on="dicom_id", how="inner")
    table = table.merge(labels, on=["subject_id", "study_id"], how="left")
    if frontal_only:
        table = table[table["ViewPosition"].isin(["PA", "AP"])].reset_index(drop=True)
    if table.empty:
        raise ReadError("no images left after joining metadata, split (and the frontal filter)", path=root)
    table[list(CHEXPERT_LABELS)] = label_matrix(table, uncertain)
    ext = "jpg" if images == "jpg" else "dcm"
    table["image_path"] = [
        f"files/p{str(s)[:2]}/p{s}/s{st}/{d}.{ext}"
        for s, st, d in zip(table["subject_id"], table["study_id"], table["dicom_id"])
    ]
    table = _with_existing(table, root, "image_path")
    table["id"], table["group"] = table["dicom_id"].astype(str), table["subject_id"].astype(str)
    modalities = {"image": _image_spec("dicom" if images == "dicom" else "jpg", image_size)}
    if mimic_iv is not None:
        table, columns = _join_mimic_iv(table, Path(mimic_iv), dict(lab_items or DEFAULT_LAB_ITEMS), lab_window_hours)
        modalities["labs"] = ModalitySpec("columns", columns["labs"], description="last value before the study")
        modalities["demographics"] = ModalitySpec("columns", columns["demographics"], categorical=["sex"])
    official = {
        p: np.flatnonzero(table["split"].to_numpy() == s)
        for p, s in (("train", "train"), ("val", "validate"), ("test", "test"))
    }
    return write_manifest(
        table.drop(columns=["split"]),
        out,
        name="mimic_cxr",
        modalities=modalities,
        targets={"findings": TargetSpec("multilabel", list(CHEXPERT_LABELS))},
        splits={"official": official},
        root=root,
        excluded_columns={"radiology report": "the report states the findings (the labels were mined from it)"},
        table_format=table_format,  # type: ignore[arg-type]
        info={"images": images, "uncertain": uncertain, "lab_window_hours": lab_window_hours},
    )


def _read_one(root: Path, kind: str, columns: Sequence[str]) -> pd.DataFrame:
    names = [f"mimic-cxr-2.0.0-{kind}.csv.gz", f"mimic-cxr-2.0.0-{kind}.csv"]
    path = find_file(root, names, f"the MIMIC-CXR {kind} table") if root.is_dir() else None
    if path is None:
        raise ReadError("expected the MIMIC-CXR folder, found a file", path=root)
    table = read_table(path)
    require_columns(table, columns, path)
    return table


def _study_time(table: pd.DataFrame) -> pd.Series:
    date = table["StudyDate"].astype(int).astype(str)
    seconds = table["StudyTime"].fillna(0).astype(float).astype(int) if "StudyTime" in table else 0
    hhmmss = pd.Series(seconds, index=table.index).astype(str).str.zfill(6)
    return pd.to_datetime(date + hhmmss, format="%Y%m%d%H%M%S")


def _join_mimic_iv(
    table: pd.DataFrame, mimic_iv: Path, items: dict[int, str], window_hours: float
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    hosp = mimic_iv / "hosp"
    lab_path = find_file(hosp, ["labevents.csv.gz", "labevents.csv"], "MIMIC-IV hosp/labevents")
    labs = read_table(lab_path, usecols=["subject_id", "itemid", "charttime", "valuenum"])
    labs = labs[labs["itemid"].isin(list(items))].dropna(subset=["valuenum"])
    labs["charttime"] = pd.to_datetime(labs["charttime"])
    table = table.copy()
    table["study_time"] = _study_time(table)
    order = table.sort_values("study_time").index
    for itemid, name in items.items():
        one = labs[labs["itemid"] == itemid][["subject_id", "charttime", "valuenum"]].sort_values("charttime")
        joined = pd.merge_asof(
            table.loc[order, ["subject_id", "study_time"]],
            one.rename(columns={"valuenum": name}),
            left_on="study_time",
            right_on="charttime",
            by="subject_id",
            direction="backward",  # the last value before the image, never one after it
            tolerance=pd.Timedelta(hours=window_hours),
        )
        table.loc[order, name] = joined[name].to_numpy()
    patients_path = find_file(hosp, ["patients.csv.gz", "patients.csv"], "MIMIC-IV hosp/patients")
    patients = read_table(patients_path, usecols=["subject_id", "gender", "anchor_age"])
    patients["sex"] = patients["gender"].map({"M": 0.0, "F": 1.0})
    table = table.merge(patients[["subject_id", "anchor_age", "sex"]], on="subject_id", how="left")
    table["study_time"] = table["study_time"].astype(str)
    return table, {"labs": list(items.values()), "demographics": ["anchor_age", "sex"]}


# ---------------------------------------------------------------------------------- CheXpert
@register("chexpert")
def prepare_chexpert(
    root: Path,
    out: Path,
    frontal_only: bool = True,
    uncertain: Uncertain = "zeros",
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: Sequence[int] = (224, 224),
    table_format: str = "parquet",
) -> Path:
    """Prepare CheXpert (images + demographics).

    Split ``official``: ``valid.csv`` (radiologist-labelled) is the test partition; ``train.csv``
    is split patient-wise into train/val (the official test set is not public).

    Args:
        root: the folder holding ``train.csv`` and ``valid.csv``.
        out: output folder.
        frontal_only: keep frontal views only.
        uncertain: policy for uncertain labels (see `label_matrix()`).
        val_fraction: share of training patients used for validation.
        seed: seed of that patient split.
        image_size: output image size.
        table_format: ``parquet`` or ``csv``.
    """
    root = Path(root)
    parts = []
    for name, part in (("train.csv", "train"), ("valid.csv", "test")):
        path = find_file(root, [name], f"CheXpert {name}")
        t = read_table(path)
        require_columns(t, ["Path", "Sex", "Age", "Frontal/Lateral", *CHEXPERT_LABELS], path)
        parts.append(t.assign(part=part))
    table = pd.concat(parts, ignore_index=True)
    if frontal_only:
        table = table[table["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
    table[list(CHEXPERT_LABELS)] = label_matrix(table, uncertain)
    # Path starts with the archive folder ("CheXpert-v1.0-small/train/..."): make it relative to root
    table["image_path"] = (
        table["Path"].astype(str).map(lambda p: p.split("/", 1)[1] if p.split("/", 1)[0].startswith("CheXpert") else p)
    )
    patient = table["image_path"].str.extract(r"(patient\d+)", expand=False)
    if patient.isna().any():
        raise ReadError(
            f"cannot find 'patientNNNNN' in Path values such as {table['Path'][patient.isna()].iloc[0]!r}", path=root
        )
    table = _with_existing(table, root, "image_path")
    table["id"], table["group"] = table["Path"].astype(str), patient
    table["sex"] = table["Sex"].map({"Male": 0.0, "Female": 1.0})  # "Unknown" -> missing
    table["age"] = pd.to_numeric(table["Age"], errors="coerce")
    test = np.flatnonzero(table["part"] == "test")
    train_rows = np.flatnonzero(table["part"] == "train")
    inner = group_split(table["group"].to_numpy()[train_rows], val_fraction, 0.0, seed)
    official = {"train": train_rows[inner["train"]], "val": train_rows[inner["val"]], "test": test}
    return write_manifest(
        table.drop(columns=["part"]),
        out,
        name="chexpert",
        modalities={
            "image": _image_spec("jpg", image_size),
            "demographics": ModalitySpec("columns", ["age", "sex"], categorical=["sex"]),
        },
        targets={"findings": TargetSpec("multilabel", list(CHEXPERT_LABELS))},
        splits={"official": official},
        root=root,
        excluded_columns={
            "AP/PA": "acquisition detail correlated with patient acuity (a shortcut), kept out of features"
        },
        table_format=table_format,  # type: ignore[arg-type]
        info={"uncertain": uncertain, "seed": seed},
    )
