"""The failpoint is a test hook: honoured only where the lab enabled test hooks, and parsed
strictly into a one-line usage error."""

from __future__ import annotations

import pytest
from fakes import FakeHost, config, web01_facts

from toolkit import errors
from toolkit.execute import Executor
from toolkit.failpoint import Failpoint
from toolkit.plan import plan_backup
from toolkit.report import DomainReport

RUN = "20260101T000000Z-abcd"


def test_a_stray_failpoint_on_a_host_without_test_hooks_is_ignored_and_said(tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr("toolkit.failpoint.TEST_HOOKS_FILE", str(tmp_path / "absent"))
    monkeypatch.setenv("DOMU_BACKUP_FAILPOINT", "after:snapshot:sigkill")
    said: list[str] = []
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg = config(tmp_path)
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01"),
                  log=said.append)
    assert ex.failpoint is None
    assert any("ignored" in m and "test hooks" in m for m in said)
    ex.run()  # the run completes: nothing was killed
    assert src.leftovers() == [] and peer.leftovers() == []


def test_where_the_lab_enabled_test_hooks_the_failpoint_acts(tmp_path, monkeypatch):
    hooks = tmp_path / "test-hooks"
    hooks.write_text("on\n")
    monkeypatch.setattr("toolkit.failpoint.TEST_HOOKS_FILE", str(hooks))
    monkeypatch.setenv("DOMU_BACKUP_FAILPOINT", "after:snapshot:raise")
    assert Failpoint.from_env() == Failpoint("after", "snapshot", 0, "raise")


@pytest.mark.parametrize(("raw", "why"), [
    ("after:mount", "three parts"),
    ("during:mount:raise", "'when' must be before or after"),
    ("after:mount@0:raise", "not a whole number from 1"),
    ("after:mount@x:raise", "not a whole number from 1"),
    ("after:mnt:raise", "unknown action 'mnt'"),
    ("after:mount:explode", "unknown effect 'explode'"),
    ("after:mount:sleep=soon", "sleep needs seconds"),
    ("after:mount:sleep=99999", "0 to 3600"),
])
def test_a_malformed_failpoint_is_a_one_line_usage_error(raw, why):
    with pytest.raises(errors.UsageError, match=why) as raised:
        Failpoint.parse(raw)
    assert "\n" not in str(raised.value) and raised.value.exit_code == 4


@pytest.mark.parametrize("raw", ["before:rsync@2:raise", "after:mount@3:sigkill",
                                 "before:marker:sleep=20", "after:bootwrite:sighup"])
def test_well_formed_failpoints_parse(raw):
    fp = Failpoint.parse(raw)
    assert f"{fp.when}:{fp.action}" in raw
