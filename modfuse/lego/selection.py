"""Choosing a prediction-space merge on labelled validation rows, per subset of modalities.

The product of experts is Bayes-optimal only when the modalities are conditionally independent
given the target and each block is calibrated. Real modalities often share information (the
"mean" and "worst" feature groups of a tumour, a molecule's graph and its descriptors): the
product then counts the shared evidence twice and can fall below its best block. A merge needs
no paired data, but a site that has a few labelled rows with several modalities can check it:
`choose_weights()` evaluates, for every subset S of modalities (the rows having all of S, shown
with only S present), these weightings of the merge method and keeps the best on the
validation metric:

- ``"block <m>"``: block m alone (weight 1 on m, 0 on the rest of S): the merge returns that
  block's calibrated output unchanged;
- ``"merge"``: the method with the merge's own weights (the product of experts);
- ``"fitted"``: non-negative exponents ``w_i`` of the experts fitted by minimising the task
  loss on the rows (a validated weighted product); its score is measured out of fold
  (k-fold cross-validation on the validation rows), so fitting and choosing never use the same
  row, and the weights kept are refitted on all rows.

With ``rule="clear"`` (the default) the choice starts from the subset's block that its *own*
validation rows rate best (``calibration.score``: each block's rows with its modality, many
more than the rows having the whole subset), and a candidate (another block of S, then the
merge, then the fitted weights) replaces the current choice only on clear evidence
(`beats_block()`): a higher validation metric (and not a lower main metric than the starting
block when ``metric`` is another one), and a per-row task loss (log loss, cross-entropy,
squared error) lower than the current choice's by more than the standard error of the paired
per-row differences, or by more than `SWITCH_Z` (2) standard errors when one block replaces
another (their own rows already ranked them). Ties and thin evidence keep the current choice.
Subsets with fewer than `MIN_ROWS` labelled rows keep the starting block. The rule is
conservative because the cost is asymmetric: a choice made on noise can lose a lot on a subset
seen rarely (the synthetic cohort's labs + X-ray rows: the X-ray block, picked on about 50
validation rows, lost 0.13 AUROC to the labs block on the test rows), while keeping a block
when the merge helps a little costs a little.

``rule="hedge"`` trusts the own scores only when they rank the blocks beyond their noise
(`own_score_se()`); otherwise the subset starts from the product of experts, which a block
replaces only on clear evidence. It suits weak, noisily scored blocks (a block with no signal
can score 0.71 AUROC on 64 validation rows); it costs where the modalities share information
and the product counts it twice. Judged on validation rows only (chosen on one half, counted on
the other, blocks re-calibrated on the choosing half; breast cancer seeds 0-1 and the synthetic
cohort seeds 0-2, 3 halvings each), ``"clear"`` (then with one standard error for a block
switch) left 37 of 210 subsets worse than their best block (sum of the deltas -1.66, worst
-0.30) and ``"hedge"`` 51 (sum -0.84, worst -0.17): more misses but smaller ones; the count is
the issue's target, so ``"clear"`` stays the default.
``rule="metric"`` is the looser former rule: the best block on the subset's rows, replaced by a
combination with any metric gain.
The chosen weights are a table ``subset -> weights`` that
`LegoMerge` applies per sample from the sample's present modalities, so a sample seen with one
modality gets exactly that block's output, and one seen with S gets S's chosen weighting.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from modfuse.core.tasks import TaskSpec
from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError
from modfuse.lego.methods import BlockStats, method_info

__all__ = [
    "MIN_ROWS",
    "SWITCH_Z",
    "Rule",
    "SubsetChoice",
    "beats_block",
    "choose_weights",
    "oriented_score",
    "own_score_se",
    "row_losses",
    "subset_key",
    "validation_outputs",
]

Rule = Literal["clear", "hedge", "metric"]

SWITCH_Z = 2.0
"""Rule ``"clear"``: another block of a subset replaces the block that its own validation rows
rate best only when its per-row loss gain exceeds this many standard errors."""

MIN_ROWS = 8
"""Subsets with fewer labelled validation rows than this keep their best block by the blocks'
own validation scores (too few rows to tell the candidates apart)."""


def subset_key(modalities: Iterable[str]) -> str:
    """The table key of a subset: its modality names sorted and joined with ``+``."""
    return "+".join(sorted(modalities))


@dataclass
class SubsetChoice:
    """The weighting kept for one subset of modalities.

    Attributes:
        subset: the subset's key (`subset_key()`).
        rows: labelled validation rows having every modality of the subset.
        chosen: ``"merge"``, ``"fitted"`` or ``"block <m>"`` (``"block <m> (too few rows)"``
            when fewer than `MIN_ROWS` rows).
        weights: one weight per block of the merge (0 outside the subset).
        scores: validation metric of every candidate (``"fitted"``: out of fold).
        metric: the metric's name.
        evidence: per combination (``"merge"``, ``"fitted"``): the mean per-row loss gain over
            the best block and its standard error (`beats_block()`).
    """

    subset: str
    rows: int
    chosen: str
    weights: list[float]
    scores: dict[str, float]
    metric: str
    evidence: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        keys = ("subset", "rows", "chosen", "weights", "scores", "metric", "evidence")
        return {k: getattr(self, k) for k in keys}


@torch.no_grad()
def validation_outputs(blocks: Sequence[Any], batches: Iterable[ModalityBatch]) -> tuple[Tensor, Tensor, Tensor]:
    """Every block's calibrated output on labelled rows.

    Returns:
        outputs (n, N, C) (zeros where a block's modality is absent), present (n, N) bool,
        target (n, ...) of the merge's task.
    """
    outs, pres, tgts = [], [], []
    task = next(iter(blocks[0].tasks))
    device = next(blocks[0].parameters()).device
    for blk in blocks:
        blk.eval()
    for batch in batches:
        batch = batch.to(device)
        target = batch.target
        if isinstance(target, Mapping):
            target = target[task] if task in target else next(iter(target.values()))
        if target is None:
            raise ModfuseError("choosing a merge on validation rows needs labelled rows; the data have no target")
        c = next(iter(blocks[0].tasks.values())).num_outputs
        out = torch.zeros(batch.batch_size, len(blocks), c)
        present = torch.zeros(batch.batch_size, len(blocks), dtype=torch.bool)
        for i, blk in enumerate(blocks):
            spectrum, index = blk.latent(batch)
            if index.numel():
                out[index.cpu(), i] = blk.calibration.apply(blk.head(spectrum)).float().cpu()
                present[index.cpu(), i] = True
        outs.append(out)
        pres.append(present)
        tgts.append(target.cpu())
    if not outs:
        raise ModfuseError("choosing a merge on validation rows: the validation data have no rows")
    return torch.cat(outs), torch.cat(pres), torch.cat(tgts)


def oriented_score(spec: TaskSpec, metric: str, pred: Tensor, target: Tensor) -> float:
    """Metric of predictions (n, C), oriented so that larger is better (RMSE negated); NaN when
    undefined (one class only)."""
    if pred.shape[0] < 2:
        return float("nan")
    try:
        metrics = spec.metrics()
        metrics.update(*spec.metric_inputs(pred, target))
        value = float(metrics.compute()[metric])
    except (ValueError, RuntimeError, KeyError):
        return float("nan")
    if not math.isfinite(value):
        return float("nan")
    return -value if metric in ("rmse", "mse", "mae") else value


def row_losses(kind: str, pred: Tensor, target: Tensor) -> Tensor | None:
    """Per-row task loss (n,) of merged outputs (n, C): binary / multilabel log loss of the
    logits, multiclass cross-entropy, regression squared error; None for survival (the Cox
    loss does not split into rows)."""
    if kind == "binary":
        return F.binary_cross_entropy_with_logits(pred[:, 0], target.float().reshape(-1), reduction="none")
    if kind == "multilabel":
        return F.binary_cross_entropy_with_logits(pred, target.float(), reduction="none").mean(-1)
    if kind == "multiclass":
        return F.cross_entropy(pred, target.long().reshape(-1), reduction="none")
    if kind == "regression":
        return (pred - target.float().reshape(pred.shape[0], -1)).pow(2).mean(-1)
    return None


def beats_block(candidate: Tensor | None, block: Tensor | None, z: float = 1.0) -> tuple[bool, float, float]:
    """Whether per-row losses (n,) of a combination beat the block's by more than noise.

    The paired differences ``d = block - candidate`` must have a mean above ``z`` times their
    standard error ``sd(d) / sqrt(n)`` (``z = 1``: about a one-sided 84% test; 2: 98%).
    Without per-row losses (survival) the metric alone decides.

    Returns:
        (clear win, mean gain, standard error).
    """
    if candidate is None or block is None:
        return True, float("nan"), float("nan")
    d = (block - candidate).double()
    if d.numel() < 2 or not torch.isfinite(d).all():
        return False, float("nan"), float("nan")
    gain, se = float(d.mean()), float(d.std() / math.sqrt(d.numel()))
    return gain > z * se, gain, se


def _combine(method: str, opts: Mapping[str, Any], outputs: Tensor, weights: Tensor, stats: BlockStats) -> Tensor:
    """The method's prediction (n, C) with weights (N,) or (n, N) (0: the block is ignored)."""
    w = weights.expand(outputs.shape[0], -1) if weights.dim() == 1 else weights
    return method_info(method).fn(outputs, w, stats, **opts)


def _fit(
    spec: TaskSpec,
    method: str,
    opts: Mapping[str, Any],
    outputs: Tensor,
    target: Tensor,
    mask: Tensor,
    stats: BlockStats,
    init: Tensor,
) -> Tensor:
    """Non-negative expert weights (N,) on the blocks of ``mask`` minimising the task loss."""
    theta = torch.full((int(mask.sum()),), math.log(math.e - 1), requires_grad=True)  # softplus(theta) = 1
    scale = init[mask].clamp_min(1e-6)
    opt = torch.optim.LBFGS([theta], lr=0.5, max_iter=60, line_search_fn="strong_wolfe")

    def weights() -> Tensor:
        w = torch.zeros(mask.shape[0])
        return w.masked_scatter(mask, torch.nn.functional.softplus(theta) * scale)

    def closure() -> Tensor:
        opt.zero_grad()
        # a weak pull to the product of experts (w = 1) keeps a few rows from driving weights to 0 or infinity
        loss = (
            spec.loss(_combine(method, opts, outputs, weights(), stats), target)
            + 1e-3 * (torch.nn.functional.softplus(theta) - 1).pow(2).sum()
        )
        loss.backward()
        return loss

    try:
        opt.step(closure)
    except RuntimeError:
        return init * mask
    w = weights().detach()
    return w if torch.isfinite(w).all() and w.sum() > 0 else init * mask


def _out_of_fold(
    spec: TaskSpec,
    method: str,
    opts: Mapping[str, Any],
    outputs: Tensor,
    target: Tensor,
    mask: Tensor,
    stats: BlockStats,
    init: Tensor,
    folds: int,
    seed: int,
) -> Tensor:
    """Predictions (n, C) of fitted weights, each row predicted by weights fitted without it."""
    n = outputs.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    pred = torch.zeros(n, outputs.shape[2])
    for k in range(folds):
        test = torch.as_tensor(np.sort(order[k::folds]))
        train = torch.as_tensor(np.setdiff1d(np.arange(n), test.numpy()))
        w = _fit(spec, method, opts, outputs[train], target[train], mask, stats, init)
        pred[test] = _combine(method, opts, outputs[test], w, stats).detach()
    return pred


def choose_weights(
    blocks: Sequence[Any],
    method: str,
    stats: BlockStats,
    base_weights: Tensor,
    batches: Iterable[ModalityBatch],
    method_options: Mapping[str, Any] | None = None,
    metric: str | None = None,
    folds: int = 5,
    seed: int = 0,
    rule: Rule = "clear",
) -> list[SubsetChoice]:
    """Per subset of at least two modalities, the weighting of ``method`` that scores best on
    labelled validation rows (see the module docstring).

    Args:
        blocks: the merge's N calibrated blocks.
        method: a prediction-space method (``poe``, ``precision``, ``hazard`` or registered).
        stats: the blocks' `BlockStats`.
        base_weights: (N,) the merge's own block weights (the ``"merge"`` candidate).
        batches: labelled validation batches with several modalities per sample (a DataLoader).
        method_options: the method's options.
        metric: the metric to choose on (a key of ``spec.metrics()``, e.g. ``"f1"``; default
            the task's main metric).
        folds: cross-validation folds for the fitted weights.
        seed: fold assignment seed.
        rule: ``"clear"`` (default): a combination must also beat the block's per-row loss by
            more than its standard error (another block: 2 standard errors), and a subset with
            too few rows keeps its best block; ``"hedge"``: the same, starting from the product
            of experts where the blocks' own scores are within their noise; ``"metric"``: the
            validation metric alone decides (the merge's own weights on too few rows), the
            looser rule kept for comparison.

    Returns:
        one `SubsetChoice` per subset of >= 2 modalities (single modalities always get their
        block alone).
    """
    info = method_info(method)
    if info.space != "prediction":
        raise ModfuseError(
            f"choosing a merge on validation rows needs a prediction-space method, found {method!r} ({info.space})"
        )
    (_, spec), *_ = blocks[0].tasks.items()
    metric = metric or spec.main_metric[0]
    opts = dict(method_options or {})
    outputs, present, target = validation_outputs(blocks, batches)
    target = spec.check_target(target)
    mods = [b.modality for b in blocks]
    n = len(blocks)
    base = base_weights.float().cpu()
    choices = []
    for k in range(2, n + 1):
        for combo in itertools.combinations(range(n), k):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[list(combo)] = True
            rows = present[:, mask].all(1).nonzero()[:, 0]
            key = subset_key(mods[i] for i in combo)
            if len(rows) < MIN_ROWS and rule == "metric":
                choices.append(SubsetChoice(key, len(rows), "merge (too few rows)", (base * mask).tolist(), {}, metric))
                continue
            own, clearly = _best_by_own_score(blocks, combo, spec)
            start = own if rule == "clear" or clearly else None
            if len(rows) < MIN_ROWS and start is None and rule == "hedge":
                choices.append(SubsetChoice(key, len(rows), "merge (too few rows)", (base * mask).tolist(), {}, metric))
                continue
            if len(rows) < MIN_ROWS:
                i = combo[0] if own is None else own
                w = torch.nn.functional.one_hot(torch.tensor(i), n).float()
                choices.append(SubsetChoice(key, len(rows), f"block {mods[i]} (too few rows)", w.tolist(), {}, metric))
                continue
            choices.append(
                _choose_subset(
                    spec,
                    method,
                    opts,
                    stats,
                    base,
                    mask,
                    combo,
                    mods,
                    key,
                    outputs[rows],
                    target[rows],
                    metric,
                    folds,
                    seed,
                    rule,
                    start,
                )
            )
    return choices


def own_score_se(score: float, n: int, metric: str | None) -> float:
    """Rough standard error of a block's own validation score on ``n`` rows: ``s / sqrt(2n)``
    for an error (RMSE, MSE, MAE), else the binomial ``sqrt(s (1 - s) / n)`` of a score in
    [0, 1] (accuracy; near Hanley and McNeil's for an AUROC with balanced classes), with ``s``
    shrunk by one success and one failure so that a perfect score keeps an error."""
    n = max(int(n), 1)
    if metric in ("rmse", "mse", "mae"):
        return abs(score) / math.sqrt(2 * n)
    s = (min(max(score, 0.0), 1.0) * n + 1) / (n + 2)  # Laplace: a perfect score still has an error
    return math.sqrt(s * (1 - s) / n)


def _best_by_own_score(blocks: Sequence[Any], combo: Sequence[int], spec: TaskSpec) -> tuple[int | None, bool]:
    """(index among all blocks of the block of ``combo`` with the best own validation score
    (``calibration.score``, on the block's own validation rows), whether it is *clearly* best):
    clearly when its score beats every other block's of ``combo`` by more than the standard
    error of the difference (`own_score_se()`). A block's own score is measured on the rows its
    checkpoint was selected on, so it is optimistic, most for a block with little signal (the
    cohort's X-ray block: 0.71 AUROC on its 64 validation rows, 0.53 on the test rows); a gap
    within the noise does not rank two blocks. (None, False) when no block has a score."""
    sign = 1.0 if spec.main_metric[1] == "max" else -1.0
    scored: dict[int, tuple[float, float]] = {}
    for i in combo:
        cal = blocks[i].calibration
        if cal is not None and cal.score is not None and math.isfinite(cal.score):
            scored[i] = (sign * cal.score, own_score_se(cal.score, cal.n_val, cal.metric))
    if not scored:
        return None, False
    best = max(scored, key=lambda i: scored[i][0])
    (s, se), others = scored[best], [v for i, v in scored.items() if i != best]
    clear = len(scored) == len(combo) and all(s - o > math.hypot(se, o_se) for o, o_se in others)
    return best, clear


def _choose_subset(
    spec: TaskSpec,
    method: str,
    opts: Mapping[str, Any],
    stats: BlockStats,
    base: Tensor,
    mask: Tensor,
    combo: Sequence[int],
    mods: Sequence[str],
    key: str,
    out: Tensor,
    tgt: Tensor,
    metric: str,
    folds: int,
    seed: int,
    rule: Rule = "clear",
    default: int | None = None,
) -> SubsetChoice:
    """One subset's choice on its rows: outputs (n, N, C) and targets (see the module docstring);
    ``default``: the block (index among all N) to start from under ``rule="clear"`` (None: the
    best block on these rows)."""
    n = base.shape[0]
    cands: dict[str, Tensor] = {}
    for i in combo:
        cands[f"block {mods[i]}"] = torch.nn.functional.one_hot(torch.tensor(i), n).float()
    cands["merge"] = base * mask
    preds = {name: _combine(method, opts, out, w, stats).detach() for name, w in cands.items()}
    if spec.kind != "survival":
        preds["fitted"] = _out_of_fold(spec, method, opts, out, tgt, mask, stats, base, min(folds, len(out)), seed)
    scores = {name: oriented_score(spec, metric, pred, tgt) for name, pred in preds.items()}
    main = spec.main_metric[0]
    mains = scores if main == metric else {name: oriented_score(spec, main, pred, tgt) for name, pred in preds.items()}
    singles = {name: s for name, s in scores.items() if name.startswith("block ")}
    best_here = max(singles, key=lambda m: -np.inf if math.isnan(singles[m]) else singles[m])
    if rule == "clear" or (rule == "hedge" and default is not None):
        # start from the block whose own validation rows (many more than this subset's) rate it
        # best; another block, then a combination, replaces the current choice only on clear
        # evidence from this subset's rows
        chosen = best_here if default is None else f"block {mods[default]}"
        order = [*(b for b in singles if b != chosen), "merge", "fitted"]
    elif rule == "hedge":
        # no block is clearly best by its own rows: start from the product of experts (the
        # Bayes-optimal combination of conditionally independent calibrated blocks); a block,
        # best on these rows first, replaces it only on clear evidence
        chosen = "merge"
        order = [*sorted(singles, key=lambda b: -np.inf if math.isnan(singles[b]) else -singles[b]), "fitted"]
    else:
        chosen, order = best_here, ["merge", "fitted"]
    reference = chosen
    evidence = dict[str, list[float]]()
    for name in order:
        if name not in preds:
            continue
        # one block replacing another needs more evidence (SWITCH_Z): their own validation rows
        # already ranked them, on more rows than this subset's
        z = SWITCH_Z if rule != "metric" and name.startswith("block ") and chosen.startswith("block ") else 1.0
        clear, gain, se = beats_block(
            row_losses(spec.kind, preds[name], tgt), row_losses(spec.kind, preds[chosen], tgt), z
        )
        evidence[name] = [gain, se]
        s, best = scores[name], scores[chosen]
        if math.isnan(s) or not (math.isnan(best) or s > best):
            continue
        if rule != "metric" and not clear:
            continue
        if rule != "metric" and main != metric and not mains[name] >= mains[reference]:
            continue  # never worse than the starting block on the task's main metric either
        chosen = name
    if chosen == "fitted":
        w = _fit(spec, method, opts, out, tgt, mask, stats, base)
    else:
        w = cands[chosen]
    return SubsetChoice(key, len(out), chosen, [float(v) for v in w], scores, metric, evidence)
