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
