"""Trust (issue 16): no code runs from a data file, and no bad input silently becomes data.

One test per case, named after it. The readers' cases (WFDB, rasters, DICOM, BatchNorm, the
read-error report) are in tests/test_trust_readers.py.
"""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from modfuse import MultiModalDataset
from modfuse.cli import main
from modfuse.core.tasks import TaskSpec
from modfuse.data import MultiModalDataModule
from modfuse.data.readers import TabularSchema, TabularSource
from modfuse.data.sources import ArraySource
from modfuse.datasets.manifest import ManifestDataModule, ModalitySpec, TargetSpec, read_manifest, write_manifest
from modfuse.datasets.synthetic import synthetic_cohort
from modfuse.encoders import build as build_encoder
from modfuse.errors import ModfuseError, ReadError
from modfuse.estimators import FusionClassifier
from modfuse.fusion import EarlyFusion
from modfuse.lego import LegoBlock, save
from modfuse.training.task import FusionTask

QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml")
IMAGE_READER = "modfuse.datasets.collections._readers.ImageSource"


# ---------------------------------------------------------------------------- manifests
def image_manifest(tmp_path: Path, paths: list[str] | None = None) -> Path:
    """A 4-sample manifest with one image modality (modfuse's own ImageSource) and a label."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, dtype=np.uint8)).save(root / "img" / f"s{i}.png")
    table = pd.DataFrame(
        {
            "id": [f"s{i}" for i in range(4)],
            "group": [f"g{i}" for i in range(4)],
            "image_path": paths or [f"img/s{i}.png" for i in range(4)],
            "label": [0, 1, 0, 1],
        }
    )
    return write_manifest(
        table,
        tmp_path / "prepared",
        name="toy",
        modalities={"image": ModalitySpec("path", ["image_path"], reader=IMAGE_READER)},
        targets={"label": TargetSpec("binary", ["label"])},
        splits={"fixed": {"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([3])}},
        root=root,
    )


def edit_manifest(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_manifest_reader_given_as_dotted_path_is_refused_before_anything_is_imported(tmp_path: Path) -> None:
    # a module that leaves a marker when imported: the manifest names it as its reader
    (tmp_path / "evil_reader_mod.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\ndef run(*a, **k):\n    open({str(tmp_path / 'ran')!r}, 'w')\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        for reader in ("evil_reader_mod.run", "subprocess.getstatusoutput"):
            path = image_manifest(tmp_path / reader)
            edit_manifest(path, lambda d, r=reader: d["modalities"]["image"].update(reader=r))
            with pytest.raises(ModfuseError, match=r"modalities\.image\.reader") as err:
                ManifestDataModule(path.parent).setup()
            assert "never code" in str(err.value) and reader in str(err.value)
    finally:
        sys.path.remove(str(tmp_path))
    assert "evil_reader_mod" not in sys.modules
    assert not (tmp_path / "imported").exists() and not (tmp_path / "ran").exists()


def test_manifest_writer_refuses_a_reader_that_is_not_a_reader_name(tmp_path: Path) -> None:
    table = pd.DataFrame({"id": ["a", "b"], "smiles": ["C", "CC"], "y": [0, 1]})
    with pytest.raises(ModfuseError, match=r"modalities\.mol\.reader"):
        write_manifest(
            table,
            tmp_path / "out",
            name="x",
            modalities={"mol": ModalitySpec("value", ["smiles"], reader="os.system")},
            targets={"y": TargetSpec("binary", ["y"])},
            splits={"s": {"train": np.array([0]), "val": np.array([], int), "test": np.array([1])}},
            group_column=None,
        )
    assert not (tmp_path / "out").exists()


def _toy_manifest_args() -> dict:
    table = pd.DataFrame({"id": ["a", "b", "c"], "x": [1.0, 2.0, np.nan], "smiles": ["C", "CC", "CCC"], "y": [0, 1, 0]})
    return dict(
        table=table,
        name="toy",
        modalities={"x": ModalitySpec("columns", ["x"]), "mol": ModalitySpec("value", ["smiles"], reader="smiles")},
        targets={"y": TargetSpec("binary", ["y"])},
        splits={"s": {"train": np.array([0, 1]), "val": np.array([], int), "test": np.array([2])}},
        group_column=None,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": ""}, "name"),
        ({"table_format": "xlsx"}, "table_format"),
        ({"ungrouped_splits": "s"}, "ungrouped_splits"),
        ({"default_split": "other"}, "default split"),
        ({"splits": {"s": {"train": np.array([0]), "holdout": np.array([1])}}}, "partitions"),
        ({"splits": {"s": {"train": np.array([0, 7])}}}, "outside"),
        ({"modalities": {"mol": {"kind": "value", "columns": ["smiles"], "readr": "smiles"}}}, "modalities.mol"),
        ({"targets": {"y": TargetSpec("binary", ["nope"])}}, "lacks columns"),
        ({"excluded_columns": {"x": "leaks the label"}}, "excluded_columns"),
        ({"info": {"when": object()}}, "JSON"),
        ({"extra": "mixed"}, "cannot be written as parquet"),
    ],
)
def test_manifest_writer_checks_every_argument_before_writing_anything(
    tmp_path: Path, change: dict, message: str
) -> None:
    """A bad argument raises and leaves no folder or file: not the output, not its parents."""
    kwargs = _toy_manifest_args()
    if change.pop("extra", None):  # a column pyarrow cannot store (numbers and strings mixed)
        kwargs["table"] = kwargs["table"].assign(note=[1, "two", 3.0])
    kwargs.update(change)
    out = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(ModfuseError, match=message):
        write_manifest(out=out, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_manifest_writer_removes_the_folder_it_made_when_a_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modfuse.datasets import manifest as manifest_module

    real, calls = manifest_module._atomic, []

    def failing(path: Path, write) -> None:  # the split file is written, then the disk is "full"
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, write)

    monkeypatch.setattr(manifest_module, "_atomic", failing)
    with pytest.raises(OSError, match="No space"):
        write_manifest(out=tmp_path / "new" / "out", **_toy_manifest_args())
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    path = write_manifest(out=tmp_path / "new" / "out", **_toy_manifest_args())  # the same call succeeds
    assert read_manifest(path).ids == ["a", "b", "c"]


def test_manifest_own_reader_class_still_loads(tmp_path: Path) -> None:
    ds = read_manifest(image_manifest(tmp_path)).to_dataset()
    assert ds[1]["inputs"]["image"].shape == (1, 8, 8)
    assert float(ds[1]["inputs"]["image"].max()) == pytest.approx(40 / 255)


@pytest.mark.parametrize("cell", ["../../etc/passwd", "/etc/passwd", "img/../../outside.png"])
def test_manifest_sample_path_outside_the_data_root_is_refused(tmp_path: Path, cell: str) -> None:
    secret = tmp_path / "outside.png"
    secret.write_text("SECRET-CONTENT-123")
    path = image_manifest(tmp_path, paths=["img/s0.png", cell, "img/s2.png", "img/s3.png"])
    with pytest.raises(ReadError) as err:
        read_manifest(path).to_dataset()
    message = str(err.value)
    assert "modalities.image" in message and "'s1'" in message and "outside the data root" in message
    assert "SECRET-CONTENT-123" not in message


def test_manifest_symlink_leading_out_of_the_data_root_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(secret)
    path = image_manifest(tmp_path)
    (tmp_path / "data" / "img" / "s2.png").unlink()
    (tmp_path / "data" / "img" / "s2.png").symlink_to(secret)
    with pytest.raises(ReadError, match=r"sample 's2'.*outside the data root"):
        read_manifest(path).to_dataset()


def test_manifest_record_whose_suffixed_file_is_a_symlink_out_is_refused(tmp_path: Path) -> None:
    # WFDB records are named without suffix: img/rec names img/rec.hea and img/rec.dat
    path = image_manifest(tmp_path, paths=["img/s0.png", "img/rec", "img/s2.png", "img/s3.png"])
    (tmp_path / "passwd").write_text("root:x:0:0")
    (tmp_path / "data" / "img" / "rec.hea").symlink_to(tmp_path / "passwd")
    with pytest.raises(ReadError, match=r"sample 's1'.*'img/rec'"):
        read_manifest(path).to_dataset()


def test_manifest_split_file_outside_the_manifest_folder_is_refused(tmp_path: Path) -> None:
    path = image_manifest(tmp_path)
    (tmp_path / "stolen.csv").write_text("id,split\ns0,train\n")
    edit_manifest(path, lambda d: d["splits"]["fixed"].update(file="../stolen.csv"))
    with pytest.raises(ReadError, match=r"splits\.fixed\.file.*outside the manifest's folder"):
        read_manifest(path).split()


def test_manifest_table_outside_the_manifest_folder_is_refused(tmp_path: Path) -> None:
    path = image_manifest(tmp_path)
    (tmp_path / "secret.csv").write_text("SECRET-CONTENT-123\n")
    edit_manifest(path, lambda d: d.update(table=str(tmp_path / "secret.csv")))
    with pytest.raises(ReadError, match=r"field table.*outside the manifest's folder") as err:
        read_manifest(path)
    assert "SECRET-CONTENT-123" not in str(err.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"table_format": "xlsx"},
        {"ungrouped_splits": ["nope"]},
        # the group g0 in train and test: refused when its split is checked
        {"splits": {"ok": {"train": np.array([0]), "test": np.array([1])}, "leaky": {"train": [0], "test": [2]}}},
        {"splits": {"s": {"train": np.array([0, 7])}}},
    ],
    ids=["table_format", "ungrouped_splits", "leaking_split", "index_out_of_range"],
)
def test_manifest_writer_bad_argument_leaves_no_half_written_folder(tmp_path: Path, bad: dict) -> None:
    table = pd.DataFrame({"id": ["a", "b", "c"], "group": ["g0", "g1", "g0"], "f": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    kwargs = {
        "name": "x",
        "modalities": {"t": ModalitySpec("columns", ["f"])},
        "targets": {"y": TargetSpec("binary", ["y"])},
        "splits": {"s": {"train": np.array([0, 2]), "test": np.array([1])}},
        **bad,
    }
    with pytest.raises(ModfuseError):
        write_manifest(table, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- checkpoints
class Payload:
    """Unpickling this opens (creates) the marker file: what an attacker's code would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil_ckpt(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "pytorch-lightning_version": "2.6.0", "x": Payload(marker)}, path)
    # the payload is live: a plain unpickling runs it
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def tiny_quickstart(root: Path) -> list[str]:
    return [
        "--config",
        QUICKSTART,
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "false",
        "--data.init_args.n",
        "24",
        "--trainer.default_root_dir",
        str(root),
        "--compare",
        "[]",
    ]


def assert_clear_cli_error(code: int, capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_pickle_payload_checkpoint_never_runs_in_any_loader(
    evil_ckpt: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modfuse.encoders.weights import read_state_dict
    from modfuse.lego.io import load_any, load_checkpoint

    path, marker = evil_ckpt
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    # torch-level helpers and Lego block loading
    for loader in (read_state_dict, load_checkpoint, load_any):
        with pytest.raises(ReadError, match=r"evil\.ckpt"):
            loader(path)
        assert not marker.exists(), loader
    with pytest.raises((pickle.UnpicklingError, ModfuseError)):
        FusionTask.load_from_checkpoint(path)
    assert not marker.exists()
    # every command that reads a checkpoint
    root = tmp_path / "run"
    for command in ("fit", "test", "validate", "predict", "explain", "robustness"):
        code = main([command, *tiny_quickstart(root), "--ckpt_path", str(path)])
        assert_clear_cli_error(code, capsys, "evil.ckpt", "weights_only=True")
        assert not marker.exists(), command
    code = main(["merge", str(path), str(path), "-o", str(tmp_path / "merged.safetensors")])
    assert_clear_cli_error(code, capsys, "evil.ckpt")
    assert not marker.exists() and not (tmp_path / "merged.safetensors").exists()


def test_truncated_checkpoint_is_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.randn(20000)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    monkeypatch.setenv("MODFUSE_CACHE", str(tmp_path / "cache"))
    for command in ("test", "fit"):
        code = main([command, *tiny_quickstart(tmp_path / "run"), "--ckpt_path", str(path)])
        assert_clear_cli_error(code, capsys, "not a readable checkpoint", "cut.ckpt")


def test_merge_output_pointing_at_a_folder_is_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    enc = {"name": "tabular", "num_features": 3, "hidden": [8], "out_dim": 4, "dropout": 0.0}
    blocks = [save(LegoBlock(enc, m, latent_shape=(4, 8), heads=2), tmp_path / f"{m}.safetensors") for m in "ab"]
    (tmp_path / "out").mkdir()
    code = main(["merge", *map(str, blocks), "-o", str(tmp_path / "out")])
    assert_clear_cli_error(code, capsys, "is a folder", "-o")


def test_estimator_with_too_few_samples_to_split_is_a_message() -> None:
    X = {"labs": np.random.default_rng(0).normal(size=(5, 3))}
    with pytest.raises(ModfuseError, match=r"5 samples are too few.*val_fraction=0"):
        FusionClassifier(max_epochs=1).fit(X, np.array([0, 1, 0, 1, 0]))


# ---------------------------------------------------------------------------- silent wrong data
def two_frames(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(n)]
    labs = pd.DataFrame(rng.normal(size=(n, 3)), index=ids, columns=["a", "b", "c"])
    worst = pd.DataFrame(rng.normal(size=(n, 2)), index=ids, columns=["d", "e"])
    y = (labs["a"] + worst["d"] > 0).astype(int).to_numpy()
    return labs, worst, y


def test_estimator_dataframes_with_different_ids_are_refused() -> None:
    labs, worst, y = two_frames()
    other = worst.rename(index={"p001": "q001"})
    with pytest.raises(ModfuseError, match=r"indexed by different samples.*'p001'.*'q001'"):
        FusionClassifier(max_epochs=1).fit({"labs": labs, "worst": other}, y)


def test_estimator_shuffled_dataframe_is_aligned_by_index() -> None:
    labs, worst, y = two_frames()
    shuffled = worst.sample(frac=1.0, random_state=1)
    assert not shuffled.index.equals(worst.index)
    kwargs = {"max_epochs": 3, "val_fraction": 0.0, "batch_size": 16}
    aligned = FusionClassifier(**kwargs).fit({"labs": labs, "worst": worst}, y)
    mixed = FusionClassifier(**kwargs).fit({"labs": labs, "worst": shuffled}, y)
    X = {"labs": labs, "worst": worst}
    np.testing.assert_allclose(mixed.predict_proba(X), aligned.predict_proba(X), atol=1e-6)
    # prediction aligns too: the shuffled frame gives the same rows, in the first frame's order
    np.testing.assert_allclose(
        aligned.predict_proba({"labs": labs, "worst": shuffled}), aligned.predict_proba(X), atol=1e-6
    )


def test_present_matrix_reports_file_backed_modalities_truly(tmp_path: Path) -> None:
    cohort = synthetic_cohort(60, seed=3, root=tmp_path)
    truth = cohort.table.set_index("id")[["has_xray", "has_ecg", "has_labs"]].astype(bool)
    for in_memory in (False, True):
        present = cohort.dataset(in_memory=in_memory).present_matrix()
        for m in ("xray", "ecg", "labs"):
            assert present[m].tolist() == truth[f"has_{m}"].tolist(), m
    assert present["xray"].mean() < 1.0 and present["ecg"].mean() < 1.0


def test_nan_labels_are_refused_by_the_classifier() -> None:
    labs, _, _ = two_frames()
    y = pd.Series(np.where(np.arange(40) % 2, 1.0, 0.0), index=labs.index)
    y.iloc[[3, 7]] = np.nan
    with pytest.raises(ModfuseError, match=r"2 missing labels.*\['p003', 'p007'\]"):
        FusionClassifier(max_epochs=1).fit({"labs": labs}, y)


def multilabel_manifest(tmp_path: Path, labels: list[list[float]]) -> Path:
    n = len(labels)
    table = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "f": np.arange(n, dtype=float)})
    table[["l0", "l1"]] = np.asarray(labels, dtype=float)
    return write_manifest(
        table,
        tmp_path / "ml",
        name="ml",
        modalities={"t": ModalitySpec("columns", ["f"])},
        targets={"findings": TargetSpec("multilabel", ["l0", "l1"])},
        splits={"s": {"train": np.arange(n)}},
        group_column=None,
    )


def test_multilabel_values_outside_0_1_are_refused_naming_the_task(tmp_path: Path) -> None:
    path = multilabel_manifest(tmp_path, [[0, 1], [1, 0], [2, 0], [0, 1]])
    with pytest.raises(ModfuseError, match=r"task 'findings' \(multilabel\).*found 2\.0.*sample s2"):
        read_manifest(path).to_dataset()
    with pytest.raises(ModfuseError, match=r"task 'findings'.*nan"):
        read_manifest(multilabel_manifest(tmp_path / "b", [[0, 1], [np.nan, 0]])).to_dataset()


def fit_survival(y: np.ndarray) -> None:
    X = np.random.default_rng(0).normal(size=(len(y), 3)).astype(np.float32)
    ds = MultiModalDataset.from_arrays({"t": X}, y={"surv": y}, ids=[f"s{i}" for i in range(len(y))])
    spec = TaskSpec("survival", 2, (1.0,))
    model = EarlyFusion({"t": build_encoder("tabular", num_features=3, hidden=(8,), out_dim=4)}, tasks={"surv": spec})
    dm = MultiModalDataModule(ds, splits={"train": np.arange(len(y)), "val": np.arange(len(y))}, batch_size=4)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(FusionTask(model), datamodule=dm)


def test_survival_nan_times_and_bad_event_codes_are_refused_naming_the_task() -> None:
    good = np.array([[0.5, 1], [1.5, 0], [2.0, 1], [0.2, 0], [3.0, 1], [1.1, 1]], dtype=np.float32)
    fit_survival(good)  # trains
    nan_time = good.copy()
    nan_time[4, 0] = np.nan
    with pytest.raises(ModfuseError, match=r"task 'surv' \(survival\).*finite times.*sample s4"):
        fit_survival(nan_time)
    bad_event = good.copy()
    bad_event[2, 1] = 2
    with pytest.raises(ModfuseError, match=r"task 'surv' \(survival\).*event codes.*sample s2"):
        fit_survival(bad_event)


def test_duplicate_ids_are_refused() -> None:
    src = ArraySource(np.ones((3, 2)), ids=["a", "b", "c"])
    with pytest.raises(ModfuseError, match=r"repeats 1 sample ids, e\.g\. \['a'\]"):
        MultiModalDataset({"x": src}, ids=["a", "b", "a", "c"])


def test_explicit_ids_leaving_out_source_ids_warn_with_count_and_ids() -> None:
    src = ArraySource(np.ones((4, 2)), ids=["a", "b", "c", "d"])
    with pytest.warns(UserWarning, match=r"leaves out 2 sample ids that the 'x' source has, e\.g\. \['b', 'd'\]"):
        ds = MultiModalDataset({"x": src}, ids=["a", "c"])
    assert ds.ids == ["a", "c"]


def test_csv_row_with_a_missing_field_is_reported_not_nan(tmp_path: Path) -> None:
    path = tmp_path / "labs.csv"
    path.write_text("id,age,crp,troponin\np1,60,1.5,12\np2,70,,9\np3,55,2.0\np4,\n")
    src = TabularSource(path, TabularSchema(["age", "crp", "troponin"], id="id"))
    assert torch.isnan(src.load("p2")[1])  # an empty field is a missing value
    with pytest.raises(ReadError, match=r"row 3 has 3 fields, the header has 4 \(no field for \['troponin'\]\)"):
        src.load("p3")
    with pytest.raises(ReadError, match=r"row 4 has 2 fields"):
        src.load("p4")
    ds = MultiModalDataset({"labs": src}, on_error="missing")
    items = [ds[i] for i in range(4)]
    assert items[2]["inputs"]["labs"] is None and items[0]["inputs"]["labs"] is not None
    assert {e["id"] for e in ds.read_errors} == {"p3", "p4"}


def test_interrupted_cohort_generation_is_cleaned_and_written_again(tmp_path: Path) -> None:
    first = synthetic_cohort(24, seed=5, root=tmp_path)
    expected = first.table.copy()
    # a generation killed mid-way (its process is gone) and a folder whose cohort.csv is missing
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace(".", "-")
    leftover = first.root.parent / f".{first.root.name}.{host}-{dead.pid}.0123abcd.partial"
    (leftover / "xray").mkdir(parents=True)
    (first.root / "cohort.csv").unlink()
    again = synthetic_cohort(24, seed=5, root=tmp_path)
    pd.testing.assert_frame_equal(again.table, expected)
    assert not leftover.exists()
    assert not list(first.root.parent.glob(".*.partial")) and not list(first.root.parent.glob(".*.incomplete"))


def test_manifest_csv_table_with_a_cut_row_is_reported_not_nan(tmp_path: Path) -> None:
    table = pd.DataFrame({"id": ["a", "b", "c"], "f": [1.0, 2.0, 3.0], "g": [4.0, 5.0, 6.0], "y": [0, 1, 0]})
    path = write_manifest(
        table,
        tmp_path / "m",
        name="m",
        modalities={"t": ModalitySpec("columns", ["f", "g"])},
        targets={"y": TargetSpec("binary", ["y"])},
        splits={"s": {"train": np.array([0, 1]), "test": np.array([2])}},
        group_column=None,
        table_format="csv",
    )
    csv_path = path.parent / "manifest.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([*lines[:-1], lines[-1].rsplit(",", 2)[0]]) + "\n")  # a copy cut short
    with pytest.raises(ReadError, match=r"1 rows of the table lack fields: row 3 has"):
        read_manifest(path)
