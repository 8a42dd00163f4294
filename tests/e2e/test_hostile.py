"""R5: guest data never chooses a host path (a hostile guest tree and fstab).

Each test edits web01's real disk on dom0-a (mapped and mounted read-write
for the edit only), then runs the backup. A guest fstab that is a symlink to
a host file, or whose mount path climbs out with ``..``, is refused before
anything is mounted on the peer; guest symlinks aimed at host paths are
copied as symlinks and never followed, on either host.
"""

from __future__ import annotations

import pytest

from toolkit.lab.audit import fingerprint, mounted
from toolkit.lab.rehearse import audit, run_backup

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

SOURCE_LV, TARGET_LV = "/dev/vg_a/web01", "/dev/vg_b/web01"
VAR_UUID = "5eed0001-0000-4000-8000-000000000002"


def edit_guest_root(lab, *commands):
    """Run shell commands in web01's root filesystem (cwd), mounted read-write for the edit."""
    a = lab.runner("dom0-a")
    with mounted(a, SOURCE_LV, "/run/domubk-edit", "e", readonly=False) as fs:
        root = fs["1"][0]
        for cmd in commands:
            a.run(["sh", "-c", f"cd {root} && {cmd}"], timeout=60)


def host_mounts(runner):
    res = runner.run(["findmnt", "-rn", "-o", "TARGET"], timeout=60)
    return sorted(res.stdout.split())


@pytest.mark.parametrize("fstab,message", [
    ("ln -sf /etc/shadow etc/fstab", "is a symlink"),
    ("rm -rf etc && ln -s / etc", "is a symlink"),
    (f"printf 'UUID={VAR_UUID} /var/../../../etc ext4 defaults 0 2\\n' >> etc/fstab",
     "has a '..' component"),
])
def test_hostile_guest_fstab_is_refused_before_the_standby_is_touched(fresh, fstab, message):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    if "'..'" in message:  # keep the other entries: only the escaping path is hostile
        edit_guest_root(fresh, "grep -v ' /var ' etc/fstab > etc/fstab.new",
                        "mv etc/fstab.new etc/fstab", fstab)
    else:
        edit_guest_root(fresh, fstab)
    standby = fingerprint(b, TARGET_LV)
    mounts = {"a": host_mounts(a), "b": host_mounts(b)}
    shadow = fingerprint(a, "/etc/shadow")
    res = run_backup(fresh, "web01")
    assert res.exit_code == 34, res.stdout + res.stderr
    assert message in res.stderr
    assert fingerprint(b, TARGET_LV) == standby  # refused before a byte reached the peer
    assert {"a": host_mounts(a), "b": host_mounts(b)} == mounts
    assert fingerprint(a, "/etc/shadow") == shadow


def test_guest_symlinks_to_host_paths_are_copied_as_links_and_never_followed(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    edit_guest_root(fresh,
                    "ln -s /root/.ssh root-ssh",
                    "ln -s /etc/domu-backup etc/hostile-config",
                    "mkdir -p srv && ln -s ../../../../../../etc srv/up",
                    "ln -s / all-of-it")
    watched = ["/root/.ssh/authorized_keys", "/etc/domu-backup/backup.toml", "/etc/passwd"]
    before = {c: {p: fingerprint(r, p) for p in watched} for c, r in (("a", a), ("b", b))}
    res = run_backup(fresh, "web01")
    assert res.exit_code == 0, res.stdout + res.stderr
    after = {c: {p: fingerprint(r, p) for p in watched} for c, r in (("a", a), ("b", b))}
    assert after == before
    assert {x.name: x.differences for x in audit(fresh, "web01") if x.differences} == {}
    with mounted(b, TARGET_LV, "/run/domubk-audit/check", "c") as fs:
        root = fs["1"][0]
        links = b.run(["find", root, "-maxdepth", "2", "-type", "l", "-name", "root-ssh", "-o",
                       "-maxdepth", "2", "-type", "l", "-name", "all-of-it", "-o",
                       "-maxdepth", "2", "-type", "l", "-name", "hostile-config"]).stdout.split()
        assert len(links) == 3, links
        assert b.run(["readlink", f"{root}/srv/up"]).stdout.strip() == "../../../../../../etc"
