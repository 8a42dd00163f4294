"""The exit-code table: one class per code, codes unique, the documented table complete."""

from __future__ import annotations

import signal

from toolkit import errors
from toolkit.runners import CommandResult


def test_each_code_belongs_to_one_class():
    seen: dict[int, str] = {}
    for cls in errors._all_error_classes():
        if cls in (errors.Interrupted, errors.ToolkitError):
            continue
        code = cls.exit_code
        assert code not in seen or code == 0, f"{cls.__name__} reuses {code} of {seen.get(code)}"
        seen[code] = cls.__name__
        assert 0 <= code <= 99


def test_table_lists_every_class_with_its_summary():
    rows = errors.exit_code_table()
    names = {name for _code, name, _summary in rows}
    for cls in errors._all_error_classes():
        assert cls.__name__ in names
    assert all(summary for _c, _n, summary in rows)


def test_not_running_here_is_a_successful_skip():
    assert errors.NotRunningHere.exit_code == 0


def test_signal_exit_codes_are_128_plus_n():
    assert errors.Interrupted(signal.SIGTERM).exit_code == 143
    assert errors.Interrupted(signal.SIGINT).exit_code == 130
    assert errors.Interrupted(signal.SIGHUP).exit_code == 129


def test_command_failed_shows_command_code_and_stderr_tail():
    res = CommandResult("dom0-b", ("lvcreate", "-n", "x y"), 5, "",
                        "line1\nline2\n  Volume group \"vg\" has insufficient free space\n", 0.1)
    err = errors.CommandFailed(res)
    text = str(err)
    assert "[dom0-b]" in text
    assert "lvcreate -n 'x y'" in text
    assert "exited 5" in text
    assert "insufficient free space" in text
    assert err.result is res


def test_multi_domain_run_exits_with_most_severe_code():
    assert errors.most_severe([]) == 0
    assert errors.most_severe([0, 0]) == 0
    assert errors.most_severe([0, 35, 1]) == 35
