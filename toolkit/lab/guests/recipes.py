"""Guest recipes: the TOML a fake guest domain is described in, parsed and checked."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import tomllib
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...sizes import size_bytes
from .layout import MIB, guest_device, plan_layout, plan_volumes
from .model import (
    DomainRecipe,
    Filesystem,
    FstabLine,
    GuestRecipe,
    PartitionRecipe,
    VolumeGroupRecipe,
    VolumeRecipe,
)

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
DEFAULT_EXTENT = 4 * MIB
ESP_LOADER = ("EFI/BOOT/BOOTX64.EFI", 40000)
XFS_PENDING_DIR = "log-pending"
_PENDING_FILE = {"rich": "data/sizes/page.bin", "minimal": "README.txt"}

_NO_MOUNT = ("swap", "raw", "lvm")
_CONTENT_CHOICES = {"swap": ("empty",), "vfat": ("esp", "empty"), "raw": ("pattern", "empty"),
                    "lvm": ("empty",)}
_DEFAULT_CONTENT = {"swap": "empty", "vfat": "esp", "raw": "pattern", "lvm": "empty"}
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



# --------------------------------------------------------------------------- parsing

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
    return size_bytes(value)


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


