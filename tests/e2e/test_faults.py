"""Faults that need timing in the lab: a snapshot that overflows before or during the copy (R3),
with the standby's data checked file by file."""

from __future__ import annotations

import threading
import time

import pytest
from lab_checks import snapshot_exists

from toolkit.lab.audit import mounted
from toolkit.lab.faults import tool_processes, tree_digest, wait_for
from toolkit.lab.rehearse import run_backup, standby_marker, start_backup

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

FAILPOINT = "DOMU_BACKUP_FAILPOINT"
SMALL = "/etc/domu-backup/small-snapshot.toml"
SOURCE = "/dev/vg_a/web01"
STANDBY = "/dev/vg_b/web01"


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


def test_snapshot_overflowed_before_the_copy_fails_run_and_changes_nothing(fresh):
    # R3: a tiny COW area and a writer on the origin while the run waits before copying.
    small_snapshot_config(fresh)
    before = tree_digest(fresh, "dom0-b", STANDBY)
    t = write_to_origin_when(fresh, snapshot_exists)
    res = run_backup(fresh, "web01", "--config", SMALL,
                     env={FAILPOINT: "after:snapshot:sleep=20"})
    t.join(timeout=300)
    assert res.exit_code == 31, res.stdout + res.stderr
    assert "snapshot" in res.stderr and "invalid" in res.stderr.lower() + res.stdout.lower()
    assert tree_digest(fresh, "dom0-b", STANDBY) == before


def test_snapshot_overflowing_while_rsync_reads_deletes_nothing_on_the_standby(fresh):
    """R3 with the data checked: the standby's every file, before and after, by checksum.

    A big new file on the guest makes rsync read (at a limited rate) long enough for the
    origin's writer to overflow the 4 MiB snapshot while rsync runs; the times of rsync's
    start, the overflow and rsync's end are recorded, and a fault that landed after the
    copy fails the test instead of passing it.
    """
    a = fresh.runner("dom0-a")
    small_snapshot_config(fresh)
    text = a.run(["cat", SMALL]).stdout
    a.run(["tee", SMALL], input=text.replace("[defaults]\n", '[defaults]\nbwlimit = "256"\n', 1))
    with mounted(a, SOURCE, "/run/domubk-lab-write", "w", readonly=False) as filesystems:
        root = filesystems["1"][0]
        a.run(["dd", "if=/dev/urandom", f"of={root}/r3-new-file", "bs=1M", "count=8",
               "status=none"], timeout=300)
    before = tree_digest(fresh, "dom0-b", STANDBY)
    run = start_backup(fresh, "web01", "--config", SMALL)
    moments = {"rsync started": wait_for("rsync", lambda: any("rsync" in p
                                                               for p in tool_processes(a)))}
    a.run(["dd", "if=/dev/urandom", "of=/dev/vg_a/web01", "bs=1M", "seek=226", "count=16",
           "oflag=direct", "status=none"], timeout=300)
    moments["overflow written"] = time.monotonic()
    still_copying = any("rsync" in p for p in tool_processes(a))
    code = run.wait(timeout=600)
    moments["run ended"] = time.monotonic()
    print({k: round(v - moments["rsync started"], 1) for k, v in moments.items()})
    assert still_copying, f"the overflow landed after rsync ended: {moments}"
    assert code == 31, code
    assert standby_marker(fresh, "web01")["state"] == "dirty"
    after = tree_digest(fresh, "dom0-b", STANDBY)
    lost = {p: v for p, v in before.items() if after.get(p) != v}
    assert lost == {}, f"the standby lost or changed {len(lost)} entries: {sorted(lost)[:10]}"
    assert set(after) - set(before) <= {"1:./r3-new-file"}
    # the next run, with room in its snapshot, converges
    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert standby_marker(fresh, "web01")["state"] == "clean"
