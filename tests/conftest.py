"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pytest


@pytest.fixture(scope="session")
def shared_reference() -> Optional[Path]:
    """``../shared/reference`` (the full golden sets) seen from the project root, or None on a fresh clone."""
    path = Path(__file__).resolve().parents[2] / "shared" / "reference"
    return path if path.is_dir() else None
