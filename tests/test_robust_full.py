"""Robust training that keeps the complete input: ``full_weight`` and ``dropout_rows``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Recorder, record_fit_and_test

from modfuse.data.dataset import MultiModalDataset
from modfuse.encoders import build as build_encoder
from modfuse.errors import ModfuseError
from modfuse.fusion import build
from modfuse.robust import ModalityDropout
from modfuse.training.robust import AUTO_DROPOUT_ROWS, AUTO_FULL_WEIGHT, auto_full_weight
from modfuse.training.task import FusionTask


def three_views(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = {m: (rng.normal(size=(n, 4)) + (j + 1) * 0.5 * y[:, None]).astype(np.float32) for j, m in enumerate("abc")}
    return X, y


def early_task(**robust: object) -> tuple[FusionTask, MultiModalDataset]:
    torch.manual_seed(0)
    X, y = three_views(32)
    dataset = MultiModalDataset.from_arrays(X, y)
    encoders = {m: build_encoder("tabular", num_features=4, hidden=[8], out_dim=8) for m in X}
    return FusionTask(build("early", encoders=encoders, tasks="binary"), **robust), dataset  # type: ignore[arg-type]


def whole_batch(dataset: MultiModalDataset):
    return dataset.collate_fn([dataset[i] for i in range(len(dataset))])


@pytest.mark.parametrize("full_weight", [0.0, 0.4, 1.0])
def test_the_training_loss_mixes_the_dropped_and_the_complete_batch(full_weight: float) -> None:
    task, dataset = early_task(modality_dropout=0.5, unimodal_weight=None, full_weight=full_weight)
    task.model.eval()  # no encoder dropout: the hand computation below sees the same network
    robust, batch = task.robust, whole_batch(dataset)
    state = robust.dropout.generator_state()
    with pytest.warns(UserWarning, match="self.log"):  # no trainer attached: logging is skipped
        loss = robust.step(task, batch)
    robust.dropout.set_generator_state(state)  # the same drops again, by hand
    dropped = robust.drop(batch)
    assert any(bool((~dropped.present[m]).any()) for m in "abc")  # dropout did remove modalities
    on_dropped = task.compute_loss(task(dropped), dropped)
    on_complete = task.compute_loss(task(batch), batch)
    assert abs(float(on_dropped.detach()) - float(on_complete.detach())) > 1e-3  # the two terms really differ
    expected = (1 - full_weight) * on_dropped + full_weight * on_complete
    torch.testing.assert_close(loss, expected)


def test_the_complete_batch_term_is_a_training_step_only() -> None:
    X, y = three_views(96)
    encoders = {m: build_encoder("tabular", num_features=4, out_dim=4) for m in X}
    # rate 1: a dropped sample keeps exactly one modality, so the two forward passes are told apart
    train_calls, eval_calls = record_fit_and_test(
        Recorder(build("early", encoders=encoders)), X, y, modality_dropout=1.0, full_weight=0.5
    )
    # 4 training steps, each one pass on the dropped batch then one on the complete batch
    assert [int(c.max()) for c in train_calls] == [1, 3] * 4
    # validation (sanity check + 1 epoch, 1 batch each) and test (1 batch): one complete pass each
    assert len(eval_calls) == 3 and all(bool((c == 3).all()) for c in eval_calls)


def test_dropout_rows_keeps_the_other_samples_complete() -> None:
    n = 4000
    present = {m: torch.ones(n, dtype=torch.bool) for m in "abc"}
    kept = torch.stack(list(ModalityDropout(1.0, rows=0.3, seed=1).keep_masks(present).values()), 1)
    complete = kept.all(1)
    assert abs(float(complete.float().mean()) - 0.7) < 0.03  # about 70 % not eligible: complete
    assert bool((kept.sum(1)[~complete] == 1).all())  # the eligible 30 %: rate 1 leaves one modality
    # rows=1 is the plain dropout, draw for draw
    partial = {m: torch.as_tensor(np.random.default_rng(2).random(n) < 0.8) for m in "abc"}
    plain = ModalityDropout(0.4, seed=5).keep_masks(partial)
    every_row = ModalityDropout(0.4, seed=5, rows=1.0).keep_masks(partial)
    assert all(torch.equal(plain[m], every_row[m]) for m in "abc")
    with pytest.raises(ModfuseError, match="rows"):
        ModalityDropout(0.3, rows=0.0)


def test_auto_resolves_to_the_library_defaults_and_only_with_dropout() -> None:
    task, _ = early_task(modality_dropout="auto", unimodal_weight="auto")
    assert task.robust.full_weight == AUTO_FULL_WEIGHT and task.robust.dropout.rows == AUTO_DROPOUT_ROWS
    explicit, _ = early_task(modality_dropout=0.3, full_weight=0.25, dropout_rows=0.5)
    assert explicit.robust.full_weight == 0.25 and explicit.robust.dropout.rows == 0.5
    # without dropout the training batch is the complete batch: no second term
    no_dropout, _ = early_task(modality_dropout=None, unimodal_weight=0.5, full_weight=0.5)
    assert no_dropout.robust.full_weight == 0.0 and no_dropout.robust.dropout is None
    # late fusion's complete prediction is the mean of its heads: no complete-batch term by default
    encoders = {m: build_encoder("tabular", num_features=4, hidden=[8], out_dim=8) for m in "ab"}
    late = FusionTask(build("late", encoders=encoders), modality_dropout="auto", unimodal_weight="auto")
    assert late.robust.full_weight == 0.0 and late.robust.dropout is not None
    assert FusionTask(build("late", encoders=encoders), modality_dropout=0.3, full_weight=0.5).robust.full_weight == 0.5
    with pytest.raises(ModfuseError, match="full_weight"):
        early_task(modality_dropout=0.3, full_weight=1.5)
    with pytest.raises(ModfuseError, match="full_weight"):
        early_task(modality_dropout=0.3, full_weight="half")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("early", AUTO_FULL_WEIGHT), ("attention", AUTO_FULL_WEIGHT), ("sequential", AUTO_FULL_WEIGHT), ("late", 0.0)],
)
def test_auto_full_weight_is_the_validated_value_of_each_strategy(strategy: str, expected: float) -> None:
    # the values of benchmarks/results/missing_selection.md (validation splits): the complete-batch
    # term kept for early, attention and sequential fusion, off for late fusion
    encoders = {m: build_encoder("tabular", num_features=4, hidden=[8], out_dim=8) for m in "ab"}
    model = build(strategy, encoders=encoders, tasks="binary")
    assert auto_full_weight(model) == expected
    task = FusionTask(model, modality_dropout="auto", unimodal_weight="auto")
    assert task.robust is not None and task.robust.full_weight == expected


def test_the_lego_fuse_chain_takes_the_default_full_weight() -> None:
    # lego-fuse's chain is fine-tuned through FusionTask on its paired rows with the estimator's
    # robust options; its single-modality blocks are trained without dropout, so no term there
    encoders = {m: build_encoder("tabular", num_features=4, hidden=[8], out_dim=8) for m in "ab"}
    fused = build("lego-fuse", encoders=encoders, tasks="binary")
    assert auto_full_weight(fused) == AUTO_FULL_WEIGHT
    assert FusionTask(fused, modality_dropout="auto").robust.full_weight == AUTO_FULL_WEIGHT
    block = fused.blocks[0]
    assert FusionTask(block, modality_dropout="auto").robust is None  # one modality: nothing to drop
