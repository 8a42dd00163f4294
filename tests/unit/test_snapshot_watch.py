"""The snapshot watch during the copy (R3): each poll records the fill, grows a snapshot
at the threshold when configured, and stops the copy before or when a snapshot overflows.
Driven poll by poll on a fake source, without threads or waiting."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import FakeHost, config, web01_facts

from toolkit import errors
from toolkit.execute import Executor
from toolkit.plan import plan_backup
from toolkit.report import DomainReport, SnapshotReport
from toolkit.snapshots import SnapshotWatch

RUN = "20260101T000000Z-abcd"


class Polls:
    """The watch's stop event: ``wait`` says "go on" ``n`` times, then "stop"."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.timeouts: list[float | None] = []

    def wait(self, timeout=None) -> bool:
        self.timeouts.append(timeout)
        self.n -= 1
        return self.n < 0

    def set(self) -> None:
        self.n = -1


class Copy:
    terminated = 0

    def terminate(self) -> None:
        self.terminated += 1


def watch_on(tmp_path, fills, *, polls=None, lvs_fails=(), **defaults):
    """A watch over web01's snapshot whose fill is ``fills[i]`` at poll ``i`` ("I": the
    snapshot is invalid). Returns (watch, source, report, log lines, copy)."""
    cfg = config(tmp_path)
    cfg = replace(cfg, defaults=replace(cfg.defaults, **defaults))
    plan = plan_backup(web01_facts(), cfg, RUN)
    (snap,) = plan.snapshots
    key = f"{snap.vg}/{snap.name}"
    report = DomainReport("web01")
    report.snapshots.append(SnapshotReport(snap.name, "vg_a/web01", fill_percent=None))
    seen = iter(fills)
    polled = [0]

    def next_fill(argv):
        if argv[0] == "lvs" and "--reportformat" in argv:
            polled[0] += 1
            if polled[0] in lvs_fails:
                from toolkit.runners import CommandResult

                return CommandResult("dom0-a", argv, 5, "", "  Reading failed.\n", 0.0)
            fill = next(seen)
            src.lvs[key]["attr"] = "swi-I-s---" if fill == "I" else "swi-a-s---"
            src.lvs[key]["percent"] = "100.00" if fill == "I" else f"{fill:.2f}"
        return None

    src = FakeHost("dom0-a", fail=next_fill)
    src.lvs[key] = {"attr": "swi-a-s---", "percent": "0.00", "tags": (), "origin": "web01"}
    log: list[str] = []
    ex = Executor(plan, cfg, src, FakeHost("dom0-b"), report, log=log.append)
    copy_step = next(s for s in ex.plan.steps if s.action == "rsync")
    watch = SnapshotWatch(ex.source, ex.plan, copy_step, ex.config, ex.report, ex.log,
                          interval=2.0)
    watch._stop = Polls(len(fills) if polls is None else polls)  # type: ignore[assignment]
    copy = Copy()
    watch.attach(copy)
    return watch, src, report, log, copy, key


def test_each_poll_keeps_the_highest_fill_seen_and_below_the_limit_the_copy_goes_on(tmp_path):
    watch, src, report, _log, copy, _key = watch_on(tmp_path, [40.0, 55.5, 30.0])
    watch._loop()
    assert report.snapshots[0].fill_percent == 55.5 and not report.snapshots[0].invalid
    assert watch.error is None and copy.terminated == 0
    assert watch._stop.timeouts == [2.0, 2.0, 2.0, 2.0]  # one pause of the interval a poll
    assert [t for a, t in src.timeouts if a[0] == "lvs"] == [60, 60, 60]


def test_a_snapshot_that_overflowed_stops_the_copy_and_is_reported_invalid(tmp_path):
    watch, _src, report, _log, copy, key = watch_on(tmp_path, [40.0, "I", 10.0], polls=5)
    watch._loop()
    assert report.snapshots[0].invalid is True
    assert isinstance(watch.error, errors.SnapshotInvalid)
    assert str(watch.error) == (f"[dom0-a] snapshot {key} overflowed during the copy; "
                                "rsync stopped, the standby stays marked dirty")
    assert watch.error.host == "dom0-a" and copy.terminated == 1
    assert watch._stop.timeouts == [2.0, 2.0]  # no poll after the overflow


@pytest.mark.parametrize("fill", [80.0, 93.25])
def test_at_the_limit_without_snapshot_extend_the_copy_stops_before_an_overflow(tmp_path, fill):
    watch, src, report, _log, copy, key = watch_on(tmp_path, [fill, 10.0], polls=5)
    watch._loop()
    assert str(watch.error) == (f"[dom0-a] snapshot {key} is {fill:.1f}% full (limit 80%); copy "
                                "stopped before it overflowed")
    assert watch.error.host == "dom0-a" and copy.terminated == 1
    assert report.snapshots[0].fill_percent == fill and not report.snapshots[0].invalid
    assert not any(a[0] == "lvextend" for a in src.calls)


def test_at_the_limit_with_snapshot_extend_the_snapshot_grows_and_the_copy_goes_on(tmp_path):
    watch, src, _report, log, copy, key = watch_on(tmp_path, [85.0, 50.0],
                                                   snapshot_extend="1G")
    src.fail = _with_lvextend(src.fail, 0)
    watch._loop()
    assert [a for a in src.calls if a[0] == "lvextend"] == [("lvextend", "-L", "+1G", key)]
    assert [t for a, t in src.timeouts if a[0] == "lvextend"] == [120]
    assert f"extended {key} by 1G" in log
    assert watch.error is None and copy.terminated == 0


def test_a_snapshot_that_cannot_be_grown_stops_the_copy(tmp_path):
    watch, src, _report, log, copy, key = watch_on(tmp_path, [85.0, 50.0], polls=5,
                                                   snapshot_extend="1G")
    src.fail = _with_lvextend(src.fail, 5)
    watch._loop()
    assert str(watch.error).startswith(f"[dom0-a] snapshot {key} is 85.0% full (limit 80%)")
    assert copy.terminated == 1 and not any(line.startswith("extended") for line in log)


def test_a_poll_that_cannot_read_the_snapshot_is_skipped_not_fatal(tmp_path):
    watch, _src, report, _log, copy, _key = watch_on(tmp_path, [40.0, 60.0], polls=3,
                                                     lvs_fails=(1,))
    watch._loop()
    assert watch.error is None and copy.terminated == 0
    assert report.snapshots[0].fill_percent == 60.0


def _with_lvextend(inner, code):
    from toolkit.runners import CommandResult

    def answer(argv):
        if argv[0] == "lvextend":
            return CommandResult("dom0-a", argv, code, "", "" if code == 0 else
                                 "  Insufficient free space\n", 0.0)
        return inner(argv)
    return answer


def test_every_snapshot_at_the_limit_grows_in_the_same_poll(tmp_path):
    # Two disks, both snapshots at the limit in one poll: each is grown before the next
    # pause, not one per poll (the second could overflow while it waits).
    from fakes import disk_facts

    cfg = config(tmp_path)
    cfg = replace(cfg, defaults=replace(cfg.defaults, snapshot_extend="1G"))
    facts = web01_facts()
    facts = replace(facts, disks=facts.disks + (disk_facts("gpt", "xvdb", "vg_a", "vg_b",
                                                           "web01-data"),))
    plan = plan_backup(facts, cfg, RUN)
    keys = [f"{s.vg}/{s.name}" for s in plan.snapshots]
    assert len(keys) == 2
    src = FakeHost("dom0-a")
    for key in keys:
        src.lvs[key] = {"attr": "swi-a-s---", "percent": "90.00", "tags": (), "origin": "x"}
    src.fail = _with_lvextend(lambda argv: None, 0)
    report = DomainReport("web01")
    log: list[str] = []
    ex = Executor(plan, cfg, src, FakeHost("dom0-b"), report, log=log.append)
    copy_step = next(s for s in ex.plan.steps if s.action == "rsync")
    watch = SnapshotWatch(ex.source, ex.plan, copy_step, ex.config, ex.report, ex.log,
                          interval=2.0)
    watch._stop = Polls(1)  # type: ignore[assignment]
    watch.attach(copy := Copy())
    watch._loop()
    assert sorted(a[-1] for a in src.calls if a[0] == "lvextend") == sorted(keys)
    assert sorted(log) == sorted(f"extended {k} by 1G" for k in keys)
    assert watch.error is None and copy.terminated == 0
