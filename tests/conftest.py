"""Shared fixtures: real data under ../shared/data (skipped with a reason when absent), seeds."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
import torch

# MODFUSE_SHARED_DATA points elsewhere, e.g. from a git worktree that does not sit beside ../shared
SHARED_DATA = Path(
    os.environ.get("MODFUSE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)

# one thread: the test models are tiny, and extra threads only add contention on 2 cores
torch.set_num_threads(1)


@pytest.fixture
def shared_data() -> Path:
    """Root of the real data folder ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the project in CI)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed() -> None:
    L.seed_everything(0, workers=True, verbose=False)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the test, the caller's count restored after it (for code that, like
    scikit-learn's estimator checks, may change the thread count between tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
