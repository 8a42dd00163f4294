"""``status --check``: the monitoring plugin's line and exit codes."""

from __future__ import annotations

import pytest

from toolkit import errors
from toolkit.status import DomainStatus
from toolkit.status_check import (
    CRITICAL,
    OK,
    UNKNOWN,
    WARNING,
    check_domain,
    check_line,
    human_age,
    parse_age,
)

NOW = 1_800_000_000.0
DAY = 26 * 3600.0


def row(domain="web01", *, standby="clean", success_ago: float | None = 3600.0,
        outcome="success", running=False, message=None) -> DomainStatus:
    return DomainStatus(
        domain=domain, peer="dom0-b", last_outcome=outcome, last_run_id="r",
        last_success=None if success_ago is None else NOW - success_ago,
        last_success_run_id="r", last_failure=None, last_failure_message=message,
        standby=standby, running=running)


@pytest.mark.parametrize(("text", "seconds"), [("26h", 93600), ("90m", 5400), ("2d", 172800),
                                               ("3600s", 3600), ("45", 45)])
def test_max_age_takes_a_number_and_a_unit(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0h", "-1h", "1.5h", "26H", "h", "26 hours", "1w"])
def test_a_bad_max_age_is_a_usage_error(text):
    with pytest.raises(errors.UsageError, match="--max-age"):
        parse_age(text)


def test_ages_are_shown_in_their_two_largest_units():
    assert [human_age(s) for s in (12, 2400, 5 * 3600 + 12 * 60 + 5, 2 * 86400 + 3 * 3600)] == \
        ["12s", "40m0s", "5h12m", "2d3h"]


@pytest.mark.parametrize(("kwargs", "state", "words"), [
    ({}, OK, "last success 1h0m ago"),
    ({"success_ago": DAY + 1}, CRITICAL, "older than 1d2h"),
    ({"success_ago": None, "outcome": None}, CRITICAL, "never backed up"),
    ({"standby": "dirty", "outcome": "failed"}, CRITICAL, "standby dirty"),
    ({"standby": "dirty", "running": True, "outcome": "success"}, OK, "last success"),
    ({"outcome": "failed", "message": "rsync exited 23"}, WARNING, "last run failed"),
    ({"outcome": "interrupted"}, WARNING, "last run interrupted"),
    ({"standby": "unknown", "success_ago": DAY * 9}, UNKNOWN, "cannot be read"),
    # A promoted standby is the running guest: however recent, the guest has no standby.
    ({"standby": "promoted"}, CRITICAL, "standby promoted on dom0-b"),
])
def test_each_domain_state(kwargs, state, words):
    check = check_domain(row(**kwargs), NOW, DAY)
    assert check.state == state and words in check.text


def test_the_line_is_the_worst_state_with_the_others_named_and_ages_as_perfdata():
    rows = [row("db01"), row("web01", success_ago=2 * 86400.0),
            row("mail", standby="unknown", success_ago=None)]
    code, line = check_line(rows, NOW, DAY)
    assert code == CRITICAL
    assert line.startswith("DOMU-BACKUP CRITICAL - web01: CRITICAL, last success 2d0h ago")
    assert "mail: UNKNOWN, standby state unknown" in line and "db01: last success 1h0m" in line
    assert line.index("web01") < line.index("mail") < line.index("db01")
    assert line.endswith("| 'db01_age'=3600s;;93600;0 'web01_age'=172800s;;93600;0")
    assert "\n" not in line


def test_unknown_outranks_warning_and_ok_is_ok():
    assert check_line([row("a", outcome="failed"), row("b", standby="unknown")], NOW,
                      DAY)[0] == UNKNOWN
    assert check_line([row("a", outcome="failed"), row("b")], NOW, DAY)[0] == WARNING
    code, line = check_line([row("a"), row("b")], NOW, DAY)
    assert code == OK and line.startswith("DOMU-BACKUP OK - a: last success")
    assert check_line([], NOW, DAY)[0] == UNKNOWN


def test_a_pipe_in_a_message_never_starts_the_performance_data():
    failed = row("web01", outcome="failed",
                 message="rsync exited 23 | file has vanished\nsecond line")
    code, line = check_line([failed], NOW, DAY)
    assert code == WARNING and "\n" not in line
    text, perf = line.split(" | ")
    assert "rsync exited 23 / file has vanished second line" in text
    assert perf == "'web01_age'=3600s;;93600;0"
