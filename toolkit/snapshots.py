"""The health of a run's snapshots: fill and validity, read with one ``lvs``.

After each snapshot is made and after each copy, an overflowed snapshot fails the run
(R3); while rsync reads, a watch polls the same reading and extends the snapshot, or
stops the copy before it overflows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .config import Config
from .errors import SnapshotInvalid, ToolkitError
from .facts.lvm import LogicalVolume, parse_lvs
from .plan import SNAPSHOT_NEARLY_FULL, Plan, Step, health_argv
from .report import DomainReport
from .runners import Runner
from .runners.base import terminate


def observe(source: Runner, plan: Plan, report: DomainReport) -> list[LogicalVolume]:
    """One ``lvs`` of the run's snapshots, recorded in the report (size, peak fill,
    invalid); empty when lvs fails (not every snapshot is made yet)."""
    res = source.run(health_argv(plan.snapshots), check=False, timeout=60)
    if res.exit_code != 0:
        return []
    lvs = parse_lvs(res.stdout)
    for lv in lvs:
        rep = next((r for r in report.snapshots if r.name == lv.name), None)
        if rep is None:
            continue
        rep.size_bytes = lv.size_bytes
        if lv.snap_percent is not None:
            rep.fill_percent = max(rep.fill_percent or 0.0, lv.snap_percent)
        if lv.snapshot_invalid:
            rep.invalid = True
    return lvs


def check_snapshots(source: Runner, plan: Plan, report: DomainReport) -> None:
    """Record fill and validity; an invalid snapshot fails the run (R3)."""
    for lv in observe(source, plan, report):
        if lv.snapshot_invalid:
            raise SnapshotInvalid(
                f"snapshot {lv.vg}/{lv.name} overflowed and is invalid: the copy is not "
                "consistent and the standby stays marked dirty; raise snapshot_size",
                host=plan.source_host)


def invalid_snapshot_cause(source: Runner, plan: Plan,
                           report: DomainReport) -> SnapshotInvalid | None:
    """After a failed step: the overflowed snapshot that caused it, if one did."""
    if not any(s.action == "snapshot" for s in plan.steps):
        return None
    try:
        check_snapshots(source, plan, report)
    except SnapshotInvalid as exc:
        return exc
    except ToolkitError:
        return None
    return None


class SnapshotWatch:
    """Polls snapshot fill while rsync reads; extends or stops the copy at the threshold."""

    def __init__(self, source: Runner, plan: Plan, step: Step, config: Config,
                 report: DomainReport, log: Callable[[str], None], interval: float) -> None:
        self.source, self.plan, self.report, self.log = source, plan, report, log
        # the copy step's lvextend of each snapshot, as the plan shows it (vg/lv -> argv)
        self.extend = {r.argv[-1]: r.argv for r in step.reactions
                       if r.when.startswith(SNAPSHOT_NEARLY_FULL)}
        self.defaults = config.defaults
        self.interval = interval
        self.error: ToolkitError | None = None
        self._stop = threading.Event()
        self._proc: object | None = None  # the rsync whose snapshot this watches
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def attach(self, proc: object) -> None:
        """The rsync to stop if a snapshot is about to overflow."""
        self._proc = proc

    def __enter__(self) -> SnapshotWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _abort(self, error: ToolkitError) -> None:
        self.error = error
        if self._proc is not None:
            terminate(self._proc)

    def _loop(self) -> None:
        defaults = self.defaults
        host = self.plan.source_host
        while not self._stop.wait(self.interval):
            try:
                lvs = observe(self.source, self.plan, self.report)
            except ToolkitError:
                continue
            for lv in lvs:
                if lv.snapshot_invalid:
                    self._abort(SnapshotInvalid(
                        f"snapshot {lv.vg}/{lv.name} overflowed during the copy; rsync stopped, "
                        "the standby stays marked dirty", host=host))
                    return
                if lv.snap_percent is not None and lv.snap_percent >= defaults.snapshot_max_fill:
                    grow = self.extend.get(f"{lv.vg}/{lv.name}")
                    if grow is not None:
                        ext = self.source.run(grow, check=False, timeout=120)
                        if ext.exit_code == 0:
                            self.log(f"extended {lv.vg}/{lv.name} by {defaults.snapshot_extend}")
                            continue
                    self._abort(SnapshotInvalid(
                        f"snapshot {lv.vg}/{lv.name} is {lv.snap_percent:.1f}% full (limit "
                        f"{defaults.snapshot_max_fill}%); copy stopped before it overflowed",
                        host=host))
                    return
