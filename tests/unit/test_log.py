"""The tool's one logger: timestamped lines on the stderr of the moment, never an error."""

from __future__ import annotations

import io
import re
import sys

from toolkit import log


def test_each_part_writes_one_timestamped_line_on_the_current_stderr(capsys):
    log.info("report written to /var/lib/domu-backup/reports/last.json")
    log.lab("sandbox up (12s)")
    log.bench("workload small: preparing")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    stamp = r"[0-2][0-9]:[0-5][0-9]:[0-6][0-9] "
    assert re.fullmatch(stamp + r"report written to /var/lib/domu-backup/reports/last\.json",
                        lines[0])
    assert re.fullmatch(stamp + r"sandbox up \(12s\)", lines[1])
    assert re.fullmatch(stamp + r"bench: workload small: preparing", lines[2])


def test_the_handler_is_set_up_once_and_nothing_repeats_a_line(capsys):
    for _ in range(3):
        log.logger()
    log.info("once")
    assert capsys.readouterr().err.count("once") == 1
    ours = [h for h in log.logger().handlers if isinstance(h, log._Stderr)]
    assert len(ours) == 1 and not log.logger().propagate  # (pytest may add its own capture)


def test_a_closed_stderr_costs_the_line_not_the_run(monkeypatch):
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    log.info("nobody reads this")  # no exception, no "--- Logging error ---"


def test_the_commands_the_lab_and_the_bench_write_through_it():
    from toolkit import app, lab
    from toolkit.lab import rehearse
    from toolkit.lab.bench import runs

    assert app.stderr_log is log.info
    assert lab.say is log.lab and rehearse.log is log.lab
    assert runs.log is log.bench
