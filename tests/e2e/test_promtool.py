"""Prometheus's own checker, promtool, on what the project gives Prometheus: the alert rules
of contrib/prometheus (valid, and unit-tested on made-up series: each alert fires for the
bad case after its ``for`` and stays quiet for the good one) and the metrics file a backup
writes (valid, and read by those rules). On this machine: Debian's prometheus package has
promtool; no lab needed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from toolkit.config import parse_config
from toolkit.metrics import registry_for
from toolkit.report import DomainReport, FilesystemReport, RunReport, write_report

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib/prometheus/domu-backup-alerts.yml"
BEGIN, END = "<!-- alert-rules:begin -->", "<!-- alert-rules:end -->"
# As node_exporter's scrape labels them: one target per Dom0.
A = {"instance": "dom0-a:9100", "job": "node"}
B = {"instance": "dom0-b:9100", "job": "node"}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (.ci/setup does)")
    return subprocess.run([exe, *args], input=stdin, capture_output=True, text=True,
                          check=False, timeout=120)


def series(name: str, labels: dict[str, str], values: str) -> dict:
    """One input series of a promtool unit test (values in promtool's expanding notation)."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def alert(labels: dict[str, str], annotations: dict[str, str]) -> dict:
    return {"exp_labels": labels, "exp_annotations": annotations}


def run_rule_tests(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess:
    """``promtool test rules`` on the rule file with these test groups (JSON is YAML)."""
    spec = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests}
    path = tmp_path / "alerts-test.yml"
    path.write_text(json.dumps(spec, indent=1))
    return promtool("test", "rules", str(path))


# The annotations each alert renders, as the rule file words them.

def stale(domain: str, target: dict[str, str], age: str) -> dict:
    instance = target["instance"]
    return alert({"domain": domain, "severity": "critical", "reason": "too_old", **target}, {
        "summary": f"domu-backup: no good backup of {domain} for {age}",
        "description": f"The newest good backup of {domain} was made by {instance} {age} ago "
                       "(more than 26h): its standby is stale. See `domu-backup status` on "
                       "the Dom0 it runs on."})


def never(domain: str) -> dict:
    return alert({"domain": domain, "severity": "critical", "reason": "never_backed_up"}, {
        "summary": f"domu-backup: {domain} has never been backed up",
        "description": f"{domain} is configured, but no Dom0 (no instance) reports a good "
                       "backup of it: it has no usable standby. See `domu-backup status` on "
                       "the Dom0 it runs on."})


def failed(domain: str, target: dict[str, str], code: int) -> dict:
    instance = target["instance"]
    return alert({"domain": domain, "severity": "warning", **target}, {
        "summary": f"domu-backup: the last backup of {domain} on {instance} exited {code}",
        "description": f"The last backup of {domain} on {instance} ended with exit code "
                       f"{code}: see the README's table of exit codes and the domain's report "
                       f"on {instance}."})


def dirty(domain: str, target: dict[str, str]) -> dict:
    instance = target["instance"]
    return alert({"domain": domain, "severity": "critical", **target}, {
        "summary": f"domu-backup: the standby of {domain} is dirty",
        "description": f"The last backup of {domain} on {instance} left its standby dirty: it "
                       f"is no usable copy until a backup of {domain} succeeds."})


def test_promtool_accepts_the_alert_rules():
    res = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 6 rules found" in res.stdout, res.stdout + res.stderr


def test_promtool_refuses_the_rules_with_one_expression_broken(tmp_path):
    text = RULES.read_text()
    good = "expr: domubk_last_run_exit_code != 0\n"
    assert text.count(good) == 1
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace(good, "expr: domubk_last_run_exit_code != \n"))
    res = promtool("check", "rules", str(broken))
    assert res.returncode != 0, res.stdout + res.stderr
    assert "FAILED" in res.stdout + res.stderr, res.stdout + res.stderr


def test_a_standby_older_than_26h_or_never_backed_up_is_stale(tmp_path):
    day = 1440  # one-minute samples a day
    tests = [{"interval": "1m", "input_series": [
        # web01 runs on dom0-a, backed up every day at midnight; dom0-b only lists it.
        series("domubk_configured", {"domain": "web01", **A}, "1x2000"),
        series("domubk_configured", {"domain": "web01", **B}, "1x2000"),
        series("domubk_last_success_timestamp_seconds", {"domain": "web01", **A},
               f"0x{day - 1} 86400x{day}"),
        # db01 (on dom0-b) was backed up once, at 0, and never since.
        series("domubk_configured", {"domain": "db01", **A}, "1x2000"),
        series("domubk_configured", {"domain": "db01", **B}, "1x2000"),
        series("domubk_last_success_timestamp_seconds", {"domain": "db01", **B}, "0x2000"),
        # mail01 moved from dom0-a to dom0-b: dom0-a's last success of it only ages, the
        # newest one (dom0-b's, from day 2) is what counts.
        series("domubk_configured", {"domain": "mail01", **A}, "1x2000"),
        series("domubk_configured", {"domain": "mail01", **B}, "1x2000"),
        series("domubk_last_success_timestamp_seconds", {"domain": "mail01", **A}, "0x2000"),
        series("domubk_last_success_timestamp_seconds", {"domain": "mail01", **B},
               f"_x{day} 86400x600"),
        # new01 is configured on both and no Dom0 ever backed it up.
        series("domubk_configured", {"domain": "new01", **A}, "1x2000"),
        series("domubk_configured", {"domain": "new01", **B}, "1x2000"),
    ], "alert_rule_test": [
        {"eval_time": "30m", "alertname": "DomuBackupStandbyStale"},  # new01: its hour
        {"eval_time": "2h", "alertname": "DomuBackupStandbyStale",
         "exp_alerts": [never("new01")]},
        # db01 is over 26h old from 26h01m; its 30 minutes run to 26h31m.
        {"eval_time": "26h30m", "alertname": "DomuBackupStandbyStale",
         "exp_alerts": [never("new01")]},
        {"eval_time": "27h", "alertname": "DomuBackupStandbyStale",
         "exp_alerts": [stale("db01", B, "1d 3h 0m 0s"), never("new01")]},
        {"eval_time": "30h", "alertname": "DomuBackupStandbyStale",
         "exp_alerts": [stale("db01", B, "1d 6h 0m 0s"), never("new01")]},
    ]}]
    res = run_rule_tests(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_last_run_that_did_not_exit_0_fires_after_10_minutes(tmp_path):
    tests = [{"interval": "1m", "input_series": [
        series("domubk_last_run_exit_code", {"domain": "web01", **A}, "0x60"),
        series("domubk_last_run_exit_code", {"domain": "web01", **B}, "0x60"),  # a skip
        series("domubk_last_run_exit_code", {"domain": "db01", **B}, "0x9 45x60"),
    ], "alert_rule_test": [
        {"eval_time": "15m", "alertname": "DomuBackupLastRunFailed"},
        {"eval_time": "25m", "alertname": "DomuBackupLastRunFailed",
         "exp_alerts": [failed("db01", B, 45)]},
    ]}]
    res = run_rule_tests(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_dirty_standby_fires_after_15_minutes(tmp_path):
    tests = [{"interval": "1m", "input_series": [
        series("domubk_standby_clean", {"domain": "web01", **A}, "1x60"),
        series("domubk_standby_clean", {"domain": "db01", **B}, "0x60"),
    ], "alert_rule_test": [
        {"eval_time": "10m", "alertname": "DomuBackupStandbyDirty"},
        {"eval_time": "20m", "alertname": "DomuBackupStandbyDirty",
         "exp_alerts": [dirty("db01", B)]},
    ]}]
    res = run_rule_tests(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_metrics_file_not_written_for_26h_or_unreadable_fires(tmp_path):
    path = "/var/lib/prometheus/node-exporter/domu-backup.prom"  # newer node_exporters
    old = {"file": path, **B}
    tests = [{"interval": "1m", "input_series": [
        series("node_textfile_mtime_seconds", {"file": "domu-backup.prom", **A}, "0+60x1800"),
        series("node_textfile_mtime_seconds", old, "0x1800"),
        series("node_textfile_mtime_seconds", {"file": "other.prom", **A}, "0x1800"),
        series("node_textfile_scrape_error", A, "0x60"),
        series("node_textfile_scrape_error", B, "0x4 1x60"),
    ], "alert_rule_test": [
        {"eval_time": "26h20m", "alertname": "DomuBackupMetricsStale"},
        {"eval_time": "27h", "alertname": "DomuBackupMetricsStale", "exp_alerts": [alert(
            {"file": path, "severity": "warning", **B}, {
                "summary": "domu-backup: the metrics of dom0-b:9100 are 1d 3h 0m 0s old",
                "description": f"{path} on dom0-b:9100 was last written 1d 3h 0m 0s ago: no "
                               "`backup --all` has finished there since, so its domubk_* "
                               "metrics are old. See `systemctl status domu-backup.timer "
                               "domu-backup.service` there."})]},
        {"eval_time": "30m", "alertname": "DomuBackupMetricsUnreadable"},
        {"eval_time": "40m", "alertname": "DomuBackupMetricsUnreadable", "exp_alerts": [alert(
            {"severity": "warning", **B}, {
                "summary": "domu-backup: node_exporter on dom0-b:9100 cannot read a textfile",
                "description": "node_exporter on dom0-b:9100 fails to read a file of its "
                               "textfile directory (its log names the file); if it is "
                               "domu-backup's, the domubk_* metrics of that Dom0 are "
                               "missing."})]},
    ]}]
    res = run_rule_tests(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


# The metrics file a backup writes, from reports of a good run and of a failed one.

def domain_report(domain: str, finished: float, outcome: str, code: int,
                  standby: str) -> DomainReport:
    dom = DomainReport(domain=domain, run_id="20261207T020000Z-ab12", source_host="dom0-a",
                       peer_host="dom0-b", started=finished - 60, finished=finished,
                       outcome=outcome, exit_code=code, phases={"snapshot": 1.5, "rsync": 40.0},
                       standby=standby)
    dom.filesystems = [FilesystemReport("xvda1", "/", "ext4", "copied", files_transferred=7,
                                        bytes_sent=4096)]
    return dom


def metrics_text(tmp_path: Path) -> tuple[str, list[str]]:
    """The text the tool writes on a Dom0 where web01's last backup succeeded and db01's,
    after one success, failed (exit 40) with its standby dirty; and the configured domains."""
    cfg = parse_config((ROOT / "fixtures/sandbox/backup.toml").read_text(),
                       "/etc/domu-backup/backup.toml", allow_lab_hosts=True)
    cfg = dataclasses.replace(cfg, defaults=dataclasses.replace(
        cfg.defaults, report_dir=str(tmp_path / "reports"), lock_dir=str(tmp_path / "lock")))
    for dom in (domain_report("web01", 1060.0, "success", 0, "clean"),
                domain_report("db01", 1060.0, "success", 0, "clean"),
                domain_report("db01", 2000.0, "failed", 40, "dirty")):
        write_report(RunReport(host="dom0-a", domains=[dom], exit_code=dom.exit_code),
                     cfg.defaults.report_dir)
    return generate_latest(registry_for(cfg)).decode(), list(cfg.domains)


def test_promtool_accepts_the_metrics_the_tool_writes(tmp_path):
    text, _domains = metrics_text(tmp_path)
    res = promtool("check", "metrics", stdin=text)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (res.stdout + res.stderr).strip() == "", res.stdout + res.stderr  # no lint
    got = {(s.name, s.labels.get("domain")): s.value
           for family in text_string_to_metric_families(text) for s in family.samples
           if "phase" not in s.labels}
    assert got[("domubk_last_run_exit_code", "web01")] == 0
    assert got[("domubk_standby_clean", "web01")] == 1
    assert got[("domubk_last_run_exit_code", "db01")] == 40
    assert got[("domubk_standby_clean", "db01")] == 0
    assert got[("domubk_last_success_timestamp_seconds", "db01")] == 1060.0


def test_the_alerts_read_the_metrics_the_tool_writes(tmp_path):
    """The rules' metric and label names are the tool's: its file, as node_exporter serves
    it from dom0-a, fires the failed and dirty alerts for db01 alone, and the stale one for
    each configured domain with no success."""
    text, domains = metrics_text(tmp_path)
    inputs = [series(s.name, {**s.labels, **A}, f"{s.value!r}x200")
              for family in text_string_to_metric_families(text) for s in family.samples]
    tests = [{"interval": "1m", "input_series": inputs, "alert_rule_test": [
        {"eval_time": "30m", "alertname": "DomuBackupLastRunFailed",
         "exp_alerts": [failed("db01", A, 40)]},
        {"eval_time": "30m", "alertname": "DomuBackupStandbyDirty",
         "exp_alerts": [dirty("db01", A)]},
        {"eval_time": "2h", "alertname": "DomuBackupStandbyStale",
         "exp_alerts": [never(d) for d in domains if d not in ("web01", "db01")]},
    ]}]
    assert len(tests[0]["alert_rule_test"][2]["exp_alerts"]) == len(domains) - 2 > 0
    res = run_rule_tests(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_readme_holds_a_copy_of_the_alert_rules():
    readme = (ROOT / "README.md").read_text()
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1, \
        f"the README needs one {BEGIN} ... {END} block with the rule file in it"
    match = re.search(re.escape(BEGIN) + r"\n```yaml\n(.*?)```\n" + re.escape(END), readme,
                      re.S)
    assert match is not None, "the README's alert-rules block is not a ```yaml fence"
    assert match.group(1) == RULES.read_text(), \
        f"the README's copy differs from {RULES.relative_to(ROOT)}: paste the file again"
