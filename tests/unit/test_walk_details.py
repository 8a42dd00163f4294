"""The executor's walk in detail: failpoints fire where they are set, copies go side by side
only when there are several and copy_jobs allows it, phases are timed as they ran, and the
error a run raises is the first one, with teardown's own failures all reported."""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import pytest
from fakes import config, web01_facts, web01_hosts, web01_run

import toolkit.execute
from toolkit import errors
from toolkit.execute import Executor
from toolkit.marker import marker_path
from toolkit.plan import plan_backup
from toolkit.report import DomainReport
from toolkit.runners import CommandResult

RUN = "20260101T000000Z-abcd"


def _run(tmp_path, src, peer, *, drop_copies=0, log=None, **defaults):
    run = web01_run(tmp_path, src, peer, log=log, **defaults)
    if drop_copies:  # leave the last copies out of the plan
        copies = [s for s in run.plan.steps if s.action == "rsync"][-drop_copies:]
        plan = replace(run.plan, steps=tuple(s for s in run.plan.steps if s not in copies))
        run = web01_run(tmp_path, src, peer, plan=plan, log=log, **defaults)
    return run.report, run.ex


_hosts = web01_hosts


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


# -- the lock, the report's records, the snapshot's health --------------------------------

def test_the_executor_takes_the_domain_lock_itself_unless_told_it_is_held(tmp_path):
    from toolkit.lock import domain_lock, lock_is_held

    cfg = config(tmp_path)
    held: list[bool] = []

    def look(argv):
        if argv[:1] == ("mount",):
            held.append(lock_is_held(cfg.defaults.lock_dir, "web01"))
        return None

    src, peer = _hosts(src_fail=look)
    _report, ex = _run(tmp_path, src, peer)
    ex.run()
    assert held and all(held)  # held by the run while it works
    assert not lock_is_held(cfg.defaults.lock_dir, "web01")  # and let go at the end
    # A caller that holds the lock already (the command line, before its clean-up) says so,
    # and the run does not try to take it a second time.
    src, peer = _hosts()
    plan = plan_backup(web01_facts(), cfg, RUN)
    with domain_lock(cfg.defaults.lock_dir, "web01"):
        Executor(plan, cfg, src, peer, DomainReport("web01"), lock_held=True).run()
    assert src.leftovers() == [] and peer.leftovers() == []


def test_the_report_names_snapshots_and_filesystems_from_the_start(tmp_path):
    """A run that fails at its first mount still reports each snapshot's origin and each
    filesystem's type and configured guest path."""
    def refuse(argv):
        if argv[:1] == ("mount",):
            return CommandResult("dom0-a", argv, 32, "", "mount: wrong fs type", 0.0)
        return None

    cfg = config(tmp_path)
    dom = cfg.domains["web01"]
    cfg = replace(cfg, domains={**cfg.domains, "web01": replace(dom, mounts={"xvda5": "/srv"})})
    src, peer = _hosts(src_fail=refuse)
    report = DomainReport("web01")
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report)
    with pytest.raises(errors.MountRefused):
        ex.run()
    assert [s.origin for s in report.snapshots] == ["vg_a/web01"]
    assert sorted((f.name, f.fstype, f.guest_path) for f in report.filesystems) == [
        ("xvda1", "ext4", None), ("xvda5", "ext4", "/srv"), ("xvda6", "vfat", None)]


def _snapshot_reads(src, answers):
    """The run's snapshot health reads: each answer in turn, a fill ("0.25"), "invalid" or
    "fail" (lvs exits 5, as before every snapshot is made)."""
    answers = list(answers)

    def hook(argv):
        if argv[:1] == ("lvs",) and "--reportformat" in argv and answers:
            answer = answers.pop(0)
            if answer == "fail":
                return CommandResult("dom0-a", argv, 5, "", "  Failed to find logical volume",
                                     0.0)
            key = argv[-1]
            if answer == "invalid":
                src.lvs[key].update(attr="swi-I-s---", percent="100.00")
            else:
                src.lvs[key]["percent"] = answer
        return None

    return hook


def test_a_health_read_that_fails_right_after_the_snapshot_is_no_error(tmp_path):
    src, peer = _hosts()
    src.fail = _snapshot_reads(src, ["fail"])
    report, ex = _run(tmp_path, src, peer)
    ex.run()
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3


def test_the_fill_a_health_read_finds_is_reported_exactly(tmp_path):
    src, peer = _hosts()
    src.fail = _snapshot_reads(src, ["0.25", "0.25", "0.25", "0.25"])
    report, ex = _run(tmp_path, src, peer)
    ex.run()
    assert [s.fill_percent for s in report.snapshots] == [0.25]


def test_a_snapshot_found_overflowed_after_a_copy_fails_the_run_saying_what_to_do(tmp_path):
    src, peer = _hosts()
    src.fail = _snapshot_reads(src, ["0.25", "invalid"])
    report, ex = _run(tmp_path, src, peer)
    with pytest.raises(errors.SnapshotInvalid) as raised:
        ex.run()
    snap = f"vg_a/domubk-{RUN}-web01-xvda"
    assert str(raised.value) == (
        f"[dom0-a] snapshot {snap} overflowed and is invalid: the copy is not consistent and "
        "the standby stays marked dirty; raise snapshot_size")
    assert report.snapshots[0].invalid and report.filesystems[0].outcome == "failed"


def test_a_stray_failpoint_is_ignored_with_one_line_saying_why(tmp_path, monkeypatch):
    home = sys.modules[toolkit.execute.Failpoint.__module__]
    monkeypatch.setattr(home, "TEST_HOOKS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("DOMU_BACKUP_FAILPOINT", "after:snapshot:sigkill")
    said: list[str] = []
    assert toolkit.execute.Failpoint.from_env(said.append) is None
    assert said == [f"DOMU_BACKUP_FAILPOINT is set but this host has no {tmp_path}/absent "
                    "(test hooks are for the rehearsal lab): ignored"]


@pytest.mark.parametrize("text", ["[]", '"clean"', "null", "{not json"])
def test_a_marker_that_is_not_a_json_object_is_taken_as_none(tmp_path, text):
    """The dirty marker keeps what the last clean one said; a marker file holding anything
    but a JSON object says nothing, and the run goes on."""
    src, peer = _hosts()
    report, ex = _run(tmp_path, src, peer)
    peer.files[marker_path(ex.config, ex.plan.domain)] = text
    ex.run()
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
