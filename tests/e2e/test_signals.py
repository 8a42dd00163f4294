"""R1, R16: signals from outside the run, while one of its commands runs.

Another process of the Dom0 sends the signal (``pkill`` in its own ``docker exec``), never
the tool itself, and it lands while a child command works: ``lvcreate`` (made slow by a
wrapper that sleeps before running the real one) and ``rsync`` (slowed by a bandwidth
limit). A second signal arrives while teardown's ``umount`` runs. Each time: the exit code
of the first signal, nothing of the tool left on either host (no process, map, mount, run
directory or journal: the leak check, before anything cleans), and the standby untouched
or marked dirty until the next plain run converges.
"""

from __future__ import annotations

import json

import pytest

from toolkit.lab.faults import (
    flag_set,
    install_slow,
    signal_from_outside,
    slow_copy_config,
    tool_processes,
    wait_for,
)
from toolkit.lab.rehearse import audit, leftovers, run_backup, standby_marker, start_backup

pytestmark = [pytest.mark.e2e]

SLOW = "/etc/domu-backup/slow-signals.toml"


def no_tool_process_survives(lab) -> None:
    a, b = lab.runner("dom0-a"), lab.runner("dom0-b")
    wait_for("the tool's processes to end on both hosts",
             lambda: tool_processes(a) == [] and tool_processes(b) == [], timeout=60)


def test_signals_from_outside_while_commands_run_and_a_second_one_in_teardown(fresh):
    a = fresh.runner("dom0-a")
    before = a.run(["lvs", "--noheadings", "-o", "lv_name", "vg_a"], timeout=60).stdout

    # 1. SIGHUP while lvcreate runs: the snapshot is never left behind, exit 128+1.
    undo = install_slow(fresh, "dom0-a", "lvcreate", "/run/in-lvcreate", 6)
    try:
        run = start_backup(fresh, "web01")
        wait_for("lvcreate to start", lambda: flag_set(fresh, "dom0-a", "/run/in-lvcreate"))
        assert run.running(), "the run ended before the signal"
        signal_from_outside(fresh, "HUP")
        assert run.wait(timeout=300) == 129
    finally:
        undo()
    no_tool_process_survives(fresh)
    assert leftovers(fresh) == {"dom0-a": [], "dom0-b": []}
    assert a.run(["lvs", "--noheadings", "-o", "lv_name", "vg_a"], timeout=60).stdout == before
    assert standby_marker(fresh, "web01") == {}  # the standby was never touched
    report = json.loads(a.run(["cat", "/var/lib/domu-backup/reports/web01.json"],
                              timeout=60).stdout)
    assert report["exit_code"] == 129 and "SIGHUP" in report["message"]

    # 2. SIGINT while rsync copies, then SIGTERM while teardown unmounts: teardown finishes
    # (the second signal is deferred), the run exits for the first one (128+2).
    slow_copy_config(fresh, SLOW)
    undo = install_slow(fresh, "dom0-a", "umount", "/run/in-teardown", 5)
    try:
        run = start_backup(fresh, "web01", "--config", SLOW)
        wait_for("rsync to copy", lambda: any("rsync" in p for p in tool_processes(a)))
        assert flag_set(fresh, "dom0-a", "/run/in-teardown") is False
        signal_from_outside(fresh, "INT")
        wait_for("teardown's umount", lambda: flag_set(fresh, "dom0-a", "/run/in-teardown"))
        signal_from_outside(fresh, "TERM")
        assert run.wait(timeout=600) == 130
    finally:
        undo()
        a.run(["rm", "-f", SLOW], timeout=60)
    no_tool_process_survives(fresh)
    assert leftovers(fresh) == {"dom0-a": [], "dom0-b": []}
    assert standby_marker(fresh, "web01")["state"] == "dirty"  # the copy did not finish

    # 3. The next plain run finds nothing to clean and converges.
    res = run_backup(fresh, "web01")
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads(a.run(["cat", "/var/lib/domu-backup/reports/web01.json"],
                              timeout=60).stdout)
    assert report["cleaned"] == [], report["cleaned"]
    marker = standby_marker(fresh, "web01")
    assert marker["state"] == "clean" and marker["last_success_run_id"] == marker["run_id"]
    audited = audit(fresh, "web01")
    assert {x.name: x.differences for x in audited if x.differences} == {}
