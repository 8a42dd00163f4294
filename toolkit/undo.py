"""Undoing one resource: bounded retries while a probe says it is still there.

Shared by a run's teardown, ``recover`` and ``init-standby``, so every undo in the tool
meets a busy device the same way.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from .errors import CommandFailed, MapFailed, ToolkitError
from .runners import Runner
from .step_batch import mark_line, read_marks


def resource_exists(runner: Runner, probe: tuple[str, ...]) -> bool:
    """An exists-probe says "there" by exiting 0 and printing something."""
    res = runner.run(probe, check=False, timeout=60)
    return res.exit_code == 0 and bool(res.stdout.strip())


def undo_with_retry(runner: Runner, undo: tuple[str, ...], exists: tuple[str, ...],
                    timeout: float, attempts: int = 6, *, probe_first: bool = True) -> bool:
    """Undo one resource while it exists; True if something was removed.

    A device that was just mapped or unmounted can be held for a moment (udev,
    blkid, a lazy close): kpartx -d then exits 1 without a word, umount says
    "target is busy". So any failure is retried with a bounded back-off, as
    long as the exists-probe says the resource is still there.

    ``probe_first=False`` is for a resource this process made and has not seen go
    (a run's own teardown): the undo runs at once, and the probe only after a
    failure, to tell "already gone" from "held". That saves a round trip per
    resource; the outcome is the same, as every undo fails harmlessly on a
    resource that is not there (and run-unique names mean it is nobody else's).
    """
    delay = 0.25
    for attempt in range(attempts):
        if exists and (probe_first or attempt > 0) and not resource_exists(runner, exists):
            return attempt > 0
        res = runner.run(undo, check=False, timeout=timeout)
        if res.exit_code == 0:
            return True
        if not probe_first and attempt == 0 and exists and not resource_exists(runner, exists):
            return False  # it was gone before the undo: nothing removed
        if attempt == attempts - 1:
            raise CommandFailed(res)
        time.sleep(delay)
        delay = min(delay * 2, 4.0)
    return False


# $0 of undo_batch_argv's script: how a fake host (and a reader of `ps`) recognises it.
UNDO_BATCH_NAME = "domu-backup-undo"
_UNDONE = "@@domubk-undo"  # the line the batch prints: index, exit code, uptime
# The kernel's uptime, read by the shell itself (no process): each undo's time.
_CLOCK = 't=; read t _ </proc/uptime 2>/dev/null; '
_MARK = 'printf "\\n%s %s r=%s t=%s\\n" ' + _UNDONE + ' {n} "$r" "$t"'


def undo_batch_argv(undos: Sequence[Sequence[str]]) -> list[str]:
    """One command that runs ``undos`` in order, each only once the one before succeeded.

    It prints a line before the first undo and one after each (the undo's index, its exit
    code and the host's uptime, so each undo is timed), and stops at the first that fails,
    exiting 0: the lines say how far it got. A run's teardown undoes a host's resources
    with it in one round trip instead of one per resource.
    """
    lines = ["r=; " + _CLOCK + _MARK.format(n="-")]
    lines += [shlex.join(u) + "; r=$?; " + _CLOCK + _MARK.format(n=n)
              + ' ; [ "$r" = 0 ] || exit 0' for n, u in enumerate(undos)]
    return ["sh", "-c", "\n".join(lines), UNDO_BATCH_NAME]


def unwrap_undo_batch(argv: Sequence[str]) -> list[list[str]] | None:
    """The undos of an undo_batch_argv command, in order; None for any other argv."""
    a = tuple(argv)
    if len(a) != 4 or a[:2] != ("sh", "-c") or a[3] != UNDO_BATCH_NAME:
        return None
    return [shlex.split(line.split("; r=$?;", 1)[0]) for line in a[2].split("\n")[1:]]


def batch_mark(n: int | None, code: int | None, uptime: float) -> str:
    """The line undo_batch_argv's script prints (for a host that plays it)."""
    return mark_line(_UNDONE, n, "" if code is None else str(code), uptime)


def undone_in_batch(stdout: str) -> list[float | None]:
    """How long each undo of a batch that succeeded took, from the first on, as its output
    says (None where the host's clock could not be read)."""
    marks = read_marks(stdout, _UNDONE)
    times: list[float | None] = []
    before = marks.get("-", ("", None))[1]
    while marks.get(str(len(times)), ("", None))[0] == "0":
        now = marks[str(len(times))][1]
        times.append(round(now - before, 3) if now is not None and before is not None else None)
        before = now
    return times


# Steps whose resource is a /dev/mapper node the next steps write to or map.
DM_NODE_ACTIONS = ("alias", "lvmap")


def dm_node_probes(node: str) -> tuple[tuple[str, ...], ...]:
    """What ensure_dm_node runs: ``test -b``, and ``dmsetup mknodes`` (then ``test -b``
    again) only when the node is missing."""
    return (("test", "-b", node), ("dmsetup", "mknodes", node.rsplit("/", 1)[-1]))


def ensure_dm_node(runner: Runner, node: str) -> None:
    """The /dev/mapper node of a map just made is a block device before anything uses it.

    Where no udev makes the node (or it is late, or removed it), ``dmsetup mknodes`` makes
    it; writing to a missing node would otherwise create a regular file in /dev.
    """
    is_block, mknodes = dm_node_probes(node)
    if runner.run(is_block, check=False, timeout=60).exit_code == 0:
        return
    runner.run(mknodes, check=False, timeout=60)
    if runner.run(is_block, check=False, timeout=60).exit_code != 0:
        raise node_missing(node, runner.host)


def node_missing(node: str, host: str) -> MapFailed:
    """The error of a map whose /dev/mapper node is no block device, even after mknodes."""
    name = node.rsplit("/", 1)[-1]
    return MapFailed(f"{node} is not a block device after `dmsetup create {name}` "
                     "(is udev running and able to create /dev/mapper nodes?)", host=host)


class Undoable(Protocol):
    """What the walker needs of a made resource: a plan's step or a journal's entry."""

    @property
    def action(self) -> str:
        """What made it (a step's action)."""

    @property
    def resource(self) -> str:
        """What it is: a path, an LV, a map."""

    @property
    def undo(self) -> tuple[str, ...]:
        """The command that removes it."""

    @property
    def exists(self) -> tuple[str, ...]:
        """The probe that exits 0 and prints while it exists."""


T = TypeVar("T", bound=Undoable)


@dataclass
class Unwound(Generic[T]):
    """What one walk did: each resource removed or found gone, and each that failed."""

    removed: list[T] = field(default_factory=list)  # undone by this walk
    gone: list[T] = field(default_factory=list)  # already gone: nothing to do
    failed: list[tuple[T, str]] = field(default_factory=list)  # (resource, why)

    @property
    def clean(self) -> bool:
        """Everything the walk was given is gone."""
        return not self.failed


def unwind(runner: Runner, made: Sequence[T], *, timeout: float, probe_first: bool = True,
           give_up: Callable[[ToolkitError], str] | None = None,
           timed: Callable[[T, float, float], None] | None = None,
           handlers: Mapping[str, Callable[[T], bool]] | None = None,
           batched: bool = False) -> Unwound[T]:
    """Undo ``made`` (in the order it was made) newest first on one host, each with
    ``undo_with_retry``; one that fails does not stop the others.

    The one walk of the tool's undos: a run's teardown, ``init-standby``'s and
    ``recover``'s journals. ``give_up`` turns an error into a reason to try no more (a
    lost connection: each further undo would only wait for its own timeout); the ones
    left are failed with that reason. ``timed(item, wall, seconds)`` sees each attempt.
    ``handlers``: an undo whose first word is a key is done by that function instead of
    being run (True: undone; False: nothing was left to undo; raises when it fails).

    ``batched`` (a run's own teardown, with ``probe_first=False``): consecutive undos run
    as one command (``undo_batch_argv``) that stops at the first failure; that one and
    the rest then go the one-by-one way, with its retries and probes. Each undo done in a
    batch is timed by the host's clock.
    """
    out: Unwound[T] = Unwound()
    stop = ""
    items = list(reversed(made))
    i = 0
    while i < len(items):
        tried = False  # its undo failed in a batch: probe before trying again
        if batched and not stop:
            run = _plain_run(items, i, handlers or {})
            if len(run) > 1:
                done, stop = _undo_batch(runner, run, timeout, give_up, timed, out)
                i += done
                if done == len(run) or stop:
                    continue
                tried = True
        item = items[i]
        i += 1
        if stop:
            out.failed.append((item, stop))
            continue
        wall, start = time.time(), time.monotonic()
        try:
            handler = (handlers or {}).get(item.undo[0]) if item.undo else None
            if handler is not None:
                undone = handler(item)
            else:
                undone = undo_with_retry(runner, item.undo, item.exists, timeout,
                                         probe_first=probe_first or tried)
            if undone:
                out.removed.append(item)
            else:
                out.gone.append(item)
        except ToolkitError as exc:
            out.failed.append((item, str(exc)))
            stop = give_up(exc) if give_up is not None else ""
        finally:
            if timed is not None:
                timed(item, wall, time.monotonic() - start)
    return out


def _plain_run(items: Sequence[T], start: int, handlers: Mapping[str, object]) -> list[T]:
    """The undos from ``start`` on that are plain commands (no handler), in order."""
    run: list[T] = []
    for item in items[start:]:
        if not item.undo or item.undo[0] in handlers:
            break
        run.append(item)
    return run


def _undo_batch(runner: Runner, run: Sequence[T], timeout: float,
                give_up: Callable[[ToolkitError], str] | None,
                timed: Callable[[T, float, float], None] | None,
                out: Unwound[T]) -> tuple[int, str]:
    """Run ``run``'s undos in one command: (how many it consumed, a reason to stop).

    The undos that succeeded are removed. An error that gives up (a lost peer) fails the
    first undo with it and the others with the reason to give up, as nothing is known of
    what ran; any other error leaves them all to the one-by-one way (which probes first).
    """
    wall, start = time.time(), time.monotonic()
    try:
        # One command's bound for the whole batch: each undo takes a moment, and a hung
        # one must not hold the run for the bound of every undo after it.
        res = runner.run(undo_batch_argv([u.undo for u in run]), check=False, timeout=timeout)
    except ToolkitError as exc:
        stop = give_up(exc) if give_up is not None else ""
        if stop:  # the first was tried; what became of it and the rest is unknown
            out.failed.append((run[0], str(exc)))
            out.failed.extend((u, stop) for u in run[1:])
            if timed is not None:
                timed(run[0], wall, time.monotonic() - start)
            return len(run), stop
        return 0, ""
    times = undone_in_batch(res.stdout)
    elapsed = time.monotonic() - start
    at = wall
    for u, seconds in zip(run, times, strict=False):
        out.removed.append(u)
        if timed is not None:  # the host's own clock; else the batch's share
            took = seconds if seconds is not None else elapsed / len(times)
            timed(u, at, took)
            at += took
    return len(times), ""
