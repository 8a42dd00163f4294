"""Preflight: read-only facts from both hosts, and the checks that decide whether to run.

Checks come in the order an operator reads them: is the domain ours to back
up here, is the peer the right one and reachable, is the standby free and big
enough, is there room for the snapshot, are the programs there. Every check
that fails names the host and what to fix; "not running here" is a quiet skip.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from .background import Background
from .config import Config
from .errors import (
    CommandFailed,
    DomainNotDefinedHere,
    DomainRunningOnPeer,
    DomainUnknown,
    HostNotInCluster,
    MissingBinary,
    NoSnapshotSpace,
    NotRunningHere,
    ParseError,
    PeerInvalid,
    StandbyInvalid,
    StandbyPromoted,
    ThinPoolFull,
    ToolkitError,
    UnsafeName,
)
from .facts.blkid import FilesystemProbe, blkid_argv, probe_from_result
from .facts.fsparams import PARAM_TYPES, SUPERBLOCK_BYTES, FsParams, parse_params
from .facts.fsparams import read_argv as superblock_argv
from .facts.guestlvm import (
    HEAD_BYTES,
    GuestLvmError,
    GuestVG,
    fs_name,
    metadata_text,
    parse_pv_header,
    parse_vg,
    read_argv,
    to_bytes,
)
from .facts.lvm import (
    LogicalVolume,
    ThinPool,
    lv_missing,
    lvs_argv,
    parse_lvs,
    parse_pools,
    parse_vgs,
    pools_argv,
    vgs_argv,
)
from .facts.partitions import (
    Partition,
    PartitionTable,
    partition_table_from_result,
    sfdisk_argv,
)
from .facts.records import BackupFacts, DiskFacts, FsFacts
from .facts.virsh import (
    DomainDisk,
    domain_missing,
    domstate_argv,
    dumpxml_argv,
    parse_domain_disks,
    parse_domstate,
)
from .marker import PROMOTED, marker_path, promoted_message, read_marker
from .restore_points import read_point_lvs
from .runners import CommandResult, Runner
from .step_batch import run_reads

# States in which the domain is "here": its disks are in use on this host.
ACTIVE_STATES = frozenset({"running", "idle", "paused", "blocked", "in shutdown", "pmsuspended",
                           "crashed"})

SOURCE_BINARIES = ("virsh", "lvs", "vgs", "lvcreate", "lvremove", "kpartx", "dmsetup", "blkid",
                   "sfdisk", "findmnt", "mount", "umount", "rsync", "ssh", "setpriv")
PEER_BINARIES = ("virsh", "lvs", "kpartx", "dmsetup", "blkid", "sfdisk", "findmnt", "mount",
                 "umount", "rsync", "dd")

def local_node_name(config: Config, override: str | None = None) -> str:
    """This host's name in the cluster: --node, DOMU_BACKUP_NODE, or the short hostname."""
    name = override or os.environ.get("DOMU_BACKUP_NODE") or socket.gethostname().split(".")[0]
    if name not in config.dom0s:
        raise HostNotInCluster(
            f"this host is {name!r}, which is not one of the configured Dom0s "
            f"({', '.join(config.dom0s)}) in {config.path}; fix [cluster.dom0s] or pass --node",
            host=name)
    return name


def check_binaries(runner: Runner, names: tuple[str, ...]) -> None:
    """Raise MissingBinary naming the host and every program it lacks."""
    result = runner.run(["which", *names], check=False, timeout=30)
    if result.exit_code not in (0, 1):
        raise MissingBinary(f"cannot look up programs: `which` exited {result.exit_code}: "
                            f"{result.stderr.strip()[-200:]}", host=runner.host)
    found = {os.path.basename(line.strip()) for line in result.stdout.splitlines() if line.strip()}
    missing = [n for n in names if n not in found]
    if missing:
        raise MissingBinary(f"missing programs: {', '.join(missing)} (install them, e.g. lvm2, "
                            "kpartx, rsync, openssh-client, util-linux, libvirt-clients)",
                            host=runner.host)


def domain_state(runner: Runner, uri: str, domain: str) -> str | None:
    """The domain's state on that host, or None when it is not defined there."""
    result = runner.run(domstate_argv(uri, domain), check=False, timeout=60)
    if result.exit_code != 0:
        if domain_missing(result):
            return None
        runner.run(domstate_argv(uri, domain), timeout=60)  # raises CommandFailed with details
    return parse_domstate(result.stdout)


# pragma: no mutate start (invoke mutate: fact reading and threads, not guards)
def lookup_lv(runner: Runner, path: str) -> LogicalVolume | None:
    """The LV at ``path``; None when lvs says it does not exist, an error otherwise."""
    result = runner.run(lvs_argv(path), check=False, timeout=60)
    if result.exit_code != 0:
        if lv_missing(result):
            return None
        runner.run(lvs_argv(path), timeout=60)
    lvs = parse_lvs(result.stdout)
    return lvs[0] if lvs else None


def describe_holders(runner: Runner, device: str) -> str:
    """What holds a block device open, as far as the kernel shows it: its holders and mounts."""
    res = runner.run(["lsblk", "--noheadings", "--list", "--output", "NAME,TYPE,MOUNTPOINT",
                      "--", device], check=False, timeout=60)
    rows = [line.split() for line in res.stdout.splitlines()[1:] if line.strip()]
    if res.exit_code != 0 or not rows:
        return (f"held by a process or a guest, not a device (find it with `fuser -vm {device}` "
                f"or `dmsetup info`)")
    held = [f"{r[0]} ({r[1]}{', mounted at ' + r[2] if len(r) > 2 else ''})" for r in rows]
    return "held by " + ", ".join(held)


def read_layout(runner: Runner, device: str, disk_target: str) -> tuple[PartitionTable,
                                                                         tuple[FsFacts, ...]]:
    """Partition table and filesystems of a block device, probed read-only (no mapping).

    A guest LVM physical volume (a partition, or the whole disk) is followed
    by one entry per guest LV, read from the PV's own metadata (R6).
    """
    table = partition_table_from_result(runner.run(sfdisk_argv(device), check=False, timeout=60))
    found: list[FsFacts] = []
    if table.label is None:
        probe = probe_from_result(runner.run(blkid_argv(device), check=False, timeout=60))
        found.append(FsFacts(disk_target, None, probe, params=read_params(runner, device, 0,
                                                                           probe, disk_target)))
        if probe.type == "LVM2_member":
            found += _guest_volumes(runner, device, disk_target, None, 0)
    else:
        # Every partition's blkid in one command, then every superblock read in one more:
        # two round trips to the peer, whatever the number of partitions.
        size = table.sector_size
        parts = [p for p in table.partitions if not p.is_container]
        probes = dict(zip((p.number for p in parts), map(probe_from_result, run_reads(
            runner, [blkid_argv(device, offset=p.start * size, size=p.size * size)
                     for p in parts], timeout=120) if parts else []), strict=True))
        typed = [p for p in parts if probes[p.number].type in PARAM_TYPES]
        heads = dict(zip((p.number for p in typed), run_reads(
            runner, [superblock_argv(device, p.start * size) for p in typed],
            timeout=120) if typed else [], strict=True))
        for part in table.partitions:
            name = f"{disk_target}{part.number}"
            if part.is_container:
                found.append(FsFacts(name, part, FilesystemProbe(None, None, None, None, None,
                                                                 None)))
                continue
            offset, probe = part.start * size, probes[part.number]
            found.append(FsFacts(name, part, probe, params=read_params(
                runner, device, offset, probe, name, heads.get(part.number))))
            if probe.type == "LVM2_member":
                found += _guest_volumes(runner, device, name, part, offset)
    return table, tuple(found)


def read_params(runner: Runner, device: str, offset: int, probe: FilesystemProbe,
                name: str, read: CommandResult | None = None) -> FsParams | None:
    """How the filesystem blkid found at byte ``offset`` was made: one dd of its superblock
    (``read``: that dd's result, when it ran already)."""
    if probe.type not in PARAM_TYPES:
        return None
    if read is None:
        read = runner.run(superblock_argv(device, offset), timeout=60)
    elif read.exit_code != 0:
        raise CommandFailed(read)
    head = to_bytes(read.stdout)
    try:
        return parse_params(probe.type, head)
    except ParseError as exc:
        raise ParseError(f"{name} ({device} at byte {offset}): {exc}", host=runner.host) from None


def read_guest_vg(runner: Runner, device: str, offset: int, where: str) -> GuestVG:
    """The guest VG whose PV starts at byte ``offset`` of ``device``, read with dd."""
    try:
        head = to_bytes(runner.run(read_argv(device, offset, HEAD_BYTES), timeout=60).stdout)
        pv = parse_pv_header(head)
        if pv is None:
            raise GuestLvmError("blkid calls it an LVM PV but it has no LVM label")
        area = to_bytes(runner.run(read_argv(device, offset, -(-pv.mda_end // 512) * 512),
                                   timeout=120).stdout)
        return parse_vg(metadata_text(area, pv), pv)
    except (GuestLvmError, UnsafeName) as exc:
        raise type(exc)(f"guest LVM on {where} ({device} at byte {offset}): {exc}",
                        host=runner.host) from None


def _guest_volumes(runner: Runner, device: str, pv_name: str, part: Partition | None,
                   offset: int) -> list[FsFacts]:
    vg = read_guest_vg(runner, device, offset, pv_name)
    out: list[FsFacts] = []
    for vol in vg.volumes:
        probe = FilesystemProbe(None, None, None, None, None, None)
        name = fs_name(pv_name, vol.vg, vol.name)
        params = None
        if vol.skip_reason is None:
            first = vol.segments[0]
            res = runner.run(blkid_argv(device, offset=offset + vol.first_offset,
                                        size=first.length * 512), check=False, timeout=60)
            probe = probe_from_result(res)
            if first.length * 512 >= SUPERBLOCK_BYTES:
                params = read_params(runner, device, offset + vol.first_offset, probe, name)
        out.append(FsFacts(name, part, probe, vol, params))
    return out


@dataclass(frozen=True)
class Preflight:
    """What preflight found: both hosts' facts, and the domain's state on each."""
    facts: BackupFacts
    source_state: str
    peer_state: str | None


_Layout = tuple[PartitionTable, tuple[FsFacts, ...]]
# pragma: no mutate end


@dataclass(frozen=True)
class _PeerDisk:
    lv: LogicalVolume | None
    layout: _Layout | None
    # What reading this standby raised: raised only if the disk turns out to need one
    # (a swap-only disk needs none, so the peer need not have it).
    error: ToolkitError | None = None


# A disk that holds nothing but swap: old PV guests give each partition an LV of its own.
SWAP_ONLY = "holds only swap: nothing to copy, no snapshot, and no standby LV needed"


def swap_only(layout: _Layout) -> bool:
    """Whether a disk's layout holds swap and nothing else (extended containers aside)."""
    _table, filesystems = layout
    found = [fs for fs in filesystems
             if fs.volume is None and not (fs.partition is not None and fs.partition.is_container)]
    return bool(found) and all(fs.probe.type == "swap" for fs in found)


def _peer_connect(peer_factory: Callable[[str], Runner], peer_name: str) -> Runner:
    """The peer's runner, connected: its first command checks the programs it needs."""
    peer = peer_factory(peer_name)
    check_binaries(peer, PEER_BINARIES)
    return peer


def _peer_points(peer: Runner) -> tuple[LogicalVolume, ...]:
    """Every LV on the peer tagged as a restore point (``restore_points`` picks a domain's)."""
    return tuple(read_point_lvs(peer, timeout=60))


def _peer_pools(peer: Runner, disks: list[_PeerDisk]) -> tuple[ThinPool, ...]:
    """The thin pools the standby LVs are in, with their fill (none for thick LVs)."""
    names = sorted({f"{d.lv.vg}/{d.lv.pool}" for d in disks
                    if d.lv is not None and d.lv.is_thin and d.lv.pool})
    if not names:
        return ()
    return tuple(parse_pools(peer.run(pools_argv(*names), timeout=60).stdout))


def _peer_disks(peer: Runner, targets: list[tuple[str, str]]) -> list[_PeerDisk]:
    """Each standby LV and, where it exists and is free, its layout (read-only)."""
    out: list[_PeerDisk] = []
    for path, disk_target in targets:
        try:
            lv = lookup_lv(peer, path)
            layout = read_layout(peer, lv.path, disk_target) if lv and not lv.is_open else None
        except ToolkitError as exc:
            out.append(_PeerDisk(None, None, exc))
            continue
        out.append(_PeerDisk(lv, layout))
    return out


def locate(config: Config, domain: str, source: Runner, local_name: str, *,
           stopped_ok: bool = False) -> str:
    """The domain's state here, if it runs here and its peer is another Dom0; raises otherwise.

    Only the local hypervisor is asked: a run learns whether it is the source before it
    connects to the peer or touches anything.
    """
    domain_cfg = config.domain(domain)
    uri = config.hypervisor_uri
    peer_name = domain_cfg.peer
    state = domain_state(source, uri, domain)
    if state is None:
        raise DomainNotDefinedHere(f"domain {domain} is not defined in {uri}", host=local_name)
    if state not in ACTIVE_STATES and not stopped_ok:
        raise NotRunningHere(f"domain {domain} is {state} here; nothing to do", host=local_name)
    # Running here: this host is the source, so the peer must be another Dom0.
    if peer_name == local_name:
        raise PeerInvalid(f"domain {domain} runs here and its peer {peer_name!r} is this "
                          f"host; set domains.{domain}.peer to the other Dom0 in {config.path}",
                          host=local_name)
    if peer_name not in config.dom0s:
        raise PeerInvalid(f"domain {domain}: peer {peer_name!r} is not a configured Dom0",
                          host=local_name)
    return state


def connect_peer(peer_factory: Callable[[str], Runner], peer_name: str) -> Runner:
    """The peer's runner, connected, with the programs a run needs there."""
    return _peer_connect(peer_factory, peer_name)


def gather(config: Config, domain: str, source: Runner, peer_factory: Callable[[str], Runner],
           local_name: str, *, state: str | None = None,
           connected: Runner | None = None) -> tuple[Preflight, Runner]:
    """Run every read-only check and collect the facts the plan needs.

    Returns the facts and the peer runner (already connected), or raises the
    error of the first failed check. Once the domain is known to run here, the
    peer's reads (connect, programs, domain state, standby LVs and layouts) run on
    a second thread beside the source's; every check is then applied in a fixed
    order, the source's first, so the error reported does not depend on timing.
    ``state`` is the domain's state from ``locate`` when the caller already has it, and
    ``connected`` the peer's runner from ``connect_peer`` (its programs already checked).
    """
    uri = config.hypervisor_uri
    peer_name = config.domain(domain).peer
    if state is None:
        state = locate(config, domain, source, local_name)

    peer_reads = _PeerReads(peer_factory, peer_name, uri, domain, connected=connected,
                            marker=marker_path(config, domain))
    try:
        return _read_facts(config, domain, source, local_name, state, peer_reads)
    except ToolkitError:
        # A failed source check: let the peer's reads end first, so no connection is
        # still being made while the caller closes its runners. (A signal does not wait.)
        peer_reads.wait()
        raise


# pragma: no mutate start (invoke mutate: the peer's reads on threads, not guards)
class _PeerReads:
    """The peer's reads on threads of their own, beside the source's.

    The connection (with the check of the peer's programs) comes first; then the
    domain's state there and, once the source has named the disks, the standby LVs
    and their layouts are read side by side, over the one connection. The layouts
    of a standby LV that is open are never read; all of it is discarded if the
    domain turns out to run on the peer.
    """

    def __init__(self, peer_factory: Callable[[str], Runner], peer_name: str, uri: str,
                 domain: str, *, marker: str, connected: Runner | None = None) -> None:
        self.connected = Background(
            (lambda: connected) if connected is not None
            else (lambda: _peer_connect(peer_factory, peer_name)), "preflight-peer")
        # The domain's state there, then the standby's marker ({} when there is none).
        self.state = Background(
            lambda: (domain_state(self.runner(), uri, domain),
                     read_marker(self.runner(), ("cat", "--", marker))),
            "preflight-peer-state")
        self.disks: Background | None = None

    def runner(self) -> Runner:
        return self.connected.result()  # type: ignore[return-value]

    def read_disks(self, targets: list[tuple[str, str]], *, points: bool) -> None:
        """The standby LVs and layouts, then their thin pools and (when the domain keeps
        restore points) the peer's points, on one thread."""
        def read() -> tuple[list[_PeerDisk], tuple[ThinPool, ...], tuple[LogicalVolume, ...]]:
            disks = _peer_disks(self.runner(), targets)
            return (disks, _peer_pools(self.runner(), disks),
                    _peer_points(self.runner()) if points else ())
        self.disks = Background(read, "preflight-peer-disks")

    def wait(self) -> None:
        for bg in (self.connected, self.state, self.disks):
            if bg is not None:
                bg.wait()
# pragma: no mutate end


def _read_facts(config: Config, domain: str, source: Runner, local_name: str, state: str,
                 peer_reads: _PeerReads) -> tuple[Preflight, Runner]:
    domain_cfg = config.domain(domain)
    uri = config.hypervisor_uri
    peer_name, peer_spec = config.peer_of(domain)
    check_binaries(source, SOURCE_BINARIES)
    disks = parse_domain_disks(source.run(dumpxml_argv(uri, domain), timeout=60).stdout, domain)
    backed = [d for d in disks if d.skip_reason is None]
    skipped = tuple(d for d in disks if d.skip_reason is not None)
    if not backed:
        raise DomainUnknown(f"domain {domain} has no block-device disk to back up "
                            f"({', '.join(f'{d.target}: {d.skip_reason}' for d in skipped)})",
                            host=local_name)
    targets: list[tuple[str, str]] = []
    for disk in backed:
        assert disk.source is not None
        spec = domain_cfg.disks.get(disk.target)
        targets.append((spec.standby_lv if spec and spec.standby_lv else disk.source,
                        disk.target))

    keeps_points = domain_cfg.effective_restore_points(config.defaults).retention.enabled
    peer_reads.read_disks(targets, points=keeps_points)
    try:
        source_disks, vg_need, vg_free = _source_disks(config, domain, source, local_name, backed)
    except ToolkitError:
        peer_reads.wait()
        raise

    # The peer's checks, in a fixed order: connection and programs, domain state, disks.
    peer = peer_reads.runner()
    state_and_marker: tuple[str | None, dict] = peer_reads.state.result()  # type: ignore[assignment]
    peer_state, marker = state_and_marker
    if peer_state is not None and peer_state in ACTIVE_STATES:
        peer_reads.wait()
        raise DomainRunningOnPeer(
            f"domain {domain} is {peer_state} on {peer_name}: its standby disks are in use "
            "there; refusing to touch them", host=peer_name)
    if marker.get("state") == PROMOTED:
        # R25: a promoted standby is never written, whether its guest runs now or not.
        peer_reads.wait()
        raise StandbyPromoted(promoted_message(domain, peer_name, marker), host=peer_name)
    assert peer_reads.disks is not None
    peer_read: tuple[list[_PeerDisk], tuple[ThinPool, ...], tuple[LogicalVolume, ...]] = (
        peer_reads.disks.result())  # type: ignore[assignment]
    peer_disks, pools, points = peer_read
    disk_facts: list[DiskFacts] = []
    for disk, (target_path, _), (lv, layout), theirs in zip(
            backed, targets, source_disks, peer_disks, strict=True):
        if swap_only(layout):
            # Probed before its standby is demanded: nothing to copy, no warning.
            skipped += (dataclasses.replace(disk, skip_reason=SWAP_ONLY, warning=False),)
            continue
        if theirs.error is not None:
            raise theirs.error
        table, filesystems = layout
        tlv = theirs.lv
        if tlv is None:
            raise StandbyInvalid(f"standby LV {target_path} for disk {disk.target} does not "
                                f"exist; create it (at least {lv.size_bytes} bytes) and run "
                                "init-standby", host=peer_name)
        if tlv.is_open:
            # The tool's own leftovers were cleaned before this look (under the lock), so
            # what holds it is not a run of this domain: say what it is and what to do.
            raise StandbyInvalid(f"standby LV {target_path} is open (in use) on {peer_name}, "
                                f"not by this tool: {describe_holders(peer, tlv.path)}; stop "
                                "that use, then run the backup again (if another Dom0's run "
                                "of this domain was killed, run `domu-backup recover` there)",
                                host=peer_name)
        if tlv.size_bytes < lv.size_bytes:
            raise StandbyInvalid(f"standby LV {target_path} is {tlv.size_bytes} bytes, smaller "
                                f"than the source {lv.path} ({lv.size_bytes} bytes)",
                                host=peer_name)
        assert theirs.layout is not None
        ttable, tfilesystems = theirs.layout
        disk_facts.append(DiskFacts(disk, lv, table, filesystems, tlv, ttable, tfilesystems))

    check_pools(pools, config.defaults.thin_pool_max_fill, peer_name)
    for vg_name, need in vg_need.items():
        free = vg_free[vg_name]
        if need > free:
            raise NoSnapshotSpace(f"volume group {vg_name} has {free} bytes free, the snapshots "
                                  f"need {need}; lower snapshot_size or free space",
                                  host=local_name)

    order = [d.target for d in disks]
    facts = BackupFacts(
        domain=domain, source_host=local_name, peer_host=peer_name,
        peer_address=peer_spec.rsync_address, peer_port=peer_spec.port,
        disks=tuple(disk_facts),
        skipped_disks=tuple(sorted(skipped, key=lambda d: order.index(d.target))),
        points=points, pools=pools,
    )
    return Preflight(facts, state, peer_state), peer


def check_pools(pools: tuple[ThinPool, ...], max_fill: int, peer_name: str) -> None:
    """Refuse a run into a thin pool whose data or metadata is fuller than ``max_fill``:
    a full pool stops every LV in it, the running guests' among them."""
    for pool in pools:
        for what, fill in (("data", pool.data_percent), ("metadata", pool.metadata_percent)):
            if fill > max_fill:
                raise ThinPoolFull(
                    f"thin pool {pool.full_name} of the standby is {fill:g}% full ({what}), "
                    f"above defaults.thin_pool_max_fill = {max_fill}; nothing was written. "
                    "Free room in it (fewer restore points: lower keep_*, or `lvextend` the "
                    "pool) before the next run", host=peer_name)


def _source_disks(config: Config, domain: str, source: Runner, local_name: str,
                  backed: list[DomainDisk]
                  ) -> tuple[list[tuple[LogicalVolume, _Layout]], dict[str, int], dict[str, int]]:
    """Each source LV and its layout, what its snapshot needs and what its VG has free.

    A disk that holds only swap gets no snapshot, so it needs no room in its VG.
    """
    domain_cfg = config.domain(domain)
    size = domain_cfg.effective_snapshot_size(config.defaults)
    vg_need: dict[str, int] = {}
    source_disks: list[tuple[LogicalVolume, _Layout]] = []
    for disk in backed:
        assert disk.source is not None
        lv = lookup_lv(source, disk.source)
        if lv is None:
            raise StandbyInvalid(f"disk {disk.target} of {domain}: {disk.source} is not an LVM "
                                "logical volume on this host", host=local_name)
        if lv.is_snapshot:
            raise StandbyInvalid(f"disk {disk.target}: {disk.source} is itself a snapshot",
                                host=local_name)
        layout = read_layout(source, lv.path, disk.target)
        source_disks.append((lv, layout))
        if swap_only(layout):
            continue
        if size.percent_origin is not None:
            need = lv.size_bytes * size.percent_origin // 100
        else:
            need = size.bytes()
        vg_need[lv.vg] = vg_need.get(lv.vg, 0) + need
    vg_free: dict[str, int] = {}
    for vg_name in vg_need:
        vgs = parse_vgs(source.run(vgs_argv(vg_name), timeout=60).stdout)
        vg_free[vg_name] = vgs[0].free_bytes if vgs else 0
    return source_disks, vg_need, vg_free
