"""Robustness toolkit: modality dropout, missingness simulators, subset evaluation, report."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modfuse.core.model import ModelOutput
from modfuse.core.tasks import as_task_specs
from modfuse.data.batch import ModalityBatch, scatter_rows
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.encoders import build
from modfuse.errors import ModfuseError
from modfuse.fusion import EarlyFusion
from modfuse.robust import (
    ModalityDropout,
    evaluate_subsets,
    mar,
    mcar,
    mnar,
    modality_subsets,
    plot_sweep,
    robustness_report,
    simulate,
    sweep,
)
from modfuse.training.task import FusionTask


class Oracle(nn.Module):
    """Binary model whose logit is 10 * (first feature of ``signal`` - 0.5); prior logit -2."""

    def __init__(self, modalities: list[str], signal: str) -> None:
        super().__init__()
        self.modalities, self.signal = list(modalities), signal
        self.tasks = as_task_specs("binary")
        self.prior = nn.Parameter(torch.tensor(-2.0))

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        return ModelOutput.of(self.logit(batch), self.tasks)

    def logit(self, batch: ModalityBatch) -> torch.Tensor:
        """(B, 1) logits: the signal modality's where present, the prior elsewhere."""
        out = self.prior.expand(batch.batch_size).clone()
        if batch.has(self.signal):
            logit = 10 * (batch.inputs[self.signal][:, 0] - 0.5)
            present = batch.present[self.signal]
            out = torch.where(present, scatter_rows(logit, present), out)
        return out[:, None]


def toy_data(n: int = 120, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = {
        "a": np.c_[y + 0.1 * rng.normal(size=n), rng.normal(size=(n, 2))],
        "b": rng.normal(size=(n, 3)),
        "c": rng.normal(size=(n, 2)),
    }
    return X, y


def id_batch(present: np.ndarray) -> ModalityBatch:
    """Batch whose rows hold their sample index, so kept rows can be checked."""
    b, m = present.shape
    pres = {f"m{j}": torch.as_tensor(present[:, j]) for j in range(m)}
    inputs = {k: torch.arange(b, dtype=torch.float32)[p][:, None] for k, p in pres.items() if p.any()}
    return ModalityBatch(inputs, pres, torch.zeros(b), list(range(b)))


# ---------------------------------------------------------------------- ModalityDropout
@settings(max_examples=60, deadline=None)
@given(
    present=st.integers(1, 10).flatmap(
        lambda b: st.integers(1, 4).flatmap(
            lambda m: st.lists(st.lists(st.booleans(), min_size=m, max_size=m), min_size=b, max_size=b)
        )
    ),
    rate=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
)
def test_dropout_never_empties_a_sample(present: list[list[bool]], rate: float, seed: int) -> None:
    pres = np.array(present, dtype=bool)
    batch = id_batch(pres)
    out = ModalityDropout(rate, seed=seed)(batch)
    after = np.stack([out.present[f"m{j}"].numpy() for j in range(pres.shape[1])], 1)
    assert not (after & ~pres).any()  # never adds a modality
    assert (after.any(1) == pres.any(1)).all()  # a sample that had data keeps some
    for m, x in out.inputs.items():  # kept rows are the sample's own rows
        assert x[:, 0].long().tolist() == out.index(m).tolist()


def test_dropout_rates_and_seed() -> None:
    pres = np.ones((400, 3), dtype=bool)
    batch = id_batch(pres)
    full = ModalityDropout(1.0, seed=0)(batch)
    counts = sum(full.present[f"m{j}"].long() for j in range(3))
    assert (counts == 1).all()
    assert ModalityDropout(0.0)(batch).present["m0"].all()
    only = ModalityDropout({"m1": 0.5}, seed=1)(batch)
    assert only.present["m0"].all() and only.present["m2"].all()
    assert 0.4 < only.present["m1"].float().mean() < 0.6
    again = ModalityDropout({"m1": 0.5}, seed=1)(batch)
    assert torch.equal(only.present["m1"], again.present["m1"])
    with pytest.raises(ModfuseError):
        ModalityDropout(1.5)
    with pytest.raises(ModfuseError):
        ModalityDropout({"m0": -0.1})


def test_dropout_as_train_transform() -> None:
    X, y = toy_data()
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, y), batch_size=64, train_transform=ModalityDropout(0.5))
    batch = next(iter(dm.train_dataloader()))
    pres = torch.stack([batch.present[m] for m in "abc"], 1)
    assert pres.any(1).all() and not pres.all()
    assert not next(iter(dm.test_dataloader())).present["a"].logical_not().any()


# ---------------------------------------------------------------------- simulators
def test_simulators_reproducible_and_non_destructive() -> None:
    X, y = toy_data()
    ds = MultiModalDataset.from_arrays(X, y)
    for sim in (mcar(0.4, seed=3), mar(0.4, driver="a", seed=3), mnar(0.4, seed=3)):
        first, second = sim.removed(ds), sim.removed(ds)
        pd.testing.assert_frame_equal(first, second)
        assert first.to_numpy().any()
        other = type(sim)(**{**sim.__dict__, "seed": 4}).removed(ds)
        assert not first.equals(other)
        new = sim.apply(ds)
        expected = ds.present_matrix() & ~first
        pd.testing.assert_frame_equal(new.present_matrix(), expected)
        assert new.present_matrix().any(axis=1).all()  # keep_one
        assert ds.present_matrix().all().all()  # the original is untouched
        assert new[0]["inputs"]["a"] is None or torch.equal(new[0]["inputs"]["a"], ds[0]["inputs"]["a"])


def test_mcar_rate_and_modalities() -> None:
    X, y = toy_data(n=2000)
    ds = MultiModalDataset.from_arrays(X, y)
    removed = mcar(0.3, modalities=["b"], keep_one=False).removed(ds)
    assert not removed[["a", "c"]].to_numpy().any()
    assert 0.26 < removed["b"].mean() < 0.34
    with pytest.raises(ModfuseError):
        mcar(0.3, modalities=["zzz"]).removed(ds)
    with pytest.raises(ModfuseError):
        mcar(1.2)


@pytest.mark.parametrize("continuous", [False, True])
def test_mnar_flip_inverts_the_label_dependence(continuous: bool) -> None:
    X, y = toy_data(n=1000)
    target = np.random.default_rng(1).normal(size=len(y)) if continuous else y
    positive = target > np.median(target) if continuous else y == 1
    ds = MultiModalDataset.from_arrays(X, target)
    plain = mnar(0.6, keep_one=False).removed(ds).to_numpy()
    flipped = mnar(0.6, flip=True, keep_one=False).removed(ds).to_numpy()
    assert not plain[~positive].any() and 0.5 < plain[positive].mean() < 0.7
    assert not flipped[positive].any() and 0.5 < flipped[~positive].mean() < 0.7
    assert (
        simulate("mnar-flip", 0.6, keep_one=False).removed(ds).equals(mnar(0.6, flip=True, keep_one=False).removed(ds))
    )


def test_mnar_on_multiclass_labels_targets_classes_not_everyone_but_class_0() -> None:
    """Land cover: class 0 is rare, so "any class but 0" made MNAR equal MCAR and its flip empty."""
    rng = np.random.default_rng(0)
    y = rng.choice(5, size=2000, p=[0.02, 0.3, 0.3, 0.2, 0.18])
    ds = MultiModalDataset.from_arrays({"a": rng.normal(size=(2000, 2)), "b": rng.normal(size=(2000, 2))}, y)
    plain = mnar(0.6, keep_one=False).removed(ds).to_numpy().any(1)
    flipped = mnar(0.6, flip=True, keep_one=False).removed(ds).to_numpy().any(1)
    above_median = y > np.median(y)
    assert not plain[~above_median].any() and not flipped[above_median].any()
    assert 0.3 < above_median.mean() < 0.7  # each mechanism acts on a real share of the cohort
    chosen = mnar(0.6, classes=[2], keep_one=False).removed(ds).to_numpy().any(1)
    assert not chosen[y != 2].any() and 0.7 < chosen[y == 2].mean() < 0.9  # 1 - 0.4^2 = 0.84
    with pytest.raises(ModfuseError, match="labels present"):
        mnar(0.5, classes=[7]).removed(ds)
    with pytest.warns(UserWarning, match="targets 2.*of the samples"):
        mnar(0.5, classes=[0]).removed(ds)


def test_sweep_plot_x_axis_is_the_measured_missing_fraction() -> None:
    X, y = toy_data(n=400)
    ds = MultiModalDataset.from_arrays(X, y)
    table = sweep(Oracle(["a", "b", "c"], "a"), ds, rates=[0.0, 0.9], kind=["mcar", "mnar"], seeds=[0, 1])
    fig = plot_sweep(table, "accuracy")
    ax = fig.axes[0]
    assert "missing fraction" in ax.get_xlabel()
    for container, kind in zip(ax.containers, ["mcar", "mnar"], strict=True):
        line = container.lines[0]  # the data line of the error-bar plot
        expected = table[table["kind"] == kind].groupby("rate")["missing_fraction"].mean().to_numpy()
        np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), expected)
    # MNAR with p = 0.9 removes far less than 90% of the pairs: the axis shows what was removed
    assert line.get_xdata()[-1] < 0.5


def test_mar_depends_on_the_observed_driver() -> None:
    X, y = toy_data(n=600)
    ds = MultiModalDataset.from_arrays(X, y)
    removed = mar(0.8, driver="b", feature=0, keep_one=False).removed(ds)
    high = X["b"][:, 0] > np.median(X["b"][:, 0])
    assert not removed["b"].any()  # the driver is observed by definition
    assert not removed.to_numpy()[~high].any()
    assert 0.7 < removed.to_numpy()[high][:, [0, 2]].mean() < 0.9
    flipped = mar(0.8, driver="b", feature=0, flip=True, keep_one=False).removed(ds)
    assert not flipped.to_numpy()[high].any()
    with pytest.raises(ModfuseError):
        mar(0.5, driver="b", modalities=["b"]).removed(ds)


def test_simulation_on_a_datamodule_affects_only_chosen_parts() -> None:
    X, y = toy_data(n=200)
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, y), batch_size=50)
    shifted = mcar(0.9).apply(dm, parts=["test"])
    assert (shifted is not dm and shifted.splits is dm.splits) or shifted.splits == dm.splits
    pres = shifted.dataset.present_matrix()
    test_ids = set(dm.splits["test"].tolist())
    outside = [i for i in range(200) if i not in test_ids]
    assert pres.iloc[outside].all().all()
    assert not pres.iloc[sorted(test_ids)].all().all()
    with pytest.raises(ModfuseError):
        mcar(0.5).apply(dm, parts=["nope"])


# ---------------------------------------------------------------------- evaluation
def test_evaluate_subsets_one_row_per_subset() -> None:
    X, y = toy_data()
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, y), batch_size=16)
    table = evaluate_subsets(Oracle(["a", "b", "c"], "a"), dm)
    assert len(table) == 7 and table["subset"].is_unique
    with_a = table["subset"].str.contains("a")
    assert (table.loc[with_a, "auroc"] == 1.0).all()
    assert (table.loc[~with_a, "auroc"] == 0.5).all()
    assert (table["n"] == len(dm.splits["test"])).all() and (table["n_observed"] == table["n"]).all()
    only_auc = evaluate_subsets(Oracle(["a", "b"], "a"), dm, metric="auroc", subsets=[["a"]])
    assert list(only_auc.columns) == ["subset", "size", "auroc", "n", "n_observed"]
    with pytest.raises(ModfuseError):
        evaluate_subsets(Oracle(["a", "b"], "a"), dm, metric="nope")
    with pytest.raises(ModfuseError):
        evaluate_subsets(nn.Linear(2, 2), dm)


def test_subsets_sampled_above_exact_max() -> None:
    names = [f"m{i}" for i in range(10)]
    chosen = modality_subsets(names, max_subsets=30, seed=1)
    assert len(set(chosen)) == 30 and modality_subsets(names, max_subsets=30, seed=1) == chosen
    assert all((n,) in chosen for n in names) and tuple(names) in chosen
    assert len(modality_subsets(names[:8])) == 255


def test_evaluate_a_trained_fusion_task() -> None:
    X, y = toy_data()
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, y), batch_size=32)
    model = EarlyFusion({k: build("tabular", num_features=v.shape[1], hidden=(8,), out_dim=4) for k, v in X.items()})
    table = evaluate_subsets(FusionTask(model), dm, metric=["auroc", "accuracy"])
    assert len(table) == 7 and table["auroc"].between(0, 1).all()


def test_sweep_degrades_with_missing_rate() -> None:
    X, y = toy_data()
    ds = MultiModalDataset.from_arrays(X, y)
    oracle = Oracle(["a", "b", "c"], "a")
    table = sweep(oracle, ds, rates=[0.0, 0.9], kind=["mcar", "mnar"], seeds=[0, 1], metric="accuracy")
    assert len(table) == 8
    mcar_rows = table[table["kind"] == "mcar"].groupby("rate")["accuracy"].mean()
    assert mcar_rows[0.0] == 1.0 and mcar_rows[0.9] < 0.9
    mnar_rows = table[table["kind"] == "mnar"]
    # only positives lose modalities under MNAR, and the prior predicts negative: they are missed
    assert (mnar_rows.loc[mnar_rows["rate"] == 0.9, "accuracy"] < 1.0).all()
    assert (mnar_rows.loc[mnar_rows["rate"] == 0.9, "missing_fraction"] > 0).all()


def test_robustness_report_writes_tables_and_plots(tmp_path) -> None:
    X, y = toy_data()
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, y), batch_size=32)
    table = robustness_report(Oracle(["a", "b", "c"], "a"), dm, tmp_path, rates=[0.0, 0.5], seeds=[0])
    assert len(table) == 7
    assert len(pd.read_csv(tmp_path / "subsets.csv")) == 7
    assert set(pd.read_csv(tmp_path / "sweep.csv")["kind"]) == {"mcar", "mnar", "mnar-flip"}
    for name in ("subsets.png", "sweep.png"):
        assert mpimg.imread(tmp_path / name).ndim == 3


class TwoTasks(Oracle):
    """The oracle's logit for a binary task and the same value as a regression estimate."""

    def __init__(self) -> None:
        super().__init__(["a", "b"], "a")
        self.tasks = as_task_specs({"label": "binary", "score": "regression"})

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        logit = self.logit(batch)
        return ModelOutput({"label": logit, "score": logit})


def test_multi_task_columns_and_loader_sweep() -> None:
    X, y = toy_data(n=80)
    X = {"a": X["a"], "b": X["b"]}
    logit = 10 * (X["a"][:, 0] - 0.5)
    ds = MultiModalDataset.from_arrays(X, {"label": y, "score": logit.astype(np.float32)})
    table = evaluate_subsets(TwoTasks(), ds, batch_size=32)
    assert len(table) == 3 and {"label/auroc", "score/rmse"} <= set(table.columns)
    assert table.loc[table["subset"] == "a+b", "score/rmse"].iloc[0] < 1e-4
    dm = MultiModalDataModule(ds, batch_size=16)
    swept = sweep(TwoTasks(), dm.test_dataloader(), rates=[0.0, 0.8], metric="auroc")
    assert list(swept["rate"]) == [0.0, 0.8] and (swept["n"] == len(dm.splits["test"])).all()
    assert swept["missing_fraction"].iloc[1] > swept["missing_fraction"].iloc[0] == 0.0
