"""Baseline strategies (early, late, attention, unimodal) behind the shared FusionModel interface."""

from __future__ import annotations

import itertools

import lightning as L
import numpy as np
import pytest
import torch
from helpers import CountingEncoder, without_modality
from torch import nn

from modfuse import FusionTask, ModfuseError, MultiModalDataModule, MultiModalDataset, TaskSpec
from modfuse.data.batch import ModalityBatch
from modfuse.data.collate import collate_samples
from modfuse.fusion import AttentionFusion, FusionModel, LateFusion, ModelOutput, Unimodal, available, build

WIDTHS = {"a": 3, "b": 4, "c": 2}
# every registered strategy, so a newly registered one meets the same contract automatically
STRATEGIES = available()
SINGLE_TASK = {"lego-merge", "lego-fuse"}  # a Lego block predicts one task


def encoders() -> dict[str, CountingEncoder]:
    return {m: CountingEncoder(w) for m, w in WIDTHS.items()}


def make(strategy: str, tasks: object = "binary", encs: dict[str, nn.Module] | None = None) -> nn.Module:
    kwargs = {"modality": "b"} if strategy == "unimodal" else {}
    if strategy == "sequential":
        kwargs = {"state_dim": 8}
    return build(strategy, encoders=encs or encoders(), tasks=tasks, **kwargs)


def all_patterns_batch(multi: bool = False) -> ModalityBatch:
    """One sample per presence pattern of a, b, c (8 samples; sample 0 has no modality)."""
    gen = torch.Generator().manual_seed(3)
    samples = []
    for i, pattern in enumerate(itertools.product([False, True], repeat=3)):
        inputs = {m: torch.randn(w, generator=gen) if on else None for (m, w), on in zip(WIDTHS.items(), pattern)}
        y = {"cls": torch.tensor(float(i % 2)), "kind": torch.tensor(i % 3)} if multi else torch.tensor(float(i % 2))
        samples.append({"id": i, "inputs": inputs, "target": y})
    return collate_samples(samples, list(WIDTHS))


def test_all_strategies_registered() -> None:
    assert set(STRATEGIES) <= set(available())
    for s in STRATEGIES:
        model = make(s)
        assert isinstance(model, FusionModel)
        assert set(model.modalities) <= set(WIDTHS)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_invariance_and_empty_sample(strategy: str) -> None:
    model = make(strategy).eval()
    batch = all_patterns_batch()
    with torch.no_grad():
        output = model(batch)
        together = output.prediction
        alone = torch.cat([model(batch.select([i])).prediction for i in range(batch.batch_size)])
    # every strategy returns the one output type, logits keyed by task
    assert isinstance(output, ModelOutput) and list(output.logits) == list(model.tasks)
    assert together.shape == (8, 1) and torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_encoders_see_only_present_rows(strategy: str) -> None:
    model = make(strategy)
    batch = all_patterns_batch()
    model(batch)
    # the encoders the model runs (Lego blocks hold their own copies of the ones given)
    used = {m.num_features: m for m in model.modules() if isinstance(m, CountingEncoder)}
    for name in model.modalities:
        assert used[WIDTHS[name]].rows == [int(batch.present[name].sum())], name


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_multitask_outputs(strategy: str) -> None:
    tasks = {"cls": TaskSpec("binary"), "kind": TaskSpec("multiclass", 3)}
    if strategy in SINGLE_TASK:
        with pytest.raises(ModfuseError, match="predict one task"):
            make(strategy, tasks)
        return
    model = make(strategy, tasks)
    batch = all_patterns_batch(multi=True)
    out = model(batch).logits
    assert out["cls"].shape == (8, 1) and out["kind"].shape == (8, 3)
    task = FusionTask(model)
    loss = task.compute_loss(model(batch), batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_training_refuses_a_model_that_returns_bare_logits_and_names_it() -> None:
    class BareLogits(nn.Module):
        """A user model that returns a tensor instead of the ModelOutput every model returns."""

        def __init__(self) -> None:
            super().__init__()
            self.modalities, self.tasks = list(WIDTHS), {"y": TaskSpec("binary")}
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, batch: ModalityBatch) -> torch.Tensor:
            return self.bias.expand(batch.batch_size, 1)

    task = FusionTask(BareLogits())
    with pytest.raises(ModfuseError, match=r"BareLogits\.forward returned Tensor.*ModelOutput\.of"):
        task(all_patterns_batch())
    # ModelOutput.of turns the same logits into the expected output
    out = ModelOutput.of(torch.zeros(8, 1), task.tasks)
    assert list(out.logits) == ["y"] and out.prediction.shape == (8, 1)


def test_late_fusion_averages_present_logits_and_uses_prior_for_empty() -> None:
    model = LateFusion(encoders(), "binary", combine="mean").eval()
    with torch.no_grad():
        model.prior.logits["y"].fill_(-1.5)
        batch = all_patterns_batch()
        output = model(batch)
        fused = output.prediction
        expected = torch.zeros(8, 1)
        count = torch.zeros(8, 1)
        for m in WIDTHS:
            part = model.unimodal_logits(batch, m)
            expected[part.index] += part.logits["y"]
            count[part.index] += 1
            # the output carries each modality's own logits on its present rows
            torch.testing.assert_close(output.per_modality[m].logits["y"], part.logits["y"])
            assert torch.equal(output.per_modality[m].index, part.index)
    present = count[:, 0] > 0
    torch.testing.assert_close(fused[present], expected[present] / count[present])
    assert fused[0].item() == -1.5  # sample 0 has no modality


def _present_logits(model: LateFusion, batch: ModalityBatch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """modality -> ((B, k) logits with NaN on absent rows, (B,) present mask)."""
    out = {}
    for m in WIDTHS:
        part = model.unimodal_logits(batch, m)
        full = torch.full((batch.batch_size, part.logits["y"].shape[1]), float("nan"))
        full[part.index] = part.logits["y"]
        out[m] = full, ~torch.isnan(full[:, 0])
    return out


def test_calibrated_late_fusion_starts_at_the_product_of_experts_and_keeps_single_heads() -> None:
    """The calibrated combination: with k present modalities, scale[k] * weighted mean +
    offset[k]; at initialisation the sum of the present logits where evidence adds (binary)
    and the plain mean for regression; a modality alone is always its own head. By default
    (``combine="auto"``) binary tasks are calibrated, multiclass and regression tasks keep the
    plain mean."""
    batch = all_patterns_batch()
    with torch.no_grad():
        binary = LateFusion(encoders(), "binary").eval()
        assert binary.combine == "auto" and list(binary.calibration) == ["y"]
        parts = _present_logits(binary, batch)
        logits = torch.stack([p[0] for p in parts.values()])  # (M, B, 1)
        count = torch.stack([p[1] for p in parts.values()]).sum(0)
        fused = binary(batch).prediction
        seen = count > 0
        torch.testing.assert_close(fused[seen], logits.nansum(0)[seen])
        regression = LateFusion(encoders(), "regression", combine="calibrated").eval()
        parts = _present_logits(regression, batch)
        logits = torch.stack([p[0] for p in parts.values()])
        torch.testing.assert_close(regression(batch).prediction[seen], logits.nanmean(0)[seen])
        # learned weights, scales and offsets: the hand formula, per number of present modalities
        cal = binary.calibration["y"]
        cal.log_weights.copy_(torch.tensor([0.3, -0.5, 1.0]))
        cal.log_scale.copy_(torch.tensor([[2.0], [0.2], [-0.4]]))
        cal.offset.copy_(torch.tensor([[5.0], [0.7], [-1.1]]))
        parts = _present_logits(binary, batch)
        w = cal.log_weights.exp()
        fused = binary(batch).prediction
    for i in range(batch.batch_size):
        present = [j for j, (_, mask) in enumerate(parts.values()) if mask[i]]
        if not present:
            continue
        values = torch.stack([list(parts.values())[j][0][i, 0] for j in present])
        mean = (w[present] * values).sum() / w[present].sum()
        k = len(present)
        expected = mean if k == 1 else cal.log_scale[k - 1, 0].exp() * mean + cal.offset[k - 1, 0]
        torch.testing.assert_close(fused[i, 0], expected)
    # "auto" decides per task: one model, a binary and a regression task, each by its kind's rule
    both = LateFusion(encoders(), {"y": TaskSpec("binary"), "r": TaskSpec("regression")}).eval()
    assert list(both.calibration) == ["y"]
    assert not LateFusion(encoders(), TaskSpec("multiclass", 3)).calibration
    assert not LateFusion(encoders(), "binary", combine="mean").calibration
    with torch.no_grad():
        both.calibration["y"].log_weights.copy_(torch.tensor([0.3, -0.5, 1.0]))
        out = both(batch).logits
        r_logits = torch.full((len(WIDTHS), batch.batch_size), float("nan"))
        for j, m in enumerate(WIDTHS):
            part = both.unimodal_logits(batch, m)
            r_logits[j, part.index] = part.logits["r"][:, 0]
    torch.testing.assert_close(out["r"][seen, 0], r_logits.nanmean(0)[seen])
    with pytest.raises(ModfuseError, match="combine must be one of"):
        LateFusion(encoders(), "binary", combine="max")


def test_late_fusion_prior_learns_the_base_rate_without_empty_samples() -> None:
    model = LateFusion(encoders(), "binary")
    batch = all_patterns_batch().select(range(1, 8))  # every sample has a modality
    batch.target = torch.tensor([1.0, 1, 1, 1, 1, 1, 0])
    fused = ModelOutput(
        {"y": model(batch).prediction.detach()}
    )  # no empty sample: the fused logits never reach the prior
    opt = torch.optim.Adam(model.prior.parameters(), lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        model.compute_loss(fused, batch).backward()
        opt.step()
    assert torch.sigmoid(model.prior.logits["y"]).item() == pytest.approx(6 / 7, abs=0.02)
    # the logged loss is the fused prediction's own loss: the prior's term is gradient only
    expected = torch.nn.functional.binary_cross_entropy_with_logits(fused.prediction[:, 0], batch.target)
    assert model.compute_loss(fused, batch).item() == pytest.approx(expected.item(), rel=1e-6)


def test_attention_absent_token_is_masked_not_read() -> None:
    model = AttentionFusion(encoders(), "binary", d_model=8, num_heads=2).eval()
    batch = all_patterns_batch()
    tokens, padding = model.tokens(batch)
    assert tokens.shape == (8, 4, 8) and not padding[:, 0].any()
    for j, m in enumerate(WIDTHS, start=1):
        assert torch.equal(padding[:, j], ~batch.present[m])
    # a sample's output is the same whether an absent modality is dropped from the model input
    # or not known to the batch at all for that sample
    with torch.no_grad():
        full = model(batch).prediction
        without_c = model(batch.with_modalities(["a", "b"])).prediction
    lacks_c = ~batch.present["c"]
    torch.testing.assert_close(full[lacks_c], without_c[lacks_c], atol=1e-6, rtol=1e-5)
    with pytest.raises(ModfuseError, match="divisible"):
        AttentionFusion(encoders(), "binary", d_model=10, num_heads=4)


def test_unimodal_uses_one_modality_and_ignores_the_others() -> None:
    model = Unimodal(encoders(), "binary", modality="b").eval()
    assert model.modalities == ["b"]
    batch = all_patterns_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(batch).prediction, model(batch.with_modalities(["b"])).prediction)
    with pytest.raises(ModfuseError, match="modality="):
        Unimodal(encoders(), "binary")
    with pytest.raises(ModfuseError, match="modality 'z'"):
        Unimodal(encoders(), "binary", modality="z")
    single = Unimodal({"a": CountingEncoder(3)}, "binary")
    assert single.modality == "a"


@pytest.mark.parametrize("strategy", ["late", "attention"])
def test_missing_modality_key_is_a_located_error(strategy: str) -> None:
    model = make(strategy)
    batch = all_patterns_batch()
    with pytest.raises(ModfuseError, match="modality 'c'"):
        model(without_modality(batch, "c"))


def synthetic(n: int = 200, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """b carries most of the signal (so the unimodal baseline on b can learn), a some, c none."""
    rng = np.random.default_rng(seed)
    data = {m: rng.normal(size=(n, w)).astype(np.float32) for m, w in WIDTHS.items()}
    y = ((0.5 * data["a"][:, 0] + data["b"][:, 0] + 0.3 * rng.normal(size=n)) > 0).astype(np.int64)
    for m in data:
        data[m][rng.random(n) < 0.25] = np.nan
    return data, y


@pytest.mark.parametrize("strategy", ["early", "late", "attention", "unimodal"])
def test_trains_with_fusiontask_and_predicts_with_any_subset(strategy: str) -> None:
    data, y = synthetic()
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(data, y), batch_size=32, seed=0)
    model = make(strategy)
    task = FusionTask(model, lr=1e-2)
    trainer = L.Trainer(
        max_epochs=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(task, dm)
    assert trainer.test(task, dm, verbose=False)[0]["test/auroc"] > 0.75
    model.eval()
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        for k in range(len(WIDTHS) + 1):
            for subset in itertools.combinations(WIDTHS, k):
                out = model(batch.with_modalities(subset)).prediction
                assert out.shape == (batch.batch_size, 1) and torch.isfinite(out).all(), subset
        empty = model(batch.with_modalities([])).prediction
    # with nothing present every sample gets the same prior prediction
    torch.testing.assert_close(empty, empty[:1].expand_as(empty))
