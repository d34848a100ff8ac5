"""Tabular reader: schema, fitted statistics saved as JSON, NaN / inf / text cells."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from modfuse.data import MultiModalDataset
from modfuse.data.readers import TabularSchema, TabularSource
from modfuse.data.readers.tabular import TabularPreprocessor
from modfuse.encoders.tabular import TabularEncoder
from modfuse.errors import ModfuseError, ReadError

SCHEMA = TabularSchema(numeric=["age", "crp"], categorical=["sex"], id="pid", target="y")


@pytest.fixture
def train_csv(tmp_path):
    frame = pd.DataFrame(
        {
            "pid": ["p1", "p2", "p3", "p4"],
            "age": [40.0, 60.0, 50.0, 70.0],
            "crp": [1.0, 3.0, np.nan, 4.0],
            "sex": ["F", "M", "F", None],
            "y": [0, 1, 0, 1],
        }
    )
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False)
    return path


def test_standardises_with_training_statistics_and_maps_categories(train_csv):
    src = TabularSource(train_csv, SCHEMA)
    assert src.ids == ["p1", "p2", "p3", "p4"] and src.feature_names == ["age", "crp", "sex"]
    age_std = np.std([40, 60, 50, 70])
    x = src.load("p1")
    assert x.dtype == torch.float32 and x.shape == (3,)
    assert x[0].item() == pytest.approx((40 - 55) / age_std)
    assert x[2].item() == 0.0  # "F" is category 0 of the sorted ["F", "M"]
    x3, x4 = src.load("p3"), src.load("p4")
    assert torch.isnan(x3[1]) and torch.isnan(x4[2])  # missing cells stay NaN for the encoder
    assert src.targets()["y"].tolist() == [0, 1, 0, 1]


def test_statistics_round_trip_through_json_and_drive_inference(train_csv, tmp_path):
    train = TabularSource(train_csv, SCHEMA)
    stats = tmp_path / "stats.json"
    train.preprocessor.save(stats)
    assert json.loads(stats.read_text())["categories"] == {"sex": ["F", "M"]}
    test_frame = pd.DataFrame({"pid": ["t1"], "age": [55.0], "crp": [2.0], "sex": ["X"], "y": [1]})
    test = TabularSource(test_frame, SCHEMA, preprocessor=stats)
    x = test.load("t1")
    assert x[0].item() == pytest.approx(0.0)  # training mean, not the test table's own
    assert torch.isnan(x[2])  # unseen category -> the encoder's missing category
    enc = TabularEncoder(**train.preprocessor.encoder_kwargs(), hidden=(8,), out_dim=4)
    assert enc(torch.stack([x, train.load("p1")])).shape == (2, 4)


def test_inf_and_text_cells_follow_the_policy_and_all_nan_row_is_missing(tmp_path):
    path = tmp_path / "labs.csv"
    path.write_text("pid,age,crp,sex,y\na,50,inf,F,0\nb,abc,2,M,1\nc,,,,0\nd,61,2,M,1\n")
    src = TabularSource(path, SCHEMA)
    with pytest.raises(ReadError, match=r"'crp' holds inf") as info:
        src.load("a")
    assert info.value.path == path and info.value.sample_id == "a"
    assert src.load("c") is None  # every feature empty: missing modality, not an error
    ds = MultiModalDataset({"labs": src}, on_error="missing")
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    assert batch.present["labs"].tolist() == [False, False, False, True]
    assert ds.read_error_report()["id"].tolist() == ["a", "b"]
    assert "'age' holds 'abc'" in ds.read_error_report()["error"].iloc[1]


def test_schema_errors_name_the_columns(train_csv):
    with pytest.raises(ReadError, match=r"expected columns \['bmi'\]"):
        TabularSource(train_csv, TabularSchema(numeric=["age", "bmi"], id="pid"))
    with pytest.raises(ModfuseError, match="more than one role"):
        TabularSchema(numeric=["age"], target="age")
    inferred = TabularSchema.infer(pd.read_csv(train_csv), id="pid", target="y")
    assert inferred.numeric == ["age", "crp"] and inferred.categorical == ["sex"]


def test_parquet_and_bad_stats_file(train_csv, tmp_path):
    pq = tmp_path / "train.parquet"
    pd.read_csv(train_csv).to_parquet(pq)
    assert torch.allclose(TabularSource(pq, SCHEMA).load("p2"), TabularSource(train_csv, SCHEMA).load("p2"))
    bad = tmp_path / "stats.json"
    bad.write_text("{}")
    with pytest.raises(ReadError, match="not a modfuse tabular preprocessing file"):
        TabularPreprocessor.load(bad)
