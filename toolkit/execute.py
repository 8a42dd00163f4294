"""Execute a plan: each undo registered the moment its resource exists.

The executor walks the plan's steps in order. Before a step creates something
it is written to that host's journal; right after, its undo is registered.
Whatever happens next (an error, a signal, a failed guard), teardown undoes
every registered resource, newest first on each host, shielded from further
signals. The two hosts are torn down side by side: nothing on one depends on
the other once the copies have stopped, and the source's snapshot goes without
waiting for the peer's unmount to flush.
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from . import signals
from .config import Config
from .errors import (
    CommandFailed,
    CommandTimedOut,
    ConnectionLost,
    FstabError,
    MapFailed,
    ParseError,
    PeerFull,
    SnapshotInvalid,
    SourceGuardFailed,
    TargetGuardFailed,
    TeardownIncomplete,
    ToolkitError,
    UnsafeName,
    UsageError,
)
from .facts.findmnt import findmnt_argv, mounts_from_result, top_mount
from .facts.fstab import GuestFilesystem, guest_position, parse_fstab, resolve_fstab
from .facts.lvm import lvs_argv, parse_lvs
from .journal import Journal, replace_file_argv
from .lock import domain_lock
from .names import path_under
from .plan import PEER, SOURCE, FilesystemPlan, Plan, Step, transfer_argv
from .report import DomainReport, FilesystemReport, SnapshotReport
from .rsync import (
    inode_exhaustion,
    inodes_argv,
    parse_inodes,
    parse_progress,
    parse_stats,
    rsync_outcome,
)
from .runners import CommandResult, Runner
from .status import marker_path

FAILPOINT_ENV = "DOMU_BACKUP_FAILPOINT"

PHASE_OF = {
    (SOURCE, "lock"): "preflight", (SOURCE, "snapshot"): "snapshot", (SOURCE, "map"): "map",
    (SOURCE, "mkdir"): "mount", (SOURCE, "mount"): "mount", (SOURCE, "fstab"): "mount",
    (PEER, "alias"): "peer", (PEER, "map"): "peer", (PEER, "mkdir"): "peer",
    (PEER, "mount"): "peer", (SOURCE, "check"): "guards", (PEER, "check"): "guards",
    (PEER, "marker"): "marker", (SOURCE, "rsync"): "rsync",
    (SOURCE, "lvmap"): "map", (PEER, "lvmap"): "peer",
    (SOURCE, "bootread"): "boot", (PEER, "bootwrite"): "boot",
}


# Failpoints are a test hook: honoured only on a host where the rehearsal lab put this
# file (root's, written at sandbox.up). A stray DOMU_BACKUP_FAILPOINT in a crontab or a
# unit file on a production Dom0 is ignored, with a line saying so.
TEST_HOOKS_FILE = "/etc/domu-backup/test-hooks"
FAILPOINT_ACTIONS = frozenset({"lock", "snapshot", "map", "mkdir", "mount", "check", "fstab",
                               "alias", "lvmap", "marker", "bootread", "bootwrite", "rsync"})
FAILPOINT_WHATS = ("raise", "sigterm", "sigkill", "sigint", "sighup")


@dataclass(frozen=True)
class Failpoint:
    """``DOMU_BACKUP_FAILPOINT=when:action[@n]:what`` (e.g. ``after:mount@2:sigkill``)."""

    when: str  # before | after
    action: str
    index: int  # 1-based occurrence of that action, 0 = every
    what: str  # raise | sigterm | sigkill | sigint | sighup | sleep=SECONDS

    @classmethod
    def from_env(cls, log: Callable[[str], None] = lambda m: None) -> Failpoint | None:
        raw = os.environ.get(FAILPOINT_ENV, "").strip()
        if not raw:
            return None
        if not os.path.isfile(TEST_HOOKS_FILE):
            log(f"{FAILPOINT_ENV} is set but this host has no {TEST_HOOKS_FILE} (test hooks "
                "are for the rehearsal lab): ignored")
            return None
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: str) -> Failpoint:
        """A failpoint from its text; UsageError (exit 4) naming what is wrong."""
        def bad(why: str) -> UsageError:
            return UsageError(f"{FAILPOINT_ENV}={raw!r}: {why} (expected when:action[@n]:what, "
                              "e.g. after:mount@2:sigkill)")

        parts = raw.split(":", 2)
        if len(parts) != 3:
            raise bad("three parts separated by ':'")
        when, action, what = parts
        index = 0
        if "@" in action:
            action, n = action.split("@", 1)
            if not n.isdigit() or int(n) < 1:
                raise bad(f"the occurrence {n!r} is not a whole number from 1")
            index = int(n)
        if when not in ("before", "after"):
            raise bad(f"'when' must be before or after, got {when!r}")
        if action not in FAILPOINT_ACTIONS:
            raise bad(f"unknown action {action!r} ({', '.join(sorted(FAILPOINT_ACTIONS))})")
        if what.startswith("sleep="):
            try:
                seconds = float(what.removeprefix("sleep="))
            except ValueError:
                raise bad(f"sleep needs seconds, got {what!r}") from None
            if not 0 <= seconds <= 3600:
                raise bad("sleep is 0 to 3600 seconds")
        elif what not in FAILPOINT_WHATS:
            raise bad(f"unknown effect {what!r} ({', '.join(FAILPOINT_WHATS)} or sleep=N)")
        return cls(when, action, index, what)

    def fire(self) -> None:
        import signal as sig

        if self.what == "raise":
            raise ToolkitError(f"failpoint {self.when}:{self.action} raised")
        if self.what.startswith("sleep="):
            time.sleep(float(self.what.split("=", 1)[1]))
            return
        signum = {"sigterm": sig.SIGTERM, "sigkill": sig.SIGKILL, "sigint": sig.SIGINT,
                  "sighup": sig.SIGHUP}.get(self.what)
        if signum is None:
            raise ToolkitError(f"failpoint action {self.what!r} unknown")
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises; SIGKILL never returns


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


def ensure_dm_node(runner: Runner, node: str) -> None:
    """The /dev/mapper node of a map just made is a block device before anything uses it.

    Where no udev makes the node (or it is late, or removed it), ``dmsetup mknodes`` makes
    it; writing to a missing node would otherwise create a regular file in /dev.
    """
    if runner.run(["test", "-b", node], check=False, timeout=60).exit_code == 0:
        return
    name = node.rsplit("/", 1)[-1]
    runner.run(["dmsetup", "mknodes", name], check=False, timeout=60)
    if runner.run(["test", "-b", node], check=False, timeout=60).exit_code != 0:
        raise MapFailed(f"{node} is not a block device after `dmsetup create {name}` "
                        "(is udev running and able to create /dev/mapper nodes?)",
                        host=runner.host)


class Executor:
    """Runs one domain's plan with a source and a peer runner."""

    def __init__(
        self,
        plan: Plan,
        config: Config,
        source: Runner,
        peer: Runner,
        report: DomainReport,
        *,
        allow_mass_delete: bool = False,
        on_progress: Callable[[str, str], None] | None = None,
        log: Callable[[str], None] | None = None,
        lock_held: bool = False,
    ) -> None:
        self.lock_held = lock_held
        self.plan = plan
        self.config = config
        self.source = source
        self.peer = peer
        self.report = report
        self.allow_mass_delete = allow_mass_delete
        self.on_progress = on_progress or (lambda fs, line: None)
        self.log = log or (lambda msg: None)
        self.failpoint = Failpoint.from_env(self.log)
        self._peer_lost = False
        # id(step) -> its occurrence among the plan's steps of its action (a failpoint's @n),
        # fixed by plan order, so copies side by side do not race for their numbers.
        self._nth: dict[int, int] = {}
        counts: dict[str, int] = {}
        for s in plan.steps:
            counts[s.action] = counts.get(s.action, 0) + 1
            self._nth[id(s)] = counts[s.action]
        d = config.defaults
        self.journals = {
            SOURCE: Journal(source, d.state_dir, plan.domain, plan.run_id),
            PEER: Journal(peer, d.state_dir, plan.domain, plan.run_id),
        }
        self.guest_paths: dict[str, str] = {
            f.name: f.guest_path for f in plan.filesystems if f.guest_path}
        self._made: list[Step] = []  # steps whose undo teardown runs, in creation order
        self._boot: dict[str, str] = {}  # boot area bytes read, by range, until written
        self._snapshot_peak: dict[str, float] = {}
        self._snapshot_invalid: set[str] = set()
        for snap in plan.snapshots:
            self.report.snapshots.append(SnapshotReport(snap.name, snap.origin))
        for f in plan.filesystems:
            self.report.filesystems.append(FilesystemReport(f.name, f.guest_path, f.fstype))

    def runner(self, host: str) -> Runner:
        return self.source if host == SOURCE else self.peer

    # -- the walk --------------------------------------------------------

    def run(self) -> None:
        """Execute every step; teardown always runs. Raises the first error."""
        stack = ExitStack()
        body_error: BaseException | None = None
        try:
            steps = list(self.plan.steps)
            i = 0
            while i < len(steps):
                step = steps[i]
                copies = _copy_run(steps, i)
                if len(copies) > 1 and self.config.defaults.copy_jobs > 1:
                    start = time.monotonic()
                    try:
                        SideBySide(self, copies, stack).run()
                    finally:  # a failed copy's time is the rsync phase's too
                        self.report.add_phase("rsync", time.monotonic() - start)
                    i += len(copies)
                    continue
                start, wall = time.monotonic(), time.time()
                try:
                    self._fire("before", step)
                    getattr(self, f"_do_{step.action}")(step, stack)
                    self._fire("after", step)
                finally:  # the step that fails is timed too, once
                    elapsed = time.monotonic() - start
                    self.report.add_phase(PHASE_OF.get((step.host, step.action), step.action),
                                          elapsed)
                    self.report.add_step(step.host, step.action, step.resource or step.fs,
                                         wall, elapsed)
                i += 1
        except ToolkitError as exc:
            body_error = exc
            # A step that failed on an overflowed snapshot (I/O errors in kpartx,
            # mount or rsync) is reported as what it is: the snapshot's fault.
            invalid = self._invalid_snapshot_cause()
            if invalid is not None and not isinstance(exc, SnapshotInvalid):
                raise invalid from exc
            raise
        except BaseException as exc:
            body_error = exc
            raise
        finally:
            start = time.monotonic()
            with signals.shielded():
                self._teardown()
                stack.close()  # the domain lock (when taken here) goes last
            self.report.add_phase("teardown", time.monotonic() - start)
            pending = signals.pending_signal()
            if self.report.teardown_errors and body_error is None:
                raise TeardownIncomplete("; ".join(self.report.teardown_errors))
            if pending is not None and body_error is None:
                from .errors import Interrupted

                raise Interrupted(pending)

    def _fire(self, when: str, step: Step) -> None:
        fp = self.failpoint
        if fp is None or fp.when != when or fp.action != step.action:
            return
        count = self._nth[id(step)]
        if fp.index in (0, count):
            self.log(f"failpoint {fp.when}:{fp.action}@{count}:{fp.what}")
            fp.fire()

    # -- generic resource steps ----------------------------------------

    def _create(self, step: Step, stack: ExitStack) -> CommandResult:
        runner = self.runner(step.host)
        timeout = self.config.ssh.command_timeout
        if step.undo:
            # The journal entry and the command go in one round trip; the entry is on
            # disk before the command starts (the wrapper runs it only then).
            result = self.journals[step.host].run_recorded(
                step.action, step.resource, step.undo, step.exists, step.argv, timeout=timeout)
            # Registered even if the command failed: it may have half-succeeded (kpartx
            # maps some partitions, lvcreate leaves an LV behind), and the undo's
            # exists-probe sorts that out.
            self._made.append(step)
        else:
            result = runner.run(step.argv, timeout=timeout, check=False)
        if result.exit_code != 0:
            raise _error_for(step, result)
        if step.action in DM_NODE_ACTIONS:
            ensure_dm_node(runner, step.resource)
        return result

    def _teardown(self) -> None:
        """Undo what was made, newest first per host: the peer on a thread, the source here.

        A host's journal is removed once everything on it is undone, and kept for
        recover otherwise.
        """
        peer = threading.Thread(target=self._teardown_host, args=(PEER,), name="teardown-peer",
                                daemon=True)
        peer.start()
        self._teardown_host(SOURCE)
        peer.join()

    def _teardown_host(self, host: str) -> None:
        clean = True
        try:
            for step in reversed([s for s in self._made if s.host == host]):
                clean = self._undo(step) and clean
            if clean:
                self.journals[host].remove()
        except ToolkitError as exc:
            self.report.teardown_errors.append(f"journal {self.journals[host].path}: {exc}")
        except BaseException as exc:  # a bug must not end the other host's teardown
            self.report.teardown_errors.append(f"[{self.runner(host).host}] teardown stopped: "
                                               f"{type(exc).__name__}: {exc}")

    def _undo(self, step: Step) -> bool:
        """Undo one step's resource; False (and a teardown error) if it may still exist."""
        runner = self.runner(step.host)
        if step.host == PEER and self._peer_lost:
            # R17: once the peer is gone, each further undo there would only wait
            # for its own timeout; what is left is recorded in the peer's journal.
            self.report.teardown_errors.append(
                f"[{runner.host}] {step.action} {step.resource}: not undone, the connection to "
                "the peer is lost (state there unknown: run recover)")
            return False
        start, wall = time.monotonic(), time.time()
        try:
            undo_with_retry(runner, step.undo, step.exists, self.config.ssh.command_timeout,
                            probe_first=False)
            return True
        except ToolkitError as exc:
            if step.host == PEER and isinstance(exc, ConnectionLost | CommandTimedOut):
                self._peer_lost = True
            self.report.teardown_errors.append(f"[{runner.host}] {step.action} {step.resource}: "
                                               f"{exc}")
            return False
        finally:
            self.report.add_step(step.host, f"undo {step.action}", step.resource, wall,
                                 time.monotonic() - start)

    def _do_lock(self, step: Step, stack: ExitStack) -> None:
        if self.lock_held:
            return  # taken by the caller, before recovering earlier runs
        stack.enter_context(domain_lock(self.config.defaults.lock_dir, self.plan.domain))

    def _do_snapshot(self, step: Step, stack: ExitStack) -> None:
        self._create(step, stack)
        self._check_snapshots(final=False)

    def _do_map(self, step: Step, stack: ExitStack) -> None:
        self._create(step, stack)

    def _do_alias(self, step: Step, stack: ExitStack) -> None:
        self._create(step, stack)

    def _do_lvmap(self, step: Step, stack: ExitStack) -> None:
        self._create(step, stack)

    def _do_mkdir(self, step: Step, stack: ExitStack) -> None:
        if not step.undo:
            self.runner(step.host).run(step.argv, timeout=60)
            return
        self._prove_own_path(step)
        self._create(step, stack)

    def _do_bootread(self, step: Step, stack: ExitStack) -> None:
        """A byte range of the snapshot's boot area, kept for the write that follows."""
        res = self.runner(step.host).run(step.argv, check=False,
                                         timeout=self.config.ssh.command_timeout)
        if res.exit_code != 0:
            raise _error_for(step, res)
        self._boot[step.resource] = res.stdout

    def _do_bootwrite(self, step: Step, stack: ExitStack) -> None:
        """The same range of the standby, written with what the read step got."""
        data = self._boot.pop(step.resource)
        res = self.runner(step.host).run(step.argv, check=False, input=data,
                                         timeout=self.config.ssh.command_timeout)
        if res.exit_code != 0:
            raise _error_for(step, res)

    def _do_mount(self, step: Step, stack: ExitStack) -> None:
        self._prove_own_path(step)
        self._create(step, stack)

    def _run_dir(self, host: str) -> tuple[str, str]:
        d = self.config.defaults
        prefix = d.source_prefix if host == SOURCE else d.target_prefix
        return prefix, posixpath.join(prefix, f"{self.plan.domain}.{self.plan.run_id}")

    def _prove_own_path(self, step: Step) -> None:
        """R20: a directory or mount point is this run's own, below its run directory.

        Checked again here, on the path the command will get, whatever built the plan.
        """
        prefix, run_dir = self._run_dir(step.host)
        target = step.argv[-1]
        if target != step.resource:
            raise UnsafeName(f"{step.action} {target!r} is not the step's own resource "
                             f"{step.resource!r}", host=self.runner(step.host).host)
        if step.action == "mkdir" and target == run_dir:
            path_under(prefix, target, "run directory")
        else:
            path_under(run_dir, target, f"{step.action} target")

    # -- guest fstab -----------------------------------------------------

    def _do_fstab(self, step: Step, stack: ExitStack) -> None:
        fss = self.plan.filesystems
        overrides = self.config.domain(self.plan.domain).mounts
        if all(f.name in overrides for f in fss):
            self.guest_paths = dict(overrides)
            self._apply_guest_paths()
            return
        texts: list[tuple[FilesystemPlan, str]] = []
        for f in fss:
            path = posixpath.join(f.source_mount, "etc", "fstab")
            text = self._read_guest_file(f, path)
            if text is not None:
                texts.append((f, text))
        if not texts:
            found = ", ".join(f"{f.name} ({f.fstype} UUID={f.uuid} label={f.label})" for f in fss)
            raise FstabError(f"no /etc/fstab found on any filesystem of {self.plan.domain} "
                             f"(found: {found}); set [domains.{self.plan.domain}.mounts] in the "
                             "config", host=self.plan.source_host)
        root_fs, text = texts[0]
        entries, ignored = parse_fstab(text)
        guest = [GuestFilesystem(f.name, f.disk, *guest_position(f.disk, f.partition),
                                 probe=_probe_of(f),
                                 volume=(f.guest_vg, f.guest_lv) if f.guest_vg and f.guest_lv
                                 else None)
                 for f in fss]
        self.guest_paths = dict(resolve_fstab(entries, guest, overrides))
        if root_fs.name not in self.guest_paths:
            self.guest_paths[root_fs.name] = "/"
        self._apply_guest_paths()
        self.log("guest paths: " + ", ".join(f"{k}={v}" for k, v in self.guest_paths.items()))

    def _read_guest_file(self, f: FilesystemPlan, path: str) -> str | None:
        # R5: a guest symlink (etc -> /, fstab -> /etc/shadow on the host) must
        # not make us read a host file: the canonical path must equal the path.
        res = self.source.run(["readlink", "-e", "--", path], check=False, timeout=30)
        if res.exit_code != 0:
            # Missing, or a guest symlink to something this host lacks (etc -> /):
            # only a path free of symlinks is "no fstab here".
            res = self.source.run(["readlink", "-m", "--", path], check=False, timeout=30)
            if res.exit_code != 0 or res.stdout.strip() == path:
                return None
        if res.stdout.strip() != path:
            raise FstabError(f"{path} on {f.name} is a symlink (to {res.stdout.strip()!r}); "
                             "refusing to follow guest symlinks", host=self.plan.source_host)
        return self.source.run(["cat", "--", path], timeout=30).stdout

    def _apply_guest_paths(self) -> None:
        for fr in self.report.filesystems:
            fr.guest_path = self.guest_paths.get(fr.name, fr.guest_path)

    # -- guards ----------------------------------------------------------

    def _do_check(self, step: Step, stack: ExitStack) -> None:
        f = next(x for x in self.plan.filesystems if x.name == step.fs)
        if step.host == SOURCE:
            self._prove_mount(self.source, f.source_mount, f.source_device, f.fstype,
                              SourceGuardFailed)
            res = self.source.run(["find", f.source_mount, "-xdev", "-mindepth", "1",
                                   "-maxdepth", "1", "-not", "-name", "lost+found", "-print",
                                   "-quit"], timeout=120)
            if not res.stdout.strip():
                raise SourceGuardFailed(
                    f"{f.source_mount} ({f.name}) is empty: refusing to mirror an empty source "
                    "onto the standby", host=self.plan.source_host)
        else:
            self._prove_mount(self.peer, f.target_mount, f.target_device, f.fstype,
                              TargetGuardFailed)

    def _prove_mount(self, runner: Runner, mountpoint: str, device: str, fstype: str,
                     error: type[ToolkitError]) -> None:
        res = runner.run(findmnt_argv(mountpoint, device=True), check=False, timeout=60)
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
        stat = runner.run(["stat", "-L", "--format", "%t:%T", device], check=False, timeout=60)
        if stat.exit_code != 0:
            raise error(f"expected device {device} does not exist", host=runner.host)
        major, minor = (int(x, 16) for x in stat.stdout.strip().split(":"))
        if fs.majmin != f"{major}:{minor}":
            raise error(f"{mountpoint} is mounted from {fs.source} "
                        f"({fs.majmin or 'no device number'}), not from {device} "
                        f"({major}:{minor})",
                        host=runner.host)

    # -- standby marker -------------------------------------------------

    def marker_path(self) -> str:
        return marker_path(self.config, self.plan.domain)

    def _do_marker(self, step: Step, stack: ExitStack) -> None:
        state = step.argv[-1]
        now = time.time()
        last_success: float | None
        last_run: str | None
        if state == "clean":
            last_success, last_run = now, self.plan.run_id
        else:
            # Only a dirty marker keeps what the last clean one said.
            previous = read_marker(self.peer, self.marker_path())
            last_success = previous.get("last_success")
            last_run = previous.get("last_success_run_id")
        marker = {
            "domain": self.plan.domain,
            "state": state,
            "run_id": self.plan.run_id,
            "source_host": self.plan.source_host,
            "updated": now,
            "last_success": last_success,
            "last_success_run_id": last_run,
        }
        write_marker(self.peer, self.marker_path(), marker)

    # -- the copy --------------------------------------------------------

    def _do_rsync(self, step: Step, stack: ExitStack,
                  on_start: Callable[[object], None] | None = None) -> None:
        f = next(x for x in self.plan.filesystems if x.name == step.fs)
        fr = next(x for x in self.report.filesystems if x.name == f.name)
        d = self.config.defaults
        if not d.copy_unlisted and f.name not in self.guest_paths:
            fr.outcome = "skipped"
            self.log(f"{f.name}: not named by the guest fstab nor an override; skipped "
                     "(copy_unlisted = false)")
            return
        argv = transfer_argv(self.config, self.plan.domain, f, self.plan.peer_address,
                             self.plan.peer_port, self.guest_paths.get(f.name),
                             allow_mass_delete=self.allow_mass_delete)
        self.log(f"rsync {f.name}: {' '.join(argv[:3])} ... {argv[-2]} {argv[-1]}")
        start = time.monotonic()
        watch = SnapshotWatch(self, interval=2.0)
        with watch:
            stream = getattr(self.source, "stream", None)
            if stream is not None:
                def started(proc: object) -> None:
                    watch.attach(proc)
                    if on_start is not None:
                        on_start(proc)

                result = stream(argv, lambda line: self._progress(f.name, line),
                                on_start=started)
            else:
                result = self.source.run(argv, check=False, timeout=None)
        fr.duration = round(time.monotonic() - start, 3)
        stats = parse_stats(result.stdout)
        fr.files, fr.files_transferred = stats.files, stats.files_transferred
        fr.files_deleted, fr.total_size = stats.files_deleted, stats.total_size
        fr.transferred_size, fr.bytes_sent = stats.transferred_size, stats.bytes_sent
        fr.bytes_received = stats.bytes_received
        try:
            self._check_snapshots(final=True)
        except SnapshotInvalid:
            fr.outcome = "failed"  # what it read may be torn: not a copy
            raise
        if watch.error is not None:
            fr.outcome = "failed"
            raise watch.error
        err = rsync_outcome(result.exit_code, result.stderr,
                            allow_vanished=d.allow_vanished, host=self.plan.source_host)
        if isinstance(err, PeerFull):
            err = self._out_of_inodes(f) or err
        if err is not None:
            fr.outcome = "failed"
            raise err
        fr.outcome = "copied"

    def _out_of_inodes(self, f: FilesystemPlan) -> PeerFull | None:
        """A full standby that ran out of inodes, not space (statvfs on both mounts)."""
        try:
            theirs = self.peer.run(inodes_argv(f.target_mount), check=False, timeout=60)
            ours = self.source.run(inodes_argv(f.source_mount), check=False, timeout=60)
        except ToolkitError:
            return None
        return inode_exhaustion(f.name, parse_inodes(theirs.stdout) if theirs.exit_code == 0
                                else None, parse_inodes(ours.stdout) if ours.exit_code == 0
                                else None, host=self.plan.peer_host)

    def _progress(self, fs: str, line: str) -> None:
        if parse_progress(line) is not None:
            self.on_progress(fs, line)

    # -- snapshot health -------------------------------------------------

    def _invalid_snapshot_cause(self) -> SnapshotInvalid | None:
        if not any(s.action == "snapshot" for s in self.plan.steps):
            return None
        try:
            self._check_snapshots(final=True)
        except SnapshotInvalid as exc:
            return exc
        except ToolkitError:
            return None
        return None

    def _check_snapshots(self, *, final: bool) -> None:
        """Record fill and validity; an invalid snapshot fails the run (R3)."""
        names = [f"{s.vg}/{s.name}" for s in self.plan.snapshots]
        res = self.source.run(lvs_argv(*names), check=False, timeout=60)
        if res.exit_code != 0:
            return  # not all created yet (checked after each snapshot step)
        for lv in parse_lvs(res.stdout):
            rep = next((r for r in self.report.snapshots if r.name == lv.name), None)
            if rep is None:
                continue
            rep.size_bytes = lv.size_bytes
            if lv.snap_percent is not None:
                rep.fill_percent = max(rep.fill_percent or 0.0, lv.snap_percent)
            if lv.snapshot_invalid:
                rep.invalid = True
                raise SnapshotInvalid(
                    f"snapshot {lv.vg}/{lv.name} overflowed and is invalid: the copy is not "
                    "consistent and the standby stays marked dirty; raise snapshot_size",
                    host=self.plan.source_host)


def _copy_run(steps: list[Step], i: int) -> list[Step]:
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

    def __init__(self, executor: Executor, steps: list[Step], stack: ExitStack) -> None:
        self.ex = executor
        self.steps = steps
        self.stack = stack
        self.jobs = min(executor.config.defaults.copy_jobs, len(steps))
        self._lock = threading.Lock()
        self._todo = list(steps)
        self._procs: list[object] = []
        self._stop = threading.Event()
        self._failure: BaseException | None = None  # the first error, not caused by a stop

    def run(self) -> None:
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
            _terminate(proc)

    def _halt(self) -> None:
        """Stop every copy: no new one starts, running rsyncs are terminated (then killed)."""
        with self._lock:
            self._stop.set()
            procs = list(self._procs)
        for proc in procs:
            _terminate(proc)
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
            fr = next(x for x in ex.report.filesystems if x.name == step.fs)
            start, wall = time.monotonic(), time.time()
            try:
                ex._fire("before", step)
                if self._stop.is_set():
                    return  # stopped while it was about to start: never ran
                ex._do_rsync(step, self.stack, on_start=self._started)
                ex._fire("after", step)
            except BaseException as exc:  # handed to the main thread
                with self._lock:
                    first = not self._stop.is_set()
                    if first:
                        self._failure = exc
                        self._stop.set()
                if first:
                    self._halt()
                else:
                    fr.outcome = "stopped"  # terminated because the run is stopping
                return
            finally:
                ex.report.add_step(step.host, step.action, step.fs, wall,
                                   time.monotonic() - start)


def _terminate(proc: object) -> None:
    try:
        proc.terminate()  # type: ignore[attr-defined]
    except OSError:
        pass


class SnapshotWatch:
    """Polls snapshot fill during rsync; extends or aborts at the threshold."""

    def __init__(self, executor: Executor, interval: float) -> None:
        self.executor = executor
        self.interval = interval
        self.error: ToolkitError | None = None
        self._stop = threading.Event()
        self._proc: object | None = None  # the rsync whose snapshot this watches
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def attach(self, proc: object) -> None:
        self._proc = proc

    def __enter__(self) -> SnapshotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _abort(self, error: ToolkitError) -> None:
        self.error = error
        if self._proc is not None:
            _terminate(self._proc)

    def _loop(self) -> None:
        ex = self.executor
        d = ex.config.defaults
        while not self._stop.wait(self.interval):
            names = [f"{s.vg}/{s.name}" for s in ex.plan.snapshots]
            try:
                res = ex.source.run(lvs_argv(*names), check=False, timeout=60)
                lvs = parse_lvs(res.stdout) if res.exit_code == 0 else []
            except ToolkitError:
                continue
            for lv in lvs:
                rep = next((r for r in ex.report.snapshots if r.name == lv.name), None)
                if rep is not None and lv.snap_percent is not None:
                    rep.fill_percent = max(rep.fill_percent or 0.0, lv.snap_percent)
                if lv.snapshot_invalid:
                    if rep is not None:
                        rep.invalid = True
                    self._abort(SnapshotInvalid(
                        f"snapshot {lv.vg}/{lv.name} overflowed during the copy; rsync stopped, "
                        "the standby stays marked dirty", host=ex.plan.source_host))
                    return
                if lv.snap_percent is not None and lv.snap_percent >= d.snapshot_max_fill:
                    if d.snapshot_extend:
                        ext = ex.source.run(["lvextend", "-L", f"+{d.snapshot_extend}",
                                             f"{lv.vg}/{lv.name}"], check=False, timeout=120)
                        if ext.exit_code == 0:
                            ex.log(f"extended {lv.vg}/{lv.name} by {d.snapshot_extend}")
                            continue
                    self._abort(SnapshotInvalid(
                        f"snapshot {lv.vg}/{lv.name} is {lv.snap_percent:.1f}% full (limit "
                        f"{d.snapshot_max_fill}%); copy stopped before it overflowed",
                        host=ex.plan.source_host))
                    return


def _probe_of(f: FilesystemPlan):  # FilesystemProbe
    from .facts.blkid import FilesystemProbe

    return FilesystemProbe(type=f.fstype, uuid=f.uuid, label=f.label, usage="filesystem",
                           partuuid=f.partuuid, version=None)


def _error_for(step: Step, result: CommandResult) -> ToolkitError:
    from .errors import MapFailed, MountRefused, SnapshotFailed

    cls = {"snapshot": SnapshotFailed, "map": MapFailed, "alias": MapFailed, "lvmap": MapFailed,
           "mount": MountRefused}.get(step.action)
    if cls is None:
        return CommandFailed(result)
    tail = " | ".join(result.stderr.strip().splitlines()[-3:])
    return cls(f"{step.action} failed: `{' '.join(result.argv)}` exited {result.exit_code}: {tail}",
               host=result.host)


def read_marker(runner: Runner, path: str) -> dict:
    res = runner.run(["cat", "--", path], check=False, timeout=30)
    if res.exit_code != 0:
        return {}
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def write_marker(runner: Runner, path: str, marker: dict) -> None:
    """Replace the marker atomically and durably, in one command (one round trip)."""
    runner.run(replace_file_argv(path), input=json.dumps(marker, indent=2) + "\n", timeout=30)
