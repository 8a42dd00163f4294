"""The rsync command, its ssh transport, its exit codes and its statistics."""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import (
    ConfigError,
    ConnectionLost,
    Interrupted,
    MassDeleteRefused,
    PeerFull,
    ToolkitError,
    TransferFailed,
    TransferPartial,
)
from .names import is_host_name
from .rsync_options import extra_option_problem

# -a archive, -H hard links, -A ACLs, -X xattrs (file capabilities live there),
# -S sparse files, -x one filesystem per run (each guest filesystem is copied
# on its own, so a missing nested mount can never spill into its parent).
BASE_ARGS = ("-aHAXSx", "--numeric-ids", "--delete", "--delete-delay")


def check_extra_options(options: Sequence[str], where: str = "rsync_args") -> None:
    """ConfigError for the first option outside the allowlist (rsync_options.EXTRA_OPTIONS)."""
    for option in options:
        problem = extra_option_problem(option)
        if problem is not None:
            raise ConfigError(f"{where}: rsync option {option!r}: {problem}")


_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def rsync_remote(peer_address: str, path: str) -> str:
    """``user@host:path`` as rsync must read it: a host over the remote shell.

    An IPv6 address goes in brackets (``user@[2001:db8::2]:/path``); anything
    rsync could read as a daemon module (``host::module``), a URL or an ssh
    option is a ConfigError.
    """
    user, at, host = peer_address.rpartition("@")
    ok = bool(at) and bool(_USER.fullmatch(user))
    if ok and host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ok = ":" in host
    if ok and ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            ok = False
        ok = ok and "%" not in host
    elif ok:
        ok = is_host_name(host)
    if not ok:
        raise ConfigError(f"peer address {peer_address!r}: expected user@host, user@IPv4 or "
                          "user@IPv6, which rsync reads as a host over ssh")
    return f"{user}@{host}:{path}"


@dataclass(frozen=True)
class SshOptions:
    """How the tool's ssh client reaches the peer: key and own known_hosts, port, timeouts,
    and the optional cipher and compression."""

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


# Ties a copy process to the run that started it: the kernel sends it SIGKILL when its
# parent ends, however that ends (a SIGKILL of the run, a power-cut of the process), so a
# killed run never leaves an rsync or its ssh writing to the standby (R1). rsync runs its
# remote shell through the same wrapper, so ssh goes with rsync.
TIED = ("setpriv", "--pdeathsig", "KILL", "--")


def untied(argv: Sequence[str]) -> tuple[str, ...]:
    """``argv`` without the TIED wrapper (the command it runs)."""
    a = tuple(argv)
    return a[len(TIED):] if a[:len(TIED)] == TIED else a


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
    compare: bool = False,
) -> list[str]:
    """The full rsync argv for one filesystem, source on this host, target on the peer
    (with ``compare``: a dry run that compares every file by checksum and lists each
    difference, the audit of ``verify --against-source``).

    The config's extra options (each from the allowlist) come first: rsync lets
    a later option override an earlier one, so every option of the tool's own,
    the guards among them (remote shell, deletion mode and bound, excludes),
    comes after them and wins.
    """
    check_extra_options(extra_args)
    if not source_dir.startswith("/"):
        raise ConfigError(f"rsync source {source_dir!r}: expected an absolute local path")
    remote = rsync_remote(peer_address, target_dir.rstrip("/") + "/")
    argv = [*TIED, "rsync", *extra_args, *BASE_ARGS, "--stats"]
    if compare:  # verify --against-source: every difference listed, nothing written
        argv += ["--dry-run", "--checksum", "--itemize-changes"]
        progress, max_delete = False, None
    if progress:
        argv.append("--info=progress2")
    if max_delete is not None:
        argv.append(f"--max-delete={max_delete}")
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    argv += ["-e", shlex.join([*TIED, *ssh_argv(ssh)])]
    for pat in excludes:
        argv.append(f"--exclude={pat}")
    argv += ["--", source_dir.rstrip("/") + "/", remote]
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
                        "space or grow the standby LV, then run again", host=host)
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


def inodes_argv(path: str) -> list[str]:
    """statvfs of the filesystem mounted at ``path``: its inode count and free inodes."""
    return ["stat", "-f", "--format", "%c %d", "--", path]


def parse_inodes(text: str) -> tuple[int, int] | None:
    """(inodes, free inodes) from ``inodes_argv`` output; None when it is not that."""
    fields = text.split()
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        return None
    total, free = int(fields[0]), int(fields[1])
    return (total, free) if 0 < total and free <= total else None


def inode_exhaustion(name: str, standby: tuple[int, int] | None,
                     source: tuple[int, int] | None = None, *,
                     host: str | None = None) -> PeerFull | None:
    """The "No space left on device" of a standby that ran out of inodes, said as that.

    Growing the LV or ``--force`` does not help there: the standby has to be made
    again with the source's inode count. None when the standby still has inodes
    (more than 1% free; rsync removes what it was writing when it fails).
    """
    if standby is None:
        return None
    total, free = standby
    if free > total // 100:
        return None
    used = f"{total - free} of {total} used"
    if source is not None and source[0] <= total:
        return PeerFull(f"standby filesystem {name} has no free inodes ({used}; the source uses "
                        f"{source[0] - source[1]} of {source[0]}): files the source no longer "
                        "has still hold them on the standby; run init-standby --force to make it "
                        "again, empty", host=host)
    fewer = "" if source is None else f" ({source[0]})"
    return PeerFull(f"standby filesystem {name} has no free inodes ({used}): the standby was "
                    f"made with fewer inodes than the source{fewer}; run init-standby --force",
                    host=host)


@dataclass(frozen=True)
class RsyncStats:
    """The counts and sizes rsync's ``--stats`` printed (0 for any it did not)."""

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
    """One ``--info=progress2`` update: bytes so far, percent, rate, and the files still to
    check of those found so far (when rsync says)."""

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


# An --itemize-changes line: what would change (YXcstpoguax flags, then the name), or a
# deletion. rsync(1) "--itemize-changes".
_ITEMIZED = re.compile(r"(\*deleting  |[<>ch.][fdLDS][.+?A-Za-z]{9} ).+")


def itemized_changes(stdout: str) -> list[str]:
    """The itemized lines of an rsync ``--itemize-changes`` run: one per difference."""
    return [line for line in stdout.splitlines() if _ITEMIZED.fullmatch(line)]
