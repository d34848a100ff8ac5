"""End to end: blocks trained separately on disjoint samples, merged, fused, and merged by the
``modfuse merge`` command from real Lightning checkpoints."""

from __future__ import annotations

import itertools

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from modfuse import LegoBlock, MultiModalDataset, merge
from modfuse.cli.merge import merge_main
from modfuse.lego import LegoMerge, load, load_checkpoint
from modfuse.lego.workflow import fit_blocks, fit_fuse, fit_merge
from modfuse.training.task import FusionTask

MODS = "abc"
D = 4
N, N_TEST = 1500, 300
TRAIN = {"lr": 3e-3, "batch_size": 32}


@pytest.fixture(scope="module")
def problem():
    """y = [s_a + s_b + s_c + noise > 0] with s_m a projection of modality m: each modality
    alone carries only part of the label. Blocks train on disjoint thirds of the training rows."""
    L.seed_everything(0, verbose=False)
    rng = np.random.default_rng(0)
    X = {m: rng.normal(size=(N, D)).astype("float32") for m in MODS}
    signal = sum(X[m] @ (w := rng.normal(size=D)) / np.linalg.norm(w) for m in MODS)
    y = (signal + 0.3 * rng.normal(size=N) > 0).astype(int)
    ds = MultiModalDataset.from_arrays(X, y)
    perm = rng.permutation(N)
    test, train = perm[:N_TEST], perm[N_TEST:]
    rows = {m: train[i::3] for i, m in enumerate(MODS)}
    enc = {"name": "tabular", "num_features": D, "hidden": [16], "out_dim": 16, "dropout": 0.0}
    blocks = [LegoBlock(enc, m, latent_shape=(8, 16), depth=1, heads=2) for m in MODS]
    fit_blocks(blocks, ds, max_epochs=10, rows=rows, **TRAIN)
    batch = ds.collate_fn([ds[i] for i in test])
    return {"ds": ds, "blocks": blocks, "batch": batch, "y": torch.as_tensor(y[test]), "train": train}


def accuracy(logits, y):
    return float(((logits[:, 0] > 0).long() == y).float().mean())


def predict(model, batch):
    with torch.no_grad():
        out = model.eval()(batch)
    return getattr(out, "prediction", out)


def test_blocks_trained_apart_merge_at_least_as_well_as_the_best_block(problem):
    batch, y = problem["batch"], problem["y"]
    singles = [accuracy(predict(b, batch), y) for b in problem["blocks"]]
    merged = accuracy(predict(merge(problem["blocks"]), batch), y)
    assert max(singles) < 0.8  # each modality alone carries only part of the label
    assert merged >= max(singles), (merged, singles)


def test_merged_model_runs_on_every_subset_and_mixed_patterns_in_one_batch(problem):
    batch, y = problem["batch"], problem["y"]
    merged = merge(problem["blocks"])
    subsets = [s for k in range(1, 4) for s in itertools.combinations(MODS, k)]
    per_subset = {}
    for s in subsets:
        out = predict(merged, batch.with_modalities(s))
        assert out.shape == (N_TEST, 1) and torch.isfinite(out).all()
        per_subset[s] = out
    assert accuracy(per_subset[tuple(MODS)], y) >= max(accuracy(per_subset[(m,)], y) for m in MODS)
    # one batch where consecutive samples have different subsets
    mixed = batch
    pattern = [subsets[i % len(subsets)] for i in range(N_TEST)]
    for m in MODS:
        mixed = mixed.mask_modality(m, torch.tensor([m in s for s in pattern]))
    out = predict(merged, mixed)
    want = torch.stack([per_subset[s][i] for i, s in enumerate(pattern)])
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)


def test_fuse_two_epochs_at_least_as_good_as_merge_and_blocks_unchanged(problem):
    batch, y = problem["batch"], problem["y"]
    blocks = problem["blocks"]
    alone = [predict(b, batch) for b in blocks]
    merged = accuracy(predict(merge(blocks), batch), y)
    fused = fit_fuse(blocks, problem["ds"], max_epochs=0, fuse_epochs=2, **TRAIN)
    assert accuracy(predict(fused, batch), y) >= merged
    for b, before in zip(blocks, alone):  # the source blocks are untouched and still predict alone
        torch.testing.assert_close(predict(b, batch), before)


def _checkpoint(block: LegoBlock, ds: MultiModalDataset, rows, path) -> None:
    """A real Lightning checkpoint of FusionTask(block) (one short epoch, then save)."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, list(rows[:64])), batch_size=32, collate_fn=ds.collate_fn
    )
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(FusionTask(block, lr=1e-4), loader)
    trainer.save_checkpoint(path)


def test_merge_command_end_to_end(problem, tmp_path, capsys):
    ds, batch, y = problem["ds"], problem["batch"], problem["y"]
    paths = []
    for b in problem["blocks"]:
        paths.append(tmp_path / f"{b.modality}.ckpt")
        _checkpoint(LegoBlock.from_config(b.to_config()), ds, problem["train"], paths[-1])
        # put the trained weights in (the short fit above only makes the checkpoint real)
        ckpt = torch.load(paths[-1], weights_only=True)
        ckpt["state_dict"] = {f"model.{k}": v for k, v in b.state_dict().items()}
        torch.save(ckpt, paths[-1])
    out = tmp_path / "merged.safetensors"
    code = merge_main([*map(str, paths), "--method", "harmonic", "--head-merge", "mean", "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    for word in ("modalities : a, b, c", "harmonic", "parameters", "wall time"):
        assert word in printed
    loaded = load(out)
    assert isinstance(loaded, LegoMerge)
    rebuilt = merge([load_checkpoint(p) for p in paths])
    torch.testing.assert_close(predict(loaded, batch), predict(rebuilt, batch), rtol=0, atol=0)
    assert accuracy(predict(loaded, batch), y) >= max(accuracy(predict(b, batch), y) for b in problem["blocks"])

    # yaml form: weights and method from the file, output relative to it
    config = {"blocks": [{"path": str(paths[0]), "weight": 2.0}, str(paths[1]), str(paths[2])], "method": "mean"}
    config["output"] = "from_yaml.safetensors"
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(config))
    assert merge_main([str(tmp_path / "merge.yaml")]) == 0
    from_yaml = load(tmp_path / "from_yaml.safetensors")
    assert from_yaml.method == "mean" and from_yaml.weights.tolist() == [2.0, 1.0, 1.0]

    # bad input: a clear message and exit code 2, no traceback
    assert merge_main([str(paths[0]), str(paths[0]), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "same modality" in capsys.readouterr().err


def test_workflow_fits_strategies_built_from_the_registry():
    from modfuse import MultiModalDataModule
    from modfuse.encoders import build as build_encoder
    from modfuse.fusion import base

    rng = np.random.default_rng(1)
    X = {m: rng.normal(size=(120, D)).astype("float32") for m in "ab"}
    X["b"][:30] = np.nan  # some samples lack b
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, (X["a"][:, 0] > 0).astype(int)), batch_size=32)
    encs = {m: build_encoder("tabular", num_features=D, hidden=[8], out_dim=8) for m in "ab"}
    merged = base.build("lego-merge", encoders=encs, tasks="binary", latent_shape=(8, 16), heads=2, depth=1)
    before = [b.latent0.detach().clone() for b in merged.blocks]
    out = fit_merge(merged, dm, max_epochs=1)
    assert out is merged and not merged.training
    assert all(not torch.equal(b.latent0, w) for b, w in zip(merged.blocks, before))
    fused = base.build("lego-fuse", encoders=encs, tasks="binary", latent_shape=(8, 16), heads=2, depth=1)
    tuned = fit_fuse(fused, dm, max_epochs=1, fuse_epochs=1, trainable="heads")
    assert tuned.trainable == "heads" and tuned.modalities == ["a", "b"]
    assert torch.isfinite(predict(tuned, dm.dataset.collate_fn([dm.dataset[i] for i in range(40)]))).all()
