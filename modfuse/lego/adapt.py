"""Label-free adaptation of a merged model on paired but unlabelled target data (SUMMIT-style).

The merged model (the teacher, never modified) predicts each unlabelled sample from all its
present modalities; that fused prediction is a pseudo-label. Copies of the blocks are then
trained, each on its own modality, to predict the pseudo-labels, so every block learns from
the others' evidence on the target data without a single label. The pseudo-labels are soft
(the fused probabilities): a block trained on them from its modality alone estimates
E[p(y | all) | x_i] = p(y | x_i) on the target distribution, which keeps it a calibrated
expert that the product of experts may combine again (hard labels would make the blocks
overconfident copies of each other). Samples are selected or weighted by:

- ``"agreement"``: a sample is used only when every present block, alone, agrees with the
  fused label (classification: same decision; regression: within two predictive standard
  deviations of the fused estimate), and only when at least two blocks are present;
- ``"entropy"``: every sample with at least two blocks is used, weighted by one minus the
  normalised entropy of the fused prediction (regression: one minus the fused predictive
  variance over the target variance).
- ``"calibration"`` (classification): no weight is trained and no pseudo-label is used; each
  block's calibration is composed with an affine map ``a z + b`` fitted by maximising the
  agreement likelihood of the paired rows (`modfuse.lego.recalibrate`), which is proper when the
  modalities are conditionally independent given the target and cannot make one block copy
  another's errors. ``epochs``, ``lr`` and ``batch_size`` are unused.

Blocks keep their calibration statistics (the loss is on the calibrated outputs, so they stay
on the scale the statistics describe), except the output prior of classification blocks (their
mean calibrated probability), which is re-measured on the unlabelled target rows after
adaptation, so the product of experts still divides by what each adapted block averages to.

Adaptation can also hurt (the blocks learn each other's errors, and the precision merge of
regression then counts the shared evidence twice: ESOL and digits got slightly worse). So a
share of the paired target rows (``check``) is held out, and each adapted block is kept only
when, on those rows, it predicts the fused prediction of the *other* blocks (the merge with
its own modality removed, still no label) better than the source block did, by more than the
standard error of the paired per-row differences; otherwise the source block is kept. The
others' fusion is a label-free proxy of the target: when its error is independent of the
block's modality given the target (the merge's own assumption), the expected loss against it
ranks two versions of the block as the expected loss against the true label does (exactly
for the squared error). With no block kept, the result predicts as the unadapted merge.

The result is a new merged model of the adapted copies; each of its blocks still runs alone.
Pseudo-labels are computed once, from the source merge.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from modfuse.data.batch import ModalityBatch
from modfuse.data.datamodule import MultiModalDataModule
from modfuse.data.dataset import MultiModalDataset
from modfuse.errors import ModfuseError
from modfuse.lego.calibration import output_prior
from modfuse.lego.merge import LegoMerge, block_stats
from modfuse.lego.recalibrate import fit_affine
from modfuse.lego.selection import beats_block

if TYPE_CHECKING:
    from modfuse.lego.workflow import Rows

__all__ = ["AdaptMethod", "adapt", "pseudo_labels"]

AdaptMethod = Literal["agreement", "entropy", "calibration"]
KINDS = ("binary", "multiclass", "multilabel", "regression")


def _fused_and_blocks(merged: LegoMerge, batch: ModalityBatch) -> tuple[Tensor, Tensor, Tensor]:
    """(fused prediction (B, C), calibrated block outputs (B, N, C), present (B, N))."""
    out = merged(batch)
    b, n = batch.batch_size, len(merged.blocks)
    c = out.prediction.shape[1]
    outputs = torch.zeros(b, n, c, device=batch.device)
    present = torch.zeros(b, n, dtype=torch.bool, device=batch.device)
    for i, blk in enumerate(merged.blocks):
        part = out.per_modality[blk.modality]
        index, logits = part.index, part.prediction
        if index.numel():
            cal = blk.calibration
            outputs[index, i] = (cal.apply(logits) if cal is not None else logits.float()).to(outputs.dtype)
            present[index, i] = True
    return out.prediction.float(), outputs, present


def pseudo_labels(merged: LegoMerge, batch: ModalityBatch, method: AdaptMethod = "agreement") -> tuple[Tensor, Tensor]:
    """Fused pseudo-labels of a batch and their per-sample weights.

    Returns:
        labels: soft pseudo-labels: fused probabilities (binary (B,), multilabel (B, L),
            multiclass (B, C)); regression: fused estimates (B,) / (B, n).
        weight: (B,) in [0, 1]; 0 for samples with fewer than two present blocks.
    """
    (_, spec), *_ = merged.tasks.items()
    fused, outputs, present = _fused_and_blocks(merged, batch)
    k = present.sum(1)
    if spec.kind == "regression":
        labels = fused[:, 0] if spec.num_outputs == 1 else fused
        stats = block_stats(list(merged.blocks), batch.device)
        sd = stats.spread.sqrt()[None]  # (1, N, C)
        close = ((outputs - fused[:, None]).abs() <= 2 * sd).all(-1) | ~present
        prec = (present[:, :, None] / stats.spread[None]).sum(1)  # (B, C)
        confidence = (1 - (1 / prec.clamp_min(1e-12)) / stats.prior_var.mean(0)[None]).clamp(0, 1).mean(-1)
    elif spec.kind == "multiclass":
        p = fused.softmax(-1)
        labels = p
        close = (outputs.argmax(-1) == fused.argmax(-1)[:, None]) | ~present
        confidence = 1 + (p * p.clamp_min(1e-12).log()).sum(-1) / math.log(spec.num_outputs)
    elif spec.kind in ("binary", "multilabel"):
        decided = (fused > 0).float()
        close = ((outputs > 0).float() == decided[:, None]).all(-1) | ~present
        p = torch.sigmoid(fused).clamp(1e-6, 1 - 1e-6)
        labels = p[:, 0] if spec.kind == "binary" else p
        entropy = -(p * p.log() + (1 - p) * (1 - p).log()) / math.log(2)
        confidence = (1 - entropy).mean(-1)
    else:
        raise ModfuseError(f"adapt supports {list(KINDS)} tasks, found {spec.kind!r}")
    paired = (k >= 2).float()
    if method == "agreement":
        weight = close.all(1).float() * paired
    elif method in ("entropy", "calibration"):
        weight = confidence.clamp(0, 1) * paired
    else:
        raise ModfuseError(f"adapt method: expected 'agreement', 'entropy' or 'calibration', found {method!r}")
    return labels, weight


def _rows(data: MultiModalDataset | MultiModalDataModule, rows: Rows | None) -> tuple[MultiModalDataset, np.ndarray]:
    if isinstance(data, MultiModalDataModule):
        dataset, splits = data.prepared()
        return dataset, np.asarray(splits["train"] if rows is None else rows, dtype=int)
    if isinstance(data, MultiModalDataset):
        return data, np.asarray(np.arange(len(data)) if rows is None else rows, dtype=int)
    raise ModfuseError(f"expected a MultiModalDataset or MultiModalDataModule, found {type(data).__name__}")


def _loss(kind: str, pred: Tensor, label: Tensor) -> Tensor:
    """Per-sample loss (n,) of calibrated outputs (n, C) against pseudo-labels."""
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(pred[:, 0], label, reduction="none")
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(pred, label, reduction="none").mean(-1)
    if kind == "multiclass":
        return -(label * pred.log_softmax(-1)).sum(-1)
    target = label.reshape(pred.shape[0], -1)
    return (pred - target).pow(2).mean(-1)


def adapt(
    merged: LegoMerge,
    unlabeled_paired_data: MultiModalDataset | MultiModalDataModule,
    method: AdaptMethod = "agreement",
    epochs: int = 5,
    lr: float = 1e-4,
    batch_size: int = 64,
    rows: Rows | None = None,
    seed: int = 0,
    check: float = 0.2,
) -> LegoMerge:
    """Adapt a merged model to unlabelled paired target data with its own fused pseudo-labels.

    Args:
        merged: a `LegoMerge` (never modified; prediction-space merges work best, as
            their pseudo-labels are calibrated).
        unlabeled_paired_data: target samples with several modalities each; their targets,
            if any, are never read.
        method: ``"agreement"`` (keep samples on which every present block agrees with the
            fused label), ``"entropy"`` (weight by 1 - normalised entropy of the fused
            prediction) or ``"calibration"`` (re-calibrate each block only; classification).
        epochs: passes over the target rows.
        lr: AdamW learning rate of the block copies.
        batch_size: batch size.
        rows: target rows (default: the datamodule's train split / the whole dataset).
        seed: shuffling and hold-out seed.
        check: share of the paired target rows held out (never trained on) to check each
            adapted block without labels (see the module docstring); 0 keeps every adapted
            block unchecked.

    Returns:
        a new LegoMerge (same method, options, weights) of adapted copies of the blocks (the
        source copy for a block whose check failed); ``.adaptation`` records the rows used
        and, per modality, the check's mean loss gain, its standard error and whether the
        adapted block was kept (``"calibration"``: also ``affine``, each block's fitted a, b).

    Shapes:
        the returned model maps a batch of B samples to predictions (B, num_outputs), like
        ``merged``; each of its ``blocks`` maps a batch to (B, num_outputs) alone.
    """
    if not isinstance(merged, LegoMerge):
        raise ModfuseError(f"adapt expects a LegoMerge, found {type(merged).__name__}")
    (_, spec), *_ = merged.tasks.items()
    if spec.kind not in KINDS:
        raise ModfuseError(f"adapt supports {list(KINDS)} tasks, found {spec.kind!r}")
    if epochs < 0 or lr <= 0 or not 0 <= check < 1:
        raise ModfuseError(
            f"adapt: expected epochs >= 0, lr > 0 and 0 <= check < 1, found epochs={epochs}, lr={lr}, check={check}"
        )
    dataset, rows = _rows(unlabeled_paired_data, rows)
    teacher = merged.eval()
    device = next(merged.parameters()).device
    # pseudo-labels once, from the source merge, in row order
    if method == "calibration" and spec.kind == "regression":
        raise ModfuseError(
            "adapt method 'calibration' supports binary, multiclass and multilabel tasks, found 'regression'"
        )
    labels, weights, paired, outs, pres = [], [], [], [], []
    loader = DataLoader(Subset(dataset, rows.tolist()), batch_size=256, collate_fn=dataset.collate_fn)
    with torch.no_grad():
        for batch in loader:
            batch = _unlabelled(batch).to(device)
            lab, w = pseudo_labels(teacher, batch, method)
            labels.append(lab.cpu())
            weights.append(w.cpu())
            paired.append(_present_count(batch, merged.modalities).cpu() >= 2)
            if method == "calibration":
                _, out, present = _fused_and_blocks(teacher, batch)
                outs.append(out.cpu())
                pres.append(present.cpu())
    label_all, weight_all, paired_all = torch.cat(labels), torch.cat(weights), torch.cat(paired)
    gen = torch.Generator().manual_seed(seed)
    pool = paired_all.nonzero()[:, 0]
    held = pool[torch.randperm(len(pool), generator=gen)[: round(check * len(pool))]]
    if len(held) < 2:
        held = held[:0]
    train = weight_all > 0
    train[held] = False
    student = copy.deepcopy(merged)
    used = train.nonzero()[:, 0]
    student.adaptation = {
        "method": method,
        "rows": len(rows),
        "used": len(used),
        "epochs": epochs,
        "checked": len(held),
    }
    if method == "calibration":
        fit = torch.ones(len(paired_all), dtype=torch.bool)
        fit[held] = False
        _recalibrate(student, spec.kind, torch.cat(outs)[fit], torch.cat(pres)[fit])
        student.adaptation["used"] = int((paired_all & fit).sum())
        return _checked(teacher, student, dataset, rows, held, device)
    if len(used) == 0 or epochs == 0:
        return student.eval()
    params = [p for p in student.blocks.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        student.train()
        order = used[torch.randperm(len(used), generator=gen)]
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            batch = _unlabelled(dataset.collate_fn([dataset[int(rows[i])] for i in pos])).to(device)
            lab, w = label_all[pos].to(device), weight_all[pos].to(device)
            total = torch.zeros((), device=device)
            for blk in student.blocks:
                spectrum, index = blk.latent(batch)
                if index.numel() == 0:
                    continue
                pred = blk.head(spectrum)
                if blk.calibration is not None:
                    pred = blk.calibration.apply(pred)
                per = _loss(spec.kind, pred, lab.index_select(0, index))
                wi = w.index_select(0, index)
                total = total + (wi * per).sum() / w.sum().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
    return _checked(teacher, student, dataset, rows, held, device)


def _checked(
    teacher: LegoMerge, student: LegoMerge, dataset: Any, rows: np.ndarray, held: Tensor, device: torch.device
) -> LegoMerge:
    """The label-free check on the held-out rows (failed blocks restored), then the kept blocks'
    output priors re-measured on the target rows."""
    keep = [True] * len(student.blocks)
    if len(held):
        keep = _check_blocks(teacher, student, dataset, rows[held.numpy()], device)
    _remeasure_output_priors(student, dataset, rows, device, keep)
    return student.eval()


def _recalibrate(student: LegoMerge, kind: str, outputs: Tensor, present: Tensor) -> None:
    """Compose each block's calibration with the affine map fitted by
    `modfuse.lego.recalibrate.fit_affine` on calibrated outputs (n, N, C): ``a (z / T + b0) + b``
    is ``z / (T / a) + (a b0 + b)``. The blocks' weights are not touched."""
    a, b = fit_affine(kind, outputs, present)
    student.adaptation["affine"] = {
        blk.modality: {"a": a[i].tolist(), "b": b[i].tolist()} for i, blk in enumerate(student.blocks)
    }
    for i, blk in enumerate(student.blocks):
        cal = blk.calibration
        if cal is None:
            continue
        t = [ti / float(ai) for ti, ai in zip(cal.temperature, a[i])]
        bias = [float(ai) * b0 + float(bi) for b0, ai, bi in zip(cal.bias, a[i], b[i])]
        blk.calibration = replace(cal, temperature=t, bias=bias)


def _present_count(batch: ModalityBatch, modalities: Sequence[str]) -> Tensor:
    """(B,) how many of ``modalities`` each sample of the batch has."""
    masks = [batch.present[m].long() for m in modalities if m in batch.present]
    if not masks:
        return torch.zeros(batch.batch_size, dtype=torch.long, device=batch.device)
    return torch.stack(masks).sum(0)


def _soft(kind: str, fused: Tensor) -> Tensor:
    """A merged prediction (n, C) as the soft label `_loss()` expects."""
    if kind == "multiclass":
        return fused.softmax(-1)
    if kind in ("binary", "multilabel"):
        p = torch.sigmoid(fused).clamp(1e-6, 1 - 1e-6)
        return p[:, 0] if kind == "binary" else p
    return fused[:, 0] if fused.shape[1] == 1 else fused


@torch.no_grad()
def _check_blocks(
    teacher: LegoMerge, student: LegoMerge, dataset: Any, rows: np.ndarray, device: torch.device
) -> list[bool]:
    """Per block, whether its adapted copy is kept: on the held-out ``rows`` (no label read), the
    adapted block's loss against the teacher's fusion of the other present modalities must beat
    the source block's by more than its standard error; a failed block is restored to the
    source copy (weights and calibration). Records the check in ``student.adaptation``."""
    (_, spec), *_ = teacher.tasks.items()
    teacher.eval()
    student.eval()
    src_loss: list[list[Tensor]] = [[] for _ in teacher.blocks]
    new_loss: list[list[Tensor]] = [[] for _ in teacher.blocks]
    loader = DataLoader(Subset(dataset, rows.tolist()), batch_size=256, collate_fn=dataset.collate_fn)
    for batch in loader:
        batch = _unlabelled(batch).to(device)
        for i, (src, new) in enumerate(zip(teacher.blocks, student.blocks)):
            others = [m for m in teacher.modalities if m != src.modality and m in batch.present]
            if src.modality not in batch.present or not others:
                continue
            label = _soft(spec.kind, teacher(batch.with_modalities(others)).prediction.float())
            has_others = _present_count(batch, others) > 0
            for blk, out in ((src, src_loss[i]), (new, new_loss[i])):
                spectrum, index = blk.latent(batch)
                sel = has_others[index]  # rows with this block and at least one other
                if not sel.any():
                    continue
                pred = blk.head(spectrum[sel])
                if blk.calibration is not None:
                    pred = blk.calibration.apply(pred)
                out.append(_loss(spec.kind, pred.float(), label.index_select(0, index[sel])).cpu())
    keep, report = [], {}
    for i, (src, new) in enumerate(zip(teacher.blocks, student.blocks)):
        a = torch.cat(src_loss[i]) if src_loss[i] else None
        b = torch.cat(new_loss[i]) if new_loss[i] else None
        clear, gain, se = beats_block(b, a) if a is not None and b is not None else (False, float("nan"), float("nan"))
        keep.append(clear)
        report[src.modality] = {"gain": gain, "se": se, "kept": clear}
        if not clear:
            new.load_state_dict(src.state_dict())
            new.calibration = src.calibration
    student.adaptation["check"] = report
    return keep


@torch.no_grad()
def _remeasure_output_priors(
    student: LegoMerge, dataset: Any, rows: np.ndarray, device: torch.device, keep: Sequence[bool]
) -> None:
    """Each adapted block's mean calibrated probability on the target rows (no label read).

    The product of experts divides by each block's output prior; an adapted block's outputs
    no longer average to the prior measured before adaptation, and a stale prior biases the
    merge toward whatever class the adaptation moved it to (a feedback loop over epochs)."""
    student.eval()
    loader = DataLoader(Subset(dataset, rows.tolist()), batch_size=256, collate_fn=dataset.collate_fn)
    outs: list[list[Tensor]] = [[] for _ in student.blocks]
    for batch in loader:
        batch = _unlabelled(batch).to(device)
        for i, blk in enumerate(student.blocks):
            spectrum, index = blk.latent(batch)
            if index.numel() and blk.calibration is not None:
                outs[i].append(blk.calibration.apply(blk.head(spectrum)).cpu())
    for blk, out, kept in zip(student.blocks, outs, keep):
        if kept and out and blk.calibration is not None and blk.calibration.output_prior:
            blk.calibration = replace(blk.calibration, output_prior=output_prior(blk.calibration.kind, torch.cat(out)))


def _unlabelled(batch: ModalityBatch) -> ModalityBatch:
    """The batch without its targets: adaptation must never see a label."""
    batch.target = None
    return batch
