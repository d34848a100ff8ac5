"""PTB-XL: 12-lead ECGs (WFDB) + patient metadata + SCP-ECG diagnostic statements.

Reads the layout PhysioNet ships::

    root/ptbxl_database.csv        one row per ECG: ecg_id, patient_id, age, sex, height,
                                   weight, ..., scp_codes ("{'NORM': 100.0, ...}"), strat_fold,
                                   filename_lr (records100/...), filename_hr (records500/...)
    root/scp_statements.csv        SCP code (first column) -> diagnostic, diagnostic_class, ...
    root/records100/00000/00001_lr.{hea,dat}   (100 Hz)   root/records500/...  (500 Hz)

Modalities: ``ecg`` (the WFDB record), ``demographics`` (age, sex, height, weight). Labels:
the five diagnostic superclasses (NORM, MI, STTC, CD, HYP), multi-label. Split ``official``:
the provider's patient-wise ``strat_fold`` 1-8 train, 9 val, 10 test (all ECGs of a patient
share a fold; the group column is ``patient_id`` and leakage is checked).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from modfuse.data.readers.tabular import read_table
from modfuse.data.splits import fold_split
from modfuse.datasets.collections._common import find_file, require_columns
from modfuse.datasets.manifest import ModalitySpec, TargetSpec, write_manifest
from modfuse.datasets.preparation import register
from modfuse.errors import ReadError

__all__ = ["SUPERCLASSES", "prepare_ptbxl"]

SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
DATABASE_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "height", "weight", "scp_codes", "strat_fold")
# PTB-XL sets the age of patients older than 89 to 300 (HIPAA); 90 keeps them in the oldest band
AGE_CAP_CODE, AGE_CAP = 300, 90.0


@register("ptbxl")
def prepare_ptbxl(
    root: Path,
    out: Path,
    sampling_rate: Literal[100, 500] = 100,
    drop_unlabeled: bool = True,
    min_likelihood: float = 0.0,
    table_format: str = "parquet",
) -> Path:
    """Prepare PTB-XL.

    Args:
        root: the unpacked PTB-XL folder (holding ``ptbxl_database.csv``).
        out: output folder.
        sampling_rate: 100 (``records100``, ``filename_lr``) or 500 (``records500``).
        drop_unlabeled: drop ECGs with no diagnostic superclass (as the benchmark does).
        min_likelihood: ignore SCP statements whose likelihood is below this (0 keeps all,
            as the PTB-XL benchmark does; note some statements have likelihood 0).
        table_format: ``parquet`` or ``csv``.
    """
    root = Path(root)
    if sampling_rate not in (100, 500):
        raise ReadError(f"sampling_rate must be 100 or 500, found {sampling_rate}", path=root)
    db_path = find_file(root, ["ptbxl_database.csv"], "the PTB-XL database table")
    scp_path = find_file(root, ["scp_statements.csv"], "the SCP statement table")
    db = read_table(db_path)
    file_col = "filename_lr" if sampling_rate == 100 else "filename_hr"
    require_columns(db, [*DATABASE_COLUMNS, file_col], db_path)
    scp = read_table(scp_path, index_col=0)
    require_columns(scp, ["diagnostic", "diagnostic_class"], scp_path)
    table = _table(db, scp, db_path, file_col, root, min_likelihood)
    if drop_unlabeled:
        table = table[table[list(SUPERCLASSES)].sum(axis=1) > 0].reset_index(drop=True)
    splits = {"official": fold_split(table["strat_fold"].to_numpy(), val_folds=[9], test_folds=[10])}
    return write_manifest(
        table,
        out,
        name="ptbxl",
        modalities={
            "ecg": ModalitySpec("path", ["ecg_path"], reader="wfdb", description=f"12-lead ECG, {sampling_rate} Hz"),
            "demographics": ModalitySpec(
                "columns",
                ["age", "sex", "height", "weight"],
                description="age (y), sex (0 male, 1 female), cm, kg",
                categorical=["sex"],
            ),
        },
        targets={"superclass": TargetSpec("multilabel", list(SUPERCLASSES))},
        splits=splits,
        group_column="patient_id",
        root=root,
        excluded_columns={
            "report": "free-text report written from the ECG: it states the diagnosis",
            "scp_codes": "the labels themselves",
            "infarction_stadium1": "derived from the diagnosis",
            "infarction_stadium2": "derived from the diagnosis",
        },
        table_format=table_format,  # type: ignore[arg-type]
        info={"sampling_rate": sampling_rate, "drop_unlabeled": drop_unlabeled, "min_likelihood": min_likelihood},
    )


def _superclasses(codes: dict[str, float], diagnostic: pd.Series, min_likelihood: float) -> set[str]:
    return {
        diagnostic[c]
        for c, likelihood in codes.items()
        if c in diagnostic.index and float(likelihood) >= min_likelihood
    }


def _table(
    db: pd.DataFrame, scp: pd.DataFrame, db_path: Path, file_col: str, root: Path, min_likelihood: float
) -> pd.DataFrame:
    diagnostic = scp.loc[scp["diagnostic"] == 1, "diagnostic_class"].dropna()
    rows = []
    for rec in db.itertuples(index=False):
        try:
            codes = ast.literal_eval(rec.scp_codes)  # a Python dict literal, not JSON
        except (ValueError, SyntaxError) as exc:
            raise ReadError(
                f"ecg_id {rec.ecg_id}: scp_codes is not a dict literal: {rec.scp_codes!r}", path=db_path
            ) from exc
        rows.append(_superclasses(codes, diagnostic, min_likelihood))
    table = pd.DataFrame(
        {
            "id": db["ecg_id"].astype(int).astype(str),
            "patient_id": db["patient_id"].astype(float).astype(int).astype(str),
            "age": pd.to_numeric(db["age"], errors="coerce").replace(AGE_CAP_CODE, AGE_CAP),
            "sex": pd.to_numeric(db["sex"], errors="coerce"),
            "height": pd.to_numeric(db["height"], errors="coerce"),
            "weight": pd.to_numeric(db["weight"], errors="coerce"),
            "strat_fold": db["strat_fold"].astype(int),
        }
    )
    for c in SUPERCLASSES:
        table[c] = np.array([c in r for r in rows], dtype=np.float32)
    # a record whose header is absent (partial download) is an explicitly missing ECG
    paths = db[file_col].astype(str)
    exists = np.array([(root / f"{p}.hea").is_file() for p in paths])
    table["ecg_path"] = np.where(exists, paths, None)
    return table
