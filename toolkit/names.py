"""Names and paths from outside the tool, each held to its origin's strict rules (R20).

Guest data (LVM metadata, filesystem labels, partition names) is written by
whoever controls the guest, so it is hostile until checked. A name is
accepted only in the character set its origin allows, and every directory or
mount point the tool builds is proven to lie under its own run directory
before anything is created there. Disk targets (from a domain's XML and from
the config) and host names (peer addresses, host specs) are held to one rule
each here too, so every module that reads one checks it the same way.

A base module: it imports nothing from the tool but its errors.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re

from .errors import UnsafeName

# LVM's own rule for VG and LV names (lvm(8), "VALID NAMES"): letters, digits and
# "+_.-", not starting with "-", never "." or "..". device-mapper names are at most
# 127 bytes, and LVM's dm name of an LV is "<vg>-<lv>", so the two together stay
# within 126 characters before LVM doubles their dashes.
_LVM_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")
LVM_NAME_MAX = 127
LVM_PAIR_MAX = 126

# The longest label each filesystem's own tools write (e2label, xfs_admin, mlabel, mkswap).
LABEL_MAX: dict[str, int] = {"ext2": 16, "ext3": 16, "ext4": 16, "xfs": 12, "vfat": 11,
                             "swap": 16, "btrfs": 255}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A path component the tool builds: a domain.run directory or a filesystem name.
_COMPONENT = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")

# The one rule for a disk target name (R20): a bus prefix, letters a-z, then an
# optional partition number ("xvda", "xvda1", "sdb", "hdc", "xvdaa"; "fda" is
# libvirt's floppy, which is never copied but must not refuse its domain). It
# holds for every <target dev=...> of a domain XML (facts.virsh), for the disk and
# filesystem names of the config ([domains.X.disks.<target>],
# [domains.X.mounts.<fs>]) and for the disk part of the names a run gives what it
# creates (owned); always used with fullmatch (``is_disk_target``), so no
# newline, "/", "..", space or leading "-" can get through. ASCII only: a str
# pattern's [a-z] and [0-9] match nothing else.
DISK_TARGET = re.compile(r"(hd|sd|vd|xvd|ubd|fd)[a-z]+[0-9]*")
# The same rule in words, for the messages that refuse a target.
DISK_TARGET_RULE_TEXT = ("hd, sd, vd, xvd, ubd or fd, then letters a-z and an optional "
                         "partition number (like xvda, xvda1, sdb or hdc)")

# One label of an RFC 1123 host name.
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_disk_target(name: object) -> bool:
    """Whether ``name`` is a disk target (or target plus partition number) the tool accepts."""
    return isinstance(name, str) and DISK_TARGET.fullmatch(name) is not None


def is_host_name(host: str) -> bool:
    """An RFC 1123 host name (labels of letters, digits and inner "-"), or an IPv4 address."""
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return False
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


def check_lvm_name(name: str, what: str) -> str:
    """``name`` if it is a valid LVM VG or LV name; UnsafeName saying why otherwise."""
    if not isinstance(name, str) or not _LVM_NAME.fullmatch(name) or name in (".", ".."):
        raise UnsafeName(f"{what} {name!r} is not a valid LVM name (letters, digits and "
                         "+ _ . - only, not starting with -, not . or ..)")
    if len(name) > LVM_NAME_MAX:
        raise UnsafeName(f"{what} {name[:40]!r}... is {len(name)} characters long "
                         f"(LVM allows {LVM_NAME_MAX})")
    return name


def check_lvm_pair(vg: str, lv: str, what: str) -> None:
    """A guest VG and LV name, each valid, together short enough for one dm name."""
    check_lvm_name(vg, f"{what}: VG name")
    check_lvm_name(lv, f"{what}: LV name")
    if len(vg) + len(lv) > LVM_PAIR_MAX:
        raise UnsafeName(f"{what}: VG and LV names {vg[:30]!r}/{lv[:30]!r} are together "
                         f"{len(vg) + len(lv)} characters long (LVM allows {LVM_PAIR_MAX})")


def check_label(label: str | None, fstype: str | None, what: str) -> str | None:
    """A filesystem label: one line, no control characters, no longer than its type allows."""
    if label is None:
        return None
    if _CONTROL.search(label):
        raise UnsafeName(f"{what}: filesystem label {label!r} holds control characters")
    limit = LABEL_MAX.get(fstype or "", 255)
    if len(label.encode("utf-8", "surrogateescape")) > limit:
        raise UnsafeName(f"{what}: filesystem label {label[:40]!r} is longer than "
                         f"{fstype or 'a label'} allows ({limit} bytes)")
    return label


def check_text(value: str | None, what: str, limit: int = 255) -> str | None:
    """Free text from guest data (a GPT partition name): one line, bounded."""
    if value is None:
        return None
    if _CONTROL.search(value) or len(value) > limit:
        raise UnsafeName(f"{what} {value[:40]!r} holds control characters or is longer "
                         f"than {limit} characters")
    return value


def path_under(root: str, path: str, what: str = "path") -> str:
    """``path`` if it is normal and lies strictly below ``root``; UnsafeName otherwise.

    Both must be absolute and already normal (no ``.``, ``..``, ``//``, trailing
    ``/``), and every component below ``root`` a plain name the tool could have
    built, so no string trick and no guest name can climb out of ``root``.
    """
    if not (_normal_absolute(root) and _normal_absolute(path)):
        raise UnsafeName(f"{what} {path!r} is not a normal absolute path below {root!r}")
    base = root.rstrip("/") + "/"
    if not path.startswith(base):
        raise UnsafeName(f"{what} {path!r} lies outside the tool's directory {root!r}")
    rest = path[len(base):]
    for part in rest.split("/"):
        if not _COMPONENT.fullmatch(part) or part in (".", ".."):
            raise UnsafeName(f"{what} {path!r}: component {part!r} is not a name the tool "
                             "builds")
    return path


def _normal_absolute(path: str) -> bool:
    return (isinstance(path, str) and path.startswith("/") and not path.startswith("//")
            and not _CONTROL.search(path) and posixpath.normpath(path) == path)
