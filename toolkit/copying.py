"""The copy: one filesystem's rsync (watched, its statistics and outcome reported), and
copies side by side (``copy_jobs`` rsyncs at once, each as its own step would run)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from . import signals
from .config import Config
from .errors import PeerFull, SnapshotInvalid, ToolkitError
from .plan import PEER, SOURCE, STANDBY_FULL, FilesystemPlan, Plan, Step
from .report import DomainReport
from .rsync import (
    inode_exhaustion,
    itemized_changes,
    parse_inodes,
    parse_progress,
    parse_stats,
    rsync_outcome,
)
from .runners import NO_LIMIT, Runner, StreamingRunner
from .runners.base import terminate
from .snapshots import SnapshotWatch, check_snapshots


class Walk(Protocol):
    """What the copies need of the run walking the plan (the executor)."""

    plan: Plan
    config: Config
    source: Runner
    peer: Runner
    report: DomainReport
    log: Callable[[str], None]
    on_progress: Callable[[str, str], None]
    guest_paths: dict[str, str]

    def fire(self, when: str, step: Step) -> None:
        """The test failpoint of this moment of a step, if one is set."""

    def copy(self, step: Step, on_start: Callable[[object], None] | None = None) -> None:
        """One filesystem copied; ``on_start`` gets the rsync process once it runs."""


def copy_run(steps: Sequence[Step], i: int) -> list[Step]:
    """The rsync steps that follow one another from ``steps[i]`` (empty if it is not one)."""
    out: list[Step] = []
    while i < len(steps) and steps[i].action == "rsync":
        out.append(steps[i])
        i += 1
    return out


class SideBySide:
    """Copy several filesystems at once (``copy_jobs`` rsyncs), each as its own step would.

    Workers take the filesystems in plan order. The first copy that fails stops the
    others (their rsyncs are terminated), as a failure would have stopped the next
    copy when run one after another, and its error is the one raised; the stopped
    ones are reported as not copied. A signal reaches the main thread, waiting here:
    it stops every rsync, waits for the workers, then raises, so teardown never
    meets a mount that a copy is still writing to. The standby stays marked dirty
    until every copy has succeeded (the marker steps come before and after).
    """

    STOP_GRACE = 10.0  # seconds a terminated rsync gets before it is killed

    def __init__(self, executor: Walk, steps: list[Step]) -> None:
        self.ex = executor
        self.steps = steps
        self.jobs = min(executor.config.defaults.copy_jobs, len(steps))
        self._lock = threading.Lock()
        self._todo = list(steps)
        self._procs: list[object] = []
        self._stop = threading.Event()
        self._failure: BaseException | None = None  # the first error, not caused by a stop

    def run(self) -> None:
        """Copy every filesystem, ``jobs`` at a time; raises the first failure or signal."""
        self.ex.log(f"copying {len(self.steps)} filesystems, {self.jobs} at a time")
        threads = [threading.Thread(target=self._worker, name=f"copy-{n}", daemon=True)
                   for n in range(self.jobs)]
        try:
            for t in threads:  # a signal while they start is handled like one while they run
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.25)  # short waits: a signal's exception is raised here
        except BaseException:
            # Shielded: a second signal must not leave an rsync writing under teardown.
            with signals.shielded():
                self._halt()
                for t in threads:
                    if t.ident is not None:  # started
                        t.join()
            raise
        if self._failure is not None:
            raise self._failure

    def _next(self) -> Step | None:
        with self._lock:
            if self._stop.is_set() or not self._todo:
                return None
            return self._todo.pop(0)

    def _started(self, proc: object) -> None:
        with self._lock:
            self._procs.append(proc)
            stopping = self._stop.is_set()
        if stopping:
            terminate(proc)

    def _halt(self) -> None:
        """Stop every copy: no new one starts, running rsyncs are terminated (then killed)."""
        with self._lock:
            self._stop.set()
            procs = list(self._procs)
        for proc in procs:
            terminate(proc)
        deadline = time.monotonic() + self.STOP_GRACE
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))  # type: ignore[attr-defined]
            except Exception:  # subprocess.TimeoutExpired, or a fake
                try:
                    proc.kill()  # type: ignore[attr-defined]
                except OSError:
                    pass

    def _worker(self) -> None:
        ex = self.ex
        while (step := self._next()) is not None:
            fs_report = next(x for x in ex.report.filesystems if x.name == step.fs)
            start, wall = time.monotonic(), time.time()
            try:
                ex.fire("before", step)
                if self._stop.is_set():
                    return  # stopped while it was about to start: never ran
                ex.copy(step, on_start=self._started)
                ex.fire("after", step)
            except BaseException as exc:  # handed to the main thread
                with self._lock:
                    first = not self._stop.is_set()
                    if first:
                        self._failure = exc
                        self._stop.set()
                if first:
                    self._halt()
                else:
                    fs_report.outcome = "stopped"  # terminated because the run is stopping
                return
            finally:
                ex.report.add_step(step.role, step.action, step.fs, wall,
                                   time.monotonic() - start)


def copy_filesystem(run: Walk, step: Step,
                    on_start: Callable[[object], None] | None = None) -> None:
    """An ``rsync`` step: one filesystem copied, its statistics and outcome reported.

    While rsync reads, the snapshots are watched (grown or the copy stopped, by the step's
    reactions); a full standby is told apart as out of space or out of inodes."""
    f = next(x for x in run.plan.filesystems if x.name == step.fs)
    fs_report = next(x for x in run.report.filesystems if x.name == f.name)
    defaults = run.config.defaults
    if not defaults.copy_unlisted and f.name not in run.guest_paths:
        fs_report.outcome = "skipped"
        run.log(f"{f.name}: not named by the guest fstab nor an override; skipped "
                "(copy_unlisted = false)")
        return
    argv = step.argv
    run.log(f"rsync {f.name}: {' '.join(argv[:3])} ... {argv[-2]} {argv[-1]}")
    start = time.monotonic()
    watch = SnapshotWatch(run.source, run.plan, step, run.config, run.report,
                          run.log, interval=2.0)
    with watch:
        if isinstance(run.source, StreamingRunner):
            def started(proc: subprocess.Popen) -> None:
                watch.attach(proc)
                if on_start is not None:
                    on_start(proc)

            seen: list[str] = []  # a compare's differences, every one (stdout keeps a tail)

            def on_line(line: str) -> None:
                if run.plan.compare:
                    seen.extend(itemized_changes(line))
                _progress(run, f.name, line)

            result = run.source.stream(argv, on_line, on_start=started)
            differences: list[str] | None = seen
        else:
            result = run.source.run(argv, check=False, timeout=NO_LIMIT)
            differences = None
    fs_report.duration = round(time.monotonic() - start, 3)
    stats = parse_stats(result.stdout)
    fs_report.files, fs_report.files_transferred = stats.files, stats.files_transferred
    fs_report.files_deleted, fs_report.total_size = stats.files_deleted, stats.total_size
    fs_report.transferred_size, fs_report.bytes_sent = stats.transferred_size, stats.bytes_sent
    fs_report.bytes_received = stats.bytes_received
    try:
        check_snapshots(run.source, run.plan, run.report)
    except SnapshotInvalid:
        fs_report.outcome = "failed"  # what it read may be torn: not a copy
        raise
    if watch.error is not None:
        fs_report.outcome = "failed"
        raise watch.error
    err = rsync_outcome(result.exit_code, result.stderr,
                        allow_vanished=defaults.allow_vanished, host=run.plan.source_host)
    if isinstance(err, PeerFull):
        err = _out_of_inodes(run, step, f) or err
    if err is not None:
        fs_report.outcome = "failed"
        raise err
    if run.plan.compare:
        fs_report.differences = (differences if differences is not None
                                 else itemized_changes(result.stdout))
        fs_report.outcome = "compared"
        run.log(f"{f.name}: {len(fs_report.differences)} difference(s) from the snapshot")
        return
    fs_report.outcome = "copied"


def _out_of_inodes(run: Walk, step: Step, f: FilesystemPlan) -> PeerFull | None:
    """A full standby that ran out of inodes, not space (statvfs on both mounts, the
    copy step's reactions to a full standby)."""
    stat = {r.role: r.argv for r in step.reactions if r.when == STANDBY_FULL}
    if set(stat) != {PEER, SOURCE}:
        return None
    try:
        theirs = run.peer.run(stat[PEER], check=False, timeout=60)
        ours = run.source.run(stat[SOURCE], check=False, timeout=60)
    except ToolkitError:
        return None
    return inode_exhaustion(f.name, parse_inodes(theirs.stdout) if theirs.exit_code == 0
                            else None, parse_inodes(ours.stdout) if ours.exit_code == 0
                            else None, host=run.plan.peer_host)


def _progress(run: Walk, fs: str, line: str) -> None:
    if parse_progress(line) is not None:
        run.on_progress(fs, line)
