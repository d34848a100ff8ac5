"""Attention fusion: a transformer over one token per present modality plus a CLS token."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from modfuse.core.model import ModelOutput
from modfuse.core.tasks import as_task_specs
from modfuse.data.batch import ModalityBatch
from modfuse.encoders.base import EncoderDict
from modfuse.errors import ModfuseError
from modfuse.fusion.base import register
from modfuse.fusion.early import check_encoders
from modfuse.fusion.heads import TaskHeads
from modfuse.fusion.late import encode_pooled

__all__ = ["AttentionFusion"]


@register("attention")
class AttentionFusion(nn.Module):
    """Transformer encoder over modality tokens with a key padding mask for absent modalities.

    Each present modality becomes one token (pooled encoder features projected to ``d_model``
    plus a learned modality embedding). A learned CLS token is always present, so a sample with
    no modality attends only to it and gets a defined prior prediction; absent modalities are
    masked out of the attention keys, never zero-filled into it. The heads read the CLS output.

    Args:
        encoders: modality -> encoder with ``out_dim``.
        tasks: task kind, TaskSpec, or dict task -> TaskSpec.
        d_model: token width.
        num_heads: attention heads (must divide ``d_model``).
        num_layers: transformer layers.
        dim_feedforward: feed-forward width in each layer.
        dropout: dropout in the transformer.

    Shapes:
        batch of B samples -> tokens (B, 1 + M, d_model) -> `ModelOutput` with logits
        task -> (B, num_outputs).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ModfuseError(
                f"d_model must be divisible by num_heads, found d_model={d_model}, num_heads={num_heads}"
            )
        self.encoders = EncoderDict(check_encoders(encoders))
        self.modalities = list(self.encoders)
        self.tasks = as_task_specs(tasks)
        self.d_model = d_model
        self.project = nn.ModuleDict({m: nn.Linear(enc.out_dim, d_model) for m, enc in self.encoders.items()})
        self.modality_embedding = nn.Parameter(torch.randn(len(self.modalities), d_model) * 0.02)
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, num_heads, dim_feedforward, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # no nested-tensor fast path: it changes the kernels with the padding pattern, and a
        # sample's output must not depend on the rest of its batch
        self.transformer = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )
        self.heads = TaskHeads(d_model, self.tasks)

    def tokens(self, batch: ModalityBatch) -> tuple[Tensor, Tensor]:
        """Modality tokens and the padding mask.

        Returns:
            tokens: (B, 1 + M, d_model), CLS first, then the modalities in ``self.modalities``
                order (zeros for absent ones, which the mask hides).
            padding: BoolTensor (B, 1 + M), True where a token is absent (never for CLS).
        """
        b = batch.batch_size
        tokens = [self.cls.expand(b, 1, -1)]
        absent = [torch.zeros(b, 1, dtype=torch.bool, device=batch.device)]
        for i, (m, enc) in enumerate(self.encoders.items()):
            features, index = encode_pooled(enc, batch, m)
            token = self.project[m](features) + self.modality_embedding[i]
            full = token.new_zeros(b, self.d_model).index_copy(0, index, token)
            tokens.append(full[:, None])
            absent.append(~batch.present[m][:, None])
        return torch.cat(tokens, dim=1), torch.cat(absent, dim=1)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        tokens, padding = self.tokens(batch)
        encoded = self.transformer(tokens, src_key_padding_mask=padding)
        return ModelOutput(self.heads(encoded[:, 0]))
