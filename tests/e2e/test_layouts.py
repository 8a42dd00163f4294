"""Every disk layout of fixtures/guests backed up in the lab, then audited disk by disk.

Each layout guest runs on dom0-a with its standby on dom0-b (built on demand by
``prepare_layout``, blank filesystems with the source's table, UUIDs and labels, as
init-standby makes them). lvm01 (guest LVM) is in the sandbox but has no test here yet.
"""

from __future__ import annotations

import json

import pytest

from toolkit.lab.audit import AUDIT_ROOT, fingerprint, mounted, partition_maps
from toolkit.lab.guests import ESP_LOADER, load_recipe, plan_layout
from toolkit.lab.rehearse import audit, prepare_layout, run_backup

# Each test writes its own guest's disks (prepare_layout); web01 and db01 stay as they are.
pytestmark = [pytest.mark.e2e, pytest.mark.own_disks]


def backup_ok(lab, domain):
    """Run the backup of a layout guest; its report, once the run exited 0."""
    res = run_backup(lab, domain)
    assert res.exit_code == 0, f"exit {res.exit_code}\n{res.stdout}\n{res.stderr}"
    text = lab.runner("dom0-a").run(
        ["cat", f"/var/lib/domu-backup/reports/{domain}.json"]).stdout
    report = json.loads(text)
    assert report["outcome"] == "success", report
    return report


def copied(report):
    """Filesystem name -> (type, guest path) of every filesystem the run copied."""
    assert all(f["outcome"] == "copied" for f in report["filesystems"]), report["filesystems"]
    return {f["name"]: (f["fstype"], f["guest_path"]) for f in report["filesystems"]}


def assert_audit_clean(lab, disks, expect):
    """Audit every disk: the filesystems compared are ``expect[device]``, none differs."""
    results = {g.device: audit(lab, g.domain, g.device) for g in disks}
    assert {dev: sorted(a.name for a in res if a.name != "boot area")
            for dev, res in results.items()} == \
        {dev: sorted(names) for dev, names in expect.items()}
    diffs = {(dev, a.name): a.differences for dev, res in results.items() for a in res
             if a.differences}
    assert diffs == {}


def byte_range_checksum(lab, container, lv, start, size):
    r = lab.runner(container)
    tmp = "/tmp/domubk-range"
    r.run(["dd", f"if={lv}", f"of={tmp}", "bs=64K", "iflag=skip_bytes,count_bytes",
           f"skip={start}", f"count={size}", "status=none"], timeout=120)
    try:
        return r.run(["sha256sum", tmp]).stdout.split()[0]
    finally:
        r.run(["rm", "-f", tmp])


def test_gpt_copies_the_esp_and_skips_the_bios_boot_partition(fresh):
    (disk,) = prepare_layout(fresh, "gpt01")
    extents = plan_layout(load_recipe(fresh.recipe_path("gpt01")))
    bios = extents[0]  # p1, 1 MiB of boot loader bytes, no filesystem
    before = byte_range_checksum(fresh, "dom0-b", disk.standby_lv, bios.start, bios.size)
    report = backup_ok(fresh, "gpt01")
    assert copied(report) == {"xvda2": ("vfat", "/boot/efi"), "xvda3": ("ext4", "/"),
                              "xvda4": ("ext4", "/home")}
    assert "xvda1: no filesystem found" in report["skipped"]
    assert_audit_clean(fresh, [disk], {"xvda": ["2", "3", "4"]})
    # The boot loader's partition on the standby is the same as the source's, untouched.
    after = byte_range_checksum(fresh, "dom0-b", disk.standby_lv, bios.start, bios.size)
    assert after == before == byte_range_checksum(fresh, "dom0-a", disk.source_lv,
                                                  bios.start, bios.size)
    with mounted(fresh.runner("dom0-b"), disk.standby_lv, f"{AUDIT_ROOT}/esp", "e") as fs:
        esp, fstype = fs["2"]
        assert fstype == "vfat"
        path, size = ESP_LOADER
        got = fresh.runner("dom0-b").run(["stat", "-c", "%s", f"{esp}/{path}"]).stdout
        assert int(got) == size


def test_whole_disk_filesystem_is_copied(fresh):
    (disk,) = prepare_layout(fresh, "whole01")
    report = backup_ok(fresh, "whole01")
    assert copied(report) == {"xvda1": ("ext4", "/")}
    assert report["skipped"] == []
    assert [s["origin"] for s in report["snapshots"]] == ["vg_a/whole01"]
    assert_audit_clean(fresh, [disk], {"xvda1": ["whole"]})


def test_both_disks_of_a_two_disk_guest_are_copied(fresh):
    disks = prepare_layout(fresh, "multi01")
    assert [g.device for g in disks] == ["xvda", "xvdb"]
    report = backup_ok(fresh, "multi01")
    assert copied(report) == {"xvda1": ("ext4", "/"), "xvdb1": ("ext4", "/srv")}
    assert sorted(s["origin"] for s in report["snapshots"]) == ["vg_a/multi01-xvda",
                                                                 "vg_a/multi01-xvdb"]
    by_name = {f["name"]: f for f in report["filesystems"]}
    assert by_name["xvda1"]["files_transferred"] > 100
    assert by_name["xvdb1"]["files_transferred"] > 100
    assert_audit_clean(fresh, disks, {"xvda": ["1"], "xvdb": ["1"]})


def test_extended_container_is_skipped_and_logical_partitions_copied(fresh):
    (disk,) = prepare_layout(fresh, "ext01")
    report = backup_ok(fresh, "ext01")
    assert copied(report) == {"xvda1": ("ext4", "/"), "xvda5": ("ext4", "/var"),
                              "xvda6": ("ext4", "/srv")}
    assert "xvda2: extended partition container" in report["skipped"]
    assert any(s.startswith("xvda7: swap") for s in report["skipped"]), report["skipped"]
    assert_audit_clean(fresh, [disk], {"xvda": ["1", "5", "6"]})


def test_xfs_is_copied_and_its_origin_never_written(fresh):
    (disk,) = prepare_layout(fresh, "xfs01")
    before = fingerprint(fresh.runner("dom0-a"), disk.source_lv)
    report = backup_ok(fresh, "xfs01")
    assert fingerprint(fresh.runner("dom0-a"), disk.source_lv) == before
    assert copied(report) == {"xvda1": ("ext4", "/"), "xvda2": ("xfs", "/var/lib/data")}
    assert_audit_clean(fresh, [disk], {"xvda": ["1", "2"]})


def test_dirty_journals_are_not_replayed_and_the_origin_never_written(fresh):
    (disk,) = prepare_layout(fresh, "dirty01")
    a = fresh.runner("dom0-a")
    with partition_maps(fresh.runner("dom0-a"), disk.source_lv, "j") as parts:
        features = a.run(["dumpe2fs", "-h", parts[1]], timeout=60).stdout
        log = a.run(["xfs_logprint", "-t", parts[2]], timeout=120).stdout
    assert "needs_recovery" in next(line for line in features.splitlines()
                                    if line.startswith("Filesystem features:"))
    assert "<DIRTY>" in log
    before = fingerprint(fresh.runner("dom0-a"), disk.source_lv)
    report = backup_ok(fresh, "dirty01")
    assert fingerprint(fresh.runner("dom0-a"), disk.source_lv) == before
    assert copied(report) == {"xvda1": ("ext4", "/"), "xvda2": ("xfs", "/srv")}
    assert_audit_clean(fresh, [disk], {"xvda": ["1", "2"]})
    # The standby holds what is on the source's disk: the xfs log's pending mkdir is not in
    # it (only a log recovery would make log-pending), and its own journals are clean.
    b = fresh.runner("dom0-b")
    with mounted(b, disk.standby_lv, f"{AUDIT_ROOT}/dirty", "d") as fs:
        assert b.run(["test", "-e", f"{fs['2'][0]}/log-pending"], check=False).exit_code == 1
        assert b.run(["test", "-d", f"{fs['2'][0]}/data"], check=False).exit_code == 0
    with partition_maps(fresh.runner("dom0-b"), disk.standby_lv, "k") as parts:
        features = b.run(["dumpe2fs", "-h", parts[1]], timeout=60).stdout
    assert "needs_recovery" not in features
