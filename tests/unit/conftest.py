"""Fixtures shared by the unit test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """A lock directory as the tool wants it: 0755, the test user's own."""
    d = tmp_path / "lock"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d
