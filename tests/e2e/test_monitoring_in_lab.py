"""Monitoring in the lab (issue: running it in production): the textfile a real backup
leaves for node_exporter, checked by promtool on this host after a success and after
injected failures, with the right values; and ``status --check`` giving the plugin codes
0, 1 and 2 as the runs fail and the standby ages, from the same runs."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_promtool import promtool

from toolkit.lab.rehearse import run_backup, standby_marker, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

CONF = "/etc/domu-backup/monitoring.toml"
TEXTFILE_DIR = "/var/lib/domubk-lab-textfile"
TEXTFILE = f"{TEXTFILE_DIR}/domu-backup.prom"


def configure(lab) -> None:
    lab.runner("dom0-a").run(["install", "-d", "-m", "0755", TEXTFILE_DIR])
    write_config(lab, CONF, f'\n[monitoring]\ntextfile = "{TEXTFILE}"\n')


def backup(lab, failpoint: str | None = None):
    env = {"DOMU_BACKUP_FAILPOINT": failpoint} if failpoint else None
    return run_backup(lab, "web01", "--config", CONF, env=env)


def metrics(lab) -> dict[tuple[str, str], float]:
    """web01's samples of the textfile, after promtool accepted the file as it is."""
    text = lab.runner("dom0-a").run(["cat", "--", TEXTFILE]).stdout
    res = promtool("check", "metrics", stdin=text)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (res.stdout + res.stderr).strip() == "", res.stdout + res.stderr  # no lint either
    return {(s.name, s.labels.get("phase", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.labels.get("domain") == "web01"}


def check(lab, max_age: str = "26h") -> tuple[int, str]:
    res = lab.runner("dom0-a").run(["domu-backup", "status", "--check", "--domu", "web01",
                                    "--max-age", max_age, "--config", CONF],
                                   check=False, timeout=300)
    return res.exit_code, res.stdout.strip()


def test_metrics_and_the_check_follow_real_runs_that_succeed_fail_and_age(fresh):
    lab = fresh
    try:
        configure(lab)
        # A success: exit 0 in the file, the standby clean, bytes and phases from the run.
        res = backup(lab)
        assert res.exit_code == 0, res.stdout + res.stderr
        ok = metrics(lab)
        assert ok[("domubk_last_run_exit_code", "")] == 0
        assert ok[("domubk_standby_clean", "")] == 1
        assert ok[("domubk_configured", "")] == 1
        assert ok[("domubk_last_run_bytes_sent", "")] > 0
        assert ok[("domubk_last_run_phase_seconds", "rsync")] > 0
        success_at = ok[("domubk_last_success_timestamp_seconds", "")]
        assert abs(success_at - time.time()) < 600
        code, line = check(lab)
        assert code == 0 and line.startswith("DOMU-BACKUP OK"), line

        # Failed before the standby was touched: its exit code in the file, the standby
        # still clean, the last success unchanged; the check warns.
        res = backup(lab, "after:snapshot:raise")
        assert res.exit_code not in (0, 1), res.stdout + res.stderr
        warned = metrics(lab)
        assert warned[("domubk_last_run_exit_code", "")] == res.exit_code
        assert warned[("domubk_standby_clean", "")] == 1
        assert warned[("domubk_last_success_timestamp_seconds", "")] == success_at
        code, line = check(lab)
        assert code == 1 and "WARNING" in line, line

        # Failed during the copy: the standby dirty, in the marker and in the file; critical.
        res = backup(lab, "after:rsync:raise")
        assert res.exit_code not in (0, 1), res.stdout + res.stderr
        assert standby_marker(lab, "web01")["state"] == "dirty"
        dirty = metrics(lab)
        assert dirty[("domubk_last_run_exit_code", "")] == res.exit_code
        assert dirty[("domubk_standby_clean", "")] == 0
        assert dirty[("domubk_last_success_timestamp_seconds", "")] == success_at
        code, line = check(lab)
        assert code == 2 and "CRITICAL" in line and "dirty" in line, line

        # The next run converges: OK again; and the same success, once older than the
        # allowed age, is critical.
        res = backup(lab)
        assert res.exit_code == 0, res.stdout + res.stderr
        assert metrics(lab)[("domubk_standby_clean", "")] == 1
        assert check(lab)[0] == 0
        time.sleep(2)
        code, line = check(lab, "1s")
        assert code == 2 and "older than" in line, line
    finally:
        lab.runner("dom0-a").run(["rm", "-rf", CONF, TEXTFILE_DIR], check=False)
