"""LegoBlock: a unimodal model whose latent lives in the frequency domain, so blocks merge.

A block wraps any encoder. The encoder maps each present sample to tokens (n_tokens, d_enc);
a learned latent array L0 (l_c, l_d) is updated in ``depth`` rounds. Each round takes the FFT
of the latent along the l_c axis, updates its real part with pre-norm cross-attention (queries
from the latent, keys/values from the projected tokens) and a pre-norm feed-forward layer,
both residual, and goes back with the inverse FFT. The encoder runs once per forward, and the
attention costs O(l_c x n_tokens) memory: linear in the input length.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modfuse.core.config import ConfigError, describe, instantiate, is_description
from modfuse.core.model import ModelOutput
from modfuse.core.tasks import DEFAULT_TASK, TaskSpec, as_task_specs
from modfuse.data.batch import ModalityBatch, encode_present
from modfuse.errors import ModfuseError
from modfuse.lego.calibration import Calibration

__all__ = ["BlockList", "LegoBlock", "LegoHead"]


class CrossAttention(nn.Module):
    """Multi-head attention from latent rows (queries) to encoder tokens (keys/values).

    Shapes:
        x (n, l_c, dim), tokens (n, t, dim) -> (n, l_c, dim). Each sample attends only to its
        own tokens (no cross-sample operation).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        n, lq, d = x.shape
        h = self.heads
        q = self.q(x).view(n, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(tokens).view(n, tokens.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        # SDPA picks a memory-efficient kernel where one exists; the score matrix is l_c x t
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(n, lq, d))


class FrequencyRound(nn.Module):
    """One update of the latent in the frequency domain.

    Shapes:
        latent (n, l_c, l_d) real, tokens (n, t, l_d) -> complex spectrum (n, l_c, l_d)
        (FFT along l_c) whose real part was updated.
    """

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads, dropout)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dim, dim)
        )

    def forward(self, latent: Tensor, tokens: Tensor) -> Tensor:
        spec = torch.fft.fft(latent.float(), dim=1)
        real = spec.real
        real = real + self.attn(self.norm_q(real), self.norm_kv(tokens))
        real = real + self.ffn(self.norm_ffn(real))
        return torch.complex(real, spec.imag)


class LegoHead(nn.Module):
    """Head over a frequency latent: inverse FFT, per-row LayerNorm, mean over l_c, linear.

    The per-row norm before pooling makes every frequency matter (a plain mean over l_c of the
    inverse FFT would read only the DC coefficient).

    Shapes:
        spectrum (n, l_c, l_d) complex -> logits (n, num_outputs).
    """

    def __init__(self, dim: int, num_outputs: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, num_outputs)

    def forward(self, spectrum: Tensor) -> Tensor:
        if spectrum.shape[0] == 0:
            return spectrum.new_zeros(0, self.linear.out_features, dtype=self.linear.weight.dtype)
        latent = torch.fft.ifft(spectrum, dim=1).real
        return self.linear(self.norm(latent).mean(dim=1))


def _as_encoder(encoder: nn.Module | str | Mapping[str, Any], modality: str) -> nn.Module:
    """A module, a registry name, ``{"name": ..., **kwargs}`` or a ``class_path`` description -> an encoder."""
    if isinstance(encoder, nn.Module):
        return encoder
    from modfuse.encoders import build

    if isinstance(encoder, str):
        return build(encoder)
    if isinstance(encoder, Mapping) and "name" in encoder:
        kwargs = {k: v for k, v in encoder.items() if k != "name"}
        return build(encoder["name"], **kwargs)
    if is_description(encoder):
        module = instantiate(encoder, where=f"encoder of {modality!r}")
        if isinstance(module, nn.Module):
            return module
    raise ModfuseError(
        "encoder must be a module, a registered name, {'name': ..., **kwargs} or "
        f"{{'class_path': ..., 'init_args': {{...}}}}, found {encoder!r}",
        modality=modality,
    )


def describe_encoder(encoder: nn.Module, modality: str) -> dict[str, Any]:
    """JSON description of an encoder: ``{"name": ..., **kwargs}`` when built by registry name,
    else the generic ``{"class_path": ..., "init_args": ...}`` (any module built after modfuse
    was imported: ``class_path`` encoders of recipes, ``wrap(...)`` of MONAI/timm networks).

    Raises:
        ModfuseError: naming the modality and what to do, when the encoder cannot be described.
    """
    from modfuse.encoders import config_of

    by_name = config_of(encoder)
    if by_name is not None:
        return by_name
    try:
        return describe(encoder, where=f"encoder of {modality!r}")
    except ConfigError as exc:
        raise ModfuseError(f"cannot describe the encoder as JSON to save this block: {exc}", modality=modality) from exc


class LegoBlock(nn.Module):
    """A complete unimodal model (encoder + frequency latent + head) that can be merged or fused.

    Args:
        encoder: an encoder module declaring ``out_dim`` (and ``out_tokens``: None when pooled),
            a registered encoder name, ``{"name": ..., **kwargs}``, or a ``{"class_path": ...,
            "init_args": ...}`` description. Any encoder built after modfuse was imported
            (by name, from a recipe's ``class_path``, or ``wrap(...)`` of a third-party network)
            is described in the block's JSON config, so a saved block rebuilds from it.
        modality: the modality this block reads.
        num_outputs: output width of the task (1 for binary).
        task: task kind (``"binary"``, ``"multiclass"``, ...) or a `TaskSpec`.
        latent_shape: (l_c, l_d) of the learned latent; blocks to merge must share it.
        depth: number of frequency-domain rounds (the encoder still runs once).
        heads: attention heads (must divide l_d).
        ffn_mult: hidden width of the feed-forward layer, as a multiple of l_d.
        dropout: dropout in attention and feed-forward layers.
        task_name: the name of the single task (``"y"`` by default, like ``as_task_specs``).
        init_seed: seed of the latent, rounds and head initialisation. Blocks meant to be merged
            keep the default, so they start from the same latent and head: averaging their heads
            is then averaging fine-tuned copies of one model, which is what makes merging work.

    Attributes:
        calibration: the block's `Calibration` (temperature,
            bias, label prior, predictive spread), measured by ``fit_block`` on the block's own
            validation rows (or `modfuse.lego.calibrate()`); None until then. Saved with the
            block (``to_config``); prediction-space merges (``poe``, ``precision``) need it.

    Shapes:
        ``forward(batch)`` -> `ModelOutput` with logits (B, num_outputs) for the block's task
        (``.prediction``); a sample without this modality gets the
        prior prediction (the head applied to the learned latent alone).
        ``latent(batch)`` -> (spectrum (n_present, l_c, l_d) complex, index (n_present,)).
    """

    def __init__(
        self,
        encoder: nn.Module | str | Mapping[str, Any],
        modality: str,
        num_outputs: int = 1,
        task: str | TaskSpec = "binary",
        latent_shape: tuple[int, int] = (64, 64),
        depth: int = 2,
        heads: int = 8,
        ffn_mult: int = 2,
        dropout: float = 0.0,
        task_name: str = DEFAULT_TASK,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = _as_encoder(encoder, modality)
        out_dim = getattr(self.encoder, "out_dim", None)
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ModfuseError(
                f"encoder {type(self.encoder).__name__} does not declare a positive integer out_dim (found "
                f"{out_dim!r}); wrap it with modfuse.encoders.wrap",
                modality=modality,
            )
        l_c, l_d = (int(v) for v in latent_shape)
        if l_c < 1 or l_d < 1 or depth < 1 or heads < 1 or l_d % heads:
            raise ModfuseError(
                f"expected latent_shape (l_c >= 1, l_d >= 1) with l_d divisible by heads and depth >= 1, "
                f"found latent_shape={tuple(latent_shape)}, heads={heads}, depth={depth}",
                modality=modality,
            )
        # a TaskSpec carries its own output width; a kind string takes num_outputs
        spec = task if isinstance(task, TaskSpec) else as_task_specs(task, num_outputs)[DEFAULT_TASK]
        self.modality = modality
        self.modalities = [modality]
        self.tasks: dict[str, TaskSpec] = {task_name: spec}
        self.hparams = {
            "latent_shape": [l_c, l_d],
            "depth": depth,
            "heads": heads,
            "ffn_mult": ffn_mult,
            "dropout": dropout,
            "task_name": task_name,
            "init_seed": init_seed,
        }
        self.latent_shape = (l_c, l_d)
        # measured on the block's own validation rows after training (modfuse.lego.calibration)
        self.calibration: Calibration | None = None
        # seeded init of everything but the encoder, without touching the global RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            self.latent0 = nn.Parameter(torch.randn(l_c, l_d) * 0.02)
            self.proj = nn.Sequential(nn.LayerNorm(out_dim), nn.Linear(out_dim, l_d))
            self.rounds = nn.ModuleList(FrequencyRound(l_d, heads, ffn_mult, dropout) for _ in range(depth))
            self.head = LegoHead(l_d, spec.num_outputs)

    # ------------------------------------------------------------------ latent
    def prior_latent(self) -> Tensor:
        """(1, l_c, l_d) complex spectrum of the learned latent alone (no input seen)."""
        return torch.fft.fft(self.latent0.float(), dim=0)[None]

    def tokens(self, batch: ModalityBatch) -> tuple[Tensor, Tensor]:
        """Projected encoder tokens of the present rows: ((n_present, t, l_d), index (n_present,)).

        The encoder runs here, once, on the present rows only.
        """
        if self.modality not in batch.present:
            raise ModfuseError(f"the batch has no modality {self.modality!r}; it has {batch.modalities}")
        feats, index = encode_present(self.encoder, batch, self.modality)
        if feats.dim() == 2:
            feats = feats[:, None]
        if feats.dim() != 3 or feats.shape[-1] != self.encoder.out_dim:
            raise ModfuseError(
                f"encoder returned shape {tuple(feats.shape)}; expected (n, {self.encoder.out_dim}) or "
                f"(n, tokens, {self.encoder.out_dim})",
                modality=self.modality,
            )
        return self.proj(feats.float()), index

    def latent(self, batch: ModalityBatch, start: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The frequency latent of every sample that has this block's modality.

        Args:
            batch: a batch holding this block's modality (present for any subset of samples).
            start: optional incoming spectrum (n_present, l_c, l_d) complex, one per present row
                (e.g. the latent of the previous block in a fuse chain); default: the block's
                own learned latent. The block's parameters are never changed by it.

        Returns:
            spectrum: (n_present, l_c, l_d) complex, FFT along l_c of the final latent.
            index: LongTensor (n_present,) of the batch positions of those rows.
        """
        tokens, index = self.tokens(batch)
        return self.latent_from_tokens(tokens, start), index

    def latent_from_tokens(self, tokens: Tensor, start: Tensor | None = None) -> Tensor:
        """Run the rounds on already projected tokens (n, t, l_d) -> spectrum (n, l_c, l_d)."""
        n = tokens.shape[0]
        if n == 0:  # FFT backends reject empty inputs; no present row, no work
            return torch.zeros(0, *self.latent_shape, dtype=torch.complex64, device=tokens.device)
        if start is None:
            latent = self.latent0.float().expand(n, *self.latent_shape)
        else:
            if tuple(start.shape) != (n, *self.latent_shape):
                raise ModfuseError(
                    f"start latent: expected shape {(n, *self.latent_shape)}, found {tuple(start.shape)}",
                    modality=self.modality,
                )
            latent = torch.fft.ifft(start, dim=1).real
        spectrum = latent.to(torch.complex64)
        for i, rnd in enumerate(self.rounds):
            if i:
                latent = torch.fft.ifft(spectrum, dim=1).real
            spectrum = rnd(latent, tokens)
        return spectrum

    # ------------------------------------------------------------------ prediction
    def forward(self, batch: ModalityBatch) -> ModelOutput:
        """Logits (B, num_outputs): present rows from their input, absent rows from the prior."""
        spectrum, index = self.latent(batch)
        prior = self.head(self.prior_latent())
        out = prior.expand(batch.batch_size, -1)
        if index.numel():
            out = out.index_copy(0, index, self.head(spectrum).to(out.dtype))
        return ModelOutput.of(out, self.tasks)

    # ------------------------------------------------------------------ config
    def to_config(self) -> dict[str, Any]:
        """JSON description from which `from_config()` rebuilds this block (weights aside).

        Raises:
            ModfuseError: if the encoder cannot be described (see `describe_encoder()`).
        """
        enc = describe_encoder(self.encoder, self.modality)
        (name, spec), *_ = self.tasks.items()
        return {
            "type": "LegoBlock",
            "modality": self.modality,
            "encoder": enc,
            "num_outputs": spec.num_outputs,
            "task": spec.to_dict(),
            **self.hparams,
            "task_name": name,
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LegoBlock:
        """Rebuild a block (freshly initialised) from `to_config()` output."""
        cfg = {k: v for k, v in config.items() if k != "type"}
        calibration = cfg.pop("calibration", None)
        task = cfg.pop("task")
        if isinstance(task, Mapping):
            task = as_task_specs({DEFAULT_TASK: task})[DEFAULT_TASK]
        cfg["latent_shape"] = tuple(cfg["latent_shape"])
        block = cls(task=task, **cfg)
        if calibration is not None:
            block.calibration = Calibration.from_dict(calibration)
        return block

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, latent_shape={self.latent_shape}, depth={len(self.rounds)}"


class BlockList(nn.ModuleList):
    """The `nn.ModuleList` of a merge or fuse, typed as holding `LegoBlock`s (iterating or
    indexing it gives blocks, so their calibration, tasks and heads type-check)."""

    def __iter__(self) -> Iterator[LegoBlock]:
        return cast(Iterator[LegoBlock], super().__iter__())

    def __getitem__(self, idx: int) -> LegoBlock:  # type: ignore[override]  # slices unused here
        return cast(LegoBlock, super().__getitem__(idx))
