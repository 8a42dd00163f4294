"""The plan's last part: the restore point a clean run leaves on the peer, and the prune.

After teardown, once the standby is unmounted and its marker says clean, the peer takes a
snapshot of each standby LV of the domain (one restore point, named and tagged by
``restore_points``): a thin snapshot where the standby is a thin LV, else a classic one
of the configured size. Each of these is journalled with its undo, so a run killed while
taking its point leaves no part of it once ``recover`` has run. Then the points the
retention rules no longer keep (and every invalid one) are removed, each LV by its full
name: only after the new point exists, and never the new point.
"""

from __future__ import annotations

from .config import Config
from .facts.records import BackupFacts
from .plan_records import PEER, Step
from .restore_points import (
    PointVolume,
    RestorePoint,
    create_argv,
    point_lv_name,
    points_from_lvs,
    remove_argv,
    to_prune,
)
from .retention import run_id_time


def point_steps(facts: BackupFacts, config: Config, run_id: str
                ) -> tuple[tuple[Step, ...], tuple[str, ...]]:
    """The steps that take this run's restore point and prune the old ones, and the run
    ids of the points the peer keeps once they ran (newest first); nothing when the domain
    keeps no restore points."""
    settings = config.domain(facts.domain).effective_restore_points(config.defaults)
    if not settings.retention.enabled or not facts.disks:
        return (), ()
    steps: list[Step] = []
    volumes: list[PointVolume] = []
    for disk in facts.disks:
        standby = disk.standby_lv
        target = disk.disk.target
        name = point_lv_name(run_id, facts.domain, target)
        thin = standby.is_thin
        size = () if thin else tuple(settings.size.lvcreate_args())
        full = f"{standby.vg}/{name}"
        steps.append(Step(
            PEER, "point", create_argv(name, standby.vg, standby.name, run_id, thin=thin,
                                       size=size),
            undo=("lvremove", "--yes", "--", full),
            exists=("lvs", "--noheadings", "-o", "lv_name", full),
            resource=f"/dev/{full}",
            note=(f"restore point of {standby.path} (disk {target}), "
                  + ("a thin snapshot in its pool" if thin
                     else f"a classic snapshot of {settings.size}"))))
        volumes.append(PointVolume(target, standby.vg, name, "thin" if thin else "classic",
                                   standby.size_bytes, None, True))
    disks = [d.disk.target for d in facts.disks]
    new = RestorePoint(facts.domain, run_id, run_id_time(run_id), tuple(volumes))
    old = points_from_lvs(facts.points, facts.domain, disks)
    rules = settings.retention
    kept = ", ".join(f"{f} = {getattr(rules, f)}" for f in ("keep_last", "keep_daily",
                                                            "keep_weekly")
                     if getattr(rules, f))
    pruned = [p for p in to_prune([new, *old], rules)
              if p.run_id != run_id]  # the rules keep the newest point: never the new one
    for point in pruned:
        why = "invalid (a classic snapshot that overflowed)" if not point.valid else \
            f"not kept by {kept}"
        for vol in point.volumes:
            steps.append(Step(PEER, "prune", remove_argv(vol), resource=f"/dev/{vol.vg}/{vol.lv}",
                              note=f"restore point {point.run_id}: {why}"))
    gone = {p.run_id for p in pruned}
    remaining = sorted((p for p in [new, *old] if p.run_id not in gone),
                       key=lambda p: (p.taken, p.run_id), reverse=True)
    return tuple(steps), tuple(p.run_id for p in remaining)
