"""Training-time modality dropout: per sample, never leaving a sample without a modality."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from modfuse.data.batch import ModalityBatch
from modfuse.errors import ModfuseError

__all__ = ["ModalityDropout"]


def _check_rate(rate: float, modality: str | None = None) -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ModfuseError(f"a dropout rate must be in [0, 1], found {rate}", modality=modality)
    return rate


class ModalityDropout:
    """Randomly mark modalities absent per sample during training.

    Each present modality ``m`` of each sample is dropped independently with probability
    ``rates[m]``. A sample that would lose every modality it had keeps one of them, chosen
    uniformly at random, so no training sample becomes empty. Samples that arrive with no
    modality at all are left as they are. Dropped rows are removed from ``inputs`` (through
    `ModalityBatch.mask_modality()`), so encoders never see them.

    Usable directly as ``MultiModalDataModule(train_transform=ModalityDropout(0.3))``.

    Args:
        rates: one rate for every modality, or modality -> rate (modalities not named keep
            rate 0).
        rows: the probability that a sample is eligible for dropout at all (1: every sample;
            0.5: about half of each batch keeps all its modalities, so a model trained on it
            still sees complete inputs in every step).
        seed: seed of the random generator; the same seed and the same batches give the same
            drops. In DataLoader worker processes the seed is combined with the worker's
            seed so that workers do not repeat each other.

    Shapes:
        ModalityBatch of B samples -> ModalityBatch of B samples (same ids, targets).
    """

    def __init__(self, rates: float | Mapping[str, float], seed: int = 0, rows: float = 1.0) -> None:
        if isinstance(rates, Mapping):
            self.rates: float | dict[str, float] = {m: _check_rate(r, m) for m, r in rates.items()}
        else:
            self.rates = _check_rate(rates)
        rows = float(rows)
        if not 0.0 < rows <= 1.0:
            raise ModfuseError(
                f"ModalityDropout rows (the fraction of samples eligible) must be in (0, 1], found {rows}"
            )
        self.rows = rows
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._worker: tuple[int, int] | None = None

    def __repr__(self) -> str:
        rows = "" if self.rows == 1.0 else f", rows={self.rows!r}"
        return f"ModalityDropout(rates={self.rates!r}, seed={self.seed}{rows})"

    def rate_of(self, modality: str) -> float:
        """The dropout rate of ``modality``."""
        if isinstance(self.rates, dict):
            return self.rates.get(modality, 0.0)
        return self.rates

    def _rng(self) -> torch.Generator:
        info = torch.utils.data.get_worker_info()
        # DataLoader workers get their own stream, derived from the loader's per-worker seed
        # (itself drawn from the loader's seeded generator), so runs stay reproducible
        worker = None if info is None else (info.id, info.seed)
        if self._generator is None or worker != self._worker:
            seed = self.seed if info is None else (self.seed * 1_000_003 + info.seed) % 2**63
            self._generator = torch.Generator().manual_seed(seed)
            self._worker = worker
        return self._generator

    def generator_state(self) -> torch.Tensor:
        """The main-process generator's state (ByteTensor), for checkpoints: a run resumed from
        a checkpoint then draws the same drops as an uninterrupted one."""
        return self._rng().get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        """Restore a state from `generator_state`."""
        self._rng().set_state(state)

    def __getstate__(self) -> dict[str, object]:
        # generators do not travel to worker processes; each process makes its own
        return {**self.__dict__, "_generator": None, "_worker": None}

    def keep_masks(self, present: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Which (sample, modality) pairs survive, as BoolTensors (B,) per modality.

        Args:
            present: modality -> BoolTensor (B,) of the present samples.

        Returns:
            modality -> BoolTensor (B,), a subset of ``present`` that is non-empty for every
            sample that had at least one modality.
        """
        names = list(present)
        if not names:
            return {}
        rng = self._rng()
        pres = torch.stack([present[m].cpu() for m in names], dim=1)  # (B, M)
        rates = torch.tensor([self.rate_of(m) for m in names])
        drop = torch.rand(pres.shape, generator=rng) < rates
        if self.rows < 1.0:  # only the eligible samples lose modalities (drawn after, so rows=1 keeps the old stream)
            drop &= (torch.rand(pres.shape[0], generator=rng) < self.rows)[:, None]
        keep = pres & ~drop
        emptied = pres.any(1) & ~keep.any(1)
        if emptied.any():
            # pick one of the sample's own present modalities: random scores, argmax over present
            scores = torch.rand(pres.shape, generator=rng).masked_fill(~pres, -1.0)
            chosen = scores.argmax(1)
            keep[emptied, chosen[emptied]] = True
        return {m: keep[:, j].to(present[m].device) for j, m in enumerate(names)}

    def __call__(self, batch: ModalityBatch) -> ModalityBatch:
        if not isinstance(batch, ModalityBatch):
            raise ModfuseError(f"ModalityDropout expects a ModalityBatch, found {type(batch).__name__}")
        for m, keep in self.keep_masks(batch.present).items():
            if bool((batch.present[m] & ~keep).any()):
                batch = batch.mask_modality(m, keep)
        return batch
