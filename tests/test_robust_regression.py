"""Missingness-aware training must not cost a regression model its complete-data accuracy.

On ESOL (graph + descriptors) the robust default (modality dropout 0.3 + unimodal losses 0.5)
made early fusion 41 % worse with every modality present: the GIN graph encoder's outputs have
row norms in the hundreds next to single digits for the tabular encoder, and once rows without
the graph are trained, the fused model on complete rows followed the graph alone. Early fusion
now standardises per row the features of each modality whose encoder has no linear path
(`modfuse.fusion.heads.scale_free`), late fusion with running statistics
(`modfuse.fusion.heads.FeatureStandardizer`); a linear-path encoder's rows pass unchanged in early
fusion and are standardised per row in late fusion.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from modfuse.data.batch import ModalityBatch
from modfuse.fusion.early import EarlyFusion
from modfuse.fusion.heads import SCALE_FREE_MIN_WIDTH, FeatureStandardizer, scale_free
from modfuse.fusion.late import LateFusion


class Loud(nn.Module):
    """A linear encoder whose outputs sit far from zero and at a large scale (like the summed
    node states of a graph encoder): ``gain * (x W + b) + offset``."""

    def __init__(self, in_dim: int, out_dim: int = 16, gain: float = 100.0, offset: float = 100.0) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.lin = nn.Linear(in_dim, out_dim)
        self.gain, self.offset = gain, offset

    def forward(self, x: Tensor) -> Tensor:
        return self.gain * self.lin(x) + self.offset


def _batch(n: int = 6) -> ModalityBatch:
    g = torch.Generator().manual_seed(0)
    present_b = torch.tensor([True, False, True, True, False, True])[:n]
    inputs = {"a": torch.randn(n, 4, generator=g), "b": torch.randn(int(present_b.sum()), 3, generator=g)}
    present = {"a": torch.ones(n, dtype=torch.bool), "b": present_b}
    return ModalityBatch(inputs, present, torch.zeros(n), list(range(n)))


def _fused(cls: type[nn.Module], gain: float, offset: float) -> Tensor:
    torch.manual_seed(0)
    model = cls(encoders={"a": Loud(4, gain=1.0, offset=0.0), "b": Loud(3, gain=1.0, offset=0.0)}, tasks="regression")
    model.encoders["a"].gain, model.encoders["a"].offset = gain, offset
    with torch.no_grad():
        model.train()(_batch())  # one training batch sets the running statistics
        return model.eval()(_batch()).prediction


def test_fused_prediction_ignores_an_encoders_output_scale() -> None:
    # the same weights, modality a's encoder output multiplied by 1000 and shifted by 500: the
    # early and late fusion predictions stay the same (before the fix they moved by hundreds)
    for cls in (EarlyFusion, LateFusion):
        quiet = _fused(cls, 1.0, 0.0)
        loud = _fused(cls, 1000.0, 500.0 * 1000.0)
        assert torch.allclose(quiet, loud, atol=1e-3), (cls.__name__, quiet.ravel(), loud.ravel())
        assert float(quiet.std()) > 1e-3  # the rows differ: the check compares real predictions


def test_running_statistics_are_an_affine_map_at_inference() -> None:
    """Every row is mapped on its own (batch-invariant) and affinely, so a linear path stays
    linear; training batches move the statistics by ``momentum``; gradients skip them."""
    std = FeatureStandardizer(3, momentum=0.5)
    first = torch.tensor([[1.0, 10.0, -4.0], [3.0, 30.0, -2.0]])
    std.train()(first)
    torch.testing.assert_close(std.mean, first.mean(0))
    second = first + 2.0
    std(second)
    torch.testing.assert_close(std.mean, first.mean(0) + 1.0)  # halfway to the new batch's mean
    assert int(std.batches) == 2
    std.eval()
    x = torch.randn(5, 3, requires_grad=True)
    out = std(x)
    torch.testing.assert_close(torch.cat([std(x[i : i + 1]) for i in range(5)]), out)
    scale = torch.rsqrt(std.var + std.eps)
    torch.testing.assert_close(out, (x - std.mean) * scale)
    out.sum().backward()
    torch.testing.assert_close(x.grad, scale.expand(5, 3))
    before = std.mean.clone()
    std(x)  # inference leaves the statistics alone
    assert torch.equal(std.mean, before)


def test_early_features_standardise_present_rows_and_zero_absent_ones() -> None:
    torch.manual_seed(0)
    model = EarlyFusion(encoders={"a": Loud(4), "b": Loud(3)}, tasks="regression").eval()
    batch = _batch()
    feats = model.features(batch)  # [a (16), present a, b (16), present b]
    a, b = feats[:, :16], feats[:, 17:33]
    assert torch.allclose(a.mean(1), torch.zeros(6), atol=1e-4)
    assert torch.allclose(a.var(1, unbiased=False), torch.ones(6), atol=1e-3)
    rows = batch.present["b"]
    assert torch.allclose(b[rows].var(1, unbiased=False), torch.ones(int(rows.sum())), atol=1e-3)
    assert bool((b[~rows] == 0).all()) and feats[:, 33].tolist() == rows.float().tolist()


def test_narrow_features_pass_unchanged() -> None:
    # one or two features per row would be flattened to constants by a per-row standardisation
    x = torch.tensor([[3.0], [-2.0]])
    assert torch.equal(scale_free(x), x)
    wide = torch.arange(2 * SCALE_FREE_MIN_WIDTH, dtype=torch.float32).reshape(2, -1)
    assert torch.allclose(scale_free(wide), scale_free(wide[:1]).expand(2, -1), atol=1e-5)  # rows shifted by 8


def test_early_features_of_a_linear_path_encoder_pass_unchanged() -> None:
    """A tabular encoder with a linear path (the estimators' default) keeps its rows: a per-row
    standardisation would divide each modality's linear score by that row's own norm, so early
    fusion of two linear encoders would no longer hold a linear model (issue 20)."""
    from modfuse.encoders.tabular import TabularEncoder
    from modfuse.fusion.heads import has_linear_path

    torch.manual_seed(0)
    tab = TabularEncoder(4, hidden=[8], out_dim=16, linear=True)
    assert has_linear_path(tab) and not has_linear_path(TabularEncoder(4, hidden=[8], out_dim=16))
    assert not has_linear_path(Loud(3))
    model = EarlyFusion(encoders={"a": tab, "b": Loud(3)}, tasks="regression").eval()
    assert model.row_standardised == {"a": False, "b": True}
    batch = _batch()
    with torch.no_grad():
        feats = model.features(batch)
        torch.testing.assert_close(feats[:, :16], tab(batch.inputs["a"]))
        # the loud encoder without a linear path is still standardised per row
        rows = batch.present["b"]
        b = feats[:, 17:33]
        torch.testing.assert_close(b[rows], scale_free(model.encoders["b"](batch.inputs["b"])))
    # a fresh encoder is exactly its linear path, so its fused features are linear in its inputs
    x = batch.inputs["a"]
    scaled = {k: ModalityBatch({"a": k * x, "b": batch.inputs["b"]}, batch.present) for k in (0.0, 1.0, 2.0)}
    with torch.no_grad():
        f0, f1, f2 = (model.features(scaled[k])[:, :16] for k in (0.0, 1.0, 2.0))
    torch.testing.assert_close(f2 - f0, 2 * (f1 - f0))


def test_late_heads_read_a_linear_path_per_row_and_a_loud_encoder_standardised() -> None:
    """`LateFusion(standardize="auto")`: a linear-path encoder's head reads its features
    standardised per row (`scale_free`), an encoder without one through running statistics; a
    dict chooses per modality and names only the model's modalities."""
    from modfuse.encoders.tabular import TabularEncoder
    from modfuse.errors import ModfuseError

    torch.manual_seed(0)
    tab = TabularEncoder(4, hidden=[8], out_dim=16, linear=True)
    model = LateFusion(encoders={"a": tab, "b": Loud(3)}, tasks="regression")
    batch = _batch()
    with torch.no_grad():
        model.train()(batch)
        model.eval()
        logits = model.unimodal_logits(batch, "a").logits["y"]
        torch.testing.assert_close(logits, model.heads["a"](scale_free(tab(batch.inputs["a"])))["y"])
        loud = model.unimodal_logits(batch, "b").logits["y"]
        standardised = model.standardize["b"](model.encoders["b"](batch.inputs["b"]))
        assert float(standardised.abs().max()) < 10.0  # the encoder's outputs are in the hundreds
        torch.testing.assert_close(loud, model.heads["b"](standardised)["y"])
        unchanged = LateFusion(encoders={"a": tab, "b": Loud(3)}, tasks="regression", standardize={"a": "none"})
        unchanged.eval()
        features = tab(batch.inputs["a"])
        torch.testing.assert_close(
            unchanged.unimodal_logits(batch, "a").logits["y"], unchanged.heads["a"](features)["y"]
        )
        assert isinstance(unchanged.standardize["b"], FeatureStandardizer)
    with pytest.raises(ModfuseError, match=r"\['c'\]"):
        LateFusion(encoders={"a": tab}, tasks="regression", standardize={"c": "row"})
    with pytest.raises(ModfuseError, match="standardize must be one of"):
        LateFusion(encoders={"a": tab}, tasks="regression", standardize="batch")
