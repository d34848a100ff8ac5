"""Merge quality: calibrated blocks, the product of experts against the Bayes-optimal combination,
precision weighting, guard rails, ``modfuse merge --validate`` and label-free ``adapt``."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from modfuse import LegoBlock, MultiModalDataset
from modfuse.cli.merge import merge_main
from modfuse.datasets.manifest import write_manifest
from modfuse.errors import IncompatibleError, ModfuseError
from modfuse.lego import Calibration, adapt, load, merge, save
from modfuse.lego.workflow import fit_block

MODS = "abc"
DELTA = {"a": 0.9, "b": 1.2, "c": 1.5}  # class-mean shift of each modality (unit noise)
PRIOR = 0.3
N, N_TEST = 3600, 1200
TRAIN = {"lr": 3e-3, "batch_size": 64}
ENC = {"name": "tabular", "num_features": 1, "hidden": [16], "out_dim": 16, "dropout": 0.0}


def small_block(m: str, task: str = "binary", init_seed: int = 0) -> LegoBlock:
    return LegoBlock(ENC, m, task=task, latent_shape=(4, 16), depth=1, heads=2, init_seed=init_seed)


@pytest.fixture(scope="module")
def cohort():
    """y ~ Bernoulli(0.3); x_m | y ~ N(delta_m * y, 1), independent given y. The Bayes-optimal
    log-odds is logit(0.3) + sum_m delta_m (x_m - delta_m / 2). Each block trains and calibrates
    on its own third of the non-test rows (its own 'site')."""
    L.seed_everything(0, verbose=False)
    rng = np.random.default_rng(0)
    y = (rng.random(N) < PRIOR).astype(int)
    X = {m: (rng.normal(size=(N, 1)) + d * y[:, None]).astype("float32") for m, d in DELTA.items()}
    bayes = np.log(PRIOR / (1 - PRIOR)) + sum(d * (X[m][:, 0] - d / 2) for m, d in DELTA.items())
    ds = MultiModalDataset.from_arrays(X, y)
    perm = rng.permutation(N)
    test, rest = perm[:N_TEST], perm[N_TEST:]
    blocks = []
    for i, m in enumerate(MODS):
        own = rest[i::3]
        block = small_block(m)
        fit_block(block, ds, max_epochs=12, rows=own[:600], val_rows=own[600:], **TRAIN)
        blocks.append(block)
    batch = ds.collate_fn([ds[i] for i in test])
    return {"ds": ds, "X": X, "y": y, "blocks": blocks, "batch": batch, "test": test, "rest": rest, "bayes": bayes}


def scores(model, batch) -> np.ndarray:
    with torch.no_grad():
        out = model.eval()(batch)
    return out.prediction[:, 0].numpy()


def test_fit_block_calibrates_on_its_own_validation_rows(cohort):
    for block in cohort["blocks"]:
        cal = block.calibration
        assert isinstance(cal, Calibration) and cal.kind == "binary"
        assert cal.n_val == 200 and cal.n_prior == 800  # its own train + validation rows
        assert abs(cal.prior[0] - PRIOR) < 0.06
        assert 0.2 < cal.temperature[0] < 5 and cal.metric == "auroc" and 0.6 < cal.score < 1.0


def test_poe_beats_every_block_and_matches_the_bayes_optimal_combination(cohort):
    y, test = cohort["y"][cohort["test"]], cohort["test"]
    merged = merge(cohort["blocks"], method="poe")
    assert merged.resolved_method == "poe" and merge(cohort["blocks"]).resolved_method == "poe"  # the default
    auc = roc_auc_score(y, scores(merged, cohort["batch"]))
    singles = [roc_auc_score(y, scores(b, cohort["batch"])) for b in cohort["blocks"]]
    bayes = roc_auc_score(y, cohort["bayes"][test])
    assert auc > max(singles) + 0.03, (auc, singles)
    assert auc >= bayes - 0.01, (auc, bayes)
    # calibrated: the merged probabilities match the Bayes posterior closely on average
    p = torch.sigmoid(torch.as_tensor(scores(merged, cohort["batch"]))).numpy()
    p_bayes = 1 / (1 + np.exp(-cohort["bayes"][test]))
    assert np.abs(p - p_bayes).mean() < 0.05


def test_poe_of_one_present_block_is_that_blocks_calibrated_output(cohort):
    merged = merge(cohort["blocks"], method="poe")
    batch = cohort["batch"].with_modalities(["b"])
    block = cohort["blocks"][1]
    with torch.no_grad():
        want = block.calibration.apply(block(batch).prediction)
    torch.testing.assert_close(torch.as_tensor(scores(merged, batch)), want[:, 0])


def test_poe_without_calibration_raises_naming_the_block(cohort):
    raw = small_block("d")
    with pytest.raises(IncompatibleError, match=r"'poe' needs .*block 3 \('d'\) has none"):
        merge([*cohort["blocks"], raw], method="poe")


def test_different_init_seed_warns_naming_the_blocks():
    blocks = [small_block("a"), small_block("b", init_seed=7)]
    with pytest.warns(UserWarning, match=r"different init_seed \('a': 0, 'b': 7\)"):
        merge(blocks, method="harmonic")


def test_different_label_priors_warn(cohort):
    a, b = cohort["blocks"][:2]
    shifted = small_block("b")
    shifted.load_state_dict(b.state_dict())
    shifted.calibration = Calibration(**{**b.calibration.to_dict(), "prior": [0.6]})
    with pytest.warns(UserWarning, match=r"block 0 \('a'\) and block 1 \('b'\) were trained under different label"):
        merge([a, shifted], method="poe")


def test_precision_merge_weights_blocks_by_their_precision():
    """y ~ N(0, 1), x_m = y + N(0, s_m^2): block m's best estimate has residual variance
    v_m = s_m^2 / (1 + s_m^2). The merge weights each block by its precision 1 / v_m: the plain
    form is sum(mu_m / v_m) / sum(1 / v_m); the default (Gaussian product of experts) also removes
    the extra copy of the N(m0, v0) target prior both blocks contain, which is Bayes-optimal here."""
    L.seed_everything(1, verbose=False)
    rng = np.random.default_rng(1)
    n, noise = 2400, {"a": 0.5, "b": 1.5}
    y = rng.normal(size=n).astype("float32")
    X = {m: (y + s * rng.normal(size=n)).astype("float32")[:, None] for m, s in noise.items()}
    ds = MultiModalDataset.from_arrays(X, y)
    blocks = []
    for m in noise:
        block = small_block(m, task="regression")
        fit_block(block, ds, max_epochs=6, rows=np.arange(0, 1600), val_rows=np.arange(1600, 2000), **TRAIN)
        blocks.append(block)
    for block, s in zip(blocks, noise.values()):
        want = s**2 / (1 + s**2)
        assert block.calibration.spread[0] == pytest.approx(want, rel=0.2)
    merged = merge(blocks)
    assert merged.resolved_method == "precision"
    batch = ds.collate_fn([ds[i] for i in range(2000, n)])
    with torch.no_grad():
        mu = torch.stack([b(batch).prediction[:, 0] for b in blocks], 1)
        got = merged(batch).prediction[:, 0]
    v = torch.tensor([b.calibration.spread[0] for b in blocks])
    m0, v0 = blocks[0].calibration.prior[0], blocks[0].calibration.prior_var[0]
    torch.testing.assert_close(got, ((mu / v).sum(1) - m0 / v0) / ((1 / v).sum() - 1 / v0))
    with torch.no_grad():
        plain = merge(blocks, method_options={"prior_correction": False})(batch).prediction[:, 0]
    torch.testing.assert_close(plain, (mu / v).sum(1) / (1 / v).sum())
    rmse = {
        k: float(((p - torch.as_tensor(y[2000:])) ** 2).mean().sqrt()) for k, p in [("merged", got), *zip(noise, mu.T)]
    }
    assert rmse["merged"] < min(rmse["a"], rmse["b"]), rmse


def test_calibration_and_method_survive_save_and_load(cohort, tmp_path):
    merged = merge(cohort["blocks"], method="poe", method_options={"prior_correction": True})
    back = load(save(merged, tmp_path / "m.safetensors"))
    assert back.method == "poe" and back.method_options == {"prior_correction": True}
    assert back.blocks[0].calibration == cohort["blocks"][0].calibration
    np.testing.assert_allclose(scores(back, cohort["batch"]), scores(merged, cohort["batch"]), rtol=1e-5)


def test_method_options_are_checked_against_the_signature(cohort):
    with pytest.raises(Exception, match=r"no option\(s\) \['temperature'\].*prior_correction"):
        merge(cohort["blocks"], method="poe", method_options={"temperature": 2})
    plain = merge(cohort["blocks"], method="poe", method_options={"prior_correction": "false"})
    assert plain.method_options == {"prior_correction": False}


def test_merge_validate_writes_the_per_subset_table(cohort, tmp_path, capsys):
    paths = [save(b, tmp_path / f"{b.modality}.safetensors") for b in cohort["blocks"]]
    X, y = cohort["X"], cohort["y"]
    table = pd.DataFrame({"id": [str(i) for i in range(N)], "y": y, **{m: X[m][:, 0] for m in MODS}})
    test, rest = cohort["test"], cohort["rest"]
    write_manifest(
        table,
        tmp_path / "data",
        name="toy",
        modalities={m: {"kind": "columns", "columns": [m]} for m in MODS},
        targets={"y": {"kind": "binary", "columns": ["y"]}},
        splits={"fixed": {"train": rest[:1200], "val": test, "test": rest[1200:]}},
        group_column=None,
        table_format="csv",
    )
    out = tmp_path / "merged.safetensors"
    code = merge_main([*map(str, paths), "-o", str(out), "--validate", str(tmp_path / "data" / "manifest.csv")])
    assert code == 0
    report = pd.read_csv(tmp_path / "merged.validation.csv")
    assert sorted(report["subset"]) == sorted(["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"])
    assert (report["rows"] == N_TEST).all() and (report["metric"] == "auroc").all()
    full = report.set_index("subset").loc["a+b+c"]
    assert full["merged"] > full["best block score"] and full["block c"] == pytest.approx(full["best block score"])
    assert "each block alone vs the merged model" in capsys.readouterr().out
    # --choose-on: per-subset weights chosen on the same labelled rows, saved in the model file
    chosen = tmp_path / "chosen.safetensors"
    data = str(tmp_path / "data" / "manifest.csv")
    assert merge_main([*map(str, paths), "-o", str(chosen), "--choose-on", data, "--validate", data]) == 0
    assert "chosen on" in capsys.readouterr().out
    assert {c["subset"] for c in load(chosen).selection} == {"a+b", "a+c", "b+c", "a+b+c"}
    report = pd.read_csv(tmp_path / "chosen.validation.csv")
    assert (report["merged - best"] > -1e-3).all()


def test_adapt_leaves_the_source_blocks_unchanged_and_never_reads_labels(cohort):
    ds, rest = cohort["ds"], cohort["rest"]
    merged = merge(cohort["blocks"])
    before = [{k: v.clone() for k, v in b.state_dict().items()} for b in cohort["blocks"]]
    adapted = adapt(merged, ds, method="entropy", epochs=1, rows=rest[:600], check=0)
    for b, state in zip(cohort["blocks"], before):
        assert all(torch.equal(state[k], v) for k, v in b.state_dict().items())
    changed = [
        not torch.equal(a.head.linear.weight, b.head.linear.weight) for a, b in zip(adapted.blocks, merged.blocks)
    ]
    assert all(changed) and adapted.adaptation["used"] == 600
    # the same rows with other labels give the same adapted model: no label is used
    shuffled = MultiModalDataset.from_arrays(cohort["X"], np.random.default_rng(5).permutation(cohort["y"]))
    again = adapt(merged, shuffled, method="entropy", epochs=1, rows=rest[:600], check=0)
    for a, b in zip(adapted.blocks, again.blocks):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # every adapted block still predicts alone, and agreement filtering drops disagreeing rows
    single = cohort["batch"].with_modalities(["a"])
    assert scores(adapted.blocks[0], single).shape == (N_TEST,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        filtered = adapt(merged, ds, method="agreement", epochs=1, rows=rest[:600], check=0)
    assert 0 < filtered.adaptation["used"] < 600


def test_fuse_starts_as_the_merge_and_keeps_it_when_fine_tuning_does_not_help(cohort):
    from modfuse.data.datamodule import MultiModalDataModule
    from modfuse.lego import LegoFuse
    from modfuse.lego.workflow import fit_fuse

    merged = merge(cohort["blocks"])
    fused = LegoFuse(cohort["blocks"], base="merge")
    np.testing.assert_allclose(scores(fused, cohort["batch"]), scores(merged, cohort["batch"]), rtol=1e-5, atol=1e-6)
    rest, test = cohort["rest"], cohort["test"]
    dm = MultiModalDataModule(cohort["ds"], splits={"train": rest[:600], "val": rest[600:1200], "test": test})
    tuned = fit_fuse(cohort["blocks"], dm, 0, fuse_epochs=2, fuse_lr=1e-3, batch_size=64)
    # chained best block first, and chosen on validation against the untouched fuse
    assert [b.modality for b in tuned.blocks] == ["c", "b", "a"]
    tried = tuned.selection["validation"]
    assert set(tried) == {"before fine-tuning", "lr 0.001"}
    y = torch.as_tensor(cohort["y"][rest[600:1200]])
    batch = cohort["ds"].collate_fn([cohort["ds"][i] for i in rest[600:1200]])
    chosen = roc_auc_score(y, scores(tuned, batch))
    assert chosen == pytest.approx(tried[tuned.selection["kept"]], abs=1e-4)
    assert chosen >= tried["before fine-tuning"] - 1e-6  # never below its start on validation
    # the fuse starts from the validated merge (per subset, as merge(..., validation=...) chooses)
    validated = merge(cohort["blocks"], validation=[batch])

    def named(m):  # subset -> {modality: weight} (the chain reorders the blocks)
        return {k: dict(zip(m.modalities, w)) for k, w in m.subset_weights_by_name().items()}

    assert named(tuned.base_merge) == named(validated)
    start = LegoFuse(cohort["blocks"], base="merge", base_subset_weights=validated.subset_weights_by_name())
    assert tried["before fine-tuning"] == pytest.approx(roc_auc_score(y, scores(start, batch)), abs=1e-6)


def inverted(cohort, rows: np.ndarray):
    """The cohort's rows with modality c's signal inverted (a block that does not transfer to this
    site): the product of experts then adds misleading evidence and falls below block c's peers."""
    X = {m: cohort["X"][m][rows].copy() for m in MODS}
    y = cohort["y"][rows]
    X["c"] = (np.random.default_rng(3).normal(size=(len(rows), 1)) + DELTA["c"] * (1 - y[:, None])).astype("float32")
    ds = MultiModalDataset.from_arrays(X, y)
    return ds, ds.collate_fn([ds[i] for i in range(len(rows))])


def test_merge_chosen_on_validation_is_never_worse_than_its_best_block(cohort, tmp_path):
    from modfuse.lego import subset_report

    _, val = inverted(cohort, cohort["rest"][:1200])
    _, test = inverted(cohort, cohort["test"])
    plain = merge(cohort["blocks"])
    chosen = merge(cohort["blocks"], validation=[val])
    report = subset_report(chosen, [test]).set_index("subset")
    # every subset on unseen rows of the same site: at least its best block (the inverted c is dropped)
    assert (report["merged - best"] > -0.01).all(), report
    assert report.loc["a+b+c", "merged"] > report.loc["a+b+c", "best block score"]
    plain_report = subset_report(plain, [test]).set_index("subset")
    assert plain_report.loc["a+b+c", "merged - best"] < -0.02  # what the choice fixes
    full = {c["subset"]: c for c in chosen.selection}["a+b+c"]
    assert full["chosen"] in ("fitted", "block b") and full["weights"][2] < 0.2 * max(full["weights"][:2])
    assert set(full["scores"]) == {"block a", "block b", "block c", "merge", "fitted"}
    # single modalities are their block alone; the choice survives save / load
    torch.testing.assert_close(
        torch.as_tensor(scores(chosen, test.with_modalities(["b"]))),
        torch.as_tensor(scores(plain, test.with_modalities(["b"]))),
    )
    back = load(save(chosen, tmp_path / "chosen.safetensors"))
    assert back.subset_weights_by_name() == chosen.subset_weights_by_name() and back.selection == chosen.selection
    np.testing.assert_allclose(scores(back, test), scores(chosen, test), rtol=1e-5, atol=1e-6)


def test_choosing_on_validation_needs_a_prediction_space_merge(cohort):
    with pytest.raises(IncompatibleError, match="prediction-space method"):
        merge(cohort["blocks"], method="harmonic", validation=[cohort["batch"]])


def test_platt_targets_keep_a_separable_validation_set_finite():
    """20 validation rows the block separates perfectly: 0/1 targets push the temperature to 0
    (probabilities 1 - 1e-9, the weak pull to T = 1 stopped it near 0.5 on 43 rows of breast
    cancer); Platt's targets (N+ + 1) / (N+ + 2) = 11 / 12 keep it near the identity."""
    from modfuse.core.tasks import TaskSpec
    from modfuse.lego.calibration import fit_calibration

    logits = torch.linspace(-3, 3, 20)[:, None]
    target = (logits[:, 0] > 0).float()
    cal = fit_calibration(TaskSpec("binary"), logits, target)
    p = torch.sigmoid(cal.apply(logits))[:, 0]
    assert cal.temperature[0] > 0.5 and float(p.max()) < 0.99 and float(p.min()) > 0.01
    # the fit matches Platt's targets on average over each class (rows nearest 0 are the least sure)
    assert float(p[10:].mean()) == pytest.approx(11 / 12, abs=0.1)


def test_poe_divides_by_what_each_block_averages_to_not_by_a_near_zero_label_frequency():
    """Class 0 is absent from the blocks' rows (label frequency = one pseudo-count) but the
    blocks still give it some probability; dividing by the label frequency (k - 1) times sent
    every sample to class 0 (eopatch, after adaptation). The output prior keeps the merge's
    class-0 rate at the blocks' own."""
    from modfuse.core.tasks import TaskSpec
    from modfuse.lego.calibration import fit_calibration

    L.seed_everything(2, verbose=False)
    spec = TaskSpec("multiclass", 4)
    x = {m: torch.randn(300, 1) for m in MODS}
    ds = MultiModalDataset.from_arrays({m: v.numpy() for m, v in x.items()}, np.zeros(300, dtype=int))
    batch = ds.collate_fn([ds[i] for i in range(300)])
    target = torch.as_tensor(np.random.default_rng(0).choice([1, 2, 3], size=300))
    blocks = []
    for m in MODS:
        block = small_block(m, task=spec)
        with torch.no_grad():
            block.head.linear.bias.copy_(torch.tensor([0.5, 0.0, 0.0, 0.0]))  # class 0 a little likely
            block.calibration = fit_calibration(spec, block(batch).prediction, target)
        blocks.append(block)
    assert blocks[0].calibration.prior[0] < 0.01 < blocks[0].calibration.output_prior[0]
    with torch.no_grad():
        merged_rate = (merge(blocks)(batch).prediction.argmax(-1) == 0).float().mean()
        block_rate = max(float((b(batch).prediction.argmax(-1) == 0).float().mean()) for b in blocks)
        stale = [Calibration(**{**b.calibration.to_dict(), "output_prior": []}) for b in blocks]
        for b, c in zip(blocks, stale):
            b.calibration = c
        stale_rate = (merge(blocks)(batch).prediction.argmax(-1) == 0).float().mean()
    assert merged_rate <= block_rate + 0.1 and stale_rate > 0.9, (merged_rate, block_rate, stale_rate)


def test_adapt_remeasures_each_blocks_output_prior_on_the_target_rows(cohort):
    ds, rest = cohort["ds"], cohort["rest"]
    adapted = adapt(merge(cohort["blocks"]), ds, method="entropy", epochs=1, rows=rest[:600], check=0)
    batch = ds.collate_fn([ds[i] for i in rest[:600]])
    for blk, src in zip(adapted.blocks, cohort["blocks"]):
        with torch.no_grad():
            want = torch.sigmoid(blk.calibration.apply(blk(batch).prediction)).mean(0)
        assert blk.calibration.output_prior == pytest.approx(want.tolist(), abs=1e-5)
        assert src.calibration.output_prior != blk.calibration.output_prior  # the source is untouched


def test_a_merge_is_chosen_over_its_block_only_on_clear_evidence(cohort):
    from modfuse.lego.selection import beats_block

    block = torch.as_tensor(np.random.default_rng(0).exponential(size=200))
    noise = torch.tensor([0.5, -0.5], dtype=block.dtype).repeat(100)  # per-row spread 0.5: se 0.035
    assert not beats_block(block - 0.01 + noise, block)[0]  # a mean gain of 0.01 is noise
    clear, gain, se = beats_block(block - 0.2 + noise, block)
    assert clear and gain > se > 0
    # 6 labelled rows: too few to trust any combination; each subset keeps its best block by the
    # blocks' own validation scores (c separates best, DELTA), never the untested merge
    few = cohort["ds"].collate_fn([cohort["ds"][i] for i in cohort["rest"][:6]])
    chosen = merge(cohort["blocks"], validation=[few])
    for c in chosen.selection:
        best = "c" if "c" in c["subset"] else "b"
        assert c["chosen"] == f"block {best} (too few rows)", c
    torch.testing.assert_close(
        chosen(cohort["batch"]).prediction,
        cohort["blocks"][2].calibration.apply(cohort["blocks"][2](cohort["batch"]).prediction),
    )


def test_adapt_keeps_the_source_blocks_when_the_label_free_check_fails(cohort):
    ds, rest = cohort["ds"], cohort["rest"]
    merged = merge(cohort["blocks"])
    # a learning rate that wrecks the blocks: the held-out check (no label) must restore them all
    wrecked = adapt(merged, ds, method="entropy", epochs=2, lr=0.5, rows=rest[:600])
    check = wrecked.adaptation["check"]
    assert set(check) == set(MODS) and not any(v["kept"] for v in check.values()), check
    assert wrecked.adaptation["checked"] == 120 and wrecked.adaptation["used"] == 480
    np.testing.assert_allclose(scores(wrecked, cohort["batch"]), scores(merged, cohort["batch"]), rtol=1e-5, atol=1e-6)
    unchecked = adapt(merged, ds, method="entropy", epochs=2, lr=0.5, rows=rest[:600], check=0)
    y = cohort["y"][cohort["test"]]
    assert roc_auc_score(y, scores(unchecked, cohort["batch"])) < roc_auc_score(y, scores(wrecked, cohort["batch"]))


def test_an_own_validation_score_within_its_noise_does_not_rank_two_blocks(cohort):
    from modfuse.lego.selection import _best_by_own_score, beats_block, own_score_se

    # the synthetic cohort's seed 1: the X-ray block (0.53 AUROC on the test rows) scored 0.706
    # on its 64 own validation rows, the labs block 0.683 on 76: a gap of 0.023 against a
    # standard error of the difference of ~0.08
    se = np.hypot(own_score_se(0.7059, 64, "auroc"), own_score_se(0.6832, 76, "auroc"))
    assert 0.07 < se < 0.09 and 0.7059 - 0.6832 < se
    assert own_score_se(1.0, 43, "auroc") > 0.02  # a perfect score on 43 rows still has an error
    assert own_score_se(0.8, 100, "rmse") == pytest.approx(0.8 / np.sqrt(200))
    # one block replaces another only beyond 2 standard errors (a combination: beyond 1)
    block = torch.as_tensor(np.random.default_rng(0).exponential(size=200))
    noise = torch.tensor([0.5, -0.5], dtype=block.dtype).repeat(100)  # se 0.035
    assert beats_block(block - 0.05 + noise, block)[0] and not beats_block(block - 0.05 + noise, block, z=2.0)[0]
    ds, rest = cohort["ds"], cohort["rest"]
    blocks = [copy.deepcopy(b) for b in cohort["blocks"]]
    a, c = blocks[0], blocks[2]
    spec = next(iter(a.tasks.values()))
    # give the weakest block (a) an own score just above the strongest one's (c), within noise
    a.calibration = Calibration(**{**a.calibration.to_dict(), "score": c.calibration.score + 0.01})
    assert _best_by_own_score(blocks, [0, 2], spec) == (0, False)
    few = [ds.collate_fn([ds[i] for i in rest[:14]])]
    hedged = {s["subset"]: s for s in merge(blocks, validation=few, rule="hedge").selection}
    # rule "hedge" does not trust the inflated score: it starts from the product of experts
    assert hedged["a+c"]["chosen"] != "block a" and "merge" not in hedged["a+c"]["evidence"], hedged["a+c"]
    # a clear gap (0.3 on 60 rows each) still ranks the blocks by their own rows
    a.calibration = Calibration(**{**a.calibration.to_dict(), "score": 0.95, "n_val": 60})
    c.calibration = Calibration(**{**c.calibration.to_dict(), "score": 0.65, "n_val": 60})
    assert _best_by_own_score(blocks, [0, 2], spec) == (0, True)
    hedged = {s["subset"]: s for s in merge(blocks, validation=few, rule="hedge").selection}
    assert "merge" in hedged["a+c"]["evidence"]  # started from block a, the merge a candidate


def test_agreement_likelihood_recovers_the_temperature_of_overconfident_independent_experts():
    from modfuse.lego.recalibrate import fit_affine

    # three views independent given y ~ Bernoulli(0.5): x_i | y ~ N(+-delta_i, 1), true
    # posterior log-odds 2 delta_i x_i; the experts report 3x (overconfident) and shifted by 0.5
    rng = np.random.default_rng(0)
    n, delta = 20000, np.array([0.6, 0.8, 1.0])
    y = rng.random(n) < 0.5
    x = rng.normal(size=(n, 3)) + np.where(y[:, None], delta, -delta)
    z = torch.tensor(3 * 2 * delta * x + 0.5, dtype=torch.float32)[:, :, None]  # (n, N, 1)
    present = torch.ones(n, 3, dtype=torch.bool)
    a, b = fit_affine("binary", z, present)
    np.testing.assert_allclose(a[:, 0].numpy(), 1 / 3, atol=0.03)
    np.testing.assert_allclose((a * 0.5 + b)[:, 0].numpy(), 0.0, atol=0.06)  # the shift is removed
    # rows with one block carry no agreement: nothing to fit
    alone = torch.zeros(n, 3, dtype=torch.bool)
    alone[:, 0] = True
    a1, b1 = fit_affine("binary", z, alone)
    assert torch.equal(a1, torch.ones(3, 1)) and torch.equal(b1, torch.zeros(3, 1))


def test_adapt_calibration_fixes_overconfident_blocks_without_touching_their_weights(cohort):
    ds, rest, y = cohort["ds"], cohort["rest"], cohort["y"][cohort["test"]]
    blocks = [copy.deepcopy(b) for b in cohort["blocks"]]
    for b in blocks:  # each block 3x overconfident
        cal = b.calibration
        b.calibration = Calibration(
            **{**cal.to_dict(), "temperature": [t / 3 for t in cal.temperature], "bias": [3 * v for v in cal.bias]}
        )
    merged = merge(blocks)
    before = [{k: v.clone() for k, v in b.state_dict().items()} for b in blocks]
    adapted = adapt(merged, ds, method="calibration", rows=rest[:1200])
    for b, new, state in zip(blocks, adapted.blocks, before):
        assert all(torch.equal(state[k], v) for k, v in b.state_dict().items())  # sources untouched
        assert all(torch.equal(state[k], v) for k, v in new.state_dict().items())  # no weight trained
    check = adapted.adaptation["check"]
    assert all(c["kept"] for c in check.values()), check
    for m, fit in adapted.adaptation["affine"].items():
        assert 0.22 < fit["a"][0] < 0.45, (m, fit)
    logloss = lambda model: float(  # noqa: E731
        torch.nn.functional.binary_cross_entropy_with_logits(
            torch.tensor(scores(model, cohort["batch"])), torch.tensor(y, dtype=torch.float32)
        )
    )
    assert logloss(adapted) < logloss(merged) - 0.05 and logloss(adapted) < logloss(merge(cohort["blocks"])) + 0.02
    # the unlabelled rows alone decide: other labels, the same calibration
    shuffled = MultiModalDataset.from_arrays(cohort["X"], np.random.default_rng(5).permutation(cohort["y"]))
    again = adapt(merged, shuffled, method="calibration", rows=rest[:1200])
    assert [b.calibration for b in again.blocks] == [b.calibration for b in adapted.blocks]
    regression = []
    for m in "ab":
        block = small_block(m, task="regression")
        block.calibration = Calibration("regression", [1.0], [0.0], [0.0], [1.0], [0.5], 10, 10)
        regression.append(block)
    with pytest.raises(ModfuseError, match=r"'calibration' supports .* found 'regression'"):
        adapt(merge(regression), ds, method="calibration", rows=rest[:50])
