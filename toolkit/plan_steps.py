"""The plan's step builders: owned names, exists-probes, the map, alias and mount
steps, the reads a guard proves, the fstab, boot area and copy steps."""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping, Sequence

from . import PREFIX, bootarea
from .bootarea import boot_ranges
from .config import Config
from .config.fields import Hooks
from .facts.guestlvm import GuestVolume
from .facts.lvm import lvs_argv
from .facts.records import BackupFacts, DiskFacts
from .facts.virsh import dumpxml_argv
from .journal import replace_file_argv
from .plan_records import (
    PEER,
    SNAPSHOT_NEARLY_FULL,
    SOURCE,
    STANDBY_FULL,
    FilesystemPlan,
    Reaction,
    SnapshotPlan,
    Step,
)
from .rsync import SshOptions, inodes_argv, relative_excludes, rsync_argv
from .snapshot_hooks import flag_probe, flag_undo, freeze_argv, thaw_argv, thaw_undo
from .standby_xml import definition_path
from .undo import dm_node_probes


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
               guest_paths: Mapping[str, str], allow_mass_delete: bool,
               compare: bool = False) -> list[Step]:
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
                             allow_mass_delete=allow_mass_delete, compare=compare)
        note = (f"compare {fs_plan.name} with the standby by checksum, writing nothing"
                if compare else f"copy {fs_plan.name} to the standby")
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


def with_snapshot_hooks(steps: list[Step], hooks: Hooks, flag: str,
                        freeze: tuple[str, str, str] | None = None) -> list[Step]:
    """``steps`` with what happens around the snapshots: ``prehook`` (the flag that owes
    post_snapshot, journalled, then pre_snapshot) and, with ``freeze`` (uri, domain, its
    flag), ``freeze`` (the flag that owes a thaw, journalled, then domfsfreeze) before the
    first snapshot; ``thaw`` and ``posthook`` (post_snapshot, then its flag removed) right
    after the last. Unchanged with no hook and no freeze."""
    shots = [i for i, s in enumerate(steps) if s.action == "snapshot"]
    if not shots:
        return steps
    before: list[Step] = []
    after: list[Step] = []
    if hooks.pre_snapshot or hooks.post_snapshot:
        before.append(Step(
            SOURCE, "prehook", hooks.pre_snapshot, undo=flag_undo(flag), exists=flag_probe(flag),
            resource=flag,
            note=("touch the flag (journalled: from here post_snapshot always runs), then "
                  + ("the pre_snapshot hook" if hooks.pre_snapshot else "no pre_snapshot"))))
        after.append(Step(SOURCE, "posthook", hooks.post_snapshot, resource=flag,
                          note=("the post_snapshot hook" if hooks.post_snapshot
                                else "no post_snapshot") + ", then the flag removed"))
    if freeze is not None:
        uri, domain, thaw_flag = freeze
        before.append(Step(SOURCE, "freeze", freeze_argv(uri, domain), undo=thaw_undo(thaw_flag),
                           exists=flag_probe(thaw_flag), resource=thaw_flag,
                           note="touch the flag (journalled: from here the thaw always runs), "
                                "then freeze the guest's filesystems through its agent"))
        after.insert(0, Step(SOURCE, "thaw", thaw_argv(uri, domain), resource=thaw_flag,
                             note="thaw them as soon as the snapshots exist, then the flag "
                                  "removed"))
    first, last = shots[0], shots[-1]
    return [*steps[:first], *before, *steps[first:last + 1], *after, *steps[last + 1:]]


def definition_disks(facts: BackupFacts, config: Config) -> tuple[tuple[str, str], ...]:
    """Each disk target the standby definition puts on a standby LV: every disk copied, and
    a disk left out (swap only) whose standby LV the config names."""
    domain_cfg = config.domain(facts.domain)
    out = [(d.disk.target, d.standby_lv.path) for d in facts.disks]
    for disk in facts.skipped_disks:
        spec = domain_cfg.disks.get(disk.target)
        if spec is not None and spec.standby_lv:
            out.append((disk.target, spec.standby_lv))
    return tuple(out)


def definition_steps(facts: BackupFacts, config: Config) -> tuple[Step, Step]:
    """Read the domain's persistent definition on the source; write it, each disk on its
    standby LV, on the peer beside the marker (what ``promote`` defines the domain with)."""
    path = definition_path(config.defaults.state_dir, facts.domain)
    disks = ", ".join(f"{t} on {p}" for t, p in definition_disks(facts, config))
    read = Step(SOURCE, "defread",
                tuple(dumpxml_argv(config.hypervisor_uri, facts.domain, inactive=True)),
                resource=path, note="the domain's definition, as it boots next")
    write = Step(PEER, "defwrite", tuple(replace_file_argv(path)), resource=path,
                 note=f"the definition from the read above, {disks}: for promote")
    return read, write


def transfer_argv(config: Config, domain: str, fs_plan: FilesystemPlan, peer_address: str,
                  peer_port: int, guest_path: str | None, *,
                  allow_mass_delete: bool = False, compare: bool = False) -> list[str]:
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
        compare=compare,
    )
