"""LegoMerge: combine separately trained blocks without paired data and without training."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modfuse.core.model import ModelOutput, PresentLogits
from modfuse.core.tasks import TaskSpec, as_task_specs, by_task
from modfuse.data.batch import ModalityBatch
from modfuse.errors import IncompatibleError, ModfuseError
from modfuse.fusion.base import register
from modfuse.lego.block import BlockList, LegoBlock
from modfuse.lego.calibration import Calibration
from modfuse.lego.methods import BlockStats, default_method, get_method, method_info
from modfuse.lego.methods import method_options as check_options
from modfuse.lego.selection import Rule, subset_key

__all__ = [
    "HeadMerge",
    "LegoMerge",
    "block_stats",
    "check_compatible",
    "check_statistics",
    "choose_on",
    "merge",
    "merge_head_params",
    "resolve_method",
]

HeadMerge = Literal["mean", "slerp"]


def check_compatible(blocks: Sequence[LegoBlock], what: str = "merge") -> None:
    """Blocks combine only with equal latent shapes and tasks and distinct modalities.

    Raises:
        IncompatibleError: naming the blocks that differ and how.
    """
    if len(blocks) < 2:
        raise IncompatibleError(f"{what} needs at least 2 blocks, found {len(blocks)}")
    for i, b in enumerate(blocks):
        if not isinstance(b, LegoBlock):
            raise IncompatibleError(f"{what}: block {i} is a {type(b).__name__}, expected a LegoBlock")
    first = blocks[0]
    seen: dict[str, int] = {}
    for i, b in enumerate(blocks):
        name = f"block {i} ({b.modality!r})"
        ref = f"block 0 ({first.modality!r})"
        if b.modality in seen:
            raise IncompatibleError(
                f"{what}: {name} and block {seen[b.modality]} read the same modality; modalities must be distinct",
                modality=b.modality,
            )
        seen[b.modality] = i
        if b.latent_shape != first.latent_shape:
            raise IncompatibleError(
                f"{what}: {name} has latent shape {b.latent_shape}, {ref} has {first.latent_shape}; "
                "blocks must share (l_c, l_d)"
            )
        if b.tasks != first.tasks:
            raise IncompatibleError(f"{what}: {name} has tasks {b.tasks}, {ref} has {first.tasks}")


def _names(blocks: Sequence[LegoBlock], idx: Sequence[int]) -> str:
    return ", ".join(f"block {i} ({blocks[i].modality!r})" for i in idx)


def resolve_method(blocks: Sequence[LegoBlock], method: str) -> str:
    """``"auto"`` -> the prediction-space default of the task kind when every block is
    calibrated, else ``"harmonic"``; any other name is returned as is."""
    if method != "auto":
        return method
    if all(getattr(b, "calibration", None) is not None for b in blocks):
        return default_method(next(iter(blocks[0].tasks.values())).kind)
    return "harmonic"


def _prior_gap(kind: str, a: Any, b: Any) -> float:
    """How far two label priors are apart: total variation (classification) or the mean shift in
    target standard deviations (regression); 0 for survival (baselines differ by design)."""
    pa, pb = torch.tensor(a.prior), torch.tensor(b.prior)
    if kind == "multiclass":
        return float(0.5 * (pa - pb).abs().sum())
    if kind in ("binary", "multilabel"):
        return float((pa - pb).abs().max())
    if kind == "regression":
        sd = torch.tensor(a.prior_var).add(torch.tensor(b.prior_var)).div(2).sqrt()
        return float(((pa - pb).abs() / sd.clamp_min(1e-12)).max())
    return 0.0


PRIOR_TOLERANCE = 0.1
"""Label priors further apart than this (see `_prior_gap()`) trigger a warning."""


def check_statistics(blocks: Sequence[LegoBlock], method: str) -> None:
    """Guard rails on what a merge assumes, naming the blocks concerned.

    - a method that needs calibration (``poe``, ``precision``, ``hazard``) with uncalibrated
      blocks: raises `IncompatibleError`;
    - a latent method over blocks of different ``init_seed``: warns (head averaging assumes
      fine-tuned copies of one initialisation);
    - blocks trained under different label priors: warns (the deployment prior is assumed to
      be the blocks' mean prior);
    - blocks without calibration merged in latent space: warns (their priors cannot be checked,
      and the prediction-space default is unavailable).
    """
    resolved = resolve_method(blocks, method)
    info = method_info(resolved)
    kind = next(iter(blocks[0].tasks.values())).kind
    uncal = [i for i, b in enumerate(blocks) if getattr(b, "calibration", None) is None]
    if info.kinds is not None and kind not in info.kinds:
        raise IncompatibleError(f"merge method {resolved!r} supports {list(info.kinds)} tasks, the blocks are {kind!r}")
    if info.needs_calibration and uncal:
        raise IncompatibleError(
            f"merge method {resolved!r} needs each block's calibration statistics (temperature, label prior, "
            f"predictive spread), but {_names(blocks, uncal)} {'has' if len(uncal) == 1 else 'have'} none: train "
            "blocks with modfuse.lego.fit_block on data with a validation split, or call "
            "modfuse.lego.calibrate(block, data, val_rows) on each block's own validation rows"
        )
    if uncal:
        warnings.warn(
            f"{_names(blocks, uncal)} carry no calibration statistics: label priors cannot be checked and the "
            f"prediction-space merge is unavailable; merging with {resolved!r}",
            UserWarning,
            stacklevel=3,
        )
    seeds = [b.hparams.get("init_seed") for b in blocks]
    if info.space == "latent" and len(set(seeds)) > 1:
        warnings.warn(
            f"blocks have different init_seed ({', '.join(f'{b.modality!r}: {s}' for b, s in zip(blocks, seeds))}): "
            f"the {resolved!r} latent merge averages heads, which assumes blocks fine-tuned from one "
            "initialisation; expect a merged model worse than its blocks (use a prediction-space method such as "
            "'poe' / 'precision', or retrain with one init_seed)",
            UserWarning,
            stacklevel=3,
        )
    cal = [(i, c) for i, b in enumerate(blocks) if (c := getattr(b, "calibration", None)) is not None]
    for i, ci in cal:
        for j, cj in cal:
            if j > i and _prior_gap(kind, ci, cj) > PRIOR_TOLERANCE:
                warnings.warn(
                    f"{_names(blocks, [i])} and {_names(blocks, [j])} were trained under different label priors "
                    f"({[round(v, 3) for v in ci.prior]} vs {[round(v, 3) for v in cj.prior]}); the merge assumes "
                    "the deployment prior is their mean",
                    UserWarning,
                    stacklevel=3,
                )


def _calibration(block: LegoBlock) -> Calibration:
    """The block's calibration statistics; a prediction-space merge cannot run without them."""
    if block.calibration is None:
        raise IncompatibleError(
            f"block {block.modality!r} has no calibration statistics; a prediction-space merge needs them "
            "(see modfuse.lego.calibrate)",
            modality=block.modality,
        )
    return block.calibration


def block_stats(blocks: Sequence[LegoBlock], device: torch.device | None = None) -> BlockStats:
    """The blocks' calibration statistics stacked for a prediction method (N, C)."""
    kind = next(iter(blocks[0].tasks.values())).kind
    c = next(iter(blocks[0].tasks.values())).num_outputs
    priors, spreads, pvars = [], [], []
    for b in blocks:
        cal = _calibration(b)
        priors.append(cal.prior_logits(device))
        spreads.append(torch.tensor(cal.spread or [1.0] * c, device=device))
        pvars.append(torch.tensor(cal.prior_var or [1.0] * c, device=device))
    return BlockStats(torch.stack(priors), torch.stack(spreads), torch.stack(pvars), kind)


def _weights(weights: Sequence[float] | None, n: int) -> Tensor:
    if weights is None:
        return torch.ones(n)
    w = torch.as_tensor([float(v) for v in weights])
    if w.shape != (n,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ModfuseError(
            f"weights: expected {n} finite non-negative values with a positive sum, found {list(weights)}"
        )
    return w


def _slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation between unit vectors ``a`` and ``b`` (linear when nearly parallel)."""
    dot = torch.clamp((a * b).sum(), -1.0, 1.0)
    omega = torch.arccos(dot)
    if omega.abs() < 1e-4:
        out = (1 - t) * a + t * b
    else:
        out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return out / out.norm().clamp_min(1e-12)


def merge_head_params(heads: Sequence[nn.Module], weights: Tensor, how: HeadMerge = "mean") -> dict[str, Tensor]:
    """Merged parameters of N heads of identical structure.

    ``mean``: the weighted mean of each parameter. ``slerp``: all parameters of a head are
    flattened into one vector; the unit vectors are interpolated on the sphere (N-way, as a
    running pairwise slerp with weight w_k / (w_1 + ... + w_k)), and the result is scaled by
    the weighted mean norm, so heads of different scale do not dominate the direction.

    Returns:
        parameter name -> merged tensor (same shapes as each head's parameters).
    """
    named = [dict(h.named_parameters()) for h in heads]
    names = list(named[0])
    w = weights / weights.sum()
    if how == "mean":
        return {k: sum(wi * p[k] for wi, p in zip(w, named)) for k in names}
    if how != "slerp":
        raise ModfuseError(f"head_merge: expected 'mean' or 'slerp', found {how!r}")
    flat = [torch.cat([p[k].reshape(-1) for k in names]) for p in named]
    norms = torch.stack([f.norm() for f in flat])
    direction, acc = flat[0] / norms[0].clamp_min(1e-12), w[0]
    for f, n, wi in zip(flat[1:], norms[1:], w[1:]):
        acc = acc + wi
        if wi > 0:
            direction = _slerp(direction, f / n.clamp_min(1e-12), float(wi / acc))
    merged = direction * (w * norms).sum()
    out, offset = {}, 0
    for k in names:
        size = named[0][k].numel()
        out[k] = merged[offset : offset + size].view_as(named[0][k])
        offset += size
    return out


def _task_of(blocks: Sequence[LegoBlock]) -> dict[str, TaskSpec]:
    return dict(blocks[0].tasks)


class LegoMerge(nn.Module):
    """N >= 2 blocks merged into one model that predicts from any subset of their modalities.

    For each sample, only its present blocks run (each encoder once, on its present rows); their
    complex frequency latents are combined with the latent merge ``method`` (see
    [`modfuse.lego.methods`][modfuse.lego.methods]) using the block ``weights`` of the present blocks, and a merged
    head (parameters averaged over all blocks, see `merge_head_params()`) predicts from it.

    A sample with no modality present gets the merged prior: the blocks' learned latents
    (``fft(L0_i)``) combined with the same method and weights, read by the merged head. This is
    the model's f(empty) for modality Shapley values.

    Training: merging needs none. If a LegoMerge is nevertheless trained (e.g. built by
    ``build("lego-merge", encoders=..., tasks=...)`` and passed to ``FusionTask``), its
    `compute_loss()` trains every block on its own modality's present rows with its own head,
    as if separately (no gradient crosses blocks), and the merged head follows the block heads
    because it is recomputed from them at every forward.

    Args:
        blocks: the blocks (distinct modalities, same latent shape and task). They are held,
            not copied: merging costs no memory, and training the blocks updates the merge.
        method: ``"auto"`` (the task kind's prediction-space default when every block is
            calibrated, else ``harmonic``), a latent method (``harmonic``, ``mean``, ``sum``,
            ``product``), a prediction method (``poe``, ``precision``, ``hazard``) or a
            user-registered one.
        head_merge: ``mean`` or ``slerp``.
        weights: one non-negative weight per block (default: uniform).
        method_options: options of the method (its keyword-only parameters).
        subset_weights: per subset of modalities (key: names sorted and joined by ``+``, see
            `modfuse.lego.selection.subset_key()`), one weight per block used instead of
            ``weights`` for the samples whose present modalities are exactly that subset
            (0: the block is ignored); chosen on validation rows by ``merge(..., validation=...)``.
        selection: the record of that choice (one dict per subset), kept for reports.

    Prediction-space methods skip the merged head: each present block predicts with its own
    head, its output is calibrated (`Calibration`) and the
    method combines the calibrated outputs per sample; a sample with nothing present gets the
    blocks' mean prior.

    Shapes:
        batch of B samples -> `ModelOutput` with the merged logits (B, num_outputs)
        (``.prediction``) and each block's own logits on its present rows (``per_modality``).
    """

    training_stages = ("blocks",)
    """How [`modfuse.training.runner.fit`][modfuse.training.runner.fit] trains it: each block alone
    (merging itself needs no training)."""

    blocks: BlockList
    weights: Tensor  # (N,) buffer
    tasks: dict[str, TaskSpec]
    adaptation: dict[str, Any]  # set by modfuse.lego.adapt

    def __init__(
        self,
        blocks: Sequence[LegoBlock],
        method: str = "auto",
        head_merge: HeadMerge = "mean",
        weights: Sequence[float] | None = None,
        method_options: Mapping[str, Any] | None = None,
        subset_weights: Mapping[str, Sequence[float]] | None = None,
        selection: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        check_compatible(blocks, "merge")
        if method != "auto":
            method_info(method)  # fail early on an unknown name
        if head_merge not in ("mean", "slerp"):
            raise ModfuseError(f"head_merge: expected 'mean' or 'slerp', found {head_merge!r}")
        self.blocks = BlockList(blocks)
        self.modalities = [b.modality for b in blocks]
        self.tasks = _task_of(blocks)
        self.method = method
        self.method_options = dict(method_options or {})
        if method != "auto":
            self.method_options = check_options(method, self.method_options)
        self.head_merge: HeadMerge = head_merge
        self.register_buffer("weights", _weights(weights, len(blocks)), persistent=False)
        self.subset_weights = _subset_table(subset_weights, self.modalities)
        self.selection = [dict(c) for c in selection or []]

    @property
    def resolved_method(self) -> str:
        """The method in use: ``method``, or for ``"auto"`` the task kind's prediction-space
        default when every block is calibrated (else ``harmonic``)."""
        return resolve_method(list(self.blocks), self.method)

    @property
    def space(self) -> str:
        """``"latent"`` or ``"prediction"``: where the blocks are combined."""
        return method_info(self.resolved_method).space

    @classmethod
    def from_encoders(
        cls,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        method: str = "auto",
        head_merge: HeadMerge = "mean",
        weights: Sequence[float] | None = None,
        **block_kwargs: Any,
    ) -> LegoMerge:
        """Fresh blocks (one per encoder, same ``init_seed``) merged; train with ``fit_merge``."""
        return cls(_fresh_blocks(encoders, tasks, block_kwargs), method, head_merge, weights)

    def head_params(self) -> dict[str, Tensor]:
        """The merged head's parameters, computed from the current block heads."""
        return merge_head_params([b.head for b in self.blocks], self.weights, self.head_merge)

    def merged_head(self, spectrum: Tensor) -> Tensor:
        """Merged head on spectra (n, l_c, l_d) complex -> logits (n, num_outputs)."""
        return functional_call(self.blocks[0].head, self.head_params(), (spectrum,))

    def merged_latent(self, batch: ModalityBatch) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """Per-sample merged spectrum (B, l_c, l_d) complex, and each block's (spectrum, index)."""
        b = batch.batch_size
        l_c, l_d = self.blocks[0].latent_shape
        device = batch.device
        spectra = torch.zeros(b, len(self.blocks), l_c, l_d, dtype=torch.complex64, device=device)
        present = torch.zeros(b, len(self.blocks), dtype=torch.bool, device=device)
        parts = []
        for i, blk in enumerate(self.blocks):
            spec, index = blk.latent(batch)
            parts.append((spec, index))
            if index.numel():
                spectra[index, i] = spec.to(spectra.dtype)
                present[index, i] = True
        empty = ~present.any(dim=1)
        weights = self.sample_weights(present)
        if empty.any():
            # samples with nothing present: every block's learned latent, all weights
            priors = torch.cat([blk.prior_latent() for blk in self.blocks]).to(spectra.dtype)
            spectra = torch.where(empty[:, None, None, None], priors[None], spectra)
            present = present | empty[:, None]
            weights = torch.where(empty[:, None], self.weights.to(device)[None], weights)
        method = self.resolved_method
        opts = self._options(method)
        merged = get_method(method)(spectra, weights, **opts)
        return merged, parts

    def sample_weights(self, present: Tensor) -> Tensor:
        """(B, N) per-sample block weights from the present mask (B, N): ``weights`` on the
        present blocks, or the ``subset_weights`` row of the sample's set of present modalities."""
        weights = present.to(self.weights.dtype) * self.weights.to(present.device)
        if not self.subset_weights:
            return weights
        bits = 2 ** torch.arange(present.shape[1], device=present.device)
        codes = (present.long() * bits).sum(1)
        for code in codes.unique().tolist():
            row = self.subset_weights.get(int(code))
            if row is not None:
                weights[codes == code] = row.to(weights)
        return weights

    def _options(self, method: str) -> dict[str, Any]:
        return check_options(method, self.method_options)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        if self.space == "prediction":
            return self._predict(batch)
        merged, parts = self.merged_latent(batch)
        logits = self.merged_head(merged)
        per_block = {
            blk.modality: PresentLogits(by_task(blk.head(spec), self.tasks), index)
            for blk, (spec, index) in zip(self.blocks, parts)
        }
        return ModelOutput.of(logits, self.tasks, per_modality=per_block)

    def _predict(self, batch: ModalityBatch) -> ModelOutput:
        """Prediction-space merge: each present block's calibrated output, combined per sample."""
        method = self.resolved_method
        info = method_info(method)
        blocks = list(self.blocks)
        stats = block_stats(blocks, batch.device)
        (_, spec), *_ = self.tasks.items()
        b, n = batch.batch_size, len(blocks)
        outputs = torch.zeros(b, n, spec.num_outputs, device=batch.device)
        present = torch.zeros(b, n, dtype=torch.bool, device=batch.device)
        per_block = {}
        for i, blk in enumerate(blocks):
            spec_i, index = blk.latent(batch)
            logits = blk.head(spec_i)
            per_block[blk.modality] = PresentLogits(by_task(logits, self.tasks), index)
            if index.numel():
                outputs[index, i] = _calibration(blk).apply(logits).to(outputs.dtype)
                present[index, i] = True
        empty = ~present.any(dim=1)
        weights = self.sample_weights(present)
        if empty.any():
            # nothing present: every block reports its prior; the merge returns their mean prior
            outputs = torch.where(empty[:, None, None], stats.prior[None].to(outputs.dtype), outputs)
            weights = torch.where(empty[:, None], self.weights.to(batch.device)[None], weights)
        merged = info.fn(outputs, weights, stats, **self._options(method))
        return ModelOutput.of(merged, self.tasks, per_modality=per_block)

    def compute_loss(self, outputs: ModelOutput, batch: ModalityBatch) -> Tensor:
        """Sum over blocks of each block's own task loss on its present rows (blocks train apart)."""
        if batch.target is None:
            raise ModfuseError("the batch has no target; training needs one")
        (name, spec), *_ = self.tasks.items()
        target = by_task(batch.target, self.tasks)[name]
        total = outputs.logits[name].sum() * 0.0  # keeps the graph when no block has rows
        for part in outputs.per_modality.values():
            index = part.index
            if index.numel():
                ids = [batch.ids[i] for i in index.tolist()]
                target_rows = target.index_select(0, index.to(target.device))
                total = total + spec.weight * spec.loss(part.logits[name], target_rows, ids)
        return total

    def to_config(self) -> dict[str, Any]:
        """JSON description (blocks' configs, method, head merge, weights)."""
        return {
            "type": "LegoMerge",
            "blocks": [b.to_config() for b in self.blocks],
            "method": self.method,
            "method_options": self.method_options,
            "head_merge": self.head_merge,
            "weights": self.weights.tolist(),
            "subset_weights": self.subset_weights_by_name(),
            "selection": self.selection,
        }

    def subset_weights_by_name(self) -> dict[str, list[float]]:
        """``subset_weights`` keyed by subset name (``"ecg+labs"``), as given / saved."""
        names = {}
        for code, row in self.subset_weights.items():
            names[subset_key(m for i, m in enumerate(self.modalities) if code >> i & 1)] = row.tolist()
        return names

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LegoMerge:
        """Rebuild (freshly initialised blocks) from `to_config()` output."""
        blocks = [LegoBlock.from_config(c) for c in config["blocks"]]
        return cls(
            blocks,
            config["method"],
            config["head_merge"],
            config.get("weights"),
            config.get("method_options"),
            config.get("subset_weights"),
            config.get("selection"),
        )


# build("lego-merge", encoders=..., tasks=...) -> fresh blocks merged; fit with workflow.fit_merge
register("lego-merge")(LegoMerge.from_encoders)


def _subset_table(table: Mapping[str, Sequence[float]] | None, modalities: Sequence[str]) -> dict[int, Tensor]:
    """Subset name -> weights, checked, keyed by the bit code of the subset's present blocks."""
    out: dict[int, Tensor] = {}
    for key, row in (table or {}).items():
        names = [m for m in str(key).split("+") if m]
        unknown = sorted(set(names) - set(modalities))
        if unknown or not names:
            raise ModfuseError(f"subset_weights: subset {key!r} names unknown modalities {unknown}; known {modalities}")
        w = _weights(row, len(modalities))
        if any(w[i] > 0 for i, m in enumerate(modalities) if m not in names):
            raise ModfuseError(f"subset_weights: subset {key!r} gives weight to a block outside it: {list(row)}")
        out[sum(1 << modalities.index(m) for m in set(names))] = w
    return out


def _fresh_blocks(encoders: Mapping[str, nn.Module] | None, tasks: Any, kwargs: Mapping[str, Any]) -> list[LegoBlock]:
    """One new block per encoder; the single task from ``tasks``."""
    if not encoders:
        raise ModfuseError("lego strategies need encoders={modality: encoder}")
    specs = as_task_specs(tasks)
    if len(specs) != 1:
        raise ModfuseError(f"Lego blocks predict one task, found {sorted(specs)}")
    (name, spec), *_ = specs.items()
    return [LegoBlock(enc, m, spec.num_outputs, task=spec, task_name=name, **kwargs) for m, enc in encoders.items()]


def merge(
    blocks: Sequence[LegoBlock],
    method: str = "auto",
    head_merge: HeadMerge = "mean",
    weights: Sequence[float] | None = None,
    method_options: Mapping[str, Any] | None = None,
    validation: Iterable[ModalityBatch] | None = None,
    metric: str | None = None,
    rule: Rule = "clear",
) -> LegoMerge:
    """Merge trained blocks into one model; no paired data, no training (see `LegoMerge`).

    Args:
        blocks: N >= 2 trained blocks with distinct modalities, equal latent shapes and tasks.
        method: ``"auto"`` (default: the prediction-space product of experts of the task kind,
            ``poe`` / ``precision`` / ``hazard``, when every block is calibrated, else the latent
            ``harmonic`` merge), or any registered method (``available_methods()``).
        head_merge: ``mean`` (weighted mean of head parameters) or ``slerp`` (latent methods).
        weights: per-block weights (default uniform).
        method_options: the method's options (its keyword-only parameters).
        validation: optional labelled validation batches with several modalities per sample
            (a DataLoader): for every subset of modalities, the merge keeps the best on these
            rows of the block alone, the method as is, and validated expert weights
            (`modfuse.lego.selection.choose_weights()`), so that on them no subset is worse
            than its best block. Needs a prediction-space method (the ``auto`` default with
            calibrated blocks). The record is ``merged.selection``.
        metric: the validation metric to choose on (default: the task's main metric).
        rule: how much evidence a combination needs over the block (``"clear"``: more than the
            standard error of the per-row loss gain; ``"hedge"``: the same, starting from the
            product of experts where the blocks' own scores are within noise; ``"metric"``: any
            metric gain), see `modfuse.lego.selection.choose_weights()`.

    Raises:
        IncompatibleError: a method that needs calibration statistics given uncalibrated
            blocks (naming them). Different ``init_seed`` (latent methods), different label
            priors and missing calibration warn (`check_statistics()`).

    Example:
        >>> merged = merge([xray_block, ecg_block, labs_block])
        >>> merged(batch).prediction  # any subset of modalities per sample
    """
    blocks = list(blocks)
    check_compatible(blocks, "merge")
    check_statistics(blocks, method)
    merged = LegoMerge(blocks, method=method, head_merge=head_merge, weights=weights, method_options=method_options)
    if validation is None:
        return merged
    return choose_on(merged, validation, metric, rule)


def choose_on(
    merged: LegoMerge, validation: Iterable[ModalityBatch], metric: str | None = None, rule: Rule = "clear"
) -> LegoMerge:
    """A copy of ``merged`` (same blocks, held not copied) with per-subset weights chosen on
    labelled ``validation`` batches (see `merge()` and `modfuse.lego.selection`)."""
    from modfuse.lego.selection import choose_weights

    method = merged.resolved_method
    if method_info(method).space != "prediction":
        raise IncompatibleError(
            f"choosing a merge on validation rows needs a prediction-space method (poe, precision, hazard) and "
            f"calibrated blocks; the merge uses {method!r}"
        )
    blocks = list(merged.blocks)
    choices = choose_weights(
        blocks,
        method,
        block_stats(blocks),
        merged.weights,
        validation,
        merged.method_options,
        metric=metric,
        rule=rule,
    )
    return LegoMerge(
        blocks,
        method=merged.method,
        head_merge=merged.head_merge,
        weights=merged.weights.tolist(),
        method_options=merged.method_options,
        subset_weights={c.subset: c.weights for c in choices},
        selection=[c.to_dict() for c in choices],
    )
