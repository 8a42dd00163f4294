"""``verify``: prove a domain's standby, or one of its restore points, sound, never writing it.

Everything runs on the peer. The standby is verified on a throwaway read-only snapshot
(thin where the standby is thin), so a verify never writes it and a backup that starts
meanwhile changes nothing verify reads. A restore point is verified the same way where it
is thin; a classic point is read as it is, since LVM takes no snapshot of a snapshot, and it
is read-only itself (``--permission r``). On that device:

- every filesystem (partitions, a whole-disk filesystem, guest LVs mapped read-only from
  their PV's metadata) gets its read-only check (``fscheck``: ``e2fsck -fn``,
  ``xfs_repair -n``, ``fsck.fat -n``);
- the guest's own /etc/fstab (read through no guest symlink, from the filesystems mounted
  read-only below the tool's own directory) must resolve to the device's filesystems;
- the boot area: the partition table, the boot code in the first sector, and the boot
  loader's files where the guest has them: a boot loader directory (/boot/grub,
  /boot/extlinux, ...) must hold the file it boots from, and boot code that is GRUB's
  needs GRUB's directory. A guest with none boots from a kernel its domain names.

Every device, map, directory and mount is journalled before it is made and undone
afterwards (newest first), as a run's; a killed verify is finished by ``recover``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import PREFIX, signals
from .config import Config
from .errors import (
    FstabError,
    Interrupted,
    StandbyUnsound,
    ToolkitError,
    UnsafeName,
    UsageError,
)
from .facts.fstab import GuestFilesystem, guest_position, parse_fstab, resolve_fstab
from .facts.lvm import LogicalVolume, dm_name
from .facts.partitions import PartitionTable
from .facts.records import FsFacts
from .fscheck import check_argv, verdict
from .journal import Journal
from .marker import marker_path, read_peer_marker
from .names import is_disk_target, path_under
from .plan_records import PEER, SOURCE_MOUNT_OPTIONS, Step
from .plan_steps import (
    dir_probe,
    guest_file_argvs,
    mapped_partition,
    mount_probe,
    partition_maps_probe,
)
from .preflight import lookup_lv, read_layout
from .restore_points import POINT_TAG, parse_point_lv, read_point_lvs
from .runners import Runner
from .undo import unwind
from .verify_boot import BOOT_DIRS, boot_area, boot_code

__all__ = ["BOOT_DIRS", "VERIFY", "Verifier", "VerifyReport", "boot_code", "render_verify",
           "sources", "verify"]

VERIFY = f"{PREFIX}-vf"  # the throwaway snapshots and maps: journalled, never a run's names


@dataclass(frozen=True)
class Source:
    """One disk to verify: the LV read (the standby, or a point's LV) and what it is."""

    disk: str
    lv: LogicalVolume
    point: bool


@dataclass
class FsResult:
    """One filesystem's verdict."""

    name: str
    fstype: str
    sound: bool
    checked: bool
    summary: str
    guest_path: str | None = None


@dataclass
class VerifyReport:
    """What ``verify`` found, per filesystem and for the domain."""

    domain: str
    peer: str
    what: str  # "standby" or "restore point <run id>"
    run_id: str
    filesystems: list[FsResult] = field(default_factory=list)
    fstab: str = ""
    boot: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    teardown_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every filesystem checked and sound, fstab resolved, boot area present, no leftovers."""
        return (not self.problems and not self.teardown_errors
                and all(f.sound for f in self.filesystems if f.fstype != "swap"))


def sources(runner: Runner, config: Config, domain: str, at: str | None) -> list[Source]:
    """The LVs to verify: the standby's (from its marker, which must say clean) or the named
    point's. UsageError for a point that is not there; StandbyUnsound for a dirty standby."""
    if at is not None:
        lvs = read_point_lvs(runner)
        mine = [(parse_point_lv(lv.name, domain), lv) for lv in lvs if POINT_TAG in lv.tags]
        found = [Source(p[2], lv, True) for p, lv in mine if p is not None and p[0] == at]
        if not found:
            runs = sorted({p[0] for p, _lv in mine if p is not None}, reverse=True)
            raise UsageError(f"--at {at}: no restore point of that run for {domain} on "
                             f"{runner.host} (its points: {', '.join(runs) or 'none'})")
        return sorted(found, key=lambda s: s.disk)
    marker = read_peer_marker(runner, marker_path(config, domain))
    if marker.get("state") != "clean":
        raise StandbyUnsound(f"the standby of {domain} on {runner.host} is "
                             f"{marker.get('state')}: a copy did not finish, so it is no "
                             "consistent state; verify a restore point (--at RUN_ID) or run a "
                             "backup first", host=runner.host)
    disks = marker.get("standby")
    if not isinstance(disks, dict) or not disks:
        raise StandbyUnsound(f"the marker of {domain} on {runner.host} names no standby LVs "
                             "(written by an older version): run a backup first",
                             host=runner.host)
    out = []
    for disk, path in sorted(disks.items()):
        try:  # a disk target, and a normal path of plain names under /dev
            if not is_disk_target(str(disk)) or not isinstance(path, str):
                raise UnsafeName("no disk target and path")
            path_under("/dev", path, "standby LV")
        except UnsafeName:
            raise StandbyUnsound(f"the marker of {domain} on {runner.host} names a standby "
                                 f"{disk!r}: {path!r} that is no disk target and /dev path",
                                 host=runner.host) from None
        lv = lookup_lv(runner, path)
        if lv is None:
            raise StandbyUnsound(f"standby LV {path} of disk {disk} is not there",
                                 host=runner.host)
        out.append(Source(str(disk), lv, False))
    return out


def device_step(src: Source, config: Config, domain: str, run_id: str) -> Step | None:
    """The throwaway read-only snapshot verify reads, or None for a classic point (read as
    it is)."""
    if src.point and not src.lv.is_thin:
        return None
    name = f"{VERIFY}-{run_id}-{domain}-{src.disk}"
    size = ([] if src.lv.is_thin else
            config.domain(domain).effective_snapshot_size(config.defaults).lvcreate_args())
    thin = ["--setactivationskip", "n"] if src.lv.is_thin else []
    full = f"{src.lv.vg}/{name}"
    return Step(PEER, "snapshot",
                ("lvcreate", "--snapshot", "--permission", "r", *thin, "--name", name,
                 "--addtag", PREFIX, *size, src.lv.full_name),
                undo=("lvremove", "--force", "--yes", full),
                exists=("lvs", "--noheadings", "-o", "lv_name", full),
                resource=f"/dev/{full}",
                note=f"a throwaway read-only snapshot of {src.lv.path}")


class Verifier:
    """Runs the checks on the peer, each resource journalled and undone afterwards."""

    def __init__(self, config: Config, domain: str, run_id: str, peer: Runner,
                 report: VerifyReport, log: Callable[[str], None]) -> None:
        self.config = config
        self.domain = domain
        self.run_id = run_id
        self.peer = peer
        self.report = report
        self.log = log
        self.journal = Journal(peer, config.defaults.state_dir, domain, run_id)
        self.made: list[Step] = []
        self.sep = config.defaults.kpartx_delimiter
        prefix = config.defaults.peer_prefix
        self.root = path_under(prefix, posixpath.join(prefix, f"{domain}.{run_id}"),
                               "verify directory")

    def make(self, step: Step) -> None:
        """Journal, then make; registered for the undo even when it failed."""
        res = self.journal.run_recorded(step.action, step.resource, step.undo, step.exists,
                                        step.argv, timeout=self.config.ssh.command_timeout)
        self.made.append(step)
        if res.exit_code != 0:
            tail = " | ".join(res.stderr.strip().splitlines()[-2:])
            raise StandbyUnsound(f"`{' '.join(step.argv)}` exited {res.exit_code}: {tail}",
                                 host=self.peer.host)

    def run(self, srcs: Sequence[Source]) -> None:
        """Every check; the undo of everything made always runs."""
        try:
            self.make(Step(PEER, "mkdir", ("mkdir", "-p", "-m", "0700", self.root),
                           undo=("rmdir", self.root), exists=dir_probe(self.root),
                           resource=self.root))
            found: list[tuple[FsFacts, str, str]] = []  # facts, device, disk
            tables: dict[str, tuple[PartitionTable, str]] = {}
            for src in srcs:
                step = device_step(src, self.config, self.domain, self.run_id)
                device = src.lv.path
                if step is not None:
                    self.make(step)
                    device = step.resource
                table, filesystems = read_layout(self.peer, device, src.disk)
                tables[src.disk] = (table, device)
                if table.label is not None:
                    parent = dm_name(*device.removeprefix("/dev/").split("/", 1))
                    self.make(Step(PEER, "map", ("kpartx", "-a", "-r", "-s", "-p", self.sep,
                                                 device),
                                   undo=("kpartx", "-d", "-s", "-p", self.sep, device),
                                   exists=partition_maps_probe(parent, self.sep),
                                   resource=device))
                skip = set(self.config.domain(self.domain).skip_filesystems)
                for fs in filesystems:
                    if fs.partition is not None and fs.partition.is_container:
                        continue
                    if not fs.probe.type or (fs.volume is not None and fs.volume.skip_reason):
                        continue  # no filesystem, or a guest LV the backup does not copy
                    if fs.name in skip or fs.name.split(".")[0] in skip:
                        continue  # left out of the backup by the config
                    if fs.partition is not None and fs.volume is None:
                        # PARTUUID is the table's, as the guest's blkid shows it
                        fs = dataclasses.replace(fs, probe=dataclasses.replace(
                            fs.probe, partuuid=table.partuuid(fs.partition.number)))
                    found.append((fs, self.fs_device(fs, device, src.disk), src.disk))
            if not found:
                self.report.problems.append("no filesystem found on it: a blank standby, or "
                                            "one whose filesystems were never filled")
            self.check_filesystems(found)
            mounted = self.mount_all(found)
            self.check_fstab(found, mounted)
            self.check_boot(tables, mounted)
        finally:
            with signals.shielded():
                done = unwind(self.peer, self.made, timeout=self.config.ssh.command_timeout,
                              probe_first=False)
                self.report.teardown_errors += [f"[{self.peer.host}] {s.action} {s.resource}: "
                                                f"{why}" for s, why in done.failed]
                if done.clean:
                    self.journal.remove()
            pending = signals.pending_signal()
            if pending is not None:
                raise Interrupted(pending)

    def fs_device(self, fs: FsFacts, device: str, disk: str) -> str:
        """The device of one filesystem: the whole device, a partition map, or a guest LV
        mapped read-only from its PV (made here)."""
        parent = dm_name(*device.removeprefix("/dev/").split("/", 1))
        dev = (device if fs.partition is None
               else mapped_partition(parent, self.sep, fs.partition.number))
        if fs.volume is None or fs.volume.skip_reason:
            return dev  # (a guest LV the backup does not copy is never mapped)
        name = f"{VERIFY}-{self.run_id}-{self.domain}-" \
               f"{hashlib.sha256(fs.name.encode()).hexdigest()[:16]}"
        self.make(Step(PEER, "lvmap", ("dmsetup", "create", "--concise",
                                       f"{name},,,ro,{fs.volume.dm_table(dev)}"),
                       undo=("dmsetup", "remove", "--retry", name),
                       exists=("dmsetup", "info", "-c", "--noheadings", "-o", "name", name),
                       resource=f"/dev/mapper/{name}"))
        return f"/dev/mapper/{name}"

    def check_filesystems(self, found: Sequence[tuple[FsFacts, str, str]]) -> None:
        for fs, dev, _disk in found:
            fstype = fs.probe.type or ""
            if fstype in ("swap", "LVM2_member"):
                continue  # no filesystem: swap space, or the PV its guest LVs are read from
            argv = check_argv(fstype, dev) if fstype else None
            if argv is None:
                v = verdict(fstype or "(none)", None)
                self.report.filesystems.append(FsResult(fs.name, fstype or "(none)", False,
                                                        False, v.summary))
                self.report.problems.append(f"{fs.name}: {v.summary}")
                continue
            res = self.peer.run(argv, check=False, timeout=self.config.ssh.command_timeout)
            v = verdict(fstype, res.exit_code, res.stderr or res.stdout)
            self.report.filesystems.append(FsResult(fs.name, fstype, v.sound, v.checked,
                                                    v.summary))
            self.log(f"{fs.name} ({fstype}): {v.summary}")
            if not v.sound:
                self.report.problems.append(f"{fs.name}: {v.summary}")

    def mount_all(self, found: Sequence[tuple[FsFacts, str, str]]) -> dict[str, str]:
        """Each mountable filesystem mounted read-only below the tool's directory."""
        mounted: dict[str, str] = {}
        for fs, dev, _disk in found:
            opts = SOURCE_MOUNT_OPTIONS.get(fs.probe.type or "")
            if opts is None:
                continue
            mnt = path_under(self.root, posixpath.join(self.root, fs.name), "mount point")
            self.make(Step(PEER, "mkdir", ("mkdir", "-m", "0700", mnt), undo=("rmdir", mnt),
                           exists=dir_probe(mnt), resource=mnt))
            try:
                self.make(Step(PEER, "mount", ("mount", "-t", fs.probe.type or "", "-o", opts,
                                               dev, mnt),
                               undo=("umount", mnt), exists=mount_probe(mnt), resource=mnt))
            except StandbyUnsound as exc:  # said, and the other filesystems still read
                self.report.problems.append(f"{fs.name}: cannot be mounted read-only: {exc}")
                continue
            mounted[fs.name] = mnt
        return mounted

    def guest_file(self, mnt: str, rel: str) -> bool | str:
        """False when ``rel`` is not below ``mnt``; True when it is, never through a guest
        symlink (a symlink is reported as the text of a problem)."""
        path = f"{mnt}/{rel}"
        canonical, _lenient, _cat = guest_file_argvs(path)
        res = self.peer.run(canonical, check=False, timeout=30)
        if res.exit_code != 0:
            return False
        if res.stdout.strip() != path:
            return f"{rel} is a symlink (to {res.stdout.strip()!r}), not followed"
        return True

    def check_fstab(self, found: Sequence[tuple[FsFacts, str, str]],
                    mounted: dict[str, str]) -> None:
        text = None
        for fs, _dev, _disk in found:
            mnt = mounted.get(fs.name)
            if mnt is None:
                continue
            here = self.guest_file(mnt, "etc/fstab")
            if isinstance(here, str):
                self.report.problems.append(f"{fs.name}: {here}")
                continue
            if here:
                text = self.peer.run(guest_file_argvs(f"{mnt}/etc/fstab")[2], timeout=30).stdout
                root = fs.name
                break
        overrides = self.config.domain(self.domain).mounts
        names = {fs.name for fs, _d, _k in found}
        absent = sorted(set(overrides) - names)
        if absent:
            self.report.problems.append(f"fstab: [domains.{self.domain}.mounts] names "
                                        f"{', '.join(absent)}, not found on it")
        if text is None:
            if overrides and all(fs.name in overrides for fs, _d, _k in found
                                 if fs.name in mounted):
                self.report.fstab = "no /etc/fstab; the config's mounts name every filesystem"
                for result in self.report.filesystems:
                    result.guest_path = overrides.get(result.name)
                return
            self.report.fstab = "no /etc/fstab on any filesystem"
            self.report.problems.append("fstab: no /etc/fstab on any filesystem (set "
                                        f"[domains.{self.domain}.mounts] for a guest without one)")
            return
        guest = [GuestFilesystem(fs.name, disk, *guest_position(disk, fs.partition.number
                                                                 if fs.partition else None),
                                 probe=fs.probe,
                                 volume=(fs.volume.vg, fs.volume.name) if fs.volume else None)
                 for fs, _dev, disk in found if fs.probe.type]
        try:
            entries, _ignored = parse_fstab(text)
            paths = resolve_fstab(entries, guest, overrides)
        except FstabError as exc:
            self.report.fstab = f"from {root}: {exc}"
            self.report.problems.append(f"fstab: {exc}")
            return
        for result in self.report.filesystems:
            result.guest_path = paths.get(result.name, "/" if result.name == root else None)
        self.report.fstab = (f"from {root}: every entry resolves ("
                             + ", ".join(f"{k}={v}" for k, v in sorted(paths.items())) + ")")

    def check_boot(self, tables: dict[str, tuple[PartitionTable, str]],
                   mounted: dict[str, str]) -> None:
        """The boot area of each disk and the boot loader's files (``verify_boot``)."""
        lines, problems = boot_area(self.peer, tables, mounted, self.guest_file)
        self.report.boot += lines
        self.report.problems += problems


def verify(config: Config, domain: str, peer: Runner, run_id: str, at: str | None, *,
           peer_name: str, log: Callable[[str], None] = lambda m: None) -> VerifyReport:
    """Verify the standby of ``domain`` (or its point ``at``) on ``peer``; the report says
    what holds. Raises only for what stops the verify from starting."""
    report = VerifyReport(domain, peer_name, "standby" if at is None else f"restore point {at}",
                          run_id)
    srcs = sources(peer, config, domain, at)
    try:
        Verifier(config, domain, run_id, peer, report, log).run(srcs)
    except Interrupted:
        raise  # a signal ends the command with 128+N, not a verdict
    except ToolkitError as exc:
        report.problems.append(str(exc))
    return report


def render_verify(report: VerifyReport) -> str:
    """``verify``'s text: one line per filesystem, fstab, boot, then the verdict."""
    lines = [f"verify {report.domain}: {report.what} on {report.peer} (run {report.run_id})"]
    for f in report.filesystems:
        lines.append(f"  {f.name:<10} {f.fstype:<6} {f.guest_path or '-':<10} "
                     f"{'sound' if f.sound else 'NOT SOUND'}: {f.summary}")
    lines.append(f"  fstab: {report.fstab or '-'}")
    lines += [f"  boot: {b}" for b in report.boot]
    lines += [f"  PROBLEM: {p}" for p in report.problems]
    lines += [f"  TEARDOWN: {e}" for e in report.teardown_errors]
    lines.append("  verdict: " + ("sound" if report.ok else "NOT SOUND"))
    return "\n".join(lines)

