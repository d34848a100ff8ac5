"""TCGA-style omics + clinical survival tables (any cohort exported from GDC / UCSC Xena).

Reads three tables under ``root`` (names configurable)::

    expression.tsv   genes x samples (first column: gene id; columns: TCGA sample barcodes
                     such as TCGA-A1-A0SB-01A-11R-A144-07), or samples x genes
    mutations.maf    MAF rows: Hugo_Symbol, Tumor_Sample_Barcode, Variant_Classification
                     ('#' comment lines allowed; .maf.gz works)
    clinical.tsv     GDC clinical: case_submitter_id, vital_status, days_to_death,
                     days_to_last_follow_up, age_at_index, gender ("'--" = missing)

One sample per patient (the first 12 barcode characters): the primary tumour (sample type
01), first barcode in sorted order when several aliquots exist. Modalities ``expression``,
``mutations`` (a patient absent from the MAF is *missing*, not "no mutation") and
``clinical``; target ``survival`` = (time, event). Splits: ``patient`` (random, grouped) and
``site`` (tissue source site held out, for batch-effect-honest evaluation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from modfuse.data.readers.tabular import read_table
from modfuse.data.splits import group_split
from modfuse.datasets.collections._common import find_file, require_columns
from modfuse.datasets.manifest import ModalitySpec, TargetSpec, write_manifest
from modfuse.datasets.preparation import register
from modfuse.errors import ReadError

__all__ = ["prepare_tcga"]

MISSING = ["--", "'--", "not reported", "Not Reported", "NA", ""]


def patient_of(barcode: str) -> str:
    """``TCGA-XX-XXXX`` from any TCGA sample/aliquot barcode."""
    return "-".join(str(barcode).split("-")[:3])


def sample_type(barcode: str) -> int | None:
    """The two-digit sample type (01 primary tumour, 11 normal tissue), or None."""
    parts = str(barcode).split("-")
    return int(parts[3][:2]) if len(parts) > 3 and parts[3][:2].isdigit() else None


@register("tcga")
def prepare_tcga(
    root: Path,
    out: Path,
    expression: str = "expression.tsv",
    mutations: str = "mutations.maf",
    clinical: str = "clinical.tsv",
    top_genes: int = 2000,
    min_mutated: int = 2,
    log_transform: bool = True,
    intervals: int = 4,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    seed: int = 0,
    table_format: str = "parquet",
) -> Path:
    """Prepare a TCGA cohort for survival prediction.

    Args:
        root: folder holding the tables.
        out: output folder.
        expression, mutations, clinical: file names under ``root`` (the MAF is optional).
        top_genes: keep the most variable genes (variance is label-free, so this selection
            does not leak the outcome).
        min_mutated: keep genes mutated in at least this many patients.
        log_transform: apply log2(x + 1) to expression (counts/TPM are heavy-tailed).
        intervals: discrete-time survival intervals; boundaries are quantiles of the event
            times of the training partition only.
        val_fraction, test_fraction, seed: the patient split.
        table_format: ``parquet`` or ``csv``.
    """
    root = Path(root)
    clin = _clinical(find_file(root, [clinical], "the clinical table"))
    expr = _expression(find_file(root, [expression], "the expression matrix"), top_genes, log_transform)
    maf_path = root / mutations if (root / mutations).is_file() else None
    muts = _mutations(maf_path, min_mutated) if maf_path is not None else None
    table = clin.join(expr, how="left")
    if muts is not None:
        table = table.join(muts, how="left")
    table = table.reset_index().rename(columns={"index": "id"})
    table["group"] = table["id"]
    table["site"] = table["id"].str.split("-").str[1]
    patient = group_split(table["group"], val_fraction, test_fraction, seed)
    site = group_split(table["site"], val_fraction, test_fraction, seed)
    boundaries = _boundaries(table, patient["train"], intervals)
    modalities = {
        "expression": ModalitySpec(
            "columns", list(expr.columns), description="log2(x+1) expression, top-variance genes"
        ),
        "clinical": ModalitySpec("columns", ["age", "sex"], categorical=["sex"]),
    }
    if muts is not None:
        modalities["mutations"] = ModalitySpec("columns", list(muts.columns), description="1 = non-silent mutation")
    return write_manifest(
        table,
        out,
        name="tcga",
        modalities=modalities,
        targets={"survival": TargetSpec("survival", ["time", "event"], boundaries=boundaries)},
        splits={"patient": patient, "site": site},
        root=root,
        excluded_columns={
            "days_to_death": "folded into (time, event)",
            "vital_status": "folded into (time, event)",
            "ajcc_pathologic_stage": "recorded after surgery; kept out of the default features",
        },
        table_format=table_format,  # type: ignore[arg-type]
        info={"top_genes": top_genes, "min_mutated": min_mutated, "log_transform": log_transform},
    )


def _clinical(path: Path) -> pd.DataFrame:
    clin = read_table(path, na_values=MISSING, keep_default_na=True)
    require_columns(clin, ["case_submitter_id", "vital_status", "days_to_death", "days_to_last_follow_up"], path)
    clin = clin.drop_duplicates("case_submitter_id")  # GDC repeats a case once per treatment row
    dead = clin["vital_status"].astype(str).str.lower().eq("dead")
    death = pd.to_numeric(clin["days_to_death"], errors="coerce")
    follow = pd.to_numeric(clin["days_to_last_follow_up"], errors="coerce")
    out = pd.DataFrame(
        {
            "time": np.where(dead, death, follow),
            "event": dead.astype(np.float32).to_numpy(),
            "age": pd.to_numeric(clin.get("age_at_index"), errors="coerce"),
            "sex": clin.get("gender", pd.Series(index=clin.index, dtype=object)).map({"male": 0.0, "female": 1.0}),
        }
    )
    out.index = clin["case_submitter_id"].astype(str).to_numpy()
    # a patient without a usable time cannot be a survival sample (pitfall: negative follow-up)
    return out[np.isfinite(out["time"]) & (out["time"] >= 0)].astype({"time": np.float32})


def _expression(path: Path, top_genes: int, log_transform: bool) -> pd.DataFrame:
    matrix = read_table(path, index_col=0)
    if not any(str(c).startswith("TCGA-") for c in matrix.columns):
        matrix = matrix.T  # samples were rows
    barcodes = [c for c in matrix.columns if sample_type(c) == 1]
    if not barcodes:
        raise ReadError("expected TCGA primary-tumour barcodes (sample type 01) as samples, found none", path=path)
    matrix = matrix[sorted(barcodes)].apply(pd.to_numeric, errors="coerce")
    values = matrix.T
    values = values[~pd.Index([patient_of(b) for b in values.index]).duplicated()]  # first aliquot per patient
    values.index = [patient_of(b) for b in values.index]
    if log_transform:
        if (values < 0).any().any():
            raise ReadError("log_transform needs non-negative expression values, found negatives", path=path)
        values = np.log2(values + 1.0)
    keep = values.var(axis=0).sort_values(ascending=False).index[:top_genes]
    return values[keep].add_prefix("expr:").astype(np.float32)


def _mutations(path: Path, min_mutated: int) -> pd.DataFrame:
    maf = read_table(path, sep="\t", comment="#")
    require_columns(maf, ["Hugo_Symbol", "Tumor_Sample_Barcode", "Variant_Classification"], path)
    maf = maf[maf["Tumor_Sample_Barcode"].map(sample_type) == 1]
    sequenced = sorted({patient_of(b) for b in maf["Tumor_Sample_Barcode"]})
    hits = maf[maf["Variant_Classification"] != "Silent"]
    hits = hits.assign(patient=hits["Tumor_Sample_Barcode"].map(patient_of))
    counts = hits.groupby("Hugo_Symbol")["patient"].nunique()
    genes = sorted(counts.index[counts >= min_mutated])
    matrix = pd.DataFrame(0.0, index=sequenced, columns=genes, dtype=np.float32)
    for gene, pat in hits.loc[hits["Hugo_Symbol"].isin(genes), ["Hugo_Symbol", "patient"]].itertuples(index=False):
        matrix.loc[pat, gene] = 1.0
    return matrix.add_prefix("mut:")


def _boundaries(table: pd.DataFrame, train_rows: np.ndarray, intervals: int) -> list[float]:
    train = table.iloc[train_rows]
    times = train.loc[train["event"] == 1, "time"].to_numpy()
    if len(times) < intervals:
        times = train["time"].to_numpy()
    qs = np.unique(np.quantile(times, np.linspace(0, 1, intervals + 1)[1:-1]))
    return [float(q) for q in qs if q > 0]
