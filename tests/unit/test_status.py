"""`status` from the report history and the standby marker; reports written atomically."""

from __future__ import annotations

from fakes import FakeHost, report_config

from toolkit.marker import marker_path, read_peer_marker
from toolkit.report import DomainReport, RunReport, summary, write_report
from toolkit.status import domain_status, render_status


def test_status_shows_last_success_failure_and_dirty_standby(tmp_path):
    cfg = report_config(tmp_path)
    ok = DomainReport("web01", run_id="R1", outcome="success", finished=1000.0)
    write_report(RunReport("dom0-a", domains=[ok]), cfg.defaults.report_dir)
    bad = DomainReport("web01", run_id="R2", outcome="failed", exit_code=43,
                       message="the standby filesystem is full", finished=2000.0)
    write_report(RunReport("dom0-a", domains=[bad]), cfg.defaults.report_dir)
    st = domain_status(cfg, "web01", peer_marker={"state": "dirty", "run_id": "R2"})
    assert st.last_success == 1000.0 and st.last_failure == 2000.0
    assert st.standby == "dirty" and st.last_outcome == "failed"
    text = render_status([st])
    assert "web01" in text and "dirty" in text and "full" in text


def test_status_without_history_uses_the_marker(tmp_path):
    cfg = report_config(tmp_path)
    st = domain_status(cfg, "web01", peer_marker={"state": "clean", "last_success": 5.0})
    assert st.standby == "clean" and st.last_success == 5.0
    assert domain_status(cfg, "web01").standby == "unknown"


def test_skipped_runs_do_not_enter_the_history(tmp_path):
    cfg = report_config(tmp_path)
    skip = DomainReport("web01", outcome="skipped", message="not running here")
    path = write_report(RunReport("dom0-b", domains=[skip]), cfg.defaults.report_dir)
    assert path.exists()
    assert not (tmp_path / "reports" / "history.jsonl").exists()
    assert "web01: skipped" in summary(RunReport("dom0-b", domains=[skip]))


def test_the_standby_marker_is_read_within_a_probes_bound(tmp_path):
    path = marker_path(report_config(tmp_path), "web01")
    peer = FakeHost("dom0-b")
    peer.files[path] = '{"state": "clean", "run_id": "R1"}\n'
    assert read_peer_marker(peer, path) == {"state": "clean", "run_id": "R1"}
    # a peer that hangs leaves `status` waiting no longer than a probe's bound
    ((argv, bound),) = peer.timeouts
    assert argv == ("cat", "--", path) and bound is not None and bound <= 120
