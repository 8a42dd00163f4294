"""Guest LVM in the lab: lvm01's guest VG is named vg_a, like dom0-a's own VG (R6).

The backup maps the guest LVs from the PV's metadata under owned names; the
host's LVM never sees the guest VG, nothing is left mapped, and the standby's
guest VG keeps its name and UUIDs on disk.
"""

from __future__ import annotations

import json

import pytest

from toolkit.lab.audit import audit_standby
from toolkit.lab.rehearse import SSH, prepare_layout, run_backup, start_backup, wait_until_dirty
from toolkit.owned import parse_owned
from toolkit.plan import volume_map_name
from toolkit.preflight import read_guest_vg

# Each test writes its own guest's disks (prepare_layout); web01 and db01 stay as they are.
pytestmark = [pytest.mark.e2e, pytest.mark.own_disks]

FAILPOINT = "DOMU_BACKUP_FAILPOINT"
SOURCE_LV, TARGET_LV = "/dev/vg_a/lvm01", "/dev/vg_b/lvm01"
P2_START = 133120 * 512  # lvm01's p2 (the guest PV), from its recipe


def dm_names(runner):
    res = runner.run(["dmsetup", "info", "-c", "--noheadings", "-o", "name"], check=False)
    return set(res.stdout.split())


def host_lvm(runner):
    """What the host's own LVM sees: its VGs, PVs and LVs."""
    out = {}
    for cmd, field in (("vgs", "vg_name"), ("pvs", "pv_name"), ("lvs", "lv_name")):
        res = runner.run([cmd, "--noheadings", "-o", field], timeout=60)
        out[cmd] = sorted(res.stdout.split())
    return out


def pv_head(runner, lv):
    runner.run(["dd", f"if={lv}", "of=/tmp/pv-head", "bs=512", f"skip={P2_START // 512}",
                "count=2048", "status=none"], timeout=120)
    return runner.run(["sha256sum", "/tmp/pv-head"]).stdout.split()[0]


def guest_vg(runner, lv):
    vg = read_guest_vg(runner, lv, P2_START, "p2")
    return vg.name, vg.uuid, [(v.name, v.uuid, v.segments) for v in vg.volumes]


def latest_report(runner):
    return json.loads(runner.run(["cat", "/var/lib/domu-backup/reports/lvm01.json"]).stdout)


def audit_lvm01(lab):
    return audit_standby(lab.runner("dom0-a"), lab.runner("dom0-b"), SOURCE_LV, TARGET_LV,
                         "root@dom0-b", SSH)


def test_guest_vg_named_like_the_hosts_is_copied_without_host_lvm_seeing_it(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    prepare_layout(fresh, "lvm01")
    before = {"a": host_lvm(a), "b": host_lvm(b)}
    standby_head = pv_head(b, TARGET_LV)
    run = start_backup(fresh, "lvm01", env={FAILPOINT: "before:rsync@1:sleep=20"})
    assert wait_until_dirty(fresh, "lvm01", timeout=600)
    # mid-run: the guest LVs are mapped under owned names on both sides...
    names = dm_names(a)
    ours = sorted(n for n in names if n.startswith("domubk-") and "-lvm01-" in n)
    (run_id,) = {parse_owned(n, "lvm01", "p").run_id for n in ours if parse_owned(n, "lvm01", "p")}
    assert volume_map_name(run_id, "lvm01", "src", "xvda2.vg_a.root") in ours, ours
    assert volume_map_name(run_id, "lvm01", "dst", "xvda2.vg_a.var") in ours, ours
    # ...and LVM on either host never activated (or even saw) the guest VG
    assert not names & {"vg_a-root", "vg_a-var", "vg_b-root", "vg_b-var"}
    during = {"a": host_lvm(a), "b": host_lvm(b)}
    assert during["a"]["vgs"] == ["vg_a"] and during["b"]["vgs"] == ["vg_b"]
    assert during["a"]["pvs"] == before["a"]["pvs"] and during["b"] == before["b"]
    assert [lv for lv in during["a"]["lvs"] if lv not in before["a"]["lvs"]] == [
        next(lv for lv in during["a"]["lvs"] if lv.startswith("domubk-"))]  # the snapshot only
    assert run.wait() == 0
    assert host_lvm(a) == before["a"] and host_lvm(b) == before["b"]

    report = latest_report(a)
    paths = {f["name"]: f["guest_path"] for f in report["filesystems"]}
    assert paths == {"xvda1": "/boot", "xvda2.vg_a.root": "/", "xvda2.vg_a.var": "/var"}
    results = audit_lvm01(fresh)
    assert sorted(r.name for r in results) == ["1", "2.vg_a.root", "2.vg_a.var", "boot area"]
    assert {r.name: r.differences for r in results if r.differences} == {}
    # the standby's guest VG was never rewritten (same label and metadata bytes), and it is
    # the source's VG: same name, UUIDs and extents
    assert pv_head(b, TARGET_LV) == standby_head
    assert guest_vg(b, TARGET_LV) == guest_vg(a, SOURCE_LV)


@pytest.mark.parametrize("point", ["after:lvmap@2:sigkill", "after:lvmap@4:sigkill"])
def test_killed_with_guest_lvs_mapped_then_recover_twice_leaves_nothing(fresh, point):
    # lvmap 1-2 are the source's (read-only), 3-4 the peer's; the leak check runs after
    a = fresh.runner("dom0-a")
    prepare_layout(fresh, "lvm01")
    res = run_backup(fresh, "lvm01", env={FAILPOINT: point})
    assert res.exit_code == 137, res.stdout + res.stderr
    assert any("-lvm01-" in n and ("-src-" in n or "-dst-" in n) for n in dm_names(a))
    first = a.run(["domu-backup", "recover", "--domu", "lvm01"], check=False, timeout=600)
    assert first.exit_code == 0, first.stdout + first.stderr
    assert not any("-lvm01-" in n for n in dm_names(a) if n.startswith("domubk-"))
    second = a.run(["domu-backup", "recover", "--domu", "lvm01"], check=False, timeout=600)
    assert second.exit_code == 0 and second.stdout.strip() == "nothing to recover"


def test_init_standby_recreates_the_guest_vg_with_its_name_and_uuids(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    prepare_layout(fresh, "lvm01")
    b.run(["dd", "if=/dev/zero", f"of={TARGET_LV}", "bs=4M", "count=80", "status=none"],
          timeout=600)
    res = a.run(["domu-backup", "init-standby", "--domu", "lvm01"], check=False, timeout=900)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "mkfs.ext4 -F -q -b " in res.stdout  # with the source's parameters
    assert "-U 5eed0017-0000-4000-8000-000000000002 -L lvm01-root" in res.stdout
    assert pv_head(b, TARGET_LV) == pv_head(a, SOURCE_LV)
    ok = run_backup(fresh, "lvm01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert {r.name: r.differences for r in audit_lvm01(fresh) if r.differences} == {}
