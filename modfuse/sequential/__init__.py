"""Sequential interpretable fusion: a prediction after every modality, contributions by construction."""

from __future__ import annotations

from modfuse.sequential.model import SequentialContributions, SequentialFusion, StateUpdate

__all__ = ["SequentialContributions", "SequentialFusion", "StateUpdate"]
