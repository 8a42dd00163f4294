"""The tool's one logger (stdlib ``logging``): notes and progress as timestamped lines.

Every part writes through the ``domu_backup`` logger or a child of it: the commands
(``domu_backup``), the lab (``domu_backup.lab``) and the bench (``domu_backup.bench``).
One handler puts ``HH:MM:SS message`` on the stderr of the moment (a test's captured
stream included), one line per message, and never raises: a closed stderr costs the
line, not the run. The progress reporter (``toolkit/progress.py``) writes through it.
"""

from __future__ import annotations

import logging
import sys

ROOT = "domu_backup"


class _Stderr(logging.Handler):
    """Each record as one line on the current ``sys.stderr``, flushed at once."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr, flush=True)
        except (OSError, ValueError):  # stderr closed (a pipe gone, a daemon's fd)
            pass


def logger(name: str = "") -> logging.Logger:
    """The tool's logger (``name``: a child such as "lab"), its handler set up once."""
    root = logging.getLogger(ROOT)
    if not any(isinstance(h, _Stderr) for h in root.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False  # the lines are the tool's; nobody else's handler repeats them
    return root.getChild(name) if name else root


def info(message: str) -> None:
    """One line from the commands."""
    logger().info(message)


def lab(message: str) -> None:
    """One line of the lab's progress (building, booting, the sandbox, a rehearsal)."""
    logger("lab").info(message)


def bench(message: str) -> None:
    """One line of the bench's progress."""
    logger("bench").info("bench: " + message)
