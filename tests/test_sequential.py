"""SequentialFusion: per-sample masked updates, per-step predictions, loss, contributions, order."""

from __future__ import annotations

import itertools

import lightning as L
import numpy as np
import pytest
import torch
from helpers import CountingEncoder, without_modality
from torch import nn
from torchmetrics.functional.classification import binary_auroc

import modfuse
from modfuse import FusionTask, ModfuseError, MultiModalDataModule, MultiModalDataset, TaskSpec
from modfuse.core.model import ModelOutput, StepTrace
from modfuse.data.batch import ModalityBatch
from modfuse.data.collate import collate_samples
from modfuse.fusion import build
from modfuse.sequential import SequentialContributions, SequentialFusion

WIDTHS = {"a": 3, "b": 4, "c": 2}
SURVIVAL = TaskSpec("survival", 3, boundaries=(1.0, 2.0))


class TokenEncoder(nn.Module):
    """Token outputs (n, 2, out_dim), to check that token encoders are pooled."""

    out_tokens = 2

    def __init__(self, num_features: int, out_dim: int = 5) -> None:
        super().__init__()
        self.lin = nn.Linear(num_features, 2 * out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).reshape(x.shape[0], 2, self.out_dim)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny models: one intra-op thread avoids OpenMP spin-waiting, which made these tests 10x
    slower on a busy 2-core machine (measured 37 s vs 3 s for one fit)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def encoders() -> dict[str, nn.Module]:
    return {m: CountingEncoder(w) for m, w in WIDTHS.items()}


def all_patterns_batch(target: str = "binary") -> ModalityBatch:
    """One sample per presence pattern of a, b, c (8 samples, including the empty one)."""
    gen = torch.Generator().manual_seed(1)
    samples = []
    for i, pattern in enumerate(itertools.product([False, True], repeat=3)):
        inputs = {m: torch.randn(w, generator=gen) if on else None for (m, w), on in zip(WIDTHS.items(), pattern)}
        if target == "binary":
            y = torch.tensor(float(i % 2))
        elif target == "survival":
            y = torch.tensor([0.5 + i * 0.3, float(i % 2)])
        else:
            y = {"cls": torch.tensor(i % 3), "reg": torch.tensor(float(i) / 8)}
        samples.append({"id": f"s{i}", "inputs": inputs, "target": y})
    return collate_samples(samples, list(WIDTHS))


def test_registered_and_exported() -> None:
    model = build("sequential", encoders=encoders(), tasks="binary", state_dim=8)
    assert isinstance(model, SequentialFusion)
    assert modfuse.SequentialFusion is SequentialFusion
    assert isinstance(model, modfuse.fusion.FusionModel)


def test_batch_invariance_mixed_patterns() -> None:
    model = SequentialFusion(encoders(), "binary", state_dim=8).eval()
    batch = all_patterns_batch()
    with torch.no_grad():
        out = model(batch)
        alone = [model(batch.select([i])) for i in range(batch.batch_size)]
    torch.testing.assert_close(out.prediction, torch.cat([o.prediction for o in alone]), atol=1e-6, rtol=1e-5)
    steps = torch.cat([o.steps.logits["y"] for o in alone])
    torch.testing.assert_close(out.steps.logits["y"], steps, atol=1e-6, rtol=1e-5)
    assert torch.equal(out.steps.mask, torch.cat([o.steps.mask for o in alone]))


def test_absent_modality_leaves_state_bit_identical_and_encoder_sees_present_rows_only() -> None:
    encs = encoders()
    model = SequentialFusion(encs, "binary", state_dim=8).train()  # dropout-free, but gradients on
    batch = all_patterns_batch()
    out = model(batch)
    assert isinstance(out, ModelOutput) and isinstance(out.steps, StepTrace)
    states = out.steps.states
    for j, m in enumerate(out.steps.order, start=1):
        absent = ~batch.present[m]
        # exact equality: the state rows are copied, not recomputed
        assert torch.equal(states[absent, j], states[absent, j - 1])
        assert not torch.equal(states[~absent, j], states[~absent, j - 1])
        assert encs[m].rows == [int(batch.present[m].sum())]
    empty = 0  # pattern (False, False, False)
    assert torch.equal(states[empty], model.initial_state.expand(4, -1).detach())


def test_step_shapes_single_and_multi_task() -> None:
    batch = all_patterns_batch()
    out = SequentialFusion(encoders(), "binary", state_dim=8)(batch)
    assert out.steps is not None
    assert out.prediction.shape == (8, 1)
    assert out.steps.logits["y"].shape == (8, 4, 1)
    assert out.steps.states.shape == (8, 4, 8)
    assert out.steps.mask.shape == (8, 4) and out.steps.mask[:, 0].all()
    assert torch.equal(out.steps.logits["y"][:, -1], out.prediction)

    tasks = {"cls": TaskSpec("multiclass", 3), "reg": TaskSpec("regression", 1)}
    out = SequentialFusion(encoders(), tasks, state_dim=8)(all_patterns_batch("multi"))
    assert out.steps is not None
    assert set(out.logits) == {"cls", "reg"}
    assert out.steps.logits["cls"].shape == (8, 4, 3) and out.steps.logits["reg"].shape == (8, 4, 1)
    with pytest.raises(ModfuseError, match="several tasks"):
        out.prediction  # noqa: B018  (a multi-task output names its tasks instead of guessing one)


def test_token_encoder_is_pooled() -> None:
    encs = {m: TokenEncoder(w) for m, w in WIDTHS.items()}
    out = SequentialFusion(encs, "binary", state_dim=8)(all_patterns_batch())
    assert out.steps is not None
    steps = out.steps.logits["y"]
    assert steps.shape == (8, 4, 1) and torch.isfinite(steps).all()


def brute_force_loss(model: SequentialFusion, out: ModelOutput, batch: ModalityBatch) -> torch.Tensor:
    """Per sample: the mean over its steps that ran of the task loss; then the batch mean."""
    spec = model.tasks["y"]
    assert out.steps is not None
    steps = out.steps.logits["y"]
    per_sample = []
    for i in range(batch.batch_size):
        ran = out.steps.mask[i].nonzero(as_tuple=True)[0]
        losses = [spec.loss(steps[i, j][None], batch.target[i : i + 1]) for j in ran.tolist()]
        per_sample.append(torch.stack(losses).mean())
    return torch.stack(per_sample).mean()


@pytest.mark.parametrize("kind", ["binary", "survival"])
def test_loss_averages_over_steps_that_ran_per_sample(kind: str) -> None:
    tasks = "binary" if kind == "binary" else SURVIVAL
    model = SequentialFusion(encoders(), tasks, state_dim=8)
    batch = all_patterns_batch(kind)
    out = model(batch)
    torch.testing.assert_close(model.compute_loss(out, batch), brute_force_loss(model, out, batch))


def test_loss_on_logits_stays_finite_for_confident_wrong_predictions() -> None:
    # the reference code fed sigmoid outputs into a cross-entropy: saturated probabilities gave
    # log(0); a loss on logits grows linearly instead
    model = SequentialFusion(encoders(), "binary", state_dim=8)
    with torch.no_grad():
        model.decoders["y"].bias.fill_(60.0)
        model.decoders["y"].weight.zero_()
    batch = all_patterns_batch()
    batch.target = torch.zeros(8)
    loss = model.compute_loss(model(batch), batch)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(60.0, rel=1e-4)


def test_state_change_penalty() -> None:
    batch = all_patterns_batch()
    plain = SequentialFusion(encoders(), "binary", state_dim=8)
    penalised = SequentialFusion(encoders(), "binary", state_dim=8, state_change_penalty=0.5)
    penalised.load_state_dict(plain.state_dict())
    out = plain(batch)
    change = SequentialFusion.state_change(out)
    assert change.item() > 0
    expected = plain.compute_loss(out, batch) + 0.5 * change
    torch.testing.assert_close(penalised.compute_loss(penalised(batch), batch), expected)
    with pytest.raises(ModfuseError, match="state_change_penalty"):
        SequentialFusion(encoders(), "binary", state_change_penalty=-1.0)


@pytest.mark.parametrize(
    "tasks",
    ["binary", SURVIVAL, {"cls": TaskSpec("multiclass", 3), "reg": TaskSpec("regression", 1)}],
    ids=["binary", "survival", "multitask"],
)
def test_contributions_sum_to_final_minus_initial(tasks: object) -> None:
    kind = "multi" if isinstance(tasks, dict) else ("survival" if tasks is SURVIVAL else "binary")
    model = SequentialFusion(encoders(), tasks, state_dim=8).eval()
    batch = all_patterns_batch(kind)
    contrib = model.contributions(batch)
    assert isinstance(contrib, SequentialContributions)
    out = model(batch)
    for name, spec in model.tasks.items():
        delta = contrib.delta[name]
        assert delta.shape[:2] == (8, 3)
        torch.testing.assert_close(contrib.initial[name] + delta.sum(1), contrib.final[name], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(contrib.final[name], spec.activate(out.logits[name]))
        # an absent modality changes nothing, exactly
        absent = ~contrib.present
        assert (delta[absent] == 0).all()
    # the empty sample keeps its prior: its final prediction is the initial one
    first = next(iter(model.tasks))
    assert torch.equal(contrib.final[first][0], contrib.initial[first][0])


def test_contributions_frame_and_lookup() -> None:
    model = SequentialFusion(encoders(), "binary", state_dim=8).eval()
    batch = all_patterns_batch()
    contrib = model.contributions(batch)
    frame = contrib.to_frame()
    assert list(frame.columns) == ["initial", "a", "b", "c", "final"]
    assert list(frame.index) == batch.ids
    np.testing.assert_allclose(frame[["initial", "a", "b", "c"]].sum(1), frame["final"], atol=1e-6)
    torch.testing.assert_close(contrib.of("b"), contrib.delta["y"][:, 1])
    with pytest.raises(ModfuseError, match="modality 'z'"):
        contrib.of("z")


def test_order_fixed_given_and_shuffled() -> None:
    model = SequentialFusion(encoders(), "binary", state_dim=8, order=["c", "a", "b"])
    batch = all_patterns_batch()

    def order_of(out: ModelOutput) -> list[str]:
        assert out.steps is not None
        return out.steps.order

    assert order_of(model.eval()(batch)) == ["c", "a", "b"]
    assert order_of(model(batch, order=["b", "c", "a"])) == ["b", "c", "a"]
    # the step mask follows the order of the pass
    out = model(batch, order=["b", "c", "a"])
    assert out.steps is not None and torch.equal(out.steps.mask[:, 1], batch.present["b"])
    with pytest.raises(ModfuseError, match="permutation"):
        model(batch, order=["a", "b"])
    with pytest.raises(ModfuseError, match="permutation"):
        SequentialFusion(encoders(), "binary", order=["a", "b", "x"])

    shuffled = SequentialFusion(encoders(), "binary", state_dim=8, shuffle_order=True).train()
    orders = {tuple(order_of(shuffled(batch))) for _ in range(30)}
    assert len(orders) > 1 and all(sorted(o) == ["a", "b", "c"] for o in orders)
    assert {tuple(order_of(shuffled.eval()(batch))) for _ in range(5)} == {("a", "b", "c")}


def test_errors_name_the_modality_and_the_missing_target() -> None:
    model = SequentialFusion(encoders(), "binary", state_dim=8)
    batch = all_patterns_batch()
    with pytest.raises(ModfuseError, match="modality 'c'"):
        model(without_modality(batch, "c"))
    out = model(batch)
    batch.target = None
    with pytest.raises(ModfuseError, match="no target"):
        model.compute_loss(out, batch)
    with pytest.raises(ModfuseError, match="out_dim"):
        SequentialFusion({"a": nn.Linear(3, 4)}, "binary")


def synthetic(n: int = 200, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Two informative modalities and a noise one, each missing for ~30% of samples."""
    rng = np.random.default_rng(seed)
    data = {m: rng.normal(size=(n, w)).astype(np.float32) for m, w in WIDTHS.items()}
    y = ((data["a"][:, 0] + data["b"][:, 0] + 0.3 * rng.normal(size=n)) > 0).astype(np.int64)
    for m in data:
        data[m][rng.random(n) < 0.3] = np.nan
    return data, y


def fit(
    model: nn.Module, data: dict[str, np.ndarray], y: object, epochs: int = 8
) -> tuple[FusionTask, L.Trainer, MultiModalDataModule]:
    ds = MultiModalDataset.from_arrays(data, y)
    dm = MultiModalDataModule(ds, batch_size=32, seed=0)
    task = FusionTask(model, lr=1e-2)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(task, dm)
    return task, trainer, dm


def test_trains_with_fusiontask_and_any_order_works_after_shuffled_training() -> None:
    data, y = synthetic()
    model = SequentialFusion(encoders(), "binary", state_dim=16, shuffle_order=True)
    task, trainer, dm = fit(model, data, y)
    result = trainer.test(task, dm, verbose=False)[0]
    assert result["test/auroc"] > 0.8
    # any order at inference: a reversed order predicts as well and nearly the same
    model.eval()
    probs: dict[str, list[torch.Tensor]] = {"fwd": [], "rev": []}
    labels = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            probs["fwd"].append(torch.sigmoid(model(batch, order=["a", "b", "c"]).prediction[:, 0]))
            probs["rev"].append(torch.sigmoid(model(batch, order=["c", "b", "a"]).prediction[:, 0]))
            labels.append(batch.target)
    fwd, rev, labels = torch.cat(probs["fwd"]), torch.cat(probs["rev"]), torch.cat(labels)
    assert (fwd - rev).abs().mean() < 0.1
    assert binary_auroc(rev, labels).item() > 0.8
    predictions = trainer.predict(task, dm)
    assert sum(len(p["ids"]) for p in predictions) == len(dm.splits["test"])


def test_multitask_trains() -> None:
    data, y = synthetic()
    # second task: the tercile of b's first feature (NaN where b is missing: use a's instead)
    score = np.where(np.isnan(data["b"][:, 0]), 0.0, data["b"][:, 0])
    tasks = {"cls": TaskSpec("binary"), "tercile": TaskSpec("multiclass", 3)}
    targets = {"cls": y, "tercile": np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(np.int64)}
    model = SequentialFusion(encoders(), tasks, state_dim=16)
    task, trainer, dm = fit(model, data, targets, epochs=10)
    result = trainer.test(task, dm, verbose=False)[0]
    assert result["test/cls/auroc"] > 0.75
    assert result["test/tercile/accuracy"] > 0.45
