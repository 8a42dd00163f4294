"""`status`: per domain, the last success and failure and whether the standby is clean;
`restore-points`: the points each domain's standby has on its peer."""

from __future__ import annotations

import calendar
import json
import posixpath
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import report as reports
from .config import Config
from .errors import ToolkitError
from .facts.lvm import LogicalVolume
from .lock import lock_is_held
from .owned import RUN_ID, journal_of
from .report import human_size
from .restore_points import POINT_TAG, RestorePoint, parse_point_lv, points_from_lvs


@dataclass(frozen=True)
class DomainStatus:
    """One domain's line of ``status``: its last runs and its standby's state."""
    domain: str
    peer: str
    last_outcome: str | None
    last_run_id: str | None
    last_success: float | None
    last_success_run_id: str | None
    last_failure: float | None
    last_failure_message: str | None
    standby: str  # clean, dirty, promoted, unknown
    running: bool = False  # a run of the domain holds its lock on this host now
    # Its restore points on the peer: how many, and the newest's run id (None: not read).
    restore_points: int | None = None
    newest_point: str | None = None
    # Where the domain runs, as the hypervisors of this host and its peer say: their names
    # ("" when it runs on neither); None when not asked or not known.
    runs_on: str | None = None


def domain_history(report_dir: Path, domain: str) -> list[dict]:
    """The domain's records of this host's ``history.jsonl``, oldest first (a line that is
    not a JSON object is skipped; no file is no record)."""
    history = report_dir / "history.jsonl"
    records: list[dict] = []
    for line in history.read_text().splitlines() if history.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("domain") == domain:
            records.append(rec)
    return records


def domain_status(config: Config, domain: str, *, peer_marker: dict | None = None,
                  points: list[RestorePoint] | None = None,
                  runs_on: str | None = None) -> DomainStatus:
    """Status from the local report history, and the standby's state from the peer's marker
    only: without the marker the standby is "unknown", never guessed from local history.

    The last success is the one the marker names (its time and run id), whichever host's
    run it was; only without a marker does it come from this host's history. A killed run
    that recover cleaned counts as a failure ("interrupted") unless the run wrote its own
    report, which then stands.
    """
    domain_cfg = config.domain(domain)
    records = domain_history(Path(config.defaults.report_dir), domain)
    # A run that reported its own ending is that report; recover's record of cleaning its
    # leftovers later (or twice: once per host) adds nothing.
    reported = {r.get("run_id") for r in records if "cleaned" not in r}
    seen_cleaned: set = set()
    last = success = failure = None
    for rec in records:
        if "cleaned" in rec:
            if rec.get("run_id") in reported or rec.get("run_id") in seen_cleaned:
                continue
            seen_cleaned.add(rec.get("run_id"))
        last = rec
        if rec.get("outcome") == "success":
            success = rec
        elif rec.get("outcome") in ("failed", "interrupted"):
            failure = rec
    standby = "unknown"
    success_at = success.get("finished") if success else None
    success_run = success.get("run_id") if success else None
    if peer_marker:
        standby = peer_marker.get("state", "unknown")
        # The standby's own word on its last good sync (this host's history may lack it: a
        # report that could not be written, a run from the other Dom0). A marker without
        # the field says nothing about it.
        if "last_success" in peer_marker:
            success_at = peer_marker.get("last_success")
            success_run = peer_marker.get("last_success_run_id")
    return DomainStatus(
        domain=domain, peer=domain_cfg.peer,
        last_outcome=last.get("outcome") if last else None,
        last_run_id=last.get("run_id") if last else None,
        last_success=success_at,
        last_success_run_id=success_run,
        last_failure=(failure.get("finished") or failure.get("started")) if failure else None,
        last_failure_message=failure.get("message") if failure else None,
        standby=standby,
        running=lock_is_held(config.defaults.lock_dir, domain),
        restore_points=None if points is None else len(points),
        newest_point=points[0].run_id if points else None,
        runs_on=runs_on,
    )


def run_started(run_id: str) -> float | None:
    """When a run started, from its id (UTC time first); None for an id of another shape."""
    try:
        return float(calendar.timegm(time.strptime(run_id[:16], "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def killed_runs(domain: str, journals: Iterable[str], cleaned: Iterable[str]) -> list[str]:
    """Run ids of ``domain`` that left journals (``<domain>.<run id>.jsonl``) or whose
    leftovers a clean-up names (every owned name carries its run id)."""
    runs = {posixpath.basename(p)[len(domain) + 1:-len(".jsonl")]
            for p in journals if journal_of(p, domain)}
    for msg in cleaned:
        runs.update(re.findall(rf"(?<![0-9A-Za-z]){RUN_ID}(?![0-9a-f])", msg))
    return sorted(runs)


def record_cleaned_runs(config: Config, domain: str, run_ids: Iterable[str], *, by: str,
                        log: Callable[[str], None] = lambda m: None) -> None:
    """Append a history record for each killed run whose leftovers were just cleaned.

    Such a run never wrote a report: without this record `status` would not show it at
    all. Outcome "interrupted"; it started when its id says and ended unseen, so
    ``finished`` is null and ``cleaned`` says when it was found dead. A history that
    cannot be written is said, not a reason to fail the clean-up or the run.
    """
    now = time.time()
    lines = []
    for run_id in run_ids:
        lines.append(json.dumps({
            "domain": domain, "run_id": run_id, "outcome": "interrupted", "exit_code": None,
            "error": "Killed", "started": run_started(run_id), "finished": None,
            "cleaned": now, "cleaned_by": by,
            "message": f"interrupted, cleaned by recover at {_when(now)}"}) + "\n")
    if not lines:
        return
    try:
        reports.append_history(config.defaults.report_dir, "".join(lines))
    except (OSError, ToolkitError) as exc:
        log(f"could not record the interrupted run(s) of {domain} in the history: {exc}")


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "never"


def render_status(rows: list[DomainStatus]) -> str:
    """The ``status`` table, one domain a line."""
    lines = [f"{'domain':<12} {'runs on':<10} {'peer':<10} {'standby':<8} {'last success':<47} "
             "last failure"]
    for r in rows:
        fail = _when(r.last_failure)
        if r.last_failure_message:
            fail += f" ({r.last_failure_message[:60]})"
        ok = _when(r.last_success)
        if r.last_success_run_id:
            ok += f" run {r.last_success_run_id}"
        where = "?" if r.runs_on is None else (r.runs_on or "-")
        line = f"{r.domain:<12} {where:<10} {r.peer:<10} {r.standby:<8} {ok:<47} {fail}"
        if r.restore_points:
            line = f"{line.rstrip()}  [{r.restore_points} restore point" + (
                "s" if r.restore_points > 1 else "") + f", newest {r.newest_point}]"
        if r.running:
            # a dirty standby is what a run in progress leaves until it ends
            line = f"{line.rstrip()}  [a run is in progress here]"
        lines.append(line)
    return "\n".join(lines)


# --- restore points (the ``restore-points`` command) -------------------------------------

def domain_points(lvs: Iterable[LogicalVolume], domain: str) -> list[RestorePoint]:
    """A domain's restore points among the peer's point LVs, newest first; a point lacking
    a disk that another of its points has is listed as partial."""
    lvs = [lv for lv in lvs if POINT_TAG in lv.tags]
    disks = sorted({parsed[2] for lv in lvs
                    if (parsed := parse_point_lv(lv.name, domain)) is not None})
    return points_from_lvs(lvs, domain, disks)


def points_json(points: Iterable[RestorePoint], peer: str) -> list[dict]:
    """The points as ``restore-points --json`` prints them."""
    return [{"domain": p.domain, "run_id": p.run_id, "taken": p.taken.isoformat(),
             "peer": peer, "kind": p.kind, "valid": p.valid, "whole": p.whole,
             "missing": list(p.missing),
             "volumes": [{"disk": v.disk, "lv": f"{v.vg}/{v.lv}", "kind": v.kind,
                          "size_bytes": v.size_bytes, "fill_percent": v.fill_percent,
                          "valid": v.valid} for v in p.volumes]}
            for p in points]


def render_points(rows: Iterable[tuple[str, str, list[RestorePoint]]]) -> str:
    """``restore-points``: per domain, each point with its run, time, kind, size, fill."""
    lines: list[str] = []
    for domain, peer, points in rows:
        lines.append(f"{domain} (on {peer}): {len(points)} restore point"
                     + ("" if len(points) == 1 else "s"))
        for p in points:
            size = sum(v.size_bytes for v in p.volumes)
            fills = [v.fill_percent for v in p.volumes if v.fill_percent is not None]
            fill = f"fill {max(fills):.1f}%" if fills else "fill -"
            state = "valid" if p.valid else "INVALID (overflowed)"
            if not p.whole:
                state += f", partial: no LV for {', '.join(p.missing)}"
            lines.append(f"  {p.run_id}  {p.taken:%Y-%m-%d %H:%M:%S} UTC  {p.kind:<7} "
                         f"{human_size(size):>9}  {fill:<10} {state}")
    return "\n".join(lines)
