"""A row of one host's steps in one command, for the executor (``execute``).

Steps that make a resource of their host with one command and nothing else in this process
between them (maps, aliases, guest LV maps, directories, mounts) go as one script
(``step_batch``): each journal entry written before its command, each made resource
registered for teardown, each step timed by the host's clock and checked as it would be on
its own. A row of check steps reads all its probes in one command (``run_reads``), then
proves each step from its own results. A failpoint set before a step ends the row before
it, one set after a step ends the row with it, so it fires exactly where it would one step
at a time.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Protocol

from .config import Config
from .errors import CommandFailed, ToolkitError
from .guards import check_reads, prove_filesystem
from .journal import JOURNAL_FAILED_EXIT, JOURNAL_FAILED_MESSAGE, Journal
from .plan import FilesystemPlan, Plan, Step
from .runners import CommandResult, Runner
from .step_batch import NODE_MISSING, BatchStep, run_reads, step_batch_argv, step_outcomes
from .undo import DM_NODE_ACTIONS, node_missing

# The actions whose rows go as one script, and the check rows' own.
BATCHED = frozenset({"map", "alias", "lvmap", "mkdir", "mount"})
CHECKS = frozenset({"check"})


class RowRun(Protocol):
    """What a row needs of the run walking it (the executor)."""

    plan: Plan
    config: Config
    source: Runner
    peer: Runner
    journals: dict[str, Journal]
    made: list[Step]

    def runner(self, role: str) -> Runner: ...
    def fires(self, when: str, step: Step) -> bool: ...
    def fire(self, when: str, step: Step) -> None: ...
    def timed(self, step: Step, wall: float, seconds: float) -> None: ...
    def prove_own_path(self, step: Step) -> None: ...
    def filesystem(self, step: Step) -> FilesystemPlan: ...


def row_at(ex: RowRun, i: int, actions: frozenset[str]) -> list[Step]:
    """The steps from ``i`` on that go to their host as one command: a row of one host's
    steps whose actions are in ``actions``, cut at a failpoint (see the module's text)."""
    steps = ex.plan.steps
    first = steps[i]
    row: list[Step] = []
    for step in steps[i:]:
        if step.action not in actions or step.role != first.role:
            break
        if row and ex.fires("before", step):
            break
        row.append(step)
        if ex.fires("after", step):
            break
    return row


def run_check_row(ex: RowRun, steps: list[Step]) -> None:
    """A row of one host's check steps: every probe of the row read in one command, then
    each step proved from its own results, in order (timed as equal shares)."""
    ex.fire("before", steps[0])
    start, wall = time.monotonic(), time.time()
    reads = [check_reads(s) for s in steps]
    results = run_reads(ex.runner(steps[0].role), [a for r in reads for a in r], timeout=60)
    share = (time.monotonic() - start) / len(steps)
    k = 0
    for step, own in zip(steps, reads, strict=True):
        ex.timed(step, wall, share)
        wall += share
        prove_filesystem(step, ex.filesystem(step), ex.source, ex.peer,
                         results[k:k + len(own)])
        k += len(own)
    ex.fire("after", steps[-1])


def run_step_row(ex: RowRun, steps: list[Step]) -> None:
    """Run a row of one host's steps in one command (see the module's text)."""
    role = steps[0].role
    runner, journal = ex.runner(role), ex.journals[role]
    parts = []
    for step in steps:
        if step.action in ("mkdir", "mount") and step.undo:
            ex.prove_own_path(step)
        entry = (journal.entry_line(step.action, step.resource, step.undo, step.exists)
                 if step.undo else "")
        parts.append(BatchStep(tuple(step.argv), journal.path if step.undo else "",
                               entry, step.resource if step.action in DM_NODE_ACTIONS
                               else ""))
    ex.fire("before", steps[0])
    start, wall = time.monotonic(), time.time()
    try:
        res = runner.run(step_batch_argv(parts), check=False,
                         timeout=ex.config.ssh.command_timeout)
    except BaseException:
        # What ran is unknown: each journalled step may have made its resource, and its
        # undo (which fails harmlessly on nothing) is owed.
        ex.made.extend(s for s in steps if s.undo)
        raise
    outcomes = step_outcomes(res.stdout)
    elapsed = time.monotonic() - start
    for step, outcome in zip(steps, outcomes, strict=False):
        seconds = outcome.seconds if outcome.seconds is not None else elapsed / len(outcomes)
        ex.timed(step, wall, seconds)
        wall += seconds
        if step.undo and outcome.code != str(JOURNAL_FAILED_EXIT):
            ex.made.append(step)  # even if it failed: it may have half-succeeded
        if outcome.code == "0":
            continue
        failed = replace(res, argv=tuple(step.argv),
                         exit_code=int(outcome.code) if outcome.code.isdigit() else 1)
        if outcome.code == str(JOURNAL_FAILED_EXIT) and JOURNAL_FAILED_MESSAGE in res.stderr:
            raise CommandFailed(replace(res, exit_code=JOURNAL_FAILED_EXIT))
        if outcome.code == NODE_MISSING:
            raise node_missing(step.resource, runner.host)
        raise step_error(step, failed)
    if len(outcomes) < len(steps):  # the script ended before its last step said anything
        ex.made.extend(s for s in steps[len(outcomes):] if s.undo)
        raise CommandFailed(replace(res, exit_code=res.exit_code or 1))
    ex.fire("after", steps[-1])


def step_error(step: Step, result: CommandResult) -> ToolkitError:
    """The error of a step whose command failed: a snapshot, map or mount says which it was
    and the last lines of its stderr; any other a CommandFailed."""
    from .errors import MapFailed, MountRefused, SnapshotFailed

    cls = {"snapshot": SnapshotFailed, "map": MapFailed, "alias": MapFailed, "lvmap": MapFailed,
           "mount": MountRefused}.get(step.action)
    if cls is None:
        return CommandFailed(result)
    tail = " | ".join(result.stderr.strip().splitlines()[-3:])
    return cls(f"{step.action} failed: `{' '.join(result.argv)}` exited {result.exit_code}: {tail}",
               host=result.host)
