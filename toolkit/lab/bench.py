"""The benchmark (``invoke bench``): what the toolkit costs over a bare rsync and a block copy.

Runs in the rehearsal lab on the bench's own guests (``fixtures/guests/bench01.toml``, one
dos disk with ext4 root and /var; ``bench02.toml``, two disks), whose LVs, libvirt test
driver node and config section (``/etc/domu-backup/bench.toml``) are made at bench time:
the sandbox's own guests and files are left alone. Workloads, on the same guest data:

- ``full``: first sync onto blank targets; ``nochange``: a second run, nothing changed;
  ``churn``: about 1% of the data changed (files rewritten, added, deleted, the largest
  file appended to); ``twodisk``: a first sync of the two-disk guest (copied one after
  another or side by side?); ``guest``: what a snapshot costs the running guest (origin
  write throughput with and without one, on a scratch LV).

Methods, side by side in each workload (in this order):

- ``toolkit``: ``domu-backup backup --domu NAME`` inside dom0-a, its time split by phase
  from its own JSON report;
- ``toolkit-parallel``: the same with ``copy_jobs = 2`` (the domain's filesystems copied
  side by side), onto its own standby LVs, from its own config (``bench-parallel.toml``);
- ``bare-rsync``: the toolkit's rsync options between the same trees, already mounted
  (the origin read-only on dom0-a, a target of the same layout on dom0-b): the floor;
- ``bare-parallel``: the same rsyncs, one per filesystem, all at once (onto a third target
  of the same layout): would copying a domain's filesystems side by side pay?
- ``block-delta``: rsync of the disk device itself (``--copy-devices --write-devices
  --inplace``, every block compared), onto a block target holding the previous copy;
- ``block-copy``: ``dd | ssh dd`` of the whole disk, onto that same block target (after
  the delta, which needs the previous copy there).

Every measured command runs under a meter (a stdlib Python program run inside dom0-a)
that takes counters before and after: CPU time of its process tree, disk bytes of each
side's loop PVs (``/sys/block``: the kernel, hence sysfs, is shared by both containers),
bytes on dom0-a's network interfaces, and each container's cgroup CPU; while the command
runs it samples the first process's peak RSS and which snapshot device-mapper devices
exist. Caches are dropped before each method. Results go to
``reports/bench/<timestamp>/`` as ``bench.json``, ``bench.png`` (per-phase times, with
matplotlib) and ``table.txt``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
import posixpath
import random
import re
import resource
import shlex
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParseError, ToolkitError, UsageError
from ..log import bench as bench_log
from ..rsync import BASE_ARGS, parse_stats, ssh_argv
from ..runners import Runner

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
PARALLEL_CONFIG_PATH = "/etc/domu-backup/bench-parallel.toml"
NODE_PATH = "/etc/domu-backup/bench-node.xml"
REPORT_DIR = f"{BENCH_DIR}/reports"
# The bench program (see bench_program), put on both fake Dom0s at setup.
PROGRAM_PATH = f"{BENCH_DIR}/bench_program.py"
# An extra PV is named like the sandbox's own (another directory, same file name), so
# sandbox.down's sweep, which matches loop devices by backing file name, detaches it too.
EXTRA_PV_DIR = "/var/lib/domu-lab/bench"
SCRATCH_LV = "bench_scratch"
SNAPSHOT_SIZE = "20%ORIGIN"
SNAPSHOT_SHARE = 0.2
MARGIN = 64 * MIB
EXTRA_PV_STEP = 256 * MIB
METER_POLL = 0.25
METER_TIMEOUT = 6 * 3600.0
OVERHEAD_TARGET = 1.10
CGROUP_CPU_FILES = ("/sys/fs/cgroup/cpu.stat", "/sys/fs/cgroup/cpuacct/cpuacct.usage",
                    "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage")

WORKLOADS = ("full", "nochange", "churn", "twodisk", "guest", "cipher")
# The ssh ciphers compared by the ``cipher`` workload (the first is OpenSSH's default).
CIPHERS = ("chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
           "aes128-ctr")
# A workload that needs the targets to hold an earlier copy runs after the one making it.
REQUIRES = {"nochange": "full", "churn": "full"}
WORKLOAD_DOMAIN = {"full": "bench01", "nochange": "bench01", "churn": "bench01",
                   "twodisk": "bench02"}
METHODS = ("toolkit", "toolkit-parallel", "bare-rsync", "bare-parallel", "block-delta",
           "block-copy")
TOOLKIT_METHODS = ("toolkit", "toolkit-parallel")
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


log = bench_log


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


SCALES = {
    "small": Scale("small", tree=4, disk_factor=1, large_files=2, large_file_mib=32,
                   scratch_mib=256),
    "large": Scale("large", tree=20, disk_factor=4, large_files=2, large_file_mib=256,
                   scratch_mib=1024),
}


def get_scale(name: str) -> Scale:
    try:
        return SCALES[name]
    except KeyError:
        raise UsageError(f"--scale must be one of {', '.join(SCALES)}, got {name!r}") from None


@dataclass(frozen=True)
class WorkloadRun:
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
    from .guests import parse_size

    out = copy.deepcopy(dict(data))
    disks = out["disks"] if "disks" in out else [out]
    for disk in disks:
        for table in (disk, *disk.get("partitions", ())):
            if "size" in table:
                table["size"] = f"{parse_size(table['size']) * factor // MIB}M"
    return out


def load_bench_domain(checkout: Path, name: str, scale: Scale):  # DomainRecipe
    """A bench guest's recipe with its sizes scaled (validated like any recipe)."""
    from .guests import parse_domain

    path = checkout / "fixtures" / "guests" / f"{name}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return parse_domain(scaled_recipe_data(data, scale.disk_factor), source=str(path),
                        default_name=name)


@dataclass(frozen=True)
class BenchDisk:
    """One disk of a bench guest and its LVs: the source on dom0-a, three targets on dom0-b."""

    domain: str
    device: str
    size: int

    @property
    def lv_name(self) -> str:
        return f"{self.domain}_{self.device}"

    @property
    def source_lv(self) -> str:
        return f"/dev/{SOURCE_VG}/{self.lv_name}"

    @property
    def standby_lv(self) -> str:
        """The toolkit's target (the configured standby)."""
        return f"/dev/{PEER_VG}/{self.lv_name}"

    @property
    def bare_lv(self) -> str:
        """The bare rsync's target: same layout as the standby."""
        return f"/dev/{PEER_VG}/{self.lv_name}_bare"

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
        return f"{IMAGES}/{self.lv_name}.img"

    @property
    def standby_image(self) -> str:
        return f"{IMAGES}/{self.lv_name}-standby.img"


def bench_disks(domain) -> tuple[BenchDisk, ...]:  # DomainRecipe
    return tuple(BenchDisk(domain.name, d.device, d.size) for d in domain.disks)


def space_needed(disks: Sequence[BenchDisk], scale: Scale, *, guest: bool) -> dict[str, int]:
    """Bytes each VG needs for the bench's LVs (and, on dom0-a, the snapshots' room)."""
    by_domain: dict[str, int] = {}
    for d in disks:
        by_domain[d.domain] = by_domain.get(d.domain, 0) + d.size
    # One domain is backed up at a time; its snapshots take SNAPSHOT_SIZE of its disks.
    snapshots = int(max(by_domain.values(), default=0) * SNAPSHOT_SHARE) + 8 * MIB * len(disks)
    source = sum(d.size for d in disks) + snapshots + MARGIN
    if guest:
        source += 2 * scale.scratch_mib * MIB  # the scratch LV and its snapshot
    return {SOURCE_VG: source, PEER_VG: 5 * sum(d.size for d in disks) + MARGIN}


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
                 known_hosts: str, copy_jobs: int = 1) -> str:
    """The toolkit config for the bench guests (same cluster and SSH key as the sandbox's).

    With ``copy_jobs`` above 1 it is toolkit-parallel's: its own standby LVs.
    """
    def target(d: BenchDisk) -> str:
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
            lines += ["", f"[domains.{name}.disks.{d.device}]", f'target_lv = "{target(d)}"']
    return "\n".join(lines) + "\n"


# -- parsers of the counters and outputs ---------------------------------------------------

def parse_proc_io(text: str) -> dict[str, int]:
    """``/proc/<pid>/io``: ``rchar``, ``read_bytes``, ``write_bytes``... as integers."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = int(value)
        except ValueError:
            raise ParseError(f"/proc/<pid>/io: {line!r} is not 'name: number'") from None
    return out


@dataclass(frozen=True)
class BlockStat:
    read_bytes: int
    written_bytes: int


def parse_block_stat(text: str) -> BlockStat:
    """``/sys/block/<dev>/stat``: sectors read (field 3) and written (field 7), 512 bytes each."""
    fields = text.split()
    if len(fields) < 11 or not all(f.isdigit() for f in fields):
        raise ParseError(f"/sys/block/<dev>/stat: expected 11 or more numbers, got {text!r}")
    return BlockStat(int(fields[2]) * 512, int(fields[6]) * 512)


def parse_net_dev(text: str) -> dict[str, tuple[int, int]]:
    """``/proc/net/dev``: interface -> (bytes received, bytes sent)."""
    out: dict[str, tuple[int, int]] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or "|" in line:
            continue
        fields = rest.split()
        if len(fields) < 9 or not all(f.isdigit() for f in fields):
            raise ParseError(f"/proc/net/dev: unexpected line {line!r}")
        out[name.strip()] = (int(fields[0]), int(fields[8]))
    return out


def parse_cgroup_cpu(text: str) -> float:
    """CPU seconds of a cgroup: v2 ``cpu.stat`` (usage_usec) or v1 ``cpuacct.usage`` (ns)."""
    stripped = text.strip()
    if stripped.isdigit():
        return int(stripped) / 1e9
    for line in stripped.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.strip().isdigit():
            return int(value) / 1e6
    raise ParseError(f"cgroup CPU: neither cpu.stat nor cpuacct.usage: {text[:200]!r}")


@dataclass(frozen=True)
class DdResult:
    bytes: int
    seconds: float

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds > 0 else 0.0


_DD_RE = re.compile(r"^(?P<bytes>\d+) bytes\b.*\bcopied, (?P<secs>[0-9.]+(?:e[-+]?\d+)?) s\b",
                    re.MULTILINE)


def parse_dd(text: str) -> DdResult:
    """dd's closing line (LC_ALL=C): ``N bytes (...) copied, T s, R MB/s``."""
    found = list(_DD_RE.finditer(text))
    if not found:
        raise ParseError(f"dd printed no 'bytes ... copied' line: {text[-300:]!r}")
    m = found[-1]
    return DdResult(int(m.group("bytes")), float(m.group("secs")))


def parse_pv_names(text: str) -> list[str]:
    """Kernel names (``loop3``) of the PVs ``pvs --noheadings -o pv_name`` lists."""
    out = []
    for line in text.splitlines():
        name = line.strip()
        if name:
            if not name.startswith("/dev/"):
                raise ParseError(f"pvs: {name!r} is not a device path")
            out.append(posixpath.basename(name))
    return out


@dataclass(frozen=True)
class Counters:
    """Raw counter texts taken by the meter at one moment (None: not readable there)."""

    proc_io: str | None
    net_dev: str | None
    cgroup_cpu: str | None
    block: dict[str, str | None]


@dataclass(frozen=True)
class StepResult:
    argv0: str
    exit_code: int
    wall: float
    hwm_kib: int  # the step's first process's peak RSS (sampled)
    stdout: str
    stderr: str


@dataclass(frozen=True)
class MeterResult:
    exit_code: int
    wall: float
    steps: tuple[StepResult, ...]
    user: float  # CPU seconds of the meter's process tree
    system: float
    maxrss_kib: int  # largest process of the tree
    dm_seen: dict[str, tuple[float, float]]  # watched dm names: first and last seen
    before: Counters
    after: Counters


def _counters(raw: Mapping[str, Any]) -> Counters:
    return Counters(raw.get("proc_io"), raw.get("net_dev"), raw.get("cgroup_cpu"),
                    dict(raw.get("block") or {}))


def parse_meter(text: str) -> MeterResult:
    """The meter program's JSON (its last line of output)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        raw = json.loads(lines[-1])
        steps = tuple(StepResult(s["argv0"], int(s["exit_code"]), float(s["wall"]),
                                 int(s["hwm_kib"]), s["stdout"], s["stderr"])
                      for s in raw["steps"])
        seen = {k: (float(v[0]), float(v[1])) for k, v in raw["dm_seen"].items()}
        return MeterResult(int(raw["exit_code"]), float(raw["wall"]), steps, float(raw["user"]),
                           float(raw["system"]), int(raw["maxrss_kib"]), seen,
                           _counters(raw["before"]), _counters(raw["after"]))
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"the bench meter printed no result: {text[-300:]!r} ({exc})") from None


@dataclass(frozen=True)
class FsCopy:
    name: str
    duration: float
    bytes_sent: int
    bytes_received: int


@dataclass(frozen=True)
class ToolkitRun:
    """What the bench reads from the toolkit's ``backup --json`` report (one domain)."""

    exit_code: int
    outcome: str
    message: str
    phases: dict[str, float]
    filesystems: tuple[FsCopy, ...]
    snapshot_fill: float | None
    # From the report's step timings: each snapshot, from its lvcreate to its lvremove's end.
    snapshot_lives: dict[str, float] = field(default_factory=dict)
    # Seconds per "host action" of the report's steps (undos included), in first-seen order.
    step_seconds: dict[str, float] = field(default_factory=dict)


def parse_toolkit_report(text: str) -> ToolkitRun:
    """``domu-backup backup --domu NAME --json`` output (a RunReport with one domain)."""
    try:
        run = json.loads(text)
        dom = run["domains"][0]
        fss = tuple(FsCopy(f["name"], float(f.get("duration") or 0.0),
                           int(f.get("bytes_sent") or 0), int(f.get("bytes_received") or 0))
                    for f in dom.get("filesystems", ()))
        fills = [s["fill_percent"] for s in dom.get("snapshots", ())
                 if s.get("fill_percent") is not None]
        return ToolkitRun(int(run.get("exit_code", dom.get("exit_code", 0))),
                          str(dom.get("outcome", "")), str(dom.get("message", "")),
                          {str(k): float(v) for k, v in (dom.get("phases") or {}).items()}, fss,
                          max(fills) if fills else None,
                          snapshot_lives_from_steps(dom.get("steps") or ()),
                          step_totals(dom.get("steps") or ()))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParseError(f"the toolkit printed no JSON report: {text[-300:]!r} ({exc})") from None


def step_totals(steps: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds spent per ``host action`` (e.g. ``peer mount``, ``source undo snapshot``)."""
    out: dict[str, float] = {}
    for st in steps:
        key = f"{st.get('host', '?')} {st.get('action', '?')}"
        out[key] = round(out.get(key, 0.0) + float(st.get("seconds") or 0.0), 3)
    return out


def snapshot_lives_from_steps(steps: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds from each snapshot step's start to the end of its undo, from report steps."""
    born: dict[str, float] = {}
    lives: dict[str, float] = {}
    for st in steps:
        action, resource = st.get("action"), str(st.get("resource", ""))
        if action == "snapshot":
            born[resource] = float(st["started"])
        elif action == "undo snapshot" and resource in born:
            end = float(st["started"]) + float(st["seconds"])
            lives[resource.rsplit("/", 1)[-1]] = round(end - born[resource], 3)
    return lives


# -- derived figures -----------------------------------------------------------------------

def _pair(before: str | None, after: str | None, parse: Callable[[str], Any]) -> tuple[Any, Any]:
    if before is None or after is None:
        return None, None
    return parse(before), parse(after)


def io_delta(before: str | None, after: str | None) -> tuple[int, int] | None:
    """(read_bytes, write_bytes) between two ``/proc/self/io`` readings."""
    b, a = _pair(before, after, parse_proc_io)
    if b is None:
        return None
    return (a.get("read_bytes", 0) - b.get("read_bytes", 0),
            a.get("write_bytes", 0) - b.get("write_bytes", 0))


def block_delta(before: Mapping[str, str | None], after: Mapping[str, str | None],
                devices: Iterable[str]) -> BlockStat | None:
    """Bytes read and written on ``devices`` between two readings (None: one unreadable)."""
    read = written = 0
    for dev in devices:
        b, a = _pair(before.get(dev), after.get(dev), parse_block_stat)
        if b is None:
            return None
        read += a.read_bytes - b.read_bytes
        written += a.written_bytes - b.written_bytes
    return BlockStat(read, written)


def net_delta(before: str | None, after: str | None) -> tuple[int, int] | None:
    """(received, sent) bytes on every interface but ``lo`` between two readings."""
    b, a = _pair(before, after, parse_net_dev)
    if b is None:
        return None
    rx = sum(v[0] - b.get(k, (0, 0))[0] for k, v in a.items() if k != "lo")
    tx = sum(v[1] - b.get(k, (0, 0))[1] for k, v in a.items() if k != "lo")
    return rx, tx


def cpu_delta(before: str | None, after: str | None) -> float | None:
    b, a = _pair(before, after, parse_cgroup_cpu)
    return None if b is None else round(a - b, 3)


def snapshot_lifetimes(seen: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """Seconds each watched snapshot was seen (to within the meter's poll interval)."""
    return {name: round(last - first, 3) for name, (first, last) in sorted(seen.items())}


def toolkit_phases(run: ToolkitRun, wall: float) -> dict[str, float]:
    """The report's phases in run order, then ``other``: the wall time they do not cover."""
    phases = {p: run.phases[p] for p in TOOLKIT_PHASES if p in run.phases}
    phases.update({p: v for p, v in run.phases.items() if p not in phases})
    phases[OTHER] = round(max(wall - sum(phases.values()), 0.0), 3)
    return phases


def snapshot_window(phases: Mapping[str, float]) -> float:
    """How long the report's phases say the snapshot existed: from its creation to teardown.

    An upper bound: the snapshot phase includes the lvcreate itself and teardown ends
    with the snapshot's removal.
    """
    return round(sum(v for k, v in phases.items() if k not in (*BEFORE_SNAPSHOT, OTHER)), 3)


@dataclass(frozen=True)
class Overlap:
    """Whether the filesystems of a run were copied one after another or side by side."""

    mode: str  # "sequential" | "parallel" | "single"
    rsync_phase: float
    fs_sum: float

    @property
    def factor(self) -> float:
        return round(self.fs_sum / self.rsync_phase, 2) if self.rsync_phase > 0 else 0.0


def copy_overlap(rsync_phase: float, durations: Sequence[float]) -> Overlap:
    """Side by side when the per-filesystem copy times add up to clearly more than the phase."""
    total = round(sum(durations), 3)
    if len(durations) < 2:
        return Overlap("single", rsync_phase, total)
    mode = "parallel" if total > 1.2 * rsync_phase else "sequential"
    return Overlap(mode, rsync_phase, total)


@dataclass(frozen=True)
class Side:
    """One host's share of a measurement (None: the counter was not readable)."""

    read_bytes: int | None
    written_bytes: int | None
    cpu_seconds: float | None


@dataclass(frozen=True)
class Measurement:
    workload: str
    method: str
    domain: str
    exit_code: int
    wall: float
    phases: dict[str, float]
    cpu_user: float  # the measured process tree on dom0-a (ssh client included)
    cpu_system: float
    source: Side  # dom0-a: its loop PVs and its container's CPU
    peer: Side  # dom0-b
    wire_received: int | None  # dom0-a's network interfaces
    wire_sent: int | None
    rsync_sent: int | None  # rsync's own --stats, where rsync copied
    rsync_received: int | None
    changed_bytes: int  # bytes written in the guest since the previous sync
    peak_rss_kib: int | None  # the first process of the method (the toolkit's Python)
    tree_maxrss_kib: int | None
    snapshot_seconds: dict[str, float] = field(default_factory=dict)
    # Storage bytes (read, written) of the measured process tree on dom0-a, from the
    # meter's /proc/self/io once its children are reaped (None: no task I/O accounting).
    tree_io: tuple[int, int] | None = None
    caches_dropped: bool = False
    notes: tuple[str, ...] = ()
    # The toolkit's report steps, summed per host and action (see step_totals).
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def wire_bytes(self) -> int | None:
        if self.wire_received is None or self.wire_sent is None:
            return None
        return self.wire_received + self.wire_sent

    @property
    def wire_per_changed(self) -> float | None:
        if self.wire_bytes is None or self.changed_bytes <= 0:
            return None
        return round(self.wire_bytes / self.changed_bytes, 3)

    @property
    def cpu_seconds(self) -> float:
        """Both containers' CPU where the cgroups tell it, else the measured process tree."""
        if self.source.cpu_seconds is not None and self.peer.cpu_seconds is not None:
            return round(self.source.cpu_seconds + self.peer.cpu_seconds, 3)
        return round(self.cpu_user + self.cpu_system, 3)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(wire_bytes=self.wire_bytes, wire_per_changed=self.wire_per_changed,
                   cpu_seconds=self.cpu_seconds)
        return out


def method_phases(method: str, meter: MeterResult) -> tuple[dict[str, float], ToolkitRun | None]:
    """Per-phase seconds of one method (the toolkit's from its report) and its parsed report."""
    walls = [s.wall for s in meter.steps]
    if method in TOOLKIT_METHODS:
        if not meter.steps:
            return {}, None
        run = parse_toolkit_report(meter.steps[0].stdout)
        return toolkit_phases(run, meter.steps[0].wall), run
    if method in ("bare-rsync", "bare-parallel"):
        # Its last step is the remote sync that flushes the target, as umount does for the
        # toolkit; a failed run may stop before it.
        copies = walls[:-1] if len(walls) > 1 else walls
        phases = {"rsync": round(sum(copies), 3)}
        if len(walls) > 1:
            phases["flush"] = round(walls[-1], 3)
        return phases, None
    return {"copy" if method == "block-copy" else "delta": round(sum(walls), 3)}, None


def measurement(workload: str, method: str, domain: str, meter: MeterResult, *,
                source_devices: Sequence[str], peer_devices: Sequence[str],
                peer_cpu: tuple[str | None, str | None], changed_bytes: int,
                caches_dropped: bool) -> Measurement:
    """One method's figures from its meter result and the peer's cgroup CPU readings."""
    b, a = meter.before, meter.after
    phases, run = method_phases(method, meter) if meter.exit_code == 0 else ({}, None)
    notes: list[str] = []
    sent = received = None
    if run is not None:
        sent = sum(f.bytes_sent for f in run.filesystems)
        received = sum(f.bytes_received for f in run.filesystems)
        overlap = copy_overlap(run.phases.get("rsync", 0.0), [f.duration for f in run.filesystems])
        if overlap.mode != "single":
            notes.append(f"filesystems copied {overlap.mode}ly: per-filesystem rsync times add "
                         f"up to {overlap.fs_sum:.1f}s in a {overlap.rsync_phase:.1f}s rsync "
                         f"phase (x{overlap.factor})")
    elif method in ("bare-rsync", "block-delta"):
        stats = [parse_stats(s.stdout) for s in meter.steps if s.argv0 == "rsync"]
        sent = sum(s.bytes_sent for s in stats)
        received = sum(s.bytes_received for s in stats)
    elif method == "bare-parallel" and meter.steps:
        stats = [parse_stats(part) for part in meter.steps[0].stdout.split(PARALLEL_SEPARATOR)]
        sent = sum(s.bytes_sent for s in stats)
        received = sum(s.bytes_received for s in stats)
    src = block_delta(b.block, a.block, source_devices)
    dst = block_delta(b.block, a.block, peer_devices)
    wire = net_delta(b.net_dev, a.net_dev)
    first_hwm = meter.steps[0].hwm_kib if meter.steps else 0
    return Measurement(
        workload=workload, method=method, domain=domain, exit_code=meter.exit_code,
        wall=round(meter.wall, 3), phases=phases, cpu_user=round(meter.user, 3),
        cpu_system=round(meter.system, 3),
        source=Side(src.read_bytes if src else None, src.written_bytes if src else None,
                    cpu_delta(b.cgroup_cpu, a.cgroup_cpu)),
        peer=Side(dst.read_bytes if dst else None, dst.written_bytes if dst else None,
                  cpu_delta(*peer_cpu)),
        wire_received=wire[0] if wire else None, wire_sent=wire[1] if wire else None,
        rsync_sent=sent, rsync_received=received, changed_bytes=changed_bytes,
        peak_rss_kib=first_hwm or None, tree_maxrss_kib=meter.maxrss_kib or None,
        snapshot_seconds={**snapshot_lifetimes(meter.dm_seen),
                          **({f"{k} (report)": v for k, v in run.snapshot_lives.items()}
                             if run is not None else {})},
        tree_io=io_delta(b.proc_io, a.proc_io), caches_dropped=caches_dropped,
        notes=tuple(notes), steps=dict(run.step_seconds) if run is not None else {})


@dataclass(frozen=True)
class Ratio:
    """The toolkit's wall time over the bare rsync's in one workload."""

    workload: str
    toolkit: float
    bare: float
    target: float | None  # OVERHEAD_TARGET on the full and 1% workloads
    method: str = "toolkit"

    @property
    def value(self) -> float | None:
        return round(self.toolkit / self.bare, 3) if self.bare > 0 else None

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return self.value <= self.target


def overhead_ratios(results: Sequence[Measurement]) -> list[Ratio]:
    """toolkit/bare-rsync wall-time ratios, per workload where both methods succeeded."""
    out = []
    for workload in dict.fromkeys(m.workload for m in results):
        walls = {m.method: m.wall for m in results if m.workload == workload and not m.exit_code}
        for method in TOOLKIT_METHODS:
            if method in walls and "bare-rsync" in walls:
                target = OVERHEAD_TARGET if workload in ("full", "churn") else None
                out.append(Ratio(workload, walls[method], walls["bare-rsync"], target, method))
    return out


@dataclass(frozen=True)
class GuestCost:
    """The origin's write throughput (dd oflag=direct) without and with a snapshot."""

    written_mib: int
    without: tuple[float, ...]  # MiB/s, before creating and after removing the snapshot
    with_snapshot: float

    @property
    def slowdown(self) -> float | None:
        base = sum(self.without) / len(self.without) if self.without else 0.0
        return round(self.with_snapshot / base, 3) if base > 0 else None


@dataclass(frozen=True)
class CipherRate:
    """One ssh cipher's throughput: zeroes piped through ssh to the peer's /dev/null."""

    cipher: str
    mib: int
    wall: float
    cpu_seconds: float

    @property
    def mib_per_s(self) -> float:
        return round(self.mib / self.wall, 1) if self.wall > 0 else 0.0


def cipher_argv(ssh: Sequence[str], cipher: str, mib: int) -> list[str]:
    """``head -c N /dev/zero | ssh -c CIPHER peer 'cat > /dev/null'`` (compression off)."""
    client = [ssh[0], "-c", cipher, *ssh[1:], PEER_ADDRESS, "cat > /dev/null"]
    return ["bash", "-c", f"set -o pipefail; head -c {mib * MIB} /dev/zero | "
            + shlex.join(client)]


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f}"


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


TABLE_COLUMNS = ("workload", "method", "wall s", "cpu s", "src rd MiB", "src wr MiB",
                 "peer rd MiB", "peer wr MiB", "wire MiB", "changed MiB", "wire/chg",
                 "peak RSS MiB", "x bare")


def table_rows(results: Sequence[Measurement]) -> list[tuple[str, ...]]:
    bare = {m.workload: m.wall for m in results if m.method == "bare-rsync" and not m.exit_code}
    rows = []
    for m in results:
        ratio = round(m.wall / bare[m.workload], 3) if bare.get(m.workload) else None
        rows.append((m.workload, m.method if not m.exit_code else f"{m.method} (exit "
                     f"{m.exit_code})", f"{m.wall:.1f}", f"{m.cpu_seconds:.1f}",
                     _mib(m.source.read_bytes), _mib(m.source.written_bytes),
                     _mib(m.peer.read_bytes), _mib(m.peer.written_bytes), _mib(m.wire_bytes),
                     _mib(m.changed_bytes), _num(m.wire_per_changed, ".2f"),
                     _num(m.peak_rss_kib / 1024 if m.peak_rss_kib else None),
                     _num(ratio, ".2f")))
    return rows


def render_table(results: Sequence[Measurement], ratios: Sequence[Ratio] = (),
                 guest: GuestCost | None = None, ciphers: Sequence[CipherRate] = ()) -> str:
    """The plain-text table printed at the end of a run (and saved as table.txt)."""
    rows = [TABLE_COLUMNS, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i < 2 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for m in results:
        if m.method in TOOLKIT_METHODS and m.phases:
            lines.append(f"{m.workload} {m.method} phases: "
                         + ", ".join(f"{k} {v:.1f}s" for k, v in m.phases.items()))
        if m.steps:
            lines.append(f"{m.workload} {m.method} steps: "
                         + ", ".join(f"{k} {v:.1f}s" for k, v in m.steps.items()))
        for note in m.notes:
            lines.append(f"{m.workload} {m.method}: {note}")
        for name, secs in m.snapshot_seconds.items():
            lines.append(f"{m.workload} {m.method}: snapshot {name} existed {secs:.1f}s")
    for r in ratios:
        verdict = "" if r.met is None else (f" (target <= {r.target:.2f}: "
                                             f"{'met' if r.met else 'MISSED'})")
        lines.append(f"{r.method}/bare-rsync {r.workload}: {_num(r.value, '.2f')}{verdict}")
    if guest is not None:
        base = ", ".join(f"{v:.1f}" for v in guest.without)
        lines.append(f"origin writes ({guest.written_mib} MiB, oflag=direct): {base} MiB/s "
                     f"without a snapshot, {guest.with_snapshot:.1f} MiB/s with one "
                     f"(x{_num(guest.slowdown, '.2f')})")
    base_rate = ciphers[0].mib_per_s if ciphers else 0.0
    for c in ciphers:
        rel = f", x{c.mib_per_s / base_rate:.2f} of {ciphers[0].cipher}" if base_rate else ""
        lines.append(f"ssh cipher {c.cipher}: {c.mib_per_s:.1f} MiB/s ({c.mib} MiB in "
                     f"{c.wall:.1f}s, {c.cpu_seconds:.1f}s CPU{rel})")
    return "\n".join(lines) + "\n"


def chart_series(results: Sequence[Measurement]) -> tuple[list[str], list[str],
                                                          list[list[float]]]:
    """Bar labels, phase names in stacking order, and seconds[phase][bar] for the chart."""
    labels = [f"{m.workload} / {m.method}" for m in results]
    phases: list[str] = []
    for m in results:
        phases += [p for p in m.phases if p not in phases]
    order = [p for p in (*TOOLKIT_PHASES, OTHER) if p in phases]
    order += [p for p in phases if p not in order]
    return labels, order, [[m.phases.get(p, 0.0) for m in results] for p in order]


def write_chart(path: Path, results: Sequence[Measurement], title: str) -> bool:
    """A horizontal stacked bar per method and workload; False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, phases, values = chart_series(results)
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.4 * max(len(labels), len(phases) / 2, 1)))
    left = [0.0] * len(labels)
    colors = plt.get_cmap("tab20").colors
    for i, (phase, row) in enumerate(zip(phases, values, strict=True)):
        ax.barh(labels, row, left=left, label=phase, color=colors[i % len(colors)])
        left = [a + b for a, b in zip(left, row, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("seconds (wall)")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="phase")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def bench_document(meta: Mapping[str, Any], results: Sequence[Measurement],
                   guest: GuestCost | None, error: str | None = None,
                   ciphers: Sequence[CipherRate] = ()) -> dict[str, Any]:
    """Everything ``bench.json`` holds."""
    ratios = overhead_ratios(results)
    snapshot = {f"{m.workload}": {"watched": m.snapshot_seconds,
                                  "from_phases": snapshot_window(m.phases)}
                for m in results if m.method == "toolkit" and m.phases}
    doc: dict[str, Any] = dict(meta)
    doc.update({
        "results": [m.to_dict() for m in results],
        "ratios": [{"workload": r.workload, "method": r.method, "toolkit_wall": r.toolkit,
                    "bare_wall": r.bare,
                    "ratio": r.value, "target": r.target, "met": r.met} for r in ratios],
        "guest_cost": {
            "snapshot_seconds": snapshot,
            "origin_writes": None if guest is None else {
                "written_mib": guest.written_mib, "without_mib_s": list(guest.without),
                "with_snapshot_mib_s": guest.with_snapshot, "ratio": guest.slowdown},
        },
        "ciphers": [{**asdict(c), "mib_per_s": c.mib_per_s} for c in ciphers],
        "error": error,
    })
    return doc


# -- argv of the measured commands (pure) ----------------------------------------------------

def remote_argv(prefix: Sequence[str], argv: Sequence[str]) -> list[str]:
    """argv run through ``prefix`` (an ssh command line: quoted once, for the remote shell)."""
    return [*prefix, shlex.join(argv)] if prefix else list(argv)


def cgroup_cpu_argv(files: Sequence[str] = CGROUP_CPU_FILES) -> list[str]:
    """Print the first readable of the cgroup CPU files (v1 has the same file twice)."""
    return ["sh", "-c", 'for f in "$@"; do if [ -r "$f" ]; then exec cat "$f"; fi; done', "sh",
            *files]


def program_argv(spec: Mapping[str, Any], program: str = PROGRAM_PATH,
                 python: str = "python3") -> list[str]:
    """One op of the bench program (installed at ``program`` on the host that runs it)."""
    return [python, program, json.dumps(spec, separators=(",", ":"))]


def delta_argv(source: str, target: str, ssh: Sequence[str]) -> list[str]:
    """A block-level delta copy: rsync of the device itself onto the peer's device, in place.

    ``--copy-devices`` reads the device as a file, ``--write-devices`` writes into the
    existing target device; ``-I`` turns the size-and-mtime quick check off, so every
    block is compared (rsync's rolling checksum) and only changed blocks are sent.
    """
    return ["rsync", "--copy-devices", "--write-devices", "--inplace", "--no-whole-file", "-I",
            "--stats", "-e", shlex.join(ssh), "--", source, f"{PEER_ADDRESS}:{target}"]


def block_copy_argv(source: str, target: str, remote: Sequence[str]) -> list[str]:
    """``dd | ssh dd`` of a whole device, the target flushed before it reports."""
    reader = ["dd", f"if={source}", "bs=4M", "status=none"]
    writer = ["dd", f"of={target}", "bs=4M", "iflag=fullblock", "conv=fsync", "status=none"]
    return ["bash", "-c", "set -o pipefail; " + shlex.join(reader) + " | "
            + shlex.join(remote_argv(remote, writer))]


def bare_rsync_argv(source_dir: str, target_dir: str, ssh: Sequence[str]) -> list[str]:
    """The floor: the toolkit's own rsync options, nothing around them."""
    return ["rsync", *BASE_ARGS, "--stats", "-e", shlex.join(ssh),
            "--", source_dir.rstrip("/") + "/", f"{PEER_ADDRESS}:{target_dir.rstrip('/')}/"]


def parallel_rsync_argv(pairs: Sequence[tuple[str, str]], ssh: Sequence[str]) -> list[str]:
    """Each pair's bare rsync started at once; their outputs printed after all have ended.

    Exits with the first failure's code (0 if all succeeded). Outputs are kept in a
    temporary directory and printed one after another, PARALLEL_SEPARATOR between them.
    """
    lines = ['out=$(mktemp -d)', 'trap \'rm -rf "$out"\' EXIT', "pids=()"]
    for n, (source_dir, target_dir) in enumerate(pairs):
        cmd = shlex.join(bare_rsync_argv(source_dir, target_dir, ssh))
        lines.append(f'{cmd} >"$out/{n}" 2>&1 & pids+=($!)')
    lines += ["rc=0", 'for p in "${pids[@]}"; do wait "$p" || { s=$?; [ "$rc" = 0 ] && rc=$s; };'
              " done",
              f'first=1; for n in $(seq 0 {len(pairs) - 1}); do '
              f'[ "$first" = 1 ] || echo {shlex.quote(PARALLEL_SEPARATOR)}; first=0; '
              'cat "$out/$n"; done',
              'exit "$rc"']
    return ["bash", "-c", "\n".join(lines)]


# -- the program run inside the fake Dom0s (stdlib only, shipped as source) ------------------

@functools.cache
def bench_program() -> str:
    """The self-contained program text, stdlib only: ``python3 PROGRAM '{"op": ...}'``."""
    parts = ["import json, os, random, resource, stat, subprocess, sys, tempfile, time"]
    parts += [inspect.getsource(fn) for fn in _REMOTE_FUNCTIONS]
    parts.append("_b_result(_b_main(json.loads(sys.argv[1])))")
    return "\n\n".join(parts) + "\n"


def run_program(runner: Runner, spec: Mapping[str, Any], *, timeout: float,
                program: str = PROGRAM_PATH) -> dict[str, Any]:
    """Run one op of the bench program on the runner's host; its JSON result."""
    res = runner.run(program_argv(spec, program), timeout=timeout)
    try:
        out = json.loads(res.stdout.splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise ParseError(f"bench program ({spec['op']}) printed no JSON: {res.stdout[-200:]!r}",
                         host=runner.host) from exc
    if not isinstance(out, dict):
        raise ParseError(f"bench program ({spec['op']}) printed {out!r}", host=runner.host)
    return out


# Everything below, up to _REMOTE_FUNCTIONS, runs in the containers: stdlib only, no
# references to anything else in this module.

def _b_main(spec):
    ops = {"meter": _b_meter, "scan": _b_scan, "large": _b_large, "churn": _b_churn}
    if spec["op"] not in ops:
        raise SystemExit(f"unknown op {spec['op']!r}")
    return ops[spec["op"]](spec)


def _b_result(out):
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")


def _b_read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _b_counters(spec):
    cpu = None
    for path in spec.get("cgroup_cpu", ()):
        cpu = _b_read(path)
        if cpu is not None:
            break
    return {"proc_io": _b_read("/proc/self/io"), "net_dev": _b_read("/proc/net/dev"),
            "cgroup_cpu": cpu,
            "block": {d: _b_read(f"/sys/block/{d}/stat") for d in spec.get("devices", ())}}


def _b_hwm(pid):
    text = _b_read(f"/proc/{pid}/status") or ""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _b_watch(watch, seen):
    prefix, suffix = watch
    now = time.time()
    try:
        devices = os.listdir("/sys/block")
    except OSError:
        return
    for dev in devices:
        if not dev.startswith("dm-"):
            continue
        name = (_b_read(f"/sys/block/{dev}/dm/name") or "").strip()
        if name.startswith(prefix) and name.endswith(suffix):
            seen[name] = [seen.get(name, [now])[0], now]


def _b_step(argv, spec, seen):
    poll, watch = spec.get("poll", 0.25), spec.get("watch_dm")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        hwm = 0
        while True:
            if watch:
                _b_watch(watch, seen)
            hwm = max(hwm, _b_hwm(proc.pid))
            try:
                proc.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                continue
        wall = time.monotonic() - start
        if watch:
            _b_watch(watch, seen)
        out.seek(0)
        err.seek(0)
        stdout = out.read(spec.get("keep_stdout", 1 << 20)).decode("utf-8", "replace")
        stderr = err.read()[-8192:].decode("utf-8", "replace")
    return {"argv0": os.path.basename(argv[0]), "exit_code": proc.returncode, "wall": wall,
            "hwm_kib": hwm, "stdout": stdout, "stderr": stderr}


def _b_meter(spec):
    """Run the steps one after another; counters before and after, samples while they run."""
    seen = {}
    before = _b_counters(spec)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    steps, code = [], 0
    for argv in spec["steps"]:
        steps.append(_b_step(argv, spec, seen))
        code = steps[-1]["exit_code"]
        if code != 0:
            break
    wall = time.monotonic() - start
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = _b_counters(spec)
    return {"exit_code": code, "wall": wall, "steps": steps,
            "user": done.ru_utime - usage.ru_utime, "system": done.ru_stime - usage.ru_stime,
            "maxrss_kib": done.ru_maxrss, "dm_seen": seen, "before": before, "after": after}


def _b_files(root, skip_top=("etc", "lost+found")):
    """Regular files of one filesystem: (relative path, bytes of data, links), sorted."""
    dev = os.lstat(root).st_dev
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(
            d for d in dirnames
            if not (rel_dir == "." and d in skip_top)
            and os.lstat(os.path.join(dirpath, d)).st_dev == dev)
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(os.path.join(root, rel))
            if stat.S_ISREG(st.st_mode):
                # Data present: a sparse file counts for what it holds, not its length.
                out.append((rel, min(st.st_size, st.st_blocks * 512), st.st_nlink))
    return out


def _b_scan(spec):
    files = bytes_ = 0
    for root in spec["roots"]:
        for _rel, size, _links in _b_files(root, skip_top=()):
            files += 1
            bytes_ += size
    return {"files": files, "bytes": bytes_}


def _b_fill(path, key, size, offset=0):
    rng = random.Random(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            os.pwrite(fd, chunk, offset)
            offset += len(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)


def _b_large(spec):
    """Write the large files (seeded bytes) under one filesystem's root."""
    written = 0
    for rel, size in spec["files"]:
        path = os.path.join(spec["root"], rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        _b_fill(path, f"{spec['seed']}:{rel}", size)
        os.utime(path, (spec["epoch"], spec["epoch"]))
        written += size
    return {"written": written}


def _b_churn(spec):
    """Change about ``percent`` % of one filesystem's data, deterministically for a seed.

    A quarter of it is appended to the largest file, 40% rewrites smaller files in full
    (same size, new bytes), a quarter goes to new files, and files holding a tenth of it
    are deleted. /etc and lost+found are left alone.
    """
    root, seed = spec["root"], spec["seed"]
    rng = random.Random(f"churn:{seed}")
    when = spec["epoch"]
    files = _b_files(root)
    total = sum(size for _rel, size, _links in files)
    budget = int(total * spec["percent"] / 100)
    counts = {"data_bytes": total, "budget": budget, "appended_file": None, "appended": 0,
              "modified": 0, "modified_bytes": 0, "added": 0, "added_bytes": 0, "deleted": 0,
              "deleted_bytes": 0}
    single = [(rel, size) for rel, size, links in files if links == 1]
    if not single or budget <= 0:
        return counts
    largest = max(single, key=lambda f: (f[1], f[0]))
    path = os.path.join(root, largest[0])
    size = os.path.getsize(path)
    _b_fill(path, f"churn:{seed}:append", budget // 4, offset=size)
    os.utime(path, (when, when))
    counts["appended_file"], counts["appended"] = largest[0], budget // 4
    rest = [f for f in single if f != largest]
    rng.shuffle(rest)
    small = max(64 * 1024, budget // 20)
    victims = []
    for rel, size in rest:
        if counts["modified_bytes"] >= budget * 4 // 10:
            victims.append((rel, size))
            continue
        if size > small:
            continue
        _b_fill(os.path.join(root, rel), f"churn:{seed}:{rel}", size)
        os.utime(os.path.join(root, rel), (when, when))
        counts["modified"] += 1
        counts["modified_bytes"] += size
    for rel, size in victims:
        if counts["deleted_bytes"] >= budget // 10:
            break
        os.unlink(os.path.join(root, rel))
        counts["deleted"] += 1
        counts["deleted_bytes"] += size
    new_dir = f"bench-churn-{seed}"
    os.makedirs(os.path.join(root, new_dir), mode=0o755, exist_ok=True)
    while counts["added_bytes"] < budget // 4:
        size = rng.randint(1, 64 * 1024)
        rel = f"{new_dir}/new-{counts['added']:05d}.dat"
        _b_fill(os.path.join(root, rel), f"churn:{seed}:{rel}", size)
        os.utime(os.path.join(root, rel), (when, when))
        counts["added"] += 1
        counts["added_bytes"] += size
    return counts


_REMOTE_FUNCTIONS = (_b_main, _b_result, _b_read, _b_counters, _b_hwm, _b_watch, _b_step,
                     _b_meter, _b_files, _b_scan, _b_fill, _b_large, _b_churn)


# -- the run in the lab --------------------------------------------------------------------

class Bench:
    """The bench guests in a running sandbox, and the measurements taken on them."""

    def __init__(self, lab: Any, checkout: Path, scale: Scale,
                 workloads: Sequence[WorkloadRun], methods: Sequence[str] = METHODS) -> None:
        from .rehearse import SSH

        self.lab = lab
        self.checkout = checkout
        self.scale = scale
        self.workloads = workloads
        self.methods = tuple(methods)
        self.ssh = ssh_argv(SSH)
        self.ssh_key, self.known_hosts = SSH.key, SSH.known_hosts
        self.src: Runner = lab.runner(SOURCE_HOST)
        self.peer: Runner = lab.runner(PEER_HOST)
        names = {WORKLOAD_DOMAIN[w.name] for w in workloads if w.name in WORKLOAD_DOMAIN}
        self.domains = {n: load_bench_domain(checkout, n, scale) for n in sorted(names)}
        self.disks = {n: bench_disks(d) for n, d in self.domains.items()}
        self.data_bytes: dict[str, int] = {}
        self.devices: dict[str, list[str]] = {}
        self.results: list[Measurement] = []
        self.guest: GuestCost | None = None
        self.ciphers: list[CipherRate] = []

    @property
    def all_disks(self) -> list[BenchDisk]:
        return [d for disks in self.disks.values() for d in disks]

    # -- setup ---------------------------------------------------------------

    def setup(self) -> None:
        for host in (SOURCE_HOST, PEER_HOST):
            self.lab.runner(host).run(["mkdir", "-p", BENCH_DIR], timeout=30)
            self.lab.sandbox.put_file(host, PROGRAM_PATH, bench_program().encode(), 0o755)
        guest = any(w.name == "guest" for w in self.workloads)
        need = space_needed(self.all_disks, self.scale, guest=guest)
        for runner, vg in ((self.src, SOURCE_VG), (self.peer, PEER_VG)):
            self._make_room(runner, vg, need[vg])
        for d in self.all_disks:
            for runner, vg, name in ((self.src, SOURCE_VG, d.lv_name),
                                     (self.peer, PEER_VG, d.lv_name),
                                     (self.peer, PEER_VG, f"{d.lv_name}_bare"),
                                     (self.peer, PEER_VG, f"{d.lv_name}_par"),
                                     (self.peer, PEER_VG, f"{d.lv_name}_tkp"),
                                     (self.peer, PEER_VG, f"{d.lv_name}_blk")):
                self._lvcreate(runner, vg, name, d.size)
        if guest:
            self._lvcreate(self.src, SOURCE_VG, SCRATCH_LV, self.scale.scratch_mib * MIB)
        self._build_images()
        for name, domain in self.domains.items():
            if name == WORKLOAD_DOMAIN["full"]:
                self._add_large_files(domain)
            self.data_bytes[name] = self._scan(name)
            log(f"{name}: {self.data_bytes[name] / MIB:.1f} MiB of file data on "
                f"{len(self.disks[name])} disk(s)")
        self._write_config()
        for runner, vg in ((self.src, SOURCE_VG), (self.peer, PEER_VG)):
            res = runner.run(["pvs", "--noheadings", "-o", "pv_name", "-S", f"vg_name={vg}"],
                             timeout=60)
            self.devices[vg] = parse_pv_names(res.stdout)
        log(f"disk counters: {SOURCE_HOST} {self.devices[SOURCE_VG]}, "
            f"{PEER_HOST} {self.devices[PEER_VG]}")

    def _make_room(self, runner: Runner, vg: str, need: int) -> None:
        from ..facts.lvm import parse_vgs, vgs_argv

        free = parse_vgs(runner.run(vgs_argv(vg), timeout=60).stdout)[0].free_bytes
        size = extra_pv_size(need, free)
        log(f"{vg}: the bench needs {need / MIB:.0f} MiB, {free / MIB:.0f} MiB free"
            + (f": adding a {size / MIB:.0f} MiB PV" if size else ""))
        if not size:
            return
        path = f"{EXTRA_PV_DIR}/{runner.host}.pv"
        runner.run(["mkdir", "-p", EXTRA_PV_DIR], timeout=30)
        runner.run(["truncate", "-s", str(size), path], timeout=30)
        loop = ""
        for attempt in range(5):
            # Both containers share the kernel's loop devices; a race loses, then retries.
            res = runner.run(["losetup", "--find", "--show", path], check=False, timeout=60)
            if res.exit_code == 0:
                loop = res.stdout.strip()
                break
            time.sleep(0.5 * (attempt + 1))
        if not loop:
            raise ToolkitError(f"losetup could not attach {path}", host=runner.host)
        runner.run(["lvm", "lvmdevices", "--adddev", loop], timeout=60)
        runner.run(["pvcreate", "-y", loop], timeout=60)
        runner.run(["vgextend", vg, loop], timeout=60)

    def _lvcreate(self, runner: Runner, vg: str, name: str, size: int) -> None:
        log(f"lvcreate {vg}/{name} ({size / MIB:.0f} MiB) on {runner.host}")
        runner.run(["lvcreate", "-y", "-L", f"{size // MIB}m", "-n", name, vg],
                   timeout=120)

    def _build_images(self) -> None:
        from .guests import build_disk_image

        for name, domain in self.domains.items():
            for disk, bd in zip(domain.disks, self.disks[name], strict=True):
                for runner, image, lvs, standby in (
                        (self.src, bd.source_image, (bd.source_lv,), False),
                        (self.peer, bd.standby_image, self._standby_targets(bd), True)):
                    t0 = time.monotonic()
                    runner.run(["mkdir", "-p", IMAGES, WORKDIR], timeout=30)
                    build_disk_image(runner, disk, image, workdir=WORKDIR, standby=standby,
                                     scale=self.scale.tree)
                    for lv in lvs:
                        runner.run(["dd", f"if={image}", f"of={lv}", "bs=4M", "conv=fsync",
                                    "status=none"], timeout=3600)
                    log(f"{bd.lv_name}: {'standby' if standby else 'source'} image built and "
                        f"written to {', '.join(lvs)} ({time.monotonic() - t0:.0f}s)")
                if {"block-delta", "block-copy"} & set(self.methods):
                    self._zero(self.peer, bd.block_lv, bd.size)

    def _standby_targets(self, bd: BenchDisk) -> tuple[str, ...]:
        """The peer LVs that start as the built standby image: one per file-level method."""
        wanted = {"toolkit": bd.standby_lv, "toolkit-parallel": bd.standby_parallel_lv,
                  "bare-rsync": bd.bare_lv, "bare-parallel": bd.par_lv}
        return tuple(lv for m, lv in wanted.items() if m in self.methods)

    def _zero(self, runner: Runner, lv: str, size: int) -> None:
        # On a loop-backed VG this punches holes; dd is the slow way round.
        res = runner.run(["blkdiscard", "--zeroout", "--force", lv], check=False, timeout=600)
        if res.exit_code != 0:
            runner.run(["dd", "if=/dev/zero", f"of={lv}", "bs=4M", f"count={size // (4 * MIB)}",
                        "conv=fsync", "status=none"], timeout=3600)

    def _mounted(self, stack: ExitStack, runner: Runner, disks: Iterable[tuple[str, str]],
                 tag: str, *, readonly: bool) -> dict[str, str]:
        """Mount the filesystems of each (device, label); ``label/number`` -> mount point."""
        from .audit import mounted

        out: dict[str, str] = {}
        for device, label in disks:
            where = f"{MOUNT_ROOT}/{label}-{tag}"
            found = stack.enter_context(mounted(runner, device, where, tag, readonly=readonly))
            out.update({f"{label}/{n}": mnt for n, (mnt, _type) in found.items()})
        return out

    def _source_trees(self, stack: ExitStack, name: str, *, readonly: bool) -> dict[str, str]:
        return self._mounted(stack, self.src, [(d.source_lv, d.device) for d in self.disks[name]],
                             "bs" if readonly else "bw", readonly=readonly)

    def _add_large_files(self, domain: Any) -> None:
        root_disk = next(d for d in domain.disks if d.root is not None)
        number = root_disk.root.number
        files = [[f"data/large/large-{i:02d}.bin", self.scale.large_file_mib * MIB]
                 for i in range(self.scale.large_files)]
        with ExitStack() as stack:
            trees = self._source_trees(stack, domain.name, readonly=False)
            out = run_program(self.src, {"op": "large", "root": trees[f"{root_disk.device}/"
                                                                      f"{number}"],
                                         "files": files, "seed": root_disk.seed,
                                         "epoch": root_disk.epoch}, timeout=3600)
        log(f"{domain.name}: {len(files)} large file(s) written, {out['written'] / MIB:.0f} MiB")

    def _scan(self, name: str) -> int:
        with ExitStack() as stack:
            trees = self._source_trees(stack, name, readonly=True)
            out = run_program(self.src, {"op": "scan", "roots": sorted(trees.values())},
                              timeout=1800)
        return int(out["bytes"])

    def _write_config(self) -> None:
        sandbox = self.lab.sandbox
        configs = {CONFIG_PATH: 1, PARALLEL_CONFIG_PATH: PARALLEL_JOBS}
        for host, vg, running in ((SOURCE_HOST, SOURCE_VG, True), (PEER_HOST, PEER_VG, False)):
            sandbox.put_file(host, NODE_PATH, node_xml(self.disks, vg, running=running).encode(),
                             0o644)
            for path, jobs in configs.items():
                text = bench_config(self.disks, key=self.ssh_key, known_hosts=self.known_hosts,
                                    copy_jobs=jobs)
                sandbox.put_file(host, path, text.encode(), 0o600)
        for path in configs:
            self.src.run(["domu-backup", "check-config", "--config", path], timeout=120)

    # -- workloads -----------------------------------------------------------

    def run_workload(self, workload: str) -> None:
        if workload == "guest":
            self.guest = self.guest_cost()
            return
        if workload == "cipher":
            self.ciphers = self.cipher_rates()
            return
        name = WORKLOAD_DOMAIN[workload]
        changed = self.data_bytes[name]
        if workload == "nochange":
            changed = 0
        elif workload == "churn":
            changed = self.churn(name)
        for method in self.methods:
            self.results.append(self.measure(workload, method, name, changed))

    def churn(self, name: str) -> int:
        """Change about 1% of each filesystem of the guest; the bytes written."""
        total = deleted = 0
        with ExitStack() as stack:
            trees = self._source_trees(stack, name, readonly=False)
            for label, root in sorted(trees.items()):
                out = run_program(self.src, {"op": "churn", "root": root, "seed": CHURN_SEED,
                                             "percent": CHURN_PERCENT,
                                             "epoch": int(time.time())}, timeout=1800)
                written = out["appended"] + out["modified_bytes"] + out["added_bytes"]
                log(f"churn {name} {label}: {out['modified']} files rewritten, {out['added']} "
                    f"added, {out['deleted']} deleted, {out['appended'] / MIB:.1f} MiB appended "
                    f"to {out['appended_file']}: {written / MIB:.1f} MiB written of "
                    f"{out['data_bytes'] / MIB:.1f} MiB")
                total += written
                deleted += out["deleted_bytes"]
        self.data_bytes[name] += total - deleted
        return total

    def steps_for(self, method: str, name: str, stack: ExitStack) -> list[list[str]]:
        """The commands one method runs on dom0-a (mounting, for the floor, beforehand)."""
        disks = self.disks[name]
        peer_ssh = [*self.ssh, PEER_ADDRESS]
        if method in TOOLKIT_METHODS:
            config = CONFIG_PATH if method == "toolkit" else PARALLEL_CONFIG_PATH
            return [["domu-backup", "backup", "--domu", name, "--config", config, "--json"]]
        if method in ("bare-rsync", "bare-parallel"):
            # The origin read-only here, the method's own target of the same layout there.
            src = self._source_trees(stack, name, readonly=True)
            parallel = method == "bare-parallel"
            dst = self._mounted(stack, self.peer,
                                [(d.par_lv if parallel else d.bare_lv, d.device) for d in disks],
                                "bp" if parallel else "bt", readonly=False)
            missing = sorted(set(src) ^ set(dst))
            if missing:
                raise ToolkitError(f"{method}: filesystems {missing} are not on both sides")
            pairs = [(src[k], dst[k]) for k in sorted(src)]
            if not parallel:
                steps = [bare_rsync_argv(a, b, self.ssh) for a, b in pairs]
                return [*steps, [*peer_ssh, "sync"]]
            return [parallel_rsync_argv(pairs, self.ssh), [*peer_ssh, "sync"]]
        if method == "block-delta":
            # The device nodes themselves, on both sides: rsync skips a source symlink
            # (/dev/VG/LV) as a non-regular file, and would replace a target one by a file.
            return [delta_argv(self.src.run(["readlink", "-e", d.source_lv],
                                            timeout=60).stdout.strip(),
                               self.peer.run(["readlink", "-e", d.block_lv],
                                             timeout=60).stdout.strip(), self.ssh)
                    for d in disks]
        return [block_copy_argv(d.source_lv, d.block_lv, peer_ssh) for d in disks]

    def drop_caches(self) -> bool:
        # One kernel for both containers: this drops dom0-b's page cache too.
        res = self.src.run(["sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"],
                           check=False, timeout=300)
        return res.exit_code == 0

    def peer_cpu(self) -> str | None:
        res = self.peer.run(cgroup_cpu_argv(), check=False, timeout=60)
        return res.stdout if res.exit_code == 0 and res.stdout.strip() else None

    def meter(self, steps: Sequence[Sequence[str]], *, watch: bool) -> MeterResult:
        spec = {"op": "meter", "steps": [list(s) for s in steps], "poll": METER_POLL,
                "devices": self.devices[SOURCE_VG] + self.devices[PEER_VG],
                "cgroup_cpu": list(CGROUP_CPU_FILES),
                "watch_dm": [f"{SOURCE_VG}-domubk-", "-cow"] if watch else None}
        res = self.src.run(program_argv(spec), timeout=METER_TIMEOUT)
        return parse_meter(res.stdout)

    def measure(self, workload: str, method: str, name: str, changed: int) -> Measurement:
        log(f"{workload}/{method}: preparing")
        with ExitStack() as stack:
            steps = self.steps_for(method, name, stack)
            dropped = self.drop_caches()
            cpu0 = self.peer_cpu()
            log(f"{workload}/{method}: running {len(steps)} command(s): "
                + "; ".join(shlex.join(s)[:100] for s in steps))
            meter = self.meter(steps, watch=method in TOOLKIT_METHODS)
            cpu1 = self.peer_cpu()
        skipped = [st for st in meter.steps if "skipping non-regular file" in st.stdout + st.stderr]
        if skipped:
            raise ToolkitError(f"{workload}/{method}: rsync skipped the device instead of "
                               f"copying it: {skipped[0].stderr.strip()[-300:]}", host=SOURCE_HOST)
        if meter.exit_code != 0:
            step = meter.steps[-1]
            raise ToolkitError(f"{workload}/{method}: `{step.argv0}` exited {step.exit_code}: "
                               f"{step.stderr.strip()[-2000:]}", host=SOURCE_HOST)
        m = measurement(workload, method, name, meter, source_devices=self.devices[SOURCE_VG],
                        peer_devices=self.devices[PEER_VG], peer_cpu=(cpu0, cpu1),
                        changed_bytes=changed, caches_dropped=dropped)
        log(f"{workload}/{method}: {m.wall:.1f}s wall, {m.cpu_seconds:.1f}s CPU, "
            f"{_mib(m.wire_bytes)} MiB on the wire"
            + (", phases " + ", ".join(f"{k} {v:.1f}s" for k, v in m.phases.items())))
        return m

    def guest_cost(self) -> GuestCost:
        """Origin write throughput without a snapshot, with one, and without again."""
        lv = f"{SOURCE_VG}/{SCRATCH_LV}"
        count = self.scale.scratch_mib // 2
        dd = ["dd", "if=/dev/zero", f"of=/dev/{lv}", "bs=1M", f"count={count}", "oflag=direct",
              "conv=fsync"]

        def write(what: str) -> float:
            self.drop_caches()
            res = self.src.run(dd, timeout=3600)
            rate = parse_dd(res.stderr).mib_per_s
            log(f"guest: {count} MiB written to {lv} {what}: {rate:.1f} MiB/s")
            return rate

        write("to allocate the loop file's blocks (not counted)")
        first = write("without a snapshot")
        snap = f"{SCRATCH_LV}_snap"
        self.src.run(["lvcreate", "-y", "-s", "-L", f"{self.scale.scratch_mib}m", "-n", snap,
                      lv], timeout=120)
        try:
            during = write("while a snapshot exists")
        finally:
            self.src.run(["lvremove", "-y", f"{SOURCE_VG}/{snap}"], timeout=120)
        second = write("without a snapshot, again")
        return GuestCost(count, (round(first, 1), round(second, 1)), round(during, 1))

    def cipher_rates(self) -> list[CipherRate]:
        """Each cipher of CIPHERS, one after another, on the same amount of zeroes."""
        mib = self.scale.scratch_mib
        out = []
        for cipher in CIPHERS:
            meter = self.meter([cipher_argv(self.ssh, cipher, mib)], watch=False)
            if meter.exit_code != 0:
                log(f"cipher {cipher}: ssh exited {meter.exit_code} (not offered?): "
                    f"{meter.steps[-1].stderr.strip()[-300:] if meter.steps else ''}")
                continue
            rate = CipherRate(cipher, mib, round(meter.wall, 3),
                              round(meter.user + meter.system, 3))
            log(f"cipher {cipher}: {rate.mib_per_s:.1f} MiB/s")
            out.append(rate)
        return out

    def environment(self) -> dict[str, str]:
        def first_line(r: Runner, argv: list[str]) -> str:
            res = r.run(argv, check=False, timeout=60)
            return (res.stdout.strip().splitlines() or [""])[0]

        return {"kernel": first_line(self.src, ["uname", "-r"]),
                "rsync": first_line(self.src, ["rsync", "--version"]),
                "engine": str(getattr(self.lab.engine, "kind", "")),
                "cpus": first_line(self.src, ["nproc"])}


def default_out_dir(checkout: Path) -> Path:
    return checkout / "reports" / "bench" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_outputs(out_dir: Path, doc: Mapping[str, Any], results: Sequence[Measurement],
                  table: str, title: str) -> list[Path]:
    """bench.json, table.txt and (with matplotlib) bench.png; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "bench.json", out_dir / "table.txt"]
    written[0].write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(table, encoding="utf-8")
    if results and any(m.phases for m in results):
        if write_chart(out_dir / "bench.png", results, title):
            written.append(out_dir / "bench.png")
        else:
            log("no chart: matplotlib is not installed (pip install '.[bench]')")
    return written


def bench(checkout: Path, *, scale: str = "small", workloads: str = "", engine: str = "auto",
          keep: bool = False, out_dir: Path | None = None, methods: str = "") -> int:
    """``invoke bench``: bring up the lab, run the workloads, write the report; exit code."""
    from .rehearse import sandbox_ready, teardown

    sc = get_scale(scale)
    plan = plan_workloads(workloads)
    chosen = plan_methods(methods)
    out = out_dir or default_out_dir(checkout)
    meta: dict[str, Any] = {"command": bench_command(scale, plan, chosen), "scale": asdict(sc),
                            "workloads": [asdict(w) for w in plan],
                            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "methods": list(chosen),
                            "overhead_target": OVERHEAD_TARGET}
    log(f"{meta['command']}: workloads {', '.join(w.name for w in plan)}; output in {out}")
    t0 = time.monotonic()
    lab = sandbox_ready(engine, checkout)
    b: Bench | None = None
    error: str | None = None
    try:
        b = Bench(lab, checkout, sc, plan, chosen)
        t1 = time.monotonic()
        b.setup()
        log(f"bench guests ready ({time.monotonic() - t1:.0f}s)")
        meta["environment"] = b.environment()
        meta["data_bytes"] = dict(b.data_bytes)
        for w in plan:
            t2 = time.monotonic()
            log(f"workload {w.name}" + ("" if w.requested else " (needed by a later one)"))
            b.run_workload(w.name)
            log(f"workload {w.name} done ({time.monotonic() - t2:.0f}s)")
        return 0
    except ToolkitError as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {error}")
        if not keep:
            log("run again with --keep to inspect the sandbox (docker exec -it dom0-a bash)")
        return exc.exit_code or 1
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {error}")
        raise
    finally:
        try:
            results = b.results if b is not None else []
            guest = b.guest if b is not None else None
            ciphers = b.ciphers if b is not None else []
            meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            meta["duration"] = round(time.monotonic() - t0, 1)
            table = render_table(results, overhead_ratios(results), guest, ciphers)
            doc = bench_document(meta, results, guest, error, ciphers)
            paths = write_outputs(out, doc, results, table, f"{meta['command']}")
            print(table, end="")
            log("written: " + ", ".join(str(p) for p in paths))
        finally:
            teardown(lab, keep=keep)
            log(f"bench finished in {time.monotonic() - t0:.0f}s")


__all__ = [
    "BenchDisk", "BlockStat", "CipherRate", "DdResult", "GuestCost", "Measurement",
    "MeterResult", "Ratio",
    "Scale", "SCALES", "ToolkitRun", "WorkloadRun", "bench", "bench_command", "bench_config",
    "bench_disks", "bench_document", "bench_program", "block_copy_argv", "chart_series",
    "cipher_argv",
    "copy_overlap", "delta_argv", "extra_pv_size", "load_bench_domain", "measurement",
    "node_xml", "overhead_ratios", "parse_block_stat", "parse_cgroup_cpu", "parse_dd",
    "parse_meter", "parse_net_dev", "parse_proc_io", "parse_pv_names", "parse_toolkit_report",
    "plan_workloads", "render_table", "scaled_recipe_data", "space_needed", "write_chart",
]
