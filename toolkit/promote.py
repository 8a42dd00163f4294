"""``promote``: start the guest from its standby on the peer, and never while the source
still runs it (R25).

It runs on the peer, the host that holds the standby. First it reads, and changes nothing:

1. the standby's marker: clean (a dirty standby is a copy that did not finish), not already
   promoted, naming the source the last backup came from;
2. the definition the last clean run left beside the marker, checked like guest data: its
   name is the domain's, and every disk with a source is a block device on that disk's
   standby LV (as the marker or the config names it);
3. the standby LVs: there and not open (no backup or verify is using them);
4. the domain here: not running already;
5. the source, over SSH: the domain must not be running there. A source that cannot be
   reached refuses the promote unless ``--force`` says the source is down.

With ``--at RUN_ID`` the standby may be dirty, and the restore point of that run must be
there, valid and whole (``rollback``): the standby is rolled back to it before the domain
is defined, and what the standby held until then is kept as a restore point of the
promote's own run, so nothing is lost by promoting to an older point. A classic point is
merged into the standby, which cannot be undone: past the first merge a failed or killed
promote finishes the merges instead of undoing them (``settle``).

Then, each side effect journalled before it happens: the marker is kept aside and marked
``promoted`` (from that moment every backup of the domain refuses the standby), the
standby rolled back (with ``--at``), the domain defined from the definition and started.
A promote killed half-way is undone by ``recover`` (the domain stopped and undefined, the
standby and the marker as they were), unless the domain already runs: then the promote had
finished and only its journal is removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from .config import Config
from .errors import (
    HostKeyRejected,
    ParseError,
    PeerUnreachable,
    PromoteRefused,
    StatusUnknown,
    ToolkitError,
    UnsafeName,
)
from .facts.lvm import lvs_argv, parse_lvs, parse_vgs, vgs_argv
from .facts.virsh import domstate_argv, parse_domain_xml
from .failpoint import Failpoint
from .journal import Journal, JournalEntry, replace_file_argv
from .marker import PROMOTED, marker_path, marker_text, read_peer_marker
from .names import is_disk_target, path_under
from .preflight import ACTIVE_STATES, domain_state, lookup_lv
from .restore_points import RestorePoint, points_from_lvs, read_point_lvs
from .rollback import Rollback, RollbackStep, ordered_steps, plan_rollback
from .runners import Runner
from .settle import settle_merges
from .standby_xml import definition_path
from .undo import unwind

# Where a promote keeps the marker it replaces, until the promote has finished.
KEPT_SUFFIX = ".before-promote"


@dataclass(frozen=True)
class _Made:
    """One side effect of a promote, as the undo walk takes it."""

    action: str
    resource: str
    undo: tuple[str, ...]
    exists: tuple[str, ...]


@dataclass(frozen=True)
class PromoteStep:
    """One command of a promote on one host, as ``--dry-run`` prints it."""

    host: str
    argv: tuple[str, ...]
    note: str


@dataclass
class PromoteReport:
    """What a promote found and did."""

    domain: str
    host: str
    source: str
    source_state: str  # running, shut off, not defined, unreachable
    forced: bool = False
    standby: dict[str, str] = field(default_factory=dict)  # disk target -> standby LV
    last_success_run_id: str | None = None
    steps: list[PromoteStep] = field(default_factory=list)
    done: bool = False
    dry_run: bool = False
    at: str | None = None  # the restore point the standby is rolled back to (--at)
    kept_point: str | None = None  # the point that keeps the standby as it was (--at)


def define_argv(uri: str, path: str) -> list[str]:
    """`virsh define` of a definition file."""
    return ["virsh", "-c", uri, "define", "--", path]


def start_argv(uri: str, domain: str) -> list[str]:
    """`virsh start` of a defined domain."""
    return ["virsh", "-c", uri, "start", "--", domain]


def undefine_argv(uri: str, domain: str) -> list[str]:
    """`virsh undefine`: recover's undo of a define."""
    return ["virsh", "-c", uri, "undefine", "--", domain]


def destroy_argv(uri: str, domain: str) -> list[str]:
    """`virsh destroy` (power off): recover's undo of a start."""
    return ["virsh", "-c", uri, "destroy", "--", domain]


def check_definition(xml_text: str, domain: str, allowed: dict[str, str], where: str) -> None:
    """The stored definition must be the domain's, every disk with a source a block device
    on the standby LV ``allowed`` names for its target; PromoteRefused naming the file and
    the disk otherwise."""
    try:
        root = parse_domain_xml(xml_text)
    except ParseError as exc:
        raise PromoteRefused(f"{where}: not a domain definition: {exc}") from exc
    name = root.findtext("name")
    if name != domain:
        raise PromoteRefused(f"{where}: names the domain {name!r}, not {domain!r}")
    for disk in root.iterfind("devices/disk"):
        target_el = disk.find("target")
        target = (target_el.get("dev") if target_el is not None else None) or ""
        sources = disk.findall("source")
        if not sources:
            continue  # an empty drive
        if not is_disk_target(target):
            raise PromoteRefused(f"{where}: a disk with the target {target!r}")
        dev = sources[0].get("dev")
        if (disk.get("type") != "block" or len(sources) != 1 or dev is None
                or allowed.get(target) != dev):
            what = " ".join(f"{k}={v}" for k, v in sources[0].attrib.items())
            raise PromoteRefused(
                f"{where}: disk {target} is {disk.get('type')} {what}, not its standby LV "
                f"{allowed.get(target, '(none: the backup does not copy it)')}; the guest "
                "would start with a disk the peer does not hold. Give the disk a standby LV "
                "in the config and back it up, or remove it from the domain")
    for bad in root.iter("{*}*"):  # no foreign namespaces (hypervisor pass-through)
        if isinstance(bad.tag, str) and bad.tag.startswith("{"):
            raise PromoteRefused(f"{where}: element {etree.QName(bad).localname} of the "
                                 f"namespace {etree.QName(bad).namespace} is not accepted")


@dataclass
class Promote:
    """One promote of one domain on this host (the standby's host)."""

    config: Config
    domain: str
    local: Runner  # this host
    local_name: str
    source_factory: Callable[[str], Runner]
    run_id: str
    log: Callable[[str], None] = lambda msg: None
    at: str | None = None  # --at: the run whose restore point the guest starts from
    rollback: list[Rollback] = field(default_factory=list)  # each disk's, with --at

    def read(self, *, force: bool) -> tuple[PromoteReport, dict, str]:
        """Every check, reading only; the report, the marker and the definition's text."""
        cfg, domain = self.config, self.domain
        peer_name = cfg.domain(domain).peer
        if peer_name != self.local_name:
            raise PromoteRefused(f"the standby of {domain} is on {peer_name}, not on this host "
                                 f"({self.local_name}); run promote there", host=self.local_name)
        mpath = marker_path(cfg, domain)
        try:
            marker = read_peer_marker(self.local, mpath)
        except StatusUnknown as exc:
            raise PromoteRefused(f"{exc}: nothing to promote", host=self.local_name) from None
        state = marker.get("state")
        if state == PROMOTED:
            raise PromoteRefused(f"the standby of {domain} is already promoted (marker {mpath})",
                                 host=self.local_name)
        if state != "clean" and self.at is None:
            raise PromoteRefused(f"the standby of {domain} is {state}: its last copy did not "
                                 "finish, so its filesystems are not one consistent state; not "
                                 "promoted (promote --at RUN_ID starts it from a restore point; "
                                 f"`domu-backup restore-points --domu {domain}` lists them)",
                                 host=self.local_name)
        source = marker.get("source_host")
        if not isinstance(source, str) or source not in cfg.dom0s or source == self.local_name:
            raise PromoteRefused(f"marker {mpath}: source_host {source!r} is not another Dom0 "
                                 "of the cluster", host=self.local_name)
        allowed = {t: p for t, p in (marker.get("standby") or {}).items()
                   if isinstance(t, str) and isinstance(p, str)}
        for target, path in allowed.items():
            try:  # as verify reads them: a disk target, a normal path under /dev
                if not is_disk_target(target):
                    raise UnsafeName(f"disk target {target!r}")
                path_under("/dev", path, "standby LV")
            except UnsafeName as exc:
                raise PromoteRefused(f"marker {mpath}: standby {target!r}: {path!r} is not a "
                                     f"disk target and /dev path ({exc})",
                                     host=self.local_name) from None
        for target, spec in cfg.domain(domain).disks.items():
            if spec.standby_lv:
                allowed.setdefault(target, spec.standby_lv)
        dpath = definition_path(cfg.defaults.state_dir, domain)
        res = self.local.run(["cat", "--", dpath], check=False, timeout=30)
        if res.exit_code != 0:
            raise PromoteRefused(f"no standby definition at {dpath} (a clean backup of this "
                                 "version writes it): cannot define the domain here",
                                 host=self.local_name)
        check_definition(res.stdout, domain, allowed, dpath)
        standby = self._check_lvs(allowed)
        if self.at is not None:
            points = points_from_lvs(read_point_lvs(self.local), self.domain, sorted(allowed))
            point = self._point(self.at, points)
            vg_free, lvs = None, []
            if point.kind != "thin":  # the kept points need room, and so do the snapshots
                vgs = sorted({lv.vg for lv in standby.values()})
                vg_free = {g.name: g.free_bytes for g in
                           parse_vgs(self.local.run(vgs_argv(*vgs), timeout=60).stdout)}
                lvs = parse_lvs(self.local.run(lvs_argv(*vgs), timeout=60).stdout)
            self.rollback = plan_rollback(point, standby, self.run_id, self.local_name,
                                          snapshots=lvs, vg_free=vg_free)
        uri = cfg.hypervisor_uri
        here = self._state(self.local, uri)
        if here in ACTIVE_STATES:
            raise PromoteRefused(f"domain {domain} is already {here} on this host",
                                 host=self.local_name)
        report = PromoteReport(domain, self.local_name, source, "unknown",
                               standby=dict(sorted(allowed.items())),
                               last_success_run_id=marker.get("last_success_run_id"))
        report.source_state = self._source_state(source, uri, force=force)
        report.forced = report.source_state == "unreachable"
        if self.at is not None:
            report.at, report.kept_point = self.at, self.run_id
        report.steps = self.steps(source)
        return report, marker, res.stdout

    def steps(self, source: str) -> list[PromoteStep]:
        """What the promote runs, in order (the source's check included)."""
        cfg, domain, uri = self.config, self.domain, self.config.hypervisor_uri
        mpath = marker_path(cfg, domain)
        here = self.local_name
        return [
            PromoteStep(source, tuple(domstate_argv(uri, domain)),
                        "the source must not run the domain (read over SSH)"),
            PromoteStep(here, ("cp", "-f", "--", mpath, mpath + KEPT_SUFFIX),
                        "keep the clean marker (recover puts it back)"),
            PromoteStep(here, tuple(replace_file_argv(mpath)),
                        "mark the standby promoted: every backup of it refuses from now on"),
            *(PromoteStep(here, step.argv, step.note) for step in ordered_steps(self.rollback)),
            PromoteStep(here, tuple(define_argv(uri, definition_path(cfg.defaults.state_dir,
                                                                     domain))),
                        "define the domain, its disks on the standby LVs"),
            PromoteStep(here, tuple(start_argv(uri, domain)), "start it"),
            PromoteStep(here, ("rm", "-f", "--", mpath + KEPT_SUFFIX),
                        "the promote is done: drop the kept marker and the journal"),
        ]

    def run(self, report: PromoteReport, marker: dict) -> None:
        """The side effects, each journalled before it happens. An error or a signal before
        the domain started undoes them (the domain undefined, the marker as it was)."""
        cfg, domain, uri = self.config, self.domain, self.config.hypervisor_uri
        mpath = marker_path(cfg, domain)
        kept = mpath + KEPT_SUFFIX
        journal = Journal(self.local, cfg.defaults.state_dir, domain, self.run_id)
        timeout = cfg.ssh.command_timeout
        made: list[_Made] = []  # each side effect's undo and exists-probe, in order
        try:
            undo: tuple[str, ...] = ("mv", "-f", "--", kept, mpath)
            exists: tuple[str, ...] = ("find", kept, "-maxdepth", "0")
            self._journalled(journal, "promote-marker", mpath, undo, exists,
                             ("cp", "-f", "--", mpath, kept), timeout)
            made.append(_Made("promote-marker", mpath, undo, exists))
            origin = (f"restore point {self.at} (the standby as it was is kept as restore "
                      f"point {self.run_id})" if self.at is not None else
                      f"the standby (run {marker.get('last_success_run_id')})")
            promoted = {**marker, "state": PROMOTED, "promoted_at": time.time(),
                        "promoted_run_id": self.run_id, "promoted_from": origin,
                        "promoted_at_point": self.at, "source_state": report.source_state}
            self.local.run(replace_file_argv(mpath), input=marker_text(promoted),
                           timeout=timeout)
            self.log(f"[{self.local_name}] standby of {domain} marked promoted")
            steps = ordered_steps(self.rollback)  # each disk's standby becomes its point's
            for step in [s for s in steps if s.stage == 0]:
                made.append(_Made(step.action, step.resource, step.undo, step.exists))
                self._journalled(journal, step.action, step.resource, step.undo,
                                 step.exists, step.argv, timeout)
            self._merge(journal, [s for s in steps if s.stage == 1], made)
            if self.rollback:
                self.log(f"[{self.local_name}] standby of {domain} rolled back to restore "
                         f"point {self.at}; what it held is restore point {self.run_id}")
            probe = ("virsh", "-c", uri, "domstate", "--", domain)
            undo = tuple(undefine_argv(uri, domain))
            # before: a define that fails half-way is undefined too
            made.append(_Made("promote-define", domain, undo, probe))
            self._journalled(journal, "promote-define", domain, undo, probe,
                             tuple(define_argv(uri, definition_path(cfg.defaults.state_dir,
                                                                    domain))), timeout)
            self._journalled(journal, "promote-start", domain, tuple(destroy_argv(uri, domain)),
                             probe, tuple(start_argv(uri, domain)), timeout)
        except BaseException as exc:
            if self._undo(made, journal, timeout) and isinstance(exc, ToolkitError):
                raise PromoteRefused(
                    f"{exc}. The standby was already rolled back to restore point {self.at} "
                    "(a merge cannot be undone): it is now clean at that point, not promoted, "
                    f"and what it held before is restore point {self.run_id}; `domu-backup "
                    f"promote --domu {domain}` starts the guest from it",
                    host=self.local_name) from exc
            raise
        self.log(f"[{self.local_name}] domain {domain} started from its standby")
        self.local.run(["rm", "-f", "--", kept], timeout=timeout)
        journal.remove()
        report.done = True

    def _merge(self, journal: Journal, merges: list[RollbackStep], made: list[_Made]) -> None:
        """A classic rollback's merges. Every one is journalled before the first begins, so
        whatever stops the promote after that, every disk's merge is finished (no standby
        is left half at the point); each point must be gone once its merge returns."""
        for step in merges:
            journal.record(step.action, step.resource, step.undo, step.exists)
            made.append(_Made(step.action, step.resource, step.undo, step.exists))
        for step in merges:
            point = step.action.removeprefix("promote-")
            self._failpoint("before", point)
            res = self.local.run(step.argv, check=False, timeout=step.timeout)
            self._failpoint("after", point)
            left = self.local.run(step.exists, check=False, timeout=60)
            if res.exit_code != 0 or (left.exit_code == 0 and left.stdout.strip()):
                tail = (res.stderr.strip().splitlines() or ["the point is still there"])[-1]
                raise PromoteRefused(f"`{' '.join(step.argv)}` did not finish: {tail}",
                                     host=self.local_name)
        if merges:
            self.log(f"[{self.local_name}] restore point {self.at} merged into the standby of "
                     f"{self.domain}")

    def _undo(self, made: list[_Made], journal: Journal, timeout: float) -> bool:
        """Undo what this promote made, newest first, as a run's teardown undoes (each only
        while its probe finds it); the journal goes only when all of it is undone, else
        ``recover`` finishes it. Past a classic rollback's first merge, the merges are
        finished instead and what the standby held stays a restore point (``settle``):
        True then."""
        entries = [JournalEntry(self.run_id, self.domain, m.action, m.resource, m.undo,
                                m.exists, 0.0) for m in made]
        try:
            settled = settle_merges(self.local, entries, self.log)
        except ToolkitError as exc:
            self.log(f"[{self.local_name}] {exc}; `domu-backup recover` finishes it")
            return False
        left = [m for m in made if any(e.action == m.action and e.resource == m.resource
                                       and e.undo == m.undo for e in settled.rest)]
        if unwind(self.local, left, timeout=timeout, probe_first=False).clean:
            journal.remove()
        return settled.forward

    def _journalled(self, journal: Journal, action: str, resource: str, undo: tuple[str, ...],
                    exists: tuple[str, ...], argv: tuple[str, ...], timeout: float) -> None:
        point = action.removeprefix("promote-")  # the lab's failpoints: define and start
        self._failpoint("before", point)
        res = journal.run_recorded(action, resource, undo, exists, argv, timeout=timeout)
        self._failpoint("after", point)
        if res.exit_code != 0:
            tail = (res.stderr.strip().splitlines() or [f"exited {res.exit_code}"])[-1]
            raise PromoteRefused(f"`{' '.join(argv)}` failed: {tail}; what the promote did "
                                 "is undone (if a step of that fails, `domu-backup recover` "
                                 "finishes it)", host=self.local_name)

    def _failpoint(self, when: str, action: str) -> None:
        fp = Failpoint.from_env(self.log)
        if fp is not None and fp.when == when and fp.action == action:
            self.log(f"failpoint {when}:{action}:{fp.what}")
            fp.fire()

    def _check_lvs(self, allowed: dict[str, str]) -> dict:
        """Each standby LV is there and not open; disk target -> the LV."""
        found = {}
        for target, path in sorted(allowed.items()):
            lv = lookup_lv(self.local, path)
            if lv is None:
                raise PromoteRefused(f"standby LV {path} of disk {target} is not there",
                                     host=self.local_name)
            if lv.is_open:
                raise PromoteRefused(f"standby LV {path} of disk {target} is open (a backup or "
                                     "verify uses it, or a guest); not promoted",
                                     host=self.local_name)
            found[target] = lv
        return found

    def _point(self, run_id: str, points: list[RestorePoint]) -> RestorePoint:
        """The domain's restore point of ``run_id`` among ``points``: there, valid and
        whole."""
        point = next((p for p in points if p.run_id == run_id), None)
        have = ", ".join(p.run_id for p in points) or "none"
        if point is None:
            raise PromoteRefused(f"{self.domain} has no restore point {run_id} on this host "
                                 f"(its points: {have})", host=self.local_name)
        if not point.valid:
            raise PromoteRefused(f"restore point {run_id} of {self.domain} is not valid (a "
                                 "classic snapshot that overflowed): it holds no consistent "
                                 f"state (its other points: {have})", host=self.local_name)
        if not point.whole:
            raise PromoteRefused(f"restore point {run_id} of {self.domain} has no LV for disk "
                                 f"{', '.join(point.missing)} (added after it was taken)",
                                 host=self.local_name)
        return point

    def _state(self, runner: Runner, uri: str) -> str:
        state = domain_state(runner, uri, self.domain)
        return "not defined" if state is None else state

    def _source_state(self, source: str, uri: str, *, force: bool) -> str:
        """The domain's state on the source; PromoteRefused while it runs there, or when the
        source cannot be asked (unless ``force``)."""
        try:
            runner = self.source_factory(source)
            try:
                state = self._state(runner, uri)
            finally:
                runner.close()
        except (PeerUnreachable, HostKeyRejected) as exc:
            if not force:
                raise PromoteRefused(f"cannot ask {source} whether it runs {self.domain}: "
                                     f"{exc}. If {source} is down, promote with --force",
                                     host=self.local_name) from None
            self.log(f"warning: {source} cannot be reached ({exc}); promoting as --force says")
            return "unreachable"
        except ToolkitError as exc:
            raise PromoteRefused(f"cannot tell whether {source} runs {self.domain}: {exc}",
                                 host=self.local_name) from None
        if state in ACTIVE_STATES:
            raise PromoteRefused(f"domain {self.domain} is {state} on {source}: promoting would "
                                 "run the guest from both copies; stop it there first (or, if "
                                 "that Dom0 is broken, power it off)", host=self.local_name)
        return state


def render_promote(report: PromoteReport) -> str:
    """The promote's plan (``--dry-run``) or its outcome."""
    head = (f"Promote {report.domain} on {report.host} (source {report.source}: "
            f"{report.source_state}{', forced' if report.forced else ''}; standby of run "
            f"{report.last_success_run_id})")
    lines = [head] + [f"  {d} on {p}" for d, p in report.standby.items()]
    if report.dry_run or not report.done:
        lines.append("Steps:")
        lines += [f"  {n:>2}. [{s.host}] {' '.join(s.argv)}\n      # {s.note}"
                  for n, s in enumerate(report.steps, 1)]
    if report.at is not None:
        lines.insert(1, f"  rolled back to restore point {report.at}; the standby as it was "
                        f"is kept as restore point {report.kept_point}")
    if report.done:
        lines.append(f"{report.domain} runs on {report.host} from its standby; backups of it "
                     "now refuse the standby (exit 24)")
    return "\n".join(lines)


def report_json(report: PromoteReport) -> str:
    """The report as ``--json`` prints it."""
    from dataclasses import asdict

    return json.dumps(asdict(report), indent=2)
