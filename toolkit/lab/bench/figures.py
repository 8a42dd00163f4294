"""Figures derived from the measurements: deltas, phases, ratios, the table, the chart and
the document."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...rsync import parse_stats
from .meters import (
    BlockStat,
    MeterResult,
    ToolkitRun,
    parse_block_stat,
    parse_cgroup_cpu,
    parse_net_dev,
    parse_proc_io,
    parse_toolkit_report,
)
from .plain_script import plain_phases, rsync_outputs
from .workloads import (
    BEFORE_SNAPSHOT,
    FILES,
    FILES_METHODS,
    MIB,
    OTHER,
    OVERHEAD_TARGET,
    PARALLEL_SEPARATOR,
    PEER_ADDRESS,
    PLAIN_TARGETS,
    TOOLKIT_METHODS,
    TOOLKIT_PHASES,
)

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
    """CPU seconds a cgroup used between two readings (None: one unreadable)."""
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
        """The per-filesystem copy times added up, over the rsync phase (0.0: no phase time)."""
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
    """One method's run on one workload: its times, CPU, disk and network I/O, rsync's bytes."""

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
    # The toolkit's report steps, summed per role and action (see step_totals).
    steps: dict[str, float] = field(default_factory=dict)
    # The files workload: how many files FILES_DIR held (None in every other workload).
    files: int | None = None

    @property
    def case(self) -> str:
        """The workload, with the file count where it has one (``files 20000``): what the
        table, the ratios and the chart tell runs apart by."""
        return self.workload if self.files is None else f"{self.workload} {self.files}"

    @property
    def wire_bytes(self) -> int | None:
        """Bytes received plus sent on dom0-a's interfaces (None: not readable)."""
        if self.wire_received is None or self.wire_sent is None:
            return None
        return self.wire_received + self.wire_sent

    @property
    def wire_per_changed(self) -> float | None:
        """Bytes on the wire per byte changed in the guest (None without either)."""
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
        """The fields as bench.json holds them, the derived wire and CPU figures added."""
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
    if method == "plain-script":
        return (plain_phases(meter.steps[0].stdout, meter.steps[0].wall) if meter.steps
                else {}), None
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
                caches_dropped: bool, files: int | None = None) -> Measurement:
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
    elif method == "plain-script" and meter.steps:
        stats = [parse_stats(part) for part in rsync_outputs(meter.steps[0].stdout)]
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
        notes=tuple(notes), steps=dict(run.step_seconds) if run is not None else {},
        files=files)


@dataclass(frozen=True)
class Ratio:
    """The toolkit's wall time over another method's (``against``) in one workload."""

    workload: str
    toolkit: float
    bare: float  # the other method's wall time
    target: float | None  # OVERHEAD_TARGET or PLAIN_TARGETS, where the workload has one
    method: str = "toolkit"
    against: str = "bare-rsync"

    @property
    def value(self) -> float | None:
        """The toolkit's wall time over the other's (None when the other took no time)."""
        return round(self.toolkit / self.bare, 3) if self.bare > 0 else None

    @property
    def met(self) -> bool | None:
        """Whether the ratio is within its target (None: no target, or no ratio)."""
        if self.target is None or self.value is None:
            return None
        return self.value <= self.target


def overhead_ratios(results: Sequence[Measurement]) -> list[Ratio]:
    """toolkit/bare-rsync wall-time ratios, then toolkit/plain-script (the same flow scripted
    by hand, without the toolkit's safety), per workload (and file count: Measurement.case)
    where both methods succeeded."""
    out = []
    for case in dict.fromkeys(m.case for m in results):
        walls = {m.method: m.wall for m in results if m.case == case and not m.exit_code}
        # a case is its workload, or the files workload at one count (no target there)
        for method in TOOLKIT_METHODS:
            if method in walls and "bare-rsync" in walls:
                target = OVERHEAD_TARGET if case in ("full", "churn") else None
                out.append(Ratio(case, walls[method], walls["bare-rsync"], target, method))
        if "toolkit" in walls and "plain-script" in walls:
            out.append(Ratio(case, walls["toolkit"], walls["plain-script"],
                             PLAIN_TARGETS.get(case), "toolkit", "plain-script"))
    return out


def snapshot_lives(results: Sequence[Measurement]) -> list[tuple[str, float, float]]:
    """Per workload (and file count): how long the toolkit's snapshots and the plain script's
    lived (summed over the run's disks, as the meter saw their COW maps)."""
    out = []
    for case in dict.fromkeys(m.case for m in results):
        lives = {m.method: sum(v for k, v in m.snapshot_seconds.items()
                               if not k.endswith("(report)"))
                 for m in results if m.case == case and not m.exit_code
                 and m.method in ("toolkit", "plain-script") and m.snapshot_seconds}
        if len(lives) == 2:
            out.append((case, round(lives["toolkit"], 3), round(lives["plain-script"], 3)))
    return out


@dataclass(frozen=True)
class GuestCost:
    """The origin's write throughput (dd oflag=direct) without and with a snapshot."""

    written_mib: int
    without: tuple[float, ...]  # MiB/s, before creating and after removing the snapshot
    with_snapshot: float

    @property
    def slowdown(self) -> float | None:
        """The write throughput with the snapshot over the mean without it (None: no baseline)."""
        base = sum(self.without) / len(self.without) if self.without else 0.0
        return round(self.with_snapshot / base, 3) if base > 0 else None


POINT_CHURN = "pointchurn, "  # the workload names of the pointchurn variants start so


def point_churn_ratios(results: Sequence[Measurement]) -> list[tuple[str, float, float | None]]:
    """(variant, toolkit wall, wall over the no-point variant's) of the pointchurn runs."""
    runs = [(m.workload, m.wall) for m in results
            if m.workload.startswith(POINT_CHURN) and m.method == "toolkit" and not m.exit_code]
    base = next((wall for what, wall in runs if what == f"{POINT_CHURN}no point"), 0.0)
    return [(what, wall, round(wall / base, 3) if base > 0 else None) for what, wall in runs]


@dataclass(frozen=True)
class PointCost:
    """A standby's write throughput (dd oflag=direct, MiB/s) without and with restore points:
    a thick LV with 0, 1 and 2 classic snapshots, a thin LV with 0 and 1 thin snapshot."""

    written_mib: int
    rates: tuple[tuple[str, float], ...]  # (what, MiB/s), in the order measured

    def ratios(self) -> list[tuple[str, float | None]]:
        """Each rate over the first rate of its kind of LV (thick or thin), side by side."""
        base: dict[str, float] = {}
        out: list[tuple[str, float | None]] = []
        for what, rate in self.rates:
            kind = what.split()[0]
            first = base.setdefault(kind, rate)
            out.append((what, round(rate / first, 3) if first > 0 else None))
        return out


@dataclass(frozen=True)
class CipherRate:
    """One ssh cipher's throughput: zeroes piped through ssh to the peer's /dev/null."""

    cipher: str
    mib: int
    wall: float
    cpu_seconds: float

    @property
    def mib_per_s(self) -> float:
        """Throughput in MiB per second of wall time (0.0 when none passed)."""
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
    """One row per measurement, in TABLE_COLUMNS order: a failed method shows its exit code,
    ``x bare`` is its wall time over the same workload's bare rsync."""
    bare = {m.case: m.wall for m in results if m.method == "bare-rsync" and not m.exit_code}
    rows = []
    for m in results:
        ratio = round(m.wall / bare[m.case], 3) if bare.get(m.case) else None
        rows.append((m.case, m.method if not m.exit_code else f"{m.method} (exit "
                     f"{m.exit_code})", f"{m.wall:.1f}", f"{m.cpu_seconds:.1f}",
                     _mib(m.source.read_bytes), _mib(m.source.written_bytes),
                     _mib(m.peer.read_bytes), _mib(m.peer.written_bytes), _mib(m.wire_bytes),
                     _mib(m.changed_bytes), _num(m.wire_per_changed, ".2f"),
                     _num(m.peak_rss_kib / 1024 if m.peak_rss_kib else None),
                     _num(ratio, ".2f")))
    return rows


def render_table(results: Sequence[Measurement], ratios: Sequence[Ratio] = (),
                 guest: GuestCost | None = None, ciphers: Sequence[CipherRate] = (),
                 points: PointCost | None = None) -> str:
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
        if (m.method in TOOLKIT_METHODS or m.method == "plain-script") and m.phases:
            lines.append(f"{m.case} {m.method} phases: "
                         + ", ".join(f"{k} {v:.1f}s" for k, v in m.phases.items()))
        if m.steps:
            lines.append(f"{m.case} {m.method} steps: "
                         + ", ".join(f"{k} {v:.1f}s" for k, v in m.steps.items()))
        for note in m.notes:
            lines.append(f"{m.case} {m.method}: {note}")
        for name, secs in m.snapshot_seconds.items():
            lines.append(f"{m.case} {m.method}: snapshot {name} existed {secs:.1f}s")
    for r in ratios:
        verdict = "" if r.met is None else (f" (target <= {r.target:.2f}: "
                                             f"{'met' if r.met else 'MISSED'})")
        lines.append(f"{r.method}/{r.against} {r.workload}: {_num(r.value, '.2f')}{verdict}")
    for workload, toolkit, plain in snapshot_lives(results):
        lines.append(f"snapshot lifetime {workload}: toolkit {toolkit:.1f}s, plain-script "
                     f"{plain:.1f}s")
    lines += files_section(results)
    if guest is not None:
        base = ", ".join(f"{v:.1f}" for v in guest.without)
        lines.append(f"origin writes ({guest.written_mib} MiB, oflag=direct): {base} MiB/s "
                     f"without a snapshot, {guest.with_snapshot:.1f} MiB/s with one "
                     f"(x{_num(guest.slowdown, '.2f')})")
    for what, wall, ratio in point_churn_ratios(results):
        lines.append(f"toolkit churn run with {what.removeprefix('pointchurn, ')} on the standby: "
                     f"{wall:.1f}s (x{_num(ratio, '.2f')} of no point)")
    if points is not None:
        for (what, rate), (_w, ratio) in zip(points.rates, points.ratios(), strict=True):
            lines.append(f"standby writes ({points.written_mib} MiB, oflag=direct), {what}: "
                         f"{rate:.1f} MiB/s (x{_num(ratio, '.2f')})")
    base_rate = ciphers[0].mib_per_s if ciphers else 0.0
    for c in ciphers:
        rel = f", x{c.mib_per_s / base_rate:.2f} of {ciphers[0].cipher}" if base_rate else ""
        lines.append(f"ssh cipher {c.cipher}: {c.mib_per_s:.1f} MiB/s ({c.mib} MiB in "
                     f"{c.wall:.1f}s, {c.cpu_seconds:.1f}s CPU{rel})")
    return "\n".join(lines) + "\n"


# -- the files workload: a no-change run's time by the number of files ----------------------

GROWTH_FILES = 100_000  # growth is given in seconds per this many files


@dataclass(frozen=True)
class FilesRow:
    """The no-change runs of the files workload at one file count: each method's wall time."""

    files: int
    walls: dict[str, float]  # method -> seconds, FILES_METHODS order, the successful runs

    @property
    def toolkit_over_plain(self) -> float | None:
        """The toolkit's wall time over the plain script's (None without either)."""
        toolkit, plain = self.walls.get("toolkit"), self.walls.get("plain-script")
        if toolkit is None or not plain:
            return None
        return round(toolkit / plain, 3)


def files_rows(results: Sequence[Measurement]) -> list[FilesRow]:
    """One row per file count of the files workload, fewest files first."""
    runs = [m for m in results if m.workload == FILES and m.files is not None and not m.exit_code]
    rows = []
    for count in sorted({m.files for m in runs if m.files is not None}):
        walls = {m.method: m.wall for m in runs if m.files == count}
        rows.append(FilesRow(count, {k: walls[k] for k in FILES_METHODS if k in walls}))
    return rows


def growth_per_files(points: Iterable[tuple[int, float]],
                     per: int = GROWTH_FILES) -> float | None:
    """Seconds a run grows by per ``per`` files: the slope from the fewest files' time to
    the most files' (None with fewer than two distinct counts)."""
    ordered = sorted(points)
    if len(ordered) < 2 or ordered[0][0] == ordered[-1][0]:
        return None
    (n0, t0), (n1, t1) = ordered[0], ordered[-1]
    return round((t1 - t0) / (n1 - n0) * per, 3)


def files_growth(rows: Sequence[FilesRow]) -> dict[str, float | None]:
    """Each method's growth per GROWTH_FILES files, over the counts it ran at."""
    methods = [m for m in FILES_METHODS if any(m in r.walls for r in rows)]
    return {m: growth_per_files((r.files, r.walls[m]) for r in rows if m in r.walls)
            for m in methods}


def files_section(results: Sequence[Measurement]) -> list[str]:
    """The table's lines on the files workload (none without its runs): per file count each
    method's no-change time and the toolkit's over the plain script's, then each method's
    growth per GROWTH_FILES files."""
    rows = files_rows(results)
    if not rows:
        return []
    methods = [m for m in FILES_METHODS if any(m in r.walls for r in rows)]
    table = [("files", *(f"{m} s" for m in methods), "toolkit/plain")]
    table += [(str(r.files), *(_num(r.walls.get(m)) for m in methods),
               _num(r.toolkit_over_plain, ".2f")) for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    lines = ["", f"no-change run by number of files (workload {FILES}):"]
    for n, cells in enumerate(table):
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    growth = files_growth(rows)
    lines.append(f"growth per {GROWTH_FILES // 1000}k files: "
                 + ", ".join(f"{m} {_num(g, '.2f')}s" for m, g in growth.items()))
    return lines


def files_document(results: Sequence[Measurement]) -> dict[str, Any] | None:
    """What bench.json holds on the files workload (None without its runs)."""
    rows = files_rows(results)
    if not rows:
        return None
    return {"rows": [{"files": r.files, "walls": dict(r.walls),
                      "toolkit_over_plain": r.toolkit_over_plain} for r in rows],
            "growth_per_files": GROWTH_FILES, "growth_seconds": files_growth(rows)}


def chart_series(results: Sequence[Measurement]) -> tuple[list[str], list[str],
                                                          list[list[float]]]:
    """Bar labels, phase names in stacking order, and seconds[phase][bar] for the chart."""
    labels = [f"{m.case} / {m.method}" for m in results]
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
                   ciphers: Sequence[CipherRate] = (),
                   points: PointCost | None = None) -> dict[str, Any]:
    """Everything ``bench.json`` holds."""
    ratios = overhead_ratios(results)
    snapshot = {m.case: {"watched": m.snapshot_seconds,
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
        "restore_point_cost": None if points is None else {
            "written_mib": points.written_mib,
            "rates": [{"what": w, "mib_s": r, "ratio": x}
                      for (w, r), (_w, x) in zip(points.rates, points.ratios(), strict=True)]},
        "point_churn": [{"what": w, "toolkit_wall": t, "ratio": x}
                        for w, t, x in point_churn_ratios(results)],
        "files": files_document(results),
        "error": error,
    })
    return doc


