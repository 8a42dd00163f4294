"""The operator's hooks when a domain's backup ends: what they get, and what they cannot do."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fakes import config

from toolkit import app, errors
from toolkit.config import Hooks, parse_config
from toolkit.hooks import run_hook
from toolkit.report import DomainReport

BASE = ('[cluster.dom0s]\na = "ssh://root@a:22"\nb = "ssh://root@b:22"\n'
        '[hypervisor]\nuri = "xen:///system"\n')


def recorder(tmp_path: Path, code: int = 0, sleep: float = 0) -> list[str]:
    """A hook that writes what it got (env and stdin) to tmp_path/got.json, then exits."""
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys, time\n"
        f"time.sleep({sleep})\n"
        "got = {'env': {k: v for k, v in os.environ.items() if k.startswith('DOMU_BACKUP')},\n"
        "       'stdin': json.load(sys.stdin), 'args': sys.argv[1:], 'cwd': os.getcwd()}\n"
        f"open({str(tmp_path / 'got.json')!r}, 'w').write(json.dumps(got))\n"
        f"sys.stderr.write('said something\\n')\nsys.exit({code})\n")
    return [sys.executable, str(script), "web01"]


def report(outcome="success", code=0) -> DomainReport:
    return DomainReport(domain="web01", run_id="20261207T020000Z-ab12", outcome=outcome,
                        exit_code=code, message="2 filesystem(s) copied")


def test_a_hook_gets_the_domain_run_outcome_and_code_and_the_report_on_stdin(tmp_path):
    rep = report("failed", 40)
    line = run_hook("on_failure", recorder(tmp_path), rep, 30)
    got = json.loads((tmp_path / "got.json").read_text())
    assert got["env"] == {"DOMU_BACKUP_DOMAIN": "web01",
                          "DOMU_BACKUP_RUN_ID": "20261207T020000Z-ab12",
                          "DOMU_BACKUP_OUTCOME": "failed", "DOMU_BACKUP_EXIT_CODE": "40"}
    assert got["stdin"]["domain"] == "web01" and got["stdin"]["exit_code"] == 40
    assert got["args"] == ["web01"] and got["cwd"] == "/"
    assert line.endswith("exited 0") and rep.hooks == [line]
    assert rep.exit_code == 40 and rep.outcome == "failed"  # unchanged


def test_a_failing_hook_is_said_and_changes_nothing(tmp_path):
    rep = report()
    line = run_hook("on_success", recorder(tmp_path, code=3), rep, 30)
    assert "exited 3: said something" in line
    assert rep.exit_code == 0 and rep.outcome == "success"


def test_a_hook_past_its_timeout_is_killed(tmp_path):
    rep = report()
    line = run_hook("on_success", recorder(tmp_path, sleep=30), rep, 0.5)
    assert line.endswith("killed after 0.5s") and not (tmp_path / "got.json").exists()


def test_a_hook_that_cannot_start_is_said(tmp_path):
    rep = report()
    line = run_hook("on_success", [str(tmp_path / "missing")], rep, 5)
    assert "could not start" in line and rep.hooks == [line]


def test_which_hook_runs_for_which_outcome():
    hooks = Hooks(on_success=("/bin/ok",), on_failure=("/bin/bad",))
    assert hooks.argv("success") == ("/bin/ok",)
    assert hooks.argv("failed") == hooks.argv("interrupted") == ("/bin/bad",)
    assert hooks.argv("skipped") == hooks.argv("dry-run") == ()


def test_a_domains_hooks_replace_the_defaults_key_by_key(tmp_path):
    cfg = parse_config(BASE + '[defaults.hooks]\non_success = ["/bin/ok"]\ntimeout = 5\n'
                              '[domains.web01]\npeer = "b"\n[domains.web01.hooks]\n'
                              'on_failure = ["/bin/bad", "x"]\n'
                              '[domains.db01]\npeer = "b"\n', tmp_path / "b.toml")
    web = cfg.domain("web01").effective_hooks(cfg.defaults)
    assert web == Hooks(("/bin/ok",), ("/bin/bad", "x"), 5.0)
    assert cfg.domain("db01").effective_hooks(cfg.defaults) == Hooks(("/bin/ok",), (), 5.0)


@pytest.mark.parametrize("line", ['on_success = ["ok.sh"]', 'on_failure = ["../bin/x"]',
                                  'on_success = ["/bin/x", "a\\nb"]', 'on_success = "/bin/x"',
                                  'on_success = ["/bin/x", ""]', "timeout = 0"])
def test_a_bad_hook_is_a_config_error_naming_the_key(line, tmp_path):
    with pytest.raises(errors.ConfigError, match=r"defaults\.hooks\."):
        parse_config(BASE + f"[defaults.hooks]\n{line}\n", tmp_path / "b.toml")


def test_a_backup_runs_the_hook_of_each_domains_outcome(tmp_path, monkeypatch):
    import dataclasses

    cfg = config(tmp_path)
    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    ok, bad = recorder(tmp_path / "ok"), recorder(tmp_path / "bad")
    cfg = dataclasses.replace(cfg, defaults=dataclasses.replace(
        cfg.defaults, hooks=Hooks(tuple(ok), tuple(bad), 30)))
    outcomes = iter([("success", 0), ("failed", 40)])

    def fake(config, domain, hosts, **kw):
        outcome, code = next(outcomes)
        return DomainReport(domain=domain, run_id="r", outcome=outcome, exit_code=code)

    monkeypatch.setattr(app, "backup_domain", fake)
    run = app.backup(cfg, ["web01"], app.Hosts())
    assert json.loads((tmp_path / "ok" / "got.json").read_text())["env"][
        "DOMU_BACKUP_OUTCOME"] == "success"
    assert not (tmp_path / "bad" / "got.json").exists() and run.exit_code == 0
    run = app.backup(cfg, ["web01"], app.Hosts())
    assert json.loads((tmp_path / "bad" / "got.json").read_text())["env"][
        "DOMU_BACKUP_EXIT_CODE"] == "40"
    assert run.exit_code == 40 and run.domains[0].hooks[0].startswith("on_failure: ")
