"""``status --check``: one line and the monitoring plugin exit codes (Nagios, Icinga,
Zabbix, Checkmk run it as is).

Per domain, from the same facts ``status`` shows: CRITICAL when it was never backed up,
its last success is older than ``--max-age``, or its standby is dirty with no run of it in
progress here; WARNING when its last run failed or was interrupted but the standby is still
recent and clean; UNKNOWN when the standby's state cannot be read. The line's state is the
worst of the domains' (OK < WARNING < UNKNOWN < CRITICAL), followed by each domain's age as
performance data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UsageError
from .status import DomainStatus

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_WORSE = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
_AGE = re.compile(r"([0-9]{1,7})([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
PLUGIN = "DOMU-BACKUP"


def parse_age(text: str) -> float:
    """Seconds of ``--max-age``: a whole number with an optional unit s, m, h or d."""
    m = _AGE.fullmatch(str(text).strip())
    if m is None or int(m.group(1)) == 0:
        raise UsageError(f"--max-age {text!r}: expected a whole number above 0 with an "
                         "optional unit s, m, h or d, like 26h")
    return float(int(m.group(1)) * _UNIT[m.group(2)])


def human_age(seconds: float) -> str:
    """``2d3h``, ``5h12m``, ``40m``, ``12s``: the two largest units."""
    s = int(max(seconds, 0))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (s, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return "".join(f"{n}{u}" for n, u in parts[:2])


@dataclass(frozen=True)
class DomainCheck:
    """One domain's state and its part of the line."""

    domain: str
    state: int
    text: str
    age: float | None  # seconds since the last success, None when never


def check_domain(row: DomainStatus, now: float, max_age: float) -> DomainCheck:
    """The state of one domain, by the rules of the module's doc."""
    age = None if row.last_success is None else now - row.last_success
    if row.standby == "unknown":
        return DomainCheck(row.domain, UNKNOWN, "standby state unknown (its marker on "
                                                f"{row.peer} cannot be read)", age)
    if row.standby == "promoted":
        # The guest was started from its standby: it has no standby now, whatever its age.
        return DomainCheck(row.domain, CRITICAL, f"standby promoted on {row.peer}: the guest "
                                                 "runs from it and has no standby", age)
    if age is None:
        return DomainCheck(row.domain, CRITICAL, "never backed up", None)
    if age > max_age:
        return DomainCheck(row.domain, CRITICAL, f"last success {human_age(age)} ago, older "
                                                 f"than {human_age(max_age)}", age)
    if row.standby == "dirty" and not row.running:
        return DomainCheck(row.domain, CRITICAL, "standby dirty: a copy did not finish", age)
    if row.last_outcome in ("failed", "interrupted"):
        why = (row.last_failure_message or row.last_outcome or "")[:80]
        return DomainCheck(row.domain, WARNING, f"last run {row.last_outcome} ({why}); "
                                                f"last success {human_age(age)} ago", age)
    return DomainCheck(row.domain, OK, f"last success {human_age(age)} ago", age)


def check_line(rows: Sequence[DomainStatus], now: float, max_age: float) -> tuple[int, str]:
    """The plugin's exit code and its one line: the worst state, each domain not OK first,
    then the performance data (each domain's age in seconds, max-age as critical)."""
    checks = [check_domain(r, now, max_age) for r in rows]
    if not checks:
        return UNKNOWN, f"{PLUGIN} UNKNOWN - no domain configured"
    worst = max((c.state for c in checks), key=lambda s: _WORSE[s])
    shown = sorted(checks, key=lambda c: -_WORSE[c.state])
    text = "; ".join(f"{c.domain}: {NAMES[c.state] + ', ' if c.state != OK else ''}"
                     f"{_plain(c.text)}" for c in shown)
    perf = " ".join(f"'{c.domain}_age'={int(c.age)}s;;{int(max_age)};0" for c in checks
                    if c.age is not None)
    return worst, f"{PLUGIN} {NAMES[worst]} - {text}" + (f" | {perf}" if perf else "")


def unknown_line(message: str) -> str:
    """The line when the check itself cannot run (config, permissions, ...)."""
    return f"{PLUGIN} UNKNOWN - {_plain(message)}"


def _plain(text: str) -> str:
    """Text a monitoring system reads as text: "|" starts its performance data, and the
    output is one line."""
    return " ".join(text.replace("|", "/").split())
