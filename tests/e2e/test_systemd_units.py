"""The systemd units ``install-units`` writes, checked by systemd itself (``systemd-analyze
verify``, on this machine: a Debian 12 host has systemd; no lab needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from toolkit.config import parse_config
from toolkit.units import units

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def written(tmp_path: Path, extra: str = "") -> list[str]:
    cfg = parse_config((ROOT / "fixtures/sandbox/backup.toml").read_text() + extra,
                       "/etc/domu-backup/backup.toml", allow_lab_hosts=True)
    program = tmp_path / "domu-backup"  # an executable where ExecStart points
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    out = []
    for unit in units(cfg, str(program)):
        (tmp_path / unit.name).write_text(unit.text)
        out.append(str(tmp_path / unit.name))
    return out


def verify(paths: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYSTEMD_LOG_LEVEL": "info"}
    return subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True,
                          text=True, env=env, check=False, timeout=120)


def test_systemd_accepts_every_unit(tmp_path):
    res = verify(written(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stderr.strip() == "", res.stderr


def test_systemd_itself_refuses_a_calendar_event_that_does_not_exist(tmp_path):
    # The config's pattern lets systemd's grammar through; systemd is the judge of it.
    res = verify(written(tmp_path, '\n[schedule]\non_calendar = "*-*-* 02:61:00"\n'))
    assert res.returncode != 0 and "calendar" in res.stderr, res.stderr
