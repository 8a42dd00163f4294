"""init-standby makes a bootable standby; a drifted standby is refused (issue: layouts)."""

from __future__ import annotations

import pytest

from toolkit.facts.blkid import blkid_argv, probe_from_result
from toolkit.facts.fstab import GuestFilesystem, parse_fstab, resolve_fstab
from toolkit.lab.audit import mounted, partition_maps
from toolkit.lab.rehearse import audit, run_backup

pytestmark = pytest.mark.e2e


def table_dump(runner, lv):
    text = runner.run(["sfdisk", "--dump", lv]).stdout
    # device paths differ between hosts; everything else must be equal
    return [line.replace(lv, "DEV") for line in text.splitlines()]


def boot_area(runner, lv):
    runner.run(["dd", f"if={lv}", "of=/tmp/boot-area", "bs=1M", "count=1", "status=none"])
    return runner.run(["sha256sum", "/tmp/boot-area"]).stdout.split()[0]


def probes(runner, lv):
    with partition_maps(runner, lv, "q") as parts:
        return {number: probe_from_result(runner.run(blkid_argv(dev), check=False))
                for number, dev in parts.items()}


def test_init_standby_then_backup_gives_a_bootable_copy(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    b.run(["dd", "if=/dev/zero", "of=/dev/vg_b/web01", "bs=4M", "count=64", "status=none"],
          timeout=600)
    refused = run_backup(fresh, "web01")
    assert refused.exit_code == 19, refused.stdout + refused.stderr  # no layout: init first
    assert "init-standby" in refused.stderr
    res = a.run(["domu-backup", "init-standby", "--domu", "web01"], check=False, timeout=900)
    assert res.exit_code == 0, res.stdout + res.stderr
    # the source's own parameters (read from its superblock), then its UUID and label
    assert "mkfs.ext4 -F -q -b 1024 -O none," in res.stdout
    assert "-U 5eed0001-0000-4000-8000-000000000001 -L web01-root" in res.stdout
    again = a.run(["domu-backup", "init-standby", "--domu", "web01"], check=False, timeout=900)
    assert again.exit_code != 0 and "--force" in again.stdout + again.stderr
    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert {x.name: x.differences for x in audit(fresh, "web01") if x.differences} == {}

    assert table_dump(a, "/dev/vg_a/web01") == table_dump(b, "/dev/vg_b/web01")
    src, dst = probes(a, "/dev/vg_a/web01"), probes(b, "/dev/vg_b/web01")
    assert {n: (p.type, p.uuid, p.label) for n, p in src.items()} == \
        {n: (p.type, p.uuid, p.label) for n, p in dst.items()}
    assert boot_area(a, "/dev/vg_a/web01") == boot_area(b, "/dev/vg_b/web01")
    # every fstab entry of the guest resolves on the standby
    with mounted(b, "/dev/vg_b/web01", "/run/domubk-audit/fstab", "f") as fs:
        fstab = b.run(["cat", f"{fs['1'][0]}/etc/fstab"]).stdout
    entries, _ignored = parse_fstab(fstab)
    guest = [GuestFilesystem(f"xvda{n}", "xvda", 0, n, p) for n, p in dst.items()]
    resolved = resolve_fstab(entries, guest)
    assert resolved == {"xvda1": "/", "xvda2": "/var"}


@pytest.mark.synced_standby
def test_drifted_standby_is_refused_with_its_own_exit_code(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    with partition_maps(b, "/dev/vg_b/web01", "d", writable=True) as parts:
        b.run(["e2label", parts[2], "drifted"])
    res = run_backup(fresh, "web01")
    assert res.exit_code == 19, res.stdout + res.stderr
    assert "xvda2: label" in res.stderr and "init-standby" in res.stderr
    assert "domubk" not in a.run(["lvs", "--noheadings", "-o", "lv_name"]).stdout
