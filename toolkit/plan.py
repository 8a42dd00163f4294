"""The backup plan: a pure function of facts and config.

``plan_backup`` turns what preflight learned about both hosts into an ordered
list of steps per host, each with its undo. Executing a plan is the job of
``toolkit.execute``; printing it is ``--dry-run`` and ``invoke plan``. Its last part,
after a clean teardown, is the restore point (``plan_points``).

Every filesystem is mounted at a path the tool builds from the disk target and
partition number (``<prefix>/<domain>.<run>/xvda1``), never from guest data,
so a hostile guest fstab or symlink cannot choose a host path (R5). The guest
path a filesystem belongs to is shown beside it and used for excludes.

The records are in ``plan_records``, the step builders in ``plan_steps``, the
layout comparison and fates in ``plan_layout``, the printing in ``plan_render``;
their names are imported from here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import replace

from . import PREFIX
from .config import Config
from .errors import FilesystemVanished, LayoutMismatch, MountRefused
from .facts.findmnt import findmnt_argv
from .facts.lvm import dm_name
from .facts.records import BackupFacts
from .journal import replace_file_argv
from .marker import marker_path
from .names import path_under
from .plan_layout import EXCLUDED, SKIP_KEY, compare_layouts, filesystem_fates, is_excluded
from .plan_points import point_steps
from .plan_records import (
    PEER,
    SKIPPED_TYPES,
    SNAPSHOT_NEARLY_FULL,
    SOURCE,
    SOURCE_MOUNT_OPTIONS,
    STANDBY_FULL,
    STANDBY_MOUNT_OPTIONS,
    FilesystemPlan,
    FsFate,
    Plan,
    Reaction,
    SnapshotPlan,
    Step,
)
from .plan_render import render_plan, render_steps
from .plan_steps import (
    alias_step,
    boot_area_steps,
    copy_steps,
    definition_disks,
    definition_steps,
    dir_probe,
    fstab_step,
    guest_file_argvs,
    guest_fstab_path,
    health_argv,
    map_step,
    mapped_partition,
    mount_probe,
    not_empty_argv,
    owned_name,
    partition_maps_probe,
    run_tag,
    stat_argv,
    transfer_argv,
    volume_map_name,
    volume_map_step,
    with_snapshot_hooks,
)
from .snapshot_hooks import flag_path

__all__ = [
    # plan_records
    "PEER", "SKIPPED_TYPES", "SNAPSHOT_NEARLY_FULL", "SOURCE", "SOURCE_MOUNT_OPTIONS",
    "STANDBY_FULL", "STANDBY_MOUNT_OPTIONS", "FilesystemPlan", "FsFate", "Plan", "Reaction",
    "SnapshotPlan", "Step",
    # plan_steps
    "alias_step", "boot_area_steps", "copy_steps", "dir_probe", "fstab_step",
    "guest_file_argvs", "guest_fstab_path", "health_argv", "map_step", "mapped_partition",
    "mount_probe", "not_empty_argv", "owned_name", "partition_maps_probe", "run_tag",
    "stat_argv", "transfer_argv", "volume_map_name", "volume_map_step",
    # plan_layout
    "EXCLUDED", "SKIP_KEY", "compare_layouts", "filesystem_fates", "is_excluded",
    # plan_render
    "render_plan", "render_steps",
    # here
    "plan_backup", "plan_copies",
]


def _depth(path: str | None) -> tuple[int, str]:
    if path is None:
        return (99, "")
    norm = posixpath.normpath(path)
    return (0 if norm == "/" else norm.count("/"), norm)


def plan_backup(facts: BackupFacts, config: Config, run_id: str, *,
                allow_mass_delete: bool = False, compare: bool = False) -> Plan:
    """Build the ordered two-host plan for one domain; raises on a layout that cannot work.

    With ``compare`` it is the plan of ``verify --against-source``: the same snapshot, maps,
    mounts and guards, the standby mounted read-only, and instead of the copies a checksum
    comparison that writes nothing (no marker, no boot area, no restore point)."""
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
    freeze = ((config.hypervisor_uri, facts.domain,
               flag_path(defaults.state_dir, facts.domain, run_id, "thaw"))
              if domain_cfg.freeze == "agent" else None)
    steps = with_snapshot_hooks(steps, domain_cfg.effective_hooks(defaults),
                                flag_path(defaults.state_dir, facts.domain, run_id), freeze)

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
            options = (SOURCE_MOUNT_OPTIONS if host == SOURCE or compare
                       else STANDBY_MOUNT_OPTIONS)
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
    defread, defwrite = definition_steps(facts, config)
    if not compare:
        # Read before anything is written to the standby: a definition that cannot be read
        # stops the run while the standby keeps its copy and its marker.
        steps.append(defread)
        steps.append(Step(PEER, "marker", tuple(replace_file_argv(marker)), resource=marker,
                          state="dirty", probes=(("cat", "--", marker),),
                          note="mark the standby 'sync in progress' until the copy succeeds "
                               "(keeping the last good sync the marker names)"))
        steps += boot_area_steps(facts, run_id)
    steps += copy_steps(config, facts.domain, tuple(snapshots), filesystems,
                        facts.peer_address, facts.peer_port,
                        {f.name: f.guest_path for f in filesystems if f.guest_path},
                        allow_mass_delete, compare)
    if not compare:
        steps.append(defwrite)
        steps.append(Step(PEER, "marker", tuple(replace_file_argv(marker)), resource=marker,
                          state="clean", note="record the last good sync (run id, time)"))

    after, points_kept = ((), ()) if compare else point_steps(facts, config, run_id)
    return Plan(
        domain=facts.domain, run_id=run_id, source_host=facts.source_host,
        peer_host=facts.peer_host, peer_address=facts.peer_address, peer_port=facts.peer_port,
        snapshots=tuple(snapshots), filesystems=tuple(filesystems), steps=tuple(steps),
        skipped=tuple(skipped), fates=fates, allow_mass_delete=allow_mass_delete,
        after=after, points_kept=points_kept,
        standby_lvs=tuple((d.disk.target, d.standby_lv.path) for d in facts.disks),
        definition_disks=definition_disks(facts, config),
        compare=compare,
    )


def plan_copies(plan: Plan, config: Config, guest_paths: Mapping[str, str]) -> Plan:
    """The second part of the plan, made once the guest's fstab is read from the snapshot:
    each filesystem's guest path, and the copies again with that path's excludes. Every
    other step is the same; the steps stay in the same order."""
    again = {s.fs: s for s in copy_steps(config, plan.domain, plan.snapshots,
                                         plan.filesystems, plan.peer_address, plan.peer_port,
                                         guest_paths, plan.allow_mass_delete, plan.compare)}
    steps = tuple(again.get(s.fs, s) if s.action == "rsync" else s for s in plan.steps)
    filesystems = tuple(replace(f, guest_path=guest_paths.get(f.name, f.guest_path))
                        for f in plan.filesystems)
    return replace(plan, steps=steps, filesystems=filesystems)
