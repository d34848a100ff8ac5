"""Merge methods: how a sample's present blocks are combined, in latent or in prediction space.

Two spaces:

- **latent** methods ``(spectra, weights, *, options) -> spectrum`` combine the blocks'
  frequency latents; the merged head (averaged block heads) reads the result.
  ``spectra``: complex (B, N, l_c, l_d), block i's spectrum of each sample (anything where the
  block is absent: it must be ignored); ``weights``: real (B, N) >= 0, the block weight where
  present and 0 where absent (every row has a positive weight); returns complex (B, l_c, l_d).
- **prediction** methods ``(outputs, weights, stats, *, options) -> prediction`` combine the
  blocks' calibrated outputs. ``outputs``: (B, N, C), block i's calibrated output (logits,
  estimates, hazard logits; zeros where absent); ``weights`` as above; ``stats``: a
  `BlockStats` (priors, predictive spreads) of the N blocks; returns (B, C) in the
  task's output space (logits for classification, estimates for regression).

A method's options are its keyword-only parameters: their names, defaults and annotations are
what `method_options()` accepts from the Python API (``merge(..., method_options={...})``),
the merge yaml (``method: {name: poe, prior_correction: false}``) and the CLI
(``--option prior_correction=false``). Register your own::

    @register_method("trimmed", space="prediction", kinds=("regression",), needs_calibration=True)
    def trimmed(outputs, weights, stats, *, cut: float = 3.0): ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from modfuse.errors import ModfuseError
from modfuse.registry import Registry

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "BlockStats",
    "MergeMethod",
    "MethodInfo",
    "available_methods",
    "default_method",
    "get_method",
    "method_info",
    "method_options",
    "register_method",
]

MergeMethod = Callable[..., Tensor]
Space = Literal["latent", "prediction"]

METHODS: Registry[MergeMethod] = Registry("merge method", group="modfuse.merge_methods")
_INFO: dict[str, MethodInfo] = {}

DEFAULT_METHODS: dict[str, str] = {
    "binary": "poe",
    "multiclass": "poe",
    "multilabel": "poe",
    "regression": "precision",
    "survival": "hazard",
}
"""The method ``merge(method="auto")`` picks per task kind when every block is calibrated
(chosen from ``benchmarks/results/lego_quality.md``); uncalibrated blocks fall back to
``harmonic``."""


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about a merge method.

    Attributes:
        name: registered name.
        fn: the function.
        space: ``"latent"`` or ``"prediction"``.
        kinds: task kinds it supports (None: any).
        needs_calibration: whether every block must carry calibration statistics.
        options: keyword-only parameter name -> ``inspect.Parameter`` (default, annotation).
    """

    name: str
    fn: MergeMethod
    space: Space
    kinds: tuple[str, ...] | None
    needs_calibration: bool
    options: Mapping[str, inspect.Parameter]

    def describe(self) -> str:
        """One line: name, space, options with defaults."""
        opts = ", ".join(f"{k}={p.default!r}" for k, p in self.options.items())
        return f"{self.name} ({self.space}{'; ' + opts if opts else ''})"


def register_method(
    name: str,
    *,
    space: Space = "latent",
    kinds: tuple[str, ...] | None = None,
    needs_calibration: bool = False,
    overwrite: bool = False,
) -> Callable[[MergeMethod], MergeMethod]:
    """Decorator registering a merge method; its keyword-only parameters are its options.

    Args:
        name: the name used by ``merge(..., method=name)``, the yaml and ``--method``.
        space: ``"latent"`` (``fn(spectra, weights, *, ...)``) or ``"prediction"``
            (``fn(outputs, weights, stats, *, ...)``).
        kinds: task kinds the method supports (None: any).
        needs_calibration: prediction methods that read block statistics (priors, spreads).
        overwrite: replace an existing registration.
    """
    if space not in ("latent", "prediction"):
        raise ModfuseError(f"merge method {name!r}: space must be 'latent' or 'prediction', found {space!r}")

    def decorator(fn: MergeMethod) -> MergeMethod:
        params = inspect.signature(fn).parameters.values()
        options = {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
        missing = [k for k, p in options.items() if p.default is inspect.Parameter.empty]
        if missing:
            raise ModfuseError(f"merge method {name!r}: options {missing} need defaults")
        METHODS.register(name, overwrite=overwrite)(fn)
        _INFO[name] = MethodInfo(name, fn, space, kinds, needs_calibration, options)
        return fn

    return decorator


def method_info(name: str) -> MethodInfo:
    """The `MethodInfo` of a registered method (the error lists the known names)."""
    fn = METHODS.get(name)
    return _INFO.get(name) or MethodInfo(name, fn, "latent", None, False, {})


def _coerce(value: Any, param: inspect.Parameter, method: str) -> Any:
    """A CLI / yaml value converted to the type of the option's default."""
    default = param.default
    if isinstance(value, str) and not isinstance(default, str):
        low = value.strip().lower()
        if isinstance(default, bool):
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        else:
            try:
                return type(default)(value) if default is not None else float(value)
            except (TypeError, ValueError):
                pass
        raise ModfuseError(
            f"merge method {method!r}: option {param.name!r} expects {type(default).__name__}, found {value!r}"
        )
    return value


def method_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated options of method ``name`` (unknown names are refused, listing the known ones)."""
    info = method_info(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ModfuseError(
            f"merge method {name!r} has no option(s) {unknown}; its options are "
            f"{ {k: p.default for k, p in info.options.items()} }"
        )
    return {k: _coerce(v, info.options[k], name) for k, v in options.items()}


def default_method(kind: str) -> str:
    """The default prediction-space method for a task kind (see `DEFAULT_METHODS`)."""
    return DEFAULT_METHODS[kind]


@dataclass
class BlockStats:
    """Per-block calibration statistics a prediction method reads (N blocks, C outputs).

    Attributes:
        prior: (N, C) each block's prior in output space (log-odds, log-frequencies, target
            mean, baseline hazard logits).
        spread: (N, C) regression: predictive variance (held-out residual variance); ones else.
        prior_var: (N, C) regression: the target's variance; ones else.
        kind: the task kind.
    """

    prior: Tensor
    spread: Tensor
    prior_var: Tensor
    kind: str


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


# ---------------------------------------------------------------------------- prediction space
def _log_odds_sum(outputs: Tensor, weights: Tensor, prior: Tensor, prior_correction: bool) -> Tensor:
    """sum_i w_i (z_i - prior_i) + mean over present blocks of prior_i  (B, C).

    With unit weights and equal priors this is sum_i z_i - (k - 1) prior: the product of the
    present experts divided by the prior k - 1 times. A single present block returns its own
    calibrated output exactly.
    """
    w = weights[:, :, None]
    present = (weights > 0).to(outputs.dtype)[:, :, None]
    if not prior_correction:
        return (w * outputs * present).sum(1)
    base = (present * prior[None]).sum(1) / present.sum(1).clamp_min(1.0)
    return (w * present * (outputs - prior[None])).sum(1) + base


@register_method("poe", space="prediction", kinds=("binary", "multiclass", "multilabel"), needs_calibration=True)
def poe(outputs: Tensor, weights: Tensor, stats: BlockStats, *, prior_correction: bool = True) -> Tensor:
    """Product of experts with prior correction: the Bayes-optimal combination of calibrated
    blocks when the modalities are conditionally independent given the label.

    Binary / multilabel (per label): sum of the present blocks' calibrated log-odds minus
    (k - 1) times the prior log-odds. Multiclass: the same on log-probabilities (the result is
    a logit vector; softmax normalises it). Block weights act as exponents of each expert.

    Options:
        prior_correction: subtract the k - 1 extra priors (False: plain sum of log-odds, which
            over-counts the prior k - 1 times).
    """
    if stats.kind == "multiclass":
        outputs = torch.log_softmax(outputs, dim=-1)
    return _log_odds_sum(outputs, weights, stats.prior.to(outputs), prior_correction)


@register_method("hazard", space="prediction", kinds=("survival",), needs_calibration=True)
def hazard(outputs: Tensor, weights: Tensor, stats: BlockStats, *, baseline_correction: bool = True) -> Tensor:
    """Survival: per interval, the sum of the present blocks' hazard logits (log-hazards for
    small hazards) minus (k - 1) times the baseline, each block's baseline being its mean hazard
    logits on its validation rows: proportional hazards multiply, the baseline counts once.

    Options:
        baseline_correction: subtract the k - 1 extra baselines.
    """
    return _log_odds_sum(outputs, weights, stats.prior.to(outputs), baseline_correction)


@register_method("precision", space="prediction", kinds=("regression",), needs_calibration=True)
def precision(outputs: Tensor, weights: Tensor, stats: BlockStats, *, prior_correction: bool = True) -> Tensor:
    """Regression: the precision-weighted mean of the present blocks' estimates, each weighted
    by ``w_i / s_i^2`` with ``s_i^2`` block i's held-out residual variance (per output).

    By default this is the Gaussian product of experts: each block's estimate is a posterior
    mean that already contains the target prior N(m, v), so the k - 1 extra copies of that
    prior are removed: precision ``P = sum_i w_i / s_i^2 - (k - 1) / v`` and mean
    ``(sum_i w_i mu_i / s_i^2 - (k - 1) m / v) / P`` (Bayes-optimal when the modalities are
    conditionally independent and Gaussian). Rows where P would fall under a tenth of the
    uncorrected precision fall back to the plain weighted mean.

    Options:
        prior_correction: False gives the plain mean ``sum_i w_i mu_i / s_i^2 / sum_i w_i / s_i^2``
            (which shrinks towards the prior k times).
    """
    present = (weights > 0).to(outputs.dtype)[:, :, None]
    w = weights[:, :, None] * present
    prec = w / stats.spread.to(outputs)[None]
    total = prec.sum(1)
    merged = (prec * outputs).sum(1) / total.clamp_min(1e-12)
    if not prior_correction:
        return merged
    k = present.sum(1)
    p0 = 1.0 / stats.prior_var.to(outputs).mean(0)
    m0 = stats.prior.to(outputs).mean(0)
    corr = total - (k - 1) * p0
    corrected = ((prec * outputs).sum(1) - (k - 1) * p0 * m0) / corr.clamp_min(1e-12)
    return torch.where(corr > 0.1 * total, corrected, merged)


def get_method(name: str | MergeMethod) -> MergeMethod:
    """A registered method by name (or a callable passed through)."""
    return name if callable(name) else METHODS.get(name)


def available_methods(space: Space | None = None) -> list[str]:
    """Names of the registered merge methods (of one ``space`` if given)."""
    return [n for n in METHODS.available() if space is None or method_info(n).space == space]
