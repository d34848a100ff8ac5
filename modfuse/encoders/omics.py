"""Omics encoder: a self-normalising network (SNN) for thousands of features per sample."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from modfuse.encoders.base import Encoder, check_finite, check_ndim, check_size
from modfuse.encoders.registry import register

__all__ = ["OmicsEncoder"]


@register("omics")
class OmicsEncoder(Encoder):
    """Self-normalising MLP (Klambauer et al. 2017) for wide omics profiles.

    Each hidden block is Linear -> SELU -> AlphaDropout with LeCun-normal weights (std
    1/sqrt(fan_in), zero bias): activations keep zero mean and unit variance through depth
    without any normalisation layer, so rows stay independent and wide inputs train stably.
    SELU's fixed point assumes standardised inputs: pass the training ``mean``/``std`` per
    feature (or standardise beforehand). Missing values must be imputed first (NaN raises);
    a sample lacking the whole profile is a missing modality instead.

    Args:
        num_features: features per sample (genes, proteins, CpG sites, ...).
        hidden: hidden layer widths.
        out_dim: output width.
        dropout: alpha-dropout probability.
        mean: per-feature means used to standardise the input (default 0).
        std: per-feature standard deviations (default 1).

    Shapes:
        input (n, num_features) -> output (n, out_dim).
    """

    mean: Tensor  # buffers: (num_features,)
    std: Tensor

    def __init__(
        self,
        num_features: int,
        hidden: Sequence[int] = (512, 256),
        out_dim: int = 128,
        dropout: float = 0.1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.out_dim = out_dim
        mean_t = torch.as_tensor(mean if mean is not None else [0.0] * num_features, dtype=torch.float32)
        std_t = torch.as_tensor(std if std is not None else [1.0] * num_features, dtype=torch.float32)
        check_size(mean_t[None], 1, num_features, "length of mean (omics features)")
        check_size(std_t[None], 1, num_features, "length of std (omics features)")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t.clamp_min(1e-8))
        sizes = [num_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.SELU(), nn.AlphaDropout(dropout)]
        layers.append(nn.Linear(sizes[-1], out_dim))
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LeCun-normal init, which SELU's self-normalisation relies on."""
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=1.0 / math.sqrt(layer.in_features))
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(n, num_features) -> (n, out_dim)."""
        check_ndim(x, 2, "(n, omics features)")
        check_size(x, 1, self.num_features, "number of omics features")
        x = x.float()
        check_finite(x, "omics profile (impute missing values first)")
        return self.net((x - self.mean) / self.std)
