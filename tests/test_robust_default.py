"""Robust by default (issue 14): missingness-aware training in the estimators, and the subset gap."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
import torch
from helpers import Recorder, record_fit_and_test
from torch import nn

from modfuse import FusionClassifier
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.encoders import build as build_encoder
from modfuse.fusion import build
from modfuse.robust import ModalityDropout, RobustTraining, competition, subset_gap, write_subset_gap
from modfuse.training.robust import AUTO_DROPOUT
from modfuse.training.task import FusionTask


def easy_and_hard(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Modality ``a`` gives the label almost for free (one clean feature); ``b`` holds it too,
    but only through the sign of a product of two features (harder to learn)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = 2 * y - 1
    a = np.c_[1.5 * sign + rng.normal(0, 0.5, n), rng.normal(0, 1, (n, 3))]
    b1 = rng.normal(0, 1, n)
    b2 = np.abs(rng.normal(0, 1, n)) * sign * np.sign(b1)
    b = np.c_[b1, b2, rng.normal(0, 1, (n, 6))]
    return {"a": a.astype(np.float32), "b": b.astype(np.float32)}, y


@pytest.fixture(scope="module")
def ab_data() -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]:
    X, y = easy_and_hard(800)
    train, test = np.arange(500), np.arange(500, 800)
    return {m: v[train] for m, v in X.items()}, y[train], {m: v[test] for m, v in X.items()}, y[test]


FAST = {"max_epochs": 30, "random_state": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def b_specialist_accuracy(ab_data) -> float:
    Xtr, ytr, Xte, yte = ab_data
    specialist = FusionClassifier(strategy="early", **FAST).fit({"b": Xtr["b"]}, ytr)
    accuracy = float((specialist.predict({"b": Xte["b"]}) == yte).mean())
    assert accuracy > 0.85  # b really is informative
    return accuracy


@pytest.mark.parametrize("strategy", ["early", "attention", "late"])
def test_default_fusion_keeps_the_hard_modality_alone(strategy, ab_data, b_specialist_accuracy) -> None:
    Xtr, ytr, Xte, yte = ab_data
    model = FusionClassifier(strategy=strategy, **FAST).fit(Xtr, ytr)
    only_b = float((model.predict({"a": None, "b": Xte["b"]}) == yte).mean())
    full = float((model.predict(Xte) == yte).mean())
    assert only_b >= 0.9 * b_specialist_accuracy, (only_b, b_specialist_accuracy)
    assert full >= 0.97


@pytest.mark.parametrize("strategy", ["early", "attention"])
def test_switching_the_default_off_brings_the_collapse_back(strategy, ab_data, b_specialist_accuracy) -> None:
    # the failure the default fixes: joint training leans on the easy modality (B alone: 0.49
    # for both, against the specialist's 0.95). Late fusion collapses less since each modality's
    # head reads standardised features: B alone 0.807 without the default (85 % of the
    # specialist, still short of the 90 % the default reaches)
    Xtr, ytr, Xte, yte = ab_data
    model = FusionClassifier(strategy=strategy, modality_dropout=None, unimodal_weight=None, **FAST).fit(Xtr, ytr)
    only_b = float((model.predict({"a": None, "b": Xte["b"]}) == yte).mean())
    assert only_b < 0.8 * b_specialist_accuracy


def test_estimators_default_to_missingness_aware_training() -> None:
    params = FusionClassifier().get_params()
    assert params["modality_dropout"] == "auto" and params["unimodal_weight"] == "auto"
    assert params["balance"] is None
    model = build("early", encoders=encoders(["a", "b"]), tasks="binary")
    task = FusionTask(model, modality_dropout="auto", unimodal_weight="auto")
    assert task.robust.dropout.rate_of("a") == AUTO_DROPOUT and task.robust.unimodal_weight > 0
    # one modality: nothing to drop, no auxiliary loss, plain training
    assert FusionTask(build("early", encoders=encoders(["a"])), modality_dropout="auto").robust is None
    assert FusionTask(model).robust is None  # FusionTask itself stays explicit


def encoders(names: list[str], features: int = 4) -> dict[str, nn.Module]:
    return {m: build_encoder("tabular", num_features=features, hidden=[8], out_dim=8) for m in names}


# ---------------------------------------------------------------------------- modality dropout
def test_modality_dropout_never_empties_a_sample() -> None:
    dropout = ModalityDropout(0.9, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(50):
        present = {m: torch.as_tensor(rng.random(64) < 0.7) for m in ("a", "b", "c")}
        keep = dropout.keep_masks(present)
        had = torch.stack(list(present.values()), 1)
        kept = torch.stack(list(keep.values()), 1)
        assert not (kept & ~had).any()  # never adds a modality
        assert torch.equal(kept.any(1), had.any(1))  # a sample with a modality keeps one


def test_modality_dropout_is_on_in_training_and_off_at_validation_and_test() -> None:
    X, y = easy_and_hard(96)
    fused = build("early", encoders={m: build_encoder("tabular", num_features=X[m].shape[1], out_dim=4) for m in X})
    # rate 1: every training sample keeps one modality
    train_calls, eval_calls = record_fit_and_test(Recorder(fused), X, y, modality_dropout=1.0)
    # 64 / 16 training steps, each a pass on the dropped batch then (the default full_weight) one on
    # the complete batch; validation, sanity check, test
    assert len(train_calls) == 2 * 4 and eval_calls
    assert all(bool((c == 1).all()) for c in train_calls[::2])
    assert all(bool((c == 2).all()) for c in train_calls[1::2])
    assert all(bool((c == 2).all()) for c in eval_calls)


# ---------------------------------------------------------------------------- gradient modulation
def test_ogm_ge_damps_the_dominant_modality() -> None:
    model = build("early", encoders=encoders(["a", "b"]), tasks="binary")
    robust = RobustTraining(model, balance="ogm-ge", balance_alpha=0.5)
    robust._update_balance(model, None, {"a": torch.tensor(0.1), "b": torch.tensor(1.0)})
    ratio = math.exp(-0.1) / math.exp(-1.0)
    assert robust.coefficients["a"] == pytest.approx(1 - math.tanh(0.5 * (ratio - 1)))
    assert robust.coefficients["b"] == 1.0
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    robust.modulate(model)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders["b"].parameters())
    assert all(not torch.equal(p.grad, torch.ones_like(p)) for p in model.encoders["a"].parameters() if p.numel() > 1)


@pytest.mark.parametrize("balance", ["ogm-ge", "agm"])
def test_balance_options_train(balance, ab_data) -> None:
    Xtr, ytr, Xte, yte = ab_data
    model = FusionClassifier(strategy="early", balance=balance, max_epochs=3, device="cpu").fit(Xtr, ytr)
    assert (model.predict(Xte) == yte).mean() > 0.8


# ---------------------------------------------------------------------------- subset gap
def _hand_accuracy(model: nn.Module, dataset: MultiModalDataset, keep: tuple[str, ...]) -> float:
    batch = dataset.collate_fn([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        p = torch.sigmoid(model.eval()(batch.with_modalities(keep)).prediction).reshape(-1)
    return float(((p > 0.5).long() == batch.target.reshape(-1).long()).float().mean())


def test_subset_gap_equals_a_hand_computation() -> None:
    torch.manual_seed(0)
    X, y = easy_and_hard(40, seed=1)
    X["c"] = X["a"][:, :2] * -1.0
    dataset = MultiModalDataset.from_arrays(X, y)
    names = ["a", "b", "c"]
    fused = build("late", encoders={m: build_encoder("tabular", num_features=X[m].shape[1], out_dim=4) for m in names})
    specialists = {}
    for k in (1, 2, 3):
        for s in combinations(names, k):
            specialists["+".join(s)] = build(
                "early", encoders={m: build_encoder("tabular", num_features=X[m].shape[1], out_dim=4) for m in s}
            )
    table = subset_gap(fused, dataset, specialists, metric="accuracy")
    assert len(table) == 2**3 - 1 and list(table["subset"])[-1] == "a+b+c"
    for row in table.itertuples():
        s = tuple(row.subset.split("+"))
        fused_acc = _hand_accuracy(fused, dataset, s)
        spec_acc = _hand_accuracy(specialists[row.subset], dataset, s)
        assert row.fused == pytest.approx(fused_acc, abs=1e-6)
        assert row.specialist == pytest.approx(spec_acc, abs=1e-6)
        assert row.gap == pytest.approx(spec_acc - fused_acc, abs=1e-6)
    comp = competition(table)
    assert set(comp["modality"]) == set(names) and comp["gap"].is_monotonic_decreasing


def test_subset_gap_trains_specialists_and_writes_files(tmp_path) -> None:
    X, y = easy_and_hard(120)
    dataset = MultiModalDataset.from_arrays(X, y)
    rows = np.arange(120)
    dm = MultiModalDataModule(
        dataset, splits={"train": rows[:80], "val": rows[80:100], "test": rows[100:]}, batch_size=32
    )
    fused = build("early", encoders={m: build_encoder("tabular", num_features=X[m].shape[1], out_dim=4) for m in X})
    table = subset_gap(fused, dm, "train", max_epochs=2, task_kwargs={"lr": 1e-2})
    assert list(table["subset"]) == ["a", "b", "a+b"] and (table["n"] == 20).all()
    assert table[["fused", "specialist"]].stack().between(0, 1).all()
    paths = write_subset_gap(table, tmp_path)
    assert all(p.is_file() for p in paths.values())


def test_estimator_subset_gap(ab_data) -> None:
    Xtr, ytr, Xte, yte = ab_data
    model = FusionClassifier(strategy="late", max_epochs=5, device="cpu").fit(Xtr, ytr)
    table = model.subset_gap(Xte, yte)
    assert list(table["subset"]) == ["a", "b", "a+b"] and table["metric"].eq("accuracy").all()
    only_b = float((model.predict({"a": None, "b": Xte["b"]}) == yte).mean())
    assert table.set_index("subset").loc["b", "fused"] == pytest.approx(only_b, abs=1e-6)
