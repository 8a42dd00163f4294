"""Fake guest disks built from declarative recipes, for the rehearsal lab and its tests.

A recipe (TOML, ``fixtures/guests/*.toml``) describes one guest domain and its disks. A
domain with one disk writes the disk's keys at the top level (``size``, ``label``,
``disk_id``, ``device``, ``boot_area``, ``[[partitions]]``). A domain with several disks
lists them as ``[[disks]]`` tables holding those same keys (``[[disks.partitions]]``), and
shares ``name``, ``seed``, ``epoch`` and ``extra_fstab``; each disk's seed defaults to the
domain's plus its index. The guest's ``/etc/fstab``, in whichever filesystem is mounted at
``/``, names every filesystem of the domain on every disk, parents before children.
``load_domain`` reads any recipe; ``load_recipe`` reads one disk of it.

What a disk can hold:

- ``label``: ``dos``, ``gpt``, or ``none`` (no table: one filesystem spans the disk, as Xen
  PV guests given an LV as ``xvda1`` have).
- ``logical = true`` on the last dos partitions puts them in an extended partition:
  primaries are numbered 1.., the extended container takes the next number and spans the
  logicals, which are numbered 5, 6, ... Each logical is preceded by the MiB holding its EBR.
- ``boot_area = true`` fills the MBR boot code (bytes 0-439) and the gap between the table
  and the first partition (sectors 1-2047 on dos, 34-2047 on gpt) with seeded bytes, as a
  BIOS boot loader does.
- ``fs``: ``ext2``/``ext3``/``ext4``, ``xfs``, ``vfat`` (FAT32; ``content = "esp"`` puts
  ``EFI/BOOT/BOOTX64.EFI`` in it; its ``uuid`` is the volume id, ``"5EED-0B01"``), ``swap``,
  ``raw`` (no filesystem: ``content = "pattern"`` fills it with seeded bytes, e.g. a gpt BIOS
  boot partition) and ``lvm``: a PV holding one guest VG (``vg``, ``vg_uuid``,
  ``extent_size``) whose linear LVs, ``[[partitions.volumes]]``, carry filesystems named in
  the fstab by ``uuid``, ``label``, ``device`` (``/dev/VG/LV``) or ``mapper``
  (``/dev/mapper/VG-LV``). LVM UUIDs are written as lvs prints them.
- ``dirty = true`` on ext3/ext4 leaves one committed journal transaction unreplayed
  (``needs_recovery``): it rewrites the first block of ``data/sizes/page.bin`` (rich) or
  ``README.txt`` (minimal). On xfs it leaves the log dirty: the tree is written back in
  place (freeze), then the directory ``log-pending`` is made and the filesystem shut down,
  so that directory exists only after log recovery.

``build_disk_image`` builds one disk into a sparse image file on the host behind a runner;
``build_domain_images`` builds every disk of a domain. Each filesystem is made as its own
file and copied into place with ``dd``:

- ext: ``mkfs.ext4 -d TREE`` from a staging tree, then debugfs pins inode ctimes; no mount.
- xfs: ``mkfs.xfs -m uuid=`` then a loop mount (``nouuid``: a guest's UUID may be mounted
  elsewhere in this kernel), ``cp -a`` of the staging tree, unmount, detach.
- vfat: ``mkfs.fat --invariant``, then files written straight into the FAT32 structures (the
  lab kernel may lack vfat, its containers lack mtools).
- lvm: ``pvcreate --restorefile`` and ``vgcfgrestore`` on a loop device of the partition's
  file, from VG metadata rendered here with the recipe's UUIDs, under a private LVM setup
  (an empty ``LVM_SYSTEM_DIR``, ``--devices`` that one loop device, no locking, no
  device-mapper, no hints, backups or archives): the host's LVM never sees the guest VG,
  even when it has the same name as a host VG, and nothing is activated. Each LV's
  filesystem is then written where ``pvs -o pe_start`` and ``lvs -o seg_pe_ranges`` say.

``standby=True`` builds the peer's copy: the same tables, UUIDs, labels, PARTUUIDs and guest
VG, empty filesystems, and the same raw partitions and boot area bytes.

Staging trees are created by a small self-contained Python program passed as an argv item,
so a build runs the same locally and inside a lab container. ext, vfat, swap and raw bytes
are identical between two builds; xfs (filled through a mount), guest LVM metadata (LVM
stamps the write time) and a dirty ext journal (its commit time) differ in those bytes
between builds, never in content.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import os
import posixpath
import random
import shutil
import stat
import struct
import time
import tomllib
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ParseError, ToolkitError, UsageError
from ..runners import Runner

MIB = 1024 * 1024
SECTOR = 512
EXT_FILESYSTEMS = ("ext2", "ext3", "ext4")
BUILDABLE_FILESYSTEMS = (*EXT_FILESYSTEMS, "xfs", "vfat", "swap", "raw", "lvm")
VOLUME_FILESYSTEMS = (*EXT_FILESYSTEMS, "xfs", "swap")
TABLES = ("dos", "gpt", "none")
CONTENTS = ("rich", "minimal", "empty", "esp", "pattern")
FSTAB_BY = ("uuid", "label", "device", "partuuid")
VOLUME_FSTAB_BY = ("uuid", "label", "device", "mapper")
DEFAULT_EPOCH = 1700000000
# mke2fs caps volume labels at 16 bytes; mkswap does too. xfs takes 12, FAT 11.
MAX_LABEL_BYTES = 16
_LABEL_BYTES = {"xfs": 12, "vfat": 11}
# mkfs.xfs (xfsprogs >= 5.19) refuses less than 300 MB; FAT32 needs 65525 clusters.
_MIN_SIZES = {"xfs": 300 * MIB, "vfat": 40 * MIB}
# Where a guest PV's first extent starts (LVM's default alignment).
PE_START = MIB
DEFAULT_EXTENT = 4 * MIB
# The MBR's boot code ends where the disk signature starts.
MBR_CODE_BYTES = 440
GPT_FIRST_FREE_SECTOR = 34
ESP_LOADER = ("EFI/BOOT/BOOTX64.EFI", 40000)
XFS_PENDING_DIR = "log-pending"
_PENDING_FILE = {"rich": "data/sizes/page.bin", "minimal": "README.txt"}

_NO_MOUNT = ("swap", "raw", "lvm")
_CONTENT_CHOICES = {"swap": ("empty",), "vfat": ("esp", "empty"), "raw": ("pattern", "empty"),
                    "lvm": ("empty",)}
_DEFAULT_CONTENT = {"swap": "empty", "vfat": "esp", "raw": "pattern", "lvm": "empty"}
_DOS_TYPES = {"swap": "82", "vfat": "ef", "lvm": "8e", "raw": "da"}
_GPT_TYPES = {"swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
              "vfat": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
              "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
              "raw": "21686148-6449-6E6F-744E-656564454649"}
_DOS_LINUX = "83"
_DOS_EXTENDED = "5"
_GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
_LVM_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_.-")
# The private LVM setup for guest PVs: see the module docstring.
_LVM_CONFIG = ('devices { hints = "none" use_devicesfile = 0 obtain_device_list_from_udev = 0 } '
               "backup { backup = 0 archive = 0 } "
               "activation { udev_sync = 0 udev_rules = 0 monitoring = 0 } "
               "global { use_lvmlockd = 0 event_activation = 0 }")

_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

Fail = Callable[[str, str], ConfigError]


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class VolumeRecipe:
    """One linear LV of a guest VG and the filesystem on it."""

    name: str
    lv_uuid: str
    size: int | None  # bytes, whole extents; None: the rest of the PV
    fs: str
    uuid: str
    label: str | None
    mount: str | None
    fstab_by: str  # "uuid" | "label" | "device" (/dev/VG/LV) | "mapper" (/dev/mapper/VG-LV)
    options: str
    content: str
    dirty: bool
    vg: str

    @property
    def device(self) -> str:
        """The guest's ``/dev/VG/LV`` name for this LV."""
        return f"/dev/{self.vg}/{self.name}"

    @property
    def mapper(self) -> str:
        """The guest's ``/dev/mapper`` name for this LV (dashes in names doubled)."""
        return f"/dev/mapper/{self.vg.replace('-', '--')}-{self.name.replace('-', '--')}"


@dataclass(frozen=True)
class VolumeGroupRecipe:
    """A guest VG on one PV partition; its LVs are allocated in order from extent 0."""

    name: str
    uuid: str
    extent_size: int
    volumes: tuple[VolumeRecipe, ...]


@dataclass(frozen=True)
class PartitionRecipe:
    """One partition (or the whole-disk filesystem) of a guest disk recipe."""

    number: int
    size: int | None  # bytes; None: the rest of the disk
    fs: str
    uuid: str | None  # filesystem UUID, FAT volume id, LVM PV UUID; None for raw
    label: str | None
    mount: str | None  # mount point in the guest fstab; None: not in the fstab
    fstab_by: str
    options: str
    content: str
    type: str | None  # partition type override (dos hex code or gpt type GUID)
    partuuid: str | None  # gpt only; dos PARTUUIDs derive from the disk id
    name: str | None  # gpt partition name
    bootable: bool
    logical: bool = False  # a dos logical partition, inside the extended one
    dirty: bool = False  # leave the journal (ext3/4) or log (xfs) needing recovery
    vg: VolumeGroupRecipe | None = None  # fs == "lvm": the guest VG on this PV


Filesystem = PartitionRecipe | VolumeRecipe


@dataclass(frozen=True)
class FstabLine:
    """One line of the guest's /etc/fstab."""

    spec: str
    mount: str  # "none" for swap
    fs: str
    options: str
    passno: int

    def line(self) -> str:
        """The tab-separated fstab line."""
        return f"{self.spec}\t{self.mount}\t{self.fs}\t{self.options}\t0\t{self.passno}"


@dataclass(frozen=True)
class GuestRecipe:
    """A guest disk: size, partition table and filesystems."""

    source: str
    name: str  # the domain's (host) name
    size: int
    table: str  # "dos" | "gpt" | "none"
    disk_id: str | None
    device: str  # the guest's own name for the disk, e.g. "xvda"
    seed: int
    epoch: int
    extra_fstab: tuple[str, ...]
    partitions: tuple[PartitionRecipe, ...]
    boot_area: bool = False
    fstab_entries: tuple[FstabLine, ...] = ()  # the whole domain's, on every disk

    def partition(self, number: int) -> PartitionRecipe:
        """The partition with this number; KeyError if there is none."""
        for part in self.partitions:
            if part.number == number:
                return part
        raise KeyError(number)

    def volume(self, path: str) -> VolumeRecipe:
        """The LV named ``VG/LV``; KeyError if there is none."""
        for vol in self.volumes:
            if f"{vol.vg}/{vol.name}" == path:
                return vol
        raise KeyError(path)

    @property
    def volumes(self) -> tuple[VolumeRecipe, ...]:
        """Every LV of the guest VGs on this disk, in recipe order."""
        return tuple(v for p in self.partitions if p.vg for v in p.vg.volumes)

    @property
    def filesystems(self) -> tuple[Filesystem, ...]:
        """Partitions and LVs that carry a filesystem or swap, in recipe order."""
        out: list[Filesystem] = []
        for part in self.partitions:
            if part.vg is not None:
                out.extend(part.vg.volumes)
            elif part.fs != "raw":
                out.append(part)
        return tuple(out)

    @property
    def root(self) -> Filesystem | None:
        """The filesystem on this disk mounted at ``/`` (it holds /etc/fstab), if any."""
        return next((f for f in self.filesystems if f.mount == "/"), None)


@dataclass(frozen=True)
class DomainRecipe:
    """A guest domain: its disks, in recipe order."""

    source: str
    name: str
    disks: tuple[GuestRecipe, ...]

    def disk(self, device: str) -> GuestRecipe:
        """The disk the guest calls ``device``; KeyError if there is none."""
        for disk in self.disks:
            if disk.device == device:
                return disk
        raise KeyError(device)


_DOMAIN_KEYS = {"name", "seed", "epoch", "extra_fstab", "disks"}
_DISK_KEYS = {"size", "label", "disk_id", "device", "seed", "boot_area", "partitions"}
_TOP_KEYS = (_DOMAIN_KEYS - {"disks"}) | _DISK_KEYS
_FS_KEYS = {"size", "fs", "uuid", "label", "mount", "fstab_by", "options", "content", "dirty"}
_PART_KEYS = _FS_KEYS | {"type", "partuuid", "name", "bootable", "logical", "vg", "vg_uuid",
                         "extent_size", "volumes"}
_VOLUME_KEYS = _FS_KEYS | {"name", "lv_uuid"}


def load_domain(path: str | os.PathLike[str]) -> DomainRecipe:
    """Read and validate a guest recipe (one or several disks); ConfigError names file and key."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read recipe: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_domain(data, source=source, default_name=Path(path).stem)


def load_recipe(path: str | os.PathLike[str], device: str | None = None) -> GuestRecipe:
    """Read one disk of a guest recipe: the only one, or the one named ``device``."""
    return _pick_disk(load_domain(path), device)


def parse_recipe(data: dict[str, Any], *, source: str, default_name: str = "",
                 device: str | None = None) -> GuestRecipe:
    """Validate parsed TOML into one disk's GuestRecipe; ConfigError names ``source`` and key."""
    return _pick_disk(parse_domain(data, source=source, default_name=default_name), device)


def _pick_disk(domain: DomainRecipe, device: str | None) -> GuestRecipe:
    if device is not None:
        try:
            return domain.disk(device)
        except KeyError:
            raise ConfigError(f"{domain.source}: disks: no disk {device!r} (has "
                              f"{', '.join(d.device for d in domain.disks)})") from None
    if len(domain.disks) != 1:
        raise ConfigError(f"{domain.source}: disks: {domain.name} has "
                          f"{len(domain.disks)} disks ({', '.join(d.device for d in domain.disks)})"
                          "; name one, or read them all with load_domain")
    return domain.disks[0]


def parse_domain(data: dict[str, Any], *, source: str, default_name: str = "") -> DomainRecipe:
    """Validate parsed TOML into a DomainRecipe; ConfigError names ``source`` and the key."""

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {why}")

    several = "disks" in data
    allowed = _DOMAIN_KEYS if several else _TOP_KEYS
    unknown = sorted(set(data) - allowed)
    if unknown:
        if several and unknown[0] in _DISK_KEYS:
            why = "unknown key at the top of a recipe with [[disks]]: put it in each [[disks]]"
        else:
            why = f"unknown key (expected one of {', '.join(sorted(allowed))})"
        raise fail(unknown[0], why)
    name = _get(data, "name", str, default_name, fail)
    if not name or not _is_hostname(name):
        raise fail("name", f"{name!r} is not a valid host name")
    seed = _get(data, "seed", int, 1, fail)
    epoch = _get(data, "epoch", int, DEFAULT_EPOCH, fail)
    if epoch < 0:
        raise fail("epoch", "must not be negative")
    extra = data.get("extra_fstab", [])
    if not isinstance(extra, list) or not all(isinstance(x, str) and "\n" not in x for x in extra):
        raise fail("extra_fstab", "must be a list of single-line strings")
    shared = (source, name, epoch, tuple(extra))
    if not several:
        disks = [(_disk(data, "", seed, shared, fail), "")]
    else:
        raw_disks = data["disks"]
        if not isinstance(raw_disks, list) or not raw_disks:
            raise fail("disks", "must be a non-empty list of [[disks]] tables")
        disks = []
        for i, raw in enumerate(raw_disks):
            pre = f"disks[{i}]."
            if not isinstance(raw, dict):
                raise fail(f"disks[{i}]", "must be a table")
            unknown = sorted(set(raw) - _DISK_KEYS)
            if unknown:
                raise fail(pre + unknown[0], "unknown key")
            disks.append((_disk(raw, pre, seed + i, shared, fail), pre))
    _check_domain(disks, fail)
    entries = _domain_fstab([d for d, _ in disks])
    return DomainRecipe(source, name, tuple(dataclasses.replace(d, fstab_entries=entries)
                                            for d, _ in disks))


def _get(data: dict[str, Any], key: str, kind: type, default: Any, fail: Fail,
         prefix: str = "") -> Any:
    value = data.get(key, default)
    if value is None or (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        what = {"str": "a string", "int": "an integer", "bool": "true or false"}[kind.__name__]
        raise fail(prefix + key, f"must be {what}, got {value!r}")
    return value


def _is_hostname(name: str) -> bool:
    """A host name: dot-separated labels of letters, digits and inner dashes (RFC 1123)."""
    return (name.isascii() and len(name) <= 253
            and all(0 < len(label) <= 63 and label[0].isalnum() and label[-1].isalnum()
                    and all(c.isalnum() or c == "-" for c in label)
                    for label in name.split(".")))


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string like ``"256M"``, ``"1G"``, ``"512KiB"`` (binary units)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value} is not a positive size")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size")
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    factor = 1
    for suffix, mult in (("K", 1024), ("M", MIB), ("G", 1024 * MIB), ("T", 1024 * 1024 * MIB)):
        if text.endswith(suffix):
            text, factor = text[:-1], mult
            break
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"{value!r} is not a size such as 256M")
    return int(text) * factor


def _size(value: Any, key: str, fail: Fail) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise fail(key, str(exc)) from None
    if size % MIB:
        raise fail(key, f"{value!r} is not a whole number of MiB (partitions are MiB-aligned)")
    return size


def _disk(data: dict[str, Any], pre: str, seed: int, shared: tuple[str, str, int, tuple[str, ...]],
          fail: Fail) -> GuestRecipe:
    source, name, epoch, extra = shared

    def dfail(key: str, why: str) -> ConfigError:
        return fail(pre + key, why)

    if "size" not in data:
        raise dfail("size", "missing")
    size = _size(data["size"], pre + "size", fail)
    table = _get(data, "label", str, "dos", dfail)
    if table not in TABLES:
        raise dfail("label", f"{table!r} is not one of {', '.join(TABLES)}")
    disk_id = _disk_id(data, table, dfail)
    device = _get(data, "device", str, "xvda", dfail)
    if not device or not device.isascii() or not device.isalnum():
        raise dfail("device", f"{device!r} must be a bare device name such as xvda")
    seed = _get(data, "seed", int, seed, dfail)
    boot_area = _get(data, "boot_area", bool, False, dfail)
    if boot_area and table == "none":
        raise dfail("boot_area", "a disk without a partition table has no boot area")
    raw_parts = data.get("partitions")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise dfail("partitions", "missing or empty (need at least one [[partitions]] table)")
    numbers = _numbers(raw_parts, table, dfail)
    parts = tuple(_partition(raw, i, numbers[i], table, disk_id, dfail)
                  for i, raw in enumerate(raw_parts))
    recipe = GuestRecipe(source, name, size, table, disk_id, device, seed, epoch, extra, parts,
                         boot_area)
    _check_whole(recipe, dfail)
    return recipe


def _disk_id(data: dict[str, Any], table: str, fail: Fail) -> str | None:
    if table == "none":
        if "disk_id" in data:
            raise fail("disk_id", "a whole-disk filesystem (label = \"none\") has no disk id")
        return None
    if "disk_id" not in data:
        raise fail("disk_id", "missing (a fixed id keeps builds deterministic)")
    value = data["disk_id"]
    if not isinstance(value, str):
        raise fail("disk_id", f"must be a string, got {value!r}")
    if table == "dos":
        digits = value.lower().removeprefix("0x")
        if not value.lower().startswith("0x") or len(digits) != 8 or not _is_hex(digits):
            raise fail("disk_id", f"{value!r} is not a dos disk id such as 0x5eed0001")
        return "0x" + digits
    return _uuid(value, "disk_id", fail)


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdef" for c in text.lower())


def _uuid(value: Any, key: str, fail: Fail) -> str:
    if not isinstance(value, str):
        raise fail(key, f"must be a UUID string, got {value!r}")
    try:
        parsed = uuidlib.UUID(value)
    except ValueError:
        raise fail(key, f"{value!r} is not a UUID") from None
    if str(parsed) != value.lower():
        raise fail(key, f"{value!r} must be written as {parsed}")
    return str(parsed)


def _fat_id(value: Any, key: str, fail: Fail) -> str:
    text = value if isinstance(value, str) else ""
    if len(text) != 9 or text[4] != "-" or not _is_hex(text[:4] + text[5:]):
        raise fail(key, f"{value!r} is not a FAT volume id such as 5EED-0B01")
    return text.upper()


def _lvm_uuid(value: Any, key: str, fail: Fail) -> str:
    groups = value.split("-") if isinstance(value, str) else []
    if ([len(g) for g in groups] != [6, 4, 4, 4, 4, 4, 6]
            or not all(g.isascii() and g.isalnum() for g in groups)):
        raise fail(key, f"{value!r} is not an LVM UUID such as 5eed17-0000-0000-0000-0000-0000-"
                   "000001 (32 letters or digits, grouped 6-4-4-4-4-4-6)")
    return value


def _lvm_name(value: Any, key: str, fail: Fail) -> str:
    if (not isinstance(value, str) or not value or len(value) > 127 or value[0] == "-"
            or value in (".", "..") or not set(value) <= _LVM_NAME_CHARS):
        raise fail(key, f"{value!r} is not an LVM name (letters, digits, +_.- ; not starting "
                   "with -)")
    return value


def _numbers(raw_parts: list[Any], table: str, fail: Fail) -> list[int]:
    """Partition numbers: primaries 1.., logicals 5.. (the extended container between)."""
    logical: list[bool] = []
    for i, raw in enumerate(raw_parts):
        if not isinstance(raw, dict):
            raise fail(f"partitions[{i}]", "must be a table")
        flag = _get(raw, "logical", bool, False, fail, f"partitions[{i}].")
        if flag and table != "dos":
            raise fail(f"partitions[{i}].logical", "only dos partitions can be logical")
        if not flag and logical and logical[-1]:
            raise fail(f"partitions[{i}].logical", "a primary partition cannot follow a "
                       "logical one (list logical partitions last)")
        logical.append(flag)
    primaries = logical.count(False)
    if table == "dos" and not any(logical) and primaries > 4:
        raise fail("partitions", "more than 4 dos partitions needs extended/logical partitions "
                   "(logical = true on the last ones)")
    if table == "dos" and any(logical) and primaries > 3:
        raise fail("partitions", "more than 3 primary dos partitions beside an extended one")
    numbers = list(range(1, primaries + 1))
    numbers += list(range(5, 5 + len(raw_parts) - primaries))
    return numbers


@dataclass(frozen=True)
class _FsFields:
    fs: str
    size: int | None
    uuid: str | None
    label: str | None
    mount: str | None
    fstab_by: str
    options: str
    content: str
    dirty: bool


def _fs_fields(raw: dict[str, Any], pre: str, what: str, allowed: tuple[str, ...],
               fstab_choices: tuple[str, ...], table: str, fail: Fail) -> _FsFields:
    """The keys a partition and an LV share: filesystem, identity, fstab line, content."""
    if "fs" not in raw:
        raise fail(pre + "fs", "missing")
    fs = _get(raw, "fs", str, None, fail, pre)
    if fs not in allowed:
        raise fail(pre + "fs", f"{fs!r} is not one of {', '.join(allowed)}")
    size = _size(raw["size"], pre + "size", fail) if "size" in raw else None
    uuid = None
    if fs == "raw":
        if "uuid" in raw:
            raise fail(pre + "uuid", f"a raw {what} has no filesystem UUID")
    elif "uuid" not in raw:
        raise fail(pre + "uuid", "missing (a fixed UUID keeps builds deterministic)")
    else:
        check = {"vfat": _fat_id, "lvm": _lvm_uuid}.get(fs, _uuid)
        uuid = check(raw["uuid"], pre + "uuid", fail)
    label = raw.get("label")
    if label is not None:
        limit = _LABEL_BYTES.get(fs, MAX_LABEL_BYTES)
        if fs in ("raw", "lvm"):
            raise fail(pre + "label", f"a {fs} {what} has no label")
        if not isinstance(label, str) or not label:
            raise fail(pre + "label", f"must be a non-empty string, got {label!r}")
        if len(label.encode()) > limit or any(c in label for c in " \t\n\"'\\"):
            raise fail(pre + "label", f"{label!r} must be at most {limit} bytes "
                       "without blanks or quotes")
        if fs == "vfat" and (label != label.upper() or not label.isascii()):
            raise fail(pre + "label", f"{label!r}: FAT labels are upper-case ASCII")
    mount = raw.get("mount")
    if fs in _NO_MOUNT:
        if mount not in (None, "none", "swap"):
            raise fail(pre + "mount", f"a {fs} {what} has no mount point")
        mount = None
    elif mount is not None:
        if not isinstance(mount, str) or not mount.startswith("/"):
            raise fail(pre + "mount", f"{mount!r} must be an absolute path")
        if posixpath.normpath(mount) != mount or mount.startswith("//") or any(
                c.isspace() for c in mount):
            raise fail(pre + "mount", f"{mount!r} must be a normalised path without blanks")
    fstab_by = _get(raw, "fstab_by", str, "uuid", fail, pre)
    if fstab_by not in fstab_choices:
        raise fail(pre + "fstab_by", f"{fstab_by!r} is not one of {', '.join(fstab_choices)}")
    if fstab_by == "label" and label is None:
        raise fail(pre + "fstab_by", "\"label\" needs a label")
    if fstab_by == "partuuid" and table == "none":
        raise fail(pre + "fstab_by", "a whole-disk filesystem has no PARTUUID")
    default_options = {"swap": "sw", "vfat": "umask=0077"}.get(
        fs, "errors=remount-ro" if mount == "/" else "defaults")
    options = _get(raw, "options", str, default_options, fail, pre)
    if not options or any(c.isspace() for c in options):
        raise fail(pre + "options", f"{options!r} must be a non-empty word")
    content = _get(raw, "content", str, _DEFAULT_CONTENT.get(fs, "rich"), fail, pre)
    if content not in CONTENTS:
        raise fail(pre + "content", f"{content!r} is not one of {', '.join(CONTENTS)}")
    choices = _CONTENT_CHOICES.get(fs, ("rich", "minimal", "empty"))
    if fs == "swap" and content != "empty":
        raise fail(pre + "content", f"a swap {what} holds no files")
    if content not in choices:
        raise fail(pre + "content", f"{content!r} does not apply to {fs} (one of "
                   f"{', '.join(choices)})")
    dirty = _get(raw, "dirty", bool, False, fail, pre)
    if dirty and fs not in ("ext3", "ext4", "xfs"):
        raise fail(pre + "dirty", "only ext3, ext4 (journal) and xfs (log) can be left dirty")
    if dirty and content not in _PENDING_FILE:
        raise fail(pre + "dirty", "a dirty filesystem needs content (rich or minimal)")
    return _FsFields(fs, size, uuid, label, mount, fstab_by, options, content, dirty)


def _partition(raw: dict[str, Any], index: int, number: int, table: str, disk_id: str | None,
               fail: Fail) -> PartitionRecipe:
    key = f"partitions[{index}]"
    unknown = sorted(set(raw) - _PART_KEYS)
    if unknown:
        raise fail(f"{key}.{unknown[0]}", "unknown key")
    pre = key + "."
    f = _fs_fields(raw, pre, "partition", BUILDABLE_FILESYSTEMS, FSTAB_BY, table, fail)
    ptype = raw.get("type")
    if ptype is not None:
        if table == "none":
            raise fail(pre + "type", "a whole-disk filesystem has no partition type")
        if not isinstance(ptype, str) or not (
                (table == "dos" and len(ptype) <= 2 and _is_hex(ptype))
                or (table == "gpt" and _valid_uuid(ptype))):
            raise fail(pre + "type", f"{ptype!r} is not a {table} partition type")
    partuuid = None
    if "partuuid" in raw:
        if table != "gpt":
            raise fail(pre + "partuuid", "only gpt partitions have their own PARTUUID")
        partuuid = _uuid(raw["partuuid"], pre + "partuuid", fail)
    elif table == "gpt":
        raise fail(pre + "partuuid", "missing (a fixed PARTUUID keeps builds deterministic)")
    elif table == "dos":
        partuuid = f"{disk_id[2:]}-{number:02x}" if disk_id else None
    pname = raw.get("name")
    if pname is not None and (table != "gpt" or not isinstance(pname, str)
                              or any(c in pname for c in "\"\n,")):
        raise fail(pre + "name", "only gpt partitions have a name (a string without quotes)")
    bootable = _get(raw, "bootable", bool, False, fail, pre)
    if bootable and table != "dos":
        raise fail(pre + "bootable", "only dos partitions carry a bootable flag")
    vg = None
    if f.fs == "lvm":
        vg = _volume_group(raw, pre, table, fail)
    else:
        for k in ("vg", "vg_uuid", "extent_size", "volumes"):
            if k in raw:
                raise fail(pre + k, "only an lvm partition holds a volume group")
    return PartitionRecipe(number, f.size, f.fs, f.uuid, f.label, f.mount, f.fstab_by, f.options,
                           f.content, ptype, partuuid, pname, bootable,
                           bool(raw.get("logical", False)), f.dirty, vg)


def _volume_group(raw: dict[str, Any], pre: str, table: str, fail: Fail) -> VolumeGroupRecipe:
    if "vg" not in raw:
        raise fail(pre + "vg", "missing (the guest VG's name)")
    name = _lvm_name(raw["vg"], pre + "vg", fail)
    if "vg_uuid" not in raw:
        raise fail(pre + "vg_uuid", "missing (a fixed UUID keeps builds deterministic)")
    vg_uuid = _lvm_uuid(raw["vg_uuid"], pre + "vg_uuid", fail)
    extent = _size(raw.get("extent_size", DEFAULT_EXTENT), pre + "extent_size", fail)
    if extent & (extent - 1):
        raise fail(pre + "extent_size", f"{extent // MIB} MiB is not a power of two")
    raw_vols = raw.get("volumes")
    if not isinstance(raw_vols, list) or not raw_vols:
        raise fail(pre + "volumes", "missing or empty (need at least one [[partitions.volumes]])")
    vols = []
    for j, rv in enumerate(raw_vols):
        vpre = f"{pre}volumes[{j}]."
        if not isinstance(rv, dict):
            raise fail(vpre[:-1], "must be a table")
        unknown = sorted(set(rv) - _VOLUME_KEYS)
        if unknown:
            raise fail(vpre + unknown[0], "unknown key")
        if "name" not in rv:
            raise fail(vpre + "name", "missing (the LV's name)")
        lv = _lvm_name(rv["name"], vpre + "name", fail)
        if "lv_uuid" not in rv:
            raise fail(vpre + "lv_uuid", "missing (a fixed UUID keeps builds deterministic)")
        lv_uuid = _lvm_uuid(rv["lv_uuid"], vpre + "lv_uuid", fail)
        f = _fs_fields(rv, vpre, "volume", VOLUME_FILESYSTEMS, VOLUME_FSTAB_BY, table, fail)
        if f.size is not None and f.size % extent:
            raise fail(vpre + "size", f"must be a whole number of {extent // MIB} MiB extents")
        if f.size is None and j != len(raw_vols) - 1:
            raise fail(vpre + "size", "only the last volume may take the rest")
        if any(v.name == lv for v in vols):
            raise fail(vpre + "name", f"{lv!r} is already an LV of {name}")
        vols.append(VolumeRecipe(lv, lv_uuid, f.size, f.fs, f.uuid or "", f.label, f.mount,
                                 f.fstab_by, f.options, f.content, f.dirty, name))
    return VolumeGroupRecipe(name, vg_uuid, extent, tuple(vols))


def _valid_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
    except ValueError:
        return False
    return True


def _check_whole(recipe: GuestRecipe, fail: Fail) -> None:
    """Checks on one disk: sizes fit, whole-disk rules, per-filesystem minimum sizes."""
    parts = recipe.partitions
    if recipe.table == "none":
        if len(parts) != 1:
            raise fail("partitions", "a whole-disk filesystem (label = \"none\") has exactly one")
        if parts[0].size not in (None, recipe.size):
            raise fail("partitions[0].size", "a whole-disk filesystem spans the whole disk")
    for i, part in enumerate(parts[:-1]):
        if part.size is None and recipe.table != "none":
            raise fail(f"partitions[{i}].size", "only the last partition may take the rest")
    try:
        layout = plan_layout(recipe)
    except ValueError as exc:
        raise fail("size", str(exc)) from None
    for i, (part, ext) in enumerate(zip(parts, layout, strict=True)):
        if ext.size < _MIN_SIZES.get(part.fs, 0):
            raise fail(f"partitions[{i}].size", f"{part.fs} needs at least "
                       f"{_MIN_SIZES[part.fs] // MIB} MiB, not {ext.size // MIB}")
        if part.vg is None:
            continue
        try:
            extents = [v for v in plan_volumes(recipe) if v.vg == part.vg.name]
        except ValueError as exc:
            raise fail(f"partitions[{i}].volumes", str(exc)) from None
        for j, (vol, vx) in enumerate(zip(part.vg.volumes, extents, strict=True)):
            if vx.size < _MIN_SIZES.get(vol.fs, 0):
                raise fail(f"partitions[{i}].volumes[{j}].size", f"{vol.fs} needs at least "
                           f"{_MIN_SIZES[vol.fs] // MIB} MiB, not {vx.size // MIB}")


def _places(disk: GuestRecipe, pre: str) -> Iterator[tuple[str, PartitionRecipe | VolumeRecipe]]:
    for i, part in enumerate(disk.partitions):
        yield f"{pre}partitions[{i}]", part
        if part.vg is not None:
            for j, vol in enumerate(part.vg.volumes):
                yield f"{pre}partitions[{i}].volumes[{j}]", vol


def _check_domain(disks: list[tuple[GuestRecipe, str]], fail: Fail) -> None:
    """Names that must be unique across the whole domain, and one root at most."""
    seen: dict[tuple[str, str], str] = {}

    def claim(where: str, kind: str, value: str | None) -> None:
        if value is None:
            return
        if (kind, value) in seen:
            raise fail(f"{where}.{kind}", f"{value!r} is already used by {seen[(kind, value)]}")
        seen[(kind, value)] = where

    for disk, pre in disks:
        if pre:
            claim(pre[:-1], "device", disk.device)
            claim(pre[:-1], "disk_id", disk.disk_id)
        for where, item in _places(disk, pre):
            claim(where, "uuid", item.uuid)
            claim(where, "label", item.label)
            claim(where, "mount", item.mount)
            if isinstance(item, PartitionRecipe):
                claim(where, "partuuid", item.partuuid if disk.table == "gpt" else None)
                if item.vg is not None:
                    claim(where, "vg", item.vg.name)
                    claim(where, "vg_uuid", item.vg.uuid)
            else:
                claim(where, "lv_uuid", item.lv_uuid)


def _domain_fstab(disks: list[GuestRecipe]) -> tuple[FstabLine, ...]:
    """The domain's fstab: every mounted filesystem and swap, parents before children."""
    entries = []
    for disk in disks:
        for fs in disk.filesystems:
            if fs.fs != "swap" and fs.mount is None:
                continue
            entries.append(FstabLine(_fstab_spec(disk, fs), fs.mount or "none", fs.fs,
                                      fs.options, 0 if fs.fs == "swap" else
                                      (1 if fs.mount == "/" else 2)))
    # Shallower mount points first (a parent before its children), else recipe order; swap
    # last.
    return tuple(sorted(entries, key=lambda e: (e.mount == "none",
                                                len([c for c in e.mount.split("/") if c]))))


def _fstab_spec(disk: GuestRecipe, fs: Filesystem) -> str:
    if fs.fstab_by == "uuid":
        return f"UUID={fs.uuid}"
    if fs.fstab_by == "label":
        return f"LABEL={fs.label}"
    if isinstance(fs, VolumeRecipe):
        return fs.mapper if fs.fstab_by == "mapper" else fs.device
    if fs.fstab_by == "partuuid":
        return f"PARTUUID={fs.partuuid}"
    return guest_device(disk, fs.number)


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Extent:
    """Where one partition lives in the image, in bytes."""

    number: int
    start: int
    size: int


@dataclass(frozen=True)
class VolumeExtent:
    """Where one linear LV lives: its extents on the PV and its bytes in the disk image."""

    vg: str
    name: str
    partition: int  # the PV partition's number
    first_extent: int
    extent_count: int
    start: int  # byte offset in the disk image
    size: int


def plan_layout(recipe: GuestRecipe) -> tuple[Extent, ...]:
    """Partition extents: MiB-aligned from 1 MiB on; the last may take the rest of the disk.

    A logical partition starts one MiB after the end of the one before: its EBR lives there.
    """
    if recipe.table == "none":
        return (Extent(1, 0, recipe.size),)
    # gpt keeps its backup header in the last 33 sectors; leave that whole MiB free.
    end = recipe.size - (MIB if recipe.table == "gpt" else 0)
    offset = MIB
    out = []
    for part in recipe.partitions:
        if part.logical:
            offset += MIB
        size = part.size if part.size is not None else end - offset
        if size <= 0 or offset + size > end:
            raise ValueError(f"the partitions need more than the {recipe.size // MIB} MiB disk "
                             f"(partition {part.number} would end at "
                             f"{(offset + max(size, 0)) // MIB} MiB of {end // MIB} usable)")
        out.append(Extent(part.number, offset, size))
        offset += size
    return tuple(out)


def container_extent(recipe: GuestRecipe) -> Extent | None:
    """The dos extended partition holding the logical ones, if there are any."""
    logical = [e for p, e in zip(recipe.partitions, plan_layout(recipe), strict=True)
               if p.logical]
    if not logical:
        return None
    number = sum(1 for p in recipe.partitions if not p.logical) + 1
    start = logical[0].start - MIB
    return Extent(number, start, logical[-1].start + logical[-1].size - start)


def plan_volumes(recipe: GuestRecipe) -> tuple[VolumeExtent, ...]:
    """Each guest LV's extents, allocated in order from the PV's first extent."""
    out = []
    for part, ext in zip(recipe.partitions, plan_layout(recipe), strict=True):
        if part.vg is None:
            continue
        extent = part.vg.extent_size
        pe_count = (ext.size - PE_START) // extent
        first = 0
        for vol in part.vg.volumes:
            count = vol.size // extent if vol.size is not None else pe_count - first
            if count <= 0 or first + count > pe_count:
                raise ValueError(f"the volumes need more than the {pe_count} extents of "
                                 f"{extent // MIB} MiB on {part.vg.name}'s PV (LV {vol.name} "
                                 f"would end at extent {first + max(count, 0)})")
            out.append(VolumeExtent(part.vg.name, vol.name, part.number, first, count,
                                    ext.start + PE_START + first * extent, count * extent))
            first += count
    return tuple(out)


def guest_device(recipe: GuestRecipe, number: int) -> str:
    """The guest's own device name for a partition, e.g. ``/dev/xvda2``."""
    if recipe.table == "none":
        return f"/dev/{recipe.device}"
    sep = "p" if recipe.device[-1].isdigit() else ""
    return f"/dev/{recipe.device}{sep}{number}"


def render_fstab(recipe: GuestRecipe) -> str:
    """The guest's /etc/fstab, naming each filesystem of the domain as its recipe says."""
    lines = [f"# /etc/fstab of {recipe.name}: static file system information.",
             "# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>"]
    lines.extend(e.line() for e in recipe.fstab_entries)
    lines.extend(recipe.extra_fstab)
    return "\n".join(lines) + "\n"


def sfdisk_script(recipe: GuestRecipe) -> str:
    """The sfdisk input that writes the recipe's partition table."""
    lines = [f"label: {recipe.table}", f"label-id: {recipe.disk_id}", "unit: sectors"]
    if recipe.table == "gpt":
        lines.append(f"first-lba: {MIB // SECTOR}")
    lines.append("")
    container = container_extent(recipe)
    for part, ext in zip(recipe.partitions, plan_layout(recipe), strict=True):
        if part.logical and container and ext.start == container.start + MIB:
            lines.append(f"start={container.start // SECTOR}, size={container.size // SECTOR}, "
                         f"type={_DOS_EXTENDED}")
        fields = [f"start={ext.start // SECTOR}", f"size={ext.size // SECTOR}",
                  f"type={partition_type(recipe, part)}"]
        if recipe.table == "gpt":
            fields.append(f"uuid={part.partuuid}")
            if part.name:
                fields.append(f'name="{part.name}"')
        if part.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def partition_type(recipe: GuestRecipe, part: PartitionRecipe) -> str:
    """The partition type code written to the table (dos hex code or gpt type GUID)."""
    if part.type:
        return part.type.upper() if recipe.table == "gpt" else part.type.lower()
    if recipe.table == "gpt":
        return _GPT_TYPES.get(part.fs, _GPT_LINUX)
    return _DOS_TYPES.get(part.fs, _DOS_LINUX)


def render_vg_metadata(recipe: GuestRecipe, number: int) -> str:
    """LVM text metadata (as vgcfgbackup writes it) for the guest VG on partition ``number``."""
    part = recipe.partition(number)
    if part.vg is None:
        raise KeyError(number)
    vg = part.vg
    ext = next(e for e in plan_layout(recipe) if e.number == number)
    extents = [v for v in plan_volumes(recipe) if v.partition == number]
    lines = ['contents = "Text Format Volume Group"', "version = 1", "",
             f'description = "guest volume group of {recipe.name}"', "",
             f'creation_host = "{recipe.name}"', f"creation_time = {recipe.epoch}", "",
             f"{vg.name} {{", f'\tid = "{vg.uuid}"', "\tseqno = 1", '\tformat = "lvm2"',
             '\tstatus = ["RESIZEABLE", "READ", "WRITE"]', "\tflags = []",
             f"\textent_size = {vg.extent_size // SECTOR}", "\tmax_lv = 0", "\tmax_pv = 0",
             "\tmetadata_copies = 0", "", "\tphysical_volumes {", "", "\t\tpv0 {",
             f'\t\t\tid = "{part.uuid}"', f'\t\t\tdevice = "{guest_device(recipe, number)}"',
             '\t\t\tstatus = ["ALLOCATABLE"]', "\t\t\tflags = []",
             f"\t\t\tdev_size = {ext.size // SECTOR}", f"\t\t\tpe_start = {PE_START // SECTOR}",
             f"\t\t\tpe_count = {(ext.size - PE_START) // vg.extent_size}", "\t\t}", "\t}", "",
             "\tlogical_volumes {"]
    for vol, vx in zip(vg.volumes, extents, strict=True):
        lines += ["", f"\t\t{vol.name} {{", f'\t\t\tid = "{vol.lv_uuid}"',
                  '\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]', "\t\t\tflags = []",
                  f"\t\t\tcreation_time = {recipe.epoch}", f'\t\t\tcreation_host = "{recipe.name}"',
                  "\t\t\tsegment_count = 1", "", "\t\t\tsegment1 {", "\t\t\t\tstart_extent = 0",
                  f"\t\t\t\textent_count = {vx.extent_count}", "", '\t\t\t\ttype = "striped"',
                  "\t\t\t\tstripe_count = 1", "", "\t\t\t\tstripes = [",
                  f'\t\t\t\t\t"pv0", {vx.first_extent}', "\t\t\t\t]", "\t\t\t}", "\t\t}"]
    lines += ["\t}", "}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- builder


@dataclass(frozen=True)
class TreeSummary:
    """What a staging tree holds, as counted on the target host."""

    entries: int
    files: int
    dirs: int
    symlinks: int
    specials: int
    apparent_bytes: int
    allocated_bytes: int


@dataclass(frozen=True)
class BuiltPartition:
    """One partition as built into the image."""

    number: int
    start: int
    size: int
    fs: str
    uuid: str | None
    label: str | None
    mount: str | None
    partuuid: str | None
    device: str  # the guest's name for it, e.g. /dev/xvda1
    content: str  # what was built: "empty" for every filesystem of a standby
    tree: TreeSummary | None
    dirty: bool = False


@dataclass(frozen=True)
class BuiltVolume:
    """One guest LV's filesystem as built into the image."""

    vg: str
    name: str
    lv_uuid: str
    start: int  # byte offset in the disk image
    size: int
    fs: str
    uuid: str
    label: str | None
    mount: str | None
    device: str  # the guest's /dev/VG/LV
    content: str
    tree: TreeSummary | None
    dirty: bool = False


@dataclass(frozen=True)
class BuiltImage:
    """A built disk image and its layout."""

    path: str
    name: str
    size: int
    table: str
    disk_id: str | None
    partitions: tuple[BuiltPartition, ...]
    fstab: str | None  # the /etc/fstab text written into the root filesystem
    standby: bool
    scale: int
    duration: float
    device: str = "xvda"
    boot_area: bool = False
    volumes: tuple[BuiltVolume, ...] = ()


def build_domain_images(
    runner: Runner,
    domain: DomainRecipe,
    out_dir: str,
    *,
    workdir: str,
    standby: bool = False,
    scale: int = 1,
    python: str = "python3",
) -> tuple[BuiltImage, ...]:
    """Build every disk of ``domain`` as ``OUT_DIR/NAME-DEVICE.img`` (e.g. multi01-xvdb.img)."""
    _check_abs(out_dir, "out_dir")
    return tuple(build_disk_image(runner, disk, posixpath.join(out_dir, image_name(disk)),
                                  workdir=workdir, standby=standby, scale=scale, python=python)
                 for disk in domain.disks)


def image_name(recipe: GuestRecipe) -> str:
    """The file name ``build_domain_images`` gives a disk's image."""
    return f"{recipe.name}-{recipe.device}.img"


def build_disk_image(
    runner: Runner,
    recipe: GuestRecipe,
    out_path: str,
    *,
    workdir: str,
    standby: bool = False,
    scale: int = 1,
    python: str = "python3",
) -> BuiltImage:
    """Build the recipe's disk image at ``out_path`` on the runner's host.

    ``standby=True`` builds the peer's copy: same table, UUIDs, labels and guest VG, empty
    filesystems, the same raw partitions and boot area bytes. ``workdir`` must hold user
    xattrs and POSIX ACLs: ext4, xfs, overlayfs (tmpfs only from Linux 6.6 on). Inside the
    lab, dd the image into an LV without ``conv=sparse``, so the image's holes overwrite what
    the LV held before.
    """
    _check_abs(out_path, "out_path")
    _check_abs(workdir, "workdir")
    if '"' in workdir:
        raise UsageError(f"workdir must not hold a double quote (debugfs names it): {workdir!r}")
    if not isinstance(scale, int) or scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale!r}")
    started = time.monotonic()
    layout = plan_layout(recipe)
    fstab = render_fstab(recipe) if recipe.root is not None else None
    runner.run(["mkdir", "-p", "--", workdir])
    _refuse_non_file(runner, out_path)
    runner.run(["rm", "-f", "--", out_path])
    runner.run(["truncate", "-s", str(recipe.size), "--", out_path])
    if recipe.table != "none":
        runner.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never",
                    out_path], input=sfdisk_script(recipe))
        if recipe.boot_area:
            # After sfdisk: it would clear the MBR's boot code when it writes a new label.
            gap = (GPT_FIRST_FREE_SECTOR if recipe.table == "gpt" else 1) * SECTOR
            _fill(runner, python, out_path, 0, MBR_CODE_BYTES, f"{recipe.seed}:boot-code")
            _fill(runner, python, out_path, gap, layout[0].start - gap, f"{recipe.seed}:boot-gap")
        _verify_table(runner, recipe, out_path)
    ctx = _Build(runner, recipe, workdir, standby, scale, python, fstab)
    built: list[BuiltPartition] = []
    volumes: list[BuiltVolume] = []
    for part, ext in zip(recipe.partitions, layout, strict=True):
        tree = None
        content = "empty" if standby and part.fs != "raw" else part.content
        if part.fs == "raw":
            # Raw bytes are no filesystem a file copy could carry: the standby has them too.
            if content == "pattern":
                _fill(runner, python, out_path, ext.start, ext.size,
                      f"{recipe.seed}:{part.number}:raw")
        elif part.vg is not None:
            volumes.extend(ctx.physical_volume(part, ext, out_path))
        else:
            tree = ctx.filesystem_into(part, f"p{part.number}", ext.size, out_path, ext.start)
        built.append(BuiltPartition(part.number, ext.start, ext.size, part.fs, part.uuid,
                                    part.label, part.mount, part.partuuid,
                                    guest_device(recipe, part.number), content, tree,
                                    part.dirty and not standby))
    return BuiltImage(out_path, recipe.name, recipe.size, recipe.table, recipe.disk_id,
                      tuple(built), fstab if not standby else None, standby, scale,
                      time.monotonic() - started, recipe.device, recipe.boot_area,
                      tuple(volumes))


def stage_tree(
    runner: Runner,
    recipe: GuestRecipe,
    number: int | str,
    dest: str,
    *,
    scale: int = 1,
    python: str = "python3",
    debugfs_cmds: str | None = None,
    as_user: bool = False,
) -> tuple[TreeSummary, tuple[tuple[str, str], ...]]:
    """Create the file tree of partition ``number`` (or LV ``"VG/LV"``) under ``dest``.

    ``dest`` must not exist. Returns the tree's summary and the (relative path, capability)
    pairs still to be set with setcap. ``debugfs_cmds``, if given, receives debugfs commands
    that pin every inode's ctime to the recipe's epoch. ``as_user`` stages without root:
    the owners stay the caller's and the tree has no device node (never for an image).
    """
    _check_abs(dest, "dest")
    fs: Filesystem = recipe.volume(number) if isinstance(number, str) else recipe.partition(number)
    spec = {
        "op": "stage",
        "root": dest,
        "content": fs.content,
        "seed": f"{recipe.seed}:{_seed_key(fs)}",
        "scale": scale,
        "epoch": recipe.epoch,
        "etc": _etc_files(recipe) if fs.mount == "/" and fs.content != "empty" else {},
        "mountpoints": _mountpoints(recipe, fs),
        "debugfs_cmds": debugfs_cmds,
    }
    out = _run_program(runner, spec, python, timeout=_timeout(scale),
                       env={"DOMUBK_STAGE_AS_USER": "1"} if as_user else None)
    summary = TreeSummary(**out["summary"])
    caps = tuple((str(rel), str(cap)) for rel, cap in out["capabilities"])
    return summary, caps


def _seed_key(fs: Filesystem) -> str:
    return f"{fs.vg}/{fs.name}" if isinstance(fs, VolumeRecipe) else str(fs.number)


@dataclass(frozen=True)
class _Build:
    """One disk build in progress: where it runs and what it makes."""

    runner: Runner
    recipe: GuestRecipe
    workdir: str
    standby: bool
    scale: int
    python: str
    fstab: str | None

    def path(self, key: str, suffix: str) -> str:
        name = f"{self.recipe.name}-{self.recipe.device}-{key}.{suffix}"
        return posixpath.join(self.workdir, name)

    def filesystem_into(self, fs: Filesystem, key: str, size: int, out_path: str,
                        offset: int) -> TreeSummary | None:
        """Make one filesystem as a file and copy it into the image at ``offset``."""
        fs_file = self.path(key, "fs")
        try:
            tree = self.make(fs, key, size, fs_file)
            self.copy_in(fs_file, out_path, offset)
        finally:
            self.runner.run(["rm", "-f", "--", fs_file], check=False)
        return tree

    def copy_in(self, src: str, out_path: str, offset: int) -> None:
        self.runner.run(["dd", f"if={src}", f"of={out_path}", "bs=1M", f"seek={offset}",
                         "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"],
                        timeout=_timeout(self.scale))

    def make(self, fs: Filesystem, key: str, size: int, fs_file: str) -> TreeSummary | None:
        content = "empty" if self.standby else fs.content
        dirty = fs.dirty and not self.standby
        self.runner.run(["rm", "-f", "--", fs_file])
        self.runner.run(["truncate", "-s", str(size), "--", fs_file])
        if fs.fs == "swap":
            argv = ["mkswap", "-U", fs.uuid or ""]
            if fs.label:
                argv += ["-L", fs.label]
            self.runner.run([*argv, "--", fs_file])
            return None
        if fs.fs == "vfat":
            self.make_vfat(fs, content, fs_file)
            return None
        if fs.fs == "xfs":
            return self.make_xfs(fs, key, size, fs_file, content, dirty)
        return self.make_ext(fs, key, size, fs_file, content, dirty)

    def make_ext(self, fs: Filesystem, key: str, size: int, fs_file: str, content: str,
                 dirty: bool) -> TreeSummary | None:
        runner, recipe = self.runner, self.recipe
        # E2FSPROGS_FAKE_TIME pins the superblock and lost+found times, so builds are identical.
        env = {"E2FSPROGS_FAKE_TIME": str(recipe.epoch), "E2FSPROGS_SKIP_PROGRESS": "1"}
        argv = [f"mkfs.{fs.fs}", "-F", "-q", "-U", fs.uuid or "",
                "-E", f"root_owner=0:0,hash_seed={fs.uuid}"]
        if fs.label:
            argv += ["-L", fs.label]
        if content == "empty":
            runner.run([*argv, fs_file], env=env)
            return None
        tree, cmds = self.path(key, "tree"), self.path(key, "debugfs")
        runner.run(["rm", "-rf", "--one-file-system", "--", tree])
        try:
            staged = self.stage(fs, tree, cmds)
            _check_fits(recipe, fs, size, staged, self.scale)
            if staged.entries + 64 > size // _inode_ratio(size):
                argv += ["-N", str(staged.entries + 1024)]
            runner.run([*argv, "-d", tree, fs_file], env=env, timeout=_timeout(self.scale))
            # populate copies each inode's ctime from the staging tree, where it is "now";
            # pin them so two builds give identical bytes.
            result = runner.run(["debugfs", "-w", "-f", cmds, fs_file], env=env,
                                timeout=_timeout(self.scale))
            self.debugfs_errors(result.stderr, fs, "pinning inode times")
        finally:
            runner.run(["rm", "-rf", "--one-file-system", "--", tree, cmds], check=False)
        if dirty:
            self.dirty_journal(fs, key, fs_file, content, env)
        return staged

    def debugfs_errors(self, stderr: str, fs: Filesystem, doing: str) -> None:
        errors = [ln for ln in stderr.splitlines() if ln and not ln.startswith("debugfs ")]
        if errors:
            raise ToolkitError(f"{self.recipe.source}: {doing} in {_describe(fs)} failed: "
                               f"{errors[0]}", host=self.runner.host)

    def dirty_journal(self, fs: Filesystem, key: str, fs_file: str, content: str,
                      env: dict[str, str]) -> None:
        """Commit one transaction to the journal and leave it unreplayed (needs_recovery)."""
        runner = self.runner
        rel = _PENDING_FILE[content]
        out = runner.run(["debugfs", "-R", f'bmap "/{rel}" 0', fs_file]).stdout.strip()
        block_size = _dumpe2fs_field(runner, fs_file, "Block size")
        if not out.isdigit() or not block_size.isdigit():
            raise ParseError(f"{fs_file}: no block for /{rel} ({out!r}) or block size "
                             f"({block_size!r})", host=runner.host)
        data = self.path(key, "journal")
        try:
            _fill(runner, self.python, data, 0, int(block_size),
                  f"{self.recipe.seed}:{_seed_key(fs)}:journal", create=True)
            result = runner.run(["debugfs", "-w", "-f", "-", fs_file], env=env,
                                input=f'jo\njw -b {out} "{data}"\njc\n')
            self.debugfs_errors(result.stderr, fs, "writing a journal transaction")
        finally:
            runner.run(["rm", "-f", "--", data], check=False)
        if "needs_recovery" not in _dumpe2fs_field(runner, fs_file, "Filesystem features"):
            raise ToolkitError(f"{fs_file}: the journal was written but needs_recovery is not "
                               "set", host=runner.host)

    def make_xfs(self, fs: Filesystem, key: str, size: int, fs_file: str, content: str,
                 dirty: bool) -> TreeSummary | None:
        runner = self.runner
        argv = ["mkfs.xfs", "-f", "-q", "-m", f"uuid={fs.uuid}"]
        if fs.label:
            argv += ["-L", fs.label]
        runner.run([*argv, fs_file])
        staged = None
        if content != "empty":
            tree, mnt = self.path(key, "tree"), self.path(key, "mnt")
            runner.run(["rm", "-rf", "--one-file-system", "--", tree])
            try:
                staged = self.stage(fs, tree, None)
                _check_fits(self.recipe, fs, size, staged, self.scale)
                self.fill_through_mount(fs_file, tree, mnt, dirty)
            finally:
                runner.run(["rm", "-rf", "--one-file-system", "--", tree], check=False)
        probe = _probe(runner, fs_file)
        if (probe.get("TYPE"), probe.get("UUID"), probe.get("LABEL")) != ("xfs", fs.uuid,
                                                                           fs.label):
            raise ToolkitError(f"{fs_file}: blkid finds {probe}, not xfs {fs.uuid} {fs.label}",
                               host=runner.host)
        if dirty and "<DIRTY>" not in runner.run(["xfs_logprint", "-t", fs_file]).stdout:
            raise ToolkitError(f"{fs_file}: the xfs log was left clean", host=runner.host)
        return staged

    def fill_through_mount(self, fs_file: str, tree: str, mnt: str, dirty: bool) -> None:
        """Copy a staging tree into an xfs file through a loop mount; always detach."""
        runner = self.runner
        runner.run(["mkdir", "-p", "--", mnt])
        loop = _attach(runner, fs_file)
        try:
            runner.run(["mount", "-t", "xfs", "-o", "nouuid", loop, mnt])
            try:
                runner.run(["cp", "-a", "--sparse=always", "--", tree + "/.", mnt + "/"],
                           timeout=_timeout(self.scale))
                if dirty:
                    # Freeze writes everything back in place; what follows lives only in the
                    # log, and the shutdown keeps it there.
                    runner.run(["xfs_io", "-x", "-c", "freeze", "-c", "thaw", mnt])
                    runner.run(["mkdir", "--", posixpath.join(mnt, XFS_PENDING_DIR)])
                    runner.run(["xfs_io", "-x", "-c", "shutdown -f", mnt])
            finally:
                runner.run(["umount", mnt])
        finally:
            runner.run(["losetup", "-d", loop], check=False)
            runner.run(["rmdir", "--", mnt], check=False)

    def make_vfat(self, fs: Filesystem, content: str, fs_file: str) -> None:
        runner = self.runner
        # --invariant pins the boot sector's and the label entry's time-based values.
        argv = ["mkfs.fat", "-F", "32", "--invariant", "-i", (fs.uuid or "").replace("-", "")]
        if fs.label:
            argv += ["-n", fs.label]
        runner.run([*argv, fs_file])
        if content == "esp":
            _run_program(runner, {"op": "fat", "path": fs_file, "epoch": self.recipe.epoch,
                                  "seed": f"{self.recipe.seed}:{_seed_key(fs)}",
                                  "files": [list(ESP_LOADER)]}, self.python,
                         timeout=_timeout(1))
        runner.run(["fsck.fat", "-n", fs_file])

    def stage(self, fs: Filesystem, tree: str, cmds: str | None) -> TreeSummary:
        which = f"{fs.vg}/{fs.name}" if isinstance(fs, VolumeRecipe) else fs.number
        staged, caps = stage_tree(self.runner, self.recipe, which, tree, scale=self.scale,
                                  python=self.python, debugfs_cmds=cmds)
        for rel, cap in caps:
            # After the program's chown/chmod: chown clears a file capability.
            self.runner.run(["setcap", cap, posixpath.join(tree, rel)])
        return staged

    def physical_volume(self, part: PartitionRecipe, ext: Extent,
                        out_path: str) -> list[BuiltVolume]:
        """Write the guest PV and VG metadata, then each LV's filesystem at its extents."""
        runner, vg = self.runner, part.vg
        assert vg is not None
        pv_file = self.path(f"p{part.number}", "pv")
        meta, sysdir = self.path(f"p{part.number}", "vg"), self.path(f"p{part.number}", "lvm")
        planned = [v for v in plan_volumes(self.recipe) if v.partition == part.number]
        try:
            runner.run(["rm", "-rf", "--", pv_file, sysdir])
            runner.run(["truncate", "-s", str(ext.size), "--", pv_file])
            runner.run(["mkdir", "-m", "0700", "--", sysdir])
            _write_file(runner, self.python, meta,
                        render_vg_metadata(self.recipe, part.number))
            loop = _attach(runner, pv_file)
            try:
                env = {"LVM_SYSTEM_DIR": sysdir, "LVM_SUPPRESS_FD_WARNINGS": "1"}
                opts = ["--devices", loop, "--nolocking", "--driverloaded", "n",
                        "--config", _LVM_CONFIG]
                runner.run(["lvm", "pvcreate", *opts, "--uuid", part.uuid or "",
                            "--restorefile", meta, loop], env=env)
                # Where a VG of the same name is active (lvm01's guest VG is named like
                # dom0-a's own), vgcfgrestore asks first; the answer is yes: it writes only
                # to this loop device (--devices), the host's VG is not touched.
                runner.run(["lvm", "vgcfgrestore", *opts, "-f", meta, vg.name], env=env,
                           input="y\n")
                pvs = runner.run(["lvm", "pvs", *opts, "--reportformat", "json", "--units", "b",
                                  "--nosuffix", "-o", "pv_uuid,pe_start,vg_name,vg_uuid,"
                                  "vg_extent_size"], env=env).stdout
                lvs = runner.run(["lvm", "lvs", *opts, "--reportformat", "json", "-o",
                                  "lv_name,lv_uuid,vg_name,seg_start_pe,seg_pe_ranges"],
                                 env=env).stdout
            finally:
                runner.run(["losetup", "-d", loop], check=False)
            starts = _check_lvm_reports(runner, part, ext, loop, pvs, lvs)
            if starts != {v.name: v.start for v in planned}:
                raise ToolkitError(f"{out_path}: LVM placed {vg.name}'s LVs at {starts}, "
                                   f"expected {[(v.name, v.start) for v in planned]}",
                                   host=runner.host)
            self.copy_in(pv_file, out_path, ext.start)
        finally:
            runner.run(["rm", "-rf", "--", pv_file, meta, sysdir], check=False)
        built = []
        for vol, vx in zip(vg.volumes, planned, strict=True):
            tree = self.filesystem_into(vol, f"{vg.name}-{vol.name}", vx.size, out_path,
                                        vx.start)
            built.append(BuiltVolume(vg.name, vol.name, vol.lv_uuid, vx.start, vx.size, vol.fs,
                                     vol.uuid, vol.label, vol.mount, vol.device,
                                     "empty" if self.standby else vol.content, tree,
                                     vol.dirty and not self.standby))
        return built


def _describe(fs: Filesystem) -> str:
    if isinstance(fs, VolumeRecipe):
        return f"LV {fs.vg}/{fs.name}"
    return f"partition {fs.number}"


def _check_lvm_reports(runner: Runner, part: PartitionRecipe, ext: Extent, loop: str, pvs: str,
                       lvs: str) -> dict[str, int]:
    """Image offsets of each LV, from what pvs and lvs report; errors if the VG is not ours."""
    vg = part.vg
    assert vg is not None
    try:
        pv_rows = json.loads(pvs)["report"][0]["pv"]
        lv_rows = json.loads(lvs)["report"][0]["lv"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParseError(f"unexpected pvs/lvs report ({exc})", host=runner.host) from exc
    got_pv = [(r.get("pv_uuid"), r.get("vg_name"), r.get("vg_uuid"), r.get("vg_extent_size"))
              for r in pv_rows]
    want_pv = [(part.uuid, vg.name, vg.uuid, str(vg.extent_size))]
    if got_pv != want_pv or not str(pv_rows[0].get("pe_start", "")).isdigit():
        raise ToolkitError(f"pvs reports {pv_rows}, expected {want_pv}", host=runner.host)
    pe_start = int(pv_rows[0]["pe_start"])
    starts: dict[str, int] = {}
    uuids = {v.name: v.lv_uuid for v in vg.volumes}
    for row in lv_rows:
        device, _, extents = str(row.get("seg_pe_ranges", "")).rpartition(":")
        first = extents.split("-")[0]
        if (device != loop or row.get("vg_name") != vg.name or row.get("seg_start_pe") != "0"
                or uuids.get(row.get("lv_name")) != row.get("lv_uuid") or not first.isdigit()):
            raise ToolkitError(f"lvs reports {row}: not one linear segment of an LV of "
                               f"{vg.name} on {loop}", host=runner.host)
        starts[row["lv_name"]] = ext.start + pe_start + int(first) * vg.extent_size
    return starts


def _dumpe2fs_field(runner: Runner, fs_file: str, field: str) -> str:
    for line in runner.run(["dumpe2fs", "-h", fs_file]).stdout.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == field:
            return value.strip()
    return ""


def _probe(runner: Runner, path: str) -> dict[str, str]:
    out = runner.run(["blkid", "-p", "-o", "export", "--", path]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _attach(runner: Runner, path: str) -> str:
    loop = runner.run(["losetup", "--find", "--show", "--", path]).stdout.strip()
    if not loop.startswith("/dev/loop"):
        raise ParseError(f"losetup printed {loop!r}, not a loop device", host=runner.host)
    return loop


def _fill(runner: Runner, python: str, path: str, offset: int, size: int, key: str, *,
          create: bool = False) -> None:
    _run_program(runner, {"op": "fill", "path": path, "offset": offset, "size": size,
                          "key": key, "create": create}, python, timeout=_timeout(1))


def _write_file(runner: Runner, python: str, path: str, text: str) -> None:
    _run_program(runner, {"op": "write", "path": path, "text": text}, python,
                 timeout=_timeout(1))


def _inode_ratio(size: int) -> int:
    # mke2fs.conf: "small" filesystems (< 512 MiB) get one inode per 4 KiB, others per 16 KiB.
    return 4096 if size < 512 * MIB else 16384


def _check_fits(recipe: GuestRecipe, fs: Filesystem, size: int, tree: TreeSummary,
                scale: int) -> None:
    # Metadata (inode tables, journal, directories) needs room beside the data.
    need = tree.allocated_bytes + tree.entries * 256 + size // 10 + 4 * MIB
    if need > size:
        where = next(w for w, item in _places(recipe, "") if item is fs)
        raise ConfigError(f"{recipe.source}: {where}.size: the "
                          f"{fs.content} tree at scale {scale} needs about {need // MIB} MiB, "
                          f"more than the {size // MIB} MiB partition")


def _etc_files(recipe: GuestRecipe) -> dict[str, str]:
    return {"fstab": render_fstab(recipe), "hostname": recipe.name + "\n",
            "os-release": _OS_RELEASE}


def _mountpoints(recipe: GuestRecipe, fs: Filesystem) -> list[str]:
    """Directories in this filesystem on which the guest mounts its other filesystems."""
    if fs.mount is None or fs.content == "empty":
        return []
    mounts = [e.mount for e in recipe.fstab_entries if e.mount.startswith("/")]
    out = []
    for other in mounts:
        if other == fs.mount or not _under(other, fs.mount):
            continue
        # Only the nearest enclosing filesystem holds the mount point.
        parents = [m for m in mounts if m != other and _under(other, m)]
        if max(parents, key=len) == fs.mount:
            out.append(posixpath.relpath(other, fs.mount))
    return sorted(out)


def _under(path: str, parent: str) -> bool:
    return path != parent and (parent == "/" or path.startswith(parent + "/"))


def _check_abs(path: str, what: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\n" in path:
        raise UsageError(f"{what} must be an absolute path, got {path!r}")


def _refuse_non_file(runner: Runner, path: str) -> None:
    result = runner.run(["stat", "-c", "%F", "--", path], check=False)
    kind = result.stdout.strip()
    if result.exit_code == 0 and kind not in ("regular file", "regular empty file"):
        raise UsageError(f"refusing to replace {path}: it is a {kind}, not a regular file",
                         host=runner.host)


def _verify_table(runner: Runner, recipe: GuestRecipe, out_path: str) -> None:
    """Read the table back with sfdisk and check it is the one planned."""
    result = runner.run(["sfdisk", "--json", out_path])
    try:
        table = json.loads(result.stdout)["partitiontable"]
        got = [(int(p["start"]), int(p["size"])) for p in table["partitions"]]
        label = table["label"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"sfdisk --json {out_path}: unexpected output ({exc})",
                         host=runner.host) from exc
    extents = list(plan_layout(recipe))
    container = container_extent(recipe)
    if container is not None:
        extents.append(container)
    want = [(e.start // SECTOR, e.size // SECTOR) for e in sorted(extents, key=lambda e: e.number)]
    if label != recipe.table or got != want:
        raise ToolkitError(f"{out_path}: sfdisk wrote {label} {got}, expected {recipe.table} "
                           f"{want}", host=runner.host)


def _timeout(scale: int) -> float:
    return 300.0 + 120.0 * scale


# --------------------------------------------------------------------------- mutate


@dataclass(frozen=True)
class MutationSummary:
    """What ``mutate`` changed in a guest tree, as counts."""

    added: int
    modified: int
    deleted: int
    renamed_dirs: int
    mode_changes: int
    owner_changes: int
    links_added: int
    links_removed: int
    xattrs_changed: int


def mutate(runner: Runner, mountpoint: str, seed: int, *, python: str = "python3",
           epoch: int = DEFAULT_EPOCH) -> MutationSummary:
    """Change a guest tree for an incremental run and report what was changed.

    Adds, modifies (content and size), deletes files; renames a directory; changes modes
    and owners; adds and removes a hard link; changes an xattr. Stays on the filesystem of
    ``mountpoint``, leaves ``/etc`` and top-level directories alone (the guest must still
    boot), and is deterministic for a given tree and seed.
    """
    _check_abs(mountpoint, "mountpoint")
    out = _run_program(runner, {"op": "mutate", "root": mountpoint, "seed": seed,
                                "epoch": epoch}, python, timeout=_timeout(1))
    return MutationSummary(**out)


# --------------------------------------------------------------------------- shipping


def _run_program(runner: Runner, spec: dict[str, Any], python: str, *,
                 timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = runner.run([python, "-c", remote_program(), json.dumps(spec)], timeout=timeout,
                        env=env)
    try:
        out = json.loads(result.stdout)
    except ValueError as exc:
        raise ParseError(f"guest tree program printed no JSON: {result.stdout[-200:]!r}",
                         host=runner.host) from exc
    if not isinstance(out, dict):
        raise ParseError(f"guest tree program printed {out!r}", host=runner.host)
    return out


@functools.cache
def remote_program() -> str:
    """The self-contained program text run on the target host (stdlib only)."""
    parts = ["import json, os, random, shutil, stat, struct, sys, time"]
    parts += [inspect.getsource(fn) for fn in _REMOTE_FUNCTIONS]
    parts.append("print(json.dumps(_r_main(json.loads(sys.argv[1]))))")
    return "\n\n".join(parts) + "\n"


# Everything below runs on the target host, shipped as source by remote_program(): stdlib only,
# no references to anything else in this module.


def _r_main(spec):
    # Directories made on the way (os.makedirs parents) get 0755; every leaf gets its mode
    # set explicitly.
    os.umask(0o022)
    if spec["op"] == "stage":
        return _r_stage(spec)
    if spec["op"] == "mutate":
        return _r_mutate(spec)
    if spec["op"] == "fill":
        return _r_fill(spec)
    if spec["op"] == "write":
        return _r_write(spec)
    if spec["op"] == "fat":
        return _r_fat(spec)
    raise SystemExit(f"unknown op {spec['op']!r}")


def _r_bytes(seed, rel, size):
    return random.Random(f"{seed}:{rel}").randbytes(size)


def _r_owner(path, uid, gid):
    # Staged as a user (DOMUBK_STAGE_AS_USER=1, the unit tests' only): owners stay the
    # user's, who can still read and write everything, and no device node is made; an
    # image is always built as root.
    if os.environ.get("DOMUBK_STAGE_AS_USER") != "1":
        os.lchown(path, uid, gid)


def _r_mode(path, mode, user_bits):
    if os.environ.get("DOMUBK_STAGE_AS_USER") == "1":
        mode |= user_bits
    os.chmod(path, mode)


def _r_put(root, rel, data, mode=0o644, uid=0, gid=0):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    # chown before chmod: chown clears setuid and setgid bits.
    _r_owner(path, uid, gid)
    _r_mode(path, mode, 0o600)
    return path


def _r_dir(root, rel, mode=0o755, uid=0, gid=0):
    path = os.path.join(root, rel)
    os.makedirs(path, mode=0o755, exist_ok=True)
    _r_owner(path, uid, gid)
    _r_mode(path, mode, 0o700)
    return path


def _r_acl(entries):
    # The kernel's POSIX ACL xattr format: a version word, then (tag, perm, id) entries
    # sorted by tag. Tags: 1 user_obj, 2 user, 4 group_obj, 8 group, 16 mask, 32 other.
    data = struct.pack("<I", 2)
    for tag, perm, ident in entries:
        data += struct.pack("<HHI", tag, perm, 0xFFFFFFFF if ident is None else ident)
    return data


def _r_stage(spec):
    root, seed, scale = spec["root"], spec["seed"], spec["scale"]
    os.makedirs(root, mode=0o755)
    os.chmod(root, 0o755)
    try:
        os.setxattr(root, "user.domubk.probe", b"1")
        os.removexattr(root, "user.domubk.probe")
    except OSError as exc:
        raise SystemExit(f"{root}: cannot hold user xattrs ({exc.strerror}); stage on ext4, "
                         "xfs or overlayfs, not tmpfs") from None
    caps = []
    if spec["content"] == "rich":
        caps = _r_rich(root, seed, scale)
    elif spec["content"] == "minimal":
        _r_put(root, "README.txt", b"minimal fixture filesystem\n")
        _r_put(root, "data/hello.txt", _r_bytes(seed, "data/hello.txt", 100))
    if spec["etc"]:
        _r_dir(root, "etc")
        for name, text in sorted(spec["etc"].items()):
            _r_put(root, "etc/" + name, text.encode())
    for rel in spec["mountpoints"]:
        # A mount point is an empty directory: what the tree put there would be hidden.
        path = os.path.join(root, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        _r_dir(root, rel)
    summary = _r_finish(root, spec["epoch"], spec["debugfs_cmds"])
    return {"summary": summary, "capabilities": caps}


def _r_rich(root, seed, scale):
    rng = random.Random(f"tree:{seed}")
    mib = 1024 * 1024
    for name, size in (("empty.bin", 0), ("one.bin", 1), ("page.bin", 4096),
                       ("page-plus-one.bin", 4097), ("mebi.bin", mib)):
        _r_put(root, "data/sizes/" + name, _r_bytes(seed, name, size))
    # scale 1: 500 small files and 3 of one to three MiB (every e2e copy and audit reads
    # them under emulation, so they are kept small); scale 40: 20000 small, about 250 MiB.
    for i in range(1 + 2 * scale):
        rel = f"data/big/big-{i:04d}.bin"
        _r_put(root, rel, _r_bytes(seed, rel, rng.randint(1, 3) * mib + rng.randint(0, 4095)))
    small_sizes = (0, 1, 17, 100, 511, 512, 1000, 4095, 4096, 4097, 8192, 12000)
    for i in range(500 * scale):
        rel = f"data/small/d{i // 50:04d}/f{i:06d}.dat"
        size = rng.choice(small_sizes) if i % 3 else rng.randint(0, 16384)
        _r_put(root, rel, _r_bytes(seed, rel, size), mode=rng.choice((0o644, 0o644, 0o600)))
    deep = "data/deep/" + "/".join(f"l{i:02d}" for i in range(1, 13))
    _r_put(root, deep + "/leaf.txt", b"at the bottom\n")
    os.setxattr(os.path.join(root, "data/deep"), "user.domubk.dir", b"nested")
    for name in ("with space.txt", "\u00fcn\u00efc\u00f6d\u00e9-\u0444\u0430\u0439\u043b.txt",
                 "-leading-dash", "trailing.dot.", "MixedCase", "semi;colon$(x)"):
        _r_put(root, "data/names/" + name, name.encode() + b"\n")
    _r_dir(root, "data/empty-dir")
    _r_dir(root, "empty/nested/deeper")
    # A sparse file: 4 MiB apparent, three 4 KiB extents of data with holes between. (rsync
    # sends a hole's zeroes over the wire, so this is kept small: every e2e copy pays for it.)
    sparse = _r_put(root, "data/sparse.img", b"")
    with open(sparse, "r+b") as f:
        f.truncate(4 * mib)
        for off in (0, 2 * mib, 4 * mib - 4096):
            os.pwrite(f.fileno(), _r_bytes(seed, f"sparse@{off}", 4096), off)
    xattr = _r_put(root, "data/xattr.txt", b"has a user xattr\n")
    os.setxattr(xattr, "user.domubk", f"fixture-{seed}".encode())
    acl = _r_put(root, "data/acl.txt", b"readable by uid 1234 through an ACL\n", mode=0o640)
    os.setxattr(acl, "system.posix_acl_access",
                _r_acl([(1, 6, None), (2, 4, 1234), (4, 4, None), (16, 4, None), (32, 0, None)]))
    acl_dir = _r_dir(root, "data/acl-dir", mode=0o2775, gid=4242)
    os.setxattr(acl_dir, "system.posix_acl_default",
                _r_acl([(1, 7, None), (4, 5, None), (8, 7, 4242), (16, 7, None), (32, 5, None)]))
    # Three names for one inode, across two directories.
    hard = _r_put(root, "links/hard-1", b"one inode, three names\n", mode=0o640,
                  uid=1234, gid=5678)
    os.link(hard, os.path.join(root, "links/hard-2"))
    os.link(hard, os.path.join(root, "data/hard-3"))
    for rel, target in (("links/abs-hostname", "/etc/hostname"),
                        ("links/rel-page", "../data/sizes/page.bin"),
                        ("links/dir-link", "../data/deep"),
                        ("links/dangling", "../data/no-such-file"),
                        ("links/long-target", "../data/" + "long-name-" * 12 + "missing")):
        os.symlink(target, os.path.join(root, rel))
    _r_owner(os.path.join(root, "links/rel-page"), 4242, 4242)
    _r_put(root, "modes/private", b"0600\n", mode=0o600, uid=4242, gid=4242)
    _r_put(root, "modes/public", b"0644\n", mode=0o644)
    _r_put(root, "modes/group-write", b"0664\n", mode=0o664, gid=5678)
    _r_put(root, "modes/script.sh", b"#!/bin/sh\necho fixture\n", mode=0o755)
    _r_put(root, "modes/no-perms", b"0000\n", mode=0o000)
    _r_dir(root, "modes/setgid-dir", mode=0o2775, gid=4242)
    _r_dir(root, "tmp", mode=0o1777)
    _r_put(root, "tmp/.keep", b"")
    _r_put(root, "usr/bin/suid-tool", _r_bytes(seed, "suid-tool", 3000), mode=0o4755)
    _r_put(root, "usr/bin/sgid-tool", _r_bytes(seed, "sgid-tool", 2000), mode=0o2755, gid=42)
    _r_put(root, "usr/bin/netprobe", _r_bytes(seed, "netprobe", 5000), mode=0o755)
    _r_dir(root, "home/alice", mode=0o750, uid=1234, gid=5678)
    _r_put(root, "home/alice/.profile", b"export PATH\n", uid=1234, gid=5678)
    _r_put(root, "home/alice/notes.txt", b"private\n", mode=0o600, uid=1234, gid=5678)
    _r_dir(root, "srv/www", uid=4242, gid=4242)
    _r_put(root, "srv/www/index.html", b"<p>web</p>\n", uid=4242, gid=4242)
    _r_dir(root, "special")
    os.mkfifo(os.path.join(root, "special/fifo"))
    os.chmod(os.path.join(root, "special/fifo"), 0o644)
    if os.environ.get("DOMUBK_STAGE_AS_USER") != "1":
        os.mknod(os.path.join(root, "special/null"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(os.path.join(root, "special/null"), 0o666)
    return [("usr/bin/netprobe", "cap_net_raw+ep")]


def _r_finish(root, epoch, debugfs_cmds):
    """Pin every mtime/atime to ``epoch``, bottom-up, and count what the tree holds."""
    counts = {"entries": 0, "files": 0, "dirs": 0, "symlinks": 0, "specials": 0,
              "apparent_bytes": 0, "allocated_bytes": 0}
    seen = set()
    paths = []
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in sorted(filenames + dirnames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
            paths.append(path)
            if stat.S_ISDIR(st.st_mode):
                counts["dirs"] += 1
            elif stat.S_ISREG(st.st_mode):
                counts["files"] += 1
            elif stat.S_ISLNK(st.st_mode):
                counts["symlinks"] += 1
            else:
                counts["specials"] += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                counts["entries"] += 1
                counts["apparent_bytes"] += st.st_size
                counts["allocated_bytes"] += st.st_blocks * 512
    os.utime(root, (epoch, epoch))
    if debugfs_cmds:
        with open(debugfs_cmds, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(f'sif "/" ctime @{epoch}\n')
            for path in sorted(paths):
                rel = "/" + os.path.relpath(path, root)
                if '"' in rel or "\n" in rel:
                    raise SystemExit(f"cannot name {rel!r} to debugfs")
                f.write(f'sif "{rel}" ctime @{epoch}\n')
    return counts


def _r_mutate(spec):
    root, seed = spec["root"], spec["seed"]
    rng = random.Random(f"mutate:{seed}")
    when = spec["epoch"] + 86400 * (1 + seed % 1000)
    dev = os.lstat(root).st_dev
    files, dirs, linked, xattr_files = [], [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            # Stay on this filesystem; leave /etc (the guest's fstab) and lost+found alone.
            if (not stat.S_ISDIR(st.st_mode) or st.st_dev != dev or os.path.ismount(path)
                    or (rel_dir == "." and name in ("etc", "lost+found"))):
                continue
            keep.append(name)
            if rel_dir != ".":
                dirs.append(os.path.join(rel_dir, name))
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(os.path.join(root, rel))
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_nlink > 1:
                linked.append(rel)
            else:
                files.append(rel)
            if "user.domubk" in os.listxattr(os.path.join(root, rel), follow_symlinks=False):
                xattr_files.append(rel)
    counts = {"added": 0, "modified": 0, "deleted": 0, "renamed_dirs": 0, "mode_changes": 0,
              "owner_changes": 0, "links_added": 0, "links_removed": 0, "xattrs_changed": 0}
    picked = rng.sample(files, min(len(files), 31))
    to_modify, to_delete = picked[:10], picked[10:20]
    to_chmod, to_chown, to_link = picked[20:25], picked[25:30], picked[30:31]
    for rel in to_modify:
        path = os.path.join(root, rel)
        size = os.path.getsize(path) + 1 + rng.randint(0, 5000)
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(_r_bytes(f"mutate:{seed}", rel, size))
        os.utime(path, (when, when))
        counts["modified"] += 1
    for rel in to_delete:
        os.unlink(os.path.join(root, rel))
        counts["deleted"] += 1
    for rel in to_chmod:
        path = os.path.join(root, rel)
        old = stat.S_IMODE(os.lstat(path).st_mode)
        os.chmod(path, next(m for m in (0o640, 0o755, 0o600) if m != old))
        counts["mode_changes"] += 1
    for rel in to_chown:
        path = os.path.join(root, rel)
        st = os.lstat(path)
        uid, gid = next(o for o in ((4242, 4242), (1234, 5678), (0, 0))
                        if o != (st.st_uid, st.st_gid))
        _r_owner(path, uid, gid)
        counts["owner_changes"] += 1
    new_dir = os.path.join(root, f"mutated-{seed}")
    os.makedirs(new_dir, mode=0o755, exist_ok=True)
    for i in range(20):
        rel = f"mutated-{seed}/new-{i:03d}.dat"
        path = _r_put(root, rel, _r_bytes(f"mutate:{seed}", rel, rng.randint(0, 70000)))
        os.utime(path, (when, when))
        counts["added"] += 1
    for rel in to_link:
        os.link(os.path.join(root, rel), os.path.join(new_dir, "new-hard-link"))
        counts["links_added"] += 1
    if linked:
        os.unlink(os.path.join(root, linked[-1]))
        counts["links_removed"] += 1
    existing = [r for r in xattr_files + files if os.path.exists(os.path.join(root, r))]
    if existing:
        target = existing[0]
        os.setxattr(os.path.join(root, target), "user.domubk", f"mutated-{seed}".encode(),
                    follow_symlinks=False)
        counts["xattrs_changed"] += 1
    renamable = [d for d in dirs if os.path.isdir(os.path.join(root, d))]
    if renamable:
        rel = rng.choice(renamable)
        os.rename(os.path.join(root, rel), os.path.join(root, f"{rel}-renamed-{seed}"))
        counts["renamed_dirs"] += 1
    return counts


def _r_fill(spec):
    """Write ``size`` seeded bytes at ``offset`` of an existing file (or a new one)."""
    path, left = spec["path"], spec["size"]
    rng = random.Random(spec["key"])
    if not spec["create"] and not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file to fill")
    fd = os.open(path, os.O_WRONLY | (os.O_CREAT if spec["create"] else 0), 0o600)
    try:
        offset = spec["offset"]
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            os.pwrite(fd, chunk, offset)
            offset += len(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return {"written": spec["size"]}


def _r_write(spec):
    fd = os.open(spec["path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(spec["text"])
    return {"written": len(spec["text"])}


def _r_fat(spec):
    """Put seeded files into a fresh FAT32 filesystem image, without mounting it.

    Clusters are taken in order from the first free one; every FAT copy and the FSInfo
    free count (which fsck.fat checks) are updated. Names must be 8.3 and upper case.
    """
    t = time.gmtime(spec["epoch"])
    dos_date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    dos_time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    path = spec["path"]
    with open(path, "r+b") as f:
        boot = f.read(512)
        bps, spc, reserved, nfats = struct.unpack_from("<HBHB", boot, 11)
        fatsz16 = struct.unpack_from("<H", boot, 22)[0]
        total, fatsz, _flags, _ver, root, fsinfo, backup = struct.unpack_from("<IIHHIHH", boot,
                                                                              32)
        if boot[510:512] != b"\x55\xaa" or fatsz16 or not fatsz or boot[82:90] != b"FAT32   ":
            raise SystemExit(f"{path}: not a FAT32 filesystem")
        data_start = reserved + nfats * fatsz
        last = (total - data_start) // spc + 1
        csize = bps * spc
        f.seek(reserved * bps)
        fat = bytearray(f.read(fatsz * bps))
        state = {"next": 2, "taken": 0}

        def get(n):
            return struct.unpack_from("<I", fat, 4 * n)[0] & 0x0FFFFFFF

        def alloc(count):
            out = []
            n = state["next"]
            while len(out) < count:
                if n > last:
                    raise SystemExit(f"{path}: no free cluster left")
                if get(n) == 0:
                    out.append(n)
                n += 1
            state["next"] = n
            state["taken"] += count
            for a, b in zip(out, out[1:] + [0x0FFFFFFF], strict=True):
                struct.pack_into("<I", fat, 4 * a, b)
            return out

        def where(cluster):
            return (data_start + (cluster - 2) * spc) * bps

        def short_name(name):
            base, _, ext = name.partition(".")
            allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-~!#$%&'()@^{}")
            if not (0 < len(base) <= 8 and len(ext) <= 3 and set(base + ext) <= allowed):
                raise SystemExit(f"{name!r} is not an upper-case 8.3 name")
            return (base.ljust(8) + ext.ljust(3)).encode("ascii")

        def entry(name, attr, cluster, size):
            return struct.pack("<11sBBBHHHHHHHI", name, attr, 0, 0, dos_time, dos_date, dos_date,
                               cluster >> 16, dos_time, dos_date, cluster & 0xFFFF, size)

        def add(directory, raw):
            cluster = directory
            while cluster < 0x0FFFFFF8:
                f.seek(where(cluster))
                block = f.read(csize)
                for i in range(0, csize, 32):
                    if block[i] in (0, 0xE5):
                        f.seek(where(cluster) + i)
                        f.write(raw)
                        return
                cluster = get(cluster)
            raise SystemExit(f"{path}: directory at cluster {directory} is full")

        dirs = {"": root}
        for rel, size in spec["files"]:
            names = rel.split("/")
            parent, walked = root, ""
            for name in names[:-1]:
                walked += "/" + name
                if walked not in dirs:
                    (cluster,) = alloc(1)
                    f.seek(where(cluster))
                    f.write(entry(b".          ", 0x10, cluster, 0)
                            + entry(b"..         ", 0x10, 0 if parent == root else parent, 0)
                            + bytes(csize - 64))
                    add(parent, entry(short_name(name), 0x10, cluster, 0))
                    dirs[walked] = cluster
                parent = dirs[walked]
            data = _r_bytes(spec["seed"], rel, size)
            chain = alloc(-(-size // csize)) if size else []
            for i, cluster in enumerate(chain):
                f.seek(where(cluster))
                f.write(data[i * csize:(i + 1) * csize])
            add(parent, entry(short_name(names[-1]), 0x20, chain[0] if chain else 0, size))
        for i in range(nfats):
            f.seek((reserved + i * fatsz) * bps)
            f.write(fat)
        for sector in (fsinfo, backup + fsinfo) if backup else (fsinfo,):
            f.seek(sector * bps)
            info = f.read(512)
            if info[:4] != b"RRaA" or info[484:488] != b"rrAa":
                raise SystemExit(f"{path}: no FSInfo sector at {sector}")
            free = struct.unpack_from("<I", info, 488)[0]
            f.seek(sector * bps + 488)
            f.write(struct.pack("<II", free - state["taken"], state["next"]))
    return {"clusters": state["taken"]}


_REMOTE_FUNCTIONS = (_r_main, _r_bytes, _r_owner, _r_mode, _r_put, _r_dir, _r_acl, _r_stage,
                     _r_rich, _r_finish, _r_mutate, _r_fill, _r_write, _r_fat)

__all__ = [
    "BuiltImage", "BuiltPartition", "BuiltVolume", "DomainRecipe", "Extent", "FstabLine",
    "GuestRecipe", "MutationSummary", "PartitionRecipe", "TreeSummary", "VolumeExtent",
    "VolumeGroupRecipe", "VolumeRecipe", "build_disk_image", "build_domain_images",
    "container_extent", "guest_device", "image_name", "load_domain", "load_recipe", "mutate",
    "parse_domain", "parse_recipe", "parse_size", "partition_type", "plan_layout",
    "plan_volumes", "remote_program", "render_fstab", "render_vg_metadata", "sfdisk_script",
    "stage_tree",
]
