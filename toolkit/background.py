"""Background: one call run on a daemon thread, its value or error collected later.

Preflight reads the peer's facts on threads while it reads the source's, and
recover takes the peer's inventory while it takes the source's. It knows
nothing of either: a thread helper below them both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Background:
    """One call run on a daemon thread; ``result()`` waits for it and returns or re-raises.

    Daemon, so a run stopped by a signal while the peer is still answering exits at
    once instead of waiting for the peer's command (preflight only reads).
    """

    def __init__(self, fn: Callable[[], object], name: str) -> None:
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def wait(self) -> None:
        """Wait for the work to end, whatever its outcome."""
        self._thread.join()

    def result(self) -> object:
        """The work's value once it ended; its error raised here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
