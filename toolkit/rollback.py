"""Rolling a standby back to a restore point, for ``promote --at`` (thin points).

For each disk, in the standby's VG, three journalled commands:

1. ``lvrename`` the standby LV to a restore point name of the promote's own run: what the
   standby held until now is kept (a dirty copy too: it may hold what the operator needs);
2. ``lvchange --addtag`` the point tags on it, so it is listed and pruned as a point;
3. ``lvcreate --snapshot`` of the named point, writable and active, under the standby's
   own name: the standby's path now shows the point's blocks, and the point itself is
   untouched (a thin snapshot of a thin snapshot), so it can be promoted to again.

Each undo puts back what its command changed, and its exists-probe finds exactly that
(the new standby only while it is a snapshot of that point), so ``recover`` undoes a
promote killed half-way without touching anything else. Classic points are refused:
rolling a classic standby back merges the point into it, which cannot be undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import PromoteRefused, UnsafeName
from .facts.lvm import LogicalVolume
from .names import check_lvm_pair
from .restore_points import (
    POINT_TAG,
    RestorePoint,
    parse_point_lv,
    point_lv_name,
    point_tags,
)

KEEP, TAG, ROLLBACK = "promote-keep", "promote-tag", "promote-rollback"
ROLLBACK_ACTIONS = frozenset({KEEP, TAG, ROLLBACK})


@dataclass(frozen=True)
class RollbackStep:
    """One journalled command of a rollback: what it makes, its undo and exists-probe."""

    action: str
    resource: str
    argv: tuple[str, ...]
    undo: tuple[str, ...]
    exists: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Rollback:
    """One disk's rollback: its standby LV, the point LV it becomes, the LV that keeps it."""

    disk: str
    vg: str
    standby: str
    point: str
    kept: str
    steps: tuple[RollbackStep, ...]


def lv_probe(vg: str, lv: str) -> tuple[str, ...]:
    """Prints the LV's name while it exists."""
    return ("lvs", "--noheadings", "-o", "lv_name", f"{vg}/{lv}")


def snapshot_probe(vg: str, lv: str, origin: str) -> tuple[str, ...]:
    """Prints the LV's name while it exists as a snapshot of ``origin``, nothing else."""
    return ("lvs", "--noheadings", "-o", "lv_name", "-S", f"origin={origin}", f"{vg}/{lv}")


def plan_rollback(point: RestorePoint, standby: Mapping[str, LogicalVolume], run_id: str,
                  host: str) -> list[Rollback]:
    """Each disk's rollback to ``point`` (the promote's ``run_id`` names the kept state);
    PromoteRefused for a point it cannot roll back to."""
    out = []
    for vol in point.volumes:
        lv = standby.get(vol.disk)
        if lv is None:
            continue  # a disk the point has and the standby no longer copies
        if vol.kind != "thin":
            raise PromoteRefused(
                f"restore point {point.run_id} of {point.domain} is a classic snapshot "
                f"({vol.vg}/{vol.lv}): rolling the standby back to it would merge it, which "
                "cannot be undone; promote --at takes thin points only (promote the standby "
                "as it is, or merge by hand with lvconvert --merge)", host=host)
        if vol.vg != lv.vg:
            raise PromoteRefused(f"restore point LV {vol.vg}/{vol.lv} is not in the VG of its "
                                 f"standby {lv.vg}/{lv.name}", host=host)
        check_lvm_pair(lv.vg, lv.name, f"the standby of disk {vol.disk}")
        kept = point_lv_name(run_id, point.domain, vol.disk)
        tags = [a for t in point_tags(run_id) for a in ("--addtag", t)]
        vg = lv.vg
        steps = (
            RollbackStep(KEEP, f"{vg}/{kept}", ("lvrename", vg, lv.name, kept),
                         ("lvrename", vg, kept, lv.name), lv_probe(vg, kept),
                         f"keep the standby of {vol.disk} as it is: restore point {run_id}"),
            RollbackStep(TAG, f"{vg}/{kept}", ("lvchange", *tags, f"{vg}/{kept}"),
                         ("lvchange", *(a.replace("--addtag", "--deltag") for a in tags),
                          f"{vg}/{kept}"), lv_probe(vg, kept),
                         "tag it as the tool's restore point"),
            RollbackStep(ROLLBACK, f"{vg}/{lv.name}",
                         ("lvcreate", "--snapshot", "--setactivationskip", "n", "--activate",
                          "y", "--permission", "rw", "--name", lv.name, f"{vg}/{vol.lv}"),
                         ("lvremove", "--yes", "--", f"{vg}/{lv.name}"),
                         snapshot_probe(vg, lv.name, vol.lv),
                         f"the standby of {vol.disk}: a writable thin snapshot of restore "
                         f"point {point.run_id}"),
        )
        out.append(Rollback(vol.disk, vg, lv.name, vol.lv, kept, steps))
    return out


def rollback_undo_problem(undo: tuple[str, ...], exists: tuple[str, ...],
                          domain: str | None) -> str:
    """Why a journal's lvrename/lvchange undo is not a rollback's ("" when it is one).

    A rollback's lvrename puts a point LV of the domain back under a standby's name; its
    lvchange takes that point's tags off it; each probe is exactly that LV's.
    """
    if undo[:1] == ("lvrename",):
        if len(undo) != 4:
            return "an lvrename that is not a rollback's"
        _, vg, kept, standby = undo
        parsed = parse_point_lv(kept, domain)
        if parsed is None:
            return "an lvrename of an LV that is not one of the domain's restore points"
        try:
            check_lvm_pair(vg, standby, "a rollback's standby")
        except UnsafeName:
            return "an lvrename to a name that is not an LVM name"
        if exists != lv_probe(vg, kept):
            return "an lvrename whose probe is not its point's"
        return ""
    if undo[:1] == ("lvchange",):
        if len(undo) != 6 or undo[1] != "--deltag" or undo[3] != "--deltag":
            return "an lvchange that is not a rollback's"
        vg, _, kept = undo[5].partition("/")
        parsed = parse_point_lv(kept, domain)
        if parsed is None or (undo[2], undo[4]) != (POINT_TAG, point_tags(parsed[0])[1]):
            return "an lvchange that is not the removal of a restore point's own tags"
        if exists != lv_probe(vg, kept):
            return "an lvchange whose probe is not its point's"
        return ""
    return "not a rollback's undo"
