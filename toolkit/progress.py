"""Progress of the copy: a bar on a terminal, periodic log lines otherwise (cron, CI)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

from .rsync import parse_progress


class ProgressReporter:
    """Feeds rsync ``--info=progress2`` updates to rich or to a log function."""

    def __init__(self, log: Callable[[str], None], *, interval: float = 10.0,
                 tty: bool | None = None) -> None:
        self.log = log
        self.interval = interval
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._last = 0.0
        self._progress = None
        self._tasks: dict[str, object] = {}
        self._lock = threading.Lock()  # copies side by side report from their own threads

    def __call__(self, fs: str, line: str) -> None:
        p = parse_progress(line)
        if p is None:
            return
        with self._lock:
            self._show(fs, p)

    def _show(self, fs: str, p) -> None:  # noqa: ANN001 - rsync.Progress
        if self.tty:
            self._bar(fs, p.percent, p.rate, p.bytes)
            return
        now = time.monotonic()
        if now - self._last >= self.interval or p.percent >= 100:
            self._last = now
            left = f", {p.files_left} files left to check" if p.files_left is not None else ""
            self.log(f"rsync {fs}: {p.percent}% {p.bytes} bytes at {p.rate}{left}")

    def _bar(self, fs: str, percent: int, rate: str, nbytes: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        if self._progress is None:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.percentage:>3.0f}% {task.fields[rate]}"),
                                      transient=False)
            self._progress.start()
        if fs not in self._tasks:
            self._tasks[fs] = self._progress.add_task(f"rsync {fs}", total=100, rate="")
        self._progress.update(self._tasks[fs], completed=percent, rate=rate)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
