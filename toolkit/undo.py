"""Undoing one resource: bounded retries while a probe says it is still there.

Shared by a run's teardown, ``recover`` and ``init-standby``, so every undo in the tool
meets a busy device the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from .errors import CommandFailed, MapFailed, ToolkitError
from .runners import Runner


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
    name = node.rsplit("/", 1)[-1]
    runner.run(mknodes, check=False, timeout=60)
    if runner.run(is_block, check=False, timeout=60).exit_code != 0:
        raise MapFailed(f"{node} is not a block device after `dmsetup create {name}` "
                        "(is udev running and able to create /dev/mapper nodes?)",
                        host=runner.host)


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
           handlers: Mapping[str, Callable[[T], bool]] | None = None) -> Unwound[T]:
    """Undo ``made`` (in the order it was made) newest first on one host, each with
    ``undo_with_retry``; one that fails does not stop the others.

    The one walk of the tool's undos: a run's teardown, ``init-standby``'s and
    ``recover``'s journals. ``give_up`` turns an error into a reason to try no more (a
    lost connection: each further undo would only wait for its own timeout); the ones
    left are failed with that reason. ``timed(item, wall, seconds)`` sees each attempt.
    ``handlers``: an undo whose first word is a key is done by that function instead of
    being run (True: undone; False: nothing was left to undo; raises when it fails).
    """
    out: Unwound[T] = Unwound()
    stop = ""
    for item in reversed(made):
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
                                         probe_first=probe_first)
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
