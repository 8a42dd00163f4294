"""Read-only filesystem checks, for ``verify``: the command per filesystem type and
what its exit code says.

Every check is run with the option that makes the checker change nothing (``-n``):
``e2fsck -fn`` (forced, answering no to every question), ``xfs_repair -n``,
``fsck.fat -n``. A type without a read-only checker here is reported as not checked,
never as sound. Only exit 0 means sound; the meaning of the other codes is each
checker's own (e2fsck(8), xfs_repair(8), fsck.fat(8)).
"""

from __future__ import annotations

from dataclasses import dataclass

# The read-only check of each filesystem type, the device appended.
_CHECKS: dict[str, tuple[str, ...]] = {
    "ext2": ("e2fsck", "-f", "-n"),
    "ext3": ("e2fsck", "-f", "-n"),
    "ext4": ("e2fsck", "-f", "-n"),
    "xfs": ("xfs_repair", "-n"),
    "vfat": ("fsck.fat", "-n"),
}

# What a non-zero exit means, per checker (with -n nothing is ever corrected).
_MEANINGS: dict[str, dict[int, str]] = {
    "e2fsck": {4: "errors left uncorrected", 8: "operational error",
               16: "usage or syntax error", 32: "canceled", 128: "shared library error"},
    "xfs_repair": {1: "corruption found", 2: "the log needs replaying (mount it once)"},
    "fsck.fat": {1: "errors found", 2: "usage error"},
}


@dataclass(frozen=True)
class Verdict:
    """One filesystem's check: sound or not, and why."""

    sound: bool
    checked: bool
    summary: str


def check_argv(fstype: str, device: str) -> tuple[str, ...] | None:
    """The read-only check of ``device``, or None for a type without one here."""
    if not device.startswith("/dev/"):
        raise ValueError(f"a check runs on a device under /dev, not {device!r}")
    head = _CHECKS.get(fstype)
    return None if head is None else (*head, device)


def verdict(fstype: str, exit_code: int | None, stderr: str = "") -> Verdict:
    """What a check's exit code says (None: the check did not run)."""
    head = _CHECKS.get(fstype)
    if head is None or exit_code is None:
        return Verdict(False, False, f"not checked: no read-only check for {fstype}"
                       if head is None else "not checked: the check did not run")
    if exit_code == 0:
        return Verdict(True, True, f"{head[0]}: no errors")
    meaning = _flags(head[0], exit_code)
    tail = " | ".join(stderr.strip().splitlines()[-2:])
    return Verdict(False, True, f"{head[0]} exited {exit_code} ({meaning})"
                   + (f": {tail}" if tail else ""))


def _flags(checker: str, code: int) -> str:
    """e2fsck's exit code is a sum of flags; the others' codes are single values."""
    meanings = _MEANINGS[checker]
    if checker != "e2fsck":
        return meanings.get(code, "unknown exit code")
    parts = [text for bit, text in sorted(meanings.items()) if code & bit]
    if code & 1 or code & 2:
        parts.insert(0, "reported corrections, which a read-only check never makes")
    return ", ".join(parts) or "unknown exit code"
