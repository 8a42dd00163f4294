"""Undoing one resource: bounded retries while a probe says it is still there.

Shared by a run's teardown, ``recover`` and ``init-standby``, so every undo in the tool
meets a busy device the same way.
"""

from __future__ import annotations

import time

from .errors import CommandFailed, MapFailed
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
