"""The standby marker as `status` reads it: only a real marker says clean or dirty (R10)."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from fakes import FakeHost
from fakes import report_config as _cfg

from toolkit import errors
from toolkit.marker import read_peer_marker
from toolkit.runners import CommandResult
from toolkit.status import DomainStatus, domain_status, render_status

PATH = "/var/lib/domu-backup/standby/web01.json"


def _peer(text: str | None) -> FakeHost:
    peer = FakeHost("dom0-b")
    if text is not None:
        peer.files[PATH] = text
    return peer


@pytest.mark.parametrize("state", ["clean", "dirty"])
def test_a_marker_with_a_state_is_read_as_it_is(state):
    marker = {"state": state, "run_id": "R1", "last_success": 5.0}
    assert read_peer_marker(_peer(json.dumps(marker)), PATH) == marker


@pytest.mark.parametrize("text", ["not json", "[]", '"clean"', "{}", '{"state": "DIRTY"}',
                                  '{"state": "dirtyish"}', '{"state": null}'])
def test_anything_else_is_not_a_marker(text):
    with pytest.raises(errors.StatusUnknown) as info:
        read_peer_marker(_peer(text), PATH)
    assert str(info.value) == (f"[dom0-b] the standby marker {PATH} is not a marker (no "
                               "clean/dirty state)")
    assert info.value.host == "dom0-b"


def test_a_missing_marker_is_unknown_saying_what_the_peer_said():
    with pytest.raises(errors.StatusUnknown) as info:
        read_peer_marker(_peer(None), PATH)
    assert str(info.value) == (f"[dom0-b] cannot read the standby marker {PATH}: cat: {PATH}: "
                               "No such file or directory")
    assert info.value.host == "dom0-b"


def test_a_failed_read_without_a_word_names_the_exit_code():
    peer = _peer(None)
    peer.fail = lambda argv: (CommandResult("dom0-b", argv, 2, "", "", 0.0)
                              if argv[0] == "cat" else None)
    with pytest.raises(errors.StatusUnknown, match=r"standby marker .*: cat exited 2$") as info:
        read_peer_marker(peer, PATH)
    assert info.value.host == "dom0-b"


def test_status_counts_a_killed_run_once_whichever_host_cleaned_it_and_goes_on(tmp_path):
    from toolkit import report as reports

    cfg = _cfg(tmp_path)
    killed = {"domain": "web01", "run_id": "R1", "outcome": "interrupted", "started": 1.0,
              "finished": None, "cleaned": 50.0, "message": "interrupted, cleaned by recover"}
    later = {"domain": "web01", "run_id": "R2", "outcome": "success", "finished": 100.0}
    reports.append_history(cfg.defaults.report_dir, "".join(
        json.dumps(r) + "\n" for r in (killed, {**killed, "cleaned": 60.0}, later)))
    st = domain_status(cfg, "web01")
    assert (st.last_outcome, st.last_run_id, st.last_success) == ("success", "R2", 100.0)
    assert st.last_failure == 1.0 and st.last_failure_message.startswith("interrupted")


def test_the_status_table_says_when_and_which_run(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        rows = [
            DomainStatus("web01", "dom0-b", "failed", "R2", 86400.0, "R1", 90061.0,
                         "the standby filesystem is full " + "x" * 80, "dirty"),
            DomainStatus("db01", "dom0-a", None, None, None, None, None, None, "unknown"),
            DomainStatus("mail01", "dom0-b", None, None, None, None, None, None, "promoted",
                         runs_on="dom0-b"),
            DomainStatus("gpt01", "dom0-b", None, None, None, None, None, None, "clean",
                         runs_on=""),
        ]
        rows[0] = dataclasses.replace(rows[0], runs_on="dom0-a")
        head = f"{'domain':<12} {'runs on':<10} {'peer':<10} {'standby':<8} {'last success':<47} "
        assert render_status(rows).splitlines() == [
            head + "last failure",
            f"{'web01':<12} {'dom0-a':<10} {'dom0-b':<10} {'dirty':<8} "
            f"{'1970-01-02 00:00:00 run R1':<47} "
            "1970-01-02 01:01:01 (the standby filesystem is full " + "x" * 29 + ")",
            # None: where it runs could not be asked; "": it runs on neither host
            f"{'db01':<12} {'?':<10} {'dom0-a':<10} {'unknown':<8} {'never':<47} never",
            f"{'mail01':<12} {'dom0-b':<10} {'dom0-b':<10} {'promoted':<8} {'never':<47} never",
            f"{'gpt01':<12} {'-':<10} {'dom0-b':<10} {'clean':<8} {'never':<47} never",
        ]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_killed_run_cleaned_later_enters_the_history_as_interrupted(tmp_path, monkeypatch):
    from toolkit.status import record_cleaned_runs, run_started

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        monkeypatch.setattr("toolkit.status.time.time", lambda: 86400.0)
        cfg = _cfg(tmp_path)
        runs = ["20260101T000000Z-abcd", "20260102T030405Z-0001"]
        record_cleaned_runs(cfg, "web01", runs, by="recover")
        lines = (tmp_path / "reports" / "history.jsonl").read_text().splitlines()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert [json.loads(line) for line in lines] == [
        {"domain": "web01", "run_id": run, "outcome": "interrupted", "exit_code": None,
         "error": "Killed", "started": run_started(run), "finished": None, "cleaned": 86400.0,
         "cleaned_by": "recover",
         "message": "interrupted, cleaned by recover at 1970-01-02 00:00:00"}
        for run in runs]


def test_a_history_that_cannot_be_written_is_said_not_raised(tmp_path):
    from toolkit.status import record_cleaned_runs

    cfg = _cfg(tmp_path)
    (tmp_path / "reports").write_text("a file where the directory goes\n")
    said: list[str] = []
    record_cleaned_runs(cfg, "web01", ["20260101T000000Z-abcd"], by="backup", log=said.append)
    assert len(said) == 1
    assert said[0].startswith("could not record the interrupted run(s) of web01 in the "
                              f"history: {tmp_path / 'reports'}")


def test_a_killed_run_cleaned_again_later_is_not_the_latest_run(tmp_path):
    # recover on the other host finds the same killed run after a later backup succeeded
    from toolkit import report as reports

    cfg = _cfg(tmp_path)
    killed = {"domain": "web01", "run_id": "R1", "outcome": "interrupted", "started": 1.0,
              "finished": None, "cleaned": 50.0, "message": "interrupted, cleaned by recover"}
    later = {"domain": "web01", "run_id": "R2", "outcome": "success", "finished": 100.0}
    reports.append_history(cfg.defaults.report_dir, "".join(
        json.dumps(r) + "\n" for r in (killed, later, {**killed, "cleaned": 150.0})))
    st = domain_status(cfg, "web01")
    assert (st.last_outcome, st.last_run_id) == ("success", "R2")


def test_a_damaged_history_line_is_skipped_and_the_rest_still_counts(tmp_path):
    from toolkit import report as reports

    cfg = _cfg(tmp_path)
    ok = {"domain": "web01", "run_id": "R2", "outcome": "success", "finished": 100.0}
    reports.append_history(cfg.defaults.report_dir, '{"domain": "web01", "run_id": "R1", '
                           + "\n" + json.dumps(ok) + "\n")
    st = domain_status(cfg, "web01")
    assert (st.last_outcome, st.last_run_id, st.last_success) == ("success", "R2", 100.0)


def test_a_marker_without_a_state_leaves_the_standby_unknown(tmp_path):
    st = domain_status(_cfg(tmp_path), "web01", peer_marker={"last_success": 5.0})
    assert st.standby == "unknown" and st.last_success == 5.0


def test_status_says_a_run_is_in_progress_while_the_domains_lock_is_held(tmp_path):
    from toolkit.lock import domain_lock

    cfg = _cfg(tmp_path)
    assert domain_status(cfg, "web01").running is False
    with domain_lock(cfg.defaults.lock_dir, "web01"):
        held = domain_status(cfg, "web01")
    assert held.running is True
    assert domain_status(cfg, "web01").running is False
    line = render_status([held]).splitlines()[1]
    assert line.startswith("web01") and line.endswith("  [a run is in progress here]")
    assert "in progress" not in render_status([domain_status(cfg, "web01")])
