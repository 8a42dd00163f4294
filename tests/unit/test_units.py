"""The systemd units ``install-units`` writes: their text, the schedule, the command."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from fakes import config

from toolkit import errors
from toolkit.config import parse_config
from toolkit.units import RECOVER, SERVICE, TIMER, VERIFY, VERIFY_TIMER, enable_hint, units

BASE = ('[cluster.dom0s]\na = "ssh://root@a:22"\nb = "ssh://root@b:22"\n'
        '[hypervisor]\nuri = "xen:///system"\n')


def by_name(cfg, program="/usr/local/bin/domu-backup") -> dict[str, str]:
    return {u.name: u.text for u in units(cfg, program)}


def test_the_service_backs_up_every_guest_running_here_with_this_config(tmp_path):
    cfg = config(tmp_path)
    text = by_name(cfg)[SERVICE]
    assert f"ExecStart=/usr/local/bin/domu-backup backup --all --config {cfg.path}\n" in text
    assert "Type=oneshot\n" in text and "Nice=10\n" in text
    assert f"After=network-online.target {RECOVER}\n" in text


def test_the_timer_is_the_schedule_persistent_and_spread(tmp_path):
    cfg = parse_config(BASE + '[schedule]\non_calendar = "Mon..Fri 22:30"\n'
                              'randomized_delay = "1h"\n', tmp_path / "b.toml")
    text = by_name(cfg)[TIMER]
    assert "OnCalendar=Mon..Fri 22:30\n" in text and "RandomizedDelaySec=1h\n" in text
    assert "Persistent=true\n" in text and f"Unit={SERVICE}\n" in text
    assert "WantedBy=timers.target" in text
    default = by_name(parse_config(BASE, tmp_path / "b.toml"))[TIMER]
    assert "OnCalendar=*-*-* 02:00:00\n" in default and "RandomizedDelaySec=30m\n" in default


def test_recover_runs_at_boot_on_this_host_only_before_any_backup(tmp_path):
    cfg = config(tmp_path)
    text = by_name(cfg)[RECOVER]
    assert f"recover --host local --config {cfg.path}\n" in text
    assert f"Before={SERVICE}\n" in text and "WantedBy=multi-user.target" in text
    assert enable_hint() == (f"systemctl daemon-reload && systemctl enable --now {TIMER} "
                             f"{VERIFY_TIMER} {RECOVER}")


def test_a_path_with_spaces_is_quoted_and_a_relative_program_refused(tmp_path):
    cfg = config(tmp_path)
    assert "ExecStart='/opt/my tools/domu-backup' backup" in by_name(
        cfg, "/opt/my tools/domu-backup")[SERVICE]
    with pytest.raises(ValueError):
        units(cfg, "domu-backup")


@pytest.mark.parametrize("line", ['on_calendar = "daily\\nExecStart=/bin/sh"',
                                  'on_calendar = ""', 'randomized_delay = "1 hour"',
                                  'randomized_delay = "30m\\n"', "on_calendar = 3"])
def test_a_schedule_that_could_inject_a_line_or_is_no_span_is_refused(line, tmp_path):
    with pytest.raises(errors.ConfigError, match="schedule"):
        parse_config(BASE + f"[schedule]\n{line}\n", tmp_path / "b.toml")


def test_install_units_dry_run_prints_them_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from test_cli_errors import _config, cli

    monkeypatch.setattr("shutil.which", lambda name: "/usr/local/bin/domu-backup")
    code, out, err = cli(capsys, "install-units", "--dry-run", "--config",
                         str(_config(tmp_path)), "--unit-dir", str(tmp_path / "units"))
    assert code == 0, err
    assert f"# {SERVICE}\n" in out and f"# {TIMER}\n" in out and f"# {RECOVER}\n" in out
    assert not (tmp_path / "units").exists()


def test_install_units_writes_each_unit_0644_atomically(tmp_path, capsys, monkeypatch):
    from test_cli_errors import _config, cli

    monkeypatch.setattr("shutil.which", lambda name: "/usr/local/bin/domu-backup")
    monkeypatch.setattr("toolkit.config.check_root", lambda: None)
    where = tmp_path / "units"
    where.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    os.symlink(victim, where / SERVICE)  # planted: replaced, never written through
    code, out, err = cli(capsys, "install-units", "--config", str(_config(tmp_path)),
                         "--unit-dir", str(where))
    assert code == 0, err
    assert sorted(p.name for p in where.iterdir()) == sorted([SERVICE, TIMER, RECOVER, VERIFY,
                                                              VERIFY_TIMER])
    for p in where.iterdir():
        assert stat.S_IMODE(p.lstat().st_mode) == 0o644 and not p.is_symlink()
    assert victim.read_text() == "keep\n"
    assert "systemctl enable --now" in out


def test_install_units_without_the_program_installed_is_a_usage_error(tmp_path, capsys,
                                                                      monkeypatch):
    from test_cli_errors import _config, cli

    monkeypatch.setattr("shutil.which", lambda name: None)
    code, _out, err = cli(capsys, "install-units", "--dry-run", "--config",
                          str(_config(tmp_path)))
    assert code == 4 and "not on PATH" in err
    assert Path(tmp_path).exists()


def test_the_config_path_is_absolute_and_systemds_specials_stand_for_themselves(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(BASE, "etc/backup 100%$x.toml")
    text = by_name(cfg, "/opt/d%b/domu-backup")[SERVICE]
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    assert line == (f"ExecStart=/opt/d%%b/domu-backup backup --all --config "
                    f"'{tmp_path}/etc/backup 100%%$$x.toml'")


def test_the_weekly_verify_compares_every_guest_running_here_at_idle_priority():
    cfg = parse_config(BASE + '[schedule]\nverify_on_calendar = "Sat 03:15"\n', "/etc/x.toml")
    by_name = {u.name: u.text for u in units(cfg, "/usr/bin/domu-backup")}
    assert ("ExecStart=/usr/bin/domu-backup verify --against-source --all --config "
            "/etc/x.toml") in by_name[VERIFY]
    assert "IOSchedulingClass=idle" in by_name[VERIFY]
    assert f"After=network-online.target {RECOVER} {SERVICE}" in by_name[VERIFY]
    timer = by_name[VERIFY_TIMER]
    assert "OnCalendar=Sat 03:15" in timer and f"Unit={VERIFY}" in timer
    assert "Persistent=true" in timer
    assert VERIFY_TIMER in enable_hint()


def test_the_weekly_verify_defaults_to_sunday_morning():
    cfg = parse_config(BASE, "/etc/x.toml")
    timer = {u.name: u.text for u in units(cfg, "/usr/bin/domu-backup")}[VERIFY_TIMER]
    assert "OnCalendar=Sun *-*-* 04:00:00" in timer
