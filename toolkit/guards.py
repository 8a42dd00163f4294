"""The guards a run proves on each host before anything is copied (R5, R8, R20).

Each proof reads the state the kernel reports (findmnt, stat, find) and raises the
role's guard error naming the host and what is wrong; nothing here changes a host.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import (
    CommandFailed,
    ParseError,
    SourceGuardFailed,
    StandbyGuardFailed,
    ToolkitError,
    UnsafeName,
)
from .facts.findmnt import mounts_from_result, top_mount
from .names import path_under
from .plan import SOURCE, FilesystemPlan, Step
from .runners import CommandResult, Runner


def prove_own_path(step: Step, prefix: str, run_dir: str, host: str) -> None:
    """R20: a directory or mount point is the run's own, below its run directory.

    Checked again on the path the command will get, whatever built the plan.
    """
    target = step.argv[-1]
    if target != step.resource:
        raise UnsafeName(f"{step.action} {target!r} is not the step's own resource "
                         f"{step.resource!r}", host=host)
    if step.action == "mkdir" and target == run_dir:
        path_under(prefix, target, "run directory")
    else:
        path_under(run_dir, target, f"{step.action} target")


def prove_mount(runner: Runner, probes: tuple[tuple[str, ...], ...], mountpoint: str,
                device: str, fstype: str, error: type[ToolkitError],
                results: Sequence[CommandResult] = ()) -> None:
    """The mount point holds ``fstype`` mounted from ``device`` itself (by device number).

    ``probes`` are the plan's: the findmnt of the mount point, then the stat of the device;
    ``results`` their results when they ran already (``run_reads``), else they run here.
    """
    findmnt, stat_device = probes[0], probes[1]
    res = results[0] if results else runner.run(findmnt, check=False, timeout=60)
    try:
        fs = top_mount(mounts_from_result(res), mountpoint)
    except (CommandFailed, ParseError) as exc:
        raise error(f"cannot read findmnt output for {mountpoint}: {exc}",
                    host=runner.host) from exc
    if fs is None:
        raise error(f"{mountpoint} is not a mountpoint: the mount of {device} did not "
                    "happen; nothing was copied", host=runner.host)
    if fs.fstype != fstype:
        raise error(f"{mountpoint} holds {fs.fstype}, expected {fstype}",
                    host=runner.host)
    stat = results[1] if results else runner.run(stat_device, check=False, timeout=60)
    if stat.exit_code != 0:
        raise error(f"expected device {device} does not exist", host=runner.host)
    major, minor = (int(x, 16) for x in stat.stdout.strip().split(":"))
    if fs.majmin != f"{major}:{minor}":
        raise error(f"{mountpoint} is mounted from {fs.source} "
                    f"({fs.majmin or 'no device number'}), not from {device} "
                    f"({major}:{minor})",
                    host=runner.host)


def prove_not_empty(runner: Runner, probe: tuple[str, ...], f: FilesystemPlan,
                    result: CommandResult | None = None) -> None:
    """The source's mount holds something besides lost+found (``probe`` prints its first
    entry): an empty source is never mirrored onto the standby (``--delete`` would empty
    it)."""
    res = result if result is not None else runner.run(probe, timeout=120)
    if res.exit_code != 0:
        raise CommandFailed(res)
    if not res.stdout.strip():
        raise SourceGuardFailed(
            f"{f.source_mount} ({f.name}) is empty: refusing to mirror an empty source "
            "onto the standby", host=runner.host)


def check_reads(step: Step) -> list[tuple[str, ...]]:
    """What a ``check`` step reads, in order: its findmnt, then its probes."""
    return [tuple(step.argv), *(tuple(p) for p in step.probes)]


def prove_filesystem(step: Step, f: FilesystemPlan, source: Runner, peer: Runner,
                     results: Sequence[CommandResult] = ()) -> None:
    """A ``check`` step: the source's mount is its snapshot and not empty, or the peer's
    mount is its standby. ``results``: those of ``check_reads(step)``, when they ran
    already; else each runs here."""
    if step.role == SOURCE:
        prove_mount(source, (step.argv, step.probes[0]), f.source_mount, f.source_device,
                    f.fstype, SourceGuardFailed, results[:2])
        prove_not_empty(source, step.probes[1], f, results[2] if results else None)
    else:
        prove_mount(peer, (step.argv, step.probes[0]), f.standby_mount, f.standby_device,
                    f.fstype, StandbyGuardFailed, results[:2])
