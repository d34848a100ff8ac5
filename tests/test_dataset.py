"""MultiModalDataset joins sources by id; NaN rows and None mean missing; bad input is located."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from modfuse import MultiModalDataModule, MultiModalDataset
from modfuse.data.sources import ArraySource
from modfuse.data.splits import check_disjoint_groups, split_indices
from modfuse.errors import ModfuseError, ReadError


def test_from_arrays_marks_all_nan_rows_and_none_missing() -> None:
    a = np.arange(12, dtype=float).reshape(4, 3)
    a[1] = np.nan
    a[2, 0] = np.nan  # partially observed: kept, the tabular encoder handles the NaN cell
    b = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0], "y": [0.5, 0.1, np.nan, 0.2]})
    ds = MultiModalDataset.from_arrays({"a": a, "b": b, "c": None}, y=np.array([0, 1, 0, 1]), ids=list("wxyz"))
    assert ds.present_matrix().to_dict("list") == {
        "a": [True, False, True, True],
        "b": [True, True, False, True],
        "c": [False] * 4,
    }
    batch = ds.collate_fn([ds[i] for i in range(4)])
    assert batch.ids == list("wxyz")
    assert batch.inputs["a"].shape == (3, 3) and torch.isnan(batch.inputs["a"][1, 0])
    assert "c" not in batch.inputs and batch.target.tolist() == [0, 1, 0, 1]


def test_sources_are_joined_on_sample_id() -> None:
    labs = ArraySource(np.array([[1.0], [2.0]]), ids=["p2", "p1"])
    ecg = ArraySource(np.ones((2, 2, 8)), ids=["p1", "p3"])
    ds = MultiModalDataset(
        {"labs": labs, "ecg": ecg}, targets=pd.Series({"p1": 1, "p2": 0, "p3": 1}), ids=["p1", "p2", "p3"]
    )
    items = [ds[i] for i in range(3)]
    assert items[0]["inputs"]["labs"].tolist() == [2.0]
    assert items[1]["inputs"]["ecg"] is None and items[2]["inputs"]["labs"] is None
    assert [int(it["target"]) for it in items] == [1, 0, 1]


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ModfuseError, match="different numbers of rows"):
        MultiModalDataset.from_arrays({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))})
    with pytest.raises(ModfuseError, match="targets has 2 rows for 3 samples"):
        MultiModalDataset.from_arrays({"a": np.zeros((3, 2))}, y=[0, 1])


class BrokenFiles:
    """A source whose sample 'bad' points at an unreadable file."""

    collate = "auto"
    ids = ["ok", "bad"]

    def load(self, sample_id: str) -> torch.Tensor:
        if sample_id == "bad":
            raise ReadError("truncated pixel data", path="/data/bad.dcm")
        return torch.ones(2)


def test_on_error_raise_names_file_sample_and_modality() -> None:
    ds = MultiModalDataset({"xray": BrokenFiles()})
    assert ds[0]["inputs"]["xray"].tolist() == [1.0, 1.0]
    with pytest.raises(ReadError, match=r"modality 'xray', sample 'bad'.*truncated.*/data/bad.dcm"):
        ds[1]


def test_on_error_missing_marks_and_reports() -> None:
    labs = ArraySource(np.ones((2, 3)), ids=["ok", "bad"])
    ds = MultiModalDataset({"xray": BrokenFiles(), "labs": labs}, on_error="missing")
    batch = ds.collate_fn([ds[0], ds[1]])
    assert batch.present["xray"].tolist() == [True, False]
    assert batch.present["labs"].tolist() == [True, True]  # the sample itself is kept
    report = ds.read_error_report()
    assert report[["id", "modality"]].values.tolist() == [["bad", "xray"]]
    assert "bad.dcm" in report.loc[0, "error"] and batch.errors[0][:2] == ("bad", "xray")


def test_splits_are_seeded_stratified_and_group_disjoint() -> None:
    y = np.array([0] * 80 + [1] * 20)
    s1 = split_indices(100, "stratified", 0.1, 0.2, labels=y, seed=3)
    s2 = split_indices(100, "stratified", 0.1, 0.2, labels=y, seed=3)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert sorted(np.concatenate(list(s1.values())).tolist()) == list(range(100))
    assert y[s1["test"]].mean() == pytest.approx(0.2)
    groups = np.repeat(np.arange(25), 4)  # 4 samples per patient
    sg = split_indices(100, "group", 0.2, 0.2, groups=groups, seed=0)
    parts = [set(groups[idx]) for idx in sg.values()]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    with pytest.raises(ModfuseError, match="group 3 is in both"):
        check_disjoint_groups({"train": np.array([12]), "test": np.array([13])}, groups)


def test_datamodule_serves_modality_batches() -> None:
    rng = np.random.default_rng(0)
    ds = MultiModalDataset.from_arrays({"a": rng.normal(size=(50, 4))}, y=rng.integers(0, 2, 50))
    dm = MultiModalDataModule(ds, batch_size=8, seed=1)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.batch_size == 8 and batch.inputs["a"].shape == (8, 4)
    assert len(dm.subset("train")) + len(dm.subset("val")) + len(dm.subset("test")) == 50


def test_from_arrays_takes_lists_of_graphs_with_none_for_missing() -> None:
    from torch_geometric.data import Data

    g = Data(x=torch.ones(3, 2), edge_index=torch.tensor([[0, 1], [1, 2]]))
    ds = MultiModalDataset.from_arrays({"mol": [g, None, g], "desc": np.ones((3, 2))}, y=[0.1, 0.2, 0.3])
    batch = ds.collate_fn([ds[i] for i in range(3)])
    assert batch.present["mol"].tolist() == [True, False, True]
    assert batch.inputs["mol"].num_graphs == 2
