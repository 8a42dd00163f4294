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

import posixpath
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace

from . import signals
from .config import Config
from .copying import SideBySide, copy_filesystem, copy_run
from .errors import (
    CommandFailed,
    CommandTimedOut,
    ConnectionLost,
    FreezeFailed,
    PreSnapshotFailed,
    SnapshotInvalid,
    StandbyPromoted,
    TeardownIncomplete,
    ToolkitError,
)
from .execute_rows import BATCHED, CHECKS, row_at, run_check_row, run_step_row, step_error
from .failpoint import Failpoint
from .guards import prove_filesystem, prove_own_path
from .guestpaths import guest_paths
from .journal import Journal
from .lock import domain_lock
from .marker import PROMOTED, marker_text, new_marker, promoted_message, read_marker
from .plan import (
    PEER,
    SOURCE,
    FilesystemPlan,
    Plan,
    Step,
    plan_copies,
    render_steps,
)
from .report import DomainReport, FilesystemReport, SnapshotReport
from .runners import CommandResult, Runner
from .snapshot_hooks import (
    HOOK_UNDO,
    THAW_UNDO,
    describe,
    owe_post_snapshot,
    owe_thaw,
    run_snapshot_hook,
)
from .snapshots import check_snapshots, invalid_snapshot_cause
from .standby_xml import standby_definition
from .take_point import take_restore_point
from .undo import DM_NODE_ACTIONS, ensure_dm_node, unwind

PHASE_OF = {
    (SOURCE, "lock"): "preflight", (SOURCE, "snapshot"): "snapshot", (SOURCE, "map"): "map",
    (SOURCE, "mkdir"): "mount", (SOURCE, "mount"): "mount", (SOURCE, "fstab"): "mount",
    (PEER, "alias"): "peer", (PEER, "map"): "peer", (PEER, "mkdir"): "peer",
    (PEER, "mount"): "peer", (SOURCE, "check"): "guards", (PEER, "check"): "guards",
    (PEER, "marker"): "marker", (SOURCE, "rsync"): "rsync",
    (SOURCE, "lvmap"): "map", (PEER, "lvmap"): "peer",
    (SOURCE, "bootread"): "boot", (PEER, "bootwrite"): "boot",
    (SOURCE, "defread"): "definition", (PEER, "defwrite"): "definition",
    (SOURCE, "prehook"): "hooks", (SOURCE, "posthook"): "hooks",
    (SOURCE, "freeze"): "freeze", (SOURCE, "thaw"): "freeze",
    (PEER, "point"): "points", (PEER, "prune"): "points",
}



def _occurrences(plan: Plan) -> dict[int, int]:
    """id(step) -> which occurrence of its action the step is, in plan order (1, 2, ...)."""
    counts: dict[str, int] = {}
    nth = {}
    for s in (*plan.steps, *plan.after):
        counts[s.action] = counts.get(s.action, 0) + 1
        nth[id(s)] = counts[s.action]
    return nth


class Executor:
    """Runs one domain's plan with a source and a peer runner.

    The walk, the journal before each side effect, the undo stack and teardown live
    here; each step's own work is a call to the room it belongs to (guards, guest paths,
    marker, snapshots, the copy).
    """

    def __init__(
        self,
        plan: Plan,
        config: Config,
        source: Runner,
        peer: Runner,
        report: DomainReport,
        *,
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
        self.on_progress = on_progress or (lambda fs, line: None)
        self.log = log or (lambda msg: None)
        self.failpoint = Failpoint.from_env(self.log)
        # id(step) -> its occurrence among the plan's steps of its action (a failpoint's @n),
        # fixed by plan order, so copies side by side do not race for their numbers.
        self._nth = _occurrences(plan)
        defaults = config.defaults
        self.journals = {
            SOURCE: Journal(source, defaults.state_dir, plan.domain, plan.run_id),
            PEER: Journal(peer, defaults.state_dir, plan.domain, plan.run_id),
        }
        self.guest_paths: dict[str, str] = {
            f.name: f.guest_path for f in plan.filesystems if f.guest_path}
        self._stack = ExitStack()  # what a step holds until the run ends (the domain lock)
        self.made: list[Step] = []  # steps whose undo teardown runs, in creation order
        self._boot: dict[str, str] = {}  # boot area bytes read, by range, until written
        self._definition = ""  # the standby definition read, until written
        self._frozen_at: float | None = None  # when the guest's filesystems were frozen
        for snap in plan.snapshots:
            self.report.snapshots.append(SnapshotReport(snap.name, snap.origin))
        for f in plan.filesystems:
            self.report.filesystems.append(FilesystemReport(f.name, f.guest_path, f.fstype))
        # Every action a plan can hold, and what runs it.
        self._actions: dict[str, Callable[[Step], object]] = {
            "lock": self._lock, "snapshot": self._snapshot, "map": self._create,
            "alias": self._create, "lvmap": self._create, "mkdir": self._mkdir,
            "mount": self._mount, "fstab": self._fstab, "check": self._check,
            "bootread": self._bootread, "bootwrite": self._bootwrite,
            "defread": self._defread, "defwrite": self._defwrite,
            "prehook": self._prehook, "posthook": self._posthook,
            "freeze": self._freeze, "thaw": self._thaw,
            "marker": self._marker, "rsync": self.copy,
        }

    def runner(self, role: str) -> Runner:
        """The transport of the plan's ``source`` or ``peer``."""
        return self.source if role == SOURCE else self.peer

    # -- the walk --------------------------------------------------------

    def run(self) -> None:
        """Execute every step; teardown always runs. Raises the first error."""
        body_error: BaseException | None = None
        try:
            i = 0
            # self.plan, not a copy of its steps: the fstab step replaces the plan with its
            # second part (the copies with their guest paths), the same steps in the same order
            while i < len(self.plan.steps):
                step = self.plan.steps[i]
                copies = copy_run(self.plan.steps, i)
                if len(copies) > 1 and self.config.defaults.copy_jobs > 1:
                    start = time.monotonic()
                    try:
                        SideBySide(self, copies).run()
                    finally:  # a failed copy's time is the rsync phase's too
                        self.report.add_phase("rsync", time.monotonic() - start)
                    i += len(copies)
                    continue
                batch = row_at(self, i, BATCHED)
                if len(batch) > 1:
                    run_step_row(self, batch)
                    i += len(batch)
                    continue
                checks = row_at(self, i, CHECKS)
                if len(checks) > 1:
                    run_check_row(self, checks)
                    i += len(checks)
                    continue
                start, wall = time.monotonic(), time.time()
                try:
                    self.fire("before", step)
                    self._actions[step.action](step)
                    self.fire("after", step)
                finally:  # the step that fails is timed too, once
                    self.timed(step, wall, time.monotonic() - start)
                i += 1
        except ToolkitError as exc:
            body_error = exc
            # A step that failed on an overflowed snapshot (I/O errors in kpartx,
            # mount or rsync) is reported as what it is: the snapshot's fault.
            invalid = invalid_snapshot_cause(self.source, self.plan, self.report)
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
            self.report.add_phase("teardown", time.monotonic() - start)
            pending = signals.pending_signal()
            try:
                if (body_error is None and pending is None and not self.report.teardown_errors
                        and self.plan.after):
                    # The standby is clean and unmounted: its restore point, under the lock.
                    start = time.monotonic()
                    try:
                        take_restore_point(self)
                    finally:
                        self.report.add_phase("points", time.monotonic() - start)
            finally:
                with signals.shielded():
                    self._stack.close()  # the domain lock (when taken here) goes last
            if self.report.teardown_errors and body_error is None:
                raise TeardownIncomplete("; ".join(self.report.teardown_errors))
            if pending is not None and body_error is None:
                from .errors import Interrupted

                raise Interrupted(pending)

    def timed(self, step: Step, wall: float, seconds: float) -> None:
        """A step's time, in its phase and in its host's list of steps."""
        self.report.add_phase(PHASE_OF.get((step.role, step.action), step.action), seconds)
        self.report.add_step(step.role, step.action, step.resource or step.fs, wall, seconds)

    def fire(self, when: str, step: Step) -> None:
        """The test failpoint, if one is set for this moment of this step."""
        if self.fires(when, step):
            fp = self.failpoint
            assert fp is not None
            self.log(f"failpoint {fp.when}:{fp.action}@{self._nth[id(step)]}:{fp.what}")
            fp.fire()

    def fires(self, when: str, step: Step) -> bool:
        """Whether the test failpoint is set for this moment of this step."""
        fp = self.failpoint
        return (fp is not None and fp.when == when and fp.action == step.action
                and fp.index in (0, self._nth[id(step)]))

    # -- making a resource, and undoing it -------------------------------

    def _create(self, step: Step) -> CommandResult:
        """Make a step's resource (every such step has an undo), journal entry first."""
        runner = self.runner(step.role)
        # The journal entry and the command go in one round trip; the entry is on disk
        # before the command starts (the wrapper runs it only then).
        result = self.journals[step.role].run_recorded(
            step.action, step.resource, step.undo, step.exists, step.argv,
            timeout=self.config.ssh.command_timeout)
        # Registered even if the command failed: it may have half-succeeded (kpartx maps
        # some partitions, lvcreate leaves an LV behind), and the undo's exists-probe
        # sorts that out.
        self.made.append(step)
        if result.exit_code != 0:
            raise step_error(step, result)
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

    def _teardown_host(self, role: str) -> None:
        runner = self.runner(role)

        def lost(exc: ToolkitError) -> str:
            # R17: once the peer is gone, each further undo there would only wait for its
            # own timeout; what is left is recorded in the peer's journal.
            if role == PEER and isinstance(exc, ConnectionLost | CommandTimedOut):
                return ("not undone, the connection to the peer is lost (state there "
                        "unknown: run recover)")
            return ""

        def timed(step: Step, wall: float, seconds: float) -> None:
            self.report.add_step(step.role, f"undo {step.action}", step.resource, wall, seconds)

        try:
            done = unwind(runner, [s for s in self.made if s.role == role],
                          timeout=self.config.ssh.command_timeout, probe_first=False,
                          give_up=lost, timed=timed,
                          handlers={HOOK_UNDO: self._owed_post_snapshot,
                                    THAW_UNDO: self._owed_thaw},
                          batched=True)
            self.report.teardown_errors += [f"[{runner.host}] {s.action} {s.resource}: {why}"
                                            for s, why in done.failed]
            if done.clean:
                self.journals[role].remove()
        except ToolkitError as exc:
            self.report.teardown_errors.append(f"journal {self.journals[role].path}: {exc}")
        except BaseException as exc:  # a bug must not end the other role's teardown
            self.report.teardown_errors.append(f"[{runner.host}] teardown stopped: "
                                               f"{type(exc).__name__}: {exc}")

    # -- the steps -------------------------------------------------------

    def _lock(self, step: Step) -> None:
        if self.lock_held:
            return  # taken by the caller, before recovering earlier runs
        self._stack.enter_context(domain_lock(self.config.defaults.lock_dir, self.plan.domain))

    def _snapshot(self, step: Step) -> None:
        self._create(step)
        check_snapshots(self.source, self.plan, self.report)

    def _mkdir(self, step: Step) -> None:
        if not step.undo:
            self.runner(step.role).run(step.argv, timeout=60)
            return
        self.prove_own_path(step)
        self._create(step)

    def _mount(self, step: Step) -> None:
        self.prove_own_path(step)
        self._create(step)

    def prove_own_path(self, step: Step) -> None:
        """A directory or mount point the step makes lies under this run's own directory."""
        defaults = self.config.defaults
        prefix = defaults.source_prefix if step.role == SOURCE else defaults.peer_prefix
        run_dir = posixpath.join(prefix, f"{self.plan.domain}.{self.plan.run_id}")
        prove_own_path(step, prefix, run_dir, self.runner(step.role).host)

    def _bootread(self, step: Step) -> None:
        """A byte range of the snapshot's boot area, kept for the write that follows."""
        res = self.runner(step.role).run(step.argv, check=False,
                                         timeout=self.config.ssh.command_timeout)
        if res.exit_code != 0:
            raise step_error(step, res)
        self._boot[step.resource] = res.stdout

    def _bootwrite(self, step: Step) -> None:
        """The same range of the standby, written with what the read step got."""
        data = self._boot.pop(step.resource)
        res = self.runner(step.role).run(step.argv, check=False, input=data,
                                         timeout=self.config.ssh.command_timeout)
        if res.exit_code != 0:
            raise step_error(step, res)

    def _hooks(self):
        return self.config.domain(self.plan.domain).effective_hooks(self.config.defaults)

    def _prehook(self, step: Step) -> None:
        """The flag that owes post_snapshot (journalled, undone by running it), then
        pre_snapshot; its failure stops the run before any snapshot."""
        self._create(replace(step, argv=("touch", "--", step.resource)))
        if not step.argv:
            return
        hooks = self._hooks()
        try:
            res = run_snapshot_hook(self.source, "pre_snapshot", step.argv, self.plan.domain,
                                    self.plan.run_id, hooks.timeout)
        except CommandFailed as exc:  # killed at its timeout
            raise PreSnapshotFailed(f"pre_snapshot `{' '.join(step.argv)}`: {exc}; no "
                                    "snapshot was taken", host=self.source.host) from exc
        line = describe("pre_snapshot", step.argv, res)
        self.report.hooks.append(line)
        self.log(f"hook {line}")
        if res.exit_code != 0:
            raise PreSnapshotFailed(f"{line}; no snapshot was taken", host=self.source.host)

    def _posthook(self, step: Step) -> None:
        """post_snapshot right after the snapshots; its failure is a warning (the flag then
        stays, and teardown tries it once more)."""
        hooks = self._hooks()
        try:
            line = owe_post_snapshot(self.source, step.resource, step.argv, self.plan.domain,
                                     self.plan.run_id, hooks.timeout)
        except ToolkitError as exc:
            line = f"{exc}"
        if line:
            self.report.hooks.append(line)
            self.log(f"hook {line}")

    def _owed_post_snapshot(self, step: Step) -> bool:
        """Teardown's undo of ``prehook``: post_snapshot, if it is still owed."""
        line = owe_post_snapshot(self.source, step.resource, self._hooks().post_snapshot,
                                 self.plan.domain, self.plan.run_id, self._hooks().timeout)
        if line is None:
            return False
        self.report.hooks.append(f"{line} (in teardown)")
        self.log(f"hook {line} (in teardown)")
        return True

    def _freeze(self, step: Step) -> None:
        """The flag that owes a thaw (journalled, undone by thawing), then domfsfreeze. An
        agent that does not answer stops the run (freeze_fallback = "refuse") or leaves
        the snapshot crash-consistent, said in the report."""
        self._create(replace(step, argv=("touch", "--", step.resource)))
        res = self.source.run(step.argv, check=False, timeout=self.config.ssh.command_timeout)
        if res.exit_code == 0:
            self._frozen_at = time.monotonic()
            return
        why = (res.stderr.strip().splitlines() or [f"virsh exited {res.exit_code}"])[-1]
        domain_cfg = self.config.domain(self.plan.domain)
        if domain_cfg.freeze_fallback != "crash-consistent":
            raise FreezeFailed(f"domfsfreeze of {self.plan.domain}: {why}; no snapshot was "
                               "taken (freeze_fallback = \"crash-consistent\" would go on)",
                               host=self.source.host)
        # Nothing was frozen (the agent freezes all or none): no thaw is owed.
        self.source.run(["rm", "-f", "--", step.resource], timeout=60)
        self.report.freeze = f"crash-consistent: the guest agent did not freeze ({why})"
        self.log(f"warning: {self.report.freeze}")

    def _thaw(self, step: Step) -> None:
        """Thaw as soon as the snapshots exist; the time the guest was frozen goes in the
        report. A thaw that fails is tried again by teardown, then by recover."""
        line = owe_thaw(self.source, step.resource, self.config.hypervisor_uri,
                        self.plan.domain, self.config.ssh.command_timeout)
        if self._frozen_at is not None and line is not None:
            ms = (time.monotonic() - self._frozen_at) * 1000
            self.report.freeze = f"frozen {ms:.0f} ms by the guest agent ({line})"
            self.log(f"freeze: {self.report.freeze}")

    def _owed_thaw(self, step: Step) -> bool:
        """Teardown's undo of ``freeze``: the thaw, if it is still owed."""
        line = owe_thaw(self.source, step.resource, self.config.hypervisor_uri,
                        self.plan.domain, self.config.ssh.command_timeout)
        if line is None:
            return False
        self.log(f"freeze: thawed in teardown ({line})")
        if not self.report.freeze:
            self.report.freeze = f"thawed in teardown ({line})"
        return True

    def _defread(self, step: Step) -> None:
        """The source's persistent definition, rewritten onto the standby LVs, kept for the
        write before the clean marker; disks it leaves as the source has them are logged."""
        res = self.runner(step.role).run(step.argv, check=False,
                                         timeout=self.config.ssh.command_timeout)
        if res.exit_code != 0:
            raise step_error(step, res)
        out = standby_definition(res.stdout, dict(self.plan.definition_disks))
        for line in out.kept:
            self.log(f"standby definition: disk {line}")
        self._definition = out.xml

    def _defwrite(self, step: Step) -> None:
        """The standby definition, written atomically beside the marker."""
        res = self.runner(step.role).run(step.argv, check=False, input=self._definition,
                                         timeout=self.config.ssh.command_timeout)
        if res.exit_code != 0:
            raise step_error(step, res)

    def _fstab(self, step: Step) -> None:
        """Name the guest paths, then plan the copies again with their excludes: the
        second part of the plan, logged as the first is printed."""
        self.guest_paths = guest_paths(self.plan, self.config, self.source, self.log)
        for fs_report in self.report.filesystems:
            fs_report.guest_path = self.guest_paths.get(fs_report.name, fs_report.guest_path)
        first, second = self.plan, plan_copies(self.plan, self.config, self.guest_paths)
        self.plan, self._nth = second, _occurrences(second)
        pairs = zip(first.steps, second.steps, strict=True)
        changed = [(n, new) for n, (old, new) in enumerate(pairs, 1) if new != old]
        if changed:
            self.log("plan, second part (the copies with the guest paths from the guest's "
                     "fstab):")
            for line in render_steps(second, changed):
                self.log(line)

    def _check(self, step: Step) -> None:
        prove_filesystem(step, self.filesystem(step), self.source, self.peer)

    def _marker(self, step: Step) -> None:
        # Only a dirty marker keeps what the last clean one said: its step reads it first.
        previous = read_marker(self.peer, step.probes[0]) if step.probes else {}
        if previous.get("state") == PROMOTED:
            # Promoted since preflight looked (R25): not one byte more is written to it.
            raise StandbyPromoted(promoted_message(self.plan.domain, self.plan.peer_host,
                                                   previous), host=self.plan.peer_host)
        marker = new_marker(self.plan.domain, step.state, self.plan.run_id,
                            self.plan.source_host, previous, now=time.time(),
                            standby=dict(self.plan.standby_lvs))
        self.peer.run(step.argv, input=marker_text(marker), timeout=30)
        self.report.standby = step.state

    def filesystem(self, step: Step) -> FilesystemPlan:
        """The plan's filesystem a step works on."""
        return next(x for x in self.plan.filesystems if x.name == step.fs)

    # -- the copy --------------------------------------------------------

    def copy(self, step: Step, on_start: Callable[[object], None] | None = None) -> None:
        """An ``rsync`` step: one filesystem copied (``copying.copy_filesystem``)."""
        copy_filesystem(self, step, on_start)
