"""The executor's walk in detail: failpoints fire where they are set, copies go side by side
only when there are several and copy_jobs allows it, phases are timed as they ran, and the
error a run raises is the first one, with teardown's own failures all reported."""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import pytest
from fakes import FakeHost, config, web01_facts

import toolkit.execute
from toolkit import errors
from toolkit.execute import Executor
from toolkit.plan import plan_backup
from toolkit.report import DomainReport
from toolkit.runners import CommandResult

RUN = "20260101T000000Z-abcd"


def _run(tmp_path, src, peer, *, drop_copies=0, log=None, **defaults):
    cfg = config(tmp_path)
    if defaults:
        cfg = replace(cfg, defaults=replace(cfg.defaults, **defaults))
    plan = plan_backup(web01_facts(), cfg, RUN)
    if drop_copies:  # leave the last copies out of the plan
        copies = [s for s in plan.steps if s.action == "rsync"][-drop_copies:]
        plan = replace(plan, steps=tuple(s for s in plan.steps if s not in copies))
    report = DomainReport("web01")
    return report, Executor(plan, cfg, src, peer, report, log=log)


def _hosts(src_fail=None, peer_fail=None):
    src, peer = FakeHost("dom0-a", fail=src_fail), FakeHost("dom0-b", fail=peer_fail)
    src.fstab_on = "xvda1"
    return src, peer


@pytest.fixture
def failpoint(tmp_path, monkeypatch):
    """Sets DOMU_BACKUP_FAILPOINT where test hooks are enabled (the lab's hooks file)."""
    hooks = tmp_path / "test-hooks"
    hooks.write_text("on\n")
    home = sys.modules[toolkit.execute.Failpoint.__module__]
    monkeypatch.setattr(home, "TEST_HOOKS_FILE", str(hooks))

    def set_(value: str) -> None:
        monkeypatch.setenv("DOMU_BACKUP_FAILPOINT", value)

    return set_


@pytest.mark.parametrize(("value", "mounts_made", "said"), [
    ("before:mount@2:raise", 1, "failpoint before:mount@2:raise"),
    ("after:mount@2:raise", 2, "failpoint after:mount@2:raise"),
    ("before:mount:raise", 0, "failpoint before:mount@1:raise"),  # no @n: the first one
    ("after:mount:raise", 1, "failpoint after:mount@1:raise"),
])
def test_a_failpoint_fires_at_its_moment_of_the_walk(tmp_path, failpoint, value, mounts_made,
                                                     said):
    failpoint(value)
    src, peer = _hosts()
    log: list[str] = []
    _report, ex = _run(tmp_path, src, peer, log=log.append)
    with pytest.raises(errors.ToolkitError, match=r"^failpoint (before|after):mount raised$"):
        ex.run()
    assert len([c for c in src.calls if c[:1] == ("mount",)]) == mounts_made
    assert said in log
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_failpoint_without_a_number_fires_at_every_occurrence(tmp_path, failpoint):
    failpoint("after:mkdir:sleep=0")
    src, peer = _hosts()
    log: list[str] = []
    _report, ex = _run(tmp_path, src, peer, log=log.append)
    ex.run()
    fired = [m for m in log if m.startswith("failpoint after:mkdir@")]
    mkdirs = [s for s in ex.plan.steps if s.action == "mkdir"]
    assert fired == [f"failpoint after:mkdir@{n}:sleep=0" for n in range(1, len(mkdirs) + 1)]


@pytest.mark.parametrize(("jobs", "drop", "side_by_side"), [
    (1, 0, None),  # copy_jobs = 1: one after another, however many there are
    (2, 0, "copying 3 filesystems, 2 at a time"),
    (2, 1, "copying 2 filesystems, 2 at a time"),
    (2, 2, None),  # a single copy is not a side-by-side run
])
def test_copies_go_side_by_side_only_when_there_are_several_and_copy_jobs_allows(
        tmp_path, jobs, drop, side_by_side):
    src, peer = _hosts()
    log: list[str] = []
    _report, ex = _run(tmp_path, src, peer, drop_copies=drop, log=log.append, copy_jobs=jobs)
    ex.run()
    lines = [m for m in log if "at a time" in m]
    assert lines == ([side_by_side] if side_by_side else [])


def test_the_rsync_and_teardown_phases_are_the_time_they_took(tmp_path):
    def slow(argv):
        if argv[:1] == ("umount",) or "rsync" in argv:
            time.sleep(0.05)
        return None

    src, peer = _hosts(src_fail=slow)
    report, ex = _run(tmp_path, src, peer, copy_jobs=2)
    start = time.monotonic()
    ex.run()
    took = time.monotonic() - start
    assert 0.05 <= report.phases["rsync"] <= took
    assert 0.05 <= report.phases["teardown"] <= took


def test_a_run_that_fails_raises_its_own_error_and_reports_teardowns_too(tmp_path,
                                                                          monkeypatch):
    """The first error is what the run raises (and its exit code); what teardown could not
    undo is in the report, not in place of it."""
    monkeypatch.setattr("time.sleep", lambda s: None)

    def fail(argv):
        if argv[:1] == ("mount",) and argv[-1].endswith("/xvda6"):
            return CommandResult("dom0-b", argv, 32, "", "mount: wrong fs type", 0.0)
        if argv[:1] == ("umount",) and argv[-1].endswith("/xvda5"):
            return CommandResult("dom0-b", argv, 32, "", "umount: target is busy", 0.0)
        return None

    src, peer = _hosts(peer_fail=fail)
    report, ex = _run(tmp_path, src, peer)
    with pytest.raises(errors.MountRefused, match="wrong fs type"):
        ex.run()
    # the busy mount, then what it holds up beneath it (its maps, the alias)
    assert "umount: target is busy" in report.teardown_errors[0]
    assert len(report.teardown_errors) > 1


def test_teardown_failures_alone_are_one_error_naming_each(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)

    def busy(argv):
        if argv[:1] == ("umount",) and argv[-1].endswith(("/xvda5", "/xvda6")):
            return CommandResult("dom0-b", argv, 32, "", f"umount: {argv[-1]}: busy", 0.0)
        return None

    src, peer = _hosts(peer_fail=busy)
    report, ex = _run(tmp_path, src, peer)
    with pytest.raises(errors.TeardownIncomplete) as raised:
        ex.run()
    assert len(report.teardown_errors) > 1
    assert str(raised.value) == "; ".join(report.teardown_errors)
