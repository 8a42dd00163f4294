"""Signals become exceptions so teardown runs; teardown itself is shielded.

SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` in the main thread. While
teardown runs, a signal is remembered instead of raised, so a second Ctrl-C
cannot skip the removal of a snapshot; the run then exits 128+N for the first
signal it received.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Interrupted

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_state = threading.local()
_shield_depth = 0
_pending: list[int] = []


def _handler(signum: int, _frame: object) -> None:
    if _shield_depth > 0:
        _pending.append(signum)
        return
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Install the raising handlers for the duration of a run (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def shielded() -> Iterator[None]:
    """Defer signals while the block runs (teardown)."""
    global _shield_depth
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1


def pending_signal() -> int | None:
    """The first signal received while shielded, if any (cleared when read)."""
    if _pending:
        first = _pending[0]
        _pending.clear()
        return first
    return None
