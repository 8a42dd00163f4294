"""Progress of the copy: a bar on a terminal, periodic log lines otherwise (cron, CI)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .rsync import Progress, parse_progress

if TYPE_CHECKING:
    from rich.progress import Progress as Bars


class ProgressReporter:
    """Feeds rsync ``--info=progress2`` updates to rich or to a log function.

    One reporter serves every copy of a run: the filesystems of a domain (side by
    side with ``copy_jobs``, each from its own thread) and the domains one after
    another (``begin`` starts a domain's copies afresh). Without a terminal it logs
    at most one line every ``interval`` seconds, naming each filesystem copied since
    the last line; rsync's burst of updates as files finish (many at 100% within a
    second) is never more than that one line. A filesystem's percentage never goes
    backwards: rsync's own drops when incremental recursion finds more files, the one
    shown stays at the highest it reached.
    """

    def __init__(self, log: Callable[[str], None], *, interval: float = 10.0,
                 tty: bool | None = None) -> None:
        self.log = log
        self.interval = interval
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._last: float | None = None  # when the last line was logged
        self._domain = ""
        self._latest: dict[str, tuple[Progress, int]] = {}  # fs -> (update, percent shown)
        self._fresh: set[str] = set()  # filesystems updated since the last line
        self._progress: Bars | None = None  # rich's bars, on a terminal only
        self._tasks: dict[str, Any] = {}
        self._lock = threading.Lock()  # copies side by side report from their own threads

    def begin(self, domain: str) -> None:
        """A domain's copies start: its filesystems (named like the last one's) start at 0%."""
        with self._lock:
            self._domain = domain
            self._latest.clear()
            self._fresh.clear()
            self._tasks.clear()

    def __call__(self, fs: str, line: str) -> None:
        """One line of rsync's output for filesystem ``fs``: an update moves its bar on a
        terminal, or is logged once ``interval`` has passed; any other line is ignored."""
        p = parse_progress(line)
        if p is None:
            return
        with self._lock:
            shown = max(p.percent, self._latest[fs][1] if fs in self._latest else 0)
            self._latest[fs] = (p, shown)
            self._fresh.add(fs)
            if self.tty:
                self._bar(fs, shown, p.rate)
                return
            now = time.monotonic()
            if self._last is None or now - self._last >= self.interval:
                self._last = now
                self.log("rsync " + "; ".join(_line(name, q, pct)
                                              for name, (q, pct) in self._latest.items()
                                              if name in self._fresh))
                self._fresh.clear()

    def _bar(self, fs: str, percent: int, rate: str) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        if self._progress is None:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.percentage:>3.0f}% {task.fields[rate]}"),
                                      transient=False)
            self._progress.start()
        if fs not in self._tasks:
            name = f"{self._domain} {fs}" if self._domain else fs
            self._tasks[fs] = self._progress.add_task(f"rsync {name}", total=100, rate="")
        self._progress.update(self._tasks[fs], completed=percent, rate=rate)

    def close(self) -> None:
        """Stop the bars, if any were shown (they stay on the terminal as they last were)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _line(fs: str, p: Progress, percent: int) -> str:
    left = f", {p.files_left} files left to check" if p.files_left is not None else ""
    return f"{fs}: {percent}% {p.bytes} bytes at {p.rate}{left}"
