"""The backup plan: a pure function of facts and config.

``plan_backup`` turns what preflight learned about both hosts into an ordered
list of steps per host, each with its undo. Executing a plan is the job of
``toolkit.execute``; printing it is ``--dry-run`` and ``invoke plan``.

Every filesystem is mounted at a path the tool builds from the disk target and
partition number (``<prefix>/<domain>.<run>/xvda1``), never from guest data,
so a hostile guest fstab or symlink cannot choose a host path (R5). The guest
path a filesystem belongs to is shown beside it and used for excludes.
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from . import PREFIX, bootarea
from .bootarea import boot_ranges
from .config import Config
from .errors import ConfigError, FilesystemVanished, LayoutMismatch, MountRefused
from .facts.findmnt import findmnt_argv
from .facts.fsparams import param_differences
from .facts.guestlvm import GuestVolume
from .facts.lvm import dm_name, lvs_argv
from .facts.records import BackupFacts, DiskFacts, FsFacts
from .journal import replace_file_argv
from .marker import marker_path
from .names import path_under
from .rsync import SshOptions, inodes_argv, relative_excludes, rsync_argv
from .undo import dm_node_probes

SOURCE = "source"
PEER = "peer"

# Filesystems the tool will mount, with the options that keep the origin
# untouched. ext3/ext4 `noload` skips journal replay (a read-only snapshot of a
# live guest always has a dirty journal); XFS `norecovery` likewise, and
# `nouuid` because the snapshot carries the origin's UUID (and in the lab the
# standby's, on the same kernel).
SOURCE_MOUNT_OPTIONS: Mapping[str, str] = {
    "ext2": "ro,nosuid,nodev,noexec",
    "ext3": "ro,nosuid,nodev,noexec,noload",
    "ext4": "ro,nosuid,nodev,noexec,noload",
    "xfs": "ro,nosuid,nodev,noexec,norecovery,nouuid",
    "vfat": "ro,nosuid,nodev,noexec",
    "btrfs": "ro,nosuid,nodev,noexec,nologreplay",
}
STANDBY_MOUNT_OPTIONS: Mapping[str, str] = {
    "ext2": "nosuid,nodev,noexec",
    "ext3": "nosuid,nodev,noexec",
    "ext4": "nosuid,nodev,noexec",
    "xfs": "nosuid,nodev,noexec,nouuid",
    "vfat": "nosuid,nodev,noexec",
    "btrfs": "nosuid,nodev,noexec",
}
SKIPPED_TYPES: Mapping[str, str] = {
    "swap": "swap space is not copied (recreated by init-standby)",
    "LVM2_member": "guest LVM physical volume (its logical volumes are copied one by one)",
}


@dataclass(frozen=True)
class Reaction:
    """A command a step runs only when something happens during it (``when`` says what)."""

    when: str
    role: str  # SOURCE or PEER
    argv: tuple[str, ...]


# What a copy's reactions are for (the executor finds them by these).
SNAPSHOT_NEARLY_FULL = "a snapshot reaches snapshot_max_fill"
STANDBY_FULL = "the standby is full (rsync: No space left on device)"


@dataclass(frozen=True)
class Step:
    """One command on one host, with the command that undoes it.

    ``argv`` is the command the step runs; ``probes`` are the read-only commands it runs
    besides (a guard's proofs, the reads before a write), in order. A step whose work
    is done in this process (the domain lock) has no argv and says so in its note.
    """

    role: str  # SOURCE or PEER: the host's role, not its name
    action: str  # lock, snapshot, map, mkdir, mount, alias, check, fstab, rsync, marker
    argv: tuple[str, ...]
    undo: tuple[str, ...] = ()
    # Exits 0 while the resource exists: lets recover and teardown be idempotent.
    exists: tuple[str, ...] = ()
    resource: str = ""
    note: str = ""
    fs: str = ""  # filesystem name this step belongs to, if any
    probes: tuple[tuple[str, ...], ...] = ()
    state: str = ""  # what a marker step writes: dirty or clean
    reactions: tuple[Reaction, ...] = ()  # commands run only when something happens


@dataclass(frozen=True)
class FilesystemPlan:
    """One filesystem copied from the snapshot to the standby."""

    name: str
    disk: str
    fstype: str
    uuid: str | None
    label: str | None
    partition: int | None
    partuuid: str | None
    source_device: str
    standby_device: str
    source_mount: str
    standby_mount: str
    guest_path: str | None  # from config now, or from the guest fstab at run time
    guest_vg: str | None = None  # a guest LV: its guest VG and LV names (for the guest fstab)
    guest_lv: str | None = None


@dataclass(frozen=True)
class FsFate:
    """One filesystem seen on a guest disk, and what the run does with it."""

    name: str
    disk: str
    fate: str  # copy, skipped, excluded (skip_filesystems), vanished (refuses the run)
    reason: str = ""  # why it is not copied
    fstype: str | None = None  # on the source; None when blkid found none
    guest_path: str | None = None  # from the config's mounts (the guest fstab comes later)


@dataclass(frozen=True)
class SnapshotPlan:
    """The snapshot of one disk's LV: its VG, name and /dev path, the VG/LV it is of, the disk."""

    vg: str
    name: str
    origin: str
    path: str
    disk: str


@dataclass(frozen=True)
class Plan:
    """Everything one backup run of a domain does: its hosts, snapshots, filesystems and
    steps in order, the disks and filesystems it leaves out (and why), each one's fate."""

    domain: str
    run_id: str
    source_host: str
    peer_host: str
    peer_address: str
    peer_port: int
    snapshots: tuple[SnapshotPlan, ...]
    filesystems: tuple[FilesystemPlan, ...]
    steps: tuple[Step, ...]
    skipped: tuple[str, ...] = field(default=())
    fates: tuple[FsFate, ...] = field(default=())  # every filesystem of every disk
    allow_mass_delete: bool = False  # the copies run without rsync's --max-delete bound

    def steps_for(self, role: str) -> tuple[Step, ...]:
        """The steps that run on ``role`` (SOURCE or PEER), in plan order."""
        return tuple(s for s in self.steps if s.role == role)

    def to_json(self) -> str:
        """The plan as indented JSON (what ``--json`` prints)."""
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def owned_name(run_id: str, *parts: str) -> str:
    """A name the tool owns: prefix, run id, then the given parts."""
    return "-".join((PREFIX, run_id, *parts))


def run_tag(run_id: str) -> str:
    """The LVM tag on a run's snapshots: ``<prefix>_run_<run id>``."""
    return f"{PREFIX}_run_{run_id}"


# Exists-probes print something (and exit 0) while the resource is there.
def dir_probe(path: str) -> tuple[str, ...]:
    """Exists-probe of a directory: ``find`` prints it while it is there."""
    return ("find", path, "-maxdepth", "0", "-type", "d")


def mount_probe(path: str) -> tuple[str, ...]:
    """Exists-probe of a mount point: ``findmnt`` prints it while something is mounted there."""
    return ("findmnt", "-n", "-o", "TARGET", "--mountpoint", path)


def partition_maps_probe(parent: str, delimiter: str) -> tuple[str, ...]:
    """Lists every partition map kpartx made of ``parent`` (any left means not gone)."""
    special = set(".^$*+?()[]{}|\\/")
    escaped = "".join("\\" + ch if ch in special else ch for ch in parent + delimiter)
    return ("dmsetup", "info", "-c", "--noheadings", "-o", "name", "-S",
            f'name=~"^{escaped}[0-9]+$"')


def mapped_partition(dm_parent: str, delimiter: str, number: int) -> str:
    """Device kpartx creates for a partition: parent dm name + delimiter + number.

    kpartx only inserts its own "p" when the parent name ends in a digit; with
    ``-p`` it always uses ours. Always passing the same ``-p`` to add and delete
    is what makes the name predictable (and deletable).
    """
    return f"/dev/mapper/{dm_parent}{delimiter}{number}"


def alias_step(run_id: str, domain: str, disk: DiskFacts) -> Step:
    """The peer's owned device-mapper alias of a standby LV (what it maps and mounts)."""
    alias = owned_name(run_id, domain, disk.disk.target)
    sectors = disk.standby_lv.size_bytes // 512
    return Step(
        PEER, "alias",
        ("dmsetup", "create", alias, "--table", f"0 {sectors} linear {disk.standby_lv.path} 0"),
        undo=("dmsetup", "remove", "--retry", alias),
        exists=("dmsetup", "info", "-c", "--noheadings", "-o", "name", alias),
        resource=f"/dev/mapper/{alias}",
        probes=dm_node_probes(f"/dev/mapper/{alias}"),
        note=f"owned device-mapper alias of the standby {disk.standby_lv.path}",
    )


def map_step(host: str, device: str, dm_parent: str, sep: str, note_tail: str = "") -> Step:
    """kpartx partition maps of a device, unmapped with the same delimiter."""
    return Step(
        host, "map", ("kpartx", "-a", "-s", "-p", sep, device),
        undo=("kpartx", "-d", "-s", "-p", sep, device),
        exists=partition_maps_probe(dm_parent, sep),
        resource=device,
        note=f"partition maps {dm_parent}{sep}N{note_tail}",
    )


def volume_map_name(run_id: str, domain: str, role: str, fs_name: str) -> str:
    """The owned dm name of a guest LV's map: ``domubk-<run>-<domain>-src|dst-<digest>``.

    The role marker keeps the two hosts' maps apart where they share one
    kernel (the lab) and tells recover which side made it. The guest LV is
    named by 16 hex digits of its filesystem name's digest, never by its guest
    VG and LV names: those may hold dashes and dots, and a suffix of a fixed
    shape is what lets recover tell ``web``'s maps from those of a domain named
    ``web-src-...`` (R21). The plan's note says which guest LV a map is.
    """
    import hashlib

    return owned_name(run_id, domain, role, hashlib.sha256(fs_name.encode()).hexdigest()[:16])


def volume_map_step(host: str, name: str, vol: GuestVolume, pv_device: str) -> Step:
    """Map one guest LV from its PV's device (read-only on the source), as the segments say."""
    flags = "ro" if host == SOURCE else "rw"
    return Step(
        host, "lvmap",
        ("dmsetup", "create", "--concise", f"{name},,,{flags},{vol.dm_table(pv_device)}"),
        undo=("dmsetup", "remove", "--retry", name),
        exists=("dmsetup", "info", "-c", "--noheadings", "-o", "name", name),
        resource=f"/dev/mapper/{name}",
        probes=dm_node_probes(f"/dev/mapper/{name}"),
        note=f"guest LV {vol.vg}/{vol.name} ({flags}) from its PV, under an owned name; the "
             "guest's VG is never activated",
    )


def _copyable(fs: FsFacts) -> tuple[bool, str]:
    if fs.volume is not None and fs.volume.skip_reason is not None:
        return False, f"guest LV {fs.volume.vg}/{fs.volume.name}: {fs.volume.skip_reason}"
    if fs.partition is not None and fs.partition.is_container:
        return False, "extended partition container"
    fstype = fs.probe.type
    if fstype is None:
        return False, "no filesystem found"
    if fstype in SKIPPED_TYPES:
        return False, SKIPPED_TYPES[fstype]
    if fstype not in SOURCE_MOUNT_OPTIONS:
        return False, f"filesystem type {fstype!r} is not in the mount allowlist"
    return True, ""


def compare_layouts(disk: DiskFacts, excluded: frozenset[str] = frozenset()) -> list[str]:
    """Differences between the source disk's layout and the standby's, as sentences.

    Filesystems named in ``excluded`` (skip_filesystems) are not compared: they are not
    copied, and their standby copy is left as it is.
    """
    diffs: list[str] = []
    src, standby = disk.table, disk.standby_table
    if src.label != standby.label:
        diffs.append(f"partition table {src.label or 'none'} on source, "
                     f"{standby.label or 'none'} on standby")
        return diffs
    src_parts = {p.number: p for p in src.partitions}
    standby_parts = {p.number: p for p in standby.partitions}
    for number in sorted(set(src_parts) | set(standby_parts)):
        a, b = src_parts.get(number), standby_parts.get(number)
        if a is None or b is None:
            where = "standby" if a is None else "source"
            diffs.append(f"partition {number} exists only on the {where}")
        elif (a.start, a.size) != (b.start, b.size):
            diffs.append(f"partition {number}: start/size {a.start}/{a.size} on source, "
                         f"{b.start}/{b.size} on standby")
        elif a.type.lower() != b.type.lower():
            diffs.append(f"partition {number}: type {a.type} on source, {b.type} on standby")
    standby_fs = {f.name: f for f in disk.standby_filesystems}
    for fs in disk.filesystems:
        ok, _ = _copyable(fs)
        if not ok or is_excluded(fs.name, excluded):
            continue
        other = standby_fs.get(fs.name)
        if fs.volume is not None:
            theirs = other.volume if other is not None else None
            if theirs is None:
                diffs.append(f"{fs.name}: guest LV {fs.volume.vg}/{fs.volume.name} is missing "
                             "on the standby")
                continue
            if (theirs.segments, theirs.vg_uuid, theirs.uuid) != (
                    fs.volume.segments, fs.volume.vg_uuid, fs.volume.uuid):
                diffs.append(f"{fs.name}: guest LV {fs.volume.vg}/{fs.volume.name} differs "
                             "(UUIDs or extents) on the standby")
                continue
        if other is None or other.probe.type is None:
            diffs.append(f"{fs.name}: {fs.probe.type} on source, no filesystem on standby")
            continue
        if other.probe.type != fs.probe.type:
            diffs.append(f"{fs.name}: {fs.probe.type} on source, {other.probe.type} on standby")
        if other.probe.uuid != fs.probe.uuid:
            diffs.append(f"{fs.name}: UUID {fs.probe.uuid} on source, "
                         f"{other.probe.uuid} on standby")
        if other.probe.label != fs.probe.label:
            diffs.append(f"{fs.name}: label {fs.probe.label!r} on source, "
                         f"{other.probe.label!r} on standby")
        diffs += param_differences(fs.name, fs.params, other.params)
    return diffs


SKIP_KEY = "skip_filesystems"
EXCLUDED = f"excluded by config ({SKIP_KEY})"


def is_excluded(name: str, excluded: frozenset[str] | set[str]) -> bool:
    """Whether skip_filesystems names this filesystem, or the partition its guest LV is on."""
    return name in excluded or name.split(".", 1)[0] in excluded


def _gone(fs: FsFacts | None, standby: FsFacts) -> str | None:
    """Why a filesystem the standby holds is missing from the source, or None if it is not.

    The standby's filesystem counts only when the tool would copy it; the source's is
    missing when blkid finds none there, or one the tool does not copy: a filesystem never
    drops out of the backup unnoticed.
    """
    theirs, _ = _copyable(standby)
    if not theirs:
        return None
    what = f"{standby.probe.type} (UUID {standby.probe.uuid or '-'})"
    if fs is None:
        vol = standby.volume
        where = f"guest LV {vol.vg}/{vol.name}" if vol is not None else "it"
        return f"{what} on the standby, but {where} is gone from the source"
    ours, why = _copyable(fs)
    if ours:
        return None
    return f"{what} on the standby, but on the source: {why}"


def filesystem_fates(facts: BackupFacts, config: Config) -> tuple[FsFate, ...]:
    """Every filesystem of every disk (the source's, and guest LVs only the standby has), and
    its fate: copy, skipped (with the reason), excluded by skip_filesystems, or vanished.

    A name in skip_filesystems that is no filesystem of the domain's disks is a ConfigError.
    """
    domain_cfg = config.domain(facts.domain)
    excluded = frozenset(domain_cfg.skip_filesystems)
    known = {f.name for disk in facts.disks
             for f in (*disk.filesystems, *disk.standby_filesystems)}
    known |= {disk.target for disk in facts.skipped_disks}
    for name in domain_cfg.skip_filesystems:
        if name not in known:
            raise ConfigError(f"{config.path}: domains.{facts.domain}.{SKIP_KEY}: {name} is no "
                              f"filesystem of domain {facts.domain}'s disks (they hold: "
                              f"{', '.join(sorted(known)) or 'none'})")
    fates: list[FsFate] = []

    def judge(disk: DiskFacts, fs: FsFacts | None, standby: FsFacts | None) -> None:
        name = fs.name if fs is not None else standby.name  # type: ignore[union-attr]
        gone = _gone(fs, standby) if standby is not None else None
        fstype = fs.probe.type if fs is not None else None
        if is_excluded(name, excluded):
            fate, reason = "excluded", EXCLUDED
            if gone:
                reason += f"; {gone}: its standby copy is left as it is"
        elif gone:
            fate, reason = "vanished", gone
        else:
            assert fs is not None
            ok, why = _copyable(fs)
            fate, reason = ("copy", "") if ok else ("skipped", why)
        fates.append(FsFate(name, disk.disk.target, fate, reason, fstype,
                            domain_cfg.mounts.get(name)))

    for disk in facts.disks:
        ours = {f.name for f in disk.filesystems}
        theirs = {f.name: f for f in disk.standby_filesystems}
        # Guest LVs the standby has and the source does not, listed after their PV.
        only_theirs = [f for f in disk.standby_filesystems
                       if f.name not in ours and f.volume is not None]
        for fs in disk.filesystems:
            judge(disk, fs, theirs.get(fs.name))
            if fs.volume is None:
                for other in only_theirs:
                    if other.name.split(".", 1)[0] == fs.name:
                        judge(disk, None, other)
    return tuple(fates)


def _depth(path: str | None) -> tuple[int, str]:
    if path is None:
        return (99, "")
    norm = posixpath.normpath(path)
    return (0 if norm == "/" else norm.count("/"), norm)


def health_argv(snapshots: Sequence[SnapshotPlan]) -> tuple[str, ...]:
    """One ``lvs`` of every snapshot of the run: their fill and validity (R3)."""
    return tuple(lvs_argv(*(f"{s.vg}/{s.name}" for s in snapshots)))


def stat_argv(device: str) -> tuple[str, ...]:
    """A device's major and minor number, in hex (what a mount guard compares)."""
    return ("stat", "-L", "--format", "%t:%T", device)


def not_empty_argv(mountpoint: str) -> tuple[str, ...]:
    """Prints the first entry of a mounted tree besides lost+found; nothing if it is empty."""
    return ("find", mountpoint, "-xdev", "-mindepth", "1", "-maxdepth", "1", "-not", "-name",
            "lost+found", "-print", "-quit")


def guest_fstab_path(fs_plan: FilesystemPlan) -> str:
    """Where a mounted guest filesystem would hold the guest's /etc/fstab."""
    return posixpath.join(fs_plan.source_mount, "etc", "fstab")


def guest_file_argvs(path: str) -> tuple[tuple[str, ...], ...]:
    """The reads of a guest file: its canonical path (a symlink is refused), then its text.

    ``readlink -m`` runs only when ``readlink -e`` fails, to tell a missing file from a
    symlink to something this host lacks.
    """
    return (("readlink", "-e", "--", path), ("readlink", "-m", "--", path), ("cat", "--", path))


def plan_backup(facts: BackupFacts, config: Config, run_id: str, *,
                allow_mass_delete: bool = False) -> Plan:
    """Build the ordered two-host plan for one domain; raises on a layout that cannot work."""
    domain_cfg = config.domain(facts.domain)
    defaults = config.defaults
    sep = defaults.kpartx_delimiter
    run_dir_name = f"{facts.domain}.{run_id}"
    # R20: each run directory lies directly below its prefix, each mount point below it.
    src_root = path_under(defaults.source_prefix,
                          posixpath.join(defaults.source_prefix, run_dir_name), "run directory")
    standby_root = path_under(defaults.peer_prefix,
                          posixpath.join(defaults.peer_prefix, run_dir_name), "run directory")
    size_args = domain_cfg.effective_snapshot_size(defaults).lvcreate_args()

    steps: list[Step] = []
    snapshots: list[SnapshotPlan] = []
    filesystems: list[FilesystemPlan] = []
    skipped: list[str] = [f"disk {disk.target}: {disk.skip_reason}" for disk in facts.skipped_disks]
    fates = filesystem_fates(facts, config)
    skipped += [f"{f.name}: {f.reason}" for f in fates if f.fate not in ("copy", "vanished")]
    to_copy = {(f.disk, f.name) for f in fates if f.fate == "copy"}

    lock_path = posixpath.join(defaults.lock_dir, f"{facts.domain}.lock")
    steps.append(Step(SOURCE, "lock", (), resource=lock_path,
                      note=f"flock(2) on {lock_path}, in this process: one run per domain, "
                           "held for the whole run"))

    vanished = [f for f in fates if f.fate == "vanished"]
    if vanished:
        # Before anything is created: the standby keeps its copy and its marker.
        names = ", ".join(f'"{f.name}"' for f in vanished)
        raise FilesystemVanished(
            f"domain {facts.domain}: "
            + "; ".join(f"disk {f.disk}: {f.name}: {f.reason}" for f in vanished)
            + ". The backup would leave it out, so nothing was changed and the standby keeps "
            f"its copy; repair the guest's filesystem, or leave it out knowingly with "
            f"{SKIP_KEY} = [{names}] in [domains.{facts.domain}]",
            host=facts.source_host,
        )
    excluded = frozenset(domain_cfg.skip_filesystems)
    problems: list[str] = []
    for disk in facts.disks:
        problems += [f"disk {disk.disk.target}: {p}" for p in compare_layouts(disk, excluded)]
    if problems:
        raise LayoutMismatch(
            "standby layout differs from the source (run `init-standby`): " + "; ".join(problems),
            host=facts.peer_host,
        )

    # Source side: snapshot, map, mkdir, mount.
    source_mount_steps: list[Step] = []
    peer_mount_steps: list[Step] = []
    peer_alias_steps: list[Step] = []
    for disk in facts.disks:
        lv = disk.source_lv
        snap_name = owned_name(run_id, facts.domain, disk.disk.target)
        snap_path = f"/dev/{lv.vg}/{snap_name}"
        snapshots.append(SnapshotPlan(lv.vg, snap_name, f"{lv.vg}/{lv.name}", snap_path,
                                      disk.disk.target))
        steps.append(Step(
            SOURCE, "snapshot",
            ("lvcreate", "--snapshot", "--permission", "r", "--name", snap_name,
             "--addtag", PREFIX, "--addtag", run_tag(run_id), *size_args, f"{lv.vg}/{lv.name}"),
            undo=("lvremove", "--force", "--yes", f"{lv.vg}/{snap_name}"),
            exists=("lvs", "--noheadings", "-o", "lv_name", f"{lv.vg}/{snap_name}"),
            resource=snap_path,
            note=f"read-only snapshot of {lv.path} (disk {disk.disk.target})",
        ))
        snap_dm = dm_name(lv.vg, snap_name)
        alias_st = alias_step(run_id, facts.domain, disk)
        alias, alias_dev = alias_st.argv[2], alias_st.resource
        peer_alias_steps.append(alias_st)
        if disk.table.label is not None:
            steps.append(map_step(SOURCE, snap_path, snap_dm, sep, " (same delimiter for add "
                                                                    "and delete)"))
            peer_alias_steps.append(map_step(PEER, alias_dev, alias, sep))

        for fs in disk.filesystems:
            if (disk.disk.target, fs.name) not in to_copy:
                continue  # skipped or excluded: listed in ``skipped`` with its reason
            assert fs.probe.type is not None
            if fs.partition is None:
                src_dev, standby_dev = snap_path, alias_dev
            else:
                src_dev = mapped_partition(snap_dm, sep, fs.partition.number)
                standby_dev = mapped_partition(alias, sep, fs.partition.number)
            if fs.volume is not None:
                src_name = volume_map_name(run_id, facts.domain, "src", fs.name)
                standby_name = volume_map_name(run_id, facts.domain, "dst", fs.name)
                steps.append(volume_map_step(SOURCE, src_name, fs.volume, src_dev))
                peer_alias_steps.append(volume_map_step(PEER, standby_name, fs.volume, standby_dev))
                src_dev, standby_dev = f"/dev/mapper/{src_name}", f"/dev/mapper/{standby_name}"
            fs_plan = FilesystemPlan(
                name=fs.name, disk=disk.disk.target, fstype=fs.probe.type, uuid=fs.probe.uuid,
                label=fs.probe.label,
                partition=fs.partition.number if fs.partition else None,
                partuuid=(None if fs.volume is not None
                          else disk.table.partuuid(fs.partition.number) if fs.partition
                          else fs.probe.partuuid),
                source_device=src_dev, standby_device=standby_dev,
                source_mount=path_under(src_root, posixpath.join(src_root, fs.name),
                                        "mount point"),
                standby_mount=path_under(standby_root, posixpath.join(standby_root, fs.name),
                                        "mount point"),
                guest_path=domain_cfg.mounts.get(fs.name),
                guest_vg=fs.volume.vg if fs.volume else None,
                guest_lv=fs.volume.name if fs.volume else None,
            )
            filesystems.append(fs_plan)

    if not filesystems:
        raise MountRefused(f"domain {facts.domain}: no filesystem to copy ({'; '.join(skipped)})",
                           host=facts.source_host)
    filesystems.sort(key=lambda f: (_depth(f.guest_path), f.name))
    health = health_argv(snapshots)
    steps = [replace(s, probes=(health,)) if s.action == "snapshot" else s for s in steps]

    for host, root, prefix in ((SOURCE, src_root, defaults.source_prefix),
                               (PEER, standby_root, defaults.peer_prefix)):
        out = source_mount_steps if host == SOURCE else peer_mount_steps
        out.append(Step(host, "mkdir", ("mkdir", "-p", "-m", "0755", prefix),
                        note="tool-owned mount prefix (kept between runs)"))
        out.append(Step(host, "mkdir", ("mkdir", "-m", "0700", root),
                        undo=("rmdir", root), exists=dir_probe(root), resource=root))
        for fs_plan in filesystems:
            mnt = fs_plan.source_mount if host == SOURCE else fs_plan.standby_mount
            dev = fs_plan.source_device if host == SOURCE else fs_plan.standby_device
            options = SOURCE_MOUNT_OPTIONS if host == SOURCE else STANDBY_MOUNT_OPTIONS
            opts = options[fs_plan.fstype]
            out.append(Step(host, "mkdir", ("mkdir", "-m", "0700", mnt), undo=("rmdir", mnt),
                            exists=dir_probe(mnt), resource=mnt, fs=fs_plan.name))
            out.append(Step(
                host, "mount", ("mount", "-t", fs_plan.fstype, "-o", opts, dev, mnt),
                undo=("umount", mnt), exists=mount_probe(mnt), resource=mnt,
                fs=fs_plan.name,
                note=(f"{fs_plan.fstype} UUID={fs_plan.uuid} -> guest "
                      f"{fs_plan.guest_path or '(from fstab)'}"),
            ))

    # Prove the source mounts before reading any guest data from them, and the
    # standby's before anything is written there (R7, R8).
    steps += source_mount_steps
    for fs_plan in filesystems:
        steps.append(Step(SOURCE, "check", tuple(findmnt_argv(fs_plan.source_mount, device=True)),
                          fs=fs_plan.name,
                          probes=(stat_argv(fs_plan.source_device),
                                  not_empty_argv(fs_plan.source_mount)),
                          note=(f"prove {fs_plan.source_mount} is {fs_plan.source_device}, "
                                "not empty")))
    steps.append(fstab_step(filesystems, domain_cfg.mounts))
    steps += peer_alias_steps
    steps += peer_mount_steps
    for fs_plan in filesystems:
        steps.append(Step(PEER, "check", tuple(findmnt_argv(fs_plan.standby_mount, device=True)),
                          fs=fs_plan.name, probes=(stat_argv(fs_plan.standby_device),),
                          note=f"prove {fs_plan.standby_mount} is {fs_plan.standby_device}"))
    marker = marker_path(config, facts.domain)
    steps.append(Step(PEER, "marker", tuple(replace_file_argv(marker)), resource=marker,
                      state="dirty", probes=(("cat", "--", marker),),
                      note="mark the standby 'sync in progress' until the copy succeeds "
                           "(keeping the last good sync the marker names)"))
    steps += boot_area_steps(facts, run_id)
    steps += copy_steps(config, facts.domain, tuple(snapshots), filesystems,
                        facts.peer_address, facts.peer_port,
                        {f.name: f.guest_path for f in filesystems if f.guest_path},
                        allow_mass_delete)
    steps.append(Step(PEER, "marker", tuple(replace_file_argv(marker)), resource=marker,
                      state="clean", note="record the last good sync (run id, time)"))

    return Plan(
        domain=facts.domain, run_id=run_id, source_host=facts.source_host,
        peer_host=facts.peer_host, peer_address=facts.peer_address, peer_port=facts.peer_port,
        snapshots=tuple(snapshots), filesystems=tuple(filesystems), steps=tuple(steps),
        skipped=tuple(skipped), fates=fates, allow_mass_delete=allow_mass_delete,
    )


def fstab_step(filesystems: Sequence[FilesystemPlan], mounts: Mapping[str, str]) -> Step:
    """Name each filesystem's guest path from the guest's /etc/fstab, read from the mounted
    snapshot; the config's ``mounts`` win, and where they name every filesystem nothing
    is read."""
    if all(f.name in mounts for f in filesystems):
        return Step(SOURCE, "fstab", (), note="guest paths from the config's mounts; the "
                                              "guest's fstab is not read")
    reads = tuple(argv for f in filesystems for argv in guest_file_argvs(guest_fstab_path(f)))
    return Step(SOURCE, "fstab", (), probes=reads,
                note="in this process, from these reads: each filesystem in turn until one "
                     "holds /etc/fstab (never through a guest symlink); config mounts win. "
                     "The copies below are then planned again with the guest paths found")


def copy_steps(config: Config, domain: str, snapshots: Sequence[SnapshotPlan],
               filesystems: Sequence[FilesystemPlan], peer_address: str, peer_port: int,
               guest_paths: Mapping[str, str], allow_mass_delete: bool) -> list[Step]:
    """The rsync of each filesystem, with the excludes of its guest path.

    Planned twice: with the config's mounts at first, then again once the guest's fstab
    has named the rest (the second part of the plan, shown when it is made). While a
    copy runs, and after it, the snapshots' health is read (every 2 s).
    """
    health = (health_argv(snapshots),)
    defaults = config.defaults
    watch = (f"; a snapshot at {defaults.snapshot_max_fill}% full is extended or the copy "
             "is stopped" if defaults.snapshot_extend else
             f"; a snapshot at {defaults.snapshot_max_fill}% full stops the copy")
    extend = tuple(Reaction(f"{SNAPSHOT_NEARLY_FULL} ({s.vg}/{s.name})", SOURCE,
                            ("lvextend", "-L", f"+{defaults.snapshot_extend}",
                             f"{s.vg}/{s.name}"))
                   for s in snapshots) if defaults.snapshot_extend else ()
    steps: list[Step] = []
    for fs_plan in filesystems:
        guest_path = guest_paths.get(fs_plan.name)
        argv = transfer_argv(config, domain, fs_plan, peer_address, peer_port, guest_path,
                             allow_mass_delete=allow_mass_delete)
        note = f"copy {fs_plan.name} to the standby"
        if guest_path is None:
            note += " (guest path and its excludes from the guest fstab at run time)"
        else:
            note += f" (guest {guest_path})"
        note += watch
        full = (Reaction(STANDBY_FULL, PEER, tuple(inodes_argv(fs_plan.standby_mount))),
                Reaction(STANDBY_FULL, SOURCE, tuple(inodes_argv(fs_plan.source_mount))))
        steps.append(Step(SOURCE, "rsync", tuple(argv), fs=fs_plan.name, note=note,
                          probes=health, reactions=extend + full))
    return steps


def plan_copies(plan: Plan, config: Config, guest_paths: Mapping[str, str]) -> Plan:
    """The second part of the plan, made once the guest's fstab is read from the snapshot:
    each filesystem's guest path, and the copies again with that path's excludes. Every
    other step is the same; the steps stay in the same order."""
    again = {s.fs: s for s in copy_steps(config, plan.domain, plan.snapshots,
                                         plan.filesystems, plan.peer_address, plan.peer_port,
                                         guest_paths, plan.allow_mass_delete)}
    steps = tuple(again.get(s.fs, s) if s.action == "rsync" else s for s in plan.steps)
    filesystems = tuple(replace(f, guest_path=guest_paths.get(f.name, f.guest_path))
                        for f in plan.filesystems)
    return replace(plan, steps=steps, filesystems=filesystems)


def boot_area_steps(facts: BackupFacts, run_id: str) -> list[Step]:
    """Read each disk's boot area from the snapshot and write it over the standby's.

    The partition tables were proven equal (compare_layouts) before these steps exist;
    the ranges never include the tables themselves (toolkit.bootarea).
    """
    steps: list[Step] = []
    for disk in facts.disks:
        t = disk.disk.target
        snap = f"/dev/{disk.source_lv.vg}/{owned_name(run_id, facts.domain, t)}"
        alias_dev = alias_step(run_id, facts.domain, disk).resource
        for r in boot_ranges(disk.table):
            key = f"{t}@{r.start}+{r.length}"
            steps.append(Step(SOURCE, "bootread", bootarea.read_argv(snap, r), resource=key,
                              note=f"disk {t}: {r.what}, from the snapshot"))
            steps.append(Step(PEER, "bootwrite", bootarea.write_argv(alias_dev, r),
                              resource=key, note=f"disk {t}: the same {r.length} bytes of "
                                                 "the standby, from the read above"))
    return steps


def transfer_argv(config: Config, domain: str, fs_plan: FilesystemPlan, peer_address: str,
                  peer_port: int, guest_path: str | None, *,
                  allow_mass_delete: bool = False) -> list[str]:
    """The rsync argv copying one filesystem, with the domain's excludes for its guest path."""
    defaults = config.defaults
    domain_cfg = config.domain(domain)
    ssh = config.ssh
    return rsync_argv(
        fs_plan.source_mount, peer_address, fs_plan.standby_mount,
        SshOptions(key=str(ssh.key), known_hosts=str(ssh.known_hosts), port=peer_port,
                   connect_timeout=math.ceil(ssh.connect_timeout), keepalive=int(ssh.keepalive),
                   cipher=ssh.cipher or "", compress=defaults.compress),
        excludes=relative_excludes(list(domain_cfg.effective_excludes(defaults)), guest_path),
        extra_args=list(domain_cfg.effective_rsync_args(defaults)),
        bwlimit=defaults.bwlimit or "",
        max_delete=None if allow_mass_delete else defaults.max_delete,
    )


def render_steps(plan: Plan, numbered: Iterable[tuple[int, Step]]) -> list[str]:
    """Steps as ``plan`` prints them, each with its number in the plan: the command, what
    it reads, its note and its undo."""
    lines = []
    for n, step in numbered:
        host = plan.source_host if step.role == SOURCE else plan.peer_host
        shown = _show(step.argv) if step.argv else "(in this process)"
        lines.append(f"{n:>3}. [{host}] {step.action:<8} {shown}")
        for probe in step.probes:
            lines.append(f"     {'':<{len(host) + 2}}   read: {_show(probe)}")
        if step.note:
            lines.append(f"     {'':<{len(host) + 2}} # {step.note}")
        for r in step.reactions:
            where = plan.source_host if r.role == SOURCE else plan.peer_host
            lines.append(f"     {'':<{len(host) + 2}}   if {r.when}: [{where}] {_show(r.argv)}")
        if step.undo:
            lines.append(f"     {'':<{len(host) + 2}}   undo: {_show(step.undo)}")
    return lines


def render_plan(plan: Plan) -> str:
    """A readable two-host plan: what will be done, in order, with its undo."""
    lines = [
        f"Plan for domain {plan.domain} (run {plan.run_id})",
        f"  source: {plan.source_host}   peer: {plan.peer_host} ({plan.peer_address}:"
        f"{plan.peer_port})",
        "",
        "Filesystems:",
    ]
    for f in plan.filesystems:
        lines.append(f"  {f.name:<8} {f.fstype:<6} UUID={f.uuid or '-'} label={f.label or '-'}  "
                     f"guest {f.guest_path or '(from guest fstab)'}")
        lines.append(f"           {f.source_device} -> {f.standby_device}")
    if plan.skipped:
        lines.append("Skipped:")
        lines += [f"  {s}" for s in plan.skipped]
    lines.append("")
    lines += render_steps(plan, enumerate(plan.steps, 1))
    lines.append("")
    lines.append("Each step with an undo is written to its host's journal first, in the same "
                 "command; teardown runs every undo above in reverse order, on success, error "
                 "or signal, then removes the journal.")
    return "\n".join(lines)


def _show(argv: Sequence[str]) -> str:
    from shlex import join

    return join(argv)
