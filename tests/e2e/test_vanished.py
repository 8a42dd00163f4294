"""A filesystem never drops out of the backup unnoticed.

web01's root filesystem (partition 1 of /dev/vg_a/web01 on dom0-a) loses its
superblock: the first 2 MiB of the partition are overwritten with zeroes, so
blkid finds no filesystem there while the standby's partition 1 still holds the
ext4 copy. With a config that names the other filesystem in ``mounts`` (what an
operator does once the guest fstab on the root filesystem is unreadable), the
run is refused with exit 37 before anything is created: the standby LV is
unchanged and not marked clean. With the root filesystem excluded by name
(``skip_filesystems = ["xvda1"]``) the run succeeds and its summary says
xvda1 was excluded by config; the standby's copy of it is left as it is.
"""

from __future__ import annotations

import pytest

from toolkit.facts.partitions import parse_sfdisk
from toolkit.lab.audit import fingerprint
from toolkit.lab.rehearse import run_backup, standby_marker

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

SOURCE_LV, TARGET_LV = "/dev/vg_a/web01", "/dev/vg_b/web01"
CONFIG = "/etc/domu-backup/backup.toml"
VAR_ONLY = "/etc/domu-backup/var-only.toml"  # mounts names /var only (the reported case)
EXCLUDED = "/etc/domu-backup/excluded.toml"  # ... and skip_filesystems = ["xvda1"]
WIPE_SECTORS = 4096  # 2 MiB of 512-byte sectors: the superblock and the group descriptors


def range_checksum(runner, device, start, size):
    """sha256 of ``size`` sectors of ``device`` from sector ``start``."""
    return runner.run(["sh", "-c", f"dd if={device} bs=512 skip={start} count={size} "
                       "status=none | sha256sum"], timeout=600).stdout.split()[0]


def partition(runner, device, number):
    """(start, size) in 512-byte sectors of a partition, from sfdisk --json."""
    table = parse_sfdisk(runner.run(["sfdisk", "--json", device], timeout=60).stdout)
    assert table.sector_size == 512
    (part,) = [p for p in table.partitions if p.number == number]
    return part.start, part.size


def write_config(lab, path, *, skip_root):
    """The sandbox config with [domains.web01.mounts] xvda2 = "/var" and, with skip_root,
    skip_filesystems = ["xvda1"]: root's, mode 0600, in root's /etc/domu-backup."""
    a = lab.runner("dom0-a")
    text = a.run(["cat", CONFIG]).stdout
    head = '[domains.web01]\npeer = "dom0-b"\n'
    assert head in text
    if skip_root:
        text = text.replace(head, head + 'skip_filesystems = ["xvda1"]\n', 1)
    text += '\n[domains.web01.mounts]\nxvda2 = "/var"\n'
    a.run(["dd", f"of={path}", "status=none"], input=text)
    a.run(["chown", "root:root", path])
    a.run(["chmod", "0600", path])


def wipe_root_superblock(lab):
    """Zero the first 2 MiB of web01's partition 1 on the source; blkid then finds nothing."""
    a = lab.runner("dom0-a")
    start, size = partition(a, SOURCE_LV, 1)
    assert start == 2048  # 1 MiB, as fixtures/guests/web01.toml builds it
    a.run(["dd", "if=/dev/zero", f"of={SOURCE_LV}", "bs=512", f"seek={start}",
           f"count={WIPE_SECTORS}", "conv=notrunc", "oflag=direct", "status=none"], timeout=120)
    probe = a.run(["blkid", "-p", "-o", "export", "-O", str(start * 512), "-S",
                   str(size * 512), "--", SOURCE_LV], check=False, timeout=60)
    assert probe.exit_code == 2 and not probe.stdout.strip(), probe.stdout + probe.stderr
    return start, size


def test_a_vanished_root_filesystem_is_refused_unless_excluded_by_name(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    write_config(fresh, VAR_ONLY, skip_root=False)
    write_config(fresh, EXCLUDED, skip_root=True)
    start, size = wipe_root_superblock(fresh)
    standby = fingerprint(b, TARGET_LV)
    standby_root = range_checksum(b, TARGET_LV, start, size)
    assert standby_marker(fresh, "web01") == {}

    # The root filesystem is gone from the source, the standby still has it: refused.
    res = run_backup(fresh, "web01", "--config", VAR_ONLY)
    assert res.exit_code == 37, res.stdout + res.stderr
    assert "xvda1" in res.stderr and "skip_filesystems" in res.stderr
    assert "VANISHED xvda1: ext4" in res.stdout
    assert "1 filesystem(s) copied" not in res.stdout + res.stderr
    assert fingerprint(b, TARGET_LV) == standby  # nothing reached the standby
    assert standby_marker(fresh, "web01").get("state") != "clean"

    # Left out knowingly, by name: the run succeeds and says xvda1 was excluded.
    ok = run_backup(fresh, "web01", "--config", EXCLUDED)
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert any(line.startswith("  skipped xvda1: excluded by config (skip_filesystems)")
               for line in lines), ok.stdout
    assert any(line.startswith("  xvda2    /var         copied ") for line in lines), ok.stdout
    assert standby_marker(fresh, "web01")["state"] == "clean"
    assert range_checksum(b, TARGET_LV, start, size) == standby_root  # its copy left as it is
    assert a.run(["blkid", "-p", "-O", str(start * 512), "-S", str(size * 512), "--",
                  SOURCE_LV], check=False, timeout=60).exit_code == 2  # the source untouched
