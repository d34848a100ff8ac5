"""The one standardisation (`modfuse.data.transforms.Standardizer`): its rule for zero or
undefined spread, NaN/inf cells, statistics from training rows only, and its users."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


def test_standardizer_rule_zero_spread_nan_cells_and_training_rows_only() -> None:
    """One rule: finite training cells only; a zero or undefined spread becomes 1."""
    from modfuse.data.transforms import Standardizer

    values = np.array(
        [
            [1.0, 5.0, np.nan, 0.1, 2.0],
            [3.0, 5.0, np.nan, 0.1, np.nan],
            [np.nan, 5.0, np.nan, 0.1, np.inf],
            [100.0, -7.0, 4.0, 9.0, 1000.0],  # a test row: must not move the statistics
        ]
    )
    s = Standardizer.fit(values, rows=[0, 1, 2])
    # column 0: NaN ignored -> mean of (1, 3), population std 1
    # column 1: constant -> std 1 (0-centred constants); column 2: no finite cell -> mean 0, std 1
    # column 3: a constant whose float std is ~1e-17, not 0 -> still counts as zero spread
    # column 4: inf ignored like NaN -> one finite cell, spread 0 -> 1
    np.testing.assert_allclose(s.mean, [2.0, 5.0, 0.0, 0.1, 2.0])
    np.testing.assert_allclose(s.std, [1.0, 1.0, 1.0, 1.0, 1.0])
    z = s.transform(values[:3].astype(np.float32))
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[:2, :2], [[-1.0, 0.0], [1.0, 0.0]], atol=1e-6)
    assert np.isnan(z[2, 0]) and np.isnan(z[:, 2]).all()  # NaN (missing) stays NaN
    # a boolean mask selects the same training rows; with the test row the statistics differ
    assert Standardizer.fit(values, rows=np.array([True, True, True, False])).to_dict() == s.to_dict()
    assert Standardizer.fit(values).mean[0] == pytest.approx(104 / 3)


def test_standardizer_tensors_inverse_keep_columns_and_plain_lists() -> None:
    from modfuse.data.transforms import Standardizer

    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 3))
    x[:, 2] = rng.integers(0, 4, size=50)  # category codes: kept as they are
    s = Standardizer.fit(torch.from_numpy(x), keep=[2])
    assert s.mean[2] == 0.0 and s.std[2] == 1.0
    t = torch.from_numpy(x).float()
    z = s(t)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z[:, 2], t[:, 2])
    torch.testing.assert_close(z[:, :2].mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, :2].std(0, unbiased=False), torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.inverse(z), t, atol=1e-5, rtol=0)
    state = s.to_dict()
    assert all(type(v) is float for v in state["mean"] + state["std"])  # JSON/config ready
    again = Standardizer.from_dict(json.loads(json.dumps(state)))
    np.testing.assert_array_equal(again.transform(x), s.transform(x))
    # explicit statistics get the same spread rule
    assert Standardizer([1.0, 2.0], [0.0, float("nan")]).std.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="one length"):
        Standardizer([0.0, 1.0], [1.0])


def test_tabular_preprocessor_and_estimator_encoder_follow_the_rule() -> None:
    """The tabular reader's statistics and the estimators' automatic encoder are the Standardizer's."""
    import pandas as pd

    from modfuse.data.readers.tabular import TabularPreprocessor, TabularSchema
    from modfuse.data.transforms import Standardizer
    from modfuse.encoders.auto import auto_encoder
    from modfuse.training.sizing import size_for

    frame = pd.DataFrame({"a": [1.0, 3.0, np.nan, "x"], "b": [2.0, 2.0, 2.0, 2.0]})
    pre = TabularPreprocessor.fit(frame, TabularSchema(numeric=["a", "b"]))
    assert pre.mean == {"a": 2.0, "b": 2.0} and pre.std == {"a": 1.0, "b": 1.0}

    values = np.array([[1.0, 2.0], [3.0, 2.0], [np.nan, 2.0], [50.0, 9.0]], dtype=np.float32)
    encoder = auto_encoder(values, np.array([0, 1, 2]), "labs", size_for)
    expected = Standardizer.fit(values, rows=[0, 1, 2])
    np.testing.assert_allclose(encoder.mean.numpy(), expected.mean, rtol=1e-6)
    np.testing.assert_allclose(encoder.std.numpy(), expected.std, rtol=1e-6)
    assert encoder.std.tolist() == [1.0, 1.0]
