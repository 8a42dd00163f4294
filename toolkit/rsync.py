"""The rsync command, its ssh transport, its exit codes and its statistics."""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import (
    ConnectionLost,
    Interrupted,
    MassDeleteRefused,
    PeerFull,
    ToolkitError,
    TransferFailed,
    TransferPartial,
)

# -a archive, -H hard links, -A ACLs, -X xattrs (file capabilities live there),
# -S sparse files, -x one filesystem per run (each guest filesystem is copied
# on its own, so a missing nested mount can never spill into its parent).
BASE_ARGS = ("-aHAXSx", "--numeric-ids", "--delete", "--delete-delay")


@dataclass(frozen=True)
class SshOptions:
    key: str
    known_hosts: str
    port: int = 22
    connect_timeout: int = 10
    keepalive: int = 15
    cipher: str = ""
    compress: bool = False


def ssh_argv(opts: SshOptions) -> list[str]:
    """The ssh client argv rsync uses: batch mode, strict host keys, the tool's known_hosts only."""
    argv = [
        "ssh", "-i", opts.key, "-p", str(opts.port),
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={opts.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "PasswordAuthentication=no",
        "-o", f"ConnectTimeout={opts.connect_timeout}",
        "-o", f"ServerAliveInterval={max(opts.keepalive, 1)}",
        "-o", "ServerAliveCountMax=4",
        "-o", f"Compression={'yes' if opts.compress else 'no'}",
    ]
    if opts.cipher:
        argv += ["-c", opts.cipher]
    return argv


def relative_excludes(excludes: Sequence[str], guest_path: str | None) -> list[str]:
    """Guest-path excludes translated to one filesystem's root.

    An absolute pattern such as ``/var/cache/*`` applies to the filesystem
    mounted at ``/var`` as ``/cache/*`` and to no other; a relative pattern
    (``*.tmp``) applies everywhere. Without a known guest path only relative
    patterns apply.
    """
    out: list[str] = []
    for pat in excludes:
        if not pat.startswith("/"):
            out.append(pat)
            continue
        if guest_path is None:
            continue
        base = posixpath.normpath(guest_path)
        if base == "/":
            out.append(pat)
        elif pat == base or pat.startswith(base + "/"):
            rest = pat[len(base):] or "/"
            out.append(rest)
    return out


def rsync_argv(
    source_dir: str,
    peer_address: str,
    target_dir: str,
    ssh: SshOptions,
    *,
    excludes: Sequence[str] = (),
    extra_args: Sequence[str] = (),
    bwlimit: str = "",
    max_delete: int | None = None,
    progress: bool = True,
) -> list[str]:
    """The full rsync argv for one filesystem, source on this host, target on the peer."""
    argv = ["rsync", *BASE_ARGS, "--stats"]
    if progress:
        argv.append("--info=progress2")
    if max_delete is not None:
        argv.append(f"--max-delete={max_delete}")
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    argv += ["-e", shlex.join(ssh_argv(ssh))]
    for pat in excludes:
        argv.append(f"--exclude={pat}")
    argv += list(extra_args)
    argv += ["--", source_dir.rstrip("/") + "/", f"{peer_address}:{target_dir.rstrip('/')}/"]
    return argv


# rsync(1) EXIT VALUES, and what each means for a backup. Only 0 is success.
RSYNC_EXIT_CODES: dict[int, tuple[str, type[ToolkitError] | None]] = {
    0: ("success", None),
    1: ("syntax or usage error", TransferFailed),
    2: ("protocol incompatibility", TransferFailed),
    3: ("errors selecting input/output files, dirs", TransferFailed),
    4: ("requested action not supported", TransferFailed),
    5: ("error starting client-server protocol", ConnectionLost),
    6: ("daemon unable to append to log-file", TransferFailed),
    10: ("error in socket I/O", ConnectionLost),
    11: ("error in file I/O", TransferFailed),
    12: ("error in rsync protocol data stream", ConnectionLost),
    13: ("errors with program diagnostics", TransferFailed),
    14: ("error in IPC code", TransferFailed),
    20: ("received SIGUSR1 or SIGINT", TransferFailed),
    21: ("some error returned by waitpid()", TransferFailed),
    22: ("error allocating core memory buffers", TransferFailed),
    23: ("partial transfer due to error", TransferPartial),
    24: ("partial transfer due to vanished source files", TransferPartial),
    25: ("the --max-delete limit stopped deletions", MassDeleteRefused),
    30: ("timeout in data send/receive", ConnectionLost),
    35: ("timeout waiting for daemon connection", ConnectionLost),
    255: ("ssh failed (connection refused, lost, or host key rejected)", ConnectionLost),
}


def rsync_outcome(exit_code: int, stderr: str = "", *, allow_vanished: bool = False,
                  host: str | None = None) -> ToolkitError | None:
    """Map an rsync exit code to None (success) or the error to raise.

    Exit 24 (files vanished) cannot happen on a frozen snapshot unless something
    is wrong, so it is a failure unless configured otherwise. A full target
    filesystem shows up as 11 or 23 with ENOSPC in stderr.
    """
    if exit_code == 0:
        return None
    if exit_code == 24 and allow_vanished:
        return None
    if exit_code < 0:
        return Interrupted(-exit_code) if -exit_code in (1, 2, 15) else TransferFailed(
            f"rsync was killed by signal {-exit_code}", host=host)
    if exit_code in (11, 12, 23) and "No space left on device" in stderr:
        return PeerFull(f"rsync: the standby filesystem is full (rsync exit {exit_code}); free "
                        "space or grow the target LV, then run again", host=host)
    meaning, cls = RSYNC_EXIT_CODES.get(exit_code, ("unknown exit code", TransferFailed))
    assert cls is not None
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    msg = f"rsync exited {exit_code} ({meaning})"
    if cls is MassDeleteRefused:
        msg += "; nothing more was deleted. Re-run with --allow-mass-delete if this is expected"
    if cls is ConnectionLost:
        msg += "; the state on the peer is unknown: run `recover`"
    if tail:
        msg += f": {tail}"
    return cls(msg, host=host)


@dataclass(frozen=True)
class RsyncStats:
    files: int = 0
    files_transferred: int = 0
    files_deleted: int = 0
    total_size: int = 0
    transferred_size: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


_STAT_FIELDS = {
    "Number of files": "files",
    "Number of regular files transferred": "files_transferred",
    "Number of deleted files": "files_deleted",
    "Total file size": "total_size",
    "Total transferred file size": "transferred_size",
    "Total bytes sent": "bytes_sent",
    "Total bytes received": "bytes_received",
}
_STAT_RE = re.compile(r"^(?P<key>[A-Za-z ]+?):\s+(?P<num>[\d,.]+)")


def parse_stats(text: str) -> RsyncStats:
    """Read rsync ``--stats`` output (LC_ALL=C; numbers may carry thousands separators)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        m = _STAT_RE.match(line.strip())
        if not m or m.group("key") not in _STAT_FIELDS:
            continue
        num = m.group("num").replace(",", "")
        try:
            values[_STAT_FIELDS[m.group("key")]] = int(float(num))
        except ValueError:
            continue
    return RsyncStats(**values)


_PROGRESS_RE = re.compile(
    r"^\s*(?P<bytes>[\d,]+)\s+(?P<pct>\d+)%\s+(?P<rate>\S+)\s+(?P<eta>[\d:]+)"
    r"(?:\s+\(xfr#(?P<xfr>\d+),\s*(?:ir|to)-chk=(?P<left>\d+)/(?P<total>\d+)\))?"
)


@dataclass(frozen=True)
class Progress:
    bytes: int
    percent: int
    rate: str
    files_left: int | None = None
    files_total: int | None = None


def parse_progress(line: str) -> Progress | None:
    """One ``--info=progress2`` update, or None for any other line."""
    m = _PROGRESS_RE.match(line)
    if not m:
        return None
    left = m.group("left")
    total = m.group("total")
    return Progress(int(m.group("bytes").replace(",", "")), int(m.group("pct")), m.group("rate"),
                    int(left) if left else None, int(total) if total else None)
