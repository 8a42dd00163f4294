"""The unit fakes refuse what the real commands refuse, so order and ownership mistakes fail.

The first half drives a FakeHost command by command, as lvm, dmsetup, kpartx, mount and
coreutils behave on a Dom0. The second half shows guards and orders of the product that a
kinder fake would let pass unnoticed: the peer's device check (R8), the executor's
teardown order, and recover's newest-first undo.
"""

from __future__ import annotations

import json

import pytest
from fakes import FakeHost, config, web01_run

from toolkit import errors
from toolkit.execute import Executor
from toolkit.plan import plan_backup
from toolkit.recover import _tagged_lvs, owned_snapshots, recover_domain, recover_journals
from toolkit.report import DomainReport
from toolkit.rsync import untied

RUN = "20260101T000000Z-abcd"
SNAP = f"domubk-{RUN}-web01-xvda"
SNAP_DM = f"vg_a-domubk--{RUN.replace('-', '--')}--web01--xvda"
ALIAS = f"domubk-{RUN}-web01-xvda"
MNT = "/run/domu-backup/src/web01.R/xvda1"


def ok(host: FakeHost, *argv: str) -> None:
    res = host.run(list(argv), check=False)
    assert res.exit_code == 0, res


def refused(host: FakeHost, *argv: str) -> tuple[int, str]:
    res = host.run(list(argv), check=False)
    assert res.exit_code != 0, f"{argv} succeeded; the real command refuses it"
    return res.exit_code, res.stderr


def snapshot(host: FakeHost, *tags: str) -> None:
    tag_args = [x for t in tags for x in ("--addtag", t)]
    ok(host, "lvcreate", "--snapshot", "--permission", "r", "--name", SNAP, *tag_args, "-L",
       "64M", "vg_a/web01")


def mountpoint(host: FakeHost, path: str = MNT) -> None:
    ok(host, "mkdir", "-p", "-m", "0755", path.rsplit("/", 2)[0])
    ok(host, "mkdir", "-m", "0700", path.rsplit("/", 1)[0])
    ok(host, "mkdir", "-m", "0700", path)


# -- lvremove ---------------------------------------------------------------------

def test_lvremove_of_a_snapshot_its_partition_maps_sit_on_is_in_use():
    host = FakeHost("dom0-a")
    snapshot(host, "domubk")
    ok(host, "kpartx", "-a", "-s", "-p", "p", f"/dev/vg_a/{SNAP}")
    code, err = refused(host, "lvremove", "--force", "--yes", f"vg_a/{SNAP}")
    assert code == 5 and f"Logical volume vg_a/{SNAP} in use" in err
    ok(host, "kpartx", "-d", "-s", "-p", "p", f"/dev/vg_a/{SNAP}")
    ok(host, "lvremove", "--force", "--yes", f"vg_a/{SNAP}")
    assert host.leftovers() == []


def test_lvremove_of_a_mounted_snapshot_names_the_filesystem_in_use():
    host = FakeHost("dom0-a")
    snapshot(host)
    mountpoint(host)
    ok(host, "mount", "-t", "ext4", "-o", "ro", f"/dev/vg_a/{SNAP}", MNT)
    code, err = refused(host, "lvremove", "--force", "--yes", f"vg_a/{SNAP}")
    assert code == 5 and "contains a filesystem in use" in err
    code, err = refused(host, "lvremove", "--force", "--yes", "vg_a/nothing")
    assert code == 5 and "Failed to find" in err


def test_lvremove_of_a_snapshot_a_running_process_reads_is_in_use_until_it_ends():
    host = FakeHost("dom0-a")
    snapshot(host, "domubk")
    host.processes[4242] = f"dd if=/dev/vg_a/{SNAP} bs=512 count=2048 status=none"
    code, err = refused(host, "lvremove", "--force", "--yes", f"vg_a/{SNAP}")
    assert code == 5 and f"Logical volume vg_a/{SNAP} in use" in err
    ok(host, "kill", "-TERM", "--", "4242")
    ok(host, "lvremove", "--force", "--yes", f"vg_a/{SNAP}")
    assert host.leftovers() == []


# -- dmsetup remove / kpartx -d -----------------------------------------------------


def test_a_map_a_running_process_writes_is_busy_until_it_ends():
    host = FakeHost("dom0-b")
    ok(host, "dmsetup", "create", ALIAS, "--table", "0 524288 linear /dev/vg_b/web01 0")
    host.processes[4343] = f"dd of=/dev/mapper/{ALIAS} conv=notrunc,nocreat,fsync"
    code, err = refused(host, "dmsetup", "remove", "--retry", ALIAS)
    assert code == 1 and "Device or resource busy" in err
    ok(host, "kill", "-KILL", "--", "4343")
    ok(host, "dmsetup", "remove", "--retry", ALIAS)
    assert host.leftovers() == []

def test_an_alias_its_partition_maps_sit_on_is_busy():
    host = FakeHost("dom0-b")
    ok(host, "dmsetup", "create", ALIAS, "--table", "0 524288 linear /dev/vg_b/web01 0")
    ok(host, "kpartx", "-a", "-s", "-p", "p", f"/dev/mapper/{ALIAS}")
    code, err = refused(host, "dmsetup", "remove", "--retry", ALIAS)
    assert code == 1 and "Device or resource busy" in err
    ok(host, "kpartx", "-d", "-s", "-p", "p", f"/dev/mapper/{ALIAS}")
    ok(host, "dmsetup", "remove", "--retry", ALIAS)
    assert host.leftovers() == []


def test_a_mounted_partition_map_is_busy_for_dmsetup_and_kpartx():
    host = FakeHost("dom0-b")
    ok(host, "dmsetup", "create", ALIAS, "--table", "0 524288 linear /dev/vg_b/web01 0")
    ok(host, "kpartx", "-a", "-s", "-p", "p", f"/dev/mapper/{ALIAS}")
    mountpoint(host)
    ok(host, "mount", "-t", "ext4", f"/dev/mapper/{ALIAS}p1", MNT)
    code, err = refused(host, "dmsetup", "remove", "--retry", f"{ALIAS}p1")
    assert code == 1 and "Device or resource busy" in err
    code, err = refused(host, "kpartx", "-d", "-s", "-p", "p", f"/dev/mapper/{ALIAS}")
    assert code == 1 and f"{ALIAS}p1" in err and "busy" in err
    # kpartx removes what it can: only the mounted partition's map is left
    assert sorted(host.maps) == [ALIAS, f"{ALIAS}p1"]


def test_a_guest_lv_map_holds_the_partition_map_it_sits_on():
    host = FakeHost("dom0-a")
    snapshot(host)
    ok(host, "kpartx", "-a", "-s", "-p", "p", f"/dev/vg_a/{SNAP}")
    lvmap = f"domubk-{RUN}-web01-src-0123456789abcdef"
    ok(host, "dmsetup", "create", "--concise",
       f"{lvmap},,,ro,0 2048 linear /dev/mapper/{SNAP_DM}p7 2048")
    code, err = refused(host, "kpartx", "-d", "-s", "-p", "p", f"/dev/vg_a/{SNAP}")
    assert code == 1 and f"{SNAP_DM}p7" in err
    code, _ = refused(host, "lvremove", "--force", "--yes", f"vg_a/{SNAP}")
    assert code == 5
    ok(host, "dmsetup", "remove", "--retry", lvmap)
    ok(host, "kpartx", "-d", "-s", "-p", "p", f"/dev/vg_a/{SNAP}")
    ok(host, "lvremove", "--force", "--yes", f"vg_a/{SNAP}")
    assert host.leftovers() == []


def test_a_map_on_a_device_that_does_not_exist_is_not_made():
    host = FakeHost("dom0-b")
    code, err = refused(host, "dmsetup", "create", ALIAS, "--table",
                        "0 524288 linear /dev/vg_b/gone 0")
    assert code == 1 and "No such device" in err
    code, _ = refused(host, "kpartx", "-a", "-s", "-p", "p", "/dev/mapper/gone")
    assert host.leftovers() == []


# -- directories ----------------------------------------------------------------------

def test_rmdir_refuses_a_directory_with_a_subdirectory_a_mount_or_nothing_there():
    host = FakeHost("dom0-a")
    mountpoint(host)
    run_dir = MNT.rsplit("/", 1)[0]
    code, err = refused(host, "rmdir", "--", run_dir)
    assert code == 1 and "Directory not empty" in err
    snapshot(host)
    ok(host, "mount", "-t", "ext4", f"/dev/vg_a/{SNAP}", MNT)
    code, err = refused(host, "rmdir", "--", MNT)
    assert "Device or resource busy" in err
    ok(host, "umount", MNT)
    ok(host, "rmdir", "--", MNT)
    ok(host, "rmdir", "--", run_dir)
    code, err = refused(host, "rmdir", "--", run_dir)
    assert "No such file or directory" in err


def test_mkdir_refuses_an_existing_directory_and_a_missing_parent():
    host = FakeHost("dom0-a")
    mountpoint(host)
    code, err = refused(host, "mkdir", "-m", "0700", MNT)
    assert "File exists" in err
    code, err = refused(host, "mkdir", "-m", "0700", "/run/nowhere/x")
    assert "No such file or directory" in err


# -- mount / umount -------------------------------------------------------------------

def test_mount_of_a_device_that_does_not_exist_fails_with_32():
    host = FakeHost("dom0-b")
    mountpoint(host)
    code, err = refused(host, "mount", "-t", "ext4", f"/dev/mapper/{ALIAS}p1", MNT)
    assert code == 32 and f"special device /dev/mapper/{ALIAS}p1 does not exist" in err
    ok(host, "dmsetup", "create", ALIAS, "--table", "0 524288 linear /dev/vg_b/web01 0")
    ok(host, "kpartx", "-a", "-s", "-p", "p", f"/dev/mapper/{ALIAS}")
    code, err = refused(host, "mount", "-t", "ext4", f"/dev/mapper/{ALIAS}p4", MNT)
    assert code == 32  # the recorded msdos table has no partition 4
    code, err = refused(host, "mount", "-t", "ext4", f"/dev/mapper/{ALIAS}p1", "/run/none")
    assert code == 32 and "mount point does not exist" in err
    ok(host, "mount", "-t", "ext4", f"/dev/mapper/{ALIAS}p1", MNT)


def test_umount_is_busy_with_a_mount_below_or_a_process_working_there():
    host = FakeHost("dom0-a")
    snapshot(host)
    ok(host, "kpartx", "-a", "-s", "-p", "p", f"/dev/vg_a/{SNAP}")
    mountpoint(host)
    ok(host, "mount", "-t", "ext4", f"/dev/mapper/{SNAP_DM}p1", MNT)
    ok(host, "mkdir", "-p", f"{MNT}/boot")
    ok(host, "mount", "-t", "ext4", f"/dev/mapper/{SNAP_DM}p5", f"{MNT}/boot")
    code, err = refused(host, "umount", MNT)
    assert code == 32 and "target is busy" in err
    ok(host, "umount", f"{MNT}/boot")
    host.processes[4242] = f"rsync -aHAX {MNT}/ root@dom0-b:/x/"
    code, err = refused(host, "umount", MNT)
    assert "target is busy" in err
    ok(host, "kill", "-TERM", "--", "4242")
    ok(host, "umount", MNT)
    code, err = refused(host, "umount", MNT)
    assert code == 32 and "not mounted" in err


# -- lvs tags --------------------------------------------------------------------------

def test_lvs_reports_the_tags_lvcreate_gave_and_selects_by_them():
    host = FakeHost("dom0-a")
    snapshot(host, "domubk", f"domubk_run_{RUN}")
    report = json.loads(host.run(["lvs", "--reportformat", "json", "-o", "lv_tags", "--",
                                  f"vg_a/{SNAP}"]).stdout)
    row = report["report"][0]["lv"][0]
    assert row["lv_tags"] == f"domubk,domubk_run_{RUN}" and row["origin"] == "web01"
    assert _tagged_lvs(host) == [("vg_a", SNAP)]
    assert owned_snapshots(_tagged_lvs(host), "web01") == [f"vg_a/{SNAP}"]
    untagged = FakeHost("dom0-a")
    snapshot(untagged)  # the same name without the tag: not the tool's
    assert _tagged_lvs(untagged) == []
    assert untagged.run(["lvs", "--reportformat", "json", "-o", "lv_tags", "--",
                         f"vg_a/{SNAP}"]).stdout.count('"lv_tags": ""') == 1


# -- device numbers -------------------------------------------------------------------

def _stat(host: FakeHost, node: str) -> str:
    major, minor = host.run(["stat", "-L", "--format", "%t:%T", node]).stdout.strip().split(":")
    return f"{int(major, 16)}:{int(minor, 16)}"


def _findmnt(host: FakeHost, mnt: str) -> dict:
    out = host.run(["findmnt", "--json", "--mountpoint", mnt, "-o",
                    "TARGET,SOURCE,FSTYPE,MAJ:MIN"]).stdout
    return json.loads(out)["filesystems"][-1]


def test_each_device_has_its_own_number_whatever_path_names_it():
    host = FakeHost("dom0-a")
    snapshot(host)
    assert _stat(host, f"/dev/vg_a/{SNAP}") == _stat(host, f"/dev/mapper/{SNAP_DM}")
    assert _stat(host, f"/dev/vg_a/{SNAP}") != _stat(host, "/dev/vg_a/web01")
    code, err = refused(host, "stat", "-L", "--format", "%t:%T", "/dev/mapper/nothing")
    assert "No such file or directory" in err


def test_findmnt_reports_the_number_of_the_device_mounted_not_of_the_one_expected():
    host = FakeHost("dom0-b")
    ok(host, "dmsetup", "create", ALIAS, "--table", "0 524288 linear /dev/vg_b/web01 0")
    ok(host, "kpartx", "-a", "-s", "-p", "p", f"/dev/mapper/{ALIAS}")
    mountpoint(host)
    ok(host, "mount", "-t", "ext4", f"/dev/mapper/{ALIAS}p5", MNT)
    fs = _findmnt(host, MNT)
    assert fs["maj:min"] == _stat(host, f"/dev/mapper/{ALIAS}p5")
    assert fs["maj:min"] != _stat(host, f"/dev/mapper/{ALIAS}p1")
    # the mount table keeps the number it was mounted with: the two tables are apart
    host.devices[f"{ALIAS}p5"] = "253:999"
    assert _findmnt(host, MNT)["maj:min"] != _stat(host, f"/dev/mapper/{ALIAS}p5")


# -- guards and orders that a kinder fake let pass -------------------------------------

class WrongDeviceHost(FakeHost):
    """A host whose mount of one partition's map mounts another partition's instead.

    As when a stale /dev/mapper node or a udev rename points the planned name at the wrong
    device: `mount` exits 0 and the filesystem type is the expected one.
    """

    def __init__(self, host: str, swap: tuple[str, str]) -> None:
        super().__init__(host)
        self.swap = swap

    def _answer(self, a, input):
        if a[0] == "mount" and a[-2].endswith(self.swap[0]):
            a = (*a[:-2], a[-2].removesuffix(self.swap[0]) + self.swap[1], a[-1])
        return super()._answer(a, input)


def _executor(tmp_path, src, peer):
    return web01_run(tmp_path, src, peer)


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_filesystem_mounted_from_the_wrong_device_stops_the_run_before_rsync(tmp_path, side):
    # R8: p5 holds ext4 too, so only the device number tells it from p1
    wrong = WrongDeviceHost("dom0-a" if side == "source" else "dom0-b", ("p1", "p5"))
    src, peer = (wrong, FakeHost("dom0-b")) if side == "source" else (FakeHost("dom0-a"),
                                                                      wrong)
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = _executor(tmp_path, src, peer)
    expected = errors.SourceGuardFailed if side == "source" else errors.StandbyGuardFailed
    with pytest.raises(expected, match=r"xvda1 is mounted from .*p5 \(253:\d+\), not from "
                                       r".*xvdap1 \(253:\d+\)"):
        ex.run()
    assert not any(untied(c)[0] == "rsync" for c in src.calls)
    assert src.leftovers() == [] and peer.leftovers() == []


def test_without_its_device_comparison_the_guard_lets_the_wrong_standby_be_written(
        tmp_path, monkeypatch):
    # The scenario above fails only because of the comparison: a guard that compares the
    # mount with its own source (the kind of check a shared helper hid) lets rsync write
    # into the wrong partition of the standby.
    import toolkit.guards
    from toolkit.plan import stat_argv

    original = toolkit.guards.prove_mount

    def compares_with_what_is_mounted(runner, probes, mountpoint, device, fstype, error,
                                      results=()):  # what was read is ignored: it reads again
        res = runner.run(["findmnt", "--json", "--mountpoint", mountpoint, "-o",
                          "TARGET,SOURCE,FSTYPE,MAJ:MIN"], check=False, timeout=60)
        mounted = (json.loads(res.stdout)["filesystems"][-1]["source"] if res.exit_code == 0
                   else device)
        return original(runner, (probes[0], stat_argv(mounted)), mountpoint, mounted, fstype,
                        error)

    monkeypatch.setattr(toolkit.guards, "prove_mount", compares_with_what_is_mounted)
    src, peer = FakeHost("dom0-a"), WrongDeviceHost("dom0-b", ("p1", "p5"))
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        with pytest.raises(errors.StandbyGuardFailed):
            ex.run()
    assert any(untied(c)[0] == "rsync" and c[-1].endswith("/xvda1/") for c in src.calls)


def _undo_oldest_first(self, host):
    """Executor._teardown_host with the order turned round: what was made first goes first."""
    from toolkit.undo import unwind

    done = unwind(self.runner(host), list(reversed([s for s in self.made if s.role == host])),
                  timeout=60, probe_first=False)
    self.report.teardown_errors += [why for _, why in done.failed]
    if done.clean:
        self.journals[host].remove()


def test_teardown_newest_first_leaves_nothing(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = _executor(tmp_path, src, peer)
    ex.run()
    assert report.teardown_errors == []
    assert src.leftovers() == [] and peer.leftovers() == []


def test_teardown_in_creation_order_is_refused_by_the_hosts(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.setattr(Executor, "_teardown_host", _undo_oldest_first)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(errors.TeardownIncomplete):
        ex.run()
    text = "\n".join(report.teardown_errors)
    assert f"Logical volume vg_a/{SNAP} in use" in text  # the snapshot before its maps
    assert "Device or resource busy" in text  # a map before what sits on it
    assert "Directory not empty" in text  # the run directory before its mountpoints
    assert f"lv vg_a/{SNAP}" in src.leftovers() and f"map {ALIAS}" in peer.leftovers()
    assert ex.journals["source"].path in src.files  # kept for recover


def _killed_run(tmp_path, monkeypatch):
    """A run killed after its rsync: everything it made is left, with its journals."""
    monkeypatch.setattr(Executor, "_teardown", lambda self: None)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = _executor(tmp_path, src, peer)
    ex.run()
    assert src.mounts and src.maps and src.lvs and peer.mounts and peer.maps
    return cfg, src, peer


def test_recover_undoes_a_killed_runs_journal_newest_first_and_leaves_nothing(
        tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    cfg, src, peer = _killed_run(tmp_path, monkeypatch)
    for host in (src, peer):
        errs: list[str] = []
        recover_journals(host, cfg.defaults.state_dir, "web01", lambda m: None, errs)
        assert errs == [] and host.leftovers() == []
        assert not any(p.endswith(".jsonl") for p in host.files)  # the journal is removed
    assert sleeps == []  # every undo went through the first time


def test_recover_undoing_a_journal_oldest_first_is_refused_by_the_hosts(tmp_path, monkeypatch):
    import toolkit.recover

    monkeypatch.setattr("time.sleep", lambda s: None)
    cfg, src, peer = _killed_run(tmp_path, monkeypatch)
    real_parse = toolkit.recover.parse_journal
    # recover walks reversed(entries): reversing them first makes it oldest first
    monkeypatch.setattr(toolkit.recover, "parse_journal",
                        lambda text, path: list(reversed(real_parse(text, path))))
    errs: list[str] = []
    recover_journals(src, cfg.defaults.state_dir, "web01", lambda m: None, errs)
    text = "\n".join(errs)
    assert "in use" in text and "Device or resource busy" in text
    assert f"lv vg_a/{SNAP}" in src.leftovers()
    assert any(p.endswith(".jsonl") for p in src.files)  # kept: recover must come back


def test_recover_domain_cleans_both_hosts_of_a_killed_run(tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    cfg, src, peer = _killed_run(tmp_path, monkeypatch)
    done = recover_domain(cfg, "web01", src, peer)
    assert src.leftovers() == [] and peer.leftovers() == []
    assert any("removed snapshot" in m for m in done)
    # no undo was refused and retried: the journals alone, newest first, took it all
    assert sleeps == [] and not any(p.endswith(".jsonl") for h in (src, peer)
                                    for p in h.files)


def test_recover_sweep_finds_what_no_journal_names(tmp_path, monkeypatch):
    # The journals lost (an older version, a wiped state directory): the sweep alone must
    # take mounts, then maps, then the tagged snapshot, then the directories.
    monkeypatch.setattr("time.sleep", lambda s: None)
    cfg, src, peer = _killed_run(tmp_path, monkeypatch)
    for host in (src, peer):
        for path in [p for p in host.files if p.endswith(".jsonl")]:
            del host.files[path]
    recover_domain(cfg, "web01", src, peer)
    assert src.leftovers() == [] and peer.leftovers() == []


def _lvm01(tmp_path):
    """A guest with LVM on xvda2 (the guest LV maps sit on the partition maps)."""
    from test_facts_guestlvm import lvm01_facts

    cfg = config(tmp_path)
    plan = plan_backup(lvm01_facts(), cfg, RUN)
    src = FakeHost("dom0-a", devices=("/dev/vg_a/lvm01",))
    peer = FakeHost("dom0-b", devices=("/dev/vg_b/lvm01",))
    src.fstab_on = "xvda2.vg_a.root"
    src.fstab = ("UUID=5eed0017-0000-4000-8000-000000000002 / ext4 defaults 0 1\n"
                 "UUID=5eed0017-0000-4000-8000-000000000003 /var ext4 defaults 0 2\n"
                 "UUID=5eed0017-0000-4000-8000-000000000001 /boot ext4 defaults 0 2\n")
    for host in (src, peer):
        host.partition_numbers = (1, 2)
    report = DomainReport("web01")
    return cfg, src, peer, report, Executor(plan, cfg, src, peer, report)


def test_a_guest_lvm_run_takes_its_lv_maps_down_before_the_partition_maps(tmp_path):
    cfg, src, peer, report, ex = _lvm01(tmp_path)
    ex.run()
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert report.teardown_errors == [] and src.leftovers() == [] and peer.leftovers() == []
    for host in (src, peer):
        undos = [c[:2] for c in host.calls if c[:2] in (("dmsetup", "remove"),
                                                        ("kpartx", "-d"))]
        assert undos[:2] == [("dmsetup", "remove")] * 2 and ("kpartx", "-d") in undos[2:]


def test_recover_takes_a_killed_guest_lvm_runs_lv_maps_before_its_partition_maps(
        tmp_path, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    monkeypatch.setattr(Executor, "_teardown", lambda self: None)
    cfg, src, peer, report, ex = _lvm01(tmp_path)
    ex.run()
    assert len(src.maps) == 4 and len(peer.maps) == 5  # 2 partitions + 2 LVs (+ the alias)
    for host in (src, peer):  # the journals lost: the sweep alone
        for path in [p for p in host.files if p.endswith(".jsonl")]:
            del host.files[path]
    recover_domain(cfg, "web01", src, peer)
    assert src.leftovers() == [] and peer.leftovers() == [] and sleeps == []


@pytest.mark.parametrize(("argv", "code", "said"), [
    (("vgs", "--noheadngs", "-o", "vg_name"), 3, "unrecognized option '--noheadngs'"),
    (("vgs", "--noheadings", "-o", "vgname"), 5, "Unrecognised field: vgname"),
    (("lvs", "--noheadings", "-o", "vg_name,lv_nmae", "-S", "lv_tags=domubk"), 5,
     "Unrecognised field: lv_nmae"),
    (("lvs", "-o"), 3, "unrecognized option '-o'"),
    (("dmsetup", "info", "-c", "--noheadings", "-o", "nmae"), 1, "Unrecognised field: nmae"),
    (("dmsetup", "info", "-x"), 1, "unrecognized option '-x'"),
    (("findmnt", "--json", "--list", "-o", "TARGT"), 1, "unknown column: TARGT"),
    (("findmnt", "--jsn"), 1, "unrecognized option '--jsn'"),
    (("find", "/run/x", "-MINDEPTH", "1"), 1, "unknown predicate `-MINDEPTH'"),
    (("find", "/run/x", "-maxdepth", "one"), 1, "positive decimal integer argument to -maxdepth"),
    (("find", "/run/x", "-type", "D1"), 1, "Unknown argument to -type: D1"),
    (("lvremove", "--FORCE", "--yes", "vg_a/x"), 3, "unrecognized option '--FORCE'"),
    (("dmsetup", "remove", "--RETRY", "x"), 1, "unrecognized option '--RETRY'"),
])
def test_report_commands_refuse_an_option_or_field_they_do_not_know(argv, code, said):
    res = FakeHost("dom0-a").run(argv, check=False)
    assert res.exit_code == code and said in res.stderr, res


@pytest.mark.parametrize("argv", [
    ("vgs", "--noheadings", "-o", "vg_name"),
    ("lvs", "--noheadings", "-o", "vg_name,lv_name", "-S", "lv_tags=domubk"),
    ("dmsetup", "info", "-C", "--noheadings", "-o", "name"),  # -C is --columns too
    ("findmnt", "--json", "--list", "-o", "target"),  # columns in any case
    ("find", "/", "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-name", "web01.*"),
])
def test_report_commands_accept_what_the_real_ones_accept(argv):
    assert FakeHost("dom0-a").run(argv, check=False).exit_code == 0


# -- ps, kill, rmdir ------------------------------------------------------------

def test_ps_lists_the_pids_asked_for_and_exits_1_when_none_is_left():
    host = FakeHost("dom0-a")
    host.processes[4242] = "rsync -a /x/ /y/"
    res = host.run(["ps", "-o", "pid=", "-p", "4242,4343"], check=False)
    assert (res.exit_code, res.stdout) == (0, "4242\n")
    code, _ = refused(host, "ps", "-o", "pid=", "-p", "4343")
    assert code == 1
    code, err = refused(host, "ps", "-o", "pid=", "-p", "4242XX,XX4343")
    assert "process ID list syntax error" in err
    code, err = refused(host, "ps", "-eo", "PID=,ARGS=")
    assert "unknown user-defined format specifier" in err


def test_kill_of_a_pid_that_is_gone_is_exit_1_and_the_others_are_still_signalled():
    host = FakeHost("dom0-a")
    host.processes.update({4242: "rsync", 4343: "ssh"})
    host.ignores_term.add(4343)
    code, err = refused(host, "kill", "-TERM", "--", "4242", "4343", "4444")
    assert code == 1 and err == "kill: (4444): No such process\n"
    assert sorted(host.processes) == [4343]  # 4343 ignores TERM
    ok(host, "kill", "-KILL", "--", "4343")
    assert host.processes == {}
    code, err = refused(host, "kill", "-XXTERMXX", "--", "1")
    assert "unknown signal" in err


def test_rmdir_removes_each_operand_and_fails_if_any_fails():
    host = FakeHost("dom0-a")
    ok(host, "mkdir", "-p", "/run/domu-backup/src")
    ok(host, "mkdir", "/run/domu-backup/src/a")
    ok(host, "mkdir", "/run/domu-backup/src/b")
    code, err = refused(host, "rmdir", "--", "/run/domu-backup/src/nope", "/run/domu-backup/src/a")
    assert code == 1 and "'/run/domu-backup/src/nope': No such file or directory" in err
    assert "/run/domu-backup/src/a" not in host.dirs  # removed all the same
    code, err = refused(host, "rmdir", "--XX", "/run/domu-backup/src/b")
    assert "unrecognized option" in err and "/run/domu-backup/src/b" in host.dirs
