"""Sequential interpretable fusion (MultiModN-style): a state updated modality by modality.

A learned initial state ``s0`` is updated once per modality, in order, by a gated update that
reads the modality's encoded input and the current state. The update is masked per sample: a
sample that lacks a modality keeps its state exactly (the rows are copied, not recomputed).
One decoder per task reads the state after every step, so the model predicts after each
modality, and each modality's contribution is the change its step made to the prediction.

Differences from the reference code (see the design brief, section 8): missing modalities are
skipped per sample, not per batch; ``forward`` exists and checks its input; the loss is each
task's loss on logits (never a cross-entropy on sigmoid outputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pandas as pd
import torch
from torch import Tensor, nn

from modfuse.core.model import ModelOutput, StepTrace
from modfuse.core.tasks import TaskSpec, as_task_specs, by_task
from modfuse.data.batch import ModalityBatch
from modfuse.encoders.base import Encoder
from modfuse.errors import ModfuseError
from modfuse.fusion.base import register
from modfuse.fusion.early import check_encoders
from modfuse.fusion.late import encode_pooled

__all__ = ["SequentialContributions", "SequentialFusion", "StateUpdate"]


@dataclass
class SequentialContributions:
    """Per-sample, per-modality changes of the activated prediction (probability, estimate or risk).

    ``initial + delta.sum(1) == final`` for every task (up to float rounding): the deltas
    telescope from the prior prediction of ``s0`` to the final prediction.

    Attributes:
        modalities: the modalities in the order their steps ran.
        delta: task -> (B, M, ...) change caused by each modality's step (exactly 0 where the
            modality was absent); ``...`` is the activated prediction's shape per sample (empty
            for binary probability, survival risk and single regression; classes for multiclass).
        initial: task -> (B, ...) activated prediction from ``s0`` (the prior).
        final: task -> (B, ...) activated final prediction.
        present: BoolTensor (B, M), which sample had which modality.
        ids: the B sample ids.
    """

    modalities: list[str]
    delta: dict[str, Tensor]
    initial: dict[str, Tensor]
    final: dict[str, Tensor]
    present: Tensor
    ids: list[Any] = field(default_factory=list)

    def _task(self, task: str | None) -> str:
        if task is None:
            if len(self.delta) != 1:
                raise ModfuseError(f"several tasks {sorted(self.delta)}: pass task=...")
            return next(iter(self.delta))
        if task not in self.delta:
            raise ModfuseError(f"unknown task {task!r}; expected one of {sorted(self.delta)}")
        return task

    def of(self, modality: str, task: str | None = None) -> Tensor:
        """(B, ...) contribution of one modality to one task (the only task by default)."""
        if modality not in self.modalities:
            raise ModfuseError(f"no contribution for this modality; known {self.modalities}", modality=modality)
        return self.delta[self._task(task)][:, self.modalities.index(modality)]

    def to_frame(self, task: str | None = None) -> pd.DataFrame:
        """One row per sample (indexed by id): ``initial``, one column per modality, ``final``.

        Only for scalar predictions per sample (binary, survival, single regression).
        """
        name = self._task(task)
        delta = self.delta[name]
        if delta.dim() != 2:
            raise ModfuseError(f"task {name!r} has {tuple(delta.shape[2:])} outputs per sample; use .delta instead")
        frame = pd.DataFrame(delta.detach().cpu().numpy(), columns=self.modalities, index=pd.Index(self.ids, name="id"))
        frame.insert(0, "initial", self.initial[name].detach().cpu().numpy())
        frame["final"] = self.final[name].detach().cpu().numpy()
        return frame


class StateUpdate(nn.Module):
    """One modality's step: its encoder, then a gated (GRU) update of the state.

    ``f(x, s) = (1 - z) * s + z * c`` with update gate ``z`` and candidate ``c`` computed from
    the projected encoder features and ``s``, so a step can leave parts of the state unchanged.

    Args:
        encoder: the modality encoder (``out_dim`` declared; token outputs are mean-pooled).
        state_dim: width of the state.
        dropout: dropout on the projected features.

    Shapes:
        ``forward(batch, modality, state)`` with state (B, state_dim) -> new states of the
        present rows (n_present, state_dim) and their batch positions (n_present,).
    """

    def __init__(self, encoder: Encoder, state_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.project = nn.Sequential(nn.Linear(encoder.out_dim, state_dim), nn.GELU(), nn.Dropout(dropout))
        self.cell = nn.GRUCell(state_dim, state_dim)

    def forward(self, batch: ModalityBatch, modality: str, state: Tensor) -> tuple[Tensor, Tensor]:
        features, index = encode_pooled(self.encoder, batch, modality)
        if index.numel() == 0:
            return state[:0], index
        return self.cell(self.project(features.to(state.dtype)), state.index_select(0, index)), index


@register("sequential")
class SequentialFusion(nn.Module):
    """Sequential fusion with a prediction after every modality (MultiModN-style).

    ``s <- s + m * (f_i(x_i, s) - s)`` for each modality i in order, with ``m`` the per-sample
    presence mask: absent samples keep their state bit-identically, and the encoder of modality
    i runs only on the samples that have it. Every task decoder reads every state.

    Args:
        encoders: modality -> encoder with ``out_dim`` (pooled or token outputs).
        tasks: task kind, TaskSpec, or dict task -> TaskSpec (several tasks share the state).
        state_dim: width of the state.
        order: modality order of the steps (a permutation of the encoders' names; default their
            order).
        shuffle_order: draw a random order for every training batch, so that any order works at
            inference (pass ``order=`` to `forward()`).
        state_change_penalty: weight of the mean squared state change per step that ran, which
            discourages steps that rewrite the state without changing the prediction.
        decoder_hidden: hidden width of each task decoder (0 for a linear decoder).
        dropout: dropout on projected features and in the decoders.

    Shapes:
        batch of B samples with M modalities -> `ModelOutput` with the final logits
        (B, num_outputs) per task and ``steps`` (a `StepTrace`: logits (B, 1 + M, num_outputs)
        per task, which steps ran, the states and the order).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        state_dim: int = 64,
        order: Sequence[str] | None = None,
        shuffle_order: bool = False,
        state_change_penalty: float = 0.0,
        decoder_hidden: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        encoders = check_encoders(encoders)
        if state_dim < 1:
            raise ModfuseError(f"state_dim must be >= 1, found {state_dim}")
        if state_change_penalty < 0:
            raise ModfuseError(f"state_change_penalty must be >= 0, found {state_change_penalty}")
        self.modalities = list(encoders)
        self.order = self._check_order(order)
        self.tasks: dict[str, TaskSpec] = as_task_specs(tasks)
        self.state_dim = state_dim
        self.shuffle_order = shuffle_order
        self.state_change_penalty = state_change_penalty
        self.initial_state = nn.Parameter(torch.zeros(state_dim))
        self.updates = nn.ModuleDict({m: StateUpdate(enc, state_dim, dropout) for m, enc in encoders.items()})
        self.decoders = nn.ModuleDict(
            {k: self._decoder(spec, decoder_hidden, dropout) for k, spec in self.tasks.items()}
        )

    # ------------------------------------------------------------------ construction helpers
    def _decoder(self, spec: TaskSpec, hidden: int, dropout: float) -> nn.Module:
        if not hidden:
            return nn.Linear(self.state_dim, spec.num_outputs)
        return nn.Sequential(
            nn.Linear(self.state_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, spec.num_outputs)
        )

    def _check_order(self, order: Sequence[str] | None) -> list[str]:
        if order is None:
            return list(self.modalities)
        order = list(order)
        if sorted(order) != sorted(self.modalities):
            raise ModfuseError(f"order must be a permutation of the modalities {self.modalities}, found {order}")
        return order

    @property
    def encoders(self) -> dict[str, Encoder]:
        """modality -> encoder (owned by the state-update modules)."""
        return {m: cast(StateUpdate, u).encoder for m, u in self.updates.items()}

    # ------------------------------------------------------------------ forward
    def step_order(self, order: Sequence[str] | None = None) -> list[str]:
        """The order of this pass: ``order`` if given, a random one while training with
        ``shuffle_order``, else the fixed order."""
        if order is not None:
            return self._check_order(order)
        if self.training and self.shuffle_order:
            perm = torch.randperm(len(self.order)).tolist()
            return [self.order[i] for i in perm]
        return list(self.order)

    def decode(self, states: Tensor) -> dict[str, Tensor]:
        """Logits of every task for states (..., state_dim) -> task -> (..., num_outputs)."""
        return {k: dec(states) for k, dec in self.decoders.items()}

    def forward(self, batch: ModalityBatch, order: Sequence[str] | None = None) -> ModelOutput:
        """Run the steps in ``order`` (see `step_order()`) and decode every state.

        Args:
            batch: any per-sample pattern of present modalities, including none.
            order: modality order for this pass (default: see `step_order()`).
        """
        order = self.step_order(order)
        b = batch.batch_size
        state = self.initial_state.expand(b, -1)
        states = [state]
        ran = [torch.ones(b, dtype=torch.bool, device=batch.device)]
        for m in order:
            new_rows, index = self.updates[m](batch, m, state)
            # index_copy keeps the rows of samples without m untouched: their state is the same
            # tensor values, not a recomputation that could differ in the last bit
            state = state.index_copy(0, index, new_rows)
            states.append(state)
            ran.append(batch.present[m].to(batch.device))
        stacked = torch.stack(states, dim=1)
        steps = self.decode(stacked)
        final = {k: v[:, -1] for k, v in steps.items()}
        trace = StepTrace(steps, mask=torch.stack(ran, dim=1), states=stacked, order=order)
        return ModelOutput(final, steps=trace)

    # ------------------------------------------------------------------ training
    def compute_loss(self, outputs: ModelOutput, batch: ModalityBatch) -> Tensor:
        """Task losses averaged over the steps that ran for each sample (s0 included), then over
        the batch; weighted over tasks; plus the state-change penalty.

        Each TaskSpec's loss is a mean over rows, so samples are grouped by their number of
        steps n: the mean over a group's (sample, step) rows, weighted by the group's share of
        the batch, gives exactly the mean over samples of each sample's mean over its steps.
        """
        if batch.target is None:
            raise ModfuseError("the batch has no target; training and evaluation need one")
        trace = self._trace(outputs)
        steps, targets, mask = trace.logits, by_task(batch.target, self.tasks), trace.mask
        n_steps = mask.sum(dim=1)
        total = trace.states.new_zeros(())
        for n in torch.unique(n_steps).tolist():
            group = (n_steps == n)[:, None] & mask  # (B, S): the steps of the samples with n steps
            share = float((n_steps == n).sum()) / batch.batch_size
            rows = group.nonzero(as_tuple=True)[0]  # sample of each (sample, step) row
            ids = [batch.ids[i] for i in rows.tolist()]
            for k, spec in self.tasks.items():
                loss = spec.loss(steps[k][group], targets[k].index_select(0, rows.to(targets[k].device)), ids)
                total = total + spec.weight * share * loss
        if self.state_change_penalty:
            total = total + self.state_change_penalty * self.state_change(outputs)
        return total

    @staticmethod
    def _trace(outputs: ModelOutput) -> StepTrace:
        if outputs.steps is None:
            raise ModfuseError("sequential fusion needs the per-step trace of its own forward pass (outputs.steps)")
        return outputs.steps

    @classmethod
    def state_change(cls, outputs: ModelOutput) -> Tensor:
        """Mean over the steps that ran (s0 excluded) of the mean squared state change."""
        trace = cls._trace(outputs)
        change = (trace.states[:, 1:] - trace.states[:, :-1]).pow(2).mean(dim=2)
        ran = trace.mask[:, 1:]
        return (change * ran).sum() / ran.sum().clamp_min(1)

    # ------------------------------------------------------------------ interpretation
    @torch.no_grad()
    def contributions(self, batch: ModalityBatch, order: Sequence[str] | None = None) -> SequentialContributions:
        """Each modality's change of the activated prediction (probability / estimate / risk).

        Runs in the model's current mode (call ``eval()`` first for deterministic values).

        Args:
            batch: the samples to explain.
            order: modality order (default the fixed order; with ``shuffle_order`` the model was
                trained to accept any).

        Returns:
            `SequentialContributions`; ``initial + delta.sum(1) == final`` per task.
        """
        trace = self._trace(self.forward(batch, order=order if order is not None else list(self.order)))
        steps = trace.logits
        delta, initial, final = {}, {}, {}
        for k, spec in self.tasks.items():
            logits = steps[k]
            b, s = logits.shape[:2]
            act = spec.activate(logits.reshape(b * s, -1))
            act = act.reshape(b, s, *act.shape[1:])
            delta[k] = act[:, 1:] - act[:, :-1]
            initial[k], final[k] = act[:, 0], act[:, -1]
        return SequentialContributions(trace.order, delta, initial, final, trace.mask[:, 1:], list(batch.ids))
