"""LegoBlock, LegoMerge, LegoFuse: behaviour and regressions of the research code's faults
(DESIGN.md section 8), on tiny untrained models (no Lightning, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from modfuse import LegoBlock, MultiModalDataset, fuse, merge
from modfuse.core.tasks import TaskSpec
from modfuse.errors import IncompatibleError, ModfuseError, ReadError
from modfuse.lego import LegoFuse, LegoMerge, load, register_method, save
from modfuse.lego.merge import merge_head_params
from modfuse.lego.methods import METHODS, available_methods, get_method

D = 5
LATENT = (8, 16)


def make_block(modality: str, latent_shape=LATENT, task="binary", num_outputs=1, depth=2, **kw) -> LegoBlock:
    enc = {"name": "tabular", "num_features": D, "hidden": [16], "out_dim": 8, "dropout": 0.0}
    return LegoBlock(enc, modality, num_outputs, task=task, latent_shape=latent_shape, depth=depth, heads=2, **kw)


def make_batch(mods="abcd", n=12, seed=0, missing=None):
    """A batch over ``mods``; ``missing`` maps modality -> rows marked absent (all-NaN)."""
    rng = np.random.default_rng(seed)
    X = {m: rng.normal(size=(n, D)).astype("float32") for m in mods}
    for m, rows in (missing or {}).items():
        X[m][rows] = np.nan
    ds = MultiModalDataset.from_arrays(X, rng.integers(0, 2, n))
    return ds.collate_fn([ds[i] for i in range(n)])


def trained_like(blocks):
    """Give each block distinct weights (as after separate training) so merges are not trivial."""
    for i, b in enumerate(blocks):
        g = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for p in b.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return [b.eval() for b in blocks]


# ---------------------------------------------------------------- block


def test_block_predicts_alone_and_absent_rows_get_the_prior():
    blk = make_block("a").eval()
    batch = make_batch("ab", missing={"a": [1, 4]})
    out = blk(batch).prediction
    assert out.shape == (12, 1)
    assert blk.modalities == ["a"] and set(blk.tasks) == {"y"}
    prior = blk.head(blk.prior_latent())
    torch.testing.assert_close(out[[1, 4]], prior.expand(2, 1))
    spec, index = blk.latent(batch)
    assert spec.is_complex() and spec.shape == (10, *LATENT) and index.tolist() == [0, 2, 3, 5, 6, 7, 8, 9, 10, 11]


def test_block_start_latent_does_not_change_the_block():
    blk = make_block("a").eval()
    batch = make_batch("a")
    before = blk.latent0.detach().clone()
    spec, _ = blk.latent(batch)
    other, _ = blk.latent(batch, start=torch.randn(12, *LATENT, dtype=torch.complex64))
    assert not torch.allclose(spec, other)
    assert torch.equal(blk.latent0, before)
    with pytest.raises(ModfuseError, match="start latent"):
        blk.latent(batch, start=torch.zeros(3, *LATENT, dtype=torch.complex64))


def test_block_construction_errors_are_clear():
    with pytest.raises(ModfuseError, match="out_dim"):
        LegoBlock(nn.Linear(3, 4), "a")
    with pytest.raises(ModfuseError, match="divisible by heads"):
        make_block("a", latent_shape=(8, 15))
    with pytest.raises(ModfuseError, match="no modality 'zz'"):
        make_block("zz")(make_batch("a"))


def test_tokens_encoder_gives_memory_linear_attention_shapes():
    class Tokens(nn.Module):
        out_dim, out_tokens = 6, 7

        def forward(self, x):
            return x[:, :, None].expand(-1, -1, 6)[:, :7] if x.shape[1] >= 7 else x.new_zeros(x.shape[0], 7, 6)

    blk = LegoBlock(Tokens(), "a", latent_shape=LATENT, heads=2)
    assert blk(make_batch("a")).prediction.shape == (12, 1)


# ---------------------------------------------------------------- encoder runs once (fault 1)


def count_calls(blocks):
    calls = {b.modality: 0 for b in blocks}

    def hook(mod, args, out, m):
        calls[m] += 1

    for b in blocks:
        b.encoder.register_forward_hook(lambda mod, a, o, m=b.modality: hook(mod, a, o, m))
    return calls


@pytest.mark.parametrize("kind", ["block", "merge", "fuse"])
def test_encoder_called_once_per_forward(kind):
    blocks = [make_block(m, depth=3) for m in "abc"]
    model = {"block": lambda: blocks[0], "merge": lambda: merge(blocks), "fuse": lambda: fuse(blocks)}[kind]()
    used = model.blocks if kind != "block" else [model]
    calls = count_calls(used)
    model(make_batch("abc", missing={"b": [0, 1]}))
    assert all(c == 1 for c in calls.values()), calls


# ---------------------------------------------------------------- per-sample merge (faults 2, 3)


def test_four_block_merge_uses_all_four():
    blocks = trained_like([make_block(m) for m in "abcd"])
    merged = merge(blocks)
    batch = make_batch("abcd")
    base = merged(batch).prediction
    for i, m in enumerate("abcd"):
        changed = make_batch("abcd")
        changed.inputs[m] = changed.inputs[m] + 3.0
        diff = (merged(changed).prediction - base).abs().max()
        assert diff > 1e-4, f"block {i} ({m}) does not influence the merged prediction"
    # and the head is the mean of all four heads
    params = merge_head_params([b.head for b in blocks], torch.ones(4))
    want = sum(b.head.linear.weight for b in blocks) / 4
    torch.testing.assert_close(params["linear.weight"], want)


def test_circular_phase_mean_across_pi_and_harmonic_magnitude():
    harmonic = get_method("harmonic")
    phases = torch.tensor([math.pi - 0.1, -math.pi + 0.1])
    mags = torch.tensor([1.0, 3.0])
    spectra = torch.polar(mags, phases).reshape(1, 2, 1, 1)
    out = harmonic(spectra, torch.ones(1, 2))[0, 0, 0]
    assert abs(abs(out.angle().item()) - math.pi) < 1e-5  # not 0, the naive mean of angles
    assert out.abs().item() == pytest.approx(2 / (1 / 1 + 1 / 3), rel=1e-5)
    # an absent block (weight 0) is ignored entirely, whatever its values
    spectra3 = torch.cat([spectra, torch.full((1, 1, 1, 1), 1e6 + 0j)], dim=1)
    out3 = harmonic(spectra3, torch.tensor([[1.0, 1.0, 0.0]]))[0, 0, 0]
    torch.testing.assert_close(out3, out)


def test_other_methods_on_known_values():
    s = torch.tensor([1 + 1j, 3 - 1j, 100 + 0j]).reshape(1, 3, 1, 1).to(torch.complex64)
    w = torch.tensor([[1.0, 1.0, 0.0]])
    assert get_method("mean")(s, w).item() == pytest.approx(2 + 0j)
    assert get_method("sum")(s, w).item() == pytest.approx(4 + 0j)
    assert get_method("product")(s, w).item() == pytest.approx((1 + 1j) * (3 - 1j))
    assert get_method("mean")(s, torch.tensor([[3.0, 1.0, 0.0]])).item() == pytest.approx((3 * (1 + 1j) + 3 - 1j) / 4)


def test_user_registered_method_is_used_by_merge():
    name = "test-first-present"
    if name not in METHODS:

        @register_method(name)
        def first_present(spectra, weights):
            first = (weights > 0).float().argmax(dim=1)
            return spectra[torch.arange(spectra.shape[0]), first]

    blocks = trained_like([make_block(m) for m in "ab"])
    batch = make_batch("ab", missing={"a": [2]})
    out = merge(blocks, method=name)(batch).prediction
    # with the first present block's latent and the merged head
    merged = merge(blocks, method=name)
    spec_a, _ = blocks[0].latent(batch)
    torch.testing.assert_close(out[0], merged.merged_head(spec_a[:1])[0])


def test_slerp_head_merge():
    a, b = nn.Linear(2, 1, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[2.0, 0.0]]))
        b.weight.copy_(torch.tensor([[0.0, 4.0]]))
    out = merge_head_params([a, b], torch.ones(2), "slerp")["weight"]
    # direction halfway on the circle, norm the mean of the norms (3)
    torch.testing.assert_close(out, torch.tensor([[3 / math.sqrt(2), 3 / math.sqrt(2)]]))
    same = merge_head_params([a, a, a], torch.tensor([1.0, 2.0, 3.0]), "slerp")["weight"]
    torch.testing.assert_close(same, a.weight)


def test_empty_sample_gets_the_merged_prior():
    blocks = trained_like([make_block(m) for m in "abc"])
    merged = merge(blocks)
    batch = make_batch("abc", missing={m: [3] for m in "abc"})
    out = merged(batch).prediction
    priors = torch.cat([b.prior_latent() for b in blocks])[None]
    want = merged.merged_head(get_method("harmonic")(priors, torch.ones(1, 3)))
    torch.testing.assert_close(out[3], want[0])
    assert torch.isfinite(out).all()


# ---------------------------------------------------------------- no cross-sample mixing (fault 6)


@pytest.mark.parametrize("kind", ["block", "merge", "fuse"])
def test_outputs_do_not_depend_on_the_rest_of_the_batch(kind):
    blocks = trained_like([make_block(m) for m in "abc"])
    model = {"block": blocks[0], "merge": merge(blocks), "fuse": fuse(blocks)}[kind].eval()
    batch = make_batch("abc", n=10, missing={"a": [0, 5], "b": [1, 5, 7], "c": [2, 5, 8]})

    def pred(b):
        return model(b).prediction

    full = pred(batch)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        pred(batch.select(perm)), full[perm], rtol=1e-4, atol=1e-4
    )  # float noise only; mixing would be O(0.1)
    alone = torch.cat([pred(batch.select([i])) for i in range(10)])
    torch.testing.assert_close(alone, full, rtol=1e-4, atol=1e-4)  # float noise only; mixing would be O(0.1)


# ---------------------------------------------------------------- fuse (fault 4)


def test_fuse_copies_blocks_which_still_predict_alone():
    blocks = trained_like([make_block(m) for m in "abc"])
    batch = make_batch("abc", missing={"c": [0]})
    before = [b(batch).prediction.detach() for b in blocks]
    state = [{k: v.clone() for k, v in b.state_dict().items()} for b in blocks]
    fused = fuse(blocks).train()
    opt = torch.optim.SGD([p for p in fused.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        fused(batch).prediction.pow(2).sum().backward()
        opt.step()
    assert all(f is not b for f, b in zip(fused.blocks, blocks))
    for b, s, out in zip(blocks, state, before):
        assert all(torch.equal(v, s[k]) for k, v in b.state_dict().items())
        torch.testing.assert_close(b(batch).prediction, out)
    # the fused copies moved (they were fine-tuned), and each still runs alone
    assert not torch.equal(fused.blocks[0].latent0, blocks[0].latent0)
    assert fused.blocks[1](batch).prediction.shape == (12, 1)


def test_fuse_chains_present_blocks_and_skips_absent_ones():
    blocks = trained_like([make_block(m) for m in "abc"])
    fused = fuse(blocks).eval()
    batch = make_batch("abc", n=4, missing={"b": [0, 1], "a": [1]})
    out = fused(batch).prediction
    # sample 0 has a and c: a from its own latent, then c starting from a's spectrum
    one = batch.select([0])
    spec_a, _ = fused.blocks[0].latent(one)
    spec_c, _ = fused.blocks[2].latent(one, start=spec_a)
    torch.testing.assert_close(out[0], fused.head(spec_c)[0])
    # sample 1 has only c: c from its own latent
    one = batch.select([1])
    spec_c, _ = fused.blocks[2].latent(one)
    torch.testing.assert_close(out[1], fused.head(spec_c)[0])


def test_fuse_trainable_modes():
    blocks = [make_block(m) for m in "ab"]
    heads = fuse(blocks, trainable="heads")
    assert {n for n, p in heads.named_parameters() if p.requires_grad} == {
        n for n, _ in heads.head.named_parameters(prefix="head")
    }
    att = fuse(blocks, trainable="attention+heads").train()
    trainable = {n for n, p in att.named_parameters() if p.requires_grad}
    assert trainable and not any(".encoder." in n for n in trainable)
    assert any(".rounds." in n for n in trainable) and not att.blocks[0].encoder.training
    with pytest.raises(ModfuseError, match="trainable"):
        fuse(blocks, trainable="encoders")


# ---------------------------------------------------------------- compatibility


def test_incompatible_blocks_say_which_differ_and_how():
    a = make_block("a")
    with pytest.raises(IncompatibleError, match=r"block 1 \('b'\) has latent shape \(4, 16\).*\(8, 16\)"):
        merge([a, make_block("b", latent_shape=(4, 16))])
    with pytest.raises(IncompatibleError, match=r"block 1 .* has tasks"):
        merge([a, make_block("b", task="multiclass", num_outputs=3)])
    with pytest.raises(IncompatibleError, match="same modality"):
        fuse([a, make_block("a")])
    with pytest.raises(IncompatibleError, match="at least 2 blocks"):
        merge([a])
    with pytest.raises(ModfuseError, match="unknown merge method"):
        merge([a, make_block("b")], method="median")


# ---------------------------------------------------------------- artefacts


@pytest.mark.parametrize("kind", ["block", "merge", "fuse"])
def test_safetensors_round_trip_is_exact(tmp_path, kind):
    surv = TaskSpec("survival", 3, boundaries=(1.0, 2.0))
    blocks = trained_like([make_block(m, task=surv) for m in "abc"])
    model = {
        "block": blocks[0],
        "merge": merge(blocks, method="mean", head_merge="slerp", weights=[1.0, 2.0, 0.5]),
        "fuse": fuse(blocks, trainable="heads"),
    }[kind].eval()
    path = save(model, tmp_path / "m.safetensors")
    loaded = load(path)
    assert type(loaded) is type(model)
    assert loaded.to_config() == model.to_config()
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    batch = make_batch("abc", missing={"a": [0, 3], "c": [3]})
    assert torch.equal(model(batch).prediction, loaded(batch).prediction)


def test_save_refuses_an_encoder_its_config_cannot_rebuild_and_load_names_the_file(tmp_path):
    # an attribute set after construction is not part of the module's description
    enc = nn.Linear(D, 8)
    enc.out_dim = 8
    with pytest.raises(ModfuseError, match=r"does not rebuild it.*modfuse\.encoders\.wrap"):
        save(LegoBlock(enc, "a", latent_shape=LATENT, heads=2), tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ReadError, match=r"plain\.safetensors"):
        load(tmp_path / "plain.safetensors")


# ---------------------------------------------------------------- strategy registry


def test_strategies_are_registered_and_lego_merge_trains_blocks_apart():
    from modfuse.encoders import build as build_encoder
    from modfuse.fusion import base

    assert {"lego-merge", "lego-fuse"} <= set(base.available())
    encs = {m: build_encoder("tabular", num_features=D, hidden=[8], out_dim=8) for m in "ab"}
    fused = base.build("lego-fuse", encoders=encs, tasks="binary", latent_shape=LATENT, heads=2)
    assert isinstance(fused, LegoFuse) and fused.modalities == ["a", "b"]
    merged = base.build("lego-merge", encoders=encs, tasks="binary", latent_shape=LATENT, heads=2)
    assert isinstance(merged, LegoMerge)
    merged.eval()  # no dropout, so the two computations below see the same function
    batch = make_batch("ab", missing={"a": [0, 1]})
    outputs = merged(batch)
    loss = merged.compute_loss(outputs, batch)
    target = batch.target.float()
    want = sum(
        torch.nn.functional.binary_cross_entropy_with_logits(b(batch).prediction[idx, 0], target[idx])
        for b, idx in zip(merged.blocks, (torch.arange(2, 12), torch.arange(12)))
    )
    torch.testing.assert_close(loss, want)
    # no gradient crosses blocks: block a's gradient is that of its own loss alone
    loss.backward()
    joint = [p.grad.clone() for p in merged.blocks[0].parameters()]
    merged.zero_grad()
    a = merged.blocks[0]
    torch.nn.functional.binary_cross_entropy_with_logits(a(batch).prediction[2:, 0], target[2:]).backward()
    for g, p in zip(joint, a.parameters()):
        torch.testing.assert_close(g, p.grad)


@pytest.mark.parametrize("name", available_methods("latent"))
def test_every_latent_merge_method_is_batch_invariant_and_ignores_absent_blocks(name):
    """Contract over every registered latent method (built-in or user): a row's merged output
    does not depend on its batch, and an absent modality's encoder takes no part."""
    blocks = trained_like([make_block(m) for m in "abc"])
    merged = merge(blocks, method=name).eval()
    batch = make_batch("abc", missing={"c": list(range(12))})
    with torch.no_grad():
        together = merged(batch).prediction
        alone = torch.cat([merged(batch.select([i])).prediction for i in range(12)])
        for p in merged.blocks[2].encoder.parameters():
            p.add_(1.0)
        c_changed = merged(batch).prediction
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together, c_changed, atol=0, rtol=0)
