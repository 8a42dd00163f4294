"""The plan's records: a step, its reactions, a filesystem's plan and fate, a snapshot,
the whole plan; the hosts' roles and the mount options the tool allows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

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
    action: str  # lock, snapshot, map, mkdir, mount, alias, check, fstab, rsync, marker;
    # bootread and bootwrite (the boot area), defread and defwrite (the standby definition);
    # point and prune (the restore point after a clean run)
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
    # After a clean run, with the standby unmounted: the restore point, then the prune.
    after: tuple[Step, ...] = field(default=())
    points_kept: tuple[str, ...] = field(default=())  # run ids of the points then, newest first
    standby_lvs: tuple[tuple[str, str], ...] = field(default=())  # (disk target, standby LV)
    # (disk target, standby LV) of the definition written for promote: standby_lvs, and a
    # swap-only disk whose standby LV the config names.
    definition_disks: tuple[tuple[str, str], ...] = field(default=())
    # verify --against-source: the copies compare by checksum and write nothing; no marker,
    # no boot area, no restore point, the standby mounted read-only.
    compare: bool = False

    def steps_for(self, role: str) -> tuple[Step, ...]:
        """The steps that run on ``role`` (SOURCE or PEER), in plan order."""
        return tuple(s for s in self.steps if s.role == role)

    def to_json(self) -> str:
        """The plan as indented JSON (what ``--json`` prints)."""
        return json.dumps(asdict(self), indent=2, sort_keys=False)
