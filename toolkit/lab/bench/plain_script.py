"""The bench's ``plain-script`` method: the backup as an operator would script it by hand.

What the toolkit is measured against (``invoke bench``): the same flow on the same data,
without what the toolkit adds around it (no journal, no guards, no marker, no lock, no
recover check, no report). ``virsh domstate`` and ``dumpxml``; a snapshot of each disk
(``lvcreate --snapshot``, the toolkit's snapshot size); ``kpartx -a`` and each filesystem
mounted read-only; the peer's standby LVs mapped and mounted through one ``ssh -T``; one
``rsync`` a filesystem with the toolkit's options; then, through a shell trap so a
failure tears down too, unmount and unmap on the peer through one more ``ssh -T``, and
unmount, unmap and ``lvremove`` here.

The script is bash only for ``$EPOCHREALTIME``: it marks each phase with a shell variable,
so the marks cost no process (the toolkit's report times its phases without one either).
Everything in it is the bench's own (names of its LVs and guests), quoted all the same.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ...rsync import BASE_ARGS

# The plain script's snapshot LVs: ``plainsnap-<lv>`` (the meter times each by its -cow map).
SNAPSHOT_PREFIX = "plainsnap-"
# Its mount points: <root>/src/<device><number> here, <root>/dst/<device><number> there.
MOUNT_ROOT = "/run/domubk-bench-plain"
# Between the outputs of its rsyncs, and at the start of its phase marks.
RSYNC_SEPARATOR = "=== plain: next rsync ==="
PHASE_MARK = "plain-phase"
# The phases, in the order the script marks them; "end" closes the last.
PHASES = ("preflight", "snapshot", "map", "mount", "peer", "rsync", "teardown")
# Read-only source mounts an operator needs on a live guest's snapshot (a dirty journal
# is not replayed); the peer's standby is mounted read-write, as the toolkit does.
SOURCE_OPTIONS = {"ext2": "ro", "ext3": "ro,noload", "ext4": "ro,noload",
                  "xfs": "ro,norecovery,nouuid"}
PEER_OPTIONS = {"ext2": "rw", "ext3": "rw", "ext4": "rw", "xfs": "rw,nouuid"}


@dataclass(frozen=True)
class PlainFilesystem:
    """One filesystem to copy: a partition of a disk, and its type."""

    number: int
    fs: str


@dataclass(frozen=True)
class PlainDisk:
    """One disk: its LV here, its standby LV on the peer, its filesystems to copy."""

    device: str  # the guest's name for it (xvda): names the mount points
    vg: str
    lv: str
    peer_vg: str
    peer_lv: str
    filesystems: tuple[PlainFilesystem, ...]

    @property
    def snapshot(self) -> str:
        """The snapshot LV's name."""
        return f"{SNAPSHOT_PREFIX}{self.lv}"


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name LVM gives ``vg/lv`` (each "-" in either doubled)."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def _partition(vg: str, lv: str, number: int) -> str:
    # kpartx -p p: the parent's dm name, "p", the number (always, with -p)
    return f"/dev/mapper/{dm_name(vg, lv)}p{number}"


def _mknode(device: str) -> str:
    """Make the map's node where no udev does (a shell test, no process where it exists)."""
    return (f"[ -b {shlex.quote(device)} ] || dmsetup mknodes "
            f"{shlex.quote(device.rsplit('/', 1)[-1])}")


def _mount_point(side: str, disk: PlainDisk, fs: PlainFilesystem) -> str:
    return f"{MOUNT_ROOT}/{side}/{disk.device}{fs.number}"


def _check_names(disks: Sequence[PlainDisk]) -> None:
    for d in disks:
        for name in (d.device, d.vg, d.lv, d.peer_vg, d.peer_lv):
            if not name or not all(c.isalnum() or c in "_.+-" for c in name) \
                    or name.startswith("-"):
                raise ValueError(f"plain script: {name!r} is not an LVM or device name")
        for fs in d.filesystems:
            if fs.fs not in SOURCE_OPTIONS:
                raise ValueError(f"plain script: {d.device}{fs.number}: no mount options for "
                                 f"{fs.fs!r}")


def peer_setup(disks: Sequence[PlainDisk]) -> list[str]:
    """The peer's part before the copies: map each standby LV, mount its filesystems."""
    lines = ["set -e"]
    for d in disks:
        lines.append(shlex.join(["kpartx", "-a", "-s", "-p", "p",
                                 f"/dev/{d.peer_vg}/{d.peer_lv}"]))
        for fs in d.filesystems:
            device = _partition(d.peer_vg, d.peer_lv, fs.number)
            where = _mount_point("dst", d, fs)
            lines += [_mknode(device), shlex.join(["mkdir", "-p", where]),
                      shlex.join(["mount", "-o", PEER_OPTIONS[fs.fs], device, where])]
    return lines


def peer_teardown(disks: Sequence[PlainDisk]) -> list[str]:
    """The peer's part after the copies: unmount (flushing the standby), unmap."""
    lines = []
    for d in disks:
        lines += [shlex.join(["umount", _mount_point("dst", d, fs)]) for fs in d.filesystems]
        lines.append(shlex.join(["kpartx", "-d", "-s", "-p", "p",
                                 f"/dev/{d.peer_vg}/{d.peer_lv}"]))
    lines.append(shlex.join(["rm", "-rf", "--", f"{MOUNT_ROOT}/dst"]))
    return lines


def _heredoc(lines: Sequence[str]) -> str:
    body = "\n".join(lines)
    if "\nPLAIN_EOF\n" in f"\n{body}\n":
        raise ValueError("plain script: a line reads like the here-document's end")
    return f"<<'PLAIN_EOF'\n{body}\nPLAIN_EOF"


def plain_script(*, uri: str, domain: str, disks: Sequence[PlainDisk], snapshot_size: str,
                 ssh: Sequence[str], peer_address: str) -> str:
    """The bash script (see the module's docstring); exits with the first failure's code,
    after its teardown."""
    _check_names(disks)
    remote = shlex.join([*ssh, "-T", peer_address, "bash", "-s"])
    virsh = ["virsh", "-c", uri]
    mounts = [(d, fs) for d in disks for fs in d.filesystems]
    here_down = []
    for d in disks:
        here_down += [shlex.join(["umount", _mount_point("src", d, fs)]) + " || rc=1"
                      for fs in d.filesystems]
        here_down += [shlex.join(["kpartx", "-d", "-s", "-p", "p", f"/dev/{d.vg}/{d.snapshot}"])
                      + " || rc=1",
                      shlex.join(["lvremove", "-f", f"{d.vg}/{d.snapshot}"]) + " || rc=1"]
    lines = [
        "set -u",
        f't() {{ printf "{PHASE_MARK} %s %s\\n" "$1" "$EPOCHREALTIME"; }}',
        "cleanup() {",
        "  rc=$?",
        "  set +e",
        "  t teardown",
        f"  {remote} {_heredoc(peer_teardown(disks))}",
        '  [ $? = 0 ] || rc=1',
        *(f"  {line}" for line in here_down),
        "  rm -rf -- " + shlex.quote(f"{MOUNT_ROOT}/src"),
        "  t end",
        '  exit "$rc"',
        "}",
        "t preflight",
        shlex.join([*virsh, "domstate", "--", domain]) + " | grep -qx running || "
        f"{{ echo {shlex.quote(f'plain: {domain} is not running here')} >&2; exit 2; }}",
        shlex.join([*virsh, "dumpxml", "--", domain]) + " > /dev/null || exit 2",
        "trap cleanup EXIT",
        "set -e",
        "t snapshot",
        *(shlex.join(["lvcreate", "--snapshot", "-l", snapshot_size, "-n", d.snapshot,
                      f"{d.vg}/{d.lv}"]) for d in disks),
        "t map",
    ]
    for d in disks:
        lines.append(shlex.join(["kpartx", "-a", "-s", "-p", "p", f"/dev/{d.vg}/{d.snapshot}"]))
        lines += [_mknode(_partition(d.vg, d.snapshot, fs.number)) for fs in d.filesystems]
    lines.append("t mount")
    for d, fs in mounts:
        where = _mount_point("src", d, fs)
        lines += [shlex.join(["mkdir", "-p", where]),
                  shlex.join(["mount", "-o", SOURCE_OPTIONS[fs.fs],
                              _partition(d.vg, d.snapshot, fs.number), where])]
    lines += ["t peer", f"{remote} {_heredoc(peer_setup(disks))}", "t rsync"]
    for n, (d, fs) in enumerate(mounts):
        if n:
            lines.append(f"echo {shlex.quote(RSYNC_SEPARATOR)}")
        lines.append(shlex.join(["rsync", *BASE_ARGS, "--stats", "-e", shlex.join(ssh), "--",
                                 _mount_point("src", d, fs) + "/",
                                 f"{peer_address}:{_mount_point('dst', d, fs)}/"]))
    return "\n".join(lines) + "\n"


def plain_script_argv(**kwargs) -> list[str]:
    """The script as one command (``bash -c``) for the bench's meter."""
    return ["bash", "-c", plain_script(**kwargs), "plain-script"]


def plain_phases(stdout: str, wall: float) -> dict[str, float]:
    """Seconds of each phase from the script's marks, then ``other``: the wall time the marks
    do not cover (bash's start and exit)."""
    marks: list[tuple[str, float]] = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == PHASE_MARK:
            try:
                marks.append((parts[1], float(parts[2].replace(",", "."))))
            except ValueError:
                continue
    phases: dict[str, float] = {}
    for (name, at), (_next, then) in zip(marks, marks[1:], strict=False):
        phases[name] = round(phases.get(name, 0.0) + then - at, 3)
    phases["other"] = round(max(wall - sum(phases.values()), 0.0), 3)
    return phases


def rsync_outputs(stdout: str) -> list[str]:
    """The --stats output of each of the script's rsyncs."""
    text = "\n".join(line for line in stdout.splitlines() if not line.startswith(PHASE_MARK))
    return [part for part in text.split(RSYNC_SEPARATOR) if "Number of files" in part]
