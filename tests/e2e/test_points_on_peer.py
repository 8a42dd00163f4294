"""Restore points on the peer (R24): taken by clean runs only, pruned by retention after a
newer point exists, left alone by a killed run and by ``recover``."""

from __future__ import annotations

import json

import pytest

from toolkit.lab.audit import AUDIT_ROOT, fingerprint, mounted, partition_maps
from toolkit.lab.rehearse import leftovers, run_backup, standby_marker

pytestmark = pytest.mark.e2e

CONFIG = "/etc/domu-backup/backup.toml"
POINTS = "/etc/domu-backup/points.toml"


def points_config(lab, table: str) -> None:
    """The sandbox's config with ``[defaults.restore_points]`` set to ``table``, beside it
    on both fake Dom0s (mode 0600, as the tool demands)."""
    for name in ("dom0-a", "dom0-b"):
        r = lab.runner(name)
        text = r.run(["cat", CONFIG]).stdout
        assert "restore_points" not in text
        r.run(["dd", f"of={POINTS}", "status=none"],
              input=text + "\n[defaults.restore_points]\n" + table)
        r.run(["chmod", "0600", POINTS])


@pytest.fixture
def points(fresh):
    """The lab with restore points allowed; every point removed afterwards, before the
    leak check (points are meant to stay, so they are no leak, but the next test's disks
    are rewritten and a classic snapshot would copy every block of that)."""
    yield fresh
    fresh.runner("dom0-b").run(["lvremove", "-y", "@domubk_rp"], check=False, timeout=300)


def backup(lab, *extra: str, env: dict[str, str] | None = None) -> dict:
    res = run_backup(lab, "web01", "--config", POINTS, "--json", *extra, env=env)
    assert res.exit_code == 0, res.stdout + res.stderr
    return json.loads(res.stdout)["domains"][0]


def point_lvs(lab) -> dict[str, tuple[str, str]]:
    """The peer's restore point LVs: name -> (tags, attr)."""
    out = lab.runner("dom0-b").run(
        ["lvs", "--noheadings", "--separator", "|", "-o", "lv_name,lv_tags,lv_attr",
         "@domubk_rp"], timeout=60).stdout
    rows = [line.strip().split("|") for line in out.splitlines() if line.strip()]
    return {name: (tags, attr) for name, tags, attr in rows}


def point_name(run_id: str) -> str:
    return f"domubk-rp-{run_id}-web01-xvda"


@pytest.mark.synced_standby
def test_three_runs_keep_two_points_and_the_older_one_still_holds_a_deleted_file(points):
    lab = points
    a, b = lab.runner("dom0-a"), lab.runner("dom0-b")
    points_config(lab, "keep_last = 2\n")

    first = backup(lab)
    assert first["restore_point"] == first["run_id"] and first["restore_points"] == 1
    assert set(point_lvs(lab)) == {point_name(first["run_id"])}

    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/rp", "r", readonly=False) as fs:
        precious = f"{fs['1'][0]}/srv-precious.bin"
        a.run(["dd", "if=/dev/urandom", f"of={precious}", "bs=64K", "count=4", "status=none"])
        digest = fingerprint(a, precious)
    second = backup(lab)
    assert second["restore_points"] == 2 and second["points_pruned"] == []

    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/rp", "r", readonly=False) as fs:
        a.run(["rm", f"{fs['1'][0]}/srv-precious.bin"])
    third = backup(lab)
    assert third["restore_points"] == 2
    assert third["points_pruned"] == [first["run_id"]]

    # Exactly two points remain, tagged as the tool's; the newest is the marker's run.
    lvs = point_lvs(lab)
    assert set(lvs) == {point_name(second["run_id"]), point_name(third["run_id"])}
    for run in (second, third):
        tags, attr = lvs[point_name(run["run_id"])]
        assert set(tags.split(",")) == {"domubk_rp", f"domubk_rp_{run['run_id']}"}
        assert attr[0] == "s" and attr[1] == "r"  # a classic snapshot, read-only
    marker = standby_marker(lab, "web01")
    assert marker["state"] == "clean" and marker["last_success_run_id"] == third["run_id"]

    # The file deleted before the third run: gone from the standby (a mirror), still in the
    # second point, byte for byte.
    with mounted(b, "/dev/vg_b/web01", f"{AUDIT_ROOT}/dst", "s") as fs:
        assert b.run(["test", "-e", f"{fs['1'][0]}/srv-precious.bin"], check=False,
                     timeout=60).exit_code == 1
    with mounted(b, f"/dev/vg_b/{point_name(second['run_id'])}", f"{AUDIT_ROOT}/point",
                 "q") as fs:
        assert fingerprint(b, f"{fs['1'][0]}/srv-precious.bin") == digest

    # The listing, from the source (over SSH) and on the peer itself.
    listed = a.run(["domu-backup", "restore-points", "--config", POINTS, "--json"],
                   timeout=300)
    rows = json.loads(listed.stdout)
    assert [(p["run_id"], p["kind"], p["valid"]) for p in rows] == [
        (third["run_id"], "classic", True), (second["run_id"], "classic", True)]
    text = b.run(["domu-backup", "restore-points", "--config", POINTS, "--domu", "web01"],
                 timeout=300).stdout
    assert "web01 (on dom0-b): 2 restore points" in text
    assert third["run_id"] in text and first["run_id"] not in text


def test_killed_runs_and_recover_leave_the_points_as_they_were(points):
    lab = points
    a = lab.runner("dom0-a")
    points_config(lab, "keep_last = 1\n")
    first = backup(lab)
    before = point_lvs(lab)
    assert set(before) == {point_name(first["run_id"])}

    # Killed mid-copy: no point made, none removed; recover leaves them too.
    killed = run_backup(lab, "web01", "--config", POINTS,
                        env={"DOMU_BACKUP_FAILPOINT": "before:rsync@1:sigkill"})
    assert killed.exit_code == 137, killed.stdout + killed.stderr
    assert point_lvs(lab) == before
    rec = a.run(["domu-backup", "recover", "--config", POINTS], check=False, timeout=600)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert point_lvs(lab) == before
    assert standby_marker(lab, "web01")["state"] == "dirty"

    # Killed while taking its point (the LV made, the run gone): recover removes that part
    # of the killed run's point, and only that.
    taking = run_backup(lab, "web01", "--config", POINTS,
                        env={"DOMU_BACKUP_FAILPOINT": "after:point@1:sigkill"})
    assert taking.exit_code == 137, taking.stdout + taking.stderr
    assert len(point_lvs(lab)) == 2
    rec = a.run(["domu-backup", "recover", "--config", POINTS], check=False, timeout=600)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert "removed point" in rec.stdout
    assert point_lvs(lab) == before

    # A clean run then takes its point and only then removes the older one (keep_last = 1).
    last = backup(lab)
    assert last["points_pruned"] == [first["run_id"]]
    assert set(point_lvs(lab)) == {point_name(last["run_id"])}
    assert leftovers(lab) == {"dom0-a": [], "dom0-b": []}


THIN = "/etc/domu-backup/thin.toml"


@pytest.fixture
def thin_pool(points):
    """A thin pool rp_pool in vg_b; web01's standby there is made by the test. Removed
    afterwards with what is in it (the points first)."""
    b = points.runner("dom0-b")
    b.run(["lvcreate", "-y", "--type", "thin-pool", "-L", "384M", "-n", "rp_pool", "vg_b"],
          timeout=300)
    yield points
    b.run(["lvremove", "-y", "@domubk_rp"], check=False, timeout=300)
    b.run(["lvremove", "-y", "vg_b/web01thin"], check=False, timeout=300)
    b.run(["lvremove", "-y", "vg_b/rp_pool"], check=False, timeout=300)


def test_a_thin_standby_gets_thin_points_and_a_full_pool_refuses_the_run(thin_pool):
    lab = thin_pool
    a, b = lab.runner("dom0-a"), lab.runner("dom0-b")
    points_config(lab, "keep_last = 2\n")
    for name in ("dom0-a", "dom0-b"):
        r = lab.runner(name)
        text = r.run(["cat", POINTS]).stdout
        assert 'standby_lv = "/dev/vg_b/web01"\n' in text
        r.run(["dd", f"of={THIN}", "status=none"], input=text.replace(
            'standby_lv = "/dev/vg_b/web01"\n', 'standby_lv = "/dev/vg_b/web01thin"\n', 1))
        r.run(["chmod", "0600", THIN])

    # init-standby --thin: the missing standby made a thin LV of the pool, then laid out.
    dry = a.run(["domu-backup", "init-standby", "--domu", "web01", "--config", THIN,
                 "--thin", "vg_b/rp_pool", "--dry-run"], check=False, timeout=600)
    assert dry.exit_code == 0, dry.stdout + dry.stderr
    assert "lvcreate --type thin --virtualsize 268435456b --thinpool vg_b/rp_pool" in dry.stdout
    assert b.run(["lvs", "vg_b/web01thin"], check=False, timeout=60).exit_code != 0
    made = a.run(["domu-backup", "init-standby", "--domu", "web01", "--config", THIN,
                  "--thin", "vg_b/rp_pool"], check=False, timeout=900)
    assert made.exit_code == 0, made.stdout + made.stderr
    pool = b.run(["lvs", "--noheadings", "-o", "pool_lv", "vg_b/web01thin"], timeout=60)
    assert pool.stdout.strip() == "rp_pool"

    res = run_backup(lab, "web01", "--config", THIN, "--json")
    assert res.exit_code == 0, res.stdout + res.stderr
    run = json.loads(res.stdout)["domains"][0]
    listed = json.loads(a.run(["domu-backup", "restore-points", "--config", THIN, "--json"],
                              timeout=300).stdout)
    assert [(p["run_id"], p["kind"], p["valid"]) for p in listed] == [
        (run["run_id"], "thin", True)]
    assert listed[0]["volumes"][0]["lv"] == f"vg_b/{point_name(run['run_id'])}"

    # A pool fuller than thin_pool_max_fill: refused before anything is written.
    marker = standby_marker(lab, "web01")
    full = THIN + ".full"
    for name in ("dom0-a", "dom0-b"):
        r = lab.runner(name)
        text = r.run(["cat", THIN]).stdout
        r.run(["dd", f"of={full}", "status=none"],
              input=text.replace("[defaults]\n", "[defaults]\nthin_pool_max_fill = 1\n", 1))
        r.run(["chmod", "0600", full])
    refused = run_backup(lab, "web01", "--config", full)
    assert refused.exit_code == 23, refused.stdout + refused.stderr
    assert "thin pool vg_b/rp_pool" in refused.stderr
    assert standby_marker(lab, "web01") == marker
    assert set(point_lvs(lab)) == {point_name(run["run_id"])}


@pytest.mark.synced_standby
def test_a_classic_point_that_overflows_is_listed_invalid_and_pruned(points):
    lab = points
    a = lab.runner("dom0-a")
    # keep_last = 3 keeps every point of this test: only its overflow removes the first.
    points_config(lab, 'keep_last = 3\nsize = "8M"\n')
    first = backup(lab)
    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/rp", "r", readonly=False) as fs:
        a.run(["dd", "if=/dev/urandom", f"of={fs['1'][0]}/srv-big.bin", "bs=1M", "count=24",
               "status=none"], timeout=300)
    second = backup(lab)  # 24 MiB written to the standby: the first point's 8 MiB overflow
    assert second["points_pruned"] == []
    listed = json.loads(a.run(["domu-backup", "restore-points", "--config", POINTS, "--json"],
                              timeout=300).stdout)
    assert [(p["run_id"], p["valid"]) for p in listed] == [
        (second["run_id"], True), (first["run_id"], False)]
    text = a.run(["domu-backup", "restore-points", "--config", POINTS], timeout=300).stdout
    assert f"{first['run_id']}" in text and "INVALID (overflowed)" in text

    third = backup(lab)
    assert third["points_pruned"] == [first["run_id"]]
    assert set(point_lvs(lab)) == {point_name(second["run_id"]), point_name(third["run_id"])}


@pytest.mark.synced_standby
def test_verify_proves_the_standby_and_a_point_and_finds_a_broken_filesystem(points):
    lab = points
    a, b = lab.runner("dom0-a"), lab.runner("dom0-b")
    points_config(lab, "keep_last = 2\n")
    run = backup(lab)
    standby_sum = fingerprint(b, "/dev/vg_b/web01")

    # From the source, over SSH: every filesystem checked read-only, fstab and boot found.
    ok = a.run(["domu-backup", "verify", "--domu", "web01", "--config", POINTS, "--json"],
               check=False, timeout=900)
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    found = json.loads(ok.stdout)
    assert found["ok"] and found["what"] == "standby" and found["problems"] == []
    assert {(f["name"], f["fstype"], f["sound"], f["guest_path"])
            for f in found["filesystems"]} == {("xvda1", "ext4", True, "/"),
                                               ("xvda2", "ext4", True, "/var")}
    assert found["fstab"].startswith("from xvda1: every entry resolves")
    assert fingerprint(b, "/dev/vg_b/web01") == standby_sum  # nothing written
    assert leftovers(lab) == {"dom0-a": [], "dom0-b": []}

    # --against-source: the backup's flow comparing by checksum: identical, then a file
    # changed on the standby behind the tool's back is listed, and nothing is written
    # (standby, marker, points).
    marker, lvs = standby_marker(lab, "web01"), point_lvs(lab)
    same = a.run(["domu-backup", "verify", "--domu", "web01", "--config", POINTS,
                  "--against-source", "--json"], check=False, timeout=900)
    assert same.exit_code == 0, same.stdout + same.stderr
    assert json.loads(same.stdout)["domains"][0]["outcome"] == "identical"
    with mounted(b, "/dev/vg_b/web01", f"{AUDIT_ROOT}/dst", "w", readonly=False) as fs:
        b.run(["sh", "-c", f"echo tampered >> {fs['1'][0]}/etc/hostname"])
    standby_sum = fingerprint(b, "/dev/vg_b/web01")
    differs = a.run(["domu-backup", "verify", "--domu", "web01", "--config", POINTS,
                     "--against-source"], check=False, timeout=900)
    assert differs.exit_code == 47, differs.stdout + differs.stderr
    assert "web01: differs (exit 47)" in differs.stdout
    assert "etc/hostname" in differs.stdout and "differs: " in differs.stdout
    assert fingerprint(b, "/dev/vg_b/web01") == standby_sum
    assert standby_marker(lab, "web01") == marker and point_lvs(lab) == lvs
    assert leftovers(lab) == {"dom0-a": [], "dom0-b": []}

    # A guest boot loader directory without the file it boots from, copied by a backup;
    # then the standby's /var broken behind the tool's back: verify says both, exit 46. The
    # first restore point (a classic snapshot: the broken blocks' old data went into it,
    # and it predates the directory) is sound.
    with mounted(a, "/dev/vg_a/web01", f"{AUDIT_ROOT}/rp", "r", readonly=False) as fs:
        a.run(["mkdir", "-p", f"{fs['1'][0]}/boot/grub"])
    backup(lab)
    with partition_maps(b, "/dev/vg_b/web01", "x", writable=True) as parts:
        b.run(["dd", "if=/dev/urandom", f"of={parts[2]}", "bs=1024", "seek=2", "count=16",
               "conv=notrunc,fsync", "status=none"], timeout=120)
    bad = b.run(["domu-backup", "verify", "--domu", "web01", "--config", POINTS], check=False,
                timeout=900)
    assert bad.exit_code == 46, bad.stdout + bad.stderr
    assert "xvda2" in bad.stderr and "e2fsck exited" in bad.stderr
    assert "xvda1      ext4   /          sound" in bad.stdout
    assert ("boot: xvda1 has /boot/grub but none of grub.cfg, menu.lst, grub.conf in it"
            in bad.stdout)
    point = a.run(["domu-backup", "verify", "--domu", "web01", "--config", POINTS, "--at",
                   run["run_id"]], check=False, timeout=900)
    assert point.exit_code == 0, point.stdout + point.stderr
    assert f"restore point {run['run_id']}" in point.stdout
    # That point's /var metadata overwritten (made writable for it, then read-only again):
    # verify --at names the filesystem.
    first = f"vg_b/{point_name(run['run_id'])}"
    b.run(["lvchange", "--permission", "rw", first], timeout=120)
    try:
        with partition_maps(b, f"/dev/{first}", "y", writable=True) as parts:
            b.run(["dd", "if=/dev/urandom", f"of={parts[2]}", "bs=1024", "seek=2",
                   "count=16", "conv=notrunc,fsync", "status=none"], timeout=120)
    finally:
        b.run(["lvchange", "--permission", "r", first], timeout=120)
    broken = a.run(["domu-backup", "verify", "--domu", "web01", "--config", POINTS, "--at",
                    run["run_id"]], check=False, timeout=900)
    assert broken.exit_code == 46, broken.stdout + broken.stderr
    assert "xvda2" in broken.stderr and "e2fsck exited" in broken.stderr
    assert "xvda1      ext4   /          sound" in broken.stdout
    unknown = a.run(["domu-backup", "verify", "--domu", "web01", "--config", POINTS, "--at",
                     "20200101T000000Z-0000"], check=False, timeout=300)
    assert unknown.exit_code == 4 and run["run_id"] in unknown.stderr
    assert leftovers(lab) == {"dom0-a": [], "dom0-b": []}
