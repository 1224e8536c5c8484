"""Where golden reference data lives: the full sets in ../shared/reference (present only in this
team's workplace) and compact copies under tests/data (always present)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

TESTS = Path(__file__).resolve().parent
COMPACT = TESTS / "data"


def shared_reference() -> Optional[Path]:
    """``../shared/reference`` seen from the project root, or None on a fresh clone."""
    path = TESTS.parents[1] / "shared" / "reference"
    return path if path.is_dir() else None


def seeded_randn(shape, seed: int) -> torch.Tensor:
    """The reference recipe for random inputs: one fresh seeded generator per array, float64."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def seeded_rand_pm1(shape, seed: int) -> torch.Tensor:
    """Uniform inputs in [-1, 1) as the encoder/LPIPS references draw them."""
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
