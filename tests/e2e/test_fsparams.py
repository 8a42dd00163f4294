"""init-standby makes the same filesystem as the source, not one with the peer's mkfs defaults.

web01's /var (xvda2) is made again on dom0-a the way an old installer made it: ext4
without metadata_csum or 64bit, 128-byte inodes, one inode per 2 KiB. init-standby
must give the standby the same features, inode count and size, block size and
reserved blocks (``dumpe2fs -h`` on both hosts), the backup must then pass the drift
check, and a standby /var made again with mkfs's defaults must be refused (exit 19).
"""

from __future__ import annotations

import pytest

from toolkit.lab.audit import partition_maps
from toolkit.lab.rehearse import run_backup

pytestmark = pytest.mark.e2e

VAR_UUID = "5eed0001-0000-4000-8000-000000000002"
OLD_EXT4 = ["-O", "^metadata_csum,^64bit", "-I", "128", "-i", "2048"]
# What dumpe2fs -h shows of how a filesystem was made (not its state or times).
MADE_WITH = ("Filesystem features", "Inode count", "Inode size", "Block size", "Block count",
             "Reserved block count", "Blocks per group", "Inodes per group",
             "Flex block group size", "Total journal size")


def made_with(runner, lv, number):
    """The ``dumpe2fs -h`` fields of partition ``number`` that say how it was made."""
    with partition_maps(runner, lv, "f") as parts:
        text = runner.run(["dumpe2fs", "-h", parts[number]], timeout=120).stdout
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in MADE_WITH:
            fields[key.strip()] = value.strip()
    return fields


def remake_var(runner, lv, *options, files=False):
    """Make web01's /var again with ``options``; with ``files``, put a few files on it (an
    empty source filesystem is never mirrored: the empty-source guard refuses it)."""
    with partition_maps(runner, lv, "z", writable=True) as parts:
        runner.run(["mkfs.ext4", "-F", "-q", *options, "-U", VAR_UUID, "-L", "web01-var",
                    parts[2]], timeout=300)
        if files:
            mnt = "/run/domubk-fsparams"
            runner.run(["mkdir", "-p", mnt], timeout=60)
            runner.run(["mount", "-t", "ext4", parts[2], mnt], timeout=120)
            try:
                runner.run(["sh", "-c", f"mkdir -p {mnt}/log && for n in 1 2 3; do "
                                        f"echo line $n > {mnt}/log/file$n; done"], timeout=60)
            finally:
                runner.run(["umount", mnt], timeout=120)
                runner.run(["rmdir", mnt], check=False, timeout=60)


def test_init_standby_gives_an_old_filesystem_its_own_parameters(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    remake_var(a, "/dev/vg_a/web01", *OLD_EXT4, files=True)
    source = made_with(a, "/dev/vg_a/web01", 2)
    assert "metadata_csum" not in source["Filesystem features"]
    assert source["Inode size"] == "128"

    b.run(["dd", "if=/dev/zero", "of=/dev/vg_b/web01", "bs=4M", "count=64", "status=none"],
          timeout=600)
    res = a.run(["domu-backup", "init-standby", "--domu", "web01"], check=False, timeout=900)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert f"-I 128 -N {source['Inode count']}" in res.stdout  # the plan shows them

    standby = made_with(b, "/dev/vg_b/web01", 2)
    assert standby == source
    assert len(standby) >= 8, standby  # the fields were found, not two empty dicts

    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr

    # the standby's /var made again with this mkfs's defaults: same UUID and label,
    # other features and fewer inodes, refused as a drifted layout
    remake_var(b, "/dev/vg_b/web01")
    assert made_with(b, "/dev/vg_b/web01", 2)["Inode count"] != source["Inode count"]
    refused = run_backup(fresh, "web01")
    assert refused.exit_code == 19, refused.stdout + refused.stderr
    assert "xvda2: inode count" in refused.stderr and "init-standby" in refused.stderr
