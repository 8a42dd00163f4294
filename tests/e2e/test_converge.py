"""R1, R10: a run killed from outside (kill -9 by another process) at the snapshot, in the
middle of the copy or in teardown leaves no process of the tool running on either host, and
the next plain ``backup`` (no ``recover``) converges by itself: exit 0, what it cleaned in its
report, a clean marker, a clean audit and nothing left behind. A ``dd`` left holding the
killed run's snapshot open is stopped by the next run, which then removes the snapshot.
"""

from __future__ import annotations

import json
import time

import pytest
from lab_checks import snapshot_exists

from toolkit.lab.faults import signal_from_outside, tool_processes, wait_for
from toolkit.lab.rehearse import audit, run_backup, standby_marker, start_backup, start_in

pytestmark = [pytest.mark.e2e]

FAILPOINT = "DOMU_BACKUP_FAILPOINT"
SLOW = "/etc/domu-backup/slow.toml"  # the sandbox config with rsync limited to 100 KiB/s


def kill_from_outside(lab) -> None:
    signal_from_outside(lab, "KILL")


def rsync_running(a) -> bool:
    return any("rsync" in p for p in tool_processes(a))


@pytest.mark.parametrize("moment", ["snapshot", "copy", "teardown"])
def test_sigkill_from_outside_then_a_plain_backup_converges(fresh, moment):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    env = {}
    undo_fake = None
    if moment == "snapshot":
        env = {FAILPOINT: "after:snapshot:sleep=300"}
    elif moment == "copy":
        text = a.run(["cat", "/etc/domu-backup/backup.toml"], timeout=60).stdout
        a.run(["sh", "-c", f"umask 077 && cat > {SLOW}"], timeout=60,
              input=text.replace("[defaults]\n", '[defaults]\nbwlimit = "100"\n', 1))
        env = {"DOMU_BACKUP_CONFIG": SLOW}
    else:
        # umount stalls (then runs the real one): the run is in its teardown when killed
        a.run(["sh", "-c", "cat > /usr/local/sbin/umount && chmod 0755 /usr/local/sbin/umount"],
              timeout=60, input="#!/bin/sh\ntouch /run/in-teardown\nsleep 300\n"
                                'exec /usr/bin/umount "$@"\n')
        env = {FAILPOINT: "after:rsync@1:raise"}

        def undo_fake():
            a.run(["rm", "-f", "/usr/local/sbin/umount", "/run/in-teardown"], timeout=60)
            a.run(["pkill", "-KILL", "-f", "/usr/local/sbin/umount"], check=False, timeout=60)
    try:
        run = start_backup(fresh, "web01", env=env)
        if moment == "snapshot":
            wait_for("the snapshot", lambda: snapshot_exists(a))
        elif moment == "copy":
            wait_for("rsync", lambda: rsync_running(a))
            time.sleep(3)
        else:
            wait_for("teardown", lambda: a.run(["test", "-e", "/run/in-teardown"],
                                               check=False, timeout=60).exit_code == 0)
        kill_from_outside(fresh)
        assert run.wait(timeout=120) == 137
    finally:
        if undo_fake is not None:
            undo_fake()
        a.run(["rm", "-f", SLOW], timeout=60)
    # No process of the tool outlives it, on either host (the kernel ends its copy).
    wait_for("the tool's processes to end",
             lambda: tool_processes(a) == [] and tool_processes(b) == [], timeout=60)
    # Before anything cleans: the killed run did leave work for the next one.
    left = {c: fresh.sandbox.leak_report(c) for c in ("dom0-a", "dom0-b")}
    assert left["dom0-a"], left
    if moment == "snapshot":
        # A dd stuck on the snapshot (as a boot-area copy could be) holds it open: the
        # next run must stop it, or the snapshot could never be removed.
        snap = next(n.strip() for n in a.run(["lvs", "--noheadings", "-o", "lv_name", "vg_a"],
                                             timeout=60).stdout.split() if "domubk-" in n)
        a.run(["mkfifo", "/run/held.fifo"], timeout=60)
        holder = start_in(fresh, "dom0-a", ["dd", f"if=/dev/vg_a/{snap}",
                                            "of=/run/held.fifo", "bs=4k"])
        wait_for("dd to hold the snapshot", lambda: a.run(  # lv_attr's 6th: (o)pen
            ["lvs", "--noheadings", "-o", "lv_attr", f"vg_a/{snap}"],
            timeout=60).stdout.strip()[5] == "o")
    # The next plain backup converges by itself.
    try:
        res = run_backup(fresh, "web01")
    finally:
        if moment == "snapshot":
            a.run(["rm", "-f", "/run/held.fifo"], timeout=60)
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads(a.run(["cat", "/var/lib/domu-backup/reports/web01.json"],
                              timeout=60).stdout)
    assert report["cleaned"], report  # what the killed run left, removed by this run
    assert any("snapshot" in line for line in report["cleaned"]), report["cleaned"]
    if moment == "snapshot":
        assert any("stopped process" in line and f"if=/dev/vg_a/{snap}" in line
                   for line in report["cleaned"]), report["cleaned"]
        assert holder.wait(timeout=60) in (143, 137)  # ended by recover's TERM (or KILL)
    marker = standby_marker(fresh, "web01")
    assert marker["state"] == "clean" and marker["last_success_run_id"] == marker["run_id"]
    audited = audit(fresh, "web01")
    assert [x for x in audited if x.name != "boot area"], "the audit compared no filesystem"
    assert {x.name: x.differences for x in audited if x.differences} == {}
