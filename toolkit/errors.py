"""Exception classes, one per exit code, and the documented exit-code table.

The table in ``EXIT_CODES`` is the single source of truth: the README's table
is generated from it and a unit test checks each class maps to its code.
"""

from __future__ import annotations

import signal


class ToolkitError(Exception):
    """Base of every error the toolkit raises on purpose."""

    exit_code = 2
    summary = "generic error"

    def __init__(self, message: str = "", *, host: str | None = None) -> None:
        self.host = host
        super().__init__(message or self.summary)

    def __str__(self) -> str:
        msg = super().__str__()
        return f"[{self.host}] {msg}" if self.host else msg


class FinishedWithWarnings(ToolkitError):
    """The run finished but something deserves a look (exit 1)."""

    exit_code = 1
    summary = "finished with warnings"


class ConfigError(ToolkitError):
    """The config file (or a lab recipe) is missing, unreadable or not TOML, or a key in it
    is wrong or refused."""

    exit_code = 3
    summary = "configuration is invalid"


class UsageError(ToolkitError):
    """The command line is wrong: an option's value, a file it names (--record, --replay),
    a host spec, or the failpoint variable."""

    exit_code = 4
    summary = "bad command-line usage"


class NotRoot(ToolkitError):
    """A command that works on LVM, device-mapper and mounts was not run as root."""

    exit_code = 5
    summary = "root privileges are required"


class InsecureFile(ToolkitError):
    """A config, key, lock, state or report file, or a directory above one, is not safe to
    trust: a symlink, not root's, group- or world-writable, hard-linked, or the wrong type."""

    exit_code = 6
    summary = "a config, key, lock or report file or directory is not safely owned"


class NotRunningHere(ToolkitError):
    """The domain is not running on this host: a quiet, successful skip."""

    exit_code = 0
    summary = "domain not running here (skipped)"


class HostNotInCluster(ToolkitError):
    """This host (--node, DOMU_BACKUP_NODE or its short hostname) is not a configured Dom0."""

    exit_code = 10
    summary = "this host is not one of the configured Dom0s"


class PeerInvalid(ToolkitError):
    """The domain's configured peer is this host itself, or not a configured Dom0."""

    exit_code = 11
    summary = "the configured peer is not usable"


class PeerUnreachable(ToolkitError):
    """The SSH connection to the peer could not be made, or its key was not accepted."""

    exit_code = 12
    summary = "the peer cannot be reached over SSH"


class HostKeyRejected(ToolkitError):
    """The peer's SSH host key is not in the tool's known_hosts, differs from the one pinned
    there, or that file cannot be read."""

    exit_code = 13
    summary = "the peer's SSH host key is unknown or changed"


class DomainRunningOnPeer(ToolkitError):
    """The domain is active (running, paused...) on the peer: its standby disks are in use."""

    exit_code = 14
    summary = "the domain is running on the peer; its standby is in use"


class DomainUnknown(ToolkitError):
    """The domain is not in the config, or has no block-device disk to back up."""

    exit_code = 15
    summary = "the domain is not defined or not configured"


class DomainNotDefinedHere(DomainUnknown):
    """Configured, but not defined on this host's hypervisor: exit 15 like DomainUnknown,
    and a quiet skip under ``backup --all`` (both Dom0s run the same job)."""


class StandbyInvalid(ToolkitError):
    """A standby LV on the peer is missing, open or smaller than its source, or a source disk
    is not a plain LVM LV; also init-standby refusing a standby that holds data (without
    --force) or failing its teardown."""

    exit_code = 16
    summary = "the peer's standby LV is missing, too small, or in use"


class NoSnapshotSpace(ToolkitError):
    """The source volume group has fewer free bytes than the run's snapshots need."""

    exit_code = 17
    summary = "the volume group has no room for the snapshot"


class MissingBinary(ToolkitError):
    """A host lacks a program the run needs, or `which` could not look them up."""

    exit_code = 18
    summary = "a required program is missing on a host"


class LayoutMismatch(ToolkitError):
    """The standby's partitions or filesystems differ from the source's (run init-standby),
    or init-standby cannot create a filesystem of that type."""

    exit_code = 19
    summary = "the standby's layout no longer matches the source (run init-standby)"


class ParseError(ToolkitError):
    """A tool's output (lvs, sfdisk, virsh, findmnt...) or the domain XML cannot be parsed."""

    exit_code = 20
    summary = "a tool's output could not be parsed"


class GuestLvmUnreadable(ToolkitError):
    """A guest PV's LVM label, PV header or metadata area cannot be read as lvm2 format_text."""

    exit_code = 21
    summary = "a guest's LVM label or metadata could not be read"


class UnsafeName(ToolkitError):
    """A name from guest data or the domain XML breaks its origin's rules (R20)."""

    exit_code = 22
    summary = "a name from guest data or the domain XML is refused (outside its strict rules)"


class ThinPoolFull(ToolkitError):
    """The thin pool of a standby LV is fuller (data or metadata) than thin_pool_max_fill."""

    exit_code = 23
    summary = "the standby's thin pool is too full; nothing was written"


class StandbyPromoted(ToolkitError):
    """The standby's marker says ``promoted``: the guest was started from it on the peer, so
    a backup from here would overwrite the running copy; refused before anything is made."""

    exit_code = 24
    summary = "the standby was promoted (the guest runs from it); the backup would overwrite it"


class StatusUnknown(ToolkitError):
    """``status`` could not read a standby marker on the peer: the standby is unknown."""

    exit_code = 25
    summary = "the standby's state is unknown (its marker on the peer cannot be read)"


class LockBusy(ToolkitError):
    """Another run (named by its pid when known) holds this domain's lock."""

    exit_code = 75
    summary = "another run holds this domain's lock"


class SnapshotFailed(ToolkitError):
    """Taking a snapshot of a source LV failed (lvcreate exited non-zero)."""

    exit_code = 30
    summary = "creating the snapshot failed"


class SnapshotInvalid(ToolkitError):
    """A snapshot overflowed, or filled to ``snapshot_max_fill`` and could not be extended,
    so the copy is not consistent."""

    exit_code = 31
    summary = "the snapshot overflowed or became invalid"


class MapFailed(ToolkitError):
    """Mapping a disk's partitions or aliases (kpartx, dmsetup) failed, or a node it should
    have made is not a block device."""

    exit_code = 32
    summary = "mapping partitions failed"


class MountRefused(ToolkitError):
    """A mount step failed, or none of the domain's filesystems is left to copy."""

    exit_code = 33
    summary = "a filesystem could not be mounted or proven mounted"


class FstabError(ToolkitError):
    """The guest's fstab is missing or cannot be resolved to exactly the filesystems backed up."""

    exit_code = 34
    summary = "the guest's fstab could not be resolved"


class SourceGuardFailed(ToolkitError):
    """A source mount is not proven to be the snapshot's filesystem, or it is empty."""

    exit_code = 35
    summary = "the source tree is not the expected mounted, non-empty filesystem"


class StandbyGuardFailed(ToolkitError):
    """A standby mount on the peer is not proven to be the standby's filesystem."""

    exit_code = 36
    summary = "the standby tree is not the peer's mounted standby filesystem"


class FilesystemVanished(ToolkitError):
    """The standby holds a filesystem the source no longer shows; nothing was created."""

    exit_code = 37
    summary = ("a filesystem the standby holds is gone from the source (repair it, or name "
               "it in skip_filesystems)")



class PreSnapshotFailed(ToolkitError):
    """The domain's pre_snapshot hook failed or timed out: no snapshot was taken (its
    post_snapshot hook ran in teardown)."""

    exit_code = 38
    summary = "the pre_snapshot hook failed; no snapshot was taken"


class FreezeFailed(ToolkitError):
    """freeze = "agent" and the guest agent did not freeze the filesystems (with
    freeze_fallback = "refuse"): no snapshot was taken."""

    exit_code = 39
    summary = "the guest's filesystems could not be frozen; no snapshot was taken"

class TransferFailed(ToolkitError):
    """rsync failed: an exit code that is no partial transfer, full target or lost connection,
    or killed by a signal other than SIGHUP, SIGINT or SIGTERM."""

    exit_code = 40
    summary = "rsync failed"


class TransferPartial(ToolkitError):
    """rsync transferred only part of the files (exit 23, or 24 for vanished files)."""

    exit_code = 41
    summary = "rsync finished with a partial transfer"


class MassDeleteRefused(ToolkitError):
    """rsync's --max-delete limit stopped its deletions (exit 25)."""

    exit_code = 42
    summary = "rsync would delete more than allowed (--allow-mass-delete)"


class PeerFull(ToolkitError):
    """The standby filesystem ran out of space or of inodes."""

    exit_code = 43
    summary = "the standby filesystem is full"


class ConnectionLost(ToolkitError):
    """The SSH connection to the peer dropped, or a command could not be started over it;
    what the command did on the peer is unknown."""

    exit_code = 44
    summary = "the connection to the peer was lost; state on the peer is unknown, run recover"


class RestorePointFailed(ToolkitError):
    """The copy succeeded and the standby is clean, but its restore point could not be
    taken (what was made of it is removed); older points are kept as they were."""

    exit_code = 45
    summary = "the standby is clean, but its restore point could not be taken (or old ones pruned)"


class StandbyUnsound(ToolkitError):
    """verify found the standby or restore point not sound (a filesystem check failed, the
    guest's fstab does not resolve, nothing to boot from), or could not verify it (a dirty
    standby, a device it could not read)."""

    exit_code = 46
    summary = "verify: the standby or restore point is not sound, or could not be verified"


class StandbyDiffers(ToolkitError):
    """verify --against-source found files where the standby differs from the snapshot."""

    exit_code = 47
    summary = "verify --against-source: the standby differs from the source"


class PromoteRefused(ToolkitError):
    """promote refused, before it changed anything (the source runs the domain or cannot be
    asked, the standby is dirty, promoted or in use, its definition is missing or not the
    standby's), or a step of it failed (what it did is undone; what cannot be is left to
    ``recover``). failback refuses with it too."""

    exit_code = 48
    summary = "promote or failback refused (nothing changed), or a step failed (undone)"


class CommandFailed(ToolkitError):
    """A command exited with a code it was not allowed to; carries the result."""

    exit_code = 50
    summary = "a command failed"

    def __init__(self, result, message: str = "") -> None:  # CommandResult
        self.result = result
        super().__init__(message or _describe(result), host=result.host)


class CommandTimedOut(CommandFailed):
    """A command ran past its timeout and was killed; carries what it wrote until then."""

    exit_code = 51
    summary = "a command timed out"


class TeardownIncomplete(ToolkitError):
    """Tearing down a run's objects (mounts, maps, snapshots), or recover, left some behind."""

    exit_code = 60
    summary = "teardown left objects behind; run recover"


class Interrupted(ToolkitError):
    """A signal arrived; the exit code is 128 + the signal number."""

    summary = "interrupted by a signal"

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def _describe(result, tail_lines: int = 5) -> str:
    from shlex import join

    tail = "\n".join(result.stderr.strip().splitlines()[-tail_lines:])
    msg = f"command `{join(result.argv)}` exited {result.exit_code}"
    if tail:
        msg += f": {tail}"
    return msg


def _all_error_classes() -> list[type[ToolkitError]]:
    seen: list[type[ToolkitError]] = []
    todo = [ToolkitError]
    while todo:
        cls = todo.pop(0)
        if cls not in seen:
            # A refinement that keeps its parent's code and summary is not a row of its own.
            if cls is ToolkitError or {"exit_code", "summary"} & set(vars(cls)):
                seen.append(cls)
            todo.extend(cls.__subclasses__())
    return seen


def exit_code_table() -> list[tuple[int | str, str, str]]:
    """(code, class name, summary) rows for the documented exit-code table."""
    rows: list[tuple[int | str, str, str]] = [(0, "-", "success")]
    for cls in _all_error_classes():
        if cls is Interrupted:
            rows.append(("128+N", cls.__name__, cls.summary))
        else:
            rows.append((cls.exit_code, cls.__name__, cls.summary))
    rows.sort(key=lambda r: (999 if isinstance(r[0], str) else r[0], r[1]))
    return rows


def most_severe(codes: list[int]) -> int:
    """The exit code of a multi-domain run: the most severe of its domains."""
    if not codes:
        return 0
    return max(codes)
