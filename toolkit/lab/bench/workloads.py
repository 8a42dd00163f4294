"""The bench's scales, workloads, methods and guests, and what it writes into the fake Dom0s."""

from __future__ import annotations

import copy
import tomllib
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import UsageError
from .plain_script import SNAPSHOT_PREFIX as PLAIN_SNAPSHOT_PREFIX

MIB = 1024 * 1024
SOURCE_HOST = "dom0-a"
PEER_HOST = "dom0-b"
SOURCE_VG = "vg_a"
PEER_VG = "vg_b"
PEER_ADDRESS = f"root@{PEER_HOST}"
BENCH_DIR = "/var/lib/domu-bench"
IMAGES = f"{BENCH_DIR}/images"
WORKDIR = f"{BENCH_DIR}/work"
MOUNT_ROOT = "/run/domu-bench"
CONFIG_PATH = "/etc/domu-backup/bench.toml"
THIN_CONFIG_PATH = "/etc/domu-backup/bench-thin.toml"  # the toolkit onto thin standbys
PARALLEL_CONFIG_PATH = "/etc/domu-backup/bench-parallel.toml"
NODE_PATH = "/etc/domu-backup/bench-node.xml"
REPORT_DIR = f"{BENCH_DIR}/reports"
# The bench program (see bench_program), put on both fake Dom0s at setup.
PROGRAM_PATH = f"{BENCH_DIR}/bench_program.py"
# An extra PV is named like the sandbox's own (another directory, same file name), so
# sandbox.down's sweep, which matches loop devices by backing file name, detaches it too.
EXTRA_PV_DIR = "/var/lib/domu-lab/bench"
SCRATCH_LV = "bench_scratch"
# The ``points`` workload's LVs: a thick LV (with classic snapshots), a thin pool and a thin
# LV in it (with a thin snapshot), each the scratch size.
POINTS_LV, POINTS_POOL, POINTS_THIN = "bench_points", "bench_pool", "bench_thin"
SNAPSHOT_SIZE = "20%ORIGIN"
SNAPSHOT_SHARE = 0.2
MARGIN = 64 * MIB
EXTRA_PV_STEP = 256 * MIB
METER_POLL = 0.25
METER_TIMEOUT = 6 * 3600.0
OVERHEAD_TARGET = 1.10
# toolkit / plain-script wall time at most: the safety's cost over the flow an operator
# would script by hand (no journal, guards, marker, lock, recover check or report).
PLAIN_TARGETS = {"full": 1.02, "nochange": 1.10, "churn": 1.10}
CGROUP_CPU_FILES = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpuacct/cpuacct.usage",
                    "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage")

WORKLOADS = ("full", "nochange", "churn", "twodisk", "guest", "cipher", "points",
             "pointchurn", "files")
# The ssh ciphers compared by the ``cipher`` workload (the first is OpenSSH's default).
CIPHERS = ("chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "aes128-ctr")
# A workload that needs the targets to hold an earlier copy runs after the one making it.
REQUIRES = {"nochange": "full", "churn": "full", "pointchurn": "full"}
WORKLOAD_DOMAIN = {"full": "bench01", "nochange": "bench01", "churn": "bench01",
                   "twodisk": "bench02", "pointchurn": "bench01", "files": "bench03"}
# The pointchurn workload: the toolkit's churn run with restore points on its standby, each
# variant (what, how many points, thin) after a churn of its own.
POINT_VARIANTS = (("no point", 0, False), ("1 classic point", 1, False),
                  ("3 classic points", 3, False), ("thin standby, 1 thin point", 1, True))
POINT_POOL = "bench_rp_pool"  # the thin pool of the thin standbys (pointchurn)
METHODS = ("toolkit", "toolkit-parallel", "plain-script", "bare-rsync", "bare-parallel",
           "block-delta", "block-copy")
TOOLKIT_METHODS = ("toolkit", "toolkit-parallel")
# The snapshot LVs' name prefix of the methods that take one (the meter times each).
SNAPSHOT_WATCH = {"toolkit": "domubk-", "toolkit-parallel": "domubk-",
                  "plain-script": PLAIN_SNAPSHOT_PREFIX}
PARALLEL_JOBS = 2  # toolkit-parallel's copy_jobs
# Between the outputs of the rsyncs of bare-parallel (printed one after another at the end).
PARALLEL_SEPARATOR = "=== bench: next rsync ==="
# The toolkit's phases (DomainReport.phases), in the order a run goes through them.
TOOLKIT_PHASES = ("preflight", "recover", "snapshot", "map", "mount", "peer", "guards", "marker",
                  "rsync", "teardown")
# Phases that end before the snapshot is taken.
BEFORE_SNAPSHOT = ("preflight", "recover")
# Wall time the report does not split: process start, config, the report, the exit.
OTHER = "other"
CHURN_PERCENT = 1.0
CHURN_SEED = 7
# The ``files`` workload: a no-change run at each of the scale's file counts, on its own
# guest, the toolkit against the plain script (and the bare rsync, if chosen); the other
# methods sit it out, and its guest gets only their targets.
FILES = "files"
FILES_DOMAIN = WORKLOAD_DOMAIN[FILES]
FILES_METHODS = ("toolkit", "plain-script", "bare-rsync")
FILES_DIR = "data/files"  # under the guest's root filesystem
FILES_PER_DIR = 1000  # files a subdirectory of FILES_DIR
FILE_SIZES = (256, 2048)  # bytes of each file: seeded, between these (one ext4 block each)
# Sizing bench03's disk (files_disk_size). Its filesystem is built empty (minimal tree on
# the source, nothing on a standby), and build_disk_image passes mkfs.ext4 an inode count
# (-N) only for a staged tree too big for the default: so mke2fs.conf's ratio decides, one
# inode per 16 KiB for a filesystem of 512 MiB and more (below that, its "small" type).
EXT4_INODE_RATIO = 16384
FILES_INODE_SLACK = 1024  # reserved inodes, lost+found, the minimal tree, FILES_DIR
FILES_MIN_DISK = 640 * MIB  # keeps the filesystem out of mke2fs's "small" type
FILES_DISK_STEP = 64 * MIB
PARTITION_START = MIB  # where a dos disk's first partition starts



# -- scales, workloads and the bench guests -----------------------------------------------

@dataclass(frozen=True)
class Scale:
    """How big the bench guests are built."""

    name: str
    tree: int  # build_disk_image's scale: 500 small and two 1-3 MiB files per unit per fs
    disk_factor: int  # every size in the recipe is multiplied by this
    large_files: int  # extra large files in bench01's root filesystem
    large_file_mib: int
    scratch_mib: int  # the scratch LV of the guest-cost write test (half of it is written)
    # The ``files`` workload's counts, in the order measured: files held under FILES_DIR of
    # bench03's root filesystem at each no-change run (bench03's disk is sized from the last).
    file_counts: tuple[int, ...] = ()


SCALES = {
    "small": Scale("small", tree=4, disk_factor=1, large_files=2, large_file_mib=32,
                   scratch_mib=256, file_counts=(5_000, 20_000, 50_000)),
    "large": Scale("large", tree=20, disk_factor=4, large_files=2, large_file_mib=256,
                   scratch_mib=1024, file_counts=(20_000, 100_000, 300_000)),
}


def get_scale(name: str) -> Scale:
    """The Scale named by ``--scale``; UsageError for any other name."""
    try:
        return SCALES[name]
    except KeyError:
        raise UsageError(f"--scale must be one of {', '.join(SCALES)}, got {name!r}") from None


@dataclass(frozen=True)
class WorkloadRun:
    """One workload to run, and whether it was asked for (or is only needed by one that was)."""

    name: str
    requested: bool  # False: run only because a requested workload needs its result


def _chosen(text: str | Iterable[str], allowed: Sequence[str], what: str) -> list[str]:
    """Names from a comma-separated option (or a list), each one of ``allowed``."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise UsageError(f"unknown {what}(s) {', '.join(unknown)}: choose from "
                         f"{', '.join(allowed)}")
    return names


def plan_workloads(text: str | Iterable[str] = "") -> tuple[WorkloadRun, ...]:
    """The workloads to run, in order, from ``--workloads`` (comma-separated; empty: all)."""
    wanted = set(_chosen(text, WORKLOADS, "workload") or WORKLOADS)
    needed = wanted | {REQUIRES[n] for n in wanted if n in REQUIRES}
    return tuple(WorkloadRun(n, n in wanted) for n in WORKLOADS if n in needed)


def plan_methods(text: str | Iterable[str] = "") -> tuple[str, ...]:
    """The methods to measure, in METHODS order, from ``--methods`` (comma-separated; empty:
    all). Each needs its own targets, so one left out is neither set up nor run."""
    names = _chosen(text, METHODS, "method")
    return tuple(m for m in METHODS if not names or m in names)


def bench_command(scale: str, workloads: Sequence[WorkloadRun],
                  methods: Sequence[str] = METHODS) -> str:
    """The command line that reproduces a run (for the JSON and the README)."""
    cmd = f"invoke bench --scale {scale}"
    asked = [w.name for w in workloads if w.requested]
    if asked != list(WORKLOADS):
        cmd += " --workloads " + ",".join(asked)
    if tuple(methods) != METHODS:
        cmd += " --methods " + ",".join(methods)
    return cmd


def scaled_recipe_data(data: Mapping[str, Any], factor: int) -> dict[str, Any]:
    """A recipe's TOML data with the size of every disk and sized partition multiplied."""
    from ..guests import parse_size

    out = copy.deepcopy(dict(data))
    disks = out["disks"] if "disks" in out else [out]
    for disk in disks:
        for table in (disk, *disk.get("partitions", ())):
            if "size" in table:
                table["size"] = f"{parse_size(table['size']) * factor // MIB}M"
    return out


def files_disk_size(count: int) -> int:
    """Bytes of bench03's disk (one partition from PARTITION_START to its end) for ``count``
    files under FILES_DIR: one inode for each at mkfs's default ratio (see EXT4_INODE_RATIO),
    and for each subdirectory, plus FILES_INODE_SLACK, an eighth more for headroom, in whole
    FILES_DISK_STEP, at least FILES_MIN_DISK.

    Blocks are then no limit: a file of FILE_SIZES takes one 4 KiB block of the 16 KiB its
    inode brings.
    """
    if count < 0:
        raise ValueError(f"a file count is not negative, got {count}")
    inodes = count + -(-count // FILES_PER_DIR) + FILES_INODE_SLACK
    size = max(inodes * EXT4_INODE_RATIO * 9 // 8 + PARTITION_START, FILES_MIN_DISK)
    return -(-size // FILES_DISK_STEP) * FILES_DISK_STEP


def files_recipe_data(data: Mapping[str, Any], counts: Sequence[int]) -> dict[str, Any]:
    """bench03's TOML data with its disk sized for the largest of ``counts`` (its one
    partition has no size: it takes the disk)."""
    out = copy.deepcopy(dict(data))
    out["size"] = f"{files_disk_size(max(counts, default=0)) // MIB}M"
    return out


def load_bench_domain(checkout: Path, name: str, scale: Scale):  # DomainRecipe
    """A bench guest's recipe with its sizes scaled (validated like any recipe); the files
    workload's guest is sized from the scale's file counts instead."""
    from ..guests import parse_domain

    path = checkout / "fixtures" / "guests" / f"{name}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    sized = (files_recipe_data(data, scale.file_counts) if name == FILES_DOMAIN
             else scaled_recipe_data(data, scale.disk_factor))
    return parse_domain(sized, source=str(path), default_name=name)


@dataclass(frozen=True)
class BenchDisk:
    """One disk of a bench guest and its LVs: the source on dom0-a, three targets on dom0-b."""

    domain: str
    device: str
    size: int

    @property
    def lv_name(self) -> str:
        """The disk's LV name on both hosts: ``<domain>_<device>``."""
        return f"{self.domain}_{self.device}"

    @property
    def source_lv(self) -> str:
        """The source LV on dom0-a."""
        return f"/dev/{SOURCE_VG}/{self.lv_name}"

    @property
    def standby_lv(self) -> str:
        """The toolkit's target (the configured standby)."""
        return f"/dev/{PEER_VG}/{self.lv_name}"

    @property
    def thin_lv(self) -> str:
        """The toolkit's thin standby (pointchurn): a thin LV holding the standby's copy."""
        return f"/dev/{PEER_VG}/{self.lv_name}_thin"

    @property
    def bare_lv(self) -> str:
        """The bare rsync's target: same layout as the standby."""
        return f"/dev/{PEER_VG}/{self.lv_name}_bare"

    @property
    def plain_lv(self) -> str:
        """The plain script's standby: same layout as the toolkit's."""
        return f"/dev/{PEER_VG}/{self.lv_name}_plain"

    @property
    def standby_parallel_lv(self) -> str:
        """toolkit-parallel's target (its configured standby)."""
        return f"/dev/{PEER_VG}/{self.lv_name}_tkp"

    @property
    def par_lv(self) -> str:
        """bare-parallel's target: same layout as the standby."""
        return f"/dev/{PEER_VG}/{self.lv_name}_par"

    @property
    def block_lv(self) -> str:
        """The block copies' target (delta first, then the full copy)."""
        return f"/dev/{PEER_VG}/{self.lv_name}_blk"

    @property
    def source_image(self) -> str:
        """The built image of the source disk."""
        return f"{IMAGES}/{self.lv_name}.img"

    @property
    def standby_image(self) -> str:
        """The built image of the standby disk: the source's layout, its filesystems empty."""
        return f"{IMAGES}/{self.lv_name}-standby.img"


def bench_disks(domain) -> tuple[BenchDisk, ...]:  # DomainRecipe
    """The bench disks of a bench guest's recipe, one per disk."""
    return tuple(BenchDisk(domain.name, d.device, d.size) for d in domain.disks)


def method_targets(d: BenchDisk) -> dict[str, str]:
    """Each method's target LV for a disk, in METHODS order (the block methods share one)."""
    return {"toolkit": d.standby_lv, "toolkit-parallel": d.standby_parallel_lv,
            "plain-script": d.plain_lv, "bare-rsync": d.bare_lv, "bare-parallel": d.par_lv,
            "block-delta": d.block_lv, "block-copy": d.block_lv}


def disk_methods(d: BenchDisk) -> tuple[str, ...]:
    """The methods that run on a disk's guest: FILES_METHODS on the files workload's, else all."""
    return FILES_METHODS if d.domain == FILES_DOMAIN else METHODS


def peer_lvs(d: BenchDisk) -> tuple[str, ...]:
    """The LVs the bench makes for a disk on dom0-b: the targets of the methods that run on
    its guest, each once."""
    targets = method_targets(d)
    return tuple(dict.fromkeys(targets[m] for m in disk_methods(d)))


def files_methods(methods: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The chosen methods that take part in the files workload, and those that sit it out."""
    return (tuple(m for m in methods if m in FILES_METHODS),
            tuple(m for m in methods if m not in FILES_METHODS))


def space_needed(disks: Sequence[BenchDisk], scale: Scale, *, guest: bool,
                 points: bool = False, pointchurn: bool = False) -> dict[str, int]:
    """Bytes each VG needs for the bench's LVs (and, on dom0-a, the snapshots' room)."""
    by_domain: dict[str, int] = {}
    for d in disks:
        by_domain[d.domain] = by_domain.get(d.domain, 0) + d.size
    # One domain is backed up at a time; its snapshots take SNAPSHOT_SIZE of its disks.
    snapshots = int(max(by_domain.values(), default=0) * SNAPSHOT_SHARE) + 8 * MIB * len(disks)
    source = sum(d.size for d in disks) + snapshots + MARGIN
    if guest:
        source += 2 * scale.scratch_mib * MIB  # the scratch LV and its snapshot
    if points:  # a thick LV and two classic snapshots, a thin pool of twice the size
        source += 5 * scale.scratch_mib * MIB + MARGIN
    # Each method's target (see peer_lvs): six a disk; three on the files workload's guest.
    peer = sum(len(peer_lvs(d)) * d.size for d in disks) + MARGIN
    if pointchurn:  # three classic points of 20%, and a thin pool holding a standby's copy
        peer += 3 * sum(d.size for d in disks) + MARGIN
    return {SOURCE_VG: source, PEER_VG: peer}


def extra_pv_size(need: int, free: int) -> int:
    """Size of the PV to add to a VG with ``free`` bytes so ``need`` fits (0: it fits)."""
    if need <= free:
        return 0
    short = need - free + MARGIN
    return -(-short // EXTRA_PV_STEP) * EXTRA_PV_STEP


# -- what the bench writes into the fake Dom0s ---------------------------------------------

def node_xml(domains: Mapping[str, Sequence[BenchDisk]], vg: str, *, running: bool) -> str:
    """A libvirt test-driver node with the bench guests, their disks on ``vg``."""
    state = 1 if running else 5
    parts = ['<?xml version="1.0"?>',
             "<!-- written by invoke bench: the bench guests only (virDomainState 1 = running, "
             "5 = shut off) -->",
             '<node xmlns:test="http://libvirt.org/schemas/domain/test/1.0">',
             "  <cpu><mhz>2000</mhz><model>lab</model><nodes>1</nodes><sockets>1</sockets>"
             "<cores>2</cores><threads>1</threads></cpu>",
             "  <memory>8388608</memory>"]
    for name, disks in domains.items():
        uid = uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{name}.bench.domu-backup")
        parts += ['  <domain type="test">', f"    <name>{name}</name>",
                  f"    <uuid>{uid}</uuid>", '    <memory unit="MiB">512</memory>',
                  "    <vcpu>1</vcpu>", "    <os><type>hvm</type></os>", "    <devices>"]
        for d in disks:
            parts += ['      <disk type="block" device="disk">',
                      f'        <source dev="/dev/{vg}/{d.lv_name}"/>',
                      f'        <target dev="{d.device}" bus="xen"/>', "      </disk>"]
        parts += ["    </devices>", f"    <test:runstate>{state}</test:runstate>", "  </domain>"]
    parts.append("</node>")
    return "\n".join(parts) + "\n"


def bench_config(domains: Mapping[str, Sequence[BenchDisk]], *, key: str,
                 known_hosts: str, copy_jobs: int = 1, thin: bool = False) -> str:
    """The toolkit config for the bench guests (same cluster and SSH key as the sandbox's).

    With ``copy_jobs`` above 1 it is toolkit-parallel's: its own standby LVs; with ``thin``
    the pointchurn workload's thin standbys.
    """
    def target(d: BenchDisk) -> str:
        if thin:
            return d.thin_lv
        return d.standby_lv if copy_jobs == 1 else d.standby_parallel_lv

    lines = ["# written by invoke bench: the bench guests only", "[cluster.dom0s]",
             f'{SOURCE_HOST} = "ssh://root@{SOURCE_HOST}:22"',
             f'{PEER_HOST} = "ssh://root@{PEER_HOST}:22"', "",
             "[hypervisor]", f'uri = "test://{NODE_PATH}"', "",
             "[ssh]", f'key = "{key}"', f'known_hosts = "{known_hosts}"', "",
             "[defaults]", f'snapshot_size = "{SNAPSHOT_SIZE}"', f'report_dir = "{REPORT_DIR}"',
             f"copy_jobs = {copy_jobs}"]
    for name, disks in domains.items():
        lines += ["", f"[domains.{name}]", f'peer = "{PEER_HOST}"']
        for d in disks:
            lines += ["", f"[domains.{name}.disks.{d.device}]", f'standby_lv = "{target(d)}"']
    return "\n".join(lines) + "\n"


