"""The executor on fake Dom0s: teardown always, guards before rsync, journals, signals."""

from __future__ import annotations

import json
import signal

import pytest
from fakes import FakeHost, symlink_guest_fstab, web01_facts, web01_run

from toolkit import errors
from toolkit.execute import Executor, domain_lock
from toolkit.journal import list_journals, unwrap_journalled
from toolkit.marker import marker_path
from toolkit.plan import plan_backup
from toolkit.report import DomainReport
from toolkit.rsync import untied
from toolkit.runners import CommandResult, LocalRunner
from toolkit.step_batch import unwrap_step_batch

RUN = "20260101T000000Z-abcd"


def run_executor(tmp_path, source, peer, allow_mass_delete=False):
    run = web01_run(tmp_path, source, peer, allow_mass_delete=allow_mass_delete)
    return run.plan, run.report, run.ex


def fail_on(prefix, code=1, stderr="boom", times=None):
    state = {"n": 0}

    def fail(argv):
        if argv[: len(prefix)] == tuple(prefix):
            state["n"] += 1
            if times is None or state["n"] <= times:
                return CommandResult("fake", argv, code, "", stderr, 0.0)
        return None

    return fail


def test_successful_run_tears_everything_down_in_reverse_order(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    assert src.leftovers() == [] and peer.leftovers() == []
    creates = [c for c in src.calls if c[0] in ("lvcreate", "kpartx", "mount") and "-d" not in c]
    undos = [c for c in src.calls if c[0] in ("lvremove", "umount") or c[:2] == ("kpartx", "-d")]
    assert [c[0] for c in creates] == ["lvcreate", "kpartx", "mount", "mount", "mount"]
    assert [c[0] for c in undos] == ["umount", "umount", "umount", "kpartx", "lvremove"]
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert report.teardown_errors == []


def test_rsync_runs_only_after_both_sides_are_proven_and_standby_marked_dirty(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    first_rsync = next(i for i, c in enumerate(src.calls) if untied(c)[0] == "rsync")
    assert any(c[0] == "findmnt" for c in src.calls[:first_rsync])
    marker = marker_path(ex.config, ex.plan.domain)
    assert '"state": "clean"' in peer.files[marker]
    rsync = next(c for c in src.calls if untied(c)[0] == "rsync")
    assert "--exclude=/var/cache/*" in rsync  # xvda1 is "/" by the guest fstab
    assert rsync[-1].startswith("root@dom0-b:/run/domu-backup/dst/web01.")


def test_failed_mount_tears_down_and_copies_nothing(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b", fail=fail_on(("mount",), 32, "wrong fs"))
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.MountRefused, match="wrong fs"):
        ex.run()
    assert not any(untied(c)[0] == "rsync" for c in src.calls)
    assert src.leftovers() == [] and peer.leftovers() == []


@pytest.mark.parametrize("side", ["source", "peer"])
def test_silently_failed_mount_is_caught_before_rsync(tmp_path, side):
    # R7/R8: a `mount` that exits 0 and mounts nothing
    src = FakeHost("dom0-a", silent_mount=side == "source")
    peer = FakeHost("dom0-b", silent_mount=side == "peer")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    expected = errors.SourceGuardFailed if side == "source" else errors.StandbyGuardFailed
    with pytest.raises(expected, match="not a mountpoint"):
        ex.run()
    assert not any(untied(c)[0] == "rsync" for c in src.calls)
    assert src.leftovers() == [] and peer.leftovers() == []


def test_signal_mid_run_still_tears_down_and_exits_128_plus_n(tmp_path):
    def interrupt(argv):
        if argv[0] == "dmsetup" and argv[1] == "create":
            raise errors.Interrupted(signal.SIGTERM)
        return None

    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b", fail=interrupt)
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.Interrupted) as info:
        ex.run()
    assert info.value.exit_code == 143
    assert src.leftovers() == [] and peer.leftovers() == []


def test_busy_unmount_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    src = FakeHost("dom0-a", fail=fail_on(("umount",), 32, "target is busy", times=2))
    peer = FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    assert src.leftovers() == []


def test_teardown_undoes_without_probing_first_when_nothing_fails(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    assert src.leftovers() == [] and peer.leftovers() == []
    for host in (src, peer):
        first_undo = next(i for i, c in enumerate(host.calls) if c[0] == "umount")
        after = host.calls[first_undo:]
        # every undo succeeded on its first try: no exists-probe (findmnt, lvs --noheadings,
        # dmsetup info, test -d) ran during teardown
        assert not [c for c in after if c[0] in ("findmnt", "test")
                    or c[:2] == ("dmsetup", "info") or (c[0] == "lvs" and "--noheadings" in c)]


def test_teardown_undo_of_a_resource_already_gone_probes_once_and_moves_on(tmp_path,
                                                                        monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    real_answer = src._answer

    def vanish_snapshot_first(argv, input):
        if argv[0] == "lvremove":  # something else removed it between rsync and teardown
            src.lvs.pop(argv[-1], None)
        return real_answer(argv, input)

    src._answer = vanish_snapshot_first
    ex.run()
    removes = [c for c in src.calls if c[0] == "lvremove"]
    probes = [c for c in src.calls if c[0] == "lvs" and "--noheadings" in c]
    assert len(removes) == 1 and len(probes) == 1  # one failed undo, one probe: gone
    assert sleeps == [] and report.teardown_errors == []
    assert src.leftovers() == []


def test_teardown_failure_is_reported_and_journal_kept_for_recover(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    src = FakeHost("dom0-a", fail=fail_on(("lvremove",), 5, "Logical volume in use"))
    peer = FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.TeardownIncomplete):
        ex.run()
    assert any("lvremove" in e or "snapshot" in e for e in report.teardown_errors)
    journal = ex.journals["source"].path
    assert journal in src.files and "lvremove" in src.files[journal]
    # The peer, whose teardown went through, keeps no journal.
    assert ex.journals["peer"].path not in peer.files and peer.leftovers() == []


class BlockingUnmount(FakeHost):
    """A peer whose first umount waits (up to 10 s) until the source has removed its snapshot."""

    def __init__(self, host, source_done):
        super().__init__(host)
        self.source_done = source_done
        self.waited: bool | None = None

    def _answer(self, a, input):
        if a[0] == "umount" and self.waited is None:
            self.waited = self.source_done.wait(10)
        return super()._answer(a, input)


class SignallingSource(FakeHost):
    def __init__(self, host, done):
        super().__init__(host)
        self.done = done

    def _answer(self, a, input):
        res = super()._answer(a, input)
        if a[0] == "lvremove":
            self.done.set()
        return res


def test_the_hosts_are_torn_down_side_by_side(tmp_path):
    import threading

    done = threading.Event()
    src, peer = SignallingSource("dom0-a", done), BlockingUnmount("dom0-b", done)
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    # One after another, the peer's unmount would wait in vain for the source's snapshot
    # removal, which would only come after it.
    assert peer.waited is True
    assert src.leftovers() == [] and peer.leftovers() == [] and report.teardown_errors == []
    # each host still undoes newest first
    first = next(i for i, c in enumerate(src.calls) if c[0] == "umount")
    undos = [c[0] for c in src.calls[first:] if c[0] in ("umount", "rmdir", "kpartx",
                                                        "lvremove")]
    assert undos[-2:] == ["kpartx", "lvremove"]


def test_overflowed_snapshot_fails_run_and_leaves_standby_dirty(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    original = src._answer

    def overflow_after_rsync(a, input):
        if untied(a)[0] == "rsync":
            for v in src.lvs.values():
                v["attr"] = "swi-I-s---"
                v["percent"] = "100.00"
        return original(a, input)

    src._answer = overflow_after_rsync
    with pytest.raises(errors.SnapshotInvalid):
        ex.run()
    assert '"state": "dirty"' in peer.files[marker_path(ex.config, ex.plan.domain)]
    assert report.snapshots[0].invalid
    # the copy that read the overflowed snapshot is not reported as copied, nor pending
    assert [f.outcome for f in report.filesystems if f.name == "xvda1"] == ["failed"]
    assert src.leftovers() == [] and peer.leftovers() == []


def test_mass_delete_bound_is_its_own_outcome(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    src.rsync_result = (25, "", "Deletions stopped due to --max-delete limit")
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.MassDeleteRefused):
        ex.run()
    assert '"state": "dirty"' in peer.files[marker_path(ex.config, ex.plan.domain)]


def test_allow_mass_delete_drops_the_bound(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer, allow_mass_delete=True)
    ex.run()
    assert not any(a.startswith("--max-delete") for c in src.calls
                   if untied(c)[0] == "rsync" for a in c)


def test_journal_entry_is_written_before_each_side_effect(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    lvcreate = next(i for i, c in enumerate(src.calls) if c[0] == "lvcreate")
    path = ex.journals["source"].path
    # The call before it is the journalled wrapper of that very lvcreate: the entry is
    # appended and fsynced, then it runs (tests/unit/test_journal.py runs the wrapper).
    assert unwrap_journalled(src.calls[lvcreate - 1]) == (path, list(src.calls[lvcreate]))
    assert "conv=notrunc,fsync" in src.calls[lvcreate - 1][2]
    for host in (src, peer):  # every step with an undo went through the wrapper or a batch
        journal = ex.journals["source" if host is src else "peer"].path
        batched = {s.argv: s for c in host.calls for s in unwrap_step_batch(c) or ()}
        wrapped = [unwrap_journalled(c) for c in host.calls]
        creates = [c for c in host.calls if c[0] in ("lvcreate", "kpartx", "mount")
                   and "-d" not in c]
        assert creates and all(
            wrapped[host.calls.index(c) - 1] is not None
            or (c in batched and batched[c].journal == journal and batched[c].entry)
            for c in creates)
        assert any(c in batched for c in creates)  # the peer's maps and mounts in one go
    # the journal is removed after a clean teardown
    assert ex.journals["source"].path not in src.files


def test_second_run_of_a_domain_is_busy(tmp_path):
    lock_dir = str(tmp_path / "lock")
    with domain_lock(lock_dir, "web01"):
        with pytest.raises(errors.LockBusy) as info:
            with domain_lock(lock_dir, "web01"):
                pass
    assert info.value.exit_code == 75
    with domain_lock(lock_dir, "web01"):
        pass  # released


def test_no_guest_fstab_is_a_clear_error_listing_filesystems(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.FstabError) as info:
        ex.run()
    assert info.value.host == "dom0-a"
    found = ", ".join(f"{f.name} ({f.fstype} UUID={f.uuid} label={f.label})"
                      for f in plan.filesystems)
    assert str(info.value) == (f"[dom0-a] no /etc/fstab found on any filesystem of web01 "
                               f"(found: {found}); set [domains.web01.mounts] in the config")
    assert found.startswith("xvda1 (ext4 UUID=3f1c2b9a-5d4e-4c7b-9a8f-0e1d2c3b4a59 label=root "
                            "fs), xvda5 (ext4 ")
    assert src.leftovers() == [] and peer.leftovers() == []


def test_guest_symlinked_fstab_is_refused(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    symlink_guest_fstab(src)
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.FstabError, match="symlink"):
        ex.run()
    assert not any(c[:2] == ("cat", "--") and c[-1] == "/etc/shadow" for c in src.calls)


def test_guest_etc_symlinked_to_a_path_missing_on_the_host_is_refused_not_ignored(tmp_path):
    # etc -> / in the guest: etc/fstab would be the host's /fstab, which does not exist;
    # that is a symlink to refuse, not "no fstab on this filesystem".
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda5"
    original = src._answer

    def etc_to_root(a, input):
        if a[0] == "readlink" and a[-1].endswith("/xvda1/etc/fstab"):
            return (0, "/fstab\n", "") if "-m" in a else (1, "", "")
        return original(a, input)

    src._answer = etc_to_root
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.FstabError, match="is a symlink"):
        ex.run()
    assert src.leftovers() == [] and peer.leftovers() == []


def test_journals_are_listed_per_domain(tmp_path):
    assert list_journals(LocalRunner(), str(tmp_path), "web01") == []


def test_failure_on_an_overflowed_snapshot_is_reported_as_the_snapshot(tmp_path):
    src = FakeHost("dom0-a")
    src.fstab_on = "xvda1"

    def mount_fails_after_overflow(argv):
        if argv[0] == "mount":
            for v in src.lvs.values():
                v["attr"] = "swi-I-s---"
            return CommandResult("dom0-a", argv, 32, "", "can't read superblock", 0.0)
        return None

    src.fail = mount_fails_after_overflow
    plan, report, ex = run_executor(tmp_path, src, FakeHost("dom0-b"))
    with pytest.raises(errors.SnapshotInvalid) as info:
        ex.run()
    assert isinstance(info.value.__cause__, errors.MountRefused)
    assert src.leftovers() == []


def test_lost_peer_is_tried_once_in_teardown_and_the_source_still_cleaned(tmp_path, monkeypatch):
    # R17: rsync's ssh fails (255) because the peer vanished; the first peer undo finds
    # the connection gone; the other peer undos are not attempted (each would wait for
    # its own timeout) and the source is torn down completely.
    monkeypatch.setattr("time.sleep", lambda s: None)

    class GonePeer(FakeHost):
        gone = False

        def run(self, argv, **kw):
            if self.gone:
                self.calls.append(tuple(argv))
                raise errors.ConnectionLost("cannot open an SSH session: timed out",
                                            host=self.host)
            return super().run(argv, **kw)

    peer = GonePeer("dom0-b")

    def rsync_loses_the_peer(argv):
        if untied(argv)[0] == "rsync":
            peer.gone = True
            return CommandResult("dom0-a", argv, 255, "", "ssh: connect to host dom0-b port 22: "
                                 "Connection timed out", 0.0)
        return None

    src = FakeHost("dom0-a", fail=rsync_loses_the_peer)
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.ConnectionLost):
        ex.run()
    assert src.leftovers() == []
    lost = [e for e in report.teardown_errors if "connection to the peer is lost" in e]
    undos = [s for s in plan.steps_for("peer") if s.undo]
    assert len(lost) == len(undos) - 1
    assert sum("cannot open an SSH session" in e for e in report.teardown_errors) == 1
    assert peer.mounts  # left on the peer, for recover (its journal names them)


def test_filesystems_the_guest_fstab_does_not_name_are_copied_unless_configured_off(tmp_path):
    from fakes import CONFIG_TEXT

    from toolkit.config import parse_config

    for setting, copied in (("", {"xvda1", "xvda5", "xvda6"}), ("copy_unlisted = false\n",
                                                               {"xvda1"})):
        src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
        src.fstab_on = "xvda1"  # its fstab names only / (xvda1)
        text = CONFIG_TEXT.format(state=tmp_path / "s", lock=tmp_path / "l").replace(
            "[defaults]\n", "[defaults]\n" + setting)
        cfg = parse_config(text, tmp_path / "backup.toml")
        plan = plan_backup(web01_facts(), cfg, RUN)
        report = DomainReport("web01")
        Executor(plan, cfg, src, peer, report).run()
        assert {f.name for f in report.filesystems if f.outcome == "copied"} == copied
        assert {f.name for f in report.filesystems if f.outcome == "skipped"} == (
            {f.name for f in plan.filesystems} - copied)
        rsynced = {c[-1].rsplit("/", 2)[-2] for c in src.calls if untied(c)[0] == "rsync"}
        assert rsynced == copied
        assert src.leftovers() == [] and peer.leftovers() == []


def test_each_step_and_undo_is_timed_in_order_for_the_report(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    actions = [s.action for s in report.steps]
    assert actions[:len(plan.steps)] == [s.action for s in plan.steps]
    undos = [a for a in actions if a.startswith("undo ")]
    assert undos[-1] == "undo snapshot" and len(undos) == len([s for s in plan.steps if s.undo])
    starts = [s.started for s in report.steps]
    assert starts == sorted(starts) and all(s.seconds >= 0 for s in report.steps)
    snap = next(s for s in report.steps if s.action == "snapshot")
    assert snap.resource == plan.snapshots[0].path


def test_missing_dm_node_is_made_before_use_or_the_run_fails_clearly(tmp_path):
    # Where nothing makes /dev/mapper nodes, a write to the alias would create a
    # regular file in /dev: the node is made with `dmsetup mknodes`, or the run stops.
    def no_nodes(argv):
        return CommandResult("dom0-b", argv, 1, "", "", 0.0) if argv[:2] == ("test", "-b") \
            else None

    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b", fail=no_nodes)
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.MapFailed, match="not a block device"):
        ex.run()
    assert ("dmsetup", "mknodes") in [c[:2] for c in peer.calls]
    assert not [c for c in peer.calls if c[0] in ("kpartx", "mount", "rsync")]
    assert src.leftovers() == [] and peer.leftovers() == []

    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    assert ("dmsetup", "mknodes") not in [c[:2] for c in peer.calls]


def test_a_dm_node_udev_did_not_make_is_made_by_name_and_the_run_goes_on(tmp_path):
    # No udev: each map the peer makes has no /dev/mapper node until `dmsetup mknodes
    # NAME` makes that one; then it is proven a block device and the copy goes on.
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    peer.late_nodes = True
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    aliases = [s.resource for s in plan.steps if s.action in ("alias", "lvmap")
               and s.role == "peer"]
    made = [c[2] for c in peer.calls if c[:2] == ("dmsetup", "mknodes")]
    assert aliases and made == [a.rsplit("/", 1)[1] for a in aliases]
    probes = [c for c in peer.calls if c[:2] == ("test", "-b")]
    assert probes == [("test", "-b", a) for a in aliases for _ in (0, 1)]
    assert [f.outcome for f in report.filesystems if f.outcome == "copied"]
    assert not report.error and src.leftovers() == [] and peer.leftovers() == []


def test_a_dm_node_that_never_appears_stops_the_run_naming_the_node_and_the_host(tmp_path):
    from toolkit.undo import ensure_dm_node

    peer = FakeHost("dom0-b")
    with pytest.raises(errors.MapFailed) as info:
        ensure_dm_node(peer, "/dev/mapper/domubk-x")
    assert info.value.host == "dom0-b"
    assert str(info.value) == (
        "[dom0-b] /dev/mapper/domubk-x is not a block device after `dmsetup create "
        "domubk-x` (is udev running and able to create /dev/mapper nodes?)")
    assert [t for a, t in peer.timeouts] == [60, 60, 60]


def test_marker_writes_are_one_command_each_and_only_the_dirty_one_reads_the_old(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    marker = marker_path(ex.config, ex.plan.domain)
    peer.files[marker] = json.dumps({"state": "clean", "last_success": 1.0,
                                     "last_success_run_id": "OLD"})
    ex.run()
    touching = [c for c in peer.calls if any(marker in a for a in c)]
    assert [c[0] if c[0] != "sh" else "replace" for c in touching] == ["cat", "replace",
                                                                        "replace"]
    final = json.loads(peer.files[marker])
    assert final["state"] == "clean" and final["last_success_run_id"] == plan.run_id


def test_a_dirty_marker_keeps_the_last_success_of_the_marker_before_it(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    src.rsync_result = (23, "", "rsync: some files vanished")
    plan, report, ex = run_executor(tmp_path, src, peer)
    peer.files[marker_path(ex.config, ex.plan.domain)] = json.dumps(
        {"state": "clean", "last_success": 1.0, "last_success_run_id": "OLD"})
    with pytest.raises(errors.ToolkitError):
        ex.run()
    marker = json.loads(peer.files[marker_path(ex.config, ex.plan.domain)])
    assert (marker["state"], marker["run_id"]) == ("dirty", plan.run_id)
    assert (marker["last_success"], marker["last_success_run_id"]) == (1.0, "OLD")


def test_the_report_gives_each_filesystem_its_guest_path_from_the_fstab_or_the_config(
        tmp_path):
    # The guest's fstab names xvda1 "/": the report says where each filesystem belongs in
    # the guest; configured mounts replace the fstab, and the report follows them.
    from fakes import CONFIG_TEXT

    from toolkit.config import parse_config

    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = run_executor(tmp_path, src, peer)
    ex.run()
    paths = {f.name: f.guest_path for f in report.filesystems}
    assert paths["xvda1"] == "/" and all(paths[n] is None for n in paths if n != "xvda1")

    text = CONFIG_TEXT.format(state=tmp_path / "s", lock=tmp_path / "l") + (
        '\n[domains.web01.mounts]\nxvda1 = "/"\nxvda5 = "/srv"\nxvda6 = "/data"\n')
    cfg = parse_config(text, tmp_path / "backup.toml")
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    report = DomainReport("web01")
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    paths = {f.name: f.guest_path for f in report.filesystems}
    assert paths == {"xvda1": "/", "xvda5": "/srv", "xvda6": "/data"}


GUEST_FSTAB = """/dev/xvda1 / ext4 defaults 0 1
PARTUUID=1234abcd-05 /var ext4 defaults 0 2
LABEL=DATA /boot/efi vfat defaults 0 2
"""


@pytest.mark.parametrize("fstab,mounts,expected", [
    # each filesystem named its own way: guest device, PARTUUID, LABEL (with its type)
    (GUEST_FSTAB, "", {"xvda1": "/", "xvda5": "/var", "xvda6": "/boot/efi"}),
    # the fstab does not name the filesystem it lies on: that one is the guest's /
    ("UUID=0d9e8f7a-6b5c-4d3e-a2f1-0a9b8c7d6e5f /var ext4 defaults 0 2\n", "",
     {"xvda1": "/", "xvda5": "/var"}),
    # a configured mount replaces what the fstab says for that filesystem only
    (GUEST_FSTAB, 'xvda6 = "/srv"\n', {"xvda1": "/", "xvda5": "/var", "xvda6": "/srv"}),
])
def test_guest_paths_come_from_the_guests_fstab_however_it_names_each_filesystem(
        tmp_path, fstab, mounts, expected):
    from fakes import CONFIG_TEXT

    from toolkit.config import parse_config

    text = CONFIG_TEXT.format(state=tmp_path / "s", lock=tmp_path / "l")
    if mounts:
        text += "\n[domains.web01.mounts]\n" + mounts
    cfg = parse_config(text, tmp_path / "backup.toml")
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on, src.fstab = "xvda1", fstab
    report, log = DomainReport("web01"), []
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report, log=log.append).run()
    assert {f.name: f.guest_path for f in report.filesystems if f.guest_path} == expected
    (line,) = [m for m in log if m.startswith("guest paths: ")]
    assert dict(x.split("=", 1) for x in line.removeprefix("guest paths: ").split(", ")) == (
        expected)


def test_an_fstab_line_whose_type_contradicts_the_filesystem_it_names_stops_the_run(tmp_path):
    # xvda1 holds ext4; a guest fstab saying xfs for it is not believed (R5's checks on
    # what the guest says), before anything is copied.
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on, src.fstab = "xvda1", "/dev/xvda1 / xfs defaults 0 1\n"
    plan, report, ex = run_executor(tmp_path, src, peer)
    with pytest.raises(errors.FstabError, match=r"resolves to xvda1 ext4 .*a ext4 filesystem"):
        ex.run()
    assert not [c for c in src.calls if untied(c)[0] == "rsync"]
    assert src.leftovers() == [] and peer.leftovers() == []
