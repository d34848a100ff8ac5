"""Latent merge methods: how the frequency latents of a sample's present blocks are combined.

A method is a function ``(spectra, weights) -> spectrum``:

- ``spectra``: complex (B, N, l_c, l_d), block i's spectrum of each sample (anything where the
  block is absent: it must be ignored);
- ``weights``: real (B, N) >= 0, the block weight where present and 0 where absent; every row
  has at least one positive weight;
- returns complex (B, l_c, l_d).

Register your own with ``@register_method("name")``; ``merge(..., method="name")`` then uses it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from modfuse.registry import Registry

__all__ = ["METHODS", "MergeMethod", "available_methods", "get_method", "register_method"]

MergeMethod = Callable[[Tensor, Tensor], Tensor]

METHODS: Registry[MergeMethod] = Registry("latent merge method", group="modfuse.merge_methods")
register_method = METHODS.register
"""Decorator: ``@register_method("name")`` on a function ``(spectra, weights) -> spectrum``."""

EPS = 1e-8
PHASE_FLOOR = 1e-3
"""Resultants of unit phase vectors shorter than this fraction of the total weight are shrunk."""


def _w(weights: Tensor) -> Tensor:
    """(B, N) -> (B, N, 1, 1) for broadcasting over the latent."""
    return weights[:, :, None, None]


@register_method("harmonic")
def harmonic(spectra: Tensor, weights: Tensor) -> Tensor:
    """Weighted harmonic mean of magnitudes with the weighted circular mean of phases.

    Phases are averaged as unit vectors (sum of w_i * exp(i phi_i), then its direction), so
    +pi - e and -pi + e average to pi, not 0. Where the unit vectors (nearly) cancel, the
    direction is undefined; the resultant is then divided by a floor of ``PHASE_FLOOR * sum(w)``
    instead of its own length, so the component shrinks continuously to 0 (no agreement on a
    direction) rather than jumping with rounding noise: the merge stays a continuous function
    of the latents, so a sample's output does not depend on float noise from its batch.
    """
    w = _w(weights)
    mag = spectra.abs()
    inv = torch.where(w > 0, w / mag.clamp_min(EPS), torch.zeros_like(mag))
    magnitude = w.sum(1) / inv.sum(1).clamp_min(EPS)
    unit = torch.where(w > 0, spectra / mag.clamp_min(EPS), torch.zeros_like(spectra))
    resultant = (w * unit).sum(1)
    floor = (PHASE_FLOOR * w.sum(1)).clamp_min(EPS)
    direction = resultant / torch.maximum(resultant.abs(), floor)
    return magnitude * direction


@register_method("mean")
def mean(spectra: Tensor, weights: Tensor) -> Tensor:
    """Weighted arithmetic mean of the complex spectra."""
    w = _w(weights)
    return (w * torch.where(w > 0, spectra, torch.zeros_like(spectra))).sum(1) / w.sum(1).clamp_min(EPS)


@register_method("sum")
def sum_(spectra: Tensor, weights: Tensor) -> Tensor:
    """Weighted sum of the complex spectra (grows with the number of present blocks)."""
    w = _w(weights)
    return (w * torch.where(w > 0, spectra, torch.zeros_like(spectra))).sum(1)


@register_method("product")
def product(spectra: Tensor, weights: Tensor) -> Tensor:
    """Complex product of the present spectra (weights only select; absent blocks count as 1)."""
    w = _w(weights)
    return torch.where(w > 0, spectra, torch.ones_like(spectra)).prod(1)


def get_method(name: str | MergeMethod) -> MergeMethod:
    """A registered method by name (or a callable passed through)."""
    return name if callable(name) else METHODS.get(name)


def available_methods() -> list[str]:
    """Names of the registered latent merge methods."""
    return METHODS.available()
