"""The systemd units that run the tool on a schedule: ``install-units`` writes them.

- ``domu-backup.service``: a oneshot ``backup --all`` (a guest not running here is a quiet
  skip, so every Dom0 of a pair runs the same units), at low CPU and I/O priority;
- ``domu-backup.timer``: when, from ``[schedule]`` (``on_calendar``, a randomized delay so
  a fleet does not start at once), ``Persistent=true`` so a run missed while the Dom0 was
  down happens at the next boot;
- ``domu-backup-verify.service`` and ``.timer``: weekly by default (``verify_on_calendar``),
  ``verify --against-source --all``: each guest running here compared with its standby by
  checksum, writing nothing, at idle priority; a backup and a verify of one domain never
  run at once (both take the domain's lock);
- ``domu-backup-recover.service``: at boot, before the timer's first run, ``recover --host
  local``: what a power loss left on this host (journals, snapshots, maps) is cleaned
  before anything else runs. Only this host: the peer may still be down.

Pure: the text of each unit from the config and the program's path. The command writes
them (``/etc/systemd/system``, atomically) and says what to enable.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from .config import Config

SERVICE, TIMER, RECOVER = "domu-backup.service", "domu-backup.timer", "domu-backup-recover.service"
VERIFY, VERIFY_TIMER = "domu-backup-verify.service", "domu-backup-verify.timer"
UNIT_DIR = "/etc/systemd/system"


@dataclass(frozen=True)
class Unit:
    """One unit file: its name and text."""

    name: str
    text: str


def _exec(program: str, *args: str) -> str:
    """An ExecStart line's command: systemd reads it like a shell word list (no shell),
    with its specifiers (``%``) and variables (``$``) doubled to stand for themselves."""
    if not program.startswith("/"):
        raise ValueError(f"the program's path must be absolute, not {program!r}")
    return shlex.join([program, *args]).replace("%", "%%").replace("$", "$$")


def _timer(what: str, on_calendar: str, delay: str, service: str) -> str:
    """A timer that starts ``service`` at ``on_calendar``, up to ``delay`` later at random,
    and at the next boot when a start was missed."""
    return f"""\
[Unit]
Description=domu-backup: {what}

[Timer]
OnCalendar={on_calendar}
RandomizedDelaySec={delay}
Persistent=true
Unit={service}

[Install]
WantedBy=timers.target
"""


def units(config: Config, program: str) -> tuple[Unit, ...]:
    """The units for this config, each running ``program`` (the installed ``domu-backup``)."""
    schedule = config.schedule
    conf = ("--config", os.path.abspath(config.path))  # the units run from /
    service = f"""\
[Unit]
Description=domu-backup: copy the guests running here to their standby on the peer
After=network-online.target {RECOVER}
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={_exec(program, "backup", "--all", *conf)}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
"""
    timer = _timer("when the guests are copied to their standby", schedule.on_calendar,
                   schedule.randomized_delay, SERVICE)
    recover = f"""\
[Unit]
Description=domu-backup: finish what a run killed by a power loss left on this host
After=local-fs.target lvm2-monitor.service
Before={SERVICE}

[Service]
Type=oneshot
ExecStart={_exec(program, "recover", "--host", "local", *conf)}
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""
    verify = f"""\
[Unit]
Description=domu-backup: compare the guests running here with their standby, by checksum
After=network-online.target {RECOVER} {SERVICE}
Wants=network-online.target

[Service]
Type=oneshot
ExecStart={_exec(program, "verify", "--against-source", "--all", *conf)}
Nice=19
IOSchedulingClass=idle
"""
    verify_timer = _timer("when the standbys are compared with their guests",
                          schedule.verify_on_calendar, schedule.randomized_delay, VERIFY)
    return (Unit(SERVICE, service), Unit(TIMER, timer), Unit(RECOVER, recover),
            Unit(VERIFY, verify), Unit(VERIFY_TIMER, verify_timer))


def enable_hint() -> str:
    """What to run once the units are written."""
    return (f"systemctl daemon-reload && systemctl enable --now {TIMER} {VERIFY_TIMER} "
            f"{RECOVER}")
