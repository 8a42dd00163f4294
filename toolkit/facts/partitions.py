"""Partition-table facts from `sfdisk --json`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import CommandFailed, ParseError
from ..names import check_text
from ..runners import CommandResult

# msdos partition types that hold logical partitions, never a filesystem.
CONTAINER_TYPES = frozenset({"5", "f", "85"})
# sfdisk's message for a device without any partition table (exit 1, LC_ALL=C).
NO_TABLE_MESSAGE = "does not contain a recognized partition table"

_DOS_TYPE = re.compile(r"[0-9a-f]{1,2}")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_DOS_ID = re.compile(r"0x[0-9a-f]{8}")
_NODE_SUFFIX = re.compile(r"(?:p|-part|part)?([0-9]+)")


@dataclass(frozen=True)
class Partition:
    """One partition; start and size in sectors of the table's sector size."""

    number: int
    start: int
    size: int
    type: str
    uuid: str | None
    name: str | None
    bootable: bool
    is_container: bool
    attrs: str | None = None

    @property
    def end(self) -> int:
        """First sector after the partition."""
        return self.start + self.size


@dataclass(frozen=True)
class PartitionTable:
    """A disk's partition table; label None means no table (a whole-disk filesystem)."""

    label: str | None
    id: str | None
    sector_size: int
    partitions: tuple[Partition, ...]

    def partition(self, number: int) -> Partition:
        """The partition with that number; KeyError if there is none."""
        for part in self.partitions:
            if part.number == number:
                return part
        raise KeyError(f"no partition {number} in this {self.label or 'unpartitioned'} disk")

    def partuuid(self, number: int) -> str | None:
        """PARTUUID as the guest's blkid and /dev/disk/by-partuuid show it."""
        part = self.partition(number)
        if self.label == "gpt":
            return part.uuid.lower() if part.uuid else None
        if self.label == "dos":
            # libblkid: "%08x-%02x" of the disk identifier and the partition
            # number; a zero identifier gives no PARTUUID at all.
            ident = (self.id or "0x0")[2:]
            if int(ident, 16) == 0:
                return None
            return f"{ident}-{number:02x}"
        return None

    def byte_range(self, number: int) -> tuple[int, int]:
        """(offset, size) in bytes of a partition, for `blkid -O -S` or a loop device."""
        part = self.partition(number)
        return part.start * self.sector_size, part.size * self.sector_size


def sfdisk_argv(device: str) -> list[str]:
    """`sfdisk --json` of one device or image file."""
    if not device or device.startswith("-"):
        raise ValueError(f"bad device path {device!r}")
    return ["sfdisk", "--json", device]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParseError(f"sfdisk: {what} is not a non-negative integer: {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ParseError(f"sfdisk: {what} is not a string: {value!r}")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _number(node: str, device: str) -> int:
    # sfdisk names partitions like the kernel: DEVICE + N, or DEVICE + "p" + N
    # when DEVICE ends in a digit.
    if not node.startswith(device):
        raise ParseError(f"sfdisk: partition node {node!r} is not on device {device!r}")
    match = _NODE_SUFFIX.fullmatch(node[len(device):])
    if not match or int(match.group(1)) < 1:
        raise ParseError(f"sfdisk: cannot read a partition number from node {node!r}")
    return int(match.group(1))


def _partition(raw: Any, label: str, device: str) -> Partition:
    if not isinstance(raw, dict):
        raise ParseError(f"sfdisk: a partition entry is not an object: {raw!r}")
    node = _str(raw.get("node"), "partition node")
    number = _number(node, device)
    where = f"partition {number}"
    start = _int(raw.get("start"), f"{where} start")
    size = _int(raw.get("size"), f"{where} size")
    ptype = _str(raw.get("type"), f"{where} type")
    uuid = _opt_str(raw.get("uuid"), f"{where} uuid")
    name = check_text(_opt_str(raw.get("name"), f"{where} name"), f"sfdisk: {where} name",
                      limit=72)  # GPT names are 36 UTF-16 units
    attrs = _opt_str(raw.get("attrs"), f"{where} attrs")
    boot = raw.get("bootable", False)
    if not isinstance(boot, bool):
        raise ParseError(f"sfdisk: {where} bootable is not a boolean: {boot!r}")
    if label == "dos":
        if not _DOS_TYPE.fullmatch(ptype):
            raise ParseError(f"sfdisk: {where} has a bad msdos type {ptype!r}")
        if ptype == "ee":
            raise ParseError(
                "sfdisk: msdos table with a GPT protective partition (type ee): a GPT disk "
                "read with the wrong sector size, or a damaged GPT")
    else:
        if not _GUID.fullmatch(ptype):
            raise ParseError(f"sfdisk: {where} has a bad GPT type GUID {ptype!r}")
        if uuid is None or not _GUID.fullmatch(uuid):
            raise ParseError(f"sfdisk: {where} has a missing or bad GPT uuid {uuid!r}")
        boot = boot or "LegacyBIOSBootable" in (attrs or "")
    return Partition(number=number, start=start, size=size, type=ptype, uuid=uuid, name=name,
                     bootable=boot, is_container=label == "dos" and ptype in CONTAINER_TYPES,
                     attrs=attrs)


def parse_sfdisk(text: str) -> PartitionTable:
    """The partition table in `sfdisk --json` output (msdos or gpt)."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise ParseError(f"sfdisk: output is not JSON ({exc}): {str(text)[:200]!r}") from None
    table = doc.get("partitiontable") if isinstance(doc, dict) else None
    if not isinstance(table, dict):
        raise ParseError("sfdisk: JSON has no 'partitiontable' object")
    label = _str(table.get("label"), "label")
    if label not in ("dos", "gpt"):
        raise ParseError(f"sfdisk: unsupported partition table type {label!r}")
    ident = _str(table.get("id"), "disk id")
    if label == "dos" and not _DOS_ID.fullmatch(ident):
        raise ParseError(f"sfdisk: bad msdos disk identifier {ident!r}")
    if label == "gpt" and not _GUID.fullmatch(ident):
        raise ParseError(f"sfdisk: bad GPT disk GUID {ident!r}")
    device = _str(table.get("device"), "device")
    if table.get("unit") != "sectors":
        raise ParseError(f"sfdisk: unit is {table.get('unit')!r}, expected 'sectors'")
    sector_size = _int(table.get("sectorsize"), "sectorsize")
    if sector_size < 512 or sector_size & (sector_size - 1):
        raise ParseError(f"sfdisk: implausible sector size {sector_size}")
    raw_parts = table.get("partitions", [])
    if not isinstance(raw_parts, list):
        raise ParseError("sfdisk: 'partitions' is not a list")
    parts = tuple(_partition(raw, label, device) for raw in raw_parts)
    numbers = [p.number for p in parts]
    if len(set(numbers)) != len(numbers):
        raise ParseError(f"sfdisk: a partition number appears twice: {numbers}")
    return PartitionTable(label=label, id=ident, sector_size=sector_size, partitions=parts)


def partition_table_from_result(result: CommandResult, sector_size: int = 512) -> PartitionTable:
    """The table from a whole `sfdisk --json` run; "no table" only when sfdisk says so."""
    if result.exit_code == 0:
        return parse_sfdisk(result.stdout)
    # sfdisk exits 1 both for "no table" and for "cannot open": only the
    # message tells them apart, so anything but that exact case is a failure.
    if (result.exit_code == 1 and not result.stdout.strip()
            and NO_TABLE_MESSAGE in result.stderr
            and "cannot open" not in result.stderr):
        return PartitionTable(label=None, id=None, sector_size=sector_size, partitions=())
    raise CommandFailed(result)
