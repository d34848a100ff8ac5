"""Tabular encoder: numeric + categorical columns with NaN-aware missing indicators."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modfuse.encoders.base import Encoder, check_ndim, check_size
from modfuse.encoders.registry import register
from modfuse.errors import ModfuseError

__all__ = ["TabularEncoder"]


def mlp(sizes: Sequence[int], dropout: float, activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """Linear -> LayerNorm -> activation -> dropout blocks between consecutive ``sizes``."""
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), activation(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


@register("tabular")
class TabularEncoder(Encoder):
    """MLP over numeric and categorical columns of one table row.

    Numeric columns are standardised with the given training statistics; a NaN cell becomes 0
    plus a missing-indicator input, so a partially observed row is still used. Categorical
    columns hold integer codes (NaN = missing, which gets its own embedding).

    Args:
        num_features: total columns per row (numeric + categorical).
        categorical: column index -> number of categories.
        embed_dim: embedding width per categorical column.
        hidden: hidden layer widths.
        out_dim: output width.
        dropout: dropout probability.
        mean: per-numeric-column means (training statistics), default 0.
        std: per-numeric-column standard deviations, default 1.
        linear: add a linear path: a linear projection of the standardised inputs (and missing
            indicators) summed with the MLP's output, so the encoder's output holds a (weight-decay
            penalised) linear function of its inputs, whatever the MLP learns. The MLP's output
            layer then starts at zero: the encoder is initially exactly its linear path.

    Shapes:
        input (n, num_features) float (NaN allowed) -> output (n, out_dim).
    """

    mean: Tensor  # buffers: (numeric columns,)
    std: Tensor

    def __init__(
        self,
        num_features: int,
        categorical: dict[int, int] | None = None,
        embed_dim: int = 8,
        hidden: Sequence[int] = (128, 128),
        out_dim: int = 64,
        dropout: float = 0.1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        linear: bool = False,
    ) -> None:
        super().__init__()
        categorical = {int(k): int(v) for k, v in (categorical or {}).items()}
        bad = [k for k in categorical if not 0 <= k < num_features]
        if bad:
            raise ModfuseError(f"categorical column indices {bad} outside 0..{num_features - 1}")
        self.num_features = num_features
        self.cat_index = sorted(categorical)
        self.num_index = [i for i in range(num_features) if i not in categorical]
        n_num = len(self.num_index)
        self.register_buffer("mean", torch.as_tensor(mean if mean is not None else [0.0] * n_num, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std if std is not None else [1.0] * n_num, dtype=torch.float32))
        check_size(self.mean[None], 1, n_num, "length of mean (numeric columns)")
        check_size(self.std[None], 1, n_num, "length of std (numeric columns)")
        # index `cardinality` is the "missing" category
        self.embeddings = nn.ModuleList(nn.Embedding(categorical[i] + 1, embed_dim) for i in self.cat_index)
        self.cardinalities = [categorical[i] for i in self.cat_index]
        width = 2 * n_num + embed_dim * len(self.cat_index)
        self.body = mlp([width, *hidden], dropout)
        self.proj = nn.Linear(hidden[-1] if hidden else width, out_dim)
        self.width = width
        self.linear = nn.Linear(width, out_dim, bias=False) if linear and hidden else None
        if self.linear is not None:
            # the encoder starts as its linear path: the MLP's output layer begins at zero and
            # grows only where the loss asks for it (the MLP's own layers get gradients once it
            # has), so a small cohort's model starts from, and stays near, a linear model
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        inputs = self.standardised(x)
        out = self.proj(self.body(inputs))
        return out if self.linear is None else out + self.linear(inputs)

    def standardised(self, x: Tensor) -> Tensor:
        """The MLP's input (n, width): standardised numeric cells (NaN -> 0), their observed
        indicators and the categorical embeddings."""
        check_ndim(x, 2, "(n, features)")
        check_size(x, 1, self.num_features, "number of table columns")
        x = x.float()
        if torch.isinf(x).any():
            row = int(torch.isinf(x).any(1).nonzero()[0])
            raise ModfuseError(f"expected finite or NaN (missing) cells, found inf in row {row}")
        num = x[:, self.num_index]
        observed = ~torch.isnan(num)
        num = torch.where(observed, (num - self.mean) / self.std.clamp_min(1e-8), torch.zeros_like(num))
        parts = [num, observed.float()]
        for emb, col, card in zip(self.embeddings, self.cat_index, self.cardinalities):
            codes = x[:, col]
            missing = torch.isnan(codes)
            codes = torch.where(missing, torch.full_like(codes, card), codes).long()
            if ((codes < 0) | (codes > card)).any():
                raise ModfuseError(
                    f"categorical column {col}: expected codes 0..{card - 1} or NaN, found {codes.max().item()}"
                )
            parts.append(emb(codes))
        return torch.cat(parts, dim=1)
