"""LegoFuse: chain copies of blocks, then fine-tune briefly on paired data."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from modfuse.core.model import ModelOutput
from modfuse.core.tasks import TaskSpec
from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError
from modfuse.fusion.base import register
from modfuse.lego.block import BlockList, LegoBlock, LegoHead
from modfuse.lego.merge import HeadMerge, LegoMerge, _fresh_blocks, _weights, check_compatible, merge_head_params

__all__ = ["LegoFuse", "Trainable", "fuse"]

Trainable = Literal["all", "heads", "attention+heads"]
TRAINABLE = ("all", "heads", "attention+heads")
Base = Literal["none", "merge"]


class LegoFuse(nn.Module):
    """Blocks chained so that block i's latent is the starting latent of block i+1.

    For each sample the chain runs only its present blocks, in order: the first present block
    starts from its own learned latent, each later present block starts from the spectrum the
    previous present block produced (passed as ``start``; its own learned latent is untouched,
    so it still predicts alone). A fused head, initialised as the mean of the block heads, reads
    the final spectrum. A sample with no modality present gets the fused head applied to the
    first block's learned latent (the model's f(empty)).

    The blocks are deep copies: the blocks passed in are never modified.

    Args:
        blocks: N >= 2 blocks (distinct modalities, same latent shape and task), in chain order.
        trainable: what fine-tuning updates: ``"all"``; ``"attention+heads"`` (everything but the
            encoders, which are frozen and kept in eval mode); ``"heads"`` (the fused head only).
        head_merge: how the fused head is initialised from the block heads (``mean``/``slerp``).
        base: ``"none"``: the fused head alone predicts. ``"merge"``: the output is the
            training-free merge of the (copied, calibrated) blocks (``merge(blocks)``, the
            product of experts) plus the fused head's reading of the chain, whose last layer
            starts at zero: before fine-tuning the fuse *is* the merged model, and fine-tuning
            learns a correction from paired data (so, with the budget chosen on validation by
            ``fit_fuse``, it cannot fall below the merge on validation rows).
        base_subset_weights: the base merge's per-subset weights (`LegoMerge`'s
            ``subset_weights``, as chosen on validation rows by ``merge(..., validation=...)``),
            so that the fuse starts from the validated merge; ``fit_fuse`` sets them.

    Shapes:
        batch of B samples -> `ModelOutput` with logits (B, num_outputs) for the blocks' task.
    """

    training_stages = ("blocks", "chain")
    """How [`modfuse.training.runner.fit`][modfuse.training.runner.fit] trains it: each block alone,
    then the chain of the trained blocks fine-tuned on paired rows (``fit_fuse``)."""

    blocks: BlockList
    head: LegoHead
    tasks: dict[str, TaskSpec]
    base_merge: LegoMerge | None
    selection: dict[str, Any]  # set by fit_fuse: the validation scores behind its choice

    def __init__(
        self,
        blocks: Sequence[LegoBlock],
        trainable: Trainable = "all",
        head_merge: HeadMerge = "mean",
        base: Base = "none",
        base_subset_weights: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        blocks = list(blocks)
        check_compatible(blocks, "fuse")
        if trainable not in TRAINABLE:
            raise ModfuseError(f"trainable: expected one of {list(TRAINABLE)}, found {trainable!r}")
        self.blocks = BlockList(copy.deepcopy(b) for b in blocks)
        self.modalities = [b.modality for b in blocks]
        self.tasks = dict(blocks[0].tasks)
        self.trainable: Trainable = trainable
        self.head_merge: HeadMerge = head_merge
        first = self.blocks[0]
        self.head = LegoHead(first.latent_shape[1], next(iter(self.tasks.values())).num_outputs)
        params = merge_head_params([b.head for b in self.blocks], _weights(None, len(blocks)), head_merge)
        with torch.no_grad():
            for name, p in self.head.named_parameters():
                p.copy_(params[name])
        if base not in ("none", "merge"):
            raise ModfuseError(f"base: expected 'none' or 'merge', found {base!r}")
        self.base = base
        # not a registered sub-module: it only shares the copied blocks (no second state-dict entry)
        object.__setattr__(self, "base_merge", None)
        if base == "merge":
            # the correction starts at zero
            base_merge = LegoMerge(list(self.blocks), method="auto", subset_weights=base_subset_weights)
            object.__setattr__(self, "base_merge", base_merge)
            with torch.no_grad():
                self.head.linear.weight.zero_()
                self.head.linear.bias.zero_()
        self._set_trainable()

    @classmethod
    def from_encoders(
        cls, encoders: Mapping[str, nn.Module], tasks: Any = "binary", trainable: Trainable = "all", **block_kwargs: Any
    ) -> LegoFuse:
        """A trainable fuse of fresh blocks, one per encoder (what ``build("lego-fuse", ...)`` gives)."""
        return cls(_fresh_blocks(encoders, tasks, block_kwargs), trainable)

    def _set_trainable(self) -> None:
        for name, p in self.named_parameters():
            if self.trainable == "all":
                p.requires_grad_(True)
            elif self.trainable == "heads":
                p.requires_grad_(name.startswith("head."))
            else:
                p.requires_grad_(".encoder." not in name)

    def train(self, mode: bool = True) -> LegoFuse:
        super().train(mode)
        if self.trainable != "all":
            # frozen encoders stay deterministic (no dropout, no running-stat updates)
            for blk in self.blocks:
                blk.encoder.eval()
        return self

    def fused_latent(self, batch: ModalityBatch) -> Tensor:
        """(B, l_c, l_d) complex: each sample's spectrum after its last present block."""
        b = batch.batch_size
        state = self.blocks[0].prior_latent().expand(b, -1, -1).clone()
        started = torch.zeros(b, dtype=torch.bool, device=batch.device)
        for blk in self.blocks:
            tokens, index = blk.tokens(batch)
            if index.numel() == 0:
                continue
            incoming = torch.where(
                started[index][:, None, None], state.index_select(0, index), blk.prior_latent().to(state.dtype)
            )
            spectrum = blk.latent_from_tokens(tokens, start=incoming)
            state = state.index_copy(0, index, spectrum.to(state.dtype))
            started = started.index_fill(0, index, True)
        return state

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        out = self.head(self.fused_latent(batch))
        if self.base_merge is not None:
            out = out + self.base_merge(batch).prediction.to(out.dtype)
        return ModelOutput.of(out, self.tasks)

    def to_config(self) -> dict[str, Any]:
        """JSON description (blocks' configs in chain order, trainable, head merge)."""
        return {
            "type": "LegoFuse",
            "blocks": [b.to_config() for b in self.blocks],
            "trainable": self.trainable,
            "head_merge": self.head_merge,
            "base": self.base,
            "base_subset_weights": self.base_merge.subset_weights_by_name() if self.base_merge is not None else {},
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LegoFuse:
        """Rebuild (freshly initialised) from `to_config()` output."""
        blocks = [LegoBlock.from_config(c) for c in config["blocks"]]
        return cls(
            blocks,
            config.get("trainable", "all"),
            config.get("head_merge", "mean"),
            config.get("base", "none"),
            config.get("base_subset_weights"),
        )


# build("lego-fuse", encoders=..., tasks=...) -> a trainable fuse of fresh blocks
register("lego-fuse")(LegoFuse.from_encoders)


def fuse(blocks: Sequence[LegoBlock], trainable: Trainable = "all", head_merge: HeadMerge = "mean") -> LegoFuse:
    """Chain (copies of) trained blocks into one model to fine-tune with ``FusionTask``.

    Args:
        blocks: N >= 2 blocks, in chain order.
        trainable: ``"all"``, ``"heads"`` or ``"attention+heads"``.
        head_merge: initialisation of the fused head from the block heads.

    Example:
        >>> fused = fuse([xray_block, ecg_block], trainable="attention+heads")
        >>> build_trainer(max_epochs=2).fit(FusionTask(fused), datamodule)  # modfuse.training.runner
    """
    return LegoFuse(blocks, trainable=trainable, head_merge=head_merge)
