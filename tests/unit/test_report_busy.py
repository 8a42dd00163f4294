"""A run refused as busy (LockBusy, exit 75) never replaces the domain report of the run
holding the lock; it is still this invocation's last.json and a line of the history."""

from __future__ import annotations

import json

from fakes import report_config

from toolkit import app, errors
from toolkit.lock import domain_lock
from toolkit.report import DomainReport, RunReport, write_report


def test_a_busy_run_leaves_the_holders_domain_report(tmp_path):
    reports = tmp_path / "reports"
    holder = DomainReport("web01", run_id="R1", outcome="success", finished=1000.0)
    write_report(RunReport("dom0-a", domains=[holder]), str(reports))
    busy = DomainReport("web01", outcome="failed", error="LockBusy",
                        exit_code=errors.LockBusy.exit_code,
                        message="domain web01 is being backed up by another run (pid 1)")
    write_report(RunReport("dom0-a", exit_code=75, domains=[busy]), str(reports))
    assert json.loads((reports / "web01.json").read_text())["run_id"] == "R1"
    last = json.loads((reports / "last.json").read_text())
    assert last["exit_code"] == 75 and last["domains"][0]["error"] == "LockBusy"
    history = [json.loads(x) for x in (reports / "history.jsonl").read_text().splitlines()]
    assert [(h["run_id"], h["outcome"], h["error"]) for h in history] == [
        ("R1", "success", ""), ("", "failed", "LockBusy")]


def test_a_second_run_refused_by_the_lock_does_not_overwrite_the_first(tmp_path):
    cfg = report_config(tmp_path)
    reports = tmp_path / "reports"
    first = DomainReport("web01", run_id="R1", outcome="pending")
    write_report(RunReport("dom0-a", domains=[first]), str(reports))  # the holder, mid-run
    with domain_lock(cfg.defaults.lock_dir, "web01"):
        run = app.backup(cfg, ["web01"], app.Hosts(source=object()), node="dom0-a")
    assert run.exit_code == errors.LockBusy.exit_code
    write_report(run, cfg.defaults.report_dir)
    assert json.loads((reports / "web01.json").read_text())["run_id"] == "R1"
