"""Faults that need timing in the lab: a snapshot that overflows before or during the copy (R3)."""

from __future__ import annotations

import threading
import time

import pytest

from toolkit.lab.rehearse import run_backup, standby_marker

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

FAILPOINT = "DOMU_BACKUP_FAILPOINT"
SMALL = "/etc/domu-backup/small-snapshot.toml"


def marker(lab):
    return standby_marker(lab, "web01")


def small_snapshot_config(lab):
    a = lab.runner("dom0-a")
    text = a.run(["cat", "/etc/domu-backup/backup.toml"]).stdout
    a.run(["tee", SMALL], input=text.replace('snapshot_size = "64M"', 'snapshot_size = "4M"'))
    a.run(["chmod", "0600", SMALL])


def write_to_origin_when(lab, condition, mib=16):
    """In a thread: once condition() holds, write mib MiB into the origin's swap area."""
    a = lab.runner("dom0-a")

    def writer():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not condition(a):
            time.sleep(0.5)
        a.run(["dd", "if=/dev/urandom", "of=/dev/vg_a/web01", "bs=1M", "seek=226",
               f"count={mib}", "oflag=direct", "status=none"], timeout=300)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    return t


def snapshot_exists(a):
    return "domubk" in a.run(["lvs", "--noheadings", "-o", "lv_name"]).stdout


@pytest.mark.parametrize("when", ["before", "during"])
def test_overflowed_snapshot_fails_run_and_keeps_standby_dirty(fresh, when):
    # R3: a tiny COW area and a writer on the origin; before and during the copy.
    small_snapshot_config(fresh)
    if when == "before":
        env = {FAILPOINT: "after:snapshot:sleep=20"}
        cond = snapshot_exists
    else:
        env = {FAILPOINT: "after:rsync@1:sleep=20"}

        def cond(a):  # the standby is marked dirty: the copy has begun
            return '"dirty"' in fresh.runner("dom0-b").run(
                ["cat", "/var/lib/domu-backup/standby/web01.json"], check=False).stdout
    t = write_to_origin_when(fresh, cond)
    res = run_backup(fresh, "web01", "--config", SMALL, env=env)
    t.join(timeout=300)
    assert res.exit_code == 31, res.stdout + res.stderr
    assert "snapshot" in res.stderr and "invalid" in res.stderr.lower() + res.stdout.lower()
    if when == "during":
        assert marker(fresh)["state"] == "dirty"
