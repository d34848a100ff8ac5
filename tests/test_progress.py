"""Progress bars: shown in terminals and notebooks, quiet in CI or when asked, items unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import rich.progress

from modfuse.data.dataset import MultiModalDataset
from modfuse.utils.progress import progress, progress_enabled


def test_default_is_quiet_in_ci_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODFUSE_PROGRESS", raising=False)
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled()
    assert progress_enabled(verbose=True)
    monkeypatch.setenv("MODFUSE_PROGRESS", "1")
    assert progress_enabled() and not progress_enabled(verbose=False)
    monkeypatch.setenv("MODFUSE_PROGRESS", "0")
    monkeypatch.delenv("CI")
    assert not progress_enabled()


@pytest.mark.parametrize("verbose", [True, False])
def test_sweep_and_shapley_report_progress_only_when_enabled(monkeypatch: pytest.MonkeyPatch, verbose: bool) -> None:
    from modfuse.encoders import build
    from modfuse.fusion import EarlyFusion
    from modfuse.interpret import modality_shapley
    from modfuse.robust import sweep

    bars: list[tuple[str, int | None, int]] = []

    def spy(items, description, total=None, transient=False):  # records what rich was asked to show
        seen = list(items)
        bars.append((description, total, len(seen)))
        yield from seen

    monkeypatch.setattr(rich.progress, "track", spy)
    rng = np.random.default_rng(0)
    data = {"a": rng.normal(size=(40, 3)), "b": rng.normal(size=(40, 2))}
    ds = MultiModalDataset.from_arrays(data, rng.integers(0, 2, 40))
    model = EarlyFusion({m: build("tabular", num_features=x.shape[1], out_dim=4) for m, x in data.items()}, "binary")
    table = sweep(model, ds, rates=[0.0, 0.5], seeds=[0, 1], verbose=verbose)
    values = modality_shapley(model, ds, batch_size=16, verbose=verbose).values
    assert len(table) == 4 and values.shape == (40, 2)  # the same results with or without a bar
    if verbose:
        assert bars == [("missingness sweep", 4, 4), ("Shapley values", None, 3)]
    else:
        assert bars == []


def test_progress_yields_every_item_in_order() -> None:
    assert list(progress(iter(range(5)), "x", verbose=True)) == list(range(5))
    assert list(progress(range(5), "x", verbose=False)) == list(range(5))


def _tiny_data(n: int = 40) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(n, 3)), "b": rng.normal(size=(n, 2))}, rng.integers(0, 2, n)


@pytest.mark.parametrize("shown", [True, False])
def test_estimator_shows_lightning_progress_by_default_outside_ci(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], shown: bool
) -> None:
    from modfuse.estimators import FusionClassifier

    monkeypatch.delenv("MODFUSE_PROGRESS", raising=False)
    if shown:
        monkeypatch.setenv("MODFUSE_PROGRESS", "1")  # what a notebook or terminal gets by default
    else:
        monkeypatch.setenv("CI", "true")
    X, y = _tiny_data()
    FusionClassifier(max_epochs=2, batch_size=16, device="cpu").fit(X, y)
    err = "".join(capfd.readouterr())
    assert ("Epoch 1" in err) is shown, err[-500:]


def test_fit_block_progress_follows_the_default(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from modfuse import LegoBlock
    from modfuse.lego.workflow import fit_block

    X, y = _tiny_data()
    ds = MultiModalDataset.from_arrays(X, y.astype(np.float32))
    monkeypatch.delenv("CI", raising=False)
    for forced, expected in (("1", True), ("0", False)):
        monkeypatch.setenv("MODFUSE_PROGRESS", forced)
        block = LegoBlock({"name": "tabular", "num_features": 3, "out_dim": 8}, "a", latent_shape=(4, 8), depth=1)
        fit_block(block, ds, max_epochs=1, calibrate=False)
        err = "".join(capfd.readouterr())
        assert ("Epoch 0" in err) is expected, (forced, err[-500:])
