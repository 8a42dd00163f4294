"""The guest's /etc/fstab: which of its filesystems belongs at which path.

Decisions, so the rules are in one place:

- swap, pseudo filesystems (proc, sysfs, tmpfs, ...), network and FUSE
  filesystems, bind mounts, loop-mounted images, removable media (iso9660,
  udf, /dev/sr0, /dev/cdrom, /dev/fd0) and type "none" are ignored, each with
  a reason.
- ``noauto`` and ``nofail`` entries are kept but marked ``optional``: a
  filesystem on a backed-up disk belongs in the tree whether or not the guest
  mounts it at boot, while an optional entry naming a device that is not on a
  backed-up disk (a USB disk, a hot-plugged volume) is skipped, not an error.
- A line that cannot be read (too few or too many fields, an unknown tag, a
  source that is neither a tag nor a device path) and a path that is not
  absolute, has a ".." component or a control character are errors naming
  the line: the guest's fstab decides where a read-only mount lands on the
  host, so nothing in it is guessed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import FstabError
from .blkid import FilesystemProbe

KINDS = ("uuid", "label", "partuuid", "partlabel", "device")

PSEUDO_FS = frozenset({
    "proc", "sysfs", "devpts", "tmpfs", "devtmpfs", "ramfs", "cgroup", "cgroup2",
    "securityfs", "debugfs", "tracefs", "pstore", "efivarfs", "hugetlbfs", "mqueue",
    "configfs", "fusectl", "binfmt_misc", "autofs", "bpf", "rpc_pipefs", "nfsd", "usbfs",
    "selinuxfs", "overlay", "aufs",
})
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smbfs", "smb3", "sshfs", "glusterfs", "ceph", "9p", "virtiofs",
    "davfs", "afs", "ncpfs", "lustre", "ocfs2", "gfs2", "fuse",
})
REMOVABLE_FS = frozenset({"iso9660", "udf"})
# Filesystem types one kernel driver mounts interchangeably.
_FAMILIES = ({"ext2", "ext3", "ext4"}, {"vfat", "msdos", "fat"})

_TAGS = {"UUID": "uuid", "LABEL": "label", "PARTUUID": "partuuid", "PARTLABEL": "partlabel"}
_BY_DIRS = {"by-uuid": "uuid", "by-label": "label", "by-partuuid": "partuuid",
            "by-partlabel": "partlabel"}
_FIELD_SEP = re.compile(r"[ \t]+")
_OCTAL = re.compile(rb"\\([0-3][0-7]{2})")
_UDEV_HEX = re.compile(rb"\\x([0-9a-fA-F]{2})")
_REMOVABLE_DEV = re.compile(r"/dev/(sr[0-9]+|cdrom[0-9]*|cdrw[0-9]*|dvd[0-9]*|fd[0-9]+)")
_DISK_DEV = re.compile(r"/dev/(xvd|sd|vd|hd)([a-z]+)([0-9]*)")
_TARGET = re.compile(r"(?:xvd|sd|vd|hd)([a-z]+)")
_NETWORK_SPEC = re.compile(r"(//|[^/=\s]+:)")


@dataclass(frozen=True)
class FstabEntry:
    """One fstab line the backup mounts."""

    spec: str
    path: str
    vfstype: str
    options: tuple[str, ...]
    line: int
    kind: str
    value: str
    optional: bool = False

    def describe(self) -> str:
        """The entry as error messages name it: line, source, path, type."""
        return f"line {self.line}: {self.spec} on {self.path} ({self.vfstype})"


@dataclass(frozen=True)
class GuestFilesystem:
    """A filesystem found on a backed-up guest disk."""

    name: str
    disk_target: str
    disk_index: int
    partition: int | None
    probe: FilesystemProbe
    partlabel: str | None = None
    volume: tuple[str, str] | None = None  # a guest LV: (VG name, LV name)

    def describe(self) -> str:
        """The filesystem as error messages list it: name, type, UUID, labels."""
        bits = [self.name, self.probe.type or "(no filesystem)"]
        for key, value in (("UUID", self.probe.uuid), ("LABEL", self.probe.label),
                           ("PARTUUID", self.probe.partuuid), ("PARTLABEL", self.partlabel)):
            if value:
                bits.append(f"{key}={value}")
        return " ".join(bits)


def target_index(target: str) -> int:
    """The disk index of a guest device name: xvda -> 0, sdb -> 1, vdaa -> 26."""
    match = _TARGET.fullmatch(target)
    if not match:
        raise ValueError(f"not a disk device name: {target!r}")
    index = 0
    for ch in match.group(1):
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def guest_position(target: str, partition: int | None) -> tuple[int, int | None]:
    """(disk index, partition) of a filesystem as the guest's /dev/xvdXN names it.

    A whole-disk filesystem on a disk the guest calls ``xvda1`` (a Xen PV guest given an
    LV as a partition) is /dev/xvda1 there: disk xvda, partition 1. A target that is no
    such name gets index -1: no /dev name in the fstab matches it, UUID= and LABEL= still do.
    """
    match = _DISK_DEV.fullmatch(f"/dev/{target}")
    if not match:
        return -1, partition
    index = target_index(match.group(1) + match.group(2))
    if match.group(3):
        return (index, int(match.group(3))) if partition is None else (-1, partition)
    return index, partition


def _unoctal(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), raw)
    return raw.decode("utf-8", "surrogateescape")


def _unudev(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    raw = _UDEV_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    return raw.decode("utf-8", "surrogateescape")


def validate_guest_path(path: str, where: str) -> str:
    """A guest mount path, normalised; FstabError if it could escape the guest tree."""
    if not path.startswith("/"):
        raise FstabError(f"{where}: mount path {path!r} is not absolute")
    if any(ord(c) < 32 or ord(c) == 127 or 0xDC80 <= ord(c) <= 0xDCFF for c in path):
        raise FstabError(f"{where}: mount path {path!r} has a control character or bad bytes")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FstabError(f"{where}: mount path {path!r} has a '..' component")
    return "/" + "/".join(parts)


def _ignore_reason(spec: str, vfstype: str, options: tuple[str, ...]) -> str | None:
    types = set(vfstype.split(","))
    if "swap" in types:
        return "swap"
    if types & PSEUDO_FS:
        return f"pseudo filesystem ({vfstype})"
    if types & NETWORK_FS or any(t.startswith("fuse.") for t in types):
        return f"network or FUSE filesystem ({vfstype})"
    if "bind" in options or "rbind" in options:
        return "bind mount"
    if types & REMOVABLE_FS or _REMOVABLE_DEV.fullmatch(spec):
        return "removable media"
    if "loop" in options:
        return "loop-mounted image file"
    if vfstype == "none":
        return "no filesystem type (none)"
    tag = spec.split("=", 1)[0]
    if tag not in _TAGS and not spec.startswith("/") and _NETWORK_SPEC.match(spec):
        return f"network filesystem ({spec})"
    return None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _kind(spec: str, where: str) -> tuple[str, str]:
    tag, sep, value = spec.partition("=")
    if sep and not spec.startswith("/"):
        if tag not in _TAGS:
            raise FstabError(f"{where}: unsupported source tag {tag!r} in {spec!r}")
        value = _unquote(value)
        if not value:
            raise FstabError(f"{where}: empty {tag}= value")
        return _TAGS[tag], value
    if spec.startswith("/dev/disk/"):
        parts = spec.split("/")
        if len(parts) == 5 and parts[3] in _BY_DIRS and parts[4]:
            return _BY_DIRS[parts[3]], _unudev(parts[4])
    if spec.startswith("/dev/"):
        return "device", spec
    raise FstabError(f"{where}: source {spec!r} is neither a tag (UUID=, LABEL=, PARTUUID=, "
                     "PARTLABEL=) nor a /dev path")


def parse_fstab(text: str) -> tuple[list[FstabEntry], list[tuple[int, str]]]:
    """(entries to mount, ignored (line number, reason)) from the text of a guest fstab."""
    entries: list[FstabEntry] = []
    ignored: list[tuple[int, str]] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        where = f"fstab line {number}"
        fields = _FIELD_SEP.split(line)
        if not 3 <= len(fields) <= 6:
            raise FstabError(f"{where}: expected 3 to 6 fields, got {len(fields)}: {line[:120]!r}")
        spec, path, vfstype = (_unoctal(f) for f in fields[:3])
        opts = _unoctal(fields[3]) if len(fields) > 3 else "defaults"
        options = tuple(o for o in opts.split(",") if o)
        reason = _ignore_reason(spec, vfstype, options)
        if reason:
            ignored.append((number, reason))
            continue
        kind, value = _kind(spec, where)
        entries.append(FstabEntry(
            spec=spec, path=validate_guest_path(path, where), vfstype=vfstype, options=options,
            line=number, kind=kind, value=value,
            optional="noauto" in options or "nofail" in options,
        ))
    return entries, ignored


def _same(a: str | None, b: str) -> bool:
    return a is not None and a.casefold() == b.casefold()


def _matches(entry: FstabEntry, fs: GuestFilesystem) -> bool:
    if entry.kind == "uuid":
        return _same(fs.probe.uuid, entry.value)
    if entry.kind == "label":
        return fs.probe.label == entry.value
    if entry.kind == "partuuid":
        return _same(fs.probe.partuuid, entry.value)
    if entry.kind == "partlabel":
        return fs.partlabel == entry.value
    if fs.volume is not None:
        vg, lv = fs.volume
        dm = f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"
        return entry.value in (f"/dev/mapper/{dm}", f"/dev/{vg}/{lv}")
    match = _DISK_DEV.fullmatch(entry.value)
    if not match:
        return False
    index = target_index(match.group(1) + match.group(2))
    partition = int(match.group(3)) if match.group(3) else None
    return fs.disk_index == index and fs.partition == partition


def _type_compatible(vfstype: str, probed: str | None) -> bool:
    types = set(vfstype.split(","))
    if "auto" in types or probed is None or probed in types:
        return True
    return any(probed in fam and types & fam for fam in _FAMILIES)


def _found(filesystems: Sequence[GuestFilesystem]) -> str:
    if not filesystems:
        return "found no filesystems on the backed-up disks"
    return "found: " + "; ".join(fs.describe() for fs in filesystems)


def resolve_fstab(
    entries: Sequence[FstabEntry],
    filesystems: Sequence[GuestFilesystem],
    overrides: Mapping[str, str] = {},  # read only
) -> dict[str, str]:
    """Map filesystem name -> guest path; overrides win over the fstab."""
    by_name = {fs.name: fs for fs in filesystems}
    if len(by_name) != len(filesystems):
        raise FstabError(f"two filesystems share a name; {_found(filesystems)}")
    result: dict[str, str] = {}
    for name, path in overrides.items():
        if name not in by_name:
            raise FstabError(f"override for {name!r}: no such filesystem; {_found(filesystems)}")
        result[name] = validate_guest_path(path, f"override for {name!r}")
    if len(set(result.values())) != len(result):
        raise FstabError(f"overrides map two filesystems to one path: {dict(overrides)}")
    claimed = set(result.values())
    owner: dict[str, FstabEntry] = {}
    for entry in entries:
        hits = [fs for fs in filesystems if _matches(entry, fs)]
        if len(hits) > 1:
            names = ", ".join(fs.name for fs in hits)
            raise FstabError(f"fstab {entry.describe()} matches several filesystems ({names}); "
                             f"{_found(filesystems)}")
        if not hits:
            if entry.optional:
                continue
            raise FstabError(f"fstab {entry.describe()} names no filesystem on the backed-up "
                             f"disks; {_found(filesystems)}")
        fs = hits[0]
        if fs.name in overrides or entry.path in claimed:
            continue
        if fs.name in owner:
            raise FstabError(f"fstab {owner[fs.name].describe()} and {entry.describe()} both "
                             f"name {fs.describe()}")
        for name, other in owner.items():
            if other.path == entry.path:
                raise FstabError(f"fstab {other.describe()} and {entry.describe()} both mount "
                                 f"on {entry.path} ({name} and {fs.name})")
        if not _type_compatible(entry.vfstype, fs.probe.type):
            raise FstabError(f"fstab {entry.describe()} resolves to {fs.describe()}, "
                             f"a {fs.probe.type} filesystem")
        owner[fs.name] = entry
        result[fs.name] = entry.path
    if not result:
        raise FstabError(f"no filesystem to mount: the fstab resolves to none and there are no "
                         f"overrides; {_found(filesystems)}")
    return result
