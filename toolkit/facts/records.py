"""What preflight learned about both hosts: the fact records the plan reads.

Preflight builds these from read-only commands on the source and the peer
(``toolkit.preflight``); ``toolkit.plan`` turns them into steps. They describe
the hosts, never what to do, so they sit with the facts and import nothing
above them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .blkid import FilesystemProbe
from .fsparams import FsParams
from .guestlvm import GuestVolume
from .lvm import LogicalVolume, ThinPool
from .partitions import Partition, PartitionTable
from .virsh import DomainDisk


@dataclass(frozen=True)
class FsFacts:
    """One filesystem candidate on a disk: a partition, or the whole disk."""

    name: str  # "xvda1", "xvda" for a whole-disk filesystem, "xvda2.vg0.root" for a guest LV
    partition: Partition | None
    probe: FilesystemProbe
    volume: GuestVolume | None = None  # a guest LV inside the PV on this partition (or disk)
    params: FsParams | None = None  # how it was made (superblock), for ext2/3/4, XFS and FAT


@dataclass(frozen=True)
class DiskFacts:
    """What preflight learned about one guest disk on both hosts."""

    disk: DomainDisk
    source_lv: LogicalVolume
    table: PartitionTable
    filesystems: tuple[FsFacts, ...]
    standby_lv: LogicalVolume
    standby_table: PartitionTable
    standby_filesystems: tuple[FsFacts, ...]


@dataclass(frozen=True)
class BackupFacts:
    """Everything the plan depends on, gathered by read-only commands."""

    domain: str
    source_host: str  # cluster name of this host
    peer_host: str  # cluster name of the peer
    peer_address: str  # user@host for rsync
    peer_port: int
    disks: tuple[DiskFacts, ...]
    skipped_disks: tuple[DomainDisk, ...] = ()
    # The peer's restore point LVs (every LV tagged as one; read only when the domain keeps
    # points) and the thin pools its standby LVs are in.
    points: tuple[LogicalVolume, ...] = ()
    pools: tuple[ThinPool, ...] = ()
