"""The Prometheus text file of ``[monitoring] textfile``: what a monitoring system reads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from fakes import report_config
from prometheus_client.parser import text_string_to_metric_families

from toolkit import errors
from toolkit.config import MonitoringSettings, parse_config
from toolkit.metrics import write_textfile
from toolkit.report import (
    DomainReport,
    FilesystemReport,
    RunReport,
    SnapshotReport,
    write_report,
)

RUN = "20261207T020000Z-ab12"


def cfg_with_textfile(tmp_path: Path):
    cfg = report_config(tmp_path)
    (tmp_path / "prom").mkdir(mode=0o755)
    mail = dataclasses.replace(cfg.domains["web01"], name="mail", disks={})
    return dataclasses.replace(cfg, domains={**cfg.domains, "mail": mail},
                               monitoring=MonitoringSettings(
                                   str(tmp_path / "prom" / "domu-backup.prom")))


def samples(path: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = Path(path).read_text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def web01_run(outcome="success", code=0, standby="clean") -> RunReport:
    dom = DomainReport(domain="web01", run_id=RUN, source_host="dom0-a", peer_host="dom0-b",
                       started=1000.0, finished=1060.0, outcome=outcome, exit_code=code,
                       phases={"snapshot": 1.5, "rsync": 40.0}, standby=standby,
                       restore_point=RUN, restore_points=3, newest_point=RUN)
    dom.filesystems = [FilesystemReport("xvda1", "/", "ext4", "copied", files_transferred=7,
                                        files_deleted=2, bytes_sent=4096),
                       FilesystemReport("xvda2", "/var", "ext4", "copied", files_transferred=1,
                                        bytes_sent=1000)]
    dom.snapshots = [SnapshotReport("snap", "vg_a/web01", 1 << 20, 12.5)]
    return RunReport(host="dom0-a", domains=[dom], exit_code=code)


def test_the_file_holds_each_domains_last_backup_and_last_success(tmp_path):
    cfg = cfg_with_textfile(tmp_path)
    write_report(web01_run(), cfg.defaults.report_dir)
    path = write_textfile(cfg)
    assert path == cfg.monitoring.textfile
    got = samples(path)
    web = (("domain", "web01"),)
    assert got[("domubk_configured", web)] == 1
    assert got[("domubk_configured", (("domain", "mail"),))] == 1
    assert got[("domubk_last_success_timestamp_seconds", web)] == 1060.0
    assert got[("domubk_last_run_timestamp_seconds", web)] == 1060.0
    assert got[("domubk_last_run_exit_code", web)] == 0
    assert got[("domubk_last_run_phase_seconds", (("domain", "web01"), ("phase", "rsync")))] \
        == 40.0
    assert got[("domubk_last_run_bytes_sent", web)] == 5096
    assert got[("domubk_last_run_files_changed", web)] == 10
    assert got[("domubk_standby_clean", web)] == 1
    assert got[("domubk_restore_points", web)] == 3
    assert got[("domubk_newest_restore_point_timestamp_seconds", web)] == 1796608800.0
    assert got[("domubk_snapshot_peak_fill_percent", web)] == 12.5
    # mail was never backed up here: it is configured, and nothing else is said of it.
    assert [k for k in got if k[1] == (("domain", "mail"),)] == [
        ("domubk_configured", (("domain", "mail"),))]
    assert os.stat(path).st_mode & 0o777 == 0o644  # node_exporter reads it


def test_a_failed_run_after_the_marker_says_dirty_and_keeps_the_last_success(tmp_path):
    cfg = cfg_with_textfile(tmp_path)
    write_report(web01_run(), cfg.defaults.report_dir)
    failed = web01_run("failed", 40, "dirty")
    failed.domains[0].finished = 2000.0
    write_report(failed, cfg.defaults.report_dir)
    got = samples(write_textfile(cfg))
    web = (("domain", "web01"),)
    assert got[("domubk_last_run_exit_code", web)] == 40
    assert got[("domubk_standby_clean", web)] == 0
    assert got[("domubk_last_success_timestamp_seconds", web)] == 1060.0


@pytest.mark.parametrize("before", ["clean", "dirty"])
def test_a_run_that_failed_before_its_marker_leaves_the_standby_as_the_last_one_said(
        tmp_path, before):
    """Found in the lab: a run stopped before it wrote the marker left no standby state, and
    the file lost the standby's metric; it keeps the state the last marker-writing run left."""
    cfg = cfg_with_textfile(tmp_path)
    write_report(web01_run("success" if before == "clean" else "failed",
                           0 if before == "clean" else 40, before), cfg.defaults.report_dir)
    early = web01_run("failed", 41, "")
    early.domains[0].finished = 3000.0
    write_report(early, cfg.defaults.report_dir)
    got = samples(write_textfile(cfg))
    web = (("domain", "web01"),)
    assert got[("domubk_last_run_exit_code", web)] == 41
    assert got[("domubk_standby_clean", web)] == (1 if before == "clean" else 0)


def test_no_run_that_wrote_a_marker_says_nothing_of_the_standby(tmp_path):
    cfg = cfg_with_textfile(tmp_path)
    write_report(web01_run("failed", 41, ""), cfg.defaults.report_dir)
    got = samples(write_textfile(cfg))
    assert ("domubk_standby_clean", (("domain", "web01"),)) not in got
    assert got[("domubk_last_run_exit_code", (("domain", "web01"),))] == 41


def test_a_verify_against_the_source_is_not_the_last_backup(tmp_path):
    cfg = cfg_with_textfile(tmp_path)
    write_report(web01_run(), cfg.defaults.report_dir)
    verify = web01_run("differs", 47)
    write_report(verify, cfg.defaults.report_dir)
    got = samples(write_textfile(cfg))
    assert got[("domubk_last_run_exit_code", (("domain", "web01"),))] == 0


def test_a_planted_symlink_is_replaced_never_written_through(tmp_path):
    cfg = cfg_with_textfile(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    os.symlink(victim, cfg.monitoring.textfile)
    write_textfile(cfg)
    assert victim.read_text() == "keep me\n"
    assert not os.path.islink(cfg.monitoring.textfile)


def test_no_textfile_configured_writes_nothing(tmp_path):
    cfg = report_config(tmp_path)
    assert cfg.monitoring.textfile is None and write_textfile(cfg) is None


def test_a_textfile_in_an_unsafe_directory_is_refused(tmp_path):
    cfg = cfg_with_textfile(tmp_path)
    os.chmod(tmp_path / "prom", 0o777)
    with pytest.raises(errors.InsecureFile):
        write_textfile(cfg)


BASE = ('[cluster.dom0s]\na = "ssh://root@a:22"\nb = "ssh://root@b:22"\n'
        '[hypervisor]\nuri = "xen:///system"\n')


@pytest.mark.parametrize(("value", "expected"), [
    ('""', None), ('"/var/lib/prometheus/node-exporter/domu.prom"',
                   "/var/lib/prometheus/node-exporter/domu.prom")])
def test_the_textfile_setting(value, expected):
    cfg = parse_config(BASE + f"[monitoring]\ntextfile = {value}\n", "/x.toml")
    assert cfg.monitoring.textfile == expected
    assert parse_config(BASE, "/x.toml").monitoring.textfile is None


@pytest.mark.parametrize("value", ['"domu.prom"', '"/var/lib/x/domu.txt"', '"/var/lib/x/.prom"',
                                   '"/var/lib/../etc/x.prom"', '"/etc/x.prom"', "1"])
def test_a_bad_textfile_is_a_config_error_naming_the_key(value):
    with pytest.raises(errors.ConfigError, match=r"/x.toml: monitoring.textfile"):
        parse_config(BASE + f"[monitoring]\ntextfile = {value}\n", "/x.toml")


def test_an_unknown_monitoring_key_is_refused():
    with pytest.raises(errors.ConfigError, match="monitoring"):
        parse_config(BASE + "[monitoring]\ntextfil = \"/a/b.prom\"\n", "/x.toml")


def test_a_backup_writes_the_textfile_after_its_report(tmp_path, capsys, monkeypatch):
    """Through the command: the report first, then the metrics from it."""
    from test_cli_errors import _config, cli

    from toolkit import app

    path = _config(tmp_path)
    (tmp_path / "prom").mkdir(mode=0o755)
    path.write_text(path.read_text() + f'[monitoring]\ntextfile = "{tmp_path}/prom/d.prom"\n')
    monkeypatch.setattr(app, "backup", lambda *a, **k: web01_run("failed", 40, "dirty"))
    monkeypatch.setattr("toolkit.config.check_root", lambda: None)
    code, _out, err = cli(capsys, "backup", "--domu", "web01", "--config", str(path))
    assert code == 40, err
    assert "metrics written to" in err, err
    got = samples(str(tmp_path / "prom" / "d.prom"))
    assert got[("domubk_last_run_exit_code", (("domain", "web01"),))] == 40
    assert got[("domubk_standby_clean", (("domain", "web01"),))] == 0


def test_the_textfile_is_0644_whatever_the_umask(tmp_path):
    cfg = cfg_with_textfile(tmp_path)
    old = os.umask(0o077)
    try:
        path = write_textfile(cfg)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
