"""End to end in the lab: real virsh, LVM snapshots, kpartx, mounts, sshd and rsync."""

from __future__ import annotations

import json

import pytest
from lxml import etree

from toolkit.lab.audit import AUDIT_ROOT, mounted
from toolkit.lab.guests import mutate
from toolkit.lab.rehearse import audit, run_backup

pytestmark = pytest.mark.e2e


def assert_audit_clean(lab, domain="web01", expect=("1", "2")):
    results = audit(lab, domain)
    assert sorted(a.name for a in results if a.name != "boot area") == sorted(expect)
    assert "boot area" in [a.name for a in results]  # compared too, and equal below
    diffs = {a.name: a.differences for a in results if a.differences}
    assert diffs == {}


def last_report(lab, container="dom0-a"):
    out = lab.runner(container).run(["cat", "/var/lib/domu-backup/reports/last.json"]).stdout
    return json.loads(out)


def lvs_names(lab, container):
    out = lab.runner(container).run(["lvs", "--noheadings", "-o", "lv_name"]).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def test_first_full_sync_then_incremental_run_converge(fresh, host_b):
    lab = fresh
    res = run_backup(lab, "web01")
    assert res.exit_code == 0, res.stdout + res.stderr
    report = last_report(lab)["domains"][0]
    assert report["outcome"] == "success"
    by_name = {f["name"]: f for f in report["filesystems"]}
    assert by_name["xvda1"]["guest_path"] == "/"
    assert by_name["xvda2"]["guest_path"] == "/var"
    assert by_name["xvda1"]["files_transferred"] > 250
    assert report["snapshots"][0]["fill_percent"] is not None
    assert_audit_clean(lab)

    # File-level fidelity on the standby, asserted with testinfra on dom0-b.
    runner_b = lab.runner("dom0-b")
    with mounted(runner_b, "/dev/vg_b/web01", f"{AUDIT_ROOT}/check", "c") as fs:
        root = fs["1"][0]
        f = host_b.file(f"{root}/modes/private")
        assert f.mode == 0o600 and f.uid == 4242 and f.gid == 4242
        assert f.content_string == "0600\n"
        assert host_b.file(f"{root}/usr/bin/suid-tool").mode == 0o4755
        assert host_b.file(f"{root}/tmp").mode == 0o1777
        assert host_b.check_output(f"readlink {root}/links/rel-page") == "../data/sizes/page.bin"
        assert host_b.check_output(f"readlink {root}/links/dangling") == "../data/no-such-file"
        assert host_b.check_output(f"stat -c %h {root}/links/hard-1") == "3"
        ino = {host_b.check_output(f"stat -c %i {root}/{p}")
               for p in ("links/hard-1", "links/hard-2", "data/hard-3")}
        assert len(ino) == 1
        assert host_b.check_output(
            f"getfattr --only-values -n user.domubk {root}/data/xattr.txt").startswith("fixture-")
        assert "cap_net_raw=ep" in host_b.check_output(f"getcap {root}/usr/bin/netprobe")
        assert "user:1234:r--" in host_b.check_output(f"getfacl -cp {root}/data/acl.txt")
        size, blocks = host_b.check_output(f"stat -c '%s %b' {root}/data/sparse.img").split()
        assert int(size) == 4 << 20 and int(blocks) * 512 < 1 << 20
        assert host_b.file(f"{root}/special/fifo").is_pipe
        assert host_b.check_output(f"stat -c %t:%T {root}/special/null") == "1:3"
        assert host_b.file(f"{root}/home/alice/notes.txt").uid == 1234
        assert "UUID=" in host_b.file(f"{root}/etc/fstab").content_string

    # The guest changes: files added, modified, deleted, renamed, chmod/chown.
    runner_a = lab.runner("dom0-a")
    with mounted(runner_a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/mutate", "m", readonly=False) as fs:
        changes = [mutate(runner_a, fs[n][0], seed=7) for n in ("1", "2")]
    assert all(c.added and c.modified and c.deleted and c.renamed_dirs for c in changes)

    res = run_backup(lab, "web01")
    assert res.exit_code == 0, res.stdout + res.stderr
    second = last_report(lab)["domains"][0]
    assert second["outcome"] == "success"
    root2 = {f["name"]: f for f in second["filesystems"]}["xvda1"]
    assert 0 < root2["files_transferred"] < by_name["xvda1"]["files_transferred"]
    assert root2["files_deleted"] >= changes[0].deleted
    assert_audit_clean(lab)

    # The clean run left the definition promote needs beside the marker: each copied disk
    # on its standby LV, the rest the source's, and libvirt itself accepts it.
    runner_b = lab.runner("dom0-b")
    definition = runner_b.run(["cat", "/var/lib/domu-backup/standby/web01.xml"]).stdout
    disks = {d.find("target").get("dev"): d
             for d in etree.fromstring(definition.encode()).iterfind("devices/disk")}
    assert (disks["xvda"].get("type"), disks["xvda"].find("source").get("dev")) == (
        "block", "/dev/vg_b/web01")
    defined = runner_b.run(["virsh", "-c", "test:///default", "define",
                            "/var/lib/domu-backup/standby/web01.xml"], check=False)
    assert defined.exit_code == 0 and "web01" in defined.stdout, defined.stderr

    # R25: once the standby is marked promoted, a backup from the source refuses it with
    # its own code before anything is made on either host; the marker is left as it is.
    marker_file = "/var/lib/domu-backup/standby/web01.json"
    clean = runner_b.run(["cat", marker_file]).stdout
    promoted = {**json.loads(clean), "state": "promoted", "promoted_at": 1796349612.5}
    runner_b.run(["tee", marker_file], input=json.dumps(promoted))
    before = {c: lvs_names(lab, c) for c in ("dom0-a", "dom0-b")}
    try:
        res = run_backup(lab, "web01")
        assert res.exit_code == 24, res.stdout + res.stderr
        assert "was promoted at" in res.stderr and "Nothing was changed" in res.stderr
        assert json.loads(runner_b.run(["cat", marker_file]).stdout) == promoted
        assert {c: lvs_names(lab, c) for c in ("dom0-a", "dom0-b")} == before
        mounts = runner_b.run(["findmnt", "-rn", "-o", "TARGET"]).stdout
        assert "/run/domu-backup" not in mounts and "domubk" not in mounts
    finally:
        runner_b.run(["tee", marker_file], input=clean)


def test_plan_and_dry_run_create_nothing(fresh):
    lab = fresh
    before = {c: lvs_names(lab, c) for c in ("dom0-a", "dom0-b")}
    r = lab.runner("dom0-a")
    reports = r.run(["find", "/var/lib/domu-backup"], check=False).stdout
    plan = r.run(["domu-backup", "plan", "--domu", "web01"], check=False, timeout=300)
    assert plan.exit_code == 0, plan.stderr
    assert "lvcreate --snapshot --permission r" in plan.stdout
    assert "[dom0-b]" in plan.stdout and "kpartx -a -s -p p" in plan.stdout
    dry = run_backup(lab, "web01", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    steps = json.loads(dry.stdout)["steps"]
    assert {s["role"] for s in steps} == {"source", "peer"}
    assert {c: lvs_names(lab, c) for c in ("dom0-a", "dom0-b")} == before
    assert r.run(["find", "/var/lib/domu-backup"], check=False).stdout == reports


def test_domain_not_running_here_is_a_quiet_skip(fresh):
    lab = fresh
    res = run_backup(lab, "db01")  # db01 runs on dom0-b
    assert res.exit_code == 0, res.stderr
    assert "skipped" in res.stdout
    assert "domubk" not in " ".join(lvs_names(lab, "dom0-a"))


def test_domain_running_on_the_peer_is_refused_and_nothing_created(fresh):
    lab = fresh
    node = "/etc/domu-backup/node.xml"
    rb = lab.runner("dom0-b")
    original = rb.run(["cat", node]).stdout
    # Split brain: web01 also runs on dom0-b. The standby is in use; hands off.
    rb.run(["cp", node, node + ".orig"])
    rb.run(["python3", "-c", _MARK_RUNNING, node, "web01"])
    try:
        state = rb.run(["virsh", "-c", f"test://{node}", "domstate", "web01"]).stdout.strip()
        assert state == "running"
        res = run_backup(lab, "web01")
        assert res.exit_code == 14, res.stdout + res.stderr
        assert "running on dom0-b" in res.stderr
        assert "domubk" not in " ".join(lvs_names(lab, "dom0-a"))
    finally:
        rb.run(["tee", node], input=original)


_MARK_RUNNING = """
import sys
from lxml import etree
path, name = sys.argv[1], sys.argv[2]
ns = {"test": "http://libvirt.org/schemas/domain/test/1.0"}
tree = etree.parse(path)
for dom in tree.iter("domain"):
    if dom.findtext("name") == name:
        for state in dom.findall("test:runstate", ns):
            state.text = "1"
tree.write(path)
"""
