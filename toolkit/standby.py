"""init-standby: make the peer's LV a bootable copy of the source disk's layout.

The standby gets the same partition table (``sfdisk --dump`` restored, so the
disk identifier, partition UUIDs, names and types are equal), the same boot
area (the first MiB and any BIOS boot partition, copied raw) and, on each
partition or the whole disk, a new empty filesystem of the same type with the
same UUID and label, so the guest's own fstab and boot loader resolve on it,
and with the source's own parameters read from its superblock (features,
inode count and size, block size, reserved blocks; XFS geometry; FAT size and
cluster size), never the peer's mkfs defaults, so an old guest's standby has
as many inodes as its source and features its kernel and boot loader read.
A guest LVM PV gets its label and metadata copied raw (the guest VG keeps its
name and UUIDs on the standby, and no LVM command runs on it), and each guest
LV, mapped from those extents under an owned name, a new empty filesystem.
The next ``backup`` fills the filesystems.

It refuses a standby that is in use or already holds a partition table or a
filesystem, unless forced; it prints its plan first, like ``plan`` does.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from . import PREFIX
from .config import Config
from .errors import LayoutMismatch, StandbyInvalid
from .facts.fsparams import (
    ExtParams,
    FatParams,
    FsParams,
    XfsParams,
    ext_mkfs_options,
    fat_mkfs_options,
    xfs_mkfs_options,
)
from .facts.records import BackupFacts, DiskFacts, FsFacts
from .journal import Journal
from .lock import domain_lock
from .plan import (
    PEER,
    SOURCE,
    Step,
    alias_step,
    dir_probe,
    map_step,
    mapped_partition,
    volume_map_name,
    volume_map_step,
)
from .rsync import SshOptions, rsync_remote, ssh_argv
from .runners import Runner
from .undo import DM_NODE_ACTIONS, ensure_dm_node, unwind

BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
BOOT_AREA = 1 << 20


def mkfs_argv(fstype: str, device: str, uuid: str | None, label: str | None,
              params: FsParams | None = None) -> list[str]:
    """A new, empty filesystem with the source's UUID, label and parameters.

    ``params`` (read from the source's superblock) make it the same filesystem:
    features, inode count and size, block size, reserved blocks, FAT size and
    cluster size, not this mkfs's defaults. The size is the source's too, so a
    whole-disk filesystem on a larger standby LV is not grown.
    """
    if fstype in ("ext2", "ext3", "ext4"):
        argv = [f"mkfs.{fstype}", "-F", "-q"]
        size: list[str] = []
        if isinstance(params, ExtParams):
            opts, size = ext_mkfs_options(params)
            argv += opts
        if uuid:
            argv += ["-U", uuid]
        if label:
            argv += ["-L", label]
        return [*argv, device, *size]
    if fstype == "xfs":
        argv = ["mkfs.xfs", "-f", "-q"]
        if isinstance(params, XfsParams):
            argv += xfs_mkfs_options(params)
        if uuid:
            argv += ["-m", f"uuid={uuid}"]
        if label:
            argv += ["-L", label]
        return [*argv, device]
    if fstype == "vfat":
        argv = ["mkfs.vfat"]
        size = []
        if isinstance(params, FatParams):
            opts, size = fat_mkfs_options(params)
            argv += opts
        if uuid:
            argv += ["-i", uuid.replace("-", "")]
        if label:
            argv += ["-n", label]
        return [*argv, device, *size]
    if fstype == "swap":
        argv = ["mkswap", "-f"]
        if uuid:
            argv += ["-U", uuid]
        if label:
            argv += ["-L", label]
        return [*argv, device]
    raise LayoutMismatch(f"cannot create a {fstype} filesystem on the standby; prepare {device} "
                         "by hand")


@dataclass(frozen=True)
class StandbyPlan:
    """What init-standby does for a domain: its steps on both hosts, and why it refuses if it
    does (then nothing runs)."""

    domain: str
    run_id: str
    steps: tuple[Step, ...]
    refusals: tuple[str, ...]


def _in_use(disk: DiskFacts) -> list[str]:
    found = []
    if disk.standby_table.label is not None:
        found.append(f"a {disk.standby_table.label} partition table")
    for fs in disk.standby_filesystems:
        if fs.probe.type:
            found.append(f"{fs.probe.type} on {fs.name}")
    return found


def plan_standby(facts: BackupFacts, config: Config, run_id: str, *,
                 force: bool = False) -> StandbyPlan:
    """Steps on both hosts that give the standby the source's layout (pure)."""
    defaults = config.defaults
    sep = defaults.kpartx_delimiter
    tmp_src = posixpath.join(defaults.state_dir, f"{PREFIX}-{run_id}-standby")
    tmp_dst = tmp_src
    ssh = config.ssh
    steps: list[Step] = []
    refusals: list[str] = []
    for disk in facts.disks:
        used = _in_use(disk)
        if used and not force:
            refusals.append(f"standby {disk.standby_lv.path} of disk {disk.disk.target} already "
                            f"holds {', '.join(used)}; use --force to overwrite it")
    steps.append(Step(SOURCE, "mkdir", ("mkdir", "-p", "-m", "0700", tmp_src),
                      undo=("rm", "-rf", tmp_src), exists=dir_probe(tmp_src), resource=tmp_src))
    for disk in facts.disks:
        t = disk.disk.target
        steps.append(Step(SOURCE, "copy", ("dd", f"if={disk.source_lv.path}",
                                           f"of={tmp_src}/{t}.boot", f"bs={BOOT_AREA}", "count=1",
                                           "status=none"),
                          note=f"boot area of {t} (first MiB, read from the origin)"))
        if disk.table.label is not None:
            steps.append(Step(SOURCE, "dump", ("sfdisk", "--dump", disk.source_lv.path),
                              resource=f"{tmp_src}/{t}.sfdisk", note="partition table"))
        for fs in disk.filesystems:
            head = _pv_head_bytes(disk, fs)
            if head is not None:
                start = fs.partition.start * disk.table.sector_size if fs.partition else 0
                steps.append(Step(SOURCE, "copy", (
                    "dd", f"if={disk.source_lv.path}", f"of={tmp_src}/{fs.name}.pvhead",
                    "bs=4096", f"skip={start}", f"count={head}", "iflag=skip_bytes,count_bytes",
                    "status=none"), note=f"guest LVM label and metadata of {fs.name} (same VG "
                                         "name and UUIDs on the standby), raw"))
        for part in disk.table.partitions:
            if part.type.lower() == BIOS_BOOT:
                start = part.start * disk.table.sector_size
                size = part.size * disk.table.sector_size
                steps.append(Step(SOURCE, "copy", (
                    "dd", f"if={disk.source_lv.path}", f"of={tmp_src}/{t}{part.number}.raw",
                    "bs=4096", f"skip={start}", f"count={size}", "iflag=skip_bytes,count_bytes",
                    "status=none"), note=f"BIOS boot partition {part.number}, raw"))
    steps.append(Step(PEER, "mkdir", ("mkdir", "-p", "-m", "0700", tmp_dst),
                      undo=("rm", "-rf", tmp_dst), exists=dir_probe(tmp_dst), resource=tmp_dst))
    opts = SshOptions(key=str(ssh.key), known_hosts=str(ssh.known_hosts), port=facts.peer_port,
                      connect_timeout=int(ssh.connect_timeout), keepalive=int(ssh.keepalive),
                      cipher=ssh.cipher or "")
    steps.append(Step(SOURCE, "send", ("rsync", "-a", "-e", shlex.join(ssh_argv(opts)), "--",
                                       f"{tmp_src}/",
                                       rsync_remote(facts.peer_address, f"{tmp_dst}/")),
                      note="boot areas and partition tables to the peer"))
    for disk in facts.disks:
        t = disk.disk.target
        alias_st = alias_step(run_id, facts.domain, disk)
        alias, alias_dev = alias_st.argv[2], alias_st.resource
        steps.append(alias_st)
        # nocreat: a missing node is an error, never a new regular file in /dev
        steps.append(Step(PEER, "write", ("dd", f"if={tmp_dst}/{t}.boot", f"of={alias_dev}",
                                          f"bs={BOOT_AREA}", "count=1",
                                          "conv=notrunc,nocreat,fsync", "status=none"),
                          note="boot area, raw"))
        if disk.table.label is None:
            fs = disk.filesystems[0]
            if fs.probe.type == "LVM2_member":
                steps += _guest_lvm_steps(run_id, facts.domain, disk, alias_dev, tmp_dst)
            elif fs.probe.type:
                steps.append(Step(PEER, "mkfs", tuple(mkfs_argv(fs.probe.type, alias_dev,
                                                                fs.probe.uuid, fs.probe.label,
                                                                fs.params)),
                                  note=f"whole-disk {fs.probe.type}, the source's parameters"))
            continue
        steps.append(Step(PEER, "table", ("sfdisk", "--no-reread", "--no-tell-kernel", "--wipe",
                                          "never", alias_dev),
                          resource=f"{tmp_dst}/{t}.sfdisk", note="same table, ids and names"))
        steps.append(map_step(PEER, alias_dev, alias, sep))
        for fs in disk.filesystems:
            fs_part = fs.partition
            if fs_part is None or fs_part.is_container or fs.volume is not None:
                continue
            dev = mapped_partition(alias, sep, fs_part.number)
            if fs_part.type.lower() == BIOS_BOOT:
                steps.append(Step(PEER, "write", (
                    "dd", f"if={tmp_dst}/{t}{fs_part.number}.raw", f"of={dev}", "bs=4096",
                    "conv=nocreat,fsync", "status=none"),
                    note=f"BIOS boot partition {fs_part.number}"))
            elif fs.probe.type and fs.probe.type != "LVM2_member":
                steps.append(Step(PEER, "mkfs", tuple(mkfs_argv(fs.probe.type, dev, fs.probe.uuid,
                                                                fs.probe.label, fs.params)),
                                  note=f"{fs.name}: empty {fs.probe.type}, same UUID, label "
                                       "and parameters"))
            elif fs.probe.type == "LVM2_member":
                steps += _guest_lvm_steps(run_id, facts.domain, disk, dev, tmp_dst, fs.name)
    return StandbyPlan(facts.domain, run_id, tuple(steps), tuple(refusals))


def _pv_head_bytes(disk: DiskFacts, pv: FsFacts) -> int | None:
    """Bytes from a guest PV's start to its first extent (label and metadata), if a PV."""
    if pv.probe.type != "LVM2_member" or pv.volume is not None:
        return None
    prefix = pv.name + "."
    starts = {fs.volume.pe_start for fs in disk.filesystems
              if fs.volume is not None and fs.name.startswith(prefix) and fs.volume.pe_start}
    return (max(starts) if starts else BOOT_AREA // 512) * 512


def _guest_lvm_steps(run_id: str, domain: str, disk: DiskFacts, pv_dev: str, tmp_dst: str,
                     pv_name: str | None = None) -> list[Step]:
    """The guest PV's head written raw, then each guest LV mapped and given its filesystem."""
    pv_name = pv_name or disk.filesystems[0].name
    steps = [Step(PEER, "write", ("dd", f"if={tmp_dst}/{pv_name}.pvhead", f"of={pv_dev}",
                                  "bs=4096", "conv=notrunc,nocreat,fsync", "status=none"),
                  note=f"guest LVM label and metadata of {pv_name}")]
    for fs in disk.filesystems:
        vol = fs.volume
        if vol is None or not fs.name.startswith(pv_name + ".") or vol.skip_reason:
            continue
        name = volume_map_name(run_id, domain, "dst", fs.name)
        steps.append(volume_map_step(PEER, name, vol, pv_dev))
        if fs.probe.type:
            steps.append(Step(PEER, "mkfs", tuple(mkfs_argv(fs.probe.type, f"/dev/mapper/{name}",
                                                            fs.probe.uuid, fs.probe.label,
                                                            fs.params)),
                              note=f"{fs.name}: empty {fs.probe.type}, same UUID, label and "
                                   "parameters"))
    return steps


def render_standby_plan(plan: StandbyPlan, source_host: str, peer_host: str) -> str:
    """The init-standby plan for people: numbered steps with their host, notes and undos,
    then each refusal."""
    lines = [f"init-standby for {plan.domain} (run {plan.run_id})", ""]
    for n, s in enumerate(plan.steps, 1):
        host = source_host if s.role == SOURCE else peer_host
        lines.append(f"{n:>3}. [{host}] {s.action:<6} {shlex.join(s.argv)}")
        if s.resource and s.action in ("dump", "table"):
            lines.append(f"      {'':<{len(host) + 2}} (table text via {s.resource})")
        if s.note:
            lines.append(f"      {'':<{len(host) + 2}} # {s.note}")
        if s.undo:
            lines.append(f"      {'':<{len(host) + 2}}   undo: {shlex.join(s.undo)}")
    for r in plan.refusals:
        lines.append(f"REFUSED: {r}")
    return "\n".join(lines)


def run_standby(plan: StandbyPlan, config: Config, source: Runner, peer: Runner,
                log: Callable[[str], None] = lambda m: None) -> None:
    """Execute the init-standby plan; everything it maps or writes to a temp dir is undone."""
    if plan.refusals:
        raise StandbyInvalid("; ".join(plan.refusals))
    runners = {SOURCE: source, PEER: peer}
    journals = {h: Journal(r, config.defaults.state_dir, plan.domain, plan.run_id)
                for h, r in runners.items()}
    tables: dict[str, str] = {}
    errors: list[str] = []
    made: list[Step] = []  # what teardown undoes, in the order it was made
    with domain_lock(config.defaults.lock_dir, plan.domain):
        try:
            for step in plan.steps:
                r = runners[step.role]
                log(f"[{r.host}] {shlex.join(step.argv)}")
                if step.undo:
                    journals[step.role].record(step.action, step.resource, step.undo,
                                               step.exists)
                    made.append(step)
                if step.action == "dump":
                    name = step.resource.rsplit("/", 1)[1]
                    tables[name] = r.run(step.argv, timeout=120).stdout
                    continue
                if step.action == "table":
                    name = step.resource.rsplit("/", 1)[1]
                    r.run(step.argv, input=tables[name], timeout=300)
                    continue
                r.run(step.argv, timeout=config.ssh.command_timeout)
                if step.action in DM_NODE_ACTIONS:
                    ensure_dm_node(r, step.resource)
        finally:
            for role in (PEER, SOURCE):
                done = unwind(runners[role], [s for s in made if s.role == role], timeout=600)
                errors += [why for _, why in done.failed]
    if errors:
        raise StandbyInvalid("init-standby could not tear down: " + "; ".join(errors))
    for j in journals.values():
        j.remove()
