"""promote and failback in the lab (R25). A libvirt daemon in each fake Dom0 serves the
test driver, so a domain one ``virsh`` defines or starts is seen by the next: the promote's
refusals, its define and start, the backup's refusal afterwards, the way back (failback)
with the backups running again, and a killed promote that ``recover`` undoes or keeps. The
backups themselves use the lab's usual node files."""

from __future__ import annotations

import json
import time

import pytest
from lxml import etree

from toolkit.lab.audit import AUDIT_ROOT, mounted
from toolkit.lab.rehearse import audit, run_backup, standby_marker

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

URI = "test+unix:///default"  # the daemon's test driver: one state for every connection
CONF = "/etc/domu-backup/promote.toml"  # the lab's config with that hypervisor
DAEMON_CONF = "/etc/domu-backup/libvirtd-lab.conf"
KEEPER = "86399"  # the keeper's sleep: the daemon's test driver lives while one client does
# web01 as the source's hypervisor defines it: failback reads its disk's LV from it.
SOURCE_DOMAIN = ("<domain type='test'><name>web01</name><memory>131072</memory>"
                 "<os><type>hvm</type></os><devices><disk type='block' device='disk'>"
                 "<source dev='/dev/vg_a/web01'/><target dev='xvda' bus='xen'/></disk>"
                 "</devices></domain>")
MARKER = "/var/lib/domu-backup/standby/web01.json"


def virsh(lab, container, *args, check=False):
    return lab.runner(container).run(["virsh", "-c", URI, *args], check=check, timeout=120)


def start_hypervisors(lab):
    for c in ("dom0-a", "dom0-b"):
        r = lab.runner(c)
        # No hypervisor driver module: the test driver is libvirt's own, and the QEMU
        # driver would refuse to start without its system user.
        r.run(["sh", "-c", "mkdir -p /var/log/libvirt /run/libvirt /run/domubk-lab-drivers && "
                           f"printf 'auth_unix_rw = \"none\"\\nauth_unix_ro = \"none\"\\n"
                           f"listen_tls = 0\\n' > {DAEMON_CONF} && LIBVIRT_DRIVER_DIR="
                           f"/run/domubk-lab-drivers libvirtd -d -f {DAEMON_CONF}"],
              timeout=120)
        for _ in range(60):
            if virsh(lab, c, "list", "--all").exit_code == 0:
                break
            time.sleep(1)
        else:
            pytest.fail(f"libvirtd did not answer on {c}")
        r.run(["sh", "-c", f"setsid sh -c 'sleep {KEEPER} | virsh -c {URI} >/dev/null 2>&1' "
                           ">/dev/null 2>&1 < /dev/null &"], timeout=60)
        time.sleep(1)
        r.run(["sh", "-c", f"sed 's|^uri = .*|uri = \"{URI}\"|' /etc/domu-backup/backup.toml "
                           f"> {CONF} && chmod 0600 {CONF}"], timeout=60)


def stop_hypervisors(lab):
    for c in ("dom0-a", "dom0-b"):
        lab.runner(c).run(["sh", "-c", f"pkill -x libvirtd; pkill -f 'sleep {KEEPER}'; "
                                       f"pkill -f 'virsh -c {URI}'; rm -f {CONF} {DAEMON_CONF} "
                                       "/tmp/web01-source.xml; "
                                       "true"], check=False, timeout=60)


def promote(lab, *extra, env=None):
    return lab.runner("dom0-b").run(["domu-backup", "promote", "--domu", "web01", "--config",
                                     CONF, *extra], check=False, timeout=600, env=env)


def failback(lab):
    return lab.runner("dom0-b").run(["domu-backup", "failback", "--domu", "web01", "--config",
                                     CONF], check=False, timeout=900)


def state_on_b(lab):
    res = virsh(lab, "dom0-b", "domstate", "web01")
    return res.stdout.strip() if res.exit_code == 0 else "not defined"


def lvs(lab, c):
    return lab.runner(c).run(["lvs", "--noheadings", "-o", "lv_name"], timeout=60).stdout


@pytest.fixture
def hypervisors(fresh):
    res = run_backup(fresh, "web01")  # a clean standby and its definition
    assert res.exit_code == 0, res.stdout + res.stderr
    start_hypervisors(fresh)
    try:
        yield fresh
    finally:
        stop_hypervisors(fresh)


def test_promote_refuses_while_the_source_runs_then_starts_the_guest_and_failback_returns_it(
        hypervisors):
    lab = hypervisors
    clean = standby_marker(lab, "web01")
    assert clean["state"] == "clean"
    # The source runs the domain: refused, nothing changed on the peer.
    lab.runner("dom0-a").run(["tee", "/tmp/web01-source.xml"], input=SOURCE_DOMAIN)
    virsh(lab, "dom0-a", "define", "/tmp/web01-source.xml", check=True)
    virsh(lab, "dom0-a", "start", "web01", check=True)
    res = promote(lab)
    assert res.exit_code == 48, res.stdout + res.stderr
    assert "web01 is running on dom0-a" in res.stderr
    assert standby_marker(lab, "web01") == clean and state_on_b(lab) == "not defined"

    # Stopped there: the dry run prints the steps of both hosts and changes nothing.
    virsh(lab, "dom0-a", "destroy", "web01", check=True)
    dry = promote(lab, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert f"[dom0-a] virsh -c {URI} domstate -- web01" in dry.stdout
    assert f"[dom0-b] virsh -c {URI} define -- /var/lib/domu-backup/standby/web01.xml" in (
        dry.stdout)
    assert standby_marker(lab, "web01") == clean and state_on_b(lab) == "not defined"

    # Promoted: the peer's hypervisor runs it (asked by another virsh), on the standby LV.
    res = promote(lab, "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["done"] is True
    assert state_on_b(lab) == "running"
    xml = virsh(lab, "dom0-b", "dumpxml", "web01", check=True).stdout
    sources = [d.find("source").get("dev") for d in etree.fromstring(xml.encode()).iter("disk")
               if d.find("source") is not None]
    assert sources == ["/dev/vg_b/web01"]
    marker = standby_marker(lab, "web01")
    assert marker["state"] == "promoted"
    assert marker["last_success_run_id"] == clean["last_success_run_id"]

    # A backup from the old source refuses the promoted standby, making nothing.
    before = {c: lvs(lab, c) for c in ("dom0-a", "dom0-b")}
    back = run_backup(lab, "web01")
    assert back.exit_code == 24, back.stdout + back.stderr
    assert "was promoted at" in back.stderr
    assert {c: lvs(lab, c) for c in ("dom0-a", "dom0-b")} == before
    assert standby_marker(lab, "web01") == marker
    # Monitoring calls it CRITICAL: the guest runs from its standby and has none.
    check = lab.runner("dom0-a").run(["domu-backup", "status", "--check", "--domu", "web01"],
                                     check=False, timeout=300)
    assert check.exit_code == 2 and "standby promoted on dom0-b" in check.stdout, check.stdout

    # A second promote refuses: it is promoted already.
    again = promote(lab)
    assert again.exit_code == 48 and "already promoted" in again.stderr

    # The way back. Not while the guest runs here.
    res = failback(lab)
    assert res.exit_code == 48 and "shut it down first" in res.stderr, res.stderr
    # The guest shut down after working on the peer: a file it wrote there goes back.
    virsh(lab, "dom0-b", "destroy", "web01", check=True)
    rb = lab.runner("dom0-b")
    with mounted(rb, "/dev/vg_b/web01", f"{AUDIT_ROOT}/promoted", "p", readonly=False) as fs:
        rb.run(["sh", "-c", f"echo written-while-promoted > {fs['1'][0]}/failback.txt"])
    marker_before = standby_marker(lab, "web01")
    dry = lab.runner("dom0-b").run(["domu-backup", "failback", "--domu", "web01", "--config",
                                    CONF, "--dry-run"], check=False, timeout=900)
    assert dry.exit_code == 0, dry.stdout + dry.stderr
    assert "rsync" in dry.stdout and "[dom0-a] virsh start -- web01" in dry.stdout
    assert standby_marker(lab, "web01") == marker_before and state_on_b(lab) == "shut off"
    res = failback(lab)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "runs on dom0-a again" in res.stdout
    assert state_on_b(lab) == "not defined"
    assert virsh(lab, "dom0-a", "domstate", "web01").stdout.strip() == "running"
    marker = standby_marker(lab, "web01")
    assert (marker["state"], marker["source_host"]) == ("clean", "dom0-a")
    ra = lab.runner("dom0-a")
    assert ra.run(["ls", MARKER], check=False).exit_code != 0  # the copy back's, removed
    with mounted(ra, "/dev/vg_a/web01", f"{AUDIT_ROOT}/back", "b") as fs:
        assert ra.run(["cat", f"{fs['1'][0]}/failback.txt"]).stdout == (
            "written-while-promoted\n")
    # The roles are back: a backup from the source runs again, and the copies are equal.
    res = run_backup(lab, "web01")
    assert res.exit_code == 0, res.stdout + res.stderr
    diffs = {a.name: a.differences for a in audit(lab, "web01") if a.differences}
    assert diffs == {}


def test_a_killed_promote_is_undone_by_recover_unless_the_guest_already_runs(hypervisors):
    lab = hypervisors
    clean = standby_marker(lab, "web01")
    kept = MARKER + ".before-promote"

    # Killed right after the define: half-done, so recover undoes all of it.
    res = promote(lab, env={"DOMU_BACKUP_FAILPOINT": "after:define:sigkill"})
    assert res.exit_code == 137, res.stdout + res.stderr
    assert standby_marker(lab, "web01")["state"] == "promoted"
    assert state_on_b(lab) == "shut off"
    rec = lab.runner("dom0-b").run(["domu-backup", "recover", "--domu", "web01", "--host",
                                    "local", "--config", CONF], check=False, timeout=600)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert state_on_b(lab) == "not defined"
    assert standby_marker(lab, "web01") == clean
    b = lab.runner("dom0-b")
    assert b.run(["ls", kept], check=False).exit_code != 0
    assert b.run(["sh", "-c", "ls /var/lib/domu-backup/journal/ | grep -c . || true"]
                 ).stdout.strip() == "0"

    # Killed right after the start: the guest runs, so the promote had finished.
    res = promote(lab, env={"DOMU_BACKUP_FAILPOINT": "after:start:sigkill"})
    assert res.exit_code == 137, res.stdout + res.stderr
    rec = lab.runner("dom0-b").run(["domu-backup", "recover", "--domu", "web01", "--host",
                                    "local", "--config", CONF], check=False, timeout=600)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert "kept the finished promote" in rec.stdout
    assert state_on_b(lab) == "running"
    assert standby_marker(lab, "web01")["state"] == "promoted"
    assert b.run(["ls", kept], check=False).exit_code != 0
    virsh(lab, "dom0-b", "destroy", "web01")
    virsh(lab, "dom0-b", "undefine", "web01")


THIN = "/etc/domu-backup/thin-points.toml"  # web01's standby a thin LV, points kept
THIN_PROMOTE = "/etc/domu-backup/thin-promote.toml"  # the same, with the daemon's hypervisor
ONLY_AT_FIRST = "only-at-the-first-point.txt"


def point_configs(lab, conf: str, promote_conf: str, standby: str | None = None):
    """web01 with restore points kept (its standby ``standby`` if given): for backups (the
    lab's node files, ``conf``) and for promote and recover (the libvirt daemon,
    ``promote_conf``)."""
    for c in ("dom0-a", "dom0-b"):
        r = lab.runner(c)
        text = r.run(["cat", "/etc/domu-backup/backup.toml"]).stdout
        assert 'standby_lv = "/dev/vg_b/web01"\n' in text and "restore_points" not in text
        if standby is not None:
            text = text.replace('standby_lv = "/dev/vg_b/web01"\n',
                                f'standby_lv = "{standby}"\n', 1)
        text += "\n[defaults.restore_points]\nkeep_last = 3\n"
        r.run(["dd", f"of={conf}", "status=none"], input=text)
        r.run(["sh", "-c", f"sed 's|^uri = .*|uri = \"{URI}\"|' {conf} > {promote_conf} && "
                           f"chmod 0600 {conf} {promote_conf}"], timeout=60)


def thin_configs(lab):
    """web01's standby the thin LV vg_b/web01thin, restore points kept."""
    point_configs(lab, THIN, THIN_PROMOTE, "/dev/vg_b/web01thin")


def thin_backup(lab, conf: str = THIN) -> str:
    res = run_backup(lab, "web01", "--config", conf, "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    return json.loads(res.stdout)["domains"][0]["run_id"]


def thin_origin(lab) -> str:
    return lab.runner("dom0-b").run(["lvs", "--noheadings", "-o", "origin", "vg_b/web01thin"],
                                    timeout=60).stdout.strip()


def point_lv(run_id: str) -> str:
    return f"domubk-rp-{run_id}-web01-xvda"


@pytest.fixture
def thin_points(fresh):
    """A thin pool in vg_b for web01's thin standby; the pool and all in it removed after."""
    b = fresh.runner("dom0-b")
    b.run(["lvcreate", "-y", "--type", "thin-pool", "-L", "384M", "-n", "rp_pool", "vg_b"],
          timeout=300)
    try:
        yield fresh
    finally:
        stop_hypervisors(fresh)
        b.run(["sh", "-c", f"rm -f {THIN} {THIN_PROMOTE}"], check=False, timeout=60)
        fresh.runner("dom0-a").run(["rm", "-f", THIN, THIN_PROMOTE], check=False, timeout=60)
        b.run(["lvremove", "-y", "@domubk_rp"], check=False, timeout=300)
        b.run(["lvremove", "-y", "vg_b/web01thin"], check=False, timeout=300)
        b.run(["lvremove", "-y", "vg_b/rp_pool"], check=False, timeout=300)


def test_promote_at_an_older_thin_point_starts_the_guest_from_it_and_keeps_the_standby(
        thin_points):
    lab = thin_points
    a, b = lab.runner("dom0-a"), lab.runner("dom0-b")
    thin_configs(lab)
    made = a.run(["domu-backup", "init-standby", "--domu", "web01", "--config", THIN,
                  "--thin", "vg_b/rp_pool"], check=False, timeout=900)
    assert made.exit_code == 0, made.stdout + made.stderr
    # A file the guest had at the first point only: written, backed up, deleted, backed up.
    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/at", "t", readonly=False) as fs:
        a.run(["sh", "-c", f"echo from-the-first-point > {fs['1'][0]}/{ONLY_AT_FIRST}"])
    first = thin_backup(lab)
    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/at", "t", readonly=False) as fs:
        a.run(["rm", f"{fs['1'][0]}/{ONLY_AT_FIRST}"])
    second = thin_backup(lab)
    start_hypervisors(lab)  # web01 is not defined on dom0-a's daemon: the source is stopped

    # The dry run shows the rollback and changes nothing.
    dry = b.run(["domu-backup", "promote", "--domu", "web01", "--config", THIN_PROMOTE,
                 "--at", first, "--dry-run"], check=False, timeout=600)
    assert dry.exit_code == 0, dry.stdout + dry.stderr
    assert "lvrename vg_b web01thin domubk-rp-" in dry.stdout
    assert f"--name web01thin vg_b/{point_lv(first)}" in dry.stdout
    assert thin_origin(lab) == "" and state_on_b(lab) == "not defined"

    # Killed right after the rollback: recover puts the standby and the marker back.
    clean = standby_marker(lab, "web01")
    res = b.run(["domu-backup", "promote", "--domu", "web01", "--config", THIN_PROMOTE,
                 "--at", first], check=False, timeout=600,
                env={"DOMU_BACKUP_FAILPOINT": "after:rollback:sigkill"})
    assert res.exit_code == 137, res.stdout + res.stderr
    assert thin_origin(lab) == point_lv(first)
    rec = b.run(["domu-backup", "recover", "--domu", "web01", "--host", "local", "--config",
                 THIN_PROMOTE], check=False, timeout=600)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert thin_origin(lab) == "" and standby_marker(lab, "web01") == clean
    points = b.run(["lvs", "--noheadings", "-o", "lv_name", "@domubk_rp"], timeout=60).stdout
    assert sorted(points.split()) == sorted([point_lv(first), point_lv(second)])

    # Promoted at the first point: the guest runs on a copy of it, its file there.
    res = b.run(["domu-backup", "promote", "--domu", "web01", "--config", THIN_PROMOTE,
                 "--at", first, "--json"], check=False, timeout=600)
    assert res.exit_code == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["done"] and report["at"] == first
    assert state_on_b(lab) == "running" and thin_origin(lab) == point_lv(first)
    marker = standby_marker(lab, "web01")
    assert marker["state"] == "promoted" and marker["promoted_at_point"] == first
    with mounted(b, "/dev/vg_b/web01thin", f"{AUDIT_ROOT}/promoted-at", "q") as fs:
        assert b.run(["cat", f"{fs['1'][0]}/{ONLY_AT_FIRST}"]).stdout == "from-the-first-point\n"
    # What the standby held is a point of its own, listed as one; both points still there.
    listed = json.loads(a.run(["domu-backup", "restore-points", "--config", THIN, "--json"],
                              timeout=300).stdout)
    assert sorted(p["run_id"] for p in listed) == sorted([first, second, report["kept_point"]])
    kept = point_lv(report["kept_point"])
    with mounted(b, f"/dev/vg_b/{kept}", f"{AUDIT_ROOT}/kept", "k") as fs:
        assert b.run(["ls", f"{fs['1'][0]}/{ONLY_AT_FIRST}"], check=False).exit_code != 0
    virsh(lab, "dom0-b", "destroy", "web01")
    virsh(lab, "dom0-b", "undefine", "web01")


CLASSIC = "/etc/domu-backup/classic-points.toml"  # web01's thick standby, classic points
CLASSIC_PROMOTE = "/etc/domu-backup/classic-promote.toml"  # the same, the daemon's hypervisor


@pytest.fixture
def classic_points(fresh):
    """web01's standby with classic restore points; the points and configs removed after."""
    point_configs(fresh, CLASSIC, CLASSIC_PROMOTE)
    try:
        yield fresh
    finally:
        stop_hypervisors(fresh)
        for c in ("dom0-a", "dom0-b"):
            fresh.runner(c).run(["rm", "-f", CLASSIC, CLASSIC_PROMOTE], check=False,
                                timeout=60)
        fresh.runner("dom0-b").run(["lvremove", "-y", "@domubk_rp"], check=False, timeout=300)


def classic_promote(lab, *extra, env=None):
    return lab.runner("dom0-b").run(["domu-backup", "promote", "--domu", "web01", "--config",
                                     CLASSIC_PROMOTE, *extra], check=False, timeout=900,
                                    env=env)


def points_on_b(lab) -> list[str]:
    out = lab.runner("dom0-b").run(["lvs", "--noheadings", "-o", "lv_name", "@domubk_rp"],
                                   timeout=60).stdout
    return sorted(out.split())


def test_promote_at_an_older_classic_point_merges_it_and_a_kill_goes_forward_not_back(
        classic_points):
    lab = classic_points
    a, b = lab.runner("dom0-a"), lab.runner("dom0-b")
    # A file the guest had at the first point only: written, backed up, deleted, backed up.
    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/at", "t", readonly=False) as fs:
        a.run(["sh", "-c", f"echo from-the-first-point > {fs['1'][0]}/{ONLY_AT_FIRST}"])
    first = thin_backup(lab, CLASSIC)
    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/at", "t", readonly=False) as fs:
        a.run(["rm", f"{fs['1'][0]}/{ONLY_AT_FIRST}"])
    second = thin_backup(lab, CLASSIC)
    assert points_on_b(lab) == sorted([point_lv(first), point_lv(second)])
    start_hypervisors(lab)  # web01 is not defined on dom0-a's daemon: the source is stopped
    clean = standby_marker(lab, "web01")

    # The dry run shows the kept point and the merge, and changes nothing.
    dry = classic_promote(lab, "--at", first, "--dry-run")
    assert dry.exit_code == 0, dry.stdout + dry.stderr
    assert f"lvconvert --merge --interval 1 vg_b/{point_lv(first)}" in dry.stdout
    assert "--snapshot --permission r --name domubk-rp-" in dry.stdout
    assert points_on_b(lab) == sorted([point_lv(first), point_lv(second)])

    # Killed before the merge began: recover undoes it all, the point untouched.
    res = classic_promote(lab, "--at", first, env={"DOMU_BACKUP_FAILPOINT":
                                                   "before:merge:sigkill"})
    assert res.exit_code == 137, res.stdout + res.stderr
    assert len(points_on_b(lab)) == 3  # the standby kept as a point of its own
    rec = b.run(["domu-backup", "recover", "--domu", "web01", "--host", "local", "--config",
                 CLASSIC_PROMOTE], check=False, timeout=900)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert points_on_b(lab) == sorted([point_lv(first), point_lv(second)])
    assert standby_marker(lab, "web01") == clean and state_on_b(lab) == "not defined"

    # Killed after the merge: recover goes forward, the standby clean at the first point.
    res = classic_promote(lab, "--at", first, env={"DOMU_BACKUP_FAILPOINT":
                                                   "after:merge:sigkill"})
    assert res.exit_code == 137, res.stdout + res.stderr
    rec = b.run(["domu-backup", "recover", "--domu", "web01", "--host", "local", "--config",
                 CLASSIC_PROMOTE], check=False, timeout=900)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert f"clean at restore point {first}" in rec.stdout + rec.stderr
    marker = standby_marker(lab, "web01")
    assert marker["state"] == "clean" and marker["last_success_run_id"] == first
    assert marker["rolled_back_from"] == second
    kept = point_lv(marker["rolled_back_by"])
    assert points_on_b(lab) == sorted([point_lv(second), kept])  # the first one merged
    assert state_on_b(lab) == "not defined"
    assert "web01." not in b.run(["ls", "/var/lib/domu-backup/journal"], check=False,
                                 timeout=60).stdout  # no journal left
    with mounted(b, "/dev/vg_b/web01", f"{AUDIT_ROOT}/merged", "m") as fs:
        assert b.run(["cat", f"{fs['1'][0]}/{ONLY_AT_FIRST}"]).stdout == "from-the-first-point\n"
    with mounted(b, f"/dev/vg_b/{kept}", f"{AUDIT_ROOT}/kept", "k") as fs:
        assert b.run(["ls", f"{fs['1'][0]}/{ONLY_AT_FIRST}"], check=False).exit_code != 0

    # The standby is clean at that point: a plain promote starts the guest from it.
    res = classic_promote(lab)
    assert res.exit_code == 0, res.stdout + res.stderr
    assert state_on_b(lab) == "running"
    assert standby_marker(lab, "web01")["state"] == "promoted"
    virsh(lab, "dom0-b", "destroy", "web01")
    virsh(lab, "dom0-b", "undefine", "web01")
