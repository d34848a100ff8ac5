"""The Cox partial-likelihood loss of the survival task kind (``TaskSpec(..., objective="cox")``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from modfuse.core.losses import cox_partial_nll
from modfuse.core.metrics import concordance_index
from modfuse.core.tasks import TaskSpec
from modfuse.errors import ModfuseError

# times with ties among events (2.0 x3, 5.0 x2) and between an event and censored samples
TIME = torch.tensor([2.0, 3.0, 2.0, 5.0, 1.0, 5.0, 2.0, 7.0, 4.0, 3.0], dtype=torch.float64)
EVENT = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1, 1, 1], dtype=torch.float64)
ETA = torch.tensor([0.3, -1.2, 0.8, 0.1, 2.0, -0.4, 0.0, -2.5, 0.6, 1.1], dtype=torch.float64)


def _breslow_direct(eta: list[float], time: list[float], event: list[float]) -> float:
    """The Breslow partial likelihood by its definition, one risk set per event (O(n^2))."""
    total = 0.0
    for i in range(len(eta)):
        if event[i]:
            risk_set = [math.exp(eta[j]) for j in range(len(eta)) if time[j] >= time[i]]
            total += eta[i] - math.log(sum(risk_set))
    return -total / sum(event)


def test_cox_loss_equals_the_direct_breslow_formula_with_ties():
    got = cox_partial_nll(ETA, TIME, EVENT)
    want = _breslow_direct(ETA.tolist(), TIME.tolist(), EVENT.tolist())
    assert got.item() == pytest.approx(want, rel=1e-12)
    # the order of the samples does not matter
    perm = torch.randperm(len(TIME), generator=torch.Generator().manual_seed(0))
    assert cox_partial_nll(ETA[perm], TIME[perm], EVENT[perm]).item() == pytest.approx(want, rel=1e-12)


def test_cox_loss_is_stationary_at_scikit_survivals_breslow_fit():
    """scikit-survival's unpenalised Cox model with Breslow ties maximises the same partial
    likelihood: at its coefficients the loss's gradient vanishes and any step increases it."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    time = np.ceil(rng.exponential(np.exp(-x @ [0.8, -0.5, 0.0])) * 4)  # integer times: many ties
    event = rng.random(60) < 0.7
    fit = CoxPHSurvivalAnalysis(ties="breslow", alpha=0.0, tol=1e-12, n_iter=200).fit(x, Surv.from_arrays(event, time))
    assert len(np.unique(time[event])) < event.sum()  # the example does have tied events

    coef = torch.tensor(fit.coef_, dtype=torch.float64, requires_grad=True)
    xt, tt, et = torch.tensor(x), torch.tensor(time), torch.tensor(event, dtype=torch.float64)
    loss = cox_partial_nll(xt @ coef, tt, et)
    (grad,) = torch.autograd.grad(loss, coef)
    assert grad.abs().max().item() < 1e-6
    for step in (torch.tensor([0.05, 0.0, 0.0]), torch.tensor([0.0, -0.05, 0.05])):
        moved = cox_partial_nll(xt @ (coef.detach() + step.double()), tt, et)
        assert moved.item() > loss.item()


def test_cox_loss_is_stable_for_large_risks_and_batches_without_events():
    eta = (ETA * 1e4).float().requires_grad_()
    loss = cox_partial_nll(eta, TIME.float(), EVENT.float())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(eta.grad).all()
    # a shift of every log risk cancels in the partial likelihood
    shifted = cox_partial_nll(ETA + 50.0, TIME, EVENT)
    assert shifted.item() == pytest.approx(cox_partial_nll(ETA, TIME, EVENT).item(), rel=1e-10)
    # no event in the batch: no information, a zero loss whose gradient is zero
    eta = ETA.clone().requires_grad_()
    none = cox_partial_nll(eta, TIME, torch.zeros_like(EVENT))
    none.backward()
    assert none.item() == 0.0 and (eta.grad == 0).all()


def test_survival_task_with_the_cox_loss():
    spec = TaskSpec("survival", 1, objective="cox")
    target = torch.stack([TIME, EVENT], dim=1).float()
    logits = ETA.float()[:, None]
    assert spec.loss(logits, target).item() == pytest.approx(cox_partial_nll(ETA, TIME, EVENT).item(), rel=1e-5)
    # prediction: the log risk itself, which the concordance metric ranks
    assert torch.equal(spec.activate(logits), logits[:, 0])
    metric = spec.metrics()
    metric.update(*spec.metric_inputs(logits, target))
    want = concordance_index(ETA, TIME, EVENT).item()
    assert metric.compute()["cindex"].item() == pytest.approx(want)
    # described and rebuilt with its loss; a default-loss task's description is unchanged
    assert TaskSpec(**spec.to_dict()) == spec
    assert "objective" not in TaskSpec("survival", 2, (3.0,)).to_dict()
    assert spec.main_metric == ("cindex", "max")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "survival", "num_outputs": 4, "boundaries": (1.0, 2.0, 3.0), "objective": "cox"}, "1 output"),
        ({"kind": "survival", "num_outputs": 1, "objective": "weibull"}, "unknown objective 'weibull'"),
        ({"kind": "binary", "objective": "cox"}, "the kind has one loss"),
    ],
)
def test_bad_loss_choices_are_clear_errors(kwargs, message):
    with pytest.raises(ModfuseError, match=message):
        TaskSpec(**kwargs)


def test_a_linear_model_trained_with_the_cox_loss_ranks_held_out_patients():
    """The loss drives learning: a linear log risk fitted with Adam on mini-batches recovers the
    true risk order of new patients (C close to that of the true coefficients)."""
    gen = torch.Generator().manual_seed(0)
    beta = torch.tensor([1.0, -0.7, 0.0, 0.4])

    def cohort(n):
        x = torch.randn(n, 4, generator=gen)
        t_event = -torch.log(torch.rand(n, generator=gen)) / torch.exp(x @ beta)
        t_censor = -torch.log(torch.rand(n, generator=gen)) * 2.0
        return x, torch.minimum(t_event, t_censor), (t_event <= t_censor).float()

    x, time, event = cohort(400)
    spec = TaskSpec("survival", 1, objective="cox")
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    target = torch.stack([time, event], dim=1)
    for _ in range(30):
        for rows in torch.randperm(400, generator=gen).split(64):
            opt.zero_grad()
            spec.loss(model(x[rows]), target[rows]).backward()
            opt.step()
    x_test, t_test, e_test = cohort(400)
    with torch.no_grad():
        learned = concordance_index(spec.activate(model(x_test)), t_test, e_test).item()
    oracle = concordance_index(x_test @ beta, t_test, e_test).item()
    assert learned > oracle - 0.02
    assert learned > 0.7


def test_a_fusion_model_trains_with_the_cox_loss_end_to_end():
    """FusionTask takes the objective from the spec: it trains, monitors and tests the C-index of
    the log risk, and records the objective with the task (checkpoints rebuild it)."""
    import lightning as L

    from modfuse import FusionTask, MultiModalDataModule, MultiModalDataset
    from modfuse.encoders import build
    from modfuse.fusion import EarlyFusion

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    time = np.exp(-1.5 * x[:, 0] + 0.5 * x[:, 2] + 0.2 * rng.normal(size=200))
    event = (rng.random(200) < 0.7).astype(float)
    ds = MultiModalDataset.from_arrays({"a": x[:, :2], "b": x[:, 2:]}, np.stack([time, event], 1))
    spec = TaskSpec("survival", 1, objective="cox")
    encoders = {m: build("tabular", num_features=2, hidden=(16,), out_dim=8) for m in ("a", "b")}
    task = FusionTask(EarlyFusion(encoders, tasks=spec), lr=1e-2)
    assert (task.monitor, task.monitor_mode) == ("val/cindex", "max")
    trainer = L.Trainer(
        max_epochs=15, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    dm = MultiModalDataModule(ds, split="random", batch_size=32, seed=0)
    trainer.fit(task, dm)
    out = trainer.test(task, dm, verbose=False)[0]
    assert out["test/cindex"] > 0.75
    assert TaskSpec(**task.hparams["tasks"]["y"]) == spec


def test_the_survival_estimator_takes_the_cox_objective():
    """``FusionSurvival(objective="cox")`` fits a one-output log-risk model and ranks new patients."""
    from modfuse import FusionSurvival

    rng = np.random.default_rng(1)
    x = rng.normal(size=(240, 4))
    time = np.exp(-1.5 * x[:, 0] + 0.5 * x[:, 2] + 0.2 * rng.normal(size=240))
    event = (rng.random(240) < 0.7).astype(float)
    X = {"a": x[:, :2], "b": x[:, 2:]}
    train, test = np.arange(180), np.arange(180, 240)
    est = FusionSurvival(objective="cox", max_epochs=15, random_state=0, device="cpu", verbose=False)
    est.fit({m: v[train] for m, v in X.items()}, (time[train], event[train]))
    assert est.task_spec_ == TaskSpec("survival", 1, objective="cox") and est.boundaries_ == ()
    assert est.score({m: v[test] for m, v in X.items()}, (time[test], event[test])) > 0.75
    with pytest.raises(ModfuseError, match="objective must be 'hazard' or 'cox'"):
        FusionSurvival(objective="weibull", max_epochs=1, device="cpu", verbose=False).fit(X, (time, event))
