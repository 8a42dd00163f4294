"""LVM facts: `lvs` and `vgs` JSON reports in bytes, and device-mapper names."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ParseError
from ..runners import CommandResult

# Run every LVM report under this environment: a locale with a decimal comma
# turns "12.50" into "12,50" (the parsers refuse that rather than misread it).
LVM_ENV = {"LC_ALL": "C"}

LVS_FIELDS = (
    "vg_name", "lv_name", "lv_path", "lv_dm_path", "lv_size", "lv_attr", "origin", "pool_lv",
    "snap_percent", "lv_tags", "lv_snapshot_invalid",
)
POOL_FIELDS = ("vg_name", "lv_name", "lv_attr", "data_percent", "metadata_percent")
VGS_FIELDS = ("vg_name", "vg_size", "vg_free", "vg_extent_size")

_REPORT_OPTS = ("--reportformat", "json", "--units", "b", "--nosuffix", "--binary")
_INT = re.compile(r"[0-9]+")
_PERCENT = re.compile(r"[0-9]+(\.[0-9]+)?")
_VG_NOT_FOUND = re.compile(r'Volume group "[^"\n]*" not found')


@dataclass(frozen=True)
class LogicalVolume:
    """One row of `lvs`."""

    vg: str
    name: str
    path: str
    size_bytes: int
    attr: str
    origin: str
    pool: str
    snap_percent: float | None
    tags: tuple[str, ...]
    dm_path: str
    # lv_snapshot_invalid: True/False, or None when lvs could not tell.
    snap_invalid_field: bool | None = None

    @property
    def is_snapshot(self) -> bool:
        """A (possibly merging) snapshot: lv_attr type "s" or "S"."""
        return self.attr[0] in "sS"

    @property
    def is_thin(self) -> bool:
        """A thin volume (attr "V"), a thin snapshot among them: ``pool`` is its thin pool.
        (A cache or VDO LV has a pool too, of another kind.)"""
        return self.attr[0] == "V"

    @property
    def is_active(self) -> bool:
        """Active in the kernel (attr state "a"); ParseError when lvs could not tell ("X")."""
        if self.attr[4] == "X":
            raise ParseError(f"lvs: activation state of {self.vg}/{self.name} is unknown "
                             f"(attr {self.attr!r})")
        return self.attr[4] == "a"

    @property
    def is_open(self) -> bool:
        """Held open by someone (attr "o"); ParseError when lvs could not tell ("X")."""
        if self.attr[5] == "X":
            raise ParseError(f"lvs: open state of {self.vg}/{self.name} is unknown "
                             f"(attr {self.attr!r})")
        return self.attr[5] == "o"

    @property
    def snapshot_invalid(self) -> bool:
        """An overflowed or otherwise invalid snapshot; ParseError when that is unknown."""
        if self.attr[4] in "IS" or self.snap_invalid_field is True:
            return True
        if self.is_snapshot and (self.attr[4] == "X" or self.snap_invalid_field is None):
            raise ParseError(f"lvs: validity of snapshot {self.vg}/{self.name} is unknown "
                             f"(attr {self.attr!r})")
        return False

    @property
    def full_name(self) -> str:
        """"vg/lv", as LVM commands take it."""
        return f"{self.vg}/{self.name}"


@dataclass(frozen=True)
class VolumeGroup:
    """One row of `vgs`."""

    name: str
    size_bytes: int
    free_bytes: int
    extent_size: int


@dataclass(frozen=True)
class ThinPool:
    """One thin pool, as `lvs` reports it: how full its data and its metadata are."""

    vg: str
    name: str
    data_percent: float
    metadata_percent: float

    @property
    def full_name(self) -> str:
        """"vg/pool", as LVM commands take it."""
        return f"{self.vg}/{self.name}"


def _check_names(names: tuple[str, ...]) -> None:
    for name in names:
        if not isinstance(name, str) or not name or "\0" in name or "\n" in name:
            raise ValueError(f"bad LVM name {name!r}")


def lvs_argv(*names: str) -> list[str]:
    """`lvs` JSON report of the named LVs ("vg/lv" or "/dev/vg/lv"), or of all LVs."""
    _check_names(names)
    return ["lvs", *_REPORT_OPTS, "-o", ",".join(LVS_FIELDS), "--", *names]


def pools_argv(*names: str) -> list[str]:
    """`lvs` JSON report of the named thin pools' fill ("vg/pool")."""
    _check_names(names)
    return ["lvs", *_REPORT_OPTS, "-o", ",".join(POOL_FIELDS), "--", *names]


def vgs_argv(*names: str) -> list[str]:
    """`vgs` JSON report of the named VGs, or of all VGs."""
    _check_names(names)
    return ["vgs", *_REPORT_OPTS, "-o", ",".join(VGS_FIELDS), "--", *names]


def dm_name(vg: str, lv: str) -> str:
    """The device-mapper name of vg/lv: each "-" doubled, the two joined by "-"."""
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def lv_missing(result: CommandResult) -> bool:
    """Whether `lvs` failed because a named LV or VG does not exist."""
    if result.exit_code == 0:
        return False
    err = result.stderr
    return "Failed to find logical volume" in err or bool(_VG_NOT_FOUND.search(err))


def _rows(text: str, kind: str, tool: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise ParseError(f"{tool}: output is not JSON ({exc}): {str(text)[:200]!r}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("report"), list):
        raise ParseError(f"{tool}: JSON has no 'report' list")
    found = False
    rows: list[dict[str, Any]] = []
    for part in doc["report"]:
        if not isinstance(part, dict):
            raise ParseError(f"{tool}: a report entry is not an object")
        if kind in part:
            found = True
            if not isinstance(part[kind], list):
                raise ParseError(f"{tool}: report[{kind!r}] is not a list")
            rows.extend(part[kind])
    if not found:
        raise ParseError(f"{tool}: report has no {kind!r} section")
    for row in rows:
        if not isinstance(row, dict):
            raise ParseError(f"{tool}: a {kind} row is not an object")
    return rows


def _field(row: dict[str, Any], key: str, tool: str, *, required: bool = True) -> str:
    if key not in row:
        if required:
            raise ParseError(f"{tool}: row lacks field {key!r}: {row!r}")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise ParseError(f"{tool}: field {key!r} is not a string: {value!r}")
    return value


def _number_error(tool: str, key: str, value: str) -> ParseError:
    hint = ""
    if "," in value:
        hint = " (a decimal comma: the command ran without LC_ALL=C)"
    elif value and value[-1:].isalpha():
        hint = " (a unit suffix: the command ran without --units b --nosuffix)"
    return ParseError(f"{tool}: field {key!r} is not a plain number: {value!r}{hint}")


def _int(row: dict[str, Any], key: str, tool: str) -> int:
    value = _field(row, key, tool)
    if not _INT.fullmatch(value):
        raise _number_error(tool, key, value)
    return int(value)


def _percent(row: dict[str, Any], key: str, tool: str) -> float | None:
    value = _field(row, key, tool)
    if value == "":
        return None
    if not _PERCENT.fullmatch(value):
        raise _number_error(tool, key, value)
    return float(value)


def _tristate(value: str, tool: str) -> bool | None:
    # --binary prints 1/0/-1; without it lvs prints the field name or "unknown".
    if value in ("1", "snapshot invalid"):
        return True
    if value in ("0", ""):
        return False
    if value in ("-1", "unknown"):
        return None
    raise ParseError(f"{tool}: lv_snapshot_invalid has an unknown value {value!r}")


def parse_lvs(text: str) -> list[LogicalVolume]:
    """Logical volumes from `lvs --reportformat json --units b --nosuffix` (see lvs_argv)."""
    tool = "lvs"
    out: list[LogicalVolume] = []
    for row in _rows(text, "lv", tool):
        vg = _field(row, "vg_name", tool)
        name = _field(row, "lv_name", tool)
        if not vg or not name:
            raise ParseError(f"{tool}: row with an empty VG or LV name: {row!r}")
        attr = _field(row, "lv_attr", tool)
        if len(attr) != 10:
            raise ParseError(f"{tool}: lv_attr of {vg}/{name} is not 10 characters: {attr!r}")
        tags = _field(row, "lv_tags", tool)
        invalid = None
        if "lv_snapshot_invalid" in row:
            invalid = _tristate(_field(row, "lv_snapshot_invalid", tool), tool)
        out.append(LogicalVolume(
            vg=vg, name=name,
            path=_field(row, "lv_path", tool),
            size_bytes=_int(row, "lv_size", tool),
            attr=attr,
            origin=_field(row, "origin", tool),
            pool=_field(row, "pool_lv", tool),
            snap_percent=_percent(row, "snap_percent", tool),
            tags=tuple(tags.split(",")) if tags else (),
            dm_path=_field(row, "lv_dm_path", tool),
            snap_invalid_field=invalid,
        ))
    return out


def parse_vgs(text: str) -> list[VolumeGroup]:
    """Volume groups from `vgs --reportformat json --units b --nosuffix` (see vgs_argv)."""
    tool = "vgs"
    out: list[VolumeGroup] = []
    for row in _rows(text, "vg", tool):
        name = _field(row, "vg_name", tool)
        if not name:
            raise ParseError(f"{tool}: row with an empty VG name: {row!r}")
        out.append(VolumeGroup(
            name=name,
            size_bytes=_int(row, "vg_size", tool),
            free_bytes=_int(row, "vg_free", tool),
            extent_size=_int(row, "vg_extent_size", tool),
        ))
    return out


def parse_pools(text: str) -> list[ThinPool]:
    """Thin pools from ``pools_argv``'s report. A row that is no thin pool (lv_attr type
    "t"), or whose fill LVM could not read, is a ParseError: a pool's fill is never
    guessed."""
    tool = "lvs"
    out: list[ThinPool] = []
    for row in _rows(text, "lv", tool):
        vg, name = _field(row, "vg_name", tool), _field(row, "lv_name", tool)
        attr = _field(row, "lv_attr", tool)
        if not vg or not name or len(attr) != 10 or attr[0] != "t":
            raise ParseError(f"{tool}: {vg}/{name} is not a thin pool (lv_attr {attr!r})")
        data = _percent(row, "data_percent", tool)
        meta = _percent(row, "metadata_percent", tool)
        if data is None or meta is None:
            raise ParseError(f"{tool}: the fill of thin pool {vg}/{name} is unknown")
        out.append(ThinPool(vg, name, data, meta))
    return out
