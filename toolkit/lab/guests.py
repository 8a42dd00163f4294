"""Fake guest disks built from declarative recipes, for the rehearsal lab and its tests.

A recipe (TOML, ``fixtures/guests/*.toml``) describes one guest disk: its size,
partition table and filesystems. ``build_disk_image`` turns it into a sparse
disk image file on the host behind a runner, without loop devices or
device-mapper: each filesystem is made as its own file (``mkfs.ext4 -d TREE``
from a staging tree, ``mkswap``) and copied into its partition with ``dd``.
The staging tree is created on the target host by a small self-contained
Python program passed as an argv item, so the build runs the same locally and
inside a lab container. Builds are deterministic: two builds of one recipe
give byte-identical images.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import posixpath
import random
import stat
import struct
import time
import tomllib
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ParseError, ToolkitError, UsageError
from ..runners import Runner

MIB = 1024 * 1024
SECTOR = 512
EXT_FILESYSTEMS = ("ext2", "ext3", "ext4")
BUILDABLE_FILESYSTEMS = (*EXT_FILESYSTEMS, "swap")
# Named in the schema so recipes can say them; the builder does not make them yet.
PLANNED_FILESYSTEMS = ("xfs", "vfat", "lvm")
TABLES = ("dos", "gpt", "none")
CONTENTS = ("rich", "minimal", "empty")
FSTAB_BY = ("uuid", "label", "device", "partuuid")
DEFAULT_EPOCH = 1700000000
# mke2fs caps volume labels at 16 bytes; mkswap does too.
MAX_LABEL_BYTES = 16

_DOS_TYPES = {"swap": "82"}
_GPT_TYPES = {"swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"}
_DOS_LINUX = "83"
_GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

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


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class PartitionRecipe:
    """One partition (or the whole-disk filesystem) of a guest disk recipe."""

    number: int
    size: int | None  # bytes; None: the rest of the disk
    fs: str
    uuid: str
    label: str | None
    mount: str | None  # mount point in the guest fstab; None: not in the fstab
    fstab_by: str
    options: str
    content: str
    type: str | None  # partition type override (dos hex code or gpt type GUID)
    partuuid: str | None  # gpt only; dos PARTUUIDs derive from the disk id
    name: str | None  # gpt partition name
    bootable: bool


@dataclass(frozen=True)
class GuestRecipe:
    """A guest disk: size, partition table and filesystems."""

    source: str
    name: str
    size: int
    table: str  # "dos" | "gpt" | "none"
    disk_id: str | None
    device: str  # the guest's own name for the disk, e.g. "xvda"
    seed: int
    epoch: int
    extra_fstab: tuple[str, ...]
    partitions: tuple[PartitionRecipe, ...]

    def partition(self, number: int) -> PartitionRecipe:
        """The partition with this number; KeyError if there is none."""
        for part in self.partitions:
            if part.number == number:
                return part
        raise KeyError(number)

    @property
    def root(self) -> PartitionRecipe | None:
        """The partition mounted at ``/`` (it holds /etc/fstab), if any."""
        return next((p for p in self.partitions if p.mount == "/"), None)


_TOP_KEYS = {"name", "size", "label", "disk_id", "device", "seed", "epoch", "extra_fstab",
             "partitions"}
_PART_KEYS = {"size", "fs", "uuid", "label", "mount", "fstab_by", "options", "content", "type",
              "partuuid", "name", "bootable"}


def load_recipe(path: str | os.PathLike[str]) -> GuestRecipe:
    """Read and validate a guest disk recipe; ConfigError names the file and the key."""
    source = str(path)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read recipe: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    default_name = Path(path).stem
    return parse_recipe(data, source=source, default_name=default_name)


def parse_recipe(data: dict[str, Any], *, source: str, default_name: str = "") -> GuestRecipe:
    """Validate parsed TOML into a GuestRecipe; ConfigError names ``source`` and the key."""

    def fail(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {why}")

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")

    name = _get(data, "name", str, default_name, fail)
    if not name or not _is_hostname(name):
        raise fail("name", f"{name!r} is not a valid host name")
    if "size" not in data:
        raise fail("size", "missing")
    size = _size(data["size"], "size", fail)
    table = _get(data, "label", str, "dos", fail)
    if table not in TABLES:
        raise fail("label", f"{table!r} is not one of {', '.join(TABLES)}")
    disk_id = _disk_id(data, table, fail)
    device = _get(data, "device", str, "xvda", fail)
    if not device.isascii() or not device.isalnum():
        raise fail("device", f"{device!r} must be a bare device name such as xvda")
    seed = _get(data, "seed", int, 1, fail)
    epoch = _get(data, "epoch", int, DEFAULT_EPOCH, fail)
    if epoch < 0:
        raise fail("epoch", "must not be negative")
    extra = data.get("extra_fstab", [])
    if not isinstance(extra, list) or not all(isinstance(x, str) and "\n" not in x for x in extra):
        raise fail("extra_fstab", "must be a list of single-line strings")

    raw_parts = data.get("partitions")
    if not isinstance(raw_parts, list) or not raw_parts:
        raise fail("partitions", "missing or empty (need at least one [[partitions]] table)")
    parts = tuple(_partition(raw, i, table, disk_id, fail) for i, raw in enumerate(raw_parts))
    recipe = GuestRecipe(source, name, size, table, disk_id, device, seed, epoch, tuple(extra),
                         parts)
    _check_whole(recipe, fail)
    return recipe


def _get(data: dict[str, Any], key: str, kind: type, default: Any, fail: Any,
         prefix: str = "") -> Any:
    value = data.get(key, default)
    if value is None or (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        what = {"str": "a string", "int": "an integer", "bool": "true or false"}[kind.__name__]
        raise fail(prefix + key, f"must be {what}, got {value!r}")
    return value


def _is_hostname(name: str) -> bool:
    return (name.isascii() and len(name) <= 63 and name[0].isalnum()
            and all(c.isalnum() or c == "-" for c in name))


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


def _size(value: Any, key: str, fail: Any) -> int:
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise fail(key, str(exc)) from None
    if size % MIB:
        raise fail(key, f"{value!r} is not a whole number of MiB (partitions are MiB-aligned)")
    return size


def _disk_id(data: dict[str, Any], table: str, fail: Any) -> str | None:
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


def _uuid(value: Any, key: str, fail: Any) -> str:
    if not isinstance(value, str):
        raise fail(key, f"must be a UUID string, got {value!r}")
    try:
        parsed = uuidlib.UUID(value)
    except ValueError:
        raise fail(key, f"{value!r} is not a UUID") from None
    if str(parsed) != value.lower():
        raise fail(key, f"{value!r} must be written as {parsed}")
    return str(parsed)


def _partition(raw: Any, index: int, table: str, disk_id: str | None,
               fail: Any) -> PartitionRecipe:
    key = f"partitions[{index}]"
    if not isinstance(raw, dict):
        raise fail(key, "must be a table")
    unknown = sorted(set(raw) - _PART_KEYS)
    if unknown:
        raise fail(f"{key}.{unknown[0]}", "unknown key")
    pre = key + "."
    if "fs" not in raw:
        raise fail(pre + "fs", "missing")
    fs = _get(raw, "fs", str, None, fail, pre)
    if fs in PLANNED_FILESYSTEMS:
        raise fail(pre + "fs", f"{fs!r} is not buildable yet (buildable: "
                   f"{', '.join(BUILDABLE_FILESYSTEMS)})")
    if fs not in BUILDABLE_FILESYSTEMS:
        raise fail(pre + "fs", f"{fs!r} is not one of {', '.join(BUILDABLE_FILESYSTEMS)}")
    size = _size(raw["size"], pre + "size", fail) if "size" in raw else None
    if "uuid" not in raw:
        raise fail(pre + "uuid", "missing (a fixed UUID keeps builds deterministic)")
    uuid = _uuid(raw["uuid"], pre + "uuid", fail)
    label = raw.get("label")
    if label is not None:
        if not isinstance(label, str) or not label:
            raise fail(pre + "label", f"must be a non-empty string, got {label!r}")
        if len(label.encode()) > MAX_LABEL_BYTES or any(c in label for c in " \t\n\"'\\"):
            raise fail(pre + "label", f"{label!r} must be at most {MAX_LABEL_BYTES} bytes "
                       "without blanks or quotes")
    mount = raw.get("mount")
    if fs == "swap":
        if mount not in (None, "none", "swap"):
            raise fail(pre + "mount", "a swap partition has no mount point")
        mount = None
    elif mount is not None:
        if not isinstance(mount, str) or not mount.startswith("/"):
            raise fail(pre + "mount", f"{mount!r} must be an absolute path")
        if posixpath.normpath(mount) != mount or mount.startswith("//") or any(
                c.isspace() for c in mount):
            raise fail(pre + "mount", f"{mount!r} must be a normalised path without blanks")
    fstab_by = _get(raw, "fstab_by", str, "uuid", fail, pre)
    if fstab_by not in FSTAB_BY:
        raise fail(pre + "fstab_by", f"{fstab_by!r} is not one of {', '.join(FSTAB_BY)}")
    if fstab_by == "label" and label is None:
        raise fail(pre + "fstab_by", "\"label\" needs a label")
    if fstab_by == "partuuid" and table == "none":
        raise fail(pre + "fstab_by", "a whole-disk filesystem has no PARTUUID")
    default_options = "sw" if fs == "swap" else ("errors=remount-ro" if mount == "/"
                                                 else "defaults")
    options = _get(raw, "options", str, default_options, fail, pre)
    if not options or any(c.isspace() for c in options):
        raise fail(pre + "options", f"{options!r} must be a non-empty word")
    content = _get(raw, "content", str, "empty" if fs == "swap" else "rich", fail, pre)
    if content not in CONTENTS:
        raise fail(pre + "content", f"{content!r} is not one of {', '.join(CONTENTS)}")
    if fs == "swap" and content != "empty":
        raise fail(pre + "content", "a swap partition holds no files")
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
        partuuid = f"{disk_id[2:]}-{index + 1:02x}" if disk_id else None
    pname = raw.get("name")
    if pname is not None and (table != "gpt" or not isinstance(pname, str)
                              or any(c in pname for c in "\"\n,")):
        raise fail(pre + "name", "only gpt partitions have a name (a string without quotes)")
    bootable = _get(raw, "bootable", bool, False, fail, pre)
    if bootable and table != "dos":
        raise fail(pre + "bootable", "only dos partitions carry a bootable flag")
    return PartitionRecipe(index + 1, size, fs, uuid, label, mount, fstab_by, options, content,
                           ptype, partuuid, pname, bootable)


def _valid_uuid(text: str) -> bool:
    try:
        uuidlib.UUID(text)
    except ValueError:
        return False
    return True


def _check_whole(recipe: GuestRecipe, fail: Any) -> None:
    parts = recipe.partitions
    if recipe.table == "none":
        if len(parts) != 1:
            raise fail("partitions", "a whole-disk filesystem (label = \"none\") has exactly one")
        if parts[0].size not in (None, recipe.size):
            raise fail("partitions[0].size", "a whole-disk filesystem spans the whole disk")
    if recipe.table == "dos" and len(parts) > 4:
        raise fail("partitions", "more than 4 dos partitions needs extended/logical partitions, "
                   "which the builder does not make yet")
    for i, part in enumerate(parts[:-1]):
        if part.size is None and recipe.table != "none":
            raise fail(f"partitions[{i}].size", "only the last partition may take the rest")
    seen: dict[tuple[str, str], int] = {}
    for i, part in enumerate(parts):
        for kind, value in (("uuid", part.uuid), ("label", part.label), ("mount", part.mount),
                            ("partuuid", part.partuuid if recipe.table == "gpt" else None)):
            if value is None:
                continue
            if (kind, value) in seen:
                raise fail(f"partitions[{i}].{kind}",
                           f"{value!r} is already used by partitions[{seen[(kind, value)]}]")
            seen[(kind, value)] = i
    try:
        plan_layout(recipe)
    except ValueError as exc:
        raise fail("size", str(exc)) from None


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Extent:
    """Where one partition lives in the image, in bytes."""

    number: int
    start: int
    size: int


def plan_layout(recipe: GuestRecipe) -> tuple[Extent, ...]:
    """Partition extents: MiB-aligned from 1 MiB on; the last may take the rest of the disk."""
    if recipe.table == "none":
        return (Extent(1, 0, recipe.size),)
    # gpt keeps its backup header in the last 33 sectors; leave that whole MiB free.
    end = recipe.size - (MIB if recipe.table == "gpt" else 0)
    offset = MIB
    out = []
    for part in recipe.partitions:
        size = part.size if part.size is not None else end - offset
        if size <= 0 or offset + size > end:
            raise ValueError(f"the partitions need more than the {recipe.size // MIB} MiB disk "
                             f"(partition {part.number} would end at "
                             f"{(offset + max(size, 0)) // MIB} MiB of {end // MIB} usable)")
        out.append(Extent(part.number, offset, size))
        offset += size
    return tuple(out)


def guest_device(recipe: GuestRecipe, number: int) -> str:
    """The guest's own device name for a partition, e.g. ``/dev/xvda2``."""
    if recipe.table == "none":
        return f"/dev/{recipe.device}"
    sep = "p" if recipe.device[-1].isdigit() else ""
    return f"/dev/{recipe.device}{sep}{number}"


def render_fstab(recipe: GuestRecipe) -> str:
    """The guest's /etc/fstab, naming each filesystem as its recipe says."""
    lines = [f"# /etc/fstab of {recipe.name}: static file system information.",
             "# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>"]
    for part in recipe.partitions:
        if part.fs != "swap" and part.mount is None:
            continue
        spec = {
            "uuid": f"UUID={part.uuid}",
            "label": f"LABEL={part.label}",
            "device": guest_device(recipe, part.number),
            "partuuid": f"PARTUUID={part.partuuid}",
        }[part.fstab_by]
        if part.fs == "swap":
            lines.append(f"{spec}\tnone\tswap\t{part.options}\t0\t0")
        else:
            passno = 1 if part.mount == "/" else 2
            lines.append(f"{spec}\t{part.mount}\t{part.fs}\t{part.options}\t0\t{passno}")
    lines.extend(recipe.extra_fstab)
    return "\n".join(lines) + "\n"


def sfdisk_script(recipe: GuestRecipe) -> str:
    """The sfdisk input that writes the recipe's partition table."""
    lines = [f"label: {recipe.table}", f"label-id: {recipe.disk_id}", "unit: sectors"]
    if recipe.table == "gpt":
        lines.append(f"first-lba: {MIB // SECTOR}")
    lines.append("")
    for part, ext in zip(recipe.partitions, plan_layout(recipe), strict=True):
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
    """One filesystem as built into the image."""

    number: int
    start: int
    size: int
    fs: str
    uuid: str
    label: str | None
    mount: str | None
    partuuid: str | None
    device: str  # the guest's name for it, e.g. /dev/xvda1
    content: str  # what was built: "empty" for every filesystem of a standby
    tree: TreeSummary | None


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

    ``standby=True`` builds the peer's copy: same table, UUIDs and labels, empty filesystems.
    ``workdir`` must hold user xattrs and POSIX ACLs: ext4, xfs, overlayfs (tmpfs only from
    Linux 6.6 on). Inside the lab, dd the image into an LV without ``conv=sparse``, so the
    image's holes overwrite what the LV held before.
    """
    _check_abs(out_path, "out_path")
    _check_abs(workdir, "workdir")
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
        _verify_table(runner, recipe, out_path)
    built = []
    for part, ext in zip(recipe.partitions, layout, strict=True):
        content = "empty" if standby else part.content
        fs_file = posixpath.join(workdir, f"{recipe.name}-p{part.number}.fs")
        try:
            tree = _make_filesystem(runner, recipe, part, ext, fs_file, workdir, content, scale,
                                    fstab, python)
            runner.run(["dd", f"if={fs_file}", f"of={out_path}", "bs=1M", f"seek={ext.start}",
                        "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"],
                       timeout=_timeout(scale))
        finally:
            runner.run(["rm", "-f", "--", fs_file], check=False)
        built.append(BuiltPartition(part.number, ext.start, ext.size, part.fs, part.uuid,
                                    part.label, part.mount, part.partuuid,
                                    guest_device(recipe, part.number), content, tree))
    return BuiltImage(out_path, recipe.name, recipe.size, recipe.table, recipe.disk_id,
                      tuple(built), fstab if not standby else None, standby, scale,
                      time.monotonic() - started)


def stage_tree(
    runner: Runner,
    recipe: GuestRecipe,
    number: int,
    dest: str,
    *,
    scale: int = 1,
    python: str = "python3",
    debugfs_cmds: str | None = None,
) -> tuple[TreeSummary, tuple[tuple[str, str], ...]]:
    """Create partition ``number``'s file tree under ``dest`` (which must not exist).

    Returns the tree's summary and the (relative path, capability) pairs still to be set
    with setcap. ``debugfs_cmds``, if given, receives debugfs commands that pin every
    inode's ctime to the recipe's epoch.
    """
    _check_abs(dest, "dest")
    part = recipe.partition(number)
    spec = {
        "op": "stage",
        "root": dest,
        "content": part.content,
        "seed": f"{recipe.seed}:{part.number}",
        "scale": scale,
        "epoch": recipe.epoch,
        "etc": _etc_files(recipe) if part.mount == "/" and part.content != "empty" else {},
        "mountpoints": _mountpoints(recipe, part),
        "debugfs_cmds": debugfs_cmds,
    }
    out = _run_program(runner, spec, python, timeout=_timeout(scale))
    summary = TreeSummary(**out["summary"])
    caps = tuple((str(rel), str(cap)) for rel, cap in out["capabilities"])
    return summary, caps


def _make_filesystem(runner: Runner, recipe: GuestRecipe, part: PartitionRecipe, ext: Extent,
                     fs_file: str, workdir: str, content: str, scale: int, fstab: str | None,
                     python: str) -> TreeSummary | None:
    runner.run(["rm", "-f", "--", fs_file])
    runner.run(["truncate", "-s", str(ext.size), "--", fs_file])
    if part.fs == "swap":
        argv = ["mkswap", "-U", part.uuid]
        if part.label:
            argv += ["-L", part.label]
        runner.run([*argv, "--", fs_file])
        return None
    # E2FSPROGS_FAKE_TIME pins the superblock and lost+found times, so builds are identical.
    env = {"E2FSPROGS_FAKE_TIME": str(recipe.epoch), "E2FSPROGS_SKIP_PROGRESS": "1"}
    argv = [f"mkfs.{part.fs}", "-F", "-q", "-U", part.uuid,
            "-E", f"root_owner=0:0,hash_seed={part.uuid}"]
    if part.label:
        argv += ["-L", part.label]
    if content == "empty":
        runner.run([*argv, fs_file], env=env)
        return None
    tree = posixpath.join(workdir, f"{recipe.name}-p{part.number}.tree")
    cmds = posixpath.join(workdir, f"{recipe.name}-p{part.number}.debugfs")
    runner.run(["rm", "-rf", "--one-file-system", "--", tree])
    try:
        staged = _stage_for_build(runner, recipe, part, tree, cmds, scale, python)
        _check_fits(recipe, part, ext, staged, scale)
        if staged.entries + 64 > ext.size // _inode_ratio(ext.size):
            argv += ["-N", str(staged.entries + 1024)]
        runner.run([*argv, "-d", tree, fs_file], env=env, timeout=_timeout(scale))
        # populate copies each inode's ctime from the staging tree, where it is "now";
        # pin them so two builds give identical bytes.
        result = runner.run(["debugfs", "-w", "-f", cmds, fs_file], env=env,
                            timeout=_timeout(scale))
        errors = [ln for ln in result.stderr.splitlines() if ln and not ln.startswith("debugfs ")]
        if errors:
            raise ToolkitError(f"{recipe.source}: pinning inode times in partition "
                               f"{part.number} failed: {errors[0]}", host=runner.host)
    finally:
        runner.run(["rm", "-rf", "--one-file-system", "--", tree, cmds], check=False)
    return staged


def _stage_for_build(runner: Runner, recipe: GuestRecipe, part: PartitionRecipe, tree: str,
                     cmds: str, scale: int, python: str) -> TreeSummary:
    staged, caps = stage_tree(runner, recipe, part.number, tree, scale=scale, python=python,
                              debugfs_cmds=cmds)
    for rel, cap in caps:
        # After the program's chown/chmod: chown clears a file capability.
        runner.run(["setcap", cap, posixpath.join(tree, rel)])
    return staged


def _inode_ratio(size: int) -> int:
    # mke2fs.conf: "small" filesystems (< 512 MiB) get one inode per 4 KiB, others per 16 KiB.
    return 4096 if size < 512 * MIB else 16384


def _check_fits(recipe: GuestRecipe, part: PartitionRecipe, ext: Extent, tree: TreeSummary,
                scale: int) -> None:
    # Metadata (inode tables, journal, directories) needs room beside the data.
    need = tree.allocated_bytes + tree.entries * 256 + ext.size // 10 + 4 * MIB
    if need > ext.size:
        raise ConfigError(f"{recipe.source}: partitions[{part.number - 1}].size: the "
                          f"{part.content} tree at scale {scale} needs about {need // MIB} MiB, "
                          f"more than the {ext.size // MIB} MiB partition")


def _etc_files(recipe: GuestRecipe) -> dict[str, str]:
    return {"fstab": render_fstab(recipe), "hostname": recipe.name + "\n",
            "os-release": _OS_RELEASE}


def _mountpoints(recipe: GuestRecipe, part: PartitionRecipe) -> list[str]:
    """Directories in this filesystem on which the guest mounts its other filesystems."""
    if part.mount is None or part.content == "empty":
        return []
    mounts = [p.mount for p in recipe.partitions if p.mount is not None]
    out = []
    for other in mounts:
        if other == part.mount or not _under(other, part.mount):
            continue
        # Only the nearest enclosing filesystem holds the mount point.
        parents = [m for m in mounts if m != other and _under(other, m)]
        if max(parents, key=len) == part.mount:
            out.append(posixpath.relpath(other, part.mount))
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
    want = [(e.start // SECTOR, e.size // SECTOR) for e in plan_layout(recipe)]
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
                 timeout: float) -> dict[str, Any]:
    result = runner.run([python, "-c", remote_program(), json.dumps(spec)], timeout=timeout)
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
    parts = ["import json, os, random, stat, struct, sys"]
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
    raise SystemExit(f"unknown op {spec['op']!r}")


def _r_bytes(seed, rel, size):
    return random.Random(f"{seed}:{rel}").randbytes(size)


def _r_put(root, rel, data, mode=0o644, uid=0, gid=0):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    # chown before chmod: chown clears setuid and setgid bits.
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _r_dir(root, rel, mode=0o755, uid=0, gid=0):
    path = os.path.join(root, rel)
    os.makedirs(path, mode=0o755, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
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
        _r_dir(root, rel)
    summary = _r_finish(root, spec["epoch"], spec["debugfs_cmds"])
    return {"summary": summary, "capabilities": caps}


def _r_rich(root, seed, scale):
    rng = random.Random(f"tree:{seed}")
    mib = 1024 * 1024
    for name, size in (("empty.bin", 0), ("one.bin", 1), ("page.bin", 4096),
                       ("page-plus-one.bin", 4097), ("mebi.bin", mib)):
        _r_put(root, "data/sizes/" + name, _r_bytes(seed, name, size))
    # scale 1: 500 small files and 3 of several MiB; scale 40: 20000 small, about 330 MiB.
    for i in range(1 + 2 * scale):
        rel = f"data/big/big-{i:04d}.bin"
        _r_put(root, rel, _r_bytes(seed, rel, rng.randint(2, 6) * mib + rng.randint(0, 4095)))
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
    # A sparse file: 64 MiB apparent, three 4 KiB extents of data.
    sparse = _r_put(root, "data/sparse.img", b"")
    with open(sparse, "r+b") as f:
        f.truncate(64 * mib)
        for off in (0, 20 * mib, 64 * mib - 4096):
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
    os.lchown(os.path.join(root, "links/rel-page"), 4242, 4242)
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
        os.lchown(path, uid, gid)
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


_REMOTE_FUNCTIONS = (_r_main, _r_bytes, _r_put, _r_dir, _r_acl, _r_stage, _r_rich, _r_finish,
                     _r_mutate)

__all__ = [
    "BuiltImage", "BuiltPartition", "Extent", "GuestRecipe", "MutationSummary",
    "PartitionRecipe", "TreeSummary", "build_disk_image", "guest_device", "load_recipe",
    "mutate", "parse_recipe", "parse_size", "partition_type", "plan_layout", "remote_program",
    "render_fstab", "sfdisk_script", "stage_tree",
]
