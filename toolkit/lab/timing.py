"""Where the lab's time goes: named phases, measured as they run, read by the test summary.

``invoke test`` prints them at the end (tests/conftest.py) beside the per-test setup, call
and teardown times, so every later change to the suite is seen against the same table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# (phase, seconds) in the order they ended; one process, one list.
PHASES: list[tuple[str, float]] = []


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Measure the block as ``name`` (also when it raises)."""
    start = time.monotonic()
    try:
        yield
    finally:
        PHASES.append((name, time.monotonic() - start))


def total(name: str) -> float:
    """The seconds spent in every phase called ``name``."""
    return sum(s for n, s in PHASES if n == name)
