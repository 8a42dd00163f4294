"""The boot area follows the guest: a boot loader reinstalled in the guest (new boot code in
the first sector, a new core image in the gap before the first partition, as grub-install
writes them) reaches the standby on the next run, the partition table untouched; the audit
compares the boot area too.
"""

from __future__ import annotations

import json

import pytest

from toolkit.lab.rehearse import audit, run_backup

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

SOURCE_LV, TARGET_LV = "/dev/vg_a/web01", "/dev/vg_b/web01"


def table(runner, lv):
    out = json.loads(runner.run(["sfdisk", "--json", lv], timeout=60).stdout)["partitiontable"]
    out.pop("device")
    for part in out["partitions"]:
        part.pop("node")
    return out


def boot_entry(lab):
    return next(x for x in audit(lab, "web01") if x.name == "boot area")


def test_a_reinstalled_boot_loader_reaches_the_standby_on_the_next_run(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    standby_table = table(b, TARGET_LV)
    # what grub-install does: new boot code (440 bytes) and a new core image in the gap
    a.run(["sh", "-c", f"head -c 440 /dev/urandom | dd of={SOURCE_LV} conv=notrunc,fsync "
                       "status=none"], timeout=60)
    a.run(["sh", "-c", f"head -c 65536 /dev/urandom | dd of={SOURCE_LV} bs=512 seek=1 "
                       "conv=notrunc,fsync status=none"], timeout=60)
    assert len(boot_entry(fresh).differences) == 2  # the audit sees both
    res = run_backup(fresh, "web01")
    assert res.exit_code == 0, res.stdout + res.stderr
    audited = audit(fresh, "web01")
    assert [x.name for x in audited if x.name != "boot area"], "no filesystem compared"
    assert {x.name: x.differences for x in audited if x.differences} == {}
    assert table(b, TARGET_LV) == standby_table  # the table itself is never written
