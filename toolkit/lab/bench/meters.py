"""The meters: parsers of the counters and outputs the bench program reads, and the argv of
the measured commands."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import ParseError
from ...rsync import BASE_ARGS
from .workloads import CGROUP_CPU_FILES, MIB, PARALLEL_SEPARATOR, PEER_ADDRESS, PROGRAM_PATH

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
    """Bytes read and written on block devices (their sector counts times 512)."""

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
    """What dd's closing line says: the bytes copied and the seconds it took."""

    bytes: int
    seconds: float

    @property
    def mib_per_s(self) -> float:
        """dd's throughput in MiB/s (0.0 when it took no time)."""
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
    """One command the meter ran: its program's name, exit code, wall time, peak RSS, output."""

    argv0: str
    exit_code: int
    wall: float
    hwm_kib: int  # the step's first process's peak RSS (sampled)
    stdout: str
    stderr: str


@dataclass(frozen=True)
class MeterResult:
    """What the meter measured of its commands, run one after another until one failed: the
    exit code, wall and CPU time, the largest process, the watched dm devices and the
    counters before and after."""

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
    """One filesystem's copy in the toolkit's report: its rsync time and bytes sent and received."""

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
    """Seconds spent per ``role action`` (e.g. ``peer mount``, ``source undo snapshot``); a
    report saved before steps named their role read by its former key, ``host``."""
    out: dict[str, float] = {}
    for st in steps:
        key = f"{st.get('role', st.get('host', '?'))} {st.get('action', '?')}"
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


