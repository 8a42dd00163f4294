"""Taking a clean run's restore point on the peer, then pruning: the plan's last part.

Runs after teardown, only when the copy succeeded, the marker said clean and teardown
left nothing behind, and while the domain lock is still held. Each point LV is created
through the peer's journal (entry first, same command), so a run killed here leaves
nothing of its point once ``recover`` has run; an error or a signal removes what was made
of it at once. Only once the point is whole are the old points the rules no longer keep
removed. A failed prune keeps what it could not remove and says so.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from typing import Protocol

from . import signals
from .config import Config
from .errors import CommandFailed, Interrupted, RestorePointFailed
from .journal import Journal
from .plan_records import PEER, Plan, Step
from .report import DomainReport
from .restore_points import parse_point_lv
from .runners import Runner
from .undo import unwind


class PointRun(Protocol):
    """What taking the point needs of the run (the executor, once teardown is done)."""

    plan: Plan
    config: Config
    peer: Runner
    report: DomainReport
    journals: dict[str, Journal]
    log: Callable[[str], None]

    def fire(self, when: str, step: Step) -> None:
        """The test failpoint of this moment of a step, if one is set."""


def _timed(ex: PointRun, step: Step, wall: float, start: float) -> None:
    ex.report.add_step(step.role, step.action, step.resource, wall, time.monotonic() - start)


def take_restore_point(ex: PointRun) -> None:
    """Create the plan's point LVs, then run its prune steps; RestorePointFailed when either
    fails (the standby itself stays clean)."""
    peer, journal = ex.peer, ex.journals[PEER]
    timeout = ex.config.ssh.command_timeout
    made: list[Step] = []
    try:
        for step in (s for s in ex.plan.after if s.action == "point"):
            start, wall = time.monotonic(), time.time()
            ex.fire("before", step)
            try:
                result = journal.run_recorded(step.action, step.resource, step.undo,
                                              step.exists, step.argv, timeout=timeout)
            except CommandFailed as exc:  # the journal could not be written: argv never ran
                raise RestorePointFailed(
                    f"restore point {ex.plan.run_id}: {exc}; the standby is clean, older "
                    "points are kept", host=peer.host) from exc
            made.append(step)
            _timed(ex, step, wall, start)
            if result.exit_code != 0:
                tail = " | ".join(result.stderr.strip().splitlines()[-3:])
                raise RestorePointFailed(
                    f"restore point {ex.plan.run_id}: `{' '.join(step.argv)}` exited "
                    f"{result.exit_code}: {tail}; the standby is clean, older points are "
                    "kept", host=result.host)
            ex.fire("after", step)
    except BaseException:
        with signals.shielded():  # what was made of the point goes, the journal with it
            done = unwind(peer, made, timeout=timeout)
            ex.report.teardown_errors += [f"[{peer.host}] {s.action} {s.resource}: {why}"
                                          for s, why in done.failed]
            if done.clean:
                journal.remove()
        pending = signals.pending_signal()
        if pending is not None:  # a signal during that clean-up ends the run as signals do
            raise Interrupted(pending) from None
        raise
    journal.remove()
    ex.report.restore_point = ex.plan.run_id
    ex.report.restore_points = len(ex.plan.points_kept)
    ex.report.newest_point = ex.plan.points_kept[0] if ex.plan.points_kept else ex.plan.run_id
    ex.log(f"restore point {ex.plan.run_id} taken on {peer.host}")

    # Each old point goes LV by LV; it counts as removed only once all of its LVs are.
    failed: list[str] = []
    left: set[str] = set()
    planned: list[str] = []
    for step in (s for s in ex.plan.after if s.action == "prune"):
        parsed = parse_point_lv(posixpath.basename(step.resource))
        run_id = parsed[0] if parsed else step.resource
        if run_id not in planned:
            planned.append(run_id)
        start, wall = time.monotonic(), time.time()
        ex.fire("before", step)
        result = peer.run(step.argv, check=False, timeout=timeout)
        _timed(ex, step, wall, start)
        if result.exit_code != 0:
            left.add(run_id)
            failed.append(f"{step.resource}: `{' '.join(step.argv)}` exited {result.exit_code}: "
                          + " | ".join(result.stderr.strip().splitlines()[-2:]))
            continue
        ex.fire("after", step)
    ex.report.points_pruned = [r for r in planned if r not in left]
    ex.report.restore_points += len(left)
    if failed:
        raise RestorePointFailed(f"restore point {ex.plan.run_id} taken, but pruning failed "
                                 "(those points are kept): " + "; ".join(failed), host=peer.host)
