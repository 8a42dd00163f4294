"""Which restore points to keep: the keep-last, keep-daily, keep-weekly scheme.

The points are taken newest first (equal times: the greater name first), and the rules
run in this order, each over the points no earlier rule kept:

- keep_last N: the N newest points are kept.
- keep_daily N: the newest point of each UTC calendar day is kept, for the N newest days
  that have one. A day that already holds a point an earlier rule kept is covered: it is
  skipped and does not count towards N.
- keep_weekly N: the same with ISO weeks (ISO year and week number, in UTC), so the days
  around New Year fall in the week ISO gives them, not in a calendar year's.

Every point no rule kept is removed. A policy with every count 0 means restore points are
off, and then nothing is ever removed: ``select`` keeps every point.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from .owned import RUN_ID


@dataclass(frozen=True)
class Retention:
    """How many restore points each rule keeps; all 0 (the default) keeps every point."""

    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0:
                raise ValueError(f"retention {f.name} = {value}: must be 0 or more")

    @property
    def enabled(self) -> bool:
        """Whether any rule keeps points, so that the others may be removed."""
        return self.keep_last > 0 or self.keep_daily > 0 or self.keep_weekly > 0


@dataclass(frozen=True)
class PointTime:
    """One restore point: its name and when it was taken (timezone-aware; bucketed in UTC)."""

    name: str
    taken: datetime

    def __post_init__(self) -> None:
        if self.taken.utcoffset() is None:
            raise ValueError(f"restore point {self.name!r}: time {self.taken.isoformat()} "
                             "has no timezone (UTC is wanted)")


def _day(taken: datetime) -> Hashable:
    return taken.astimezone(UTC).date()


def _iso_week(taken: datetime) -> Hashable:
    iso = taken.astimezone(UTC).isocalendar()
    return (iso.year, iso.week)


def _newest_per_period(ordered: Sequence[PointTime], kept: set[str], count: int,
                       period: Callable[[datetime], Hashable]) -> set[str]:
    """The names of the newest not-yet-kept point of each of the ``count`` newest periods
    that no kept point covers; ``ordered`` is newest first."""
    covered = {period(p.taken) for p in ordered if p.name in kept}
    chosen: set[str] = set()
    for point in ordered:
        if len(chosen) == count:
            break
        if point.name in kept:
            continue
        key = period(point.taken)
        if key not in covered:
            covered.add(key)
            chosen.add(point.name)
    return chosen


def select(points: Sequence[PointTime],
           policy: Retention) -> tuple[list[PointTime], list[PointTime]]:
    """(keep, remove) under ``policy``, each newest first; every point is in exactly one.
    Everything is kept when no rule is enabled. ValueError if two points share a name."""
    twice = sorted(name for name, n in Counter(p.name for p in points).items() if n > 1)
    if twice:
        raise ValueError(f"restore point names given more than once: {', '.join(twice)}")
    ordered = sorted(points, key=lambda p: (p.taken, p.name), reverse=True)
    if not policy.enabled:
        return ordered, []
    kept = {p.name for p in ordered[:policy.keep_last]}
    kept |= _newest_per_period(ordered, kept, policy.keep_daily, _day)
    kept |= _newest_per_period(ordered, kept, policy.keep_weekly, _iso_week)
    return ([p for p in ordered if p.name in kept], [p for p in ordered if p.name not in kept])


def run_id_time(run_id: str) -> datetime:
    """The UTC time a run id (``YYYYMMDDTHHMMSSZ-xxxx``, as new_run_id makes it) names;
    ValueError for anything else, including a date that does not exist."""
    if not re.fullmatch(RUN_ID, run_id):
        raise ValueError(f"{run_id!r} is not a run id such as 20261205T101010Z-ab12")
    try:
        return datetime.strptime(run_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{run_id!r} is not a run id: {run_id[:15]} is no valid time") from None
