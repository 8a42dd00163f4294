"""The phase times of a failed run are the real ones: the failing phase is counted, once."""

from __future__ import annotations

import contextlib
import time

import pytest
from fakes import FakeHost, config, web01_facts, web01_run

from toolkit import app, errors
from toolkit.preflight import Preflight
from toolkit.report import RunReport, summary
from toolkit.rsync import untied
from toolkit.runners import CommandResult

RUN = "20260101T000000Z-abcd"
SLOW = 0.3


def slow_failure(program: str, code: int, *, only: str | None = None):
    """A fail hook: ``program`` takes SLOW seconds, then fails (only for argv naming ``only``)."""
    def fail(argv):
        if untied(argv)[0] == program and (only is None or any(only in a for a in argv)):
            time.sleep(SLOW)
            return CommandResult("fake", tuple(argv), code, "", "boom", SLOW)
        return None

    return fail


def executor(tmp_path, src, peer, jobs=1):
    run = web01_run(tmp_path, src, peer, copy_jobs=jobs)
    return run.report, run.ex


def test_the_failing_step_is_timed_in_its_phase_and_as_a_step(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b", fail=slow_failure("mount", 32))
    src.fstab_on = "xvda1"
    report, ex = executor(tmp_path, src, peer)
    with pytest.raises(errors.MountRefused):
        ex.run()
    phases = list(report.phases)
    assert phases[-2:] == ["peer", "teardown"] and "marker" not in phases
    assert {"preflight", "snapshot", "map", "mount"} <= set(phases)
    assert report.phases["peer"] >= SLOW
    failed = [s for s in report.steps if (s.role, s.action) == ("peer", "mount")]
    assert len(failed) == 1 and failed[0].seconds >= SLOW
    assert "peer 0.3s" in summary(RunReport("dom0-a", domains=[report]))


def test_a_failed_copy_side_by_side_counts_its_rsync_time(tmp_path):
    src = FakeHost("dom0-a", fail=slow_failure("rsync", 25, only="xvda5"))
    src.fstab_on = "xvda1"
    report, ex = executor(tmp_path, src, FakeHost("dom0-b"), jobs=2)
    with pytest.raises(errors.MassDeleteRefused):
        ex.run()
    assert report.phases["rsync"] >= SLOW
    assert list(report.phases)[-2:] == ["rsync", "teardown"]


@pytest.fixture
def stand_ins(monkeypatch):
    hooks: dict = {"recover": lambda: [], "gather": lambda: None}
    monkeypatch.setattr(app, "domain_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(app, "local_node_name", lambda cfg, node=None: "dom0-a")
    monkeypatch.setattr(app, "locate", lambda *a, **k: "running")
    monkeypatch.setattr(app, "connect_peer", lambda *a, **k: "peer")
    monkeypatch.setattr("toolkit.recover.check_state_dir", lambda *a, **k: None)
    monkeypatch.setattr(app, "take_inventories", lambda *a, **k: {})
    monkeypatch.setattr(app, "recover_domain", lambda *a, **k: hooks["recover"]())

    def gather(*a, **k):
        hooks["gather"]()
        return Preflight(web01_facts(), "running", "shut off"), "peer"

    monkeypatch.setattr(app, "gather", gather)
    return hooks


def _slowly(exc):
    def hook():
        time.sleep(SLOW)
        raise exc

    return hook


def test_a_preflight_that_fails_is_timed(stand_ins, tmp_path):
    stand_ins["gather"] = _slowly(errors.StandbyInvalid("standby too small"))
    report = app.backup_domain(config(tmp_path), "web01", app.Hosts(source="source"))
    assert report.error == "StandbyInvalid"
    assert list(report.phases) == ["preflight", "recover"]
    assert report.phases["preflight"] >= SLOW and report.phases["recover"] < SLOW


def test_a_clean_up_that_fails_is_timed(stand_ins, tmp_path):
    stand_ins["recover"] = _slowly(errors.TeardownIncomplete("recover could not finish"))
    report = app.backup_domain(config(tmp_path), "web01", app.Hosts(source="source"))
    assert report.error == "TeardownIncomplete"
    assert report.phases["recover"] >= SLOW and report.phases["preflight"] < SLOW
