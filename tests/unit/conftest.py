"""Fixtures shared by the unit test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

# The property tests check what is accepted and what comes out, not how fast: no per-example
# deadline, so a loaded machine (the lab booting beside the unit suite) cannot fail them.
settings.register_profile("domu-backup", deadline=None)
settings.load_profile("domu-backup")


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """A lock directory as the tool wants it: 0755, the test user's own."""
    d = tmp_path / "lock"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    return d
