"""Shared pytest fixtures: where ../shared lives, and skips that say why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COSAM_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data" / "cosam-mini"
SHARED_WEIGHTS = SHARED / "weights"

# Tests use tiny tensors: one thread is as fast and never oversubscribes a loaded machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MANIFEST.tsv").is_file():
        pytest.skip(
            f"needs the real cosam-mini data at {SHARED_DATA} (CI has ../shared beside the checkout)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    if not (SHARED_WEIGHTS / "minisam_vit_t.pth").is_file():
        pytest.skip(
            f"needs the real checkpoints in {SHARED_WEIGHTS} (CI has ../shared beside the checkout)"
        )
    return SHARED_WEIGHTS
