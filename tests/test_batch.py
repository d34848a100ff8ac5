"""Per-sample missingness: collate -> gather -> scatter round trips, encoders see present rows only."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modfuse.data import ModalityBatch, PaddedTensor, collate_samples, encode_present, scatter_rows
from modfuse.errors import ModfuseError

MODALITIES = ("a", "b", "c")
WIDTH = {"a": 3, "b": 5, "c": 2}


def make_samples(pattern: list[list[bool]], seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i, row in enumerate(pattern):
        inputs = {m: (torch.randn(WIDTH[m], generator=g) if here else None) for m, here in zip(MODALITIES, row)}
        samples.append({"id": f"s{i}", "inputs": inputs, "target": torch.tensor(i % 2)})
    return samples


patterns = st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=1, max_size=12)


class RowRecorder(nn.Module):
    """An encoder that records the rows it is given (to prove absent rows never reach it)."""

    out_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return x.sum(dim=1, keepdim=True).repeat(1, self.out_dim)


@settings(max_examples=60, deadline=None)
@given(patterns)
def test_collate_gather_scatter_round_trip(pattern: list[list[bool]]) -> None:
    samples = make_samples(pattern)
    batch = collate_samples(samples, MODALITIES)
    assert batch.batch_size == len(pattern)
    for j, m in enumerate(MODALITIES):
        expected_present = torch.tensor([row[j] for row in pattern])
        assert torch.equal(batch.present[m], expected_present)
        if not expected_present.any():
            assert m not in batch.inputs
            continue
        full = scatter_rows(batch.inputs[m], batch.present[m], fill=float("nan"))
        for i, s in enumerate(samples):
            value = s["inputs"][m]
            if value is None:
                assert torch.isnan(full[i]).all()
            else:
                assert torch.equal(full[i], value)


@settings(max_examples=60, deadline=None)
@given(patterns)
def test_encoder_sees_only_present_rows(pattern: list[list[bool]]) -> None:
    samples = make_samples(pattern, seed=1)
    batch = collate_samples(samples, MODALITIES)
    for j, m in enumerate(MODALITIES):
        enc = RowRecorder()
        feats, index = encode_present(enc, batch, m)
        present_values = [s["inputs"][m] for s in samples if s["inputs"][m] is not None]
        if not present_values:
            assert enc.seen == [] and feats.shape == (0, 4)
            continue
        assert len(enc.seen) == 1
        assert torch.equal(enc.seen[0], torch.stack(present_values))
        assert index.tolist() == [i for i, row in enumerate(pattern) if row[j]]


@settings(max_examples=40, deadline=None)
@given(patterns, st.data())
def test_select_and_mask_keep_rows_aligned(pattern: list[list[bool]], data: st.DataObject) -> None:
    samples = make_samples(pattern, seed=2)
    batch = collate_samples(samples, MODALITIES)
    rows = data.draw(st.lists(st.integers(0, len(pattern) - 1), min_size=1, max_size=8))
    sub = batch.select(rows)
    assert sub.ids == [f"s{r}" for r in rows]
    keep = torch.tensor(data.draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows))))
    masked = sub.mask_modality("a", keep)
    for k, r in enumerate(rows):
        value = samples[r]["inputs"]["a"]
        assert bool(masked.present["a"][k]) == (value is not None and bool(keep[k]))
    if masked.has("a"):
        expected = torch.stack([samples[r]["inputs"]["a"] for k, r in enumerate(rows) if masked.present["a"][k]])
        assert torch.equal(masked.inputs["a"], expected)


def test_with_modalities_removes_the_others() -> None:
    batch = collate_samples(make_samples([[True, True, False], [True, False, True]]), MODALITIES)
    only_b = batch.with_modalities(["b"])
    assert not only_b.present["a"].any() and not only_b.present["c"].any()
    assert torch.equal(only_b.inputs["b"], batch.inputs["b"])
    with pytest.raises(ModfuseError, match="unknown modalities"):
        batch.with_modalities(["x"])


def test_variable_length_signals_are_padded_with_a_mask() -> None:
    samples = [
        {"id": 0, "inputs": {"ecg": torch.ones(2, 5)}, "target": None},
        {"id": 1, "inputs": {"ecg": None}, "target": None},
        {"id": 2, "inputs": {"ecg": torch.ones(2, 3) * 2}, "target": None},
    ]
    batch = collate_samples(samples)
    padded = batch.inputs["ecg"]
    assert isinstance(padded, PaddedTensor)
    assert padded.values.shape == (2, 2, 5)
    assert padded.mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert torch.equal(padded.values[1, :, 3:], torch.zeros(2, 2))
    picked = batch.select([2])
    assert picked.inputs["ecg"].mask.tolist() == [[True] * 3 + [False] * 2]


def test_graphs_collate_to_a_pyg_batch() -> None:
    from torch_geometric.data import Batch, Data

    g1 = Data(x=torch.randn(3, 4), edge_index=torch.tensor([[0, 1], [1, 2]]))
    g2 = Data(x=torch.randn(2, 4), edge_index=torch.tensor([[0], [1]]))
    samples = [{"id": i, "inputs": {"mol": g}, "target": None} for i, g in enumerate([g1, None, g2])]
    batch = collate_samples(samples)
    assert isinstance(batch.inputs["mol"], Batch) and batch.inputs["mol"].num_graphs == 2
    sub = batch.select([2, 0])
    assert sub.inputs["mol"].num_graphs == 2
    assert torch.equal(sub.inputs["mol"][0].x, g2.x)


def test_bad_batches_raise_clear_errors() -> None:
    with pytest.raises(ModfuseError, match="empty batch"):
        collate_samples([])
    samples = [
        {"id": "p1", "inputs": {"img": torch.zeros(3, 4, 4)}},
        {"id": "p2", "inputs": {"img": torch.zeros(2, 5, 5)}},
    ]
    with pytest.raises(ModfuseError, match=r"modality 'img'.*p1: \(3, 4, 4\)"):
        collate_samples(samples)
    with pytest.raises(ModfuseError, match="present mask"):
        ModalityBatch({}, {"a": torch.tensor([1, 0])})


def test_encoder_errors_name_modality_and_samples() -> None:
    from modfuse.encoders import build

    samples = [{"id": "patient-7", "inputs": {"labs": torch.zeros(4)}}]
    batch = collate_samples(samples)
    with pytest.raises(ModfuseError, match=r"modality 'labs'.*patient-7.*expected 3, found 4"):
        encode_present(build("tabular", num_features=3), batch, "labs")


def test_to_and_pin_memory_keep_structure() -> None:
    batch = collate_samples(make_samples([[True, False, True], [False, True, True]]), MODALITIES)
    moved = batch.to("cpu")
    assert moved.ids == batch.ids and torch.equal(moved.inputs["c"], batch.inputs["c"])
    assert moved.target.tolist() == [0, 1]


def test_to_keeps_read_errors_and_skips_a_batch_already_there() -> None:
    batch = collate_samples(make_samples([[True, False, True], [False, True, True]]), MODALITIES)
    batch.errors = [(0, "b", "unreadable file")]
    assert batch.to("cpu") is batch  # nothing to move: no copy per training step
    batch._on = lambda device: False  # force the copy a move to another device makes
    copied = batch.to("cpu")
    assert copied is not batch and copied.errors == batch.errors


def test_pad_mode_with_equal_lengths_gives_an_all_true_mask() -> None:
    samples = [{"id": i, "inputs": {"ecg": torch.full((2, 4), float(i))}} for i in range(2)]
    padded = collate_samples(samples, modes={"ecg": "pad"}).inputs["ecg"]
    assert isinstance(padded, PaddedTensor)
    assert padded.values.shape == (2, 2, 4) and padded.mask.all()
