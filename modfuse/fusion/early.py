"""Early fusion: concatenate per-modality features with missing indicators."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from modfuse.core.model import ModelOutput
from modfuse.core.tasks import as_task_specs
from modfuse.data.batch import ModalityBatch, encode_present
from modfuse.encoders.base import Encoder, EncoderDict
from modfuse.errors import ModfuseError
from modfuse.fusion.base import register
from modfuse.fusion.heads import TaskHeads, has_linear_path, pool_tokens, scale_free

__all__ = ["EarlyFusion"]


def check_encoders(encoders: Mapping[str, nn.Module] | None) -> dict[str, Encoder]:
    """Encoders must be a non-empty dict of modules that declare an integer ``out_dim``.

    Any module that does meets the `Encoder` convention, so the result is typed as encoders.
    """
    if not encoders:
        raise ModfuseError("a fusion model needs at least one encoder: encoders={modality: module}")
    for m, enc in encoders.items():
        if not isinstance(getattr(enc, "out_dim", None), int):
            raise ModfuseError(
                f"encoder {type(enc).__name__} does not declare an integer out_dim; wrap it with modfuse.encoders.wrap",
                modality=m,
            )
    return {m: cast(Encoder, enc) for m, enc in encoders.items()}


@register("early")
class EarlyFusion(nn.Module):
    """Concatenation of every modality's (pooled) features plus one missing indicator each.

    Each present modality's features are standardised per row (`scale_free`), so no encoder's
    output scale dominates the others, unless its encoder has a linear path (`has_linear_path`:
    the estimators' tabular encoders): those features pass unchanged, since a per-row map would
    divide each modality's linear score by that row's own norm. An absent modality contributes
    zeros and indicator 0; its encoder never sees the sample.

    Args:
        encoders: modality -> encoder with ``out_dim``.
        tasks: task kind, TaskSpec, or dict task -> TaskSpec.
        hidden: width of the fusion MLP.
        dropout: dropout in the fusion MLP.

    Shapes:
        batch of B samples -> `ModelOutput` with logits task -> (B, num_outputs).
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        tasks: Any = "binary",
        hidden: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoders = EncoderDict(check_encoders(encoders))
        self.modalities = list(self.encoders)
        self.tasks = as_task_specs(tasks)
        # modality -> whether its features are standardised per row (see `scale_free`)
        self.row_standardised = {m: not has_linear_path(enc) for m, enc in self.encoders.items()}
        width = sum(enc.out_dim + 1 for enc in self.encoders.values())
        self.fuse = nn.Sequential(nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        self.heads = TaskHeads(hidden, self.tasks)

    def features(self, batch: ModalityBatch) -> Tensor:
        """(B, sum(out_dim + 1)): features of present modalities (standardised per row unless
        their encoder has a linear path; zeros for absent rows) and indicators."""
        parts = []
        for m, enc in self.encoders.items():
            if m not in batch.present:
                raise ModfuseError(f"the batch has no modality {m!r}; it has {batch.modalities}", modality=m)
            feats, index = encode_present(enc, batch, m)
            full = torch.zeros(batch.batch_size, enc.out_dim, device=batch.device, dtype=feats.dtype)
            feats = pool_tokens(feats)
            full = full.index_copy(0, index, scale_free(feats) if self.row_standardised[m] else feats)
            parts += [full, batch.present[m].to(full.dtype)[:, None]]
        return torch.cat(parts, dim=1)

    def forward(self, batch: ModalityBatch) -> ModelOutput:
        return ModelOutput(self.heads(self.fuse(self.features(batch))))
