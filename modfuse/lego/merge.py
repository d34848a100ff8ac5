"""LegoMerge: combine separately trained blocks without paired data and without training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from modfuse.data.batch import ModalityBatch
from modfuse.errors import IncompatibleError, ModfuseError
from modfuse.fusion.base import register
from modfuse.lego.block import LegoBlock
from modfuse.lego.methods import get_method
from modfuse.training.spec import TaskSpec, as_task_specs, by_task

__all__ = ["HeadMerge", "LegoMerge", "LegoOutput", "check_compatible", "merge", "merge_head_params"]

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


@dataclass
class LegoOutput:
    """Outputs of :class:`LegoMerge`.

    Attributes:
        prediction: merged logits (B, num_outputs) (dict task -> logits for multi-task blocks).
        block_logits: per block: (logits of its present rows (n_i, num_outputs), their index).
    """

    prediction: Tensor | dict[str, Tensor]
    block_logits: list[tuple[Tensor, Tensor]] = field(default_factory=list)


def _task_of(blocks: Sequence[LegoBlock]) -> dict[str, TaskSpec]:
    return dict(blocks[0].tasks)


class LegoMerge(nn.Module):
    """N >= 2 blocks merged into one model that predicts from any subset of their modalities.

    For each sample, only its present blocks run (each encoder once, on its present rows); their
    complex frequency latents are combined with the latent merge ``method`` (see
    :mod:`modfuse.lego.methods`) using the block ``weights`` of the present blocks, and a merged
    head (parameters averaged over all blocks, see :func:`merge_head_params`) predicts from it.

    A sample with no modality present gets the merged prior: the blocks' learned latents
    (``fft(L0_i)``) combined with the same method and weights, read by the merged head. This is
    the model's f(empty) for modality Shapley values.

    Training: merging needs none. If a LegoMerge is nevertheless trained (e.g. built by
    ``build("lego-merge", encoders=..., tasks=...)`` and passed to ``FusionTask``), its
    :meth:`compute_loss` trains every block on its own modality's present rows with its own head,
    as if separately (no gradient crosses blocks), and the merged head follows the block heads
    because it is recomputed from them at every forward.

    Args:
        blocks: the blocks (distinct modalities, same latent shape and task). They are held,
            not copied: merging costs no memory, and training the blocks updates the merge.
        method: latent merge method name (``harmonic``, ``mean``, ``sum``, ``product`` or a
            user-registered one).
        head_merge: ``mean`` or ``slerp``.
        weights: one non-negative weight per block (default: uniform).

    Shapes:
        batch of B samples -> :class:`LegoOutput` with ``prediction`` (B, num_outputs).
    """

    def __init__(
        self,
        blocks: Sequence[LegoBlock],
        method: str = "harmonic",
        head_merge: HeadMerge = "mean",
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        check_compatible(blocks, "merge")
        get_method(method)  # fail early on an unknown name
        if head_merge not in ("mean", "slerp"):
            raise ModfuseError(f"head_merge: expected 'mean' or 'slerp', found {head_merge!r}")
        self.blocks = nn.ModuleList(blocks)
        self.modalities = [b.modality for b in blocks]
        self.tasks = _task_of(blocks)
        self.method = method
        self.head_merge: HeadMerge = head_merge
        self.register_buffer("weights", _weights(weights, len(blocks)), persistent=False)

    @classmethod
    def from_encoders(
        cls,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        method: str = "harmonic",
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
        weights = self.weights.to(device)
        if empty.any():
            # samples with nothing present: every block's learned latent, all weights
            priors = torch.cat([blk.prior_latent() for blk in self.blocks]).to(spectra.dtype)
            spectra = torch.where(empty[:, None, None, None], priors[None], spectra)
            present = present | empty[:, None]
        merged = get_method(self.method)(spectra, present.to(weights.dtype) * weights)
        return merged, parts

    def forward(self, batch: ModalityBatch) -> LegoOutput:
        merged, parts = self.merged_latent(batch)
        logits = self.merged_head(merged)
        block_logits = [(blk.head(spec), index) for blk, (spec, index) in zip(self.blocks, parts)]
        return LegoOutput(prediction=logits, block_logits=block_logits)

    def compute_loss(self, outputs: LegoOutput, batch: ModalityBatch) -> Tensor:
        """Sum over blocks of each block's own task loss on its present rows (blocks train apart)."""
        if batch.target is None:
            raise ModfuseError("the batch has no target; training needs one")
        (name, spec), *_ = self.tasks.items()
        target = by_task(batch.target, self.tasks)[name]
        total = outputs.prediction.sum() * 0.0  # keeps the graph when no block has rows
        for logits, index in outputs.block_logits:
            if index.numel():
                ids = [batch.ids[i] for i in index.tolist()]
                total = total + spec.weight * spec.loss(logits, target.index_select(0, index.to(target.device)), ids)
        return total

    def to_config(self) -> dict[str, Any]:
        """JSON description (blocks' configs, method, head merge, weights)."""
        return {
            "type": "LegoMerge",
            "blocks": [b.to_config() for b in self.blocks],
            "method": self.method,
            "head_merge": self.head_merge,
            "weights": self.weights.tolist(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LegoMerge:
        """Rebuild (freshly initialised blocks) from :meth:`to_config` output."""
        blocks = [LegoBlock.from_config(c) for c in config["blocks"]]
        return cls(blocks, config["method"], config["head_merge"], config.get("weights"))


# build("lego-merge", encoders=..., tasks=...) -> fresh blocks merged; fit with workflow.fit_merge
register("lego-merge")(LegoMerge.from_encoders)


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
    method: str = "harmonic",
    head_merge: HeadMerge = "mean",
    weights: Sequence[float] | None = None,
) -> LegoMerge:
    """Merge trained blocks into one model; no data, no training (see :class:`LegoMerge`).

    Args:
        blocks: N >= 2 trained blocks with distinct modalities, equal latent shapes and tasks.
        method: latent merge method (``harmonic`` default, ``mean``, ``sum``, ``product``, or one
            registered with :func:`modfuse.lego.methods.register_method`).
        head_merge: ``mean`` (weighted mean of head parameters) or ``slerp``.
        weights: per-block weights (default uniform).

    Example:
        >>> merged = merge([xray_block, ecg_block, labs_block])
        >>> merged(batch).prediction  # any subset of modalities per sample
    """
    return LegoMerge(blocks, method=method, head_merge=head_merge, weights=weights)
