"""What each executor step leaves for the operator: the boot-area copy, the standby marker, the
copy's record and log, a full standby's inode probes, teardown's reports, side-by-side copies
and the snapshot watch, on fake Dom0s."""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import replace

import fakes
import pytest
from fakes import RSYNC_STATS, FakeHost, StatfsHost, web01_facts, web01_hosts, web01_run

from toolkit import copying, errors, execute, signals, undo
from toolkit.failpoint import Failpoint
from toolkit.marker import marker_path
from toolkit.rsync import parse_stats, untied
from toolkit.runners import CommandResult

RUN = "20260101T000000Z-abcd"
WALL = 1767225600.0  # the wall clock of a run under Clock


def executor(tmp_path, src, peer, **kw):
    run = web01_run(tmp_path, src, peer, **kw)
    return run.plan, run.report, run.ex


hosts = web01_hosts


def marker_of(ex, peer) -> dict:
    return json.loads(peer.files[marker_path(ex.config, ex.plan.domain)])


class Clock:
    """Stands in for the executor's time module: monotonic time moves only when a fake
    command says it took a while, the wall clock stands at WALL, sleeps return at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()

    def monotonic(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds

    @staticmethod
    def time() -> float:
        return WALL

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(execute, "time", c)
    monkeypatch.setattr(copying, "time", c)  # copies side by side time themselves
    monkeypatch.setattr(undo, "time", c)  # and so does each undo of teardown
    monkeypatch.setattr(fakes, "time", c)  # the fake hosts' clock (a batch's uptimes)
    return c


def record_thread_crashes(monkeypatch) -> list[BaseException]:
    """Exceptions that end a thread from now on in this test (each would print a traceback on
    the operator's terminal)."""
    crashed: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    return crashed


# -- the boot area ------------------------------------------------------------------------

def _boot_read(argv) -> bool:
    return argv[0] == "dd" and argv[1].startswith("if=/dev/vg_a/domubk-")


def _boot_write(argv) -> bool:
    return argv[0] == "dd" and argv[1].startswith("of=/dev/mapper/domubk-")


def test_a_failed_boot_area_read_fails_the_run_with_the_sources_result(tmp_path):
    def unreadable(argv):
        if _boot_read(argv):
            return CommandResult("dom0-a", argv, 1, "", "dd: error reading: Input/output error",
                                 0.0)
        return None

    src, peer = hosts(src_fail=unreadable)
    plan, report, ex = executor(tmp_path, src, peer)
    with pytest.raises(errors.CommandFailed) as info:
        ex.run()
    assert type(info.value) is errors.CommandFailed and info.value.host == "dom0-a"
    first_read = next(s for s in plan.steps if s.action == "bootread")
    assert info.value.result.argv == first_read.argv
    assert "Input/output error" in str(info.value)
    assert any(_boot_read(c) for c in src.calls) and not any(_boot_read(c) for c in peer.calls)
    assert not [c for c in peer.calls if _boot_write(c)]  # nothing written to the standby
    assert marker_of(ex, peer)["state"] == "dirty"
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_failed_boot_area_write_fails_the_run_with_the_peers_result(tmp_path):
    def unwritable(argv):
        if _boot_write(argv):
            return CommandResult("dom0-b", argv, 1, "", "dd: error writing: No space left", 0.0)
        return None

    src, peer = hosts(peer_fail=unwritable)
    plan, report, ex = executor(tmp_path, src, peer)
    with pytest.raises(errors.CommandFailed) as info:
        ex.run()
    assert type(info.value) is errors.CommandFailed and info.value.host == "dom0-b"
    first_write = next(s for s in plan.steps if s.action == "bootwrite")
    assert info.value.result.argv == first_write.argv
    assert "No space left" in str(info.value)
    assert not any(untied(c)[0] == "rsync" for c in src.calls)
    assert marker_of(ex, peer)["state"] == "dirty"
    assert src.leftovers() == [] and peer.leftovers() == []


def test_the_boot_area_read_on_the_source_is_written_to_the_standby_on_the_peer(tmp_path):
    src, peer = hosts()
    plan, report, ex = executor(tmp_path, src, peer)
    ex.run()
    reads = [s for s in plan.steps if s.action == "bootread"]
    writes = [s for s in plan.steps if s.action == "bootwrite"]
    assert len(reads) == len(writes) == 2
    alias = writes[0].argv[1].removeprefix("of=")
    # byte for byte what the source's dd printed for the same range, in plan order
    assert peer.boot_writes == [
        (alias, 0, "".join(chr(0xdc80 + i % 128) for i in range(440))),
        (alias, 512, "".join(chr(0xdc80 + (512 + i) % 128) for i in range(1048064)))]
    assert src.boot_writes == []


def test_the_boot_area_copy_is_bounded_by_the_configured_command_timeout(tmp_path):
    src, peer = hosts()
    plan, report, ex = executor(tmp_path, src, peer, ssh={"command_timeout": 42.0})
    ex.run()
    reads = [t for argv, t in src.timeouts if _boot_read(argv)]
    writes = [t for argv, t in peer.timeouts if _boot_write(argv)]
    assert len(reads) == len(writes) == 2
    assert set(reads) == set(writes) == {42.0}


# -- the standby marker -------------------------------------------------------------------

def test_the_standby_marker_names_the_domain_its_source_host_and_when_it_was_written(
        tmp_path, clock):
    src, peer = hosts()
    plan, report, ex = executor(tmp_path, src, peer)
    ex.run()
    assert marker_of(ex, peer) == {
        "domain": "web01",
        "state": "clean",
        "run_id": RUN,
        "source_host": "dom0-a",
        "updated": WALL,
        "last_success": WALL,
        "last_success_run_id": RUN,
        "standby": {"xvda": "/dev/vg_b/web01"},  # what verify reads
    }


# -- the copy -----------------------------------------------------------------------------

def test_each_copy_records_its_duration_to_the_millisecond_and_rsyncs_statistics(tmp_path,
                                                                                clock):
    def slow_rsync(argv):
        if untied(argv)[0] == "rsync":
            clock.advance(1.2344)
        return None

    src, peer = hosts(src_fail=slow_rsync)
    plan, report, ex = executor(tmp_path, src, peer)
    ex.run()
    stats = parse_stats(RSYNC_STATS)
    assert stats.bytes_received > 0
    for fs_report in report.filesystems:
        assert fs_report.outcome == "copied" and fs_report.duration == 1.234, fs_report
        assert (fs_report.files, fs_report.files_transferred, fs_report.files_deleted,
                fs_report.total_size, fs_report.transferred_size, fs_report.bytes_sent,
                fs_report.bytes_received) == (
            stats.files, stats.files_transferred, stats.files_deleted, stats.total_size,
            stats.transferred_size, stats.bytes_sent, stats.bytes_received)


def test_the_copy_goes_to_the_peers_ssh_port(tmp_path):
    src, peer = hosts()
    plan, report, ex = executor(tmp_path, src, peer,
                                facts=replace(web01_facts(), peer_port=2222))
    ex.run()
    rsyncs = [untied(c) for c in src.calls if untied(c)[0] == "rsync"]
    assert len(rsyncs) == 3
    for argv in rsyncs:
        transport = argv[argv.index("-e") + 1].split()
        assert transport[transport.index("-p") + 1] == "2222"


def test_the_log_names_each_copy_with_its_source_and_destination(tmp_path):
    log: list[str] = []
    src, peer = hosts()
    plan, report, ex = executor(tmp_path, src, peer, log=log.append)
    ex.run()
    rsyncs = [c for c in src.calls if untied(c)[0] == "rsync"]
    for f, argv in zip(plan.filesystems, rsyncs, strict=True):
        assert argv[-2] == f"{f.source_mount}/" and argv[-1].endswith(f"{f.standby_mount}/")
        said = [m for m in log if m.startswith(f"rsync {f.name}: ")]
        assert len(said) == 1, log
        # the command word by word (its head), then what is copied where
        assert said[0].startswith(f"rsync {f.name}: {argv[0]} {argv[1]} ")
        assert said[0].endswith(f" ... {argv[-2]} {argv[-1]}")


def test_a_filesystem_the_guest_does_not_list_is_skipped_naming_the_setting(tmp_path):
    log: list[str] = []
    src, peer = hosts()  # the guest fstab names only / (xvda1)
    plan, report, ex = executor(tmp_path, src, peer, log=log.append, copy_unlisted=False)
    ex.run()
    for name in ("xvda5", "xvda6"):
        assert (f"{name}: not named by the guest fstab nor an override; skipped "
                "(copy_unlisted = false)") in log


@pytest.mark.parametrize("allow", [True, False])
def test_vanished_files_are_a_failure_on_the_source_host_unless_allowed(tmp_path, allow):
    src, peer = hosts()
    src.rsync_result = (24, RSYNC_STATS, "file has vanished: \"/etc/x\"\n")
    plan, report, ex = executor(tmp_path, src, peer, allow_vanished=allow)
    if allow:
        ex.run()
        assert [f.outcome for f in report.filesystems] == ["copied"] * 3
        assert marker_of(ex, peer)["state"] == "clean"
    else:
        with pytest.raises(errors.TransferPartial, match="rsync exited 24") as info:
            ex.run()
        assert info.value.host == "dom0-a"
        assert report.filesystems[0].outcome == "failed"
        assert marker_of(ex, peer)["state"] == "dirty"
    assert src.leftovers() == [] and peer.leftovers() == []


# -- a full standby: out of inodes or of space ----------------------------------------------


def _full_standby(tmp_path, peer_answer, source_answer):
    src, peer = StatfsHost("dom0-a", source_answer), StatfsHost("dom0-b", peer_answer)
    src.fstab_on = "xvda1"
    src.rsync_result = (11, "", "rsync: write failed: No space left on device (28)\n")
    plan, report, ex = executor(tmp_path, src, peer)
    with pytest.raises(errors.PeerFull) as info:
        ex.run()
    assert src.leftovers() == [] and peer.leftovers() == []
    return src, peer, str(info.value)


@pytest.mark.parametrize(("peer_answer", "source_answer"), [
    ((1, "1000 0\n"), (0, "500 100\n")),  # a failed probe's output is not read
    (None, (0, "500 100\n")),
], ids=["failed", "connection-lost"])
def test_a_standby_whose_inodes_cannot_be_read_is_reported_as_full(tmp_path, peer_answer,
                                                                   source_answer):
    src, peer, said = _full_standby(tmp_path, peer_answer, source_answer)
    assert said.startswith("[dom0-a] rsync: the standby filesystem is full (rsync exit 11)")


def test_a_source_whose_inodes_cannot_be_read_is_left_out_of_the_inode_message(tmp_path):
    src, peer, said = _full_standby(tmp_path, (0, "1000 0\n"), (1, "5000 100\n"))
    assert said == ("[dom0-b] standby filesystem xvda1 has no free inodes (1000 of 1000 used): "
                    "the standby was made with fewer inodes than the source; run init-standby "
                    "--force")


def test_the_inode_probes_of_a_full_standby_are_bounded_in_time(tmp_path):
    src, peer, said = _full_standby(tmp_path, (0, "1000 0\n"), (0, "5000 100\n"))
    assert "no free inodes" in said
    for host in (src, peer):
        probes = [t for argv, t in host.timeouts if argv[:2] == ("stat", "-f")]
        assert len(probes) == 1 and probes[0] is not None and probes[0] <= 120, host.host


# -- the snapshot watch -------------------------------------------------------------------

class _QuickWait(threading.Event):
    """The watch's pause between polls, a hundred times shorter (a pause with no end stays
    so)."""

    def wait(self, timeout=None):
        return super().wait(None if timeout is None else timeout / 100)


def test_a_snapshot_filling_up_during_a_copy_fails_that_copy(tmp_path, monkeypatch):
    thread_crashes = record_thread_crashes(monkeypatch)
    real = copying.SnapshotWatch

    def quick(*args, interval):
        watch = real(*args, interval=interval)
        watch._stop = _QuickWait()
        return watch

    monkeypatch.setattr(copying, "SnapshotWatch", quick)
    polled = threading.Event()

    class FillingSource(FakeHost):
        """The snapshot is 95% full once the copy starts; the copy lasts until the snapshot
        has been looked at (5 s at most)."""

        filling = False

        def run(self, argv, **kw):
            a = tuple(argv)
            if self.filling and a[0] == "lvs" and "--reportformat" in a:
                polled.set()
            if untied(a)[0] == "rsync":
                for v in self.lvs.values():
                    v["percent"] = "95.00"
                self.filling = True
                polled.wait(5)
            return super().run(argv, **kw)

    src, peer = FillingSource("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = executor(tmp_path, src, peer)
    with pytest.raises(errors.SnapshotInvalid, match=r"is 95\.0% full \(limit 80%\)") as info:
        ex.run()
    assert info.value.host == "dom0-a"
    assert [f.outcome for f in report.filesystems] == ["failed", "pending", "pending"]
    assert marker_of(ex, peer)["state"] == "dirty"
    assert thread_crashes == []  # the watch stopped the copy and ended cleanly
    assert src.leftovers() == [] and peer.leftovers() == []


# -- teardown -----------------------------------------------------------------------------

def test_a_journal_that_cannot_be_removed_is_a_teardown_error_naming_it(tmp_path):
    src, peer = hosts()
    plan, report, ex = executor(tmp_path, src, peer)
    journal = ex.journals["source"].path

    def read_only(argv):
        if argv[:2] == ("rm", "-f") and argv[-1] == journal:
            return CommandResult("dom0-a", argv, 1, "", "rm: Read-only file system", 0.0)
        return None

    src.fail = read_only
    with pytest.raises(errors.TeardownIncomplete, match="Read-only file system"):
        ex.run()
    assert len(report.teardown_errors) == 1
    assert report.teardown_errors[0].startswith(f"journal {journal}: [dom0-a] ")
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_bug_in_one_hosts_teardown_is_reported_with_that_host_and_the_other_is_cleaned(
        tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)

    def bug(argv):
        if argv[0] == "umount":
            raise RuntimeError("a bug in the undo")
        return None

    src, peer = hosts(src_fail=bug)
    plan, report, ex = executor(tmp_path, src, peer)
    with pytest.raises(errors.TeardownIncomplete):
        ex.run()
    assert report.teardown_errors == ["[dom0-a] teardown stopped: RuntimeError: a bug in the "
                                      "undo"]
    assert peer.leftovers() == [] and ex.journals["peer"].path not in peer.files
    assert src.mounts and ex.journals["source"].path in src.files  # kept for recover


def test_a_peer_undo_that_fails_does_not_stop_the_other_undos_there(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    held = f"/run/domu-backup/dst/web01.{RUN}/xvda5"

    def busy(argv):
        if argv[0] == "umount" and argv[-1] == held:
            return CommandResult("dom0-b", argv, 32, "", f"umount: {held}: target is busy.", 0.0)
        return None

    src, peer = hosts(peer_fail=busy)
    plan, report, ex = executor(tmp_path, src, peer)
    with pytest.raises(errors.TeardownIncomplete):
        ex.run()
    assert list(peer.mounts) == [held]  # the others were unmounted
    assert not any("connection to the peer is lost" in e for e in report.teardown_errors)
    assert any(e.startswith(f"[dom0-b] mount {held}: ") for e in report.teardown_errors)
    assert src.leftovers() == []


def test_each_undo_is_reported_with_its_host_resource_and_time(tmp_path, clock):
    def slow_unmount(argv):
        if argv[0] == "umount":
            clock.advance(2.0)
        return None

    src, peer = hosts(src_fail=slow_unmount)
    plan, report, ex = executor(tmp_path, src, peer)
    ex.run()
    undos = [s for s in report.steps if s.action.startswith("undo ")]
    assert sorted((s.role, s.action, s.resource) for s in undos) == sorted(
        (s.role, f"undo {s.action}", s.resource) for s in plan.steps if s.undo)
    unmounts = [s for s in undos if (s.role, s.action) == ("source", "undo mount")]
    assert len(unmounts) == 3 and all(s.seconds == 2.0 for s in unmounts)


# -- side-by-side copies ------------------------------------------------------------------

def test_side_by_side_copies_are_each_timed_on_the_source_and_their_threads_end_cleanly(
        tmp_path, monkeypatch, clock):
    thread_crashes = record_thread_crashes(monkeypatch)
    log: list[str] = []

    def rsync_takes_a_second(argv):
        if untied(argv)[0] == "rsync":
            clock.advance(1.0)
        return None

    src, peer = hosts(src_fail=rsync_takes_a_second)
    plan, report, ex = executor(tmp_path, src, peer, log=log.append, copy_jobs=2)
    ex.run()
    assert "copying 3 filesystems, 2 at a time" in log
    copies = [s for s in report.steps if s.action == "rsync"]
    assert sorted(s.resource for s in copies) == ["xvda1", "xvda5", "xvda6"]
    # each copy's own second, and at most the other copies' besides
    assert all(s.role == "source" and 1.0 <= s.seconds <= 3.0 for s in copies), copies
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert thread_crashes == []


def test_a_failpoint_after_a_side_by_side_copy_fails_the_run(tmp_path, monkeypatch):
    hooks = tmp_path / "test-hooks"
    hooks.write_text("on\n")
    monkeypatch.setattr("toolkit.failpoint.TEST_HOOKS_FILE", str(hooks))
    monkeypatch.setenv("DOMU_BACKUP_FAILPOINT", "after:rsync@2:raise")
    src, peer = hosts()
    plan, report, ex = executor(tmp_path, src, peer, copy_jobs=2)
    with pytest.raises(errors.ToolkitError, match=r"^failpoint after:rsync raised$"):
        ex.run()
    assert report.filesystems[1].outcome == "copied"  # xvda5: copied, then the failpoint
    assert marker_of(ex, peer)["state"] == "dirty"
    assert src.leftovers() == [] and peer.leftovers() == []


# -- the failpoint ------------------------------------------------------------------------

def test_a_failpoint_signal_held_by_a_shield_returns_after_a_bounded_wait(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("toolkit.failpoint.time.sleep", slept.append)
    with signals.signals_raise():
        with signals.shielded():
            Failpoint("after", "mount", 1, "sigterm").fire()
        held = signals.pending_signal()
    assert held == signal.SIGTERM
    assert len(slept) == 1 and 0 < slept[0] <= 60
