"""benchmarks/missing.py helpers: test-time MCAR and merging runs into one table (no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import missing


def test_mcar_keeps_one_modality_and_only_removes() -> None:
    rng = np.random.default_rng(0)
    X = {m: rng.normal(size=(200, 3)).astype(np.float32) for m in ("a", "b", "c")}
    X["b"][:50] = np.nan  # naturally missing
    out = missing.mcar(X, 0.75, seed=1)
    before, after = missing.present(X), missing.present(out)
    assert not (after & ~before).any()
    assert after.any(1).all()
    removed = (before & ~after).sum() / before.sum()
    assert 0.5 < removed < 0.75  # 0.75 minus the rows that must keep one
    assert np.array_equal(out["a"][after[:, 0]], X["a"][after[:, 0]])


def _run(folder, dataset: str, mcar_rows: list[dict], gap_rows: list[dict]) -> None:
    folder.mkdir()
    pd.DataFrame(mcar_rows).to_csv(folder / "missing.csv", index=False)
    pd.DataFrame(gap_rows).to_csv(folder / "missing_subset_gap.csv", index=False)
    record = {
        "command": f"python -m benchmarks.missing --only {dataset}",
        "datasets": [dataset],
        "kinds": {dataset: "classification"},
        "folds": 2,
        "max_epochs": 3,
        "patience": 2,
        "strategies": ["early"],
        "wall_s": 1,
        "finished": [f"{dataset} fold 0", f"{dataset} fold 1"],
    }
    (folder / "missing_run.json").write_text(json.dumps(record), encoding="utf-8")


def test_merge_runs_states_targets_per_data_set(tmp_path) -> None:
    for name, full_new in (("one", 0.96), ("two", 0.90)):
        rows, gaps = [], []
        for fold in (0, 1):
            for strategy, setting, full, half in (
                ("sklearn-logreg-late", "-", 0.95, 0.93),
                ("early", "old", 0.95, 0.90),
                ("early", "new", full_new, 0.94),
            ):
                for rate, value in ((0.0, full), (0.5, half)):
                    rows.append(
                        {
                            "dataset": name,
                            "fold": fold,
                            "strategy": strategy,
                            "setting": setting,
                            "rate": rate,
                            "value": value,
                        }
                    )
            for subset, fused, spec in (("a", 0.80, 0.81), ("b", 0.70, 0.75), ("a+b", full_new, full_new)):
                gaps.append(
                    {
                        "dataset": name,
                        "fold": fold,
                        "strategy": "early",
                        "setting": "new",
                        "subset": subset,
                        "fused": fused,
                        "specialist": spec,
                        "gap": spec - fused,
                        "gap_relative": (spec - fused) / spec,
                    }
                )
        _run(tmp_path / name, name, rows, gaps)
    path = missing.merge([tmp_path / "one", tmp_path / "two"], tmp_path / "out", "merge", ["scope note"])
    text = path.read_text(encoding="utf-8")
    targets = missing.targets(
        pd.read_csv(tmp_path / "out" / "missing.csv"),
        pd.read_csv(tmp_path / "out" / "missing_subset_gap.csv"),
        {"one": "classification", "two": "classification"},
    ).set_index("dataset")
    # mean gap (1 + 5 + 0) / 3 = 2 points, worst 5; drops: new 0.96 - 0.94 = 2 vs sklearn 2
    assert targets.loc["one", "mean gap"] == "2.00 ✗"
    assert targets.loc["one", "worst subset gap"] == "5.00 ✗"
    assert targets.loc["one", "full: new - old"] == "+1.00 ✓"
    assert targets.loc["one", "drop @0.5 vs sklearn"] == "2.0 vs 2.0 ✓"
    assert targets.loc["two", "full: new - old"] == "-5.00 ✗"
    assert targets.loc["two", "drop @0.5 vs sklearn"] == "-4.0 vs 2.0 ✓"
    assert "python -m benchmarks.missing --only two" in text and "scope note" in text
    assert len(pd.read_csv(tmp_path / "out" / "missing.csv")) == 2 * 2 * 3 * 2


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_mcar_extreme_rates(rate: float) -> None:
    X = {"a": np.ones((20, 2), np.float32), "b": np.ones((20, 2), np.float32)}
    after = missing.present(missing.mcar(X, rate, seed=0))
    assert after.sum(1).tolist() == ([2] * 20 if rate == 0.0 else [1] * 20)
