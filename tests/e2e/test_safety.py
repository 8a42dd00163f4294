"""Faults injected in the lab: every promise (README.md, Promises) that needs real LVM, mounts, ssh.

Each test leaves both hosts clean (the `fresh` fixture's leak check) and checks
that nothing was lost: the standby is unchanged, or converges on the next run.
"""

from __future__ import annotations

import pytest

from toolkit.lab.audit import fingerprint
from toolkit.lab.rehearse import (
    audit,
    leftovers,
    run_backup,
    standby_marker,
    start_backup,
    wait_until_dirty,
)

# Every test here starts with a standby in sync, so a fault has something to lose.
pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

FAILPOINT = "DOMU_BACKUP_FAILPOINT"
# One occurrence of every kind of step that creates something, on both hosts.
STEPS = ["snapshot", "map", "mount", "check", "fstab", "alias", "marker", "rsync"]


def recover(lab, *extra):
    return lab.runner("dom0-a").run(["domu-backup", "recover", *extra], check=False,
                                    timeout=600)


def assert_clean_audit(lab):
    diffs = {a.name: a.differences for a in audit(lab, "web01") if a.differences}
    assert diffs == {}


NOTHING_MOUNTED = "#!/bin/sh\nexit 0\n"  # a `mount` that succeeds and mounts nothing


def install_fake(lab, container, name, script):
    r = lab.runner(container)
    path = f"/usr/local/sbin/{name}"
    r.run(["tee", path], input=script)
    r.run(["chmod", "0755", path])
    return lambda: r.run(["rm", "-f", path])


# Steps at which the standby has not been mounted yet: a killed run must leave its disk
# bit for bit as it was. From the marker on, the standby is marked dirty and must converge.
BEFORE_PEER_MOUNT = {"snapshot", "map", "mount", "check", "fstab", "alias"}


@pytest.mark.parametrize("step", STEPS)
def test_sigterm_then_sigkill_at_each_step_leave_nothing_after_recover(fresh, step):
    before = fingerprint(fresh.runner("dom0-b"), "/dev/vg_b/web01")
    # R1, R16: SIGTERM at the step: teardown runs on both hosts; exit 128+15.
    res = run_backup(fresh, "web01", env={FAILPOINT: f"after:{step}:sigterm"})
    assert res.exit_code == 143, res.stdout + res.stderr
    assert "SIGTERM" in res.stdout + res.stderr
    assert leftovers(fresh) == {"dom0-a": [], "dom0-b": []}
    after_term = recover(fresh)  # the teardown finished: recover finds nothing
    assert after_term.exit_code == 0 and after_term.stdout.strip() == "nothing to recover"
    # R1: SIGKILL at the same step leaves things behind; recover removes them; the
    # second recover is a no-op.
    res = run_backup(fresh, "web01", env={FAILPOINT: f"after:{step}:sigkill"})
    assert res.exit_code == 137, res.stdout + res.stderr
    assert leftovers(fresh) != {"dom0-a": [], "dom0-b": []}  # so recover has work to do
    first = recover(fresh)
    assert first.exit_code == 0, first.stdout + first.stderr
    assert leftovers(fresh) == {"dom0-a": [], "dom0-b": []}
    second = recover(fresh)
    assert second.exit_code == 0 and second.stdout.strip() == "nothing to recover"
    # Nothing lost: untouched standby, or (R10) dirty until the next run converges.
    if step in BEFORE_PEER_MOUNT:
        assert standby_marker(fresh, "web01") == {}
        assert fingerprint(fresh.runner("dom0-b"), "/dev/vg_b/web01") == before
        return
    # recover does not pretend the copy finished
    assert standby_marker(fresh, "web01")["state"] == "dirty"
    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    m = standby_marker(fresh, "web01")
    assert m["state"] == "clean" and m["last_success_run_id"] == m["run_id"]
    assert_clean_audit(fresh)


def test_lookalike_snapshot_not_owned_survives_recover(fresh):
    # R1: a snapshot named like ours but without our tag is not ours.
    a = fresh.runner("dom0-a")
    name = "domubk-20990101T000000Z-0000-web01-xvda"
    a.run(["lvcreate", "--snapshot", "-L", "8M", "-n", name, "vg_a/web01"], timeout=120)
    try:
        res = recover(fresh)
        assert res.exit_code == 0, res.stderr
        assert a.run(["lvs", f"vg_a/{name}"], check=False).exit_code == 0
    finally:
        a.run(["lvremove", "-f", f"vg_a/{name}"], timeout=120)


# A `mount` that exits 0 having mounted something else at the target (its last argument).
MOUNTS_TMPFS = '#!/bin/sh\nfor t; do :; done\nexec /usr/bin/mount -t tmpfs -o size=1m fake "$t"\n'
MOUNTS_LOOP = ('#!/bin/sh\nfor t; do :; done\n'
               'exec /usr/bin/mount -t ext4 -o loop,ro /var/tmp/other-ext4.img "$t"\n')


def other_ext4(lab, container):
    """A small ext4 image with a file in it: the right type from the wrong device."""
    r = lab.runner(container)
    r.run(["sh", "-c", "rm -f /var/tmp/other-ext4.img && truncate -s 8M /var/tmp/other-ext4.img"
                       " && mkfs.ext4 -q -d /etc/domu-backup /var/tmp/other-ext4.img"],
          timeout=120)

    def remove():
        held = r.run(["losetup", "--list", "--noheadings", "--output", "NAME",
                      "--associated", "/var/tmp/other-ext4.img"], check=False).stdout.split()
        for loop in held:
            r.run(["losetup", "-d", loop], check=False)
        r.run(["rm", "-f", "/var/tmp/other-ext4.img"])
        return held

    return remove


WRONG_MOUNTS = ((NOTHING_MOUNTED, "is not a mountpoint"),
                (MOUNTS_TMPFS, "holds tmpfs, expected ext4"),
                (MOUNTS_LOOP, "is mounted from /dev/loop"))


def backups_with_wrong_mounts(lab, container):
    """A backup of web01 with each wrong `mount` on ``container``: (what its error must say,
    the result). Each run must leave both hosts clean before the next; the loop image goes
    at the end (the runs' teardown unmounted it, so no loop device holds it)."""
    remove_image = other_ext4(lab, container)
    try:
        for script, expected in WRONG_MOUNTS:
            remove = install_fake(lab, container, "mount", script)
            try:
                res = run_backup(lab, "web01")
            finally:
                remove()
            yield expected, res
            assert leftovers(lab) == {"dom0-a": [], "dom0-b": []}
    finally:
        assert remove_image() == []


def empty_var_on_the_source(lab):
    """web01's /var made a fresh empty ext4 with its UUID and label: the right filesystem,
    mounted from the right device, holding nothing."""
    import json

    a = lab.runner("dom0-a")
    table = json.loads(a.run(["sfdisk", "--json", "/dev/vg_a/web01"]).stdout)["partitiontable"]
    part = table["partitions"][1]
    offset, size = part["start"] * 512, part["size"] * 512
    loop = a.run(["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit",
                  str(size), "/dev/vg_a/web01"]).stdout.strip()
    try:
        ids = dict(line.split("=", 1) for line in
                   a.run(["blkid", "-p", "-o", "export", loop]).stdout.splitlines())
        assert ids["LABEL"] == "web01-var", ids
        a.run(["mkfs.ext4", "-F", "-q", "-U", ids["UUID"], "-L", ids["LABEL"], loop],
              timeout=120)
    finally:
        a.run(["losetup", "-d", loop])


def test_source_mount_that_fails_silently_or_mounts_the_wrong_thing_changes_nothing(fresh):
    # R7: each source tree is proven before rsync --delete may run: the mount happened,
    # it holds the expected filesystem type, from the snapshot's own device, and it is
    # not empty. Each way of failing is refused with exit 35 and the standby is untouched.
    before = fingerprint(fresh.runner("dom0-b"), "/dev/vg_b/web01")
    for expected, res in backups_with_wrong_mounts(fresh, "dom0-a"):
        assert res.exit_code == 35, (expected, res.stdout + res.stderr)
        assert expected in res.stderr
    empty_var_on_the_source(fresh)
    res = run_backup(fresh, "web01")
    assert res.exit_code == 35, res.stdout + res.stderr
    assert "(xvda2) is empty: refusing to mirror an empty source" in res.stderr
    assert standby_marker(fresh, "web01") == {}  # the standby was not even marked dirty
    assert fingerprint(fresh.runner("dom0-b"), "/dev/vg_b/web01") == before


def test_peer_mount_that_fails_silently_or_mounts_the_wrong_thing_writes_nothing(fresh):
    # R8: the peer's tree is proven to be the standby's filesystem (mounted, its type, its
    # device) before rsync writes a byte; otherwise exit 36 and nothing is written.
    before = fingerprint(fresh.runner("dom0-b"), "/dev/vg_b/web01")
    b = fresh.runner("dom0-b")
    for expected, res in backups_with_wrong_mounts(fresh, "dom0-b"):
        assert res.exit_code == 36, (expected, res.stdout + res.stderr)
        assert expected in res.stderr
        assert b.run(["find", "/run/domu-backup/dst", "-mindepth", "1"],
                     check=False).stdout == ""
    assert fingerprint(fresh.runner("dom0-b"), "/dev/vg_b/web01") == before


def test_changed_peer_host_key_is_rejected(fresh):
    # R12: a known_hosts entry that does not match dom0-b's key: refused, never learned.
    a = fresh.runner("dom0-a")
    kh = "/etc/domu-backup/known_hosts"
    original = a.run(["cat", kh]).stdout
    a.run(["rm", "-f", "/tmp/other", "/tmp/other.pub"])
    a.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/tmp/other"])
    other = a.run(["cat", "/tmp/other.pub"]).stdout.split()
    a.run(["tee", kh], input=f"dom0-b {other[0]} {other[1]}\n")
    try:
        res = run_backup(fresh, "web01")
        assert res.exit_code == 13, res.stdout + res.stderr
        assert "dom0-b" in res.stderr
        assert a.run(["cat", kh]).stdout == f"dom0-b {other[0]} {other[1]}\n"
    finally:
        a.run(["tee", kh], input=original)


def test_second_run_is_busy_and_recover_leaves_the_live_run_alone(fresh):
    # R15: a run paused at a fail-point; a second run and a recover beside it.
    first = start_backup(fresh, "web01", env={FAILPOINT: "before:rsync:sleep=45"})
    a = fresh.runner("dom0-a")
    assert wait_until_dirty(fresh, "web01")  # the first run is about to copy
    busy = run_backup(fresh, "web01")
    assert busy.exit_code == 75, busy.stdout + busy.stderr
    rec = recover(fresh)
    assert rec.exit_code == 75, rec.stdout + rec.stderr
    assert "domubk" in a.run(["lvs", "--noheadings", "-o", "lv_name"]).stdout
    assert first.wait() == 0
    assert standby_marker(fresh, "web01")["state"] == "clean"


def test_full_standby_fails_clearly_and_converges_after_freeing_space(fresh):
    # R19: ENOSPC on the peer: its own exit code, standby dirty; free space, run, converge.
    b = fresh.runner("dom0-b")
    from toolkit.lab.audit import mounted

    with mounted(b, "/dev/vg_b/web01", "/run/domubk-audit/fill", "f", readonly=False) as fs:
        b.run(["dd", "if=/dev/zero", f"of={fs['2'][0]}/junk", "bs=1M", "count=200",
               "status=none"], check=False, timeout=600)
    # the guest writes new data to /var that can no longer fit
    a = fresh.runner("dom0-a")
    with mounted(a, "/dev/vg_a/web01", "/run/domubk-audit/grow", "g", readonly=False) as fs:
        a.run(["dd", "if=/dev/urandom", f"of={fs['2'][0]}/data/new.bin", "bs=1M", "count=8",
               "status=none"], timeout=600)
    res = run_backup(fresh, "web01")
    assert res.exit_code == 43, res.stdout + res.stderr
    assert standby_marker(fresh, "web01")["state"] == "dirty"
    assert leftovers(fresh) == {"dom0-a": [], "dom0-b": []}  # before the next run cleans
    with mounted(b, "/dev/vg_b/web01", "/run/domubk-audit/fill", "f", readonly=False) as fs:
        b.run(["rm", "-f", f"{fs['2'][0]}/junk"])
    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert standby_marker(fresh, "web01")["state"] == "clean"
    assert_clean_audit(fresh)


def test_mass_deletion_stops_at_the_bound_and_converges_when_allowed(fresh):
    # R7: deletions are bounded. The guest loses 30 files of its root; with max_delete = 5
    # rsync deletes at most 5 and the run stops with its own exit code (42), the standby
    # marked dirty and /var not touched; --allow-mass-delete then converges.
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    bounded = "/etc/domu-backup/bounded.toml"
    text = a.run(["cat", "/etc/domu-backup/backup.toml"]).stdout
    assert "[defaults]\n" in text
    a.run(["tee", bounded], input=text.replace("[defaults]\n", "[defaults]\nmax_delete = 5\n", 1))
    a.run(["chmod", "0600", bounded])
    doomed = [f"data/small/d0000/f{i:06d}.dat" for i in range(30)]
    from toolkit.lab.audit import mounted

    with mounted(a, "/dev/vg_a/web01", "/run/domubk-audit/mass", "m", readonly=False) as fs:
        root, var = fs["1"][0], fs["2"][0]
        a.run(["rm", "--", *(f"{root}/{p}" for p in doomed)])
        a.run(["tee", f"{var}/after-the-bound.txt"], input="written after the deletions\n")

    def on_standby():
        with mounted(b, "/dev/vg_b/web01", "/run/domubk-audit/mass", "s") as fs:
            left = b.run(["sh", "-c", 'cd "$1" && ls -1 data/small/d0000', "-", fs["1"][0]])
            var = b.run(["test", "-e", f"{fs['2'][0]}/after-the-bound.txt"], check=False)
        names = {f"data/small/d0000/{n}" for n in left.stdout.split()}
        return len(set(doomed) & names), var.exit_code == 0

    res = run_backup(fresh, "web01", "--config", bounded)
    assert res.exit_code == 42, res.stdout + res.stderr
    assert leftovers(fresh) == {"dom0-a": [], "dom0-b": []}  # before the next run cleans
    assert "--allow-mass-delete" in res.stderr
    kept, var_copied = on_standby()
    assert 25 <= kept < 30  # at most max_delete of them went, and the copy stopped there
    assert not var_copied
    assert standby_marker(fresh, "web01")["state"] == "dirty"
    ok = run_backup(fresh, "web01", "--config", bounded, "--allow-mass-delete")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert on_standby() == (0, True)
    assert standby_marker(fresh, "web01")["state"] == "clean"
    assert_clean_audit(fresh)
