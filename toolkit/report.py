"""The run report: JSON for machines, a short summary for people."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import safefs

# DomainReport.error of a run refused because another run holds the domain's lock.
LOCK_BUSY = "LockBusy"
VERIFY_OUTCOMES = frozenset({"identical", "differs"})  # verify --against-source, no backup


@dataclass
class FilesystemReport:
    """One planned filesystem's copy: its outcome, rsync's ``--stats`` figures, its duration."""

    name: str
    guest_path: str | None
    fstype: str
    # pending, copied, skipped, failed, stopped (by another's failure); compared
    # (verify --against-source)
    outcome: str = "pending"
    files: int = 0
    files_transferred: int = 0
    files_deleted: int = 0
    total_size: int = 0
    transferred_size: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    duration: float = 0.0
    differences: list[str] = field(default_factory=list)  # --against-source: rsync -i lines


@dataclass
class FilesystemFate:
    """One filesystem seen on a guest disk and what the plan does with it."""

    name: str
    disk: str
    fate: str  # copy, skipped, excluded (skip_filesystems), vanished (the run was refused)
    reason: str = ""
    fstype: str | None = None
    guest_path: str | None = None


def fates_from(fates) -> list[FilesystemFate]:  # the plan's FsFate records
    """The report's copy of the plan's list of every filesystem and its fate."""
    return [FilesystemFate(f.name, f.disk, f.fate, f.reason, f.fstype, f.guest_path)
            for f in fates]


@dataclass
class SnapshotReport:
    """One snapshot of the run: its origin, size and highest fill seen, and whether it
    became invalid."""

    name: str
    origin: str
    size_bytes: int = 0
    fill_percent: float | None = None
    invalid: bool = False


@dataclass
class StepTiming:
    """One step of the run (or its undo): when it started, relative to the run, and for how long."""

    role: str  # source or peer
    action: str  # the plan's action; "undo <action>" in teardown
    resource: str
    started: float  # seconds after DomainReport.started
    seconds: float


@dataclass
class DomainReport:
    """One domain's part of a run: its hosts, outcome and exit code, phase times, filesystems,
    snapshots and steps, and what was skipped or cleaned up."""

    domain: str
    run_id: str = ""
    source_host: str = ""
    peer_host: str = ""
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    # success, skipped, failed, interrupted, dry-run; identical, differs (verify
    # --against-source)
    outcome: str = "pending"
    exit_code: int = 0
    message: str = ""
    error: str = ""
    phases: dict[str, float] = field(default_factory=dict)
    filesystems: list[FilesystemReport] = field(default_factory=list)
    snapshots: list[SnapshotReport] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    teardown_errors: list[str] = field(default_factory=list)
    steps: list[StepTiming] = field(default_factory=list)
    fates: list[FilesystemFate] = field(default_factory=list)  # every filesystem seen
    # Restore points on the peer after this run: the one it took ("" if none), the count
    # kept, the newest, and the run ids of those it removed.
    standby: str = ""  # the state the run left its marker in: dirty, clean ("" untouched)
    restore_point: str = ""
    restore_points: int = 0
    newest_point: str = ""
    points_pruned: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)  # what each hook that ran did
    # freeze = "agent": how long the guest was frozen, or why the snapshot is crash-consistent
    freeze: str = ""

    def add_phase(self, phase: str, seconds: float) -> None:
        """Add ``seconds`` to ``phase`` (a phase may be timed more than once)."""
        self.phases[phase] = round(self.phases.get(phase, 0.0) + seconds, 3)

    def add_step(self, role: str, action: str, resource: str, started_wall: float,
                 seconds: float) -> None:
        """Record a step's timing; ``started_wall`` (time.time()) is kept relative to the start."""
        self.steps.append(StepTiming(role, action, resource,
                                     round(started_wall - self.started, 3), round(seconds, 3)))

    @property
    def duration(self) -> float:
        """Seconds from the start to the end (to now while it runs)."""
        return (self.finished or time.time()) - self.started


@dataclass
class RunReport:
    """One invocation: one or more domains."""

    host: str
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    exit_code: int = 0
    domains: list[DomainReport] = field(default_factory=list)

    def to_json(self) -> str:
        """The whole report as indented JSON (what ``last.json`` holds)."""
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def write_report(report: RunReport, report_dir: str | Path, *,
                 view: safefs.FsView = safefs.REAL, backup: bool = True) -> Path:
    """Write the report as ``last.json`` and per-domain ``<domain>.json``; returns the first.

    The report directory is checked (and made, 0750, when missing) like the lock
    directory: root's, not group- or world-writable, nothing above it others can
    swap. Each JSON file is a new file (O_EXCL, O_NOFOLLOW) renamed over the
    old one; ``history.jsonl`` is appended to with O_NOFOLLOW|O_APPEND and only
    if it is our own regular file with one link. A planted symlink is replaced
    or refused (InsecureFile), never written through.

    A run refused because another holds the domain's lock (LockBusy) never
    replaces ``<domain>.json``: that file stays the report of the run holding
    the lock. The refusal is still ``last.json`` (this invocation) and a line of
    the history. Nor does a ``verify --against-source`` (``backup=False``): it is
    ``last.json`` only, and ``<domain>.json`` and the history stay the backups'.
    """
    d = str(report_dir)
    dir_fd = safefs.open_dir(d, "the report directory", create=True, mode=0o750, view=view)
    try:
        safefs.write_atomic(dir_fd, d, "last.json", report.to_json().encode(), "the report")
        for dom in report.domains if backup else ():
            if dom.error != LOCK_BUSY and dom.outcome not in VERIFY_OUTCOMES:
                safefs.write_atomic(dir_fd, d, f"{dom.domain}.json",
                                    json.dumps(asdict(dom), indent=2).encode(),
                                    "the domain report")
            if dom.outcome != "skipped":
                line = json.dumps({"domain": dom.domain, "run_id": dom.run_id,
                                   "outcome": dom.outcome, "exit_code": dom.exit_code,
                                   "error": dom.error,
                                   "started": dom.started, "finished": dom.finished,
                                   "message": dom.message,
                                   **({"standby": dom.standby} if dom.standby else {})}) + "\n"
                safefs.append(dir_fd, d, "history.jsonl", line.encode(), "the report history",
                              view=view)
    finally:
        os.close(dir_fd)
    return Path(d) / "last.json"


def append_history(report_dir: str | Path, text: str, *,
                   view: safefs.FsView = safefs.REAL) -> None:
    """Append lines to ``history.jsonl`` with write_report's checks (directory and file)."""
    d = str(report_dir)
    dir_fd = safefs.open_dir(d, "the report directory", create=True, mode=0o750, view=view)
    try:
        safefs.append(dir_fd, d, "history.jsonl", text.encode(), "the report history",
                      view=view)
    finally:
        os.close(dir_fd)


def human_size(n: float) -> str:
    """A byte count for people: B, KiB, MiB, GiB or TiB (one decimal above bytes)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


SHOWN_DIFFERENCES = 50  # per filesystem in the summary; the JSON report has them all


def _copy_line(f: FilesystemReport) -> str:
    if f.outcome == "compared":
        shown = [f"    differs: {line}" for line in f.differences[:SHOWN_DIFFERENCES]]
        if len(f.differences) > SHOWN_DIFFERENCES:
            shown.append(f"    ... and {len(f.differences) - SHOWN_DIFFERENCES} more "
                         "(--json lists every one)")
        return "\n".join([f"  {f.name:<8} {f.guest_path or '-':<12} compared "
                          f"{f.files} files by checksum, {len(f.differences)} difference(s), "
                          f"{f.duration:.1f}s", *shown])
    return (f"  {f.name:<8} {f.guest_path or '-':<12} {f.outcome:<8} "
            f"{f.files_transferred} of {f.files} files, "
            f"{human_size(f.transferred_size)} changed, "
            f"{human_size(f.bytes_sent)} sent, {f.files_deleted} deleted, "
            f"{f.duration:.1f}s")


def summary(report: RunReport) -> str:
    """A few lines per domain: outcome, every filesystem of every disk with what happened to it
    (copied, skipped with the reason, excluded by config, vanished, failed), every skipped disk,
    and how long each phase took."""
    lines: list[str] = []
    for d in report.domains:
        head = f"{d.domain}: {d.outcome}"
        if d.exit_code:
            head += f" (exit {d.exit_code})"
        if d.message:
            head += f" - {d.message}"
        lines.append(head)
        if d.outcome in ("skipped",):
            continue
        # Every filesystem of every disk, in disk order, with what happened to it.
        copies = {f.name: f for f in d.filesystems}
        listed: set[str] = set()
        for fate in d.fates:
            listed.add(fate.name)
            if fate.name in copies:
                lines.append(_copy_line(copies[fate.name]))
            elif fate.fate == "copy":
                what = ("would be copied (dry run)" if d.outcome == "dry-run"
                        else "not copied (the run stopped before its copy)")
                lines.append(f"  {fate.name:<8} {fate.guest_path or '-':<12} {what}")
            elif fate.fate == "vanished":
                lines.append(f"  VANISHED {fate.name}: {fate.reason}")
            else:  # skipped, or excluded by skip_filesystems (its reason says so)
                lines.append(f"  skipped {fate.name}: {fate.reason}")
        lines += [_copy_line(f) for f in d.filesystems if f.name not in listed]
        # Every disk and filesystem not copied, with its reason (a skipped data disk is
        # also why the run finished with warnings).
        for skipped in d.skipped:
            if skipped.split(":", 1)[0] not in listed:
                lines.append(f"  skipped {skipped}")
        for f in d.filesystems:
            if f.outcome == "skipped":  # decided at run time, from the guest fstab
                lines.append(f"  skipped {f.name}: neither the guest fstab nor [mounts] names "
                             "it (copy_unlisted = false)")
        for s in d.snapshots:
            fill = "-" if s.fill_percent is None else f"{s.fill_percent:.1f}%"
            lines.append(f"  snapshot {s.name}: {human_size(s.size_bytes)}, peak fill {fill}"
                         + (" INVALID" if s.invalid else ""))
        if d.restore_point:
            lines.append(f"  restore point {d.restore_point} taken on {d.peer_host or 'the peer'}"
                         f" ({d.restore_points} kept"
                         + (f", removed {', '.join(d.points_pruned)}" if d.points_pruned else "")
                         + ")")
        if d.phases:
            lines.append("  phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in d.phases.items()))
        for c in d.cleaned:
            lines.append(f"  cleaned before run: {c}")
        for h in d.hooks:
            lines.append(f"  hook {h}")
        if d.freeze:
            lines.append(f"  freeze: {d.freeze}")
        for e in d.teardown_errors:
            lines.append(f"  TEARDOWN: {e}")
    lines.append(f"exit code {report.exit_code}")
    return "\n".join(lines)
