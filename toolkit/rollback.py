"""Rolling a standby back to a restore point, for ``promote --at``.

A thin point, for each disk, in the standby's VG, three journalled commands:

1. ``lvrename`` the standby LV to a restore point name of the promote's own run: what the
   standby held until now is kept (a dirty copy too: it may hold what the operator needs);
2. ``lvchange --addtag`` the point tags on it, so it is listed and pruned as a point;
3. ``lvcreate --snapshot`` of the named point, writable and active, under the standby's
   own name: the standby's path now shows the point's blocks, and the point itself is
   untouched (a thin snapshot of a thin snapshot), so it can be promoted to again.

Each undo puts back what its command changed, and its exists-probe finds exactly that
(the new standby only while it is a snapshot of that point), so ``recover`` undoes a
promote killed half-way without touching anything else.

A classic point is a copy-on-write snapshot of the standby, and the only way back to it
is to merge it into the standby (``lvconvert --merge``): the point's blocks are written
back, and the point is gone once they are. First, for every disk, the standby as it is is
kept as a classic restore point of the promote's run (a snapshot of the point's size: the
merge rewrites at most the blocks the point holds, and the device-mapper copies each to
every other snapshot of the standby before it is overwritten). Only then are the points
merged, one disk after another. A merge cannot be undone: once one is journalled the
promote is past its point of no return, and a promote that fails or is killed after it
finishes the merges instead of undoing them (``settle_merges``), keeps the standby's old
state as its point, and leaves the standby clean at the point's run, not promoted. Before
anything changes, each other classic point of the standby must have room for the blocks
the merge will copy into it, and the VG room for the kept points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import PromoteRefused, UnsafeName
from .facts.lvm import LogicalVolume
from .names import check_lvm_pair
from .restore_points import (
    POINT_TAG,
    PointVolume,
    RestorePoint,
    create_argv,
    parse_point_lv,
    point_lv_name,
    point_tags,
)

KEEP, TAG, ROLLBACK = "promote-keep", "promote-tag", "promote-rollback"
# A classic point: the standby kept as a classic point, then the point merged into it.
KEEP_CLASSIC, MERGE = "promote-keep-classic", "promote-merge"
ROLLBACK_ACTIONS = frozenset({KEEP, TAG, ROLLBACK, KEEP_CLASSIC, MERGE})
# How long a merge may take (it copies back every block the point holds), in seconds.
MERGE_TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class RollbackStep:
    """One journalled command of a rollback: what it makes, its undo and exists-probe."""

    action: str
    resource: str
    argv: tuple[str, ...]
    undo: tuple[str, ...]
    exists: tuple[str, ...]
    note: str
    # Steps run in stage order over all disks (a classic rollback keeps every disk's
    # standby before it merges any point); a stage-1 step cannot be undone.
    stage: int = 0
    timeout: float | None = None  # None: the config's command timeout


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


def merge_argv(vg: str, point: str) -> tuple[str, ...]:
    """Merge a classic point into its origin, waiting (polling each second) until done."""
    return ("lvconvert", "--merge", "--interval", "1", f"{vg}/{point}")


def finish_merge_argv(vg: str, standby: str) -> tuple[str, ...]:
    """Go on with a merge already begun into ``standby`` until it is done (``recover``'s,
    after a promote killed during one): the merge itself cannot be undone."""
    return ("lvconvert", "--startpoll", f"{vg}/{standby}")


def ordered_steps(rollbacks: Sequence[Rollback]) -> list[RollbackStep]:
    """Every disk's steps in the order they run: stage by stage, disk by disk."""
    steps = [(step.stage, i, step) for r in rollbacks for i, step in enumerate(r.steps)]
    return [step for _stage, _i, step in sorted(steps, key=lambda t: (t[0], t[1]))]


def plan_rollback(point: RestorePoint, standby: Mapping[str, LogicalVolume], run_id: str,
                  host: str, *, snapshots: Sequence[LogicalVolume] = (),
                  vg_free: Mapping[str, int] | None = None) -> list[Rollback]:
    """Each disk's rollback to ``point`` (the promote's ``run_id`` names the kept state);
    PromoteRefused for a point it cannot roll back to. A classic point also needs
    ``snapshots`` (every LV of the standbys' VGs: each other snapshot of a standby must have
    room for what its merge copies into it, the tool's points or not) and ``vg_free`` (free
    bytes of each VG)."""
    out = []
    for vol in point.volumes:
        lv = standby.get(vol.disk)
        if lv is None:
            continue  # a disk the point has and the standby no longer copies
        if vol.vg != lv.vg:
            raise PromoteRefused(f"restore point LV {vol.vg}/{vol.lv} is not in the VG of its "
                                 f"standby {lv.vg}/{lv.name}", host=host)
        check_lvm_pair(lv.vg, lv.name, f"the standby of disk {vol.disk}")
        kept = point_lv_name(run_id, point.domain, vol.disk)
        if vol.kind != "thin":
            out.append(_classic(point, vol, lv, kept, run_id, host, snapshots))
            continue
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
    _check_room(out, point, vg_free, host)
    return out


def _classic(point: RestorePoint, vol: PointVolume, lv: LogicalVolume, kept: str, run_id: str,
             host: str, snapshots: Sequence[LogicalVolume]) -> Rollback:
    """One disk's classic rollback: keep the standby as a classic point of the point's
    size, then merge the point into it. PromoteRefused when the point is not a snapshot of
    this standby, or another snapshot of it (a point or not) has no room for what the merge
    copies into it."""
    where = f"restore point LV {vol.vg}/{vol.lv}"
    if vol.origin != lv.name:
        raise PromoteRefused(f"{where} is a snapshot of {vol.origin or 'nothing'}, not of the "
                             f"standby {lv.vg}/{lv.name}: merging it would write into another "
                             "LV", host=host)
    if lv.is_thin:
        raise PromoteRefused(f"{where} is a classic snapshot of the thin standby "
                             f"{lv.vg}/{lv.name}; the tool makes none such, not merged",
                             host=host)
    held = _cow_used(vol.size_bytes, vol.fill_percent)
    for other in snapshots:
        if (other.vg != vol.vg or other.origin != lv.name or other.name == vol.lv
                or not other.is_snapshot or other.is_thin or other.snapshot_invalid):
            continue
        room = other.size_bytes - _cow_used(other.size_bytes, other.snap_percent)
        if room < held:
            parsed = parse_point_lv(other.name)
            what = (f"restore point {parsed[0]} ({other.vg}/{other.name})" if parsed
                    else f"snapshot {other.vg}/{other.name}")
            raise PromoteRefused(
                f"{what} has {room} bytes of copy-on-write room left, and merging "
                f"{point.run_id} may copy up to {held} bytes into it: it would overflow and be "
                f"lost. Extend it first (lvextend -L +{held - room}b {other.vg}/{other.name}) "
                "or remove it", host=host)
    vg = lv.vg
    size = ("--size", f"{vol.size_bytes}b")
    steps = (
        RollbackStep(KEEP_CLASSIC, f"{vg}/{kept}",
                     create_argv(kept, vg, lv.name, run_id, thin=False, size=size),
                     ("lvremove", "--yes", "--", f"{vg}/{kept}"),
                     snapshot_probe(vg, kept, lv.name),
                     f"keep the standby of {vol.disk} as it is: restore point {run_id}, a "
                     f"classic snapshot of {vol.size_bytes} bytes (the size of the point)"),
        RollbackStep(MERGE, f"{vg}/{vol.lv}", merge_argv(vg, vol.lv),
                     finish_merge_argv(vg, lv.name), lv_probe(vg, vol.lv),
                     f"merge restore point {point.run_id} into the standby of {vol.disk}; "
                     "this cannot be undone: from here a failed or killed promote finishes "
                     "the merges and keeps the standby clean at that point", stage=1,
                     timeout=MERGE_TIMEOUT),
    )
    return Rollback(vol.disk, vg, lv.name, vol.lv, kept, steps)


def _cow_used(size: int, fill_percent: float | None) -> int:
    """Bytes of a classic snapshot's copy-on-write store in use (all of it when unknown)."""
    if fill_percent is None:
        return size
    return -(-int(size * fill_percent) // 100)


def _check_room(rollbacks: Sequence[Rollback], point: RestorePoint,
                vg_free: Mapping[str, int] | None, host: str) -> None:
    """The kept classic points fit in their VGs; PromoteRefused naming the VG otherwise."""
    need: dict[str, int] = {}
    sizes = {v.lv: v.size_bytes for v in point.volumes}
    for r in rollbacks:
        if any(s.action == KEEP_CLASSIC for s in r.steps):
            need[r.vg] = need.get(r.vg, 0) + sizes[r.point]
    for vg, want in sorted(need.items()):
        free = (vg_free or {}).get(vg)
        if free is None or free < want:
            raise PromoteRefused(
                f"VG {vg} has {'unknown' if free is None else free} bytes free; keeping the "
                f"standby as a classic restore point before merging {point.run_id} needs "
                f"{want}", host=host)


def rollback_undo_problem(undo: tuple[str, ...], exists: tuple[str, ...],
                          domain: str | None) -> str:
    """Why a journal's lvrename/lvchange/lvconvert undo is not a rollback's ("" when it
    is one).

    A rollback's lvrename puts a point LV of the domain back under a standby's name; its
    lvchange takes that point's tags off it; each probe is exactly that LV's. A classic
    merge's entry goes on with the merge into a standby of the point's VG, and its probe
    is the domain's point LV's.
    """
    if undo[:1] == ("lvconvert",):
        if len(undo) != 3 or undo[1] != "--startpoll":
            return "an lvconvert that is not the finish of a rollback's merge"
        vg, _, standby = undo[2].partition("/")
        try:
            check_lvm_pair(vg, standby, "a merge's standby")
        except UnsafeName:
            return "an lvconvert of a name that is not an LVM name"
        point_vg, _, point = exists[-1].partition("/") if exists else ("", "", "")
        if (point_vg != vg or parse_point_lv(point, domain) is None
                or exists != lv_probe(vg, point)):
            return "a merge whose probe is not one of the domain's restore points in its VG"
        return ""
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
