"""A killed run (no report, a journal left) shows in `status` as interrupted, once; the last
success shown is the one the standby marker on the peer names."""

from __future__ import annotations

import calendar
import contextlib
import json
import time

import pytest
from fakes import report_config, web01_facts

from toolkit import app, errors
from toolkit.preflight import Preflight
from toolkit.recover import Inventory
from toolkit.report import DomainReport, RunReport, write_report
from toolkit.status import domain_status, render_status

KILLED = "20260101T010000Z-dead"
KILLED_STARTED = calendar.timegm(time.strptime("20260101T010000Z", "%Y%m%dT%H%M%SZ"))


def _inventory(role: str, *journals: str) -> Inventory:
    return Inventory(role, tuple(journals), (), (), (), (), ())


@pytest.fixture
def stand_ins(monkeypatch):
    """backup_domain with its hosts stood in for; ``state`` says what recover finds."""
    state: dict = {"inventories": {}, "cleaned": [], "recover_error": None}
    monkeypatch.setattr(app, "domain_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(app, "local_node_name", lambda cfg, node=None: "dom0-a")
    monkeypatch.setattr(app, "locate", lambda *a, **k: "running")
    monkeypatch.setattr(app, "connect_peer", lambda *a, **k: "peer")
    monkeypatch.setattr("toolkit.recover.check_state_dir", lambda *a, **k: None)
    monkeypatch.setattr(app, "take_inventories", lambda *a, **k: state["inventories"])

    def recover_domain(*a, **k):
        if state["recover_error"] is not None:
            raise state["recover_error"]
        return list(state["cleaned"])

    def gather(*a, **k):
        return Preflight(web01_facts(), "running", "shut off"), "peer"

    class Executor:
        def __init__(self, *a, **k):
            pass

        def run(self):
            pass

    monkeypatch.setattr(app, "recover_domain", recover_domain)
    monkeypatch.setattr(app, "gather", gather)
    monkeypatch.setattr(app, "Executor", Executor)
    return state


def test_a_killed_run_cleaned_at_the_start_of_the_next_shows_as_interrupted(stand_ins, tmp_path):
    cfg = report_config(tmp_path)
    journal = f"{tmp_path}/state/journal/web01.{KILLED}.jsonl"
    other = f"{tmp_path}/state/journal/web01.prod.20260101T010000Z-beef.jsonl"
    stand_ins["inventories"] = {"source": _inventory("source", journal, other),
                                "peer": _inventory("peer", journal)}
    stand_ins["cleaned"] = [f"[dom0-a] removed snapshot vg_a/domubk-{KILLED}-web01-xvda"]
    before = time.time()
    report = app.backup_domain(cfg, "web01", app.Hosts(source="source"))
    assert report.outcome == "success", report.message
    # The killed run is in the history as soon as it is cleaned, before this run's end.
    history = [json.loads(x) for x in
               (tmp_path / "reports" / "history.jsonl").read_text().splitlines()]
    assert [(h["run_id"], h["outcome"]) for h in history] == [(KILLED, "interrupted")]
    assert history[0]["cleaned"] >= before
    write_report(RunReport("dom0-a", domains=[report]), cfg.defaults.report_dir)
    st = domain_status(cfg, "web01", peer_marker={"state": "clean"})
    assert st.last_failure == KILLED_STARTED  # when the killed run started
    assert st.last_failure_message.startswith("interrupted, cleaned by recover at ")
    line = next(r for r in render_status([st]).splitlines() if r.startswith("web01"))
    assert "interrupted, cleaned by recover at" in line


def test_a_domain_with_nothing_to_clean_writes_no_history(stand_ins, tmp_path):
    cfg = report_config(tmp_path)
    stand_ins["inventories"] = {"source": _inventory("source"), "peer": _inventory("peer")}
    app.backup_domain(cfg, "web01", app.Hosts(source="source"))
    assert not (tmp_path / "reports" / "history.jsonl").exists()


def test_a_clean_up_that_fails_records_nothing_as_cleaned(stand_ins, tmp_path):
    cfg = report_config(tmp_path)
    stand_ins["inventories"] = {
        "source": _inventory("source", f"{tmp_path}/state/journal/web01.{KILLED}.jsonl")}
    stand_ins["recover_error"] = errors.TeardownIncomplete("recover could not finish: busy")
    report = app.backup_domain(cfg, "web01", app.Hosts(source="source"))
    assert report.outcome == "failed"
    assert not (tmp_path / "reports" / "history.jsonl").exists()


def test_a_run_that_reported_its_own_ending_is_not_shown_twice(tmp_path):
    from toolkit.status import record_cleaned_runs

    cfg = report_config(tmp_path)
    own = DomainReport("web01", run_id=KILLED, outcome="failed", exit_code=60,
                       message="teardown left objects behind", started=KILLED_STARTED,
                       finished=KILLED_STARTED + 30)
    write_report(RunReport("dom0-a", domains=[own]), cfg.defaults.report_dir)
    record_cleaned_runs(cfg, "web01", [KILLED], by="recover")
    record_cleaned_runs(cfg, "web01", [KILLED], by="recover")  # the peer's half, later
    st = domain_status(cfg, "web01", peer_marker={"state": "dirty"})
    assert (st.last_failure, st.last_failure_message) == (KILLED_STARTED + 30,
                                                          "teardown left objects behind")


# --- the recover command ---------------------------------------------------------

CONFIG = """
[cluster.dom0s]
dom0-a = "ssh://root@127.0.0.1:2"
dom0-b = "ssh://root@127.0.0.1:1"
[hypervisor]
uri = "test:///default"
[ssh]
key = "{tmp}/id_ed25519"
known_hosts = "{tmp}/known_hosts"
connect_timeout = 2
[defaults]
state_dir = "{tmp}/state"
lock_dir = "{tmp}/lock"
report_dir = "{tmp}/reports"
[domains.web01]
peer = "dom0-b"
[domains.db01]
peer = "dom0-b"
"""


def test_recover_records_each_killed_run_it_cleans(tmp_path, capsys, monkeypatch):
    from toolkit import cli as program
    from toolkit.config import load_config

    monkeypatch.setattr("toolkit.config.check_root", lambda: None)  # runs as any user
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "backup.toml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    path.chmod(0o600)
    journals = tmp_path / "state" / "journal"
    journals.mkdir(parents=True, mode=0o700)
    killed = journals / f"web01.{KILLED}.jsonl"
    killed.write_text("")

    class Pending:
        def pending(self, config, domain):
            return domain == "web01"

    def recover_domain(config, domain, source, peer, **kw):
        killed.unlink()
        return [f"[dom0-a] removed snapshot vg_a/domubk-{KILLED}-web01-xvda (run {KILLED})"]

    monkeypatch.setattr(app, "take_inventory", lambda runner, config, role: Pending())
    monkeypatch.setattr(app, "recover_domain", recover_domain)
    code = program.run(["recover", "--host", "local", "--node", "dom0-a", "--config",
                        str(path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    cfg = load_config(path)
    st = domain_status(cfg, "web01", peer_marker={"state": "dirty"})
    assert st.last_outcome == "interrupted" and st.last_run_id == KILLED
    assert st.last_failure == KILLED_STARTED
    assert st.last_failure_message.startswith("interrupted, cleaned by recover at ")
    assert domain_status(cfg, "db01").last_outcome is None


# --- last success and the marker -------------------------------------------------


def test_last_success_is_the_one_the_standby_marker_names(tmp_path):
    cfg = report_config(tmp_path)
    ok = DomainReport("web01", run_id="R1", outcome="success", finished=1000.0)
    write_report(RunReport("dom0-a", domains=[ok]), cfg.defaults.report_dir)
    # R3 synced the standby, but its report never reached this host's history.
    marker = {"state": "clean", "run_id": "R3", "last_success": 3000.0,
              "last_success_run_id": "R3"}
    st = domain_status(cfg, "web01", peer_marker=marker)
    assert (st.last_success, st.last_success_run_id) == (3000.0, "R3")
    assert "R3" in render_status([st])


def test_a_dirty_marker_keeps_the_success_it_names(tmp_path):
    cfg = report_config(tmp_path)
    for rid, fin in (("R1", 1000.0), ("R2", 2000.0)):
        write_report(RunReport("dom0-a", domains=[
            DomainReport("web01", run_id=rid, outcome="success", finished=fin)]),
            cfg.defaults.report_dir)
    marker = {"state": "dirty", "run_id": "R4", "last_success": 1990.0,
              "last_success_run_id": "R2"}
    st = domain_status(cfg, "web01", peer_marker=marker)
    assert (st.last_success, st.last_success_run_id) == (1990.0, "R2")


def test_without_a_marker_last_success_comes_from_the_history(tmp_path):
    cfg = report_config(tmp_path)
    ok = DomainReport("web01", run_id="R1", outcome="success", finished=1000.0)
    write_report(RunReport("dom0-a", domains=[ok]), cfg.defaults.report_dir)
    st = domain_status(cfg, "web01")
    assert (st.standby, st.last_success, st.last_success_run_id) == ("unknown", 1000.0, "R1")

