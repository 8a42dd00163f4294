"""Restore points on the peer: their names, how they are read back, which ones go.

A restore point is a snapshot of each standby LV of a domain, taken on the peer after
a run that left the standby clean. Its LVs are named and tagged as the tool's own,
in a grammar of their own that ``recover``'s sweep never parses as a leftover:

- LV name ``domubk-rp-<run id>-<domain>-<disk>`` (the run that made the standby what
  the point holds, the domain, the guest disk target);
- LVM tags ``domubk_rp`` and ``domubk_rp_<run id>``.

Names are parsed in full, never by prefix, with the same rules for a run id, a domain
and a disk target as every other name the tool owns (``owned``), so the points of
``web`` never include those of ``web-01``. A point is valid while none of its LVs is
invalid (a classic snapshot that overflowed); it is whole when it has an LV for every
disk the domain's standby has now (a disk added later is missing from the older points,
which stay valid and are kept by the same rules). Which points are kept is
``retention``'s rule, over the points' run times; invalid ones are always removed. None
of these functions runs a command: they name, parse and choose; the run's plan holds the
commands (``plan_points``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from . import PREFIX
from .facts.lvm import LogicalVolume, lvs_argv, parse_lvs
from .names import check_lvm_pair
from .owned import DISK_TARGET, DOMAIN, RUN_ID
from .retention import PointTime, Retention, run_id_time, select
from .runners import Runner

POINT_PREFIX = f"{PREFIX}-rp"
POINT_TAG = f"{PREFIX}_rp"


def read_point_lvs(runner: Runner, timeout: float = 120) -> list[LogicalVolume]:
    """Every LV on ``runner``'s host tagged as a restore point (one ``lvs``, all domains)."""
    return parse_lvs(runner.run(lvs_argv(f"@{POINT_TAG}"), timeout=timeout).stdout)


def point_lv_name(run_id: str, domain: str, disk: str) -> str:
    """The LV name of one disk's part of a restore point."""
    name = f"{POINT_PREFIX}-{run_id}-{domain}-{disk}"
    if parse_point_lv(name, domain) != (run_id, domain, disk):
        raise ValueError(f"not a restore point name of the tool's grammar: {name!r}")
    return name


def point_tags(run_id: str) -> tuple[str, str]:
    """The LVM tags on each LV of a restore point: the kind, and the run."""
    return POINT_TAG, f"{POINT_TAG}_{run_id}"


def parse_point_lv(name: str, domain: str | None = None) -> tuple[str, str, str] | None:
    """(run id, domain, disk) of a restore point LV name; None for any other name.

    With ``domain`` given only that domain's points parse: after it only a disk target
    may follow, so ``web``'s grammar never reads ``01-xvda`` as a disk.
    """
    dom = DOMAIN if domain is None else re.escape(domain)
    m = re.fullmatch(rf"{re.escape(POINT_PREFIX)}-(?P<run>{RUN_ID})-(?P<domain>{dom})-"
                     rf"(?P<disk>{DISK_TARGET})", name)
    if m is None:
        return None
    return m.group("run"), m.group("domain"), m.group("disk")


@dataclass(frozen=True)
class PointVolume:
    """One LV of a restore point: the disk it copies and what LVM says of it."""

    disk: str
    vg: str
    lv: str
    kind: str  # "thin" (a thin snapshot) or "classic" (a copy-on-write snapshot)
    size_bytes: int
    fill_percent: float | None  # a classic snapshot's copy-on-write fill
    valid: bool
    origin: str = ""  # the LV it is a snapshot of (the standby, unless renamed since)


@dataclass(frozen=True)
class RestorePoint:
    """One restore point of a domain: the run it holds, when, and its volumes."""

    domain: str
    run_id: str
    taken: datetime
    volumes: tuple[PointVolume, ...]
    missing: tuple[str, ...] = ()  # disks of the standby the point has no LV for

    @property
    def valid(self) -> bool:
        """No volume invalid (a classic snapshot that overflowed is)."""
        return all(v.valid for v in self.volumes)

    @property
    def whole(self) -> bool:
        """An LV for every disk of the standby."""
        return not self.missing

    @property
    def kind(self) -> str:
        """thin, classic, or mixed."""
        kinds = {v.kind for v in self.volumes}
        return kinds.pop() if len(kinds) == 1 else "mixed"


def _volume(lv: LogicalVolume, disk: str) -> PointVolume:
    """A point LV as LVM reports it: a thin snapshot (in a pool) has no fill and cannot
    overflow; a classic one is valid while it is a snapshot LVM does not call invalid."""
    if lv.is_thin:
        return PointVolume(disk, lv.vg, lv.name, "thin", lv.size_bytes, None, True, lv.origin)
    valid = lv.is_snapshot and not lv.snapshot_invalid
    return PointVolume(disk, lv.vg, lv.name, "classic", lv.size_bytes, lv.snap_percent, valid,
                       lv.origin)


def points_from_lvs(lvs: Iterable[LogicalVolume], domain: str,
                    disks: Sequence[str]) -> list[RestorePoint]:
    """The restore points of ``domain`` among ``lvs`` (one ``lvs`` of the peer), newest
    first. An LV counts only when its name parses as this domain's point and it carries
    the tool's restore point tag; ``disks`` are the disk targets of the domain's standby.
    """
    by_run: dict[str, dict[str, PointVolume]] = {}
    for lv in lvs:
        parsed = parse_point_lv(lv.name, domain)
        if parsed is None or POINT_TAG not in lv.tags:
            continue
        run_id, _domain, disk = parsed
        by_run.setdefault(run_id, {})[disk] = _volume(lv, disk)
    points = [RestorePoint(domain, run_id, run_id_time(run_id),
                           tuple(vols[d] for d in sorted(vols)),
                           tuple(d for d in disks if d not in vols))
              for run_id, vols in by_run.items()]
    return sorted(points, key=lambda p: (p.taken, p.run_id), reverse=True)


def to_prune(points: Sequence[RestorePoint], policy: Retention) -> list[RestorePoint]:
    """The points ``policy`` does not keep, newest first. Points that are not valid are
    pruned first and never counted as kept; with no rule enabled nothing is pruned."""
    if not policy.enabled:
        return []
    bad = [p for p in points if not p.valid]
    good = {p.run_id: p for p in points if p.valid}
    _keep, remove = select([PointTime(p.run_id, p.taken) for p in good.values()], policy)
    return sorted(bad + [good[r.name] for r in remove], key=lambda p: (p.taken, p.run_id),
                  reverse=True)


def create_argv(point: str, standby_vg: str, standby_lv: str, run_id: str, *,
                thin: bool, size: Sequence[str] = ()) -> tuple[str, ...]:
    """``lvcreate`` of one restore point LV, read-only: a thin snapshot (no size) or a
    classic one with the size options ``size`` (``-L 2G`` or ``-l 20%ORIGIN``). Every name
    is checked before it reaches the command line: the point's in its own grammar, the
    standby's VG and LV as LVM writes them (R20)."""
    if parse_point_lv(point) is None:
        raise ValueError(f"{point!r} is no restore point LV name")
    check_lvm_pair(standby_vg, standby_lv, "the standby of a restore point")
    tags = [arg for tag in point_tags(run_id) for arg in ("--addtag", tag)]
    head = ("lvcreate", "--snapshot", "--permission", "r", "--name", point, *tags)
    if thin:
        return (*head, f"{standby_vg}/{standby_lv}")
    if not size:
        raise ValueError("a classic restore point needs a size")
    return (*head, *size, f"{standby_vg}/{standby_lv}")


def remove_argv(volume: PointVolume) -> tuple[str, ...]:
    """``lvremove`` of one restore point LV, by its full VG/LV name."""
    if parse_point_lv(volume.lv) is None:
        raise ValueError(f"{volume.vg}/{volume.lv} is no restore point LV")
    return ("lvremove", "--yes", "--", f"{volume.vg}/{volume.lv}")
