"""Training core: task specifications, survival loss and C-index by hand, FusionTask end to end."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torchmetrics import MetricCollection
from torchmetrics.regression import MeanAbsoluteError

import modfuse
from modfuse import FusionTask, MultiModalDataModule, MultiModalDataset
from modfuse.core.losses import survival_bins
from modfuse.core.tasks import TaskKind, register_task_kind
from modfuse.encoders import build
from modfuse.errors import ModfuseError
from modfuse.fusion import EarlyFusion
from modfuse.training import TaskSpec, concordance_index, discrete_time_nll


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_survival_bins_follow_the_documented_intervals() -> None:
    # intervals: (-inf, 1], (1, 3], (3, inf)
    bins = survival_bins(torch.tensor([0.5, 1.0, 2.0, 3.0, 7.0]), torch.tensor([1.0, 3.0]))
    assert bins.tolist() == [0, 0, 1, 1, 2]


def test_discrete_time_nll_matches_hand_computation() -> None:
    logits = torch.tensor([[0.2, -0.5, 1.0], [0.0, 0.3, -1.0]])
    boundaries = torch.tensor([1.0, 3.0])
    # sample 0: event at t=2 (interval 1): log(1-h00) + log(h01)
    # sample 1: censored at t=2 (interval 1): log(1-h10) + log(1-h11)
    ll0 = math.log(1 - sig(0.2)) + math.log(sig(-0.5))
    ll1 = math.log(1 - sig(0.0)) + math.log(1 - sig(0.3))
    loss = discrete_time_nll(logits, torch.tensor([2.0, 2.0]), torch.tensor([1, 0]), boundaries)
    assert loss.item() == pytest.approx(-(ll0 + ll1) / 2, abs=1e-6)


def test_concordance_index_hand_example_with_censoring_and_ties() -> None:
    time = torch.tensor([1.0, 2.0, 2.0, 3.0, 4.0])
    event = torch.tensor([1, 1, 0, 1, 0])
    risk = torch.tensor([0.9, 0.5, 0.5, 0.6, 0.1])
    # comparable pairs (i had the event, j outlived i):
    # i=0 (t1): j=1,2,3,4 -> risks 0.9 > .5,.5,.6,.1: 4 concordant
    # i=1 (t2): j=2 (same time, censored) tie in risk: 0.5; j=3: .5<.6 discordant; j=4: concordant
    # i=3 (t3): j=4: .6>.1 concordant
    # total comparable 8, concordant 4 + 0.5 + 0 + 1 + 1 = 6.5
    assert concordance_index(risk, time, event).item() == pytest.approx(6.5 / 8)
    # two events at the same time are not comparable
    tied = concordance_index(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0]), torch.tensor([1, 1]))
    assert math.isnan(tied.item())


def test_task_spec_rejects_bad_targets_clearly() -> None:
    with pytest.raises(ModfuseError, match=r"expected 0/1 labels, found 2.0 at sample b"):
        TaskSpec("binary").check_target(torch.tensor([0.0, 2.0]), ids=["a", "b"])
    with pytest.raises(ModfuseError, match=r"classes in 0..2, found 3"):
        TaskSpec("multiclass", 3).check_target(torch.tensor([0, 3]))
    with pytest.raises(ModfuseError, match=r"expected finite values"):
        TaskSpec("regression").check_target(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ModfuseError, match=r"\(time, event\) of shape \(B, 2\)"):
        TaskSpec("survival", 3, boundaries=(1.0, 2.0)).check_target(torch.tensor([1.0, 2.0]))
    with pytest.raises(ModfuseError, match="needs 2 interior boundaries"):
        TaskSpec("survival", 3)


def test_binary_metrics_use_probabilities_not_labels() -> None:
    spec = TaskSpec("binary")
    metrics = spec.metrics()
    logits = torch.tensor([[-0.1], [0.2], [0.1], [3.0]])  # ranks perfectly; hard labels would not
    target = torch.tensor([0, 1, 0, 1])
    metrics.update(*spec.metric_inputs(logits, target))
    assert metrics.compute()["auroc"].item() == pytest.approx(1.0)


def breast_cancer_groups() -> tuple[dict[str, np.ndarray], np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return {"mean": X[:, :10], "se": X[:, 10:20], "worst": X[:, 20:]}, y


def test_fusion_task_reaches_auroc_097_on_breast_cancer() -> None:
    groups, y = breast_cancer_groups()
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(groups, y), batch_size=32, seed=0)
    model = EarlyFusion({k: build("tabular", num_features=10, hidden=(32,), out_dim=16) for k in groups})
    task = FusionTask(model, lr=3e-3)
    trainer = L.Trainer(
        max_epochs=12, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(task, dm)
    # train/loss is logged on the steps the loggers record and on each epoch's last batch
    assert "train/loss" in trainer.callback_metrics and "val/auroc" in trainer.callback_metrics
    result = trainer.test(task, dm, verbose=False)[0]
    assert result["test/auroc"] >= 0.97
    predictions = trainer.predict(task, dm.test_dataloader())
    ids = [i for p in predictions for i in p["ids"]]
    assert ids == [dm.dataset.ids[i] for i in dm.splits["test"]]
    probs = torch.cat([p["y"] for p in predictions])
    assert probs.min() >= 0 and probs.max() <= 1


def test_fusion_task_trains_survival_and_multitask() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    time = np.exp(-1.5 * x[:, 0] + 0.2 * rng.normal(size=200))
    event = (rng.random(200) < 0.7).astype(float)
    y = {"surv": np.stack([time, event], 1), "cls": (x[:, 1] > 0).astype(int)}
    ds = MultiModalDataset.from_arrays({"a": x[:, :2], "b": x[:, 2:]}, y)
    tasks = {
        "surv": TaskSpec("survival", 4, boundaries=tuple(np.quantile(time, [0.25, 0.5, 0.75]))),
        "cls": TaskSpec("binary"),
    }
    model = EarlyFusion(
        {
            "a": build("tabular", num_features=2, hidden=(16,), out_dim=8),
            "b": build("tabular", num_features=2, hidden=(16,), out_dim=8),
        },
        tasks=tasks,
    )
    task = FusionTask(model, lr=1e-2)
    assert task.monitor == "val/surv/cindex"
    trainer = L.Trainer(
        max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    dm = MultiModalDataModule(ds, split="random", batch_size=16, seed=0)
    trainer.fit(task, dm)
    out = trainer.test(task, dm, verbose=False)[0]
    assert out["test/surv/cindex"] > 0.7 and out["test/cls/auroc"] > 0.8


def test_hyperparameters_are_plain_so_loggers_and_safe_loading_work(tmp_path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    rng = np.random.default_rng(0)
    ds = MultiModalDataset.from_arrays({"a": rng.normal(size=(40, 3))}, rng.integers(0, 2, 40))
    model = EarlyFusion({"a": build("tabular", num_features=3, hidden=(8,), out_dim=4)})
    task = FusionTask(model, tasks=TaskSpec("binary"))
    trainer = L.Trainer(
        max_epochs=1,
        logger=CSVLogger(tmp_path),
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, MultiModalDataModule(ds, batch_size=16))
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert checkpoint["hyper_parameters"]["tasks"] == {
        "y": {"kind": "binary", "num_outputs": 1, "boundaries": None, "weight": 1.0}
    }


def _tiny_fit(**trainer_kwargs: object) -> tuple[FusionTask, L.Trainer]:
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(64, 4)).astype(np.float32)}
    y = (x["a"][:, 0] > 0).astype(np.float32)
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(x, y), batch_size=16, seed=0)
    task = FusionTask(EarlyFusion({"a": build("tabular", num_features=4)}, tasks="binary"), scheduler=None)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, **trainer_kwargs
    )
    trainer.fit(task, dm)
    return task, trainer


def test_fused_optimizer_on_cpu_and_its_fallback_under_mixed_precision_clipping() -> None:
    _, trainer = _tiny_fit()
    assert trainer.optimizers[0].defaults["fused"] is True
    # Lightning unscales gradients before clipping under mixed precision, which a fused step
    # cannot allow: the task falls back to the default implementation and trains.
    _, trainer = _tiny_fit(precision="bf16-mixed", gradient_clip_val=1.0)
    assert trainer.optimizers[0].defaults["fused"] is None


def test_fused_adamw_gives_the_same_update_as_the_default_one() -> None:
    torch.manual_seed(0)
    params = [torch.randn(8, 4, requires_grad=True), torch.randn(8, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    opts = [torch.optim.AdamW(params, lr=1e-2, fused=True), torch.optim.AdamW(twins, lr=1e-2)]
    for _ in range(5):
        for group, opt in zip((params, twins), opts):
            loss = sum((p**2).sum() for p in group)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q)


ONE_CYCLE_PER_EPOCH = {
    "class_path": "torch.optim.lr_scheduler.OneCycleLR",
    "init_args": {"max_lr": 0.01, "total_steps": 2},
}
STEP_LR = {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}}


@pytest.mark.parametrize(
    "scheduler",
    ["cosine", "plateau", None, ONE_CYCLE_PER_EPOCH, STEP_LR],
    ids=["cosine", "plateau", "none", "one_cycle_class_path", "step_lr_class_path"],
)
def test_extending_a_finished_run_from_last_ckpt_trains_to_the_new_max_epochs(tmp_path, scheduler) -> None:
    """``fit --ckpt_path last --trainer.max_epochs N`` with a larger N continues the run (with the
    one-cycle schedule, the restored scheduler was planned for the old length and raised), for
    every scheduler the task offers: its own, and any torch scheduler described as class_path
    (what a recipe's ``lr_scheduler:`` gives; stepped per epoch)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 64)
    X = {"a": np.c_[y + 0.3 * rng.normal(size=64), rng.normal(size=64)], "b": rng.normal(size=(64, 2))}
    dm = MultiModalDataModule(MultiModalDataset.from_arrays(X, y), batch_size=8, seed=0)

    def trainer(epochs: int) -> L.Trainer:
        return L.Trainer(
            max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path, callbacks=[L.pytorch.callbacks.ModelCheckpoint(tmp_path, "last")],
        )  # fmt: skip

    def task() -> FusionTask:
        L.seed_everything(0, verbose=False)
        encoders = {m: build("tabular", num_features=x.shape[1], hidden=(8,), out_dim=4) for m, x in X.items()}
        return FusionTask(EarlyFusion(encoders, tasks="binary"), lr=1e-2, scheduler=scheduler)

    first = trainer(2)
    first.fit(task(), dm)
    steps_per_epoch = first.global_step // 2
    extended = trainer(4)
    extended.fit(task(), dm, ckpt_path=str(tmp_path / "last.ckpt"))
    assert extended.current_epoch == 4 and extended.global_step == 4 * steps_per_epoch
    if scheduler == "cosine":
        sched = extended.lr_scheduler_configs[0].scheduler
        assert sched.total_steps == 4 * steps_per_epoch
        assert sched.get_last_lr()[0] < 1e-3  # annealed to the end of the extended run
    if scheduler == ONE_CYCLE_PER_EPOCH:  # planned over epochs: the first run kept its 2, the extension 4
        assert first.lr_scheduler_configs[0].scheduler.total_steps == 2
        sched = extended.lr_scheduler_configs[0].scheduler
        assert sched.total_steps == 4 and sched.last_epoch == 4
    if scheduler == STEP_LR:  # halved after each of the 4 epochs, the restored 2 included
        assert extended.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(1e-2 * 0.5**4)


@pytest.mark.parametrize("n_train", [8, 16, 40])
def test_a_run_of_very_few_steps_trains_with_the_one_cycle_schedule(n_train: int) -> None:
    """1, 2 or 5 optimizer steps in all: torch's one-cycle divided by zero below 10 steps."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n_train)
    X = {"a": rng.normal(size=(n_train, 2))}
    ds = MultiModalDataset.from_arrays(X, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=ds.collate_fn)
    task = FusionTask(EarlyFusion({"a": build("tabular", num_features=2, out_dim=4)}, tasks="binary"))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(task, loader)
    assert trainer.global_step == -(-n_train // 8)


@register_task_kind("test-count")
class Count(TaskKind):
    """A user task kind: counts with a Poisson loss (what docs/extending.md describes)."""

    main_metric = ("mae", "min")

    def check_target(self, spec, target, ids, fail):
        if target.dim() != 1 or (target < 0).any():
            raise fail(f"expected non-negative counts of shape (B,), found {tuple(target.shape)}")
        return target.float()

    def loss(self, spec, logits, target):
        return torch.nn.functional.poisson_nll_loss(logits[:, 0], target, log_input=True)

    def activate(self, spec, logits):
        return logits[:, 0].exp()

    def metrics(self, spec):
        return MetricCollection({"mae": MeanAbsoluteError()})


def test_a_user_registered_task_kind_trains_monitors_and_saves(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype("float32")
    counts = rng.poisson(np.exp(0.8 * x[:, 0] + 0.5)).astype("float32")
    dm = MultiModalDataModule(MultiModalDataset.from_arrays({"a": x}, counts), batch_size=32, seed=0, split="random")
    model = EarlyFusion({"a": build("tabular", num_features=4, hidden=(16,), out_dim=8)}, tasks=TaskSpec("test-count"))
    task = FusionTask(model, lr=1e-2)
    assert (task.monitor, task.monitor_mode) == ("val/mae", "min")
    trainer = L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(task, dm)
    mae = trainer.test(task, dm, verbose=False)[0]["test/mae"]
    baseline = float(np.abs(counts - np.median(counts)).mean())
    assert mae < 0.9 * baseline  # it learned from x, through the kind's own loss and activation
    modfuse.save(model, tmp_path / "count.safetensors")
    assert modfuse.load(tmp_path / "count.safetensors").tasks == {"y": TaskSpec("test-count")}
    with pytest.raises(ModfuseError, match="test-count"):
        TaskSpec("no-such-kind")  # the error lists the registered kinds, the user's included


@pytest.mark.parametrize(
    ("monitor", "mode"), [("val/loss", "min"), ("val/auroc", "max"), ("val/accuracy", "max"), ("train/loss", "min")]
)
def test_the_monitor_mode_comes_from_the_metric_not_its_name(monitor: str, mode: str) -> None:
    model = EarlyFusion({"a": build("tabular", num_features=3, out_dim=4)}, tasks="binary")
    assert FusionTask(model, monitor=monitor).monitor_mode == mode
    regression = EarlyFusion({"a": build("tabular", num_features=3, out_dim=4)}, tasks="regression")
    assert FusionTask(regression, monitor="val/r2").monitor_mode == "max"  # "r2" names no direction
    with pytest.raises(ModfuseError, match="val/rmse"):
        FusionTask(regression, monitor="val/auroc")
