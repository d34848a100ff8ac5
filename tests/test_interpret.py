"""Modality Shapley values, captum attributions within a modality, plots and the explain report."""

from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from modfuse.core.model import ModelOutput
from modfuse.core.tasks import TaskSpec, as_task_specs
from modfuse.data.batch import ModalityBatch, scatter_rows
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.encoders import build
from modfuse.encoders.wrap import wrap
from modfuse.errors import ModfuseError
from modfuse.fusion import EarlyFusion
from modfuse.interpret import (
    band_importance,
    explain_report,
    feature_attributions,
    lead_importance,
    modality_shapley,
    pixel_map,
    plot_band_importance,
    plot_cohort,
    plot_ecg_saliency,
    plot_waterfall,
    time_saliency,
)

SURVIVAL = TaskSpec("survival", 3, boundaries=(1.0, 2.0))


def summed(batch: ModalityBatch, m: str) -> Tensor:
    """(B,): sum of each sample's input for ``m`` (0 where absent)."""
    if not batch.has(m):
        return torch.zeros(batch.batch_size)
    x = batch.inputs[m]
    return scatter_rows(x.reshape(x.shape[0], -1).sum(1), batch.present[m])


class Interacting(nn.Module):
    """logit = s_a * s_b + tanh(s_c) + 0.3 (s_a + s_b); modality ``d`` is ignored (a dummy)."""

    def __init__(self, task: TaskSpec | str = "binary") -> None:
        super().__init__()
        self.modalities = ["a", "b", "c", "d"]
        self.tasks = as_task_specs(task)
        self.spec = next(iter(self.tasks.values()))

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        sa, sb, sc = (summed(batch, m) for m in "abc")
        z = sa * sb + torch.tanh(sc) + 0.3 * (sa + sb) + 0.1
        steps = torch.arange(self.spec.num_outputs, dtype=z.dtype)
        return ModelOutput.of(z[:, None] * (1 + steps) - steps, self.tasks)  # (B, num_outputs), distinct columns


class Additive(nn.Module):
    """Regression: y = sum_m w_m * s_m (+ a pairwise term between m0 and m1 when ``pair``)."""

    def __init__(self, m: int, pair: float = 0.0) -> None:
        super().__init__()
        self.modalities = [f"m{i}" for i in range(m)]
        self.tasks = as_task_specs("regression")
        self.w = torch.linspace(-1, 1, m)
        self.pair = pair

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        s = torch.stack([summed(batch, m) for m in self.modalities], 1)
        return ModelOutput.of(((s * self.w).sum(1) + self.pair * s[:, 0] * s[:, 1])[:, None], self.tasks)


def random_batch(names: list[str], b: int = 24, f: int = 3, seed: int = 0, p_missing: float = 0.2) -> ModalityBatch:
    g = torch.Generator().manual_seed(seed)
    present = {m: torch.rand(b, generator=g) > p_missing for m in names}
    inputs = {m: torch.randn(int(p.sum()), f, generator=g) for m, p in present.items() if p.any()}
    return ModalityBatch(inputs, present, None, [f"s{i}" for i in range(b)])


# ---------------------------------------------------------------------- Shapley properties
@pytest.mark.parametrize("task", ["binary", "regression", TaskSpec("multiclass", 3), SURVIVAL])
def test_efficiency_and_dummy(task: TaskSpec | str) -> None:
    model = Interacting(task)
    batch = random_batch(model.modalities)
    result = modality_shapley(model, batch)
    gap = result.values.sum(axis=1) - (result.full - result.base)
    assert gap.abs().max() < 1e-5
    assert result.values["d"].abs().max() == 0.0  # dummy modality
    absent = ~batch.present["a"].numpy()
    assert (result.values.loc[absent, "a"] == 0).all()  # a modality the sample lacks contributes 0
    assert result.method == "exact" and result.stderr is None
    if result.kind == "multiclass":  # explains the class predicted with every modality
        assert result.output.nunique() >= 1 and result.output.between(0, 2).all()


def test_symmetry() -> None:
    model = Interacting()
    batch = random_batch(model.modalities, p_missing=0.0)
    batch.inputs["b"] = batch.inputs["a"].clone()  # a and b enter the model symmetrically
    result = modality_shapley(model, batch)
    np.testing.assert_allclose(result.values["a"], result.values["b"], atol=1e-7)


def test_additive_model_has_closed_form_values() -> None:
    model = Additive(4)
    batch = random_batch(model.modalities, b=10)
    result = modality_shapley(model, batch)
    expected = torch.stack([summed(batch, m) for m in model.modalities], 1) * model.w
    np.testing.assert_allclose(result.values.to_numpy(), expected.numpy(), atol=1e-5)


def test_monte_carlo_above_exact_max() -> None:
    model = Additive(10, pair=0.5)
    batch = random_batch(model.modalities, b=6, f=2)
    exact = modality_shapley(model, batch, exact_max=10)
    mc = modality_shapley(model, batch, exact_max=8, n_permutations=40, seed=3)
    assert mc.method == "permutation" and mc.stderr is not None
    gap = mc.values.sum(axis=1) - (mc.full - mc.base)
    assert gap.abs().max() < 1e-5  # each permutation telescopes
    err = (mc.values - exact.values).abs()
    assert (err <= 4 * mc.stderr + 1e-6).to_numpy().mean() >= 0.95
    again = modality_shapley(model, batch, exact_max=8, n_permutations=40, seed=3)
    pd.testing.assert_frame_equal(mc.values, again.values)
    # a sample's values do not depend on batching
    half = modality_shapley(model, batch.select(range(3)), exact_max=8, n_permutations=40, seed=3)
    np.testing.assert_allclose(half.values.to_numpy(), mc.values.iloc[:3].to_numpy(), atol=1e-9)


def test_planted_signal_ranks_first_for_a_trained_early_fusion() -> None:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    X = {
        "signal": np.c_[2.0 * (y - 0.5) + 0.5 * rng.normal(size=n), rng.normal(size=(n, 3))],
        "noise1": rng.normal(size=(n, 4)),
        "noise2": rng.normal(size=(n, 4)),
    }
    ds = MultiModalDataset.from_arrays(X, y)
    model = EarlyFusion({m: build("tabular", num_features=4, hidden=(16,), out_dim=8) for m in X}, hidden=16)
    batch = ds.collate_fn([ds[i] for i in range(n)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    spec = model.tasks["y"]
    for _ in range(80):
        opt.zero_grad()
        spec.loss(model(batch).prediction, batch.target).backward()
        opt.step()
    result = modality_shapley(model, batch.select(range(200)))
    assert (result.ranking()[0] == "signal").mean() >= 0.95
    assert result.mean_abs().index[0] == "signal"


def test_shapley_errors() -> None:
    batch = random_batch(["a", "b", "c", "d"])
    with pytest.raises(ModfuseError):
        modality_shapley(Interacting(), batch, task="nope")
    with pytest.raises(ModfuseError):
        modality_shapley(Interacting(TaskSpec("regression", 2)), batch)  # which output?
    with pytest.raises(ModfuseError):
        modality_shapley(nn.Linear(2, 2), batch)


# ---------------------------------------------------------------------- captum attributions
class Weighted(nn.Module):
    """Regression on one modality through a fixed weight tensor, plus another modality's sum."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.modalities = ["x", "other"]
        self.tasks = as_task_specs("regression")
        self.weight = weight

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        z = summed(batch, "other")
        if batch.has("x"):
            x = batch.inputs["x"]
            z = z + scatter_rows((x * self.weight).reshape(x.shape[0], -1).sum(1), batch.present["x"])
        return ModelOutput.of(z[:, None], self.tasks)


def batch_with(x: Tensor, present_x: Tensor) -> ModalityBatch:
    b = present_x.shape[0]
    present = {"x": present_x, "other": torch.ones(b, dtype=torch.bool)}
    return ModalityBatch({"x": x[present_x], "other": torch.randn(b, 2)}, present, None, list(range(b)))


def test_integrated_gradients_on_tabular_features() -> None:
    w = torch.tensor([0.5, -2.0, 0.0, 1.0])
    x = torch.randn(8, 4)
    present = torch.tensor([True, False, True, True, True, False, True, True])
    attr = feature_attributions(Weighted(w), batch_with(x, present), "x")
    assert attr.ids == [0, 2, 3, 4, 6, 7]
    torch.testing.assert_close(attr.values, x[present] * w, atol=1e-4, rtol=1e-4)
    assert attr.delta.abs().max() < 1e-4


def test_feature_ablation_finds_the_spectral_band() -> None:
    w = torch.zeros(4, 5, 5)
    w[2] = 1.0  # only band 2 matters
    x = torch.rand(6, 4, 5, 5) + 0.5
    attr = feature_attributions(
        Weighted(w), batch_with(x, torch.ones(6, dtype=torch.bool)), "x", "feature_ablation", group_dim=1
    )
    bands = band_importance(attr.values)
    assert bands.shape == (6, 4) and (bands.argmax(1) == 2).all()
    assert bands[:, [0, 1, 3]].abs().max() == 0
    assert pixel_map(attr.values).shape == (6, 5, 5)


def test_ecg_saliency_localises_lead_and_time() -> None:
    w = torch.zeros(2, 50)
    w[1, 20:30] = 1.0  # lead 1, samples 20..29
    x = torch.randn(3, 2, 50)
    attr = feature_attributions(Weighted(w), batch_with(x, torch.ones(3, dtype=torch.bool)), "x")
    assert (lead_importance(attr.values).argmax(1) == 1).all()
    saliency = time_saliency(attr.values)
    assert saliency[:, :20].abs().max() < 1e-6 and saliency[:, 30:].abs().max() < 1e-6
    assert (saliency[:, 20:30] > 0).any(1).all()


def test_attribution_errors() -> None:
    batch = batch_with(torch.randn(4, 3), torch.tensor([False, False, False, False]))
    with pytest.raises(ModfuseError):
        feature_attributions(Weighted(torch.ones(3)), batch, "x")
    with pytest.raises(ModfuseError):
        feature_attributions(Weighted(torch.ones(3)), batch, "nope")


# ---------------------------------------------------------------------- plots and report
def test_plots_open(tmp_path) -> None:
    model = Interacting()
    result = modality_shapley(model, random_batch(model.modalities, b=6))
    figures = {
        "waterfall": plot_waterfall(result, "s1"),
        "cohort": plot_cohort(result),
        "bands": plot_band_importance(torch.rand(3, 4), ["B02", "B03", "B04", "B08"]),
        "ecg": plot_ecg_saliency(torch.randn(2, 100), torch.rand(2, 100), fs=100.0, lead_names=["I", "II"]),
    }
    for name, fig in figures.items():
        fig.savefig(tmp_path / f"{name}.png")
        assert mpimg.imread(tmp_path / f"{name}.png").shape[0] > 50
    with pytest.raises(ModfuseError):
        plot_waterfall(result, "missing-id")


def test_explain_report_writes_tables_and_plots(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 60
    X = {"labs": rng.normal(size=(n, 3)), "ecg": rng.normal(size=(n, 2, 16)), "img": rng.normal(size=(n, 3, 4, 4))}
    X["labs"][rng.random(n) < 0.3] = np.nan  # some samples lack the labs
    ds = MultiModalDataset.from_arrays(X, rng.integers(0, 2, n))
    dm = MultiModalDataModule(ds, batch_size=16)
    encoders = {
        "labs": build("tabular", num_features=3, hidden=(8,), out_dim=4),
        "ecg": wrap(nn.Sequential(nn.Flatten(), nn.Linear(32, 4)), out_dim=4),
        "img": wrap(nn.Sequential(nn.Flatten(), nn.Linear(48, 4)), out_dim=4),
    }
    table = explain_report(EarlyFusion(encoders, hidden=8), dm, tmp_path, n_waterfalls=2, max_attr_samples=4)
    assert len(table) == len(dm.splits["test"]) and {"labs", "ecg", "img", "base", "full"} <= set(table.columns)
    saved = pd.read_csv(tmp_path / "shapley.csv")
    assert len(saved) == len(table)
    gap = saved[["labs", "ecg", "img"]].sum(axis=1) - (saved["full"] - saved["base"])
    assert gap.abs().max() < 1e-5
    assert len(pd.read_csv(tmp_path / "attr_labs.csv")) == 3
    assert len(pd.read_csv(tmp_path / "attr_ecg.csv")) == 2
    assert len(pd.read_csv(tmp_path / "attr_img.csv")) == 3
    for name in ("shapley_cohort", "waterfall_0", "waterfall_1", "attr_labs", "attr_ecg_saliency", "attr_img_bands"):
        assert mpimg.imread(tmp_path / f"{name}.png").ndim == 3, name
    assert not math.isnan(saved["full"].iloc[0])


# ---------------------------------------------------------------------- labels in the user's terms
def _tick_texts(ax, axis: str = "x") -> list[str]:
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks]


def test_waterfall_value_labels_stay_inside_the_axes() -> None:
    model = Interacting()
    result = modality_shapley(model, random_batch(model.modalities, b=6))
    for sid in result.values.index:
        fig = plot_waterfall(result, sid)
        fig.canvas.draw()
        ax = fig.axes[0]
        box = ax.get_window_extent()
        labels = [t for t in ax.texts if t.get_text().strip()]
        assert len(labels) == len(model.modalities) + 2  # every bar carries its value
        for text in labels:
            extent = text.get_window_extent()
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (sid, text.get_text())
        assert _tick_texts(ax, "y")[0] == "f(no modality)" and _tick_texts(ax, "y")[-1] == "f(all)"


def test_feature_importance_names_every_column_despite_missing_cells() -> None:
    from modfuse.interpret import plot_feature_importance

    values = torch.tensor([[1.0, float("nan"), 3.0], [3.0, 1.0, float("nan")]])  # NaN: a missing cell
    fig = plot_feature_importance(values, ["age", "troponin", "crp"], title="labs")
    ax = fig.axes[0]
    assert _tick_texts(ax, "y") == ["crp", "age", "troponin"]  # sorted, largest first
    assert [p.get_width() for p in ax.patches] == [3.0, 2.0, 1.0] and ax.get_title() == "labs"


def test_band_importance_ticks_are_sentinel2_band_names_and_wavelengths(shared_data) -> None:
    from modfuse.data.readers import RasterChipSource
    from modfuse.interpret import modality_info

    bands = ["B02", "B03", "B04", "B08", "B11"]
    chips = RasterChipSource(shared_data / "sentinel2-l1c", size=16, n_random=2, seed=0, bands=bands)
    ds = MultiModalDataset({"s2": chips}, targets=np.array([0, 1]), ids=chips.ids)
    info = modality_info(ds, "s2")
    assert info.band_names == bands and info.wavelengths == [492.4, 559.8, 664.6, 832.8, 1613.7]
    fig = plot_band_importance(torch.arange(5.0), info.band_names, info.wavelengths)
    ticks = _tick_texts(fig.axes[0])
    assert ticks == ["B02\n492 nm", "B03\n560 nm", "B04\n665 nm", "B08\n833 nm", "B11\n1614 nm"]
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [0.0, 1.0, 2.0, 3.0, 4.0]  # one bar per band, in channel order
    with pytest.raises(ModfuseError, match="4 wavelengths for 5 bands"):
        plot_band_importance(torch.arange(5.0), bands, info.wavelengths[:4])


def test_pixel_heatmap_over_a_real_chip_and_a_grey_xray(shared_data) -> None:
    from pydicom.data import get_testdata_file

    from modfuse.data.readers import DicomSource, RasterChipSource
    from modfuse.interpret import plot_pixel_attribution

    bands = ["B02", "B03", "B04", "B08"]
    chip = RasterChipSource(shared_data / "sentinel2-l1c", size=16, n_random=1, seed=0, bands=bands).load("chip0")
    attr = torch.zeros(4, 16, 16)
    attr[3, 2:5, 10:12] = -2.0  # NIR hot spot: the heatmap must put its maximum there
    attr[0, 8, 8] = 1.0
    fig = plot_pixel_attribution(chip, attr, bands)
    left, right = fig.axes[:2]
    assert left.get_title() == "input (R, G, B = B04, B03, B02)"  # true colour picked by band name
    heat = right.images[-1].get_array()
    assert heat.shape == (16, 16) and float(heat.max()) == 1.0
    assert np.allclose(heat, pixel_map(attr[None])[0].numpy() / 2.0)
    assert float(heat[8, 8]) == pytest.approx(0.5) and float(heat[0, 0]) == 0.0
    xray = DicomSource({"ct": get_testdata_file("CT_small.dcm")}).load("ct")
    grey = plot_pixel_attribution(xray, torch.rand_like(xray.float()))
    assert grey.axes[0].images[0].get_array().ndim == 2 and grey.axes[0].get_title() == "input"
    with pytest.raises(ModfuseError, match="expected image"):
        plot_pixel_attribution(chip, torch.zeros(4, 8, 8))


def test_ecg_plot_lead_names_and_seconds_from_a_wfdb_record(shared_data) -> None:
    from modfuse.data.readers import WfdbWindowSource
    from modfuse.interpret import modality_info

    src = WfdbWindowSource({"100": shared_data / "ecg-wfdb" / "100"}, window=2.0)
    info = modality_info(MultiModalDataset({"ecg": src}, targets=np.zeros(len(src)), ids=src.ids), "ecg")
    assert info.lead_names == ["MLII", "V5"] and info.fs == 360.0
    signal = src.load("100:0")
    assert signal.shape == (2, 720)
    fig = plot_ecg_saliency(signal, torch.rand(2, 720), fs=info.fs, lead_names=info.lead_names)
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["MLII", "V5"]
    assert axes[-1].get_xlabel() == "time (s)"
    line = axes[0].lines[0].get_xdata()
    assert line[0] == 0.0 and line[-1] == pytest.approx(719 / 360)


def test_dicom_waveform_lead_names(shared_data) -> None:
    from pydicom.data import get_testdata_file

    from modfuse.data.readers import DicomWaveformSource
    from modfuse.interpret import modality_info

    src = DicomWaveformSource({"e": get_testdata_file("waveform_ecg.dcm")}, fs=500)
    info = modality_info(MultiModalDataset({"ecg": src}, targets=np.zeros(1), ids=["e"]), "ecg")
    assert info.lead_names[:3] == ["I", "II", "III"] and len(info.lead_names) == 12 and info.fs == 500.0


def test_time_series_attribution_over_real_dates(shared_data) -> None:
    from modfuse.data.readers import EOPatchSeriesSource
    from modfuse.interpret import modality_info, plot_time_attribution

    patch = shared_data / "eopatch-slovenia"
    pixels = [(r, c) for r in range(0, 40, 8) for c in range(0, 40, 8)]
    series = EOPatchSeriesSource(patch, pixels=pixels)
    ds = MultiModalDataset({"ndvi": series}, targets=np.arange(len(pixels)) % 2, ids=series.ids)
    batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    model = EarlyFusion({"ndvi": build("timeseries", channels=1, hidden=16, layers=1, out_dim=8)}, "binary")
    attr = feature_attributions(model, batch, "ndvi", n_steps=8)
    assert attr.values.shape == (len(pixels), 68, 1) and torch.isfinite(attr.values).all()
    info = modality_info(ds, "ndvi")
    assert len(info.timestamps) == 68 and str(info.timestamps[0].date()) == "2015-07-11"
    valid = batch.inputs["ndvi"]["valid"][0]
    fig = plot_time_attribution(attr.inputs[0], attr.values[0], info.timestamps, valid, ["NDVI"])
    top, bottom = fig.axes
    assert len(bottom.patches) == 68  # one bar per date
    gap_days = np.diff(info.timestamps.to_numpy()).min() / np.timedelta64(1, "D")
    assert np.allclose([b.get_width() for b in bottom.patches], 0.8 * gap_days)  # bars in days: visible
    heights = np.array([b.get_height() for b in bottom.patches])
    assert np.allclose(heights, attr.values[0].abs().sum(1).numpy(), atol=1e-7)
    observed = top.lines[0]
    assert len(observed.get_xdata()) == int(valid.sum())  # cloudy dates are not drawn as data
    assert top.lines[0].get_label() == "NDVI" and bottom.get_xlabel() == "date"


def test_sequential_plot_follows_the_contributions() -> None:
    from modfuse.fusion import build as build_fusion
    from modfuse.interpret import plot_sequential, prediction_path

    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=(30, 3)), "b": rng.normal(size=(30, 2))}
    X["b"][:5] = np.nan  # the first 5 samples lack b
    ds = MultiModalDataset.from_arrays(X, rng.integers(0, 2, 30))
    encoders = {m: build("tabular", num_features=x.shape[1], out_dim=8) for m, x in X.items()}
    model = build_fusion("sequential", encoders=encoders, tasks="binary", state_dim=8).eval()
    contributions = model.contributions(ds.collate_fn([ds[i] for i in range(30)]))
    path = prediction_path(contributions)
    frame = contributions.to_frame()
    assert np.allclose(path[:, -1], frame["final"], atol=1e-6) and np.allclose(path[:, 0], frame["initial"])
    assert np.allclose(path[:5, 2], path[:5, 1])  # absent modality: a flat step
    per_sample = plot_sequential(contributions, samples=[0, 7])
    ax = per_sample.axes[0]
    assert _tick_texts(ax) == ["prior", "a", "b"]
    assert [line.get_label() for line in ax.get_lines()[::3]] == ["0", "7"]
    assert np.allclose(ax.get_lines()[0].get_ydata(), path[0])
    hollow = ax.get_lines()[2]  # sample 0 lacks b: its last point is hollow
    assert hollow.get_markerfacecolor() == "none" and len(hollow.get_xdata()) == 1
    cohort = plot_sequential(contributions)  # 30 samples > max_lines: the cohort view
    bars = cohort.axes[1].patches
    assert len(bars) == 2 and np.allclose([b.get_height() for b in bars], np.abs(np.diff(path, axis=1)).mean(0))


def test_explain_report_uses_reader_names_and_plots_sequential_steps(tmp_path) -> None:
    from modfuse.datasets import synthetic_cohort
    from modfuse.datasets.synthetic import LEADS
    from modfuse.fusion import build as build_fusion

    cohort = synthetic_cohort(24, seed=0, root=tmp_path / "cohort")
    dm = MultiModalDataModule(cohort.dataset(), split="stratified", batch_size=8, seed=0)
    encoders = {
        "xray": build("xray", in_channels=1, out_dim=8),
        "ecg": build("ecg", leads=12, widths=(8,), blocks=1, out_dim=8),
        "labs": build("tabular", num_features=5, hidden=(8,), out_dim=8),
    }
    model = build_fusion("sequential", encoders=encoders, tasks="binary", state_dim=8)
    explain_report(model, dm, tmp_path / "out", n_waterfalls=1, max_attr_samples=2, batch_size=8)
    out = tmp_path / "out"
    assert pd.read_csv(out / "attr_labs.csv")["feature"].tolist() == ["age", "troponin", "crp", "creatinine", "sex"]
    assert pd.read_csv(out / "attr_ecg.csv")["lead"].tolist() == list(LEADS)
    steps = pd.read_csv(out / "sequential_steps.csv")
    assert steps.columns.tolist() == ["id", "prior", "xray", "ecg", "labs"]
    for name in ("attr_xray_pixels", "attr_ecg_saliency", "sequential_cohort", "sequential_samples"):
        assert mpimg.imread(out / f"{name}.png").ndim == 3, name
    assert not (out / "attr_xray_bands.png").exists()  # one grey band: a heatmap, not a one-bar chart
