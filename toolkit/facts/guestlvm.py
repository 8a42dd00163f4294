"""LVM inside a guest disk: the guest VG's metadata, read from the PV's own bytes.

A guest partition can be an LVM physical volume whose volume group has the
same name as one of the host's (every installer calls it ``vg0`` or the
host's name). The host's LVM must never see it: activating it there would
collide with, or be mistaken for, the host's VG (R6). So the tool never runs
an LVM command on a guest PV. Preflight reads the PV's label and current
metadata with ``dd`` (read-only, from the origin LV at the partition's
offset) and this module parses them; the plan then maps each guest LV with
``dmsetup create`` under a tool-owned, per-run name, straight from the
segment table. The guest's VG metadata on disk is never written, on either
host, so the standby keeps the guest's own VG name and UUIDs.

On-disk format (lvm2 ``format_text``): a label sector ``LABELONE`` in one
of the first four sectors, followed by the PV header (PV UUID, device size,
the data area list whose first offset is ``pe_start``, the metadata area
list); each metadata area starts with a 512-byte header (magic
`` LVM2 x[5A%r0N*>``) whose first location points at the current metadata
text, a ring buffer after the header. The text is LVM's config syntax.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import GuestLvmUnreadable
from ..names import check_lvm_name, check_lvm_pair

SECTOR = 512
LABEL_SCAN_SECTORS = 4
LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
MDA_HEADER_SIZE = 512
# What preflight reads first: the label sectors plus room for the PV header.
HEAD_BYTES = 8 * SECTOR
# A metadata area larger than this is not one lvm2 writes by default (1 MiB);
# refusing keeps a corrupt header from making preflight read a whole disk.
MAX_MDA_END = 64 * 1024 * 1024


# The guest PV's label or metadata cannot be read as lvm2 format_text.
GuestLvmError = GuestLvmUnreadable


@dataclass(frozen=True)
class PvHeader:
    """What a guest PV's label header says: its UUID and size, where its data starts, and
    where its first metadata area lies (bytes from the start of the PV)."""

    pv_uuid: str
    device_size: int
    pe_start: int  # bytes from the start of the PV
    mda_offset: int  # bytes from the start of the PV
    mda_size: int

    @property
    def mda_end(self) -> int:
        """Byte offset, from the start of the PV, just past the metadata area."""
        return self.mda_offset + self.mda_size


@dataclass(frozen=True)
class Segment:
    """One linear piece of a guest LV, in 512-byte sectors relative to the PV."""

    start: int  # sector within the LV
    length: int  # sectors
    pv_offset: int  # sector within the PV (pe_start included)


@dataclass(frozen=True)
class GuestVolume:
    """One guest logical volume and how to map it (or why it cannot be)."""

    vg: str
    vg_uuid: str
    name: str
    uuid: str
    segments: tuple[Segment, ...]
    skip_reason: str | None = None
    pe_start: int = 0  # sectors from the PV's start to its first extent (label and metadata)

    @property
    def sectors(self) -> int:
        """The LV's size in 512-byte sectors: its segments' lengths added up."""
        return sum(s.length for s in self.segments)

    @property
    def first_offset(self) -> int:
        """Byte offset of the LV's first sector within the PV (where its superblock is)."""
        return self.segments[0].pv_offset * SECTOR if self.segments else 0

    def dm_table(self, device: str) -> str:
        """The device-mapper table mapping this LV from ``device`` (the mapped PV).

        Segments are joined with commas, the separator of ``dmsetup create
        --concise`` (a device path never contains a comma here: the tool names
        every mapped partition itself).
        """
        if "," in device or " " in device:
            raise ValueError(f"device path {device!r} cannot go into a dm table")
        return ",".join(f"{s.start} {s.length} linear {device} {s.pv_offset}"
                        for s in self.segments)


@dataclass(frozen=True)
class GuestVG:
    """A guest volume group on one PV, as its metadata describes it: extent size in
    sectors, the PV's header, and its LVs."""

    name: str
    uuid: str
    extent_sectors: int
    pv: PvHeader
    volumes: tuple[GuestVolume, ...]


def read_argv(device: str, offset: int, length: int) -> list[str]:
    """``dd`` reading ``length`` bytes at byte ``offset`` of ``device`` (never writes)."""
    if offset % SECTOR or length % SECTOR:
        raise ValueError("offset and length must be whole sectors")
    return ["dd", f"if={device}", f"bs={SECTOR}", f"skip={offset // SECTOR}",
            f"count={length // SECTOR}", "status=none"]


def to_bytes(stdout: str) -> bytes:
    """Undo the runners' lossless decoding of command output."""
    return stdout.encode("utf-8", "surrogateescape")


def parse_pv_header(head: bytes) -> PvHeader | None:
    """The PV header from the first sectors of a PV; None when there is no LVM label."""
    for sector in range(LABEL_SCAN_SECTORS):
        at = sector * SECTOR
        block = head[at:at + SECTOR]
        if len(block) < 32 or block[:8] != LABEL_ID:
            continue
        (sector_xl,) = struct.unpack_from("<Q", block, 8)
        (offset_xl,) = struct.unpack_from("<I", block, 20)
        if block[24:32] != LABEL_TYPE:
            raise GuestLvmError(f"LVM label of type {block[24:32]!r}, not {LABEL_TYPE!r}")
        if sector_xl != sector or not 32 <= offset_xl <= SECTOR - 48:
            raise GuestLvmError(f"LVM label in sector {sector} is inconsistent "
                                f"(sector {sector_xl}, header offset {offset_xl})")
        return _pv_header(head, at + offset_xl)
    return None


def _pv_header(buf: bytes, at: int) -> PvHeader:
    try:
        uuid = buf[at:at + 32].decode("ascii")
        (size,) = struct.unpack_from("<Q", buf, at + 32)
        pos = at + 40
        lists: list[list[tuple[int, int]]] = []
        for _ in range(2):  # data areas, then metadata areas; each ends with (0, 0)
            areas: list[tuple[int, int]] = []
            while True:
                off, length = struct.unpack_from("<QQ", buf, pos)
                pos += 16
                if off == 0 and length == 0:
                    break
                areas.append((off, length))
                if len(areas) > 8:
                    raise GuestLvmError("PV header lists more than 8 areas")
            lists.append(areas)
    except (struct.error, UnicodeDecodeError) as exc:
        raise GuestLvmError(f"PV header cannot be read: {exc}") from None
    data, meta = lists
    if not data:
        raise GuestLvmError("PV header has no data area (no pe_start)")
    if not meta:
        raise GuestLvmError("PV header has no metadata area (a PV without metadata copies "
                            "cannot be mapped on its own)")
    mda_offset, mda_size = meta[0]
    if mda_size <= MDA_HEADER_SIZE or mda_offset + mda_size > MAX_MDA_END:
        raise GuestLvmError(f"metadata area at {mda_offset} of {mda_size} bytes is not "
                            "plausible")
    return PvHeader(_format_uuid(uuid), size, data[0][0], mda_offset, mda_size)


def _format_uuid(raw: str) -> str:
    """LVM prints the 32-character UUID in groups of 6-4-4-4-4-4-6."""
    if len(raw) != 32:
        return raw
    cuts = (6, 4, 4, 4, 4, 4, 6)
    parts, pos = [], 0
    for n in cuts:
        parts.append(raw[pos:pos + n])
        pos += n
    return "-".join(parts)


def metadata_text(area: bytes, pv: PvHeader) -> str:
    """The current metadata text from the bytes of the PV from 0 up to the area's end."""
    mda = area[pv.mda_offset:pv.mda_end]
    if len(mda) < pv.mda_size:
        raise GuestLvmError(f"read {len(mda)} bytes of a {pv.mda_size}-byte metadata area")
    if mda[4:20] != MDA_MAGIC:
        raise GuestLvmError("metadata area header has no lvm2 magic")
    (offset, size) = struct.unpack_from("<QQ", mda, 40)
    if size == 0:
        raise GuestLvmError("metadata area holds no metadata")
    ring = pv.mda_size - MDA_HEADER_SIZE
    if not MDA_HEADER_SIZE <= offset < pv.mda_size or size > ring:
        raise GuestLvmError(f"metadata location {offset}+{size} lies outside its area")
    first = mda[offset:offset + size]
    text = first + mda[MDA_HEADER_SIZE:MDA_HEADER_SIZE + size - len(first)]  # wrapped
    try:
        return text.rstrip(b"\0").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GuestLvmError(f"metadata text is not UTF-8: {exc}") from None


_TOKEN = re.compile(r"""
    (?P<ws>\s+) | (?P<comment>\#[^\n]*) |
    (?P<string>"(?:[^"\\]|\\.)*") |
    (?P<number>-?\d+(?:\.\d+)?) (?![\w.+-]) |
    (?P<name>[A-Za-z0-9_.+\-/]+) |
    (?P<punct>[{}\[\]=,])
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise GuestLvmError(f"metadata text: unexpected {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
    return out


def parse_lvm_text(text: str) -> dict[str, Any]:
    """LVM's config syntax: ``name { ... }`` sections and ``key = value`` settings."""
    toks = _tokens(text)
    pos = 0

    def peek() -> tuple[str, str]:
        return toks[pos] if pos < len(toks) else ("eof", "")

    def take(kind: str, value: str | None = None) -> str:
        nonlocal pos
        k, v = peek()
        if k != kind or (value is not None and v != value):
            raise GuestLvmError(f"metadata text: expected {value or kind}, found {v or k!r}")
        pos += 1
        return v

    def scalar() -> Any:
        k, v = peek()
        if k == "string":
            take("string")
            return re.sub(r"\\(.)", r"\1", v[1:-1])
        if k == "number":
            take("number")
            return float(v) if "." in v else int(v)
        raise GuestLvmError(f"metadata text: expected a value, found {v or k!r}")

    def value() -> Any:
        if peek() == ("punct", "["):
            take("punct", "[")
            items: list[Any] = []
            while peek() != ("punct", "]"):
                items.append(scalar())
                if peek() == ("punct", ","):
                    take("punct", ",")
                elif peek() != ("punct", "]"):
                    raise GuestLvmError("metadata text: expected , or ] in a list")
            take("punct", "]")
            return items
        return scalar()

    def block(closing: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            k, v = peek()
            if closing and (k, v) == ("punct", "}"):
                take("punct", "}")
                return out
            if k == "eof":
                if closing:
                    raise GuestLvmError("metadata text: a section is not closed")
                return out
            if k not in ("name", "number"):
                raise GuestLvmError(f"metadata text: expected a name, found {v!r}")
            take(k)
            if peek() == ("punct", "{"):
                take("punct", "{")
                out[v] = block(True)
            else:
                take("punct", "=")
                out[v] = value()

    return block(False)


def parse_vg(text: str, pv: PvHeader) -> GuestVG:
    """The guest VG from its metadata text; LVs that cannot be mapped carry a reason."""
    cfg = parse_lvm_text(text)
    sections = [(k, v) for k, v in cfg.items() if isinstance(v, dict)]
    if len(sections) != 1:
        raise GuestLvmError(f"metadata text holds {len(sections)} volume groups, expected 1")
    name, vg = sections[0]
    # Guest data: VG and LV names become parts of device and plan names, so only
    # LVM's own name rules are accepted, before anything is built from them (R20).
    check_lvm_name(name, "guest VG name")
    extent = _int(vg, "extent_size", name)
    if extent <= 0:
        raise GuestLvmError(f"VG {name}: extent_size {extent}")
    pvs = vg.get("physical_volumes")
    if not isinstance(pvs, dict) or not pvs:
        raise GuestLvmError(f"VG {name}: no physical_volumes")
    ours = [k for k, v in pvs.items() if isinstance(v, dict) and v.get("id") == pv.pv_uuid]
    if not ours:
        raise GuestLvmError(f"VG {name}: this PV ({pv.pv_uuid}) is not in its metadata")
    pv_key = ours[0]
    pe_start = _int(pvs[pv_key], "pe_start", f"{name}/{pv_key}")
    volumes: list[GuestVolume] = []
    lvs = vg.get("logical_volumes", {})
    if not isinstance(lvs, dict):
        raise GuestLvmError(f"VG {name}: logical_volumes is not a section")
    for lv_name, lv in lvs.items():
        if not isinstance(lv, dict):
            continue
        check_lvm_pair(name, lv_name, f"guest LV in VG {name}")
        volumes.append(_volume(name, str(vg.get("id", "")), lv_name, lv, pv_key, len(pvs),
                               pe_start, extent))
    return GuestVG(name, str(vg.get("id", "")), extent, pv, tuple(volumes))


def _volume(vg: str, vg_uuid: str, name: str, lv: Mapping[str, Any], pv_key: str, pv_count: int,
            pe_start: int, extent: int) -> GuestVolume:
    uuid = str(lv.get("id", ""))
    status = lv.get("status", [])
    if not isinstance(status, list) or "VISIBLE" not in status:
        return GuestVolume(vg, vg_uuid, name, uuid, (), "hidden LV (part of another LV)")
    count = _int(lv, "segment_count", f"{vg}/{name}")
    segments: list[Segment] = []
    for n in range(1, count + 1):
        seg = lv.get(f"segment{n}")
        if not isinstance(seg, dict):
            raise GuestLvmError(f"LV {vg}/{name}: segment{n} missing")
        kind = seg.get("type")
        if kind != "striped" or seg.get("stripe_count") != 1:
            what = kind if kind != "striped" else f"{seg.get('stripe_count')}-way striped"
            return GuestVolume(vg, vg_uuid, name, uuid, (), f"{what} LV (only linear LVs are "
                                                            "mapped)")
        stripes = seg.get("stripes")
        if not (isinstance(stripes, list) and len(stripes) == 2
                and isinstance(stripes[1], int)):
            raise GuestLvmError(f"LV {vg}/{name}: segment{n} stripes {stripes!r}")
        if stripes[0] != pv_key:
            return GuestVolume(vg, vg_uuid, name, uuid, (),
                               f"lies on another of the VG's {pv_count} PVs")
        start = _int(seg, "start_extent", f"{vg}/{name}") * extent
        length = _int(seg, "extent_count", f"{vg}/{name}") * extent
        segments.append(Segment(start, length, pe_start + stripes[1] * extent))
    segments.sort(key=lambda s: s.start)
    expected = 0
    for s in segments:
        if s.start != expected or s.length <= 0:
            raise GuestLvmError(f"LV {vg}/{name}: segments are not contiguous")
        expected += s.length
    if not segments:
        return GuestVolume(vg, vg_uuid, name, uuid, (), "LV without segments")
    return GuestVolume(vg, vg_uuid, name, uuid, tuple(segments), pe_start=pe_start)


def _int(section: Mapping[str, Any], key: str, where: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise GuestLvmError(f"{where}: {key} is {value!r}, expected a whole number")
    return value


def fs_name(partition_fs: str, vg: str, lv: str) -> str:
    """A guest LV's name in plans and mount paths: ``xvda2.vg0.root``."""
    return f"{partition_fs}.{vg}.{lv}"
