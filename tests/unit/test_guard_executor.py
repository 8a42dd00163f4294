"""The executor's guards refuse what they exist to refuse (R7, R8, R16), on fake Dom0s.

Each test here fails when its guard is taken out: an empty source, a mount of another
filesystem type on either side, unreadable findmnt output, and a signal that arrives
while teardown runs.
"""

from __future__ import annotations

import os
import re
import signal

import pytest
from fakes import FakeHost, NoDeviceHost, StatfsHost, config, web01_facts, web01_run

from toolkit import errors, signals
from toolkit.execute import Executor
from toolkit.marker import marker_path
from toolkit.plan import plan_backup
from toolkit.report import DomainReport
from toolkit.rsync import untied

RUN = "20260101T000000Z-abcd"


def _executor(tmp_path, src, peer):
    run = web01_run(tmp_path, src, peer)
    return run.plan, run.report, run.ex


def _rsyncs(host: FakeHost) -> list[tuple[str, ...]]:
    return [c for c in host.calls if untied(c)[0] == "rsync"]


class TreeHost(FakeHost):
    """A source whose mounted filesystems hold the top-level names in ``trees``.

    ``find`` is answered as find(1) would: the start point itself unless ``-mindepth 1``,
    the entries below it, minus ``-not -name NAME``, the first only with ``-quit``.
    """

    def __init__(self, host: str, trees: dict[str, list[str]]) -> None:
        super().__init__(host)
        self.trees = trees  # mountpoint suffix ("xvda1") -> names at its top

    def _cmd_find(self, a, input):
        if "-xdev" not in a:
            return super()._cmd_find(a, input)
        top = a[1]
        names = next((v for k, v in self.trees.items() if top.endswith("/" + k)), None)
        if names is None or top not in self.mounts:
            return super()._cmd_find(a, input)
        found = [] if ("-mindepth", "1") in zip(a, a[1:], strict=False) else [top]
        found += [f"{top}/{n}" for n in names]
        excluded = {a[i + 2] for i in range(len(a) - 2) if a[i:i + 2] == ("-not", "-name")}
        found = [p for p in found if p.rsplit("/", 1)[-1] not in excluded]
        if "-quit" in a:
            found = found[:1]
        return 0, "".join(p + "\n" for p in found), ""


@pytest.mark.parametrize("tree", [[], ["lost+found"]], ids=["nothing", "only-lost+found"])
def test_an_empty_source_filesystem_is_refused_before_the_standby_is_touched(tmp_path, tree):
    # R7: a filesystem with nothing in it (a fresh mkfs leaves lost+found) is never
    # mirrored: rsync --delete would empty the standby.
    src = TreeHost("dom0-a", {"xvda1": tree})
    peer = FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(errors.SourceGuardFailed, match=r"xvda1 \(xvda1\) is empty: refusing"):
        ex.run()
    assert _rsyncs(src) == []
    # the standby was not even marked dirty
    assert marker_path(ex.config, ex.plan.domain) not in peer.files
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_source_holding_files_beside_lost_found_is_copied(tmp_path):
    src = TreeHost("dom0-a", {"xvda1": ["lost+found", "etc"]})
    peer = FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    ex.run()
    assert len(_rsyncs(src)) == 3
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3


class OtherTypeHost(FakeHost):
    """A host whose mount of ``suffix`` ends up holding ``fstype`` (the device is right)."""

    def __init__(self, host: str, suffix: str, fstype: str) -> None:
        super().__init__(host)
        self.suffix, self.other = suffix, fstype

    def _cmd_mount(self, a, input):
        code, out, err = super()._cmd_mount(a, input)
        mnt = a[-1]
        if code == 0 and mnt.endswith("/" + self.suffix) and mnt in self.mounts:
            dev, _fstype, majmin = self.mounts[mnt]
            self.mounts[mnt] = (dev, self.other, majmin)
        return code, out, err


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_mountpoint_holding_another_filesystem_type_is_refused(tmp_path, side):
    # R7/R8: the device number is the expected one; only the type tells them apart.
    if side == "source":
        src, peer = OtherTypeHost("dom0-a", "xvda1", "vfat"), FakeHost("dom0-b")
        expected = errors.SourceGuardFailed
    else:
        src, peer = FakeHost("dom0-a"), OtherTypeHost("dom0-b", "xvda1", "vfat")
        expected = errors.StandbyGuardFailed
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(expected, match=r"/xvda1 holds vfat, expected ext4") as info:
        ex.run()
    assert info.value.host == ("dom0-a" if side == "source" else "dom0-b")
    assert _rsyncs(src) == []
    assert src.leftovers() == [] and peer.leftovers() == []


class GarbledFindmntHost(FakeHost):
    """A host whose findmnt of one mountpoint exits 0 with output that is not its JSON."""

    def __init__(self, host: str, text: str) -> None:
        super().__init__(host)
        self.text = text

    def _cmd_findmnt(self, a, input):
        if "--mountpoint" in a and a[a.index("--mountpoint") + 1].endswith("/xvda1"):
            return 0, self.text, ""
        return super()._cmd_findmnt(a, input)


@pytest.mark.parametrize("text", ["not json", '{"other": []}', '{"filesystems": []}'])
@pytest.mark.parametrize("side", ["source", "peer"])
def test_findmnt_output_that_cannot_be_read_stops_the_run_as_the_guard(tmp_path, side, text):
    # The guard refuses (exit of its own, host named), never a traceback, never a copy.
    garbled = GarbledFindmntHost("dom0-a" if side == "source" else "dom0-b", text)
    src, peer = (garbled, FakeHost("dom0-b")) if side == "source" else (FakeHost("dom0-a"),
                                                                        garbled)
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    expected = errors.SourceGuardFailed if side == "source" else errors.StandbyGuardFailed
    with pytest.raises(expected, match=r"cannot read findmnt output for .*/xvda1"):
        ex.run()
    assert _rsyncs(src) == []
    assert src.leftovers() == [] and peer.leftovers() == []


def test_the_mount_guard_asks_findmnt_for_the_mountpoint_and_the_fields_it_compares(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    ex.run()
    for host in (src, peer):
        asks = [c for c in host.calls if c[:2] == ("findmnt", "--json")]
        assert asks, host.host
        for c in asks:
            assert c[2:5] == ("-o", "TARGET,SOURCE,FSTYPE,OPTIONS,MAJ:MIN", "--mountpoint")
        stats = [c for c in host.calls if c[:1] == ("stat",) and "-f" not in c]
        assert stats and all(c[1:4] == ("-L", "--format", "%t:%T") for c in stats)


# -- R16: teardown is shielded from signals --------------------------------------------

class SignalInTeardown(FakeHost):
    """A source that gets ``signum`` (a real signal, to this process) at its first umount."""

    def __init__(self, host: str, signum: int) -> None:
        super().__init__(host)
        self.signum = signum
        self.sent = False

    def _cmd_umount(self, a, input):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
        return super()._cmd_umount(a, input)


def test_a_signal_during_teardown_is_held_until_everything_is_undone(tmp_path):
    # R16: a Ctrl-C (or SIGTERM) while the snapshot is being taken down does not stop the
    # teardown; the run then ends as interrupted by that signal, 128 + N.
    src, peer = SignalInTeardown("dom0-a", signal.SIGTERM), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        ex.run()
    assert src.sent
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert report.teardown_errors == []
    assert src.leftovers() == [] and peer.leftovers() == []
    assert signals.pending_signal() is None  # read once, by the run


def test_a_second_signal_during_teardown_neither_stops_it_nor_replaces_the_first(tmp_path):
    # The first SIGINT stops the run; a second one, sent while teardown runs, is held.
    def interrupt(argv):
        if argv[:2] == ("dmsetup", "create"):
            raise errors.Interrupted(signal.SIGINT)
        return None

    src = SignalInTeardown("dom0-a", signal.SIGTERM)
    peer = FakeHost("dom0-b", fail=interrupt)
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        ex.run()
    assert src.sent
    assert info.value.exit_code == 128 + signal.SIGINT
    assert report.teardown_errors == []
    assert src.leftovers() == [] and peer.leftovers() == []


def test_outside_teardown_a_signal_raises_at_once_and_none_is_left_pending():
    with signals.signals_raise():
        with pytest.raises(errors.Interrupted) as info:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(1000):  # the handler runs between two bytecodes
                pass
    assert info.value.exit_code == 128 + signal.SIGHUP
    assert signals.pending_signal() is None


def test_a_shielded_block_holds_the_first_signal_and_reads_it_once():
    with signals.signals_raise():
        with signals.shielded():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        assert signals.pending_signal() == signal.SIGINT
        assert signals.pending_signal() is None
        # the shield is gone with its block: the next signal raises
        with pytest.raises(errors.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass


def test_the_raising_handlers_are_installed_for_the_run_only():
    before = {s: signal.getsignal(s) for s in signals.HANDLED}
    assert set(signals.HANDLED) == {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    with signals.signals_raise():
        assert all(signal.getsignal(s) is not before[s] for s in signals.HANDLED)
    assert {s: signal.getsignal(s) for s in signals.HANDLED} == before


class _SecondSignalOnTerminate:
    """An rsync process whose first terminate() brings a second signal (a second Ctrl-C)."""

    sent = False

    def __init__(self, proc) -> None:
        self.proc = proc

    def terminate(self) -> None:
        if not _SecondSignalOnTerminate.sent:
            _SecondSignalOnTerminate.sent = True
            os.kill(os.getpid(), signal.SIGINT)
        self.proc.terminate()

    def __getattr__(self, name):
        return getattr(self.proc, name)


def _when_the_main_thread_waits_for_the_copies(then) -> None:
    """Call ``then`` once the main thread waits in SideBySide.run's join loop (inside its try).

    A signal sent while the copy threads are still being started would be raised before
    that try (a window the product leaves open); the test is about what happens after it.
    """
    import linecache
    import sys
    import threading
    import time

    main = threading.main_thread().ident
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(main)
        while frame is not None:
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
            if line.startswith("t.join(0.25)"):
                then()
                return
            frame = frame.f_back
        time.sleep(0.01)
    raise AssertionError("the main thread never waited for the copies")


def test_a_second_signal_while_side_by_side_copies_stop_still_stops_every_copy(tmp_path):
    # R16: SIGTERM stops the copies; a SIGINT while they are being stopped must not leave
    # one running (writing the standby) under the teardown that follows.
    import subprocess
    import threading
    from dataclasses import replace

    from toolkit.runners import CommandResult

    main = threading.main_thread().ident

    class Host(FakeHost):
        def __init__(self, *a, **kw) -> None:
            super().__init__(*a, **kw)
            self.procs: list[subprocess.Popen] = []
            self.lock = threading.Lock()

        def stream(self, argv, on_line, *, env=None, on_start=None):
            args = tuple(argv)
            self.calls.append(args)
            proc = subprocess.Popen(["sleep", "30"])
            with self.lock:
                self.procs.append(proc)
                both = len(self.procs) == 2
            on_start(_SecondSignalOnTerminate(proc))
            if both:  # both copies run: the first signal
                _when_the_main_thread_waits_for_the_copies(
                    lambda: signal.pthread_kill(main, signal.SIGTERM))
            return CommandResult(self.host, args, proc.wait(), "", "", 0.1)

    _SecondSignalOnTerminate.sent = False
    src, peer = Host("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg = config(tmp_path)
    cfg = replace(cfg, defaults=replace(cfg.defaults, copy_jobs=2))
    report = DomainReport("web01")
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report)
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        ex.run()
    assert _SecondSignalOnTerminate.sent
    assert info.value.exit_code == 128 + signal.SIGTERM  # the first signal, not the second
    assert len(src.procs) == 2 and all(p.poll() is not None for p in src.procs)
    # (Not the outcomes: on Python 3.11 the copy thread whose join the first signal
    # interrupted is marked stopped at once (bpo-45274), so its bookkeeping may still run.)
    assert not any(f.outcome == "copied" for f in report.filesystems)
    assert src.leftovers() == [] and peer.leftovers() == []


# -- R3: the snapshot is watched while rsync copies from it -----------------------------

class FillingHost(FakeHost):
    """A source whose rsync is a real process while the snapshot fills up (``fill``)."""

    def __init__(self, host: str, fill, seconds: float = 30) -> None:
        super().__init__(host)
        self.fill, self.seconds = fill, seconds
        self.procs: list = []
        self.extended: list[tuple[str, ...]] = []

    def stream(self, argv, on_line, *, env=None, on_start=None):
        import subprocess

        from toolkit.runners import CommandResult

        args = tuple(argv)
        self.calls.append(args)
        proc = subprocess.Popen(["sleep", str(self.seconds)])
        self.procs.append(proc)
        on_start(proc)
        for v in self.lvs.values():
            self.fill(v)
        return CommandResult(self.host, args, proc.wait(), "", "", 0.1)

    def _cmd_lvextend(self, a, input):
        self.extended.append(a)
        for v in self.lvs.values():
            v["percent"] = "40.00"
        return 0, "", ""


def _watched(tmp_path, monkeypatch, src, **defaults):
    from dataclasses import replace

    import toolkit.copying

    real = toolkit.copying.SnapshotWatch
    monkeypatch.setattr(toolkit.copying, "SnapshotWatch",
                        lambda *args, interval: real(*args, interval=0.05))
    cfg = config(tmp_path)
    cfg = replace(cfg, defaults=replace(cfg.defaults, **defaults))
    report = DomainReport("web01")
    log: list[str] = []
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, FakeHost("dom0-b"), report,
                  log=log.append)
    return report, ex, log


def _full(v: dict) -> None:
    v["percent"] = "95.00"


def _overflowed(v: dict) -> None:
    v["attr"], v["percent"] = "swi-I-s---", "100.00"


@pytest.mark.parametrize(("fill", "said"), [
    (_full, r"snapshot vg_a/domubk-.*-xvda is 95\.0% full \(limit 80%\); copy stopped before "
            r"it overflowed"),
    # the check after rsync reports an overflow first; the watch's part is to stop rsync
    (_overflowed, r"snapshot vg_a/domubk-.*-xvda overflowed and is invalid"),
], ids=["full", "overflowed"])
def test_a_snapshot_filling_up_during_the_copy_stops_rsync_and_fails_the_run(
        tmp_path, monkeypatch, fill, said):
    src = FillingHost("dom0-a", fill)
    src.fstab_on = "xvda1"
    report, ex, log = _watched(tmp_path, monkeypatch, src)
    with pytest.raises(errors.SnapshotInvalid, match=said) as info:
        ex.run()
    assert info.value.host == "dom0-a"
    assert len(src.procs) == 1 and src.procs[0].returncode == -signal.SIGTERM  # stopped
    assert report.filesystems[0].outcome != "copied"
    assert report.snapshots[0].fill_percent >= 95.0
    assert report.snapshots[0].invalid == (fill is _overflowed)
    assert '"state": "dirty"' in ex.peer.files[marker_path(ex.config, ex.plan.domain)]
    assert src.leftovers() == [] and ex.peer.leftovers() == []


def test_a_filling_snapshot_is_grown_by_snapshot_extend_and_the_copy_goes_on(tmp_path,
                                                                            monkeypatch):
    src = FillingHost("dom0-a", _full, seconds=0.5)
    src.fstab_on = "xvda1"
    report, ex, log = _watched(tmp_path, monkeypatch, src, snapshot_extend="64M")
    ex.run()
    (snap,) = [f"{s.vg}/{s.name}" for s in ex.plan.snapshots]
    assert src.extended and src.extended[0] == ("lvextend", "-L", "+64M", snap)
    assert f"extended {snap} by 64M" in log
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert all(p.returncode == 0 for p in src.procs)


# -- R27: a failed step is reported as what it is -------------------------------------

STDERR = "line one\nline two\nline three\nline four\n"


def _fail_on(host: str, prefix: tuple[str, ...], code: int, stderr: str):
    """A fail hook: commands starting with ``prefix`` exit ``code`` on ``host``."""
    from toolkit.runners import CommandResult

    def fail(argv):
        if argv[:len(prefix)] == prefix:
            return CommandResult(host, argv, code, "", stderr, 0.0)
        return None

    return fail


@pytest.mark.parametrize(("side", "prefix", "error", "said"), [
    ("source", ("lvcreate",), errors.SnapshotFailed, "snapshot failed: `lvcreate "),
    ("source", ("kpartx", "-a"), errors.MapFailed, "map failed: `kpartx -a "),
    ("peer", ("dmsetup", "create"), errors.MapFailed, "alias failed: `dmsetup create "),
    ("peer", ("kpartx", "-a"), errors.MapFailed, "map failed: `kpartx -a "),
    ("source", ("mount",), errors.MountRefused, "mount failed: `mount "),
], ids=["snapshot", "map", "alias", "peer-map", "mount"])
def test_a_failed_step_is_its_own_error_with_the_last_lines_of_stderr(tmp_path, side, prefix,
                                                                     error, said):
    host = "dom0-a" if side == "source" else "dom0-b"
    failing = FakeHost(host, fail=_fail_on(host, prefix, 3, STDERR))
    src, peer = (failing, FakeHost("dom0-b")) if side == "source" else (FakeHost("dom0-a"),
                                                                        failing)
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(error) as info:
        ex.run()
    message = str(info.value)
    assert type(info.value) is error
    assert said in message
    assert message.endswith("` exited 3: line two | line three | line four")
    assert info.value.host == failing.host
    assert _rsyncs(src) == [] and src.leftovers() == [] and peer.leftovers() == []


def test_a_guest_lv_map_that_fails_is_a_map_failure(tmp_path):
    from test_fakes_behave import _lvm01

    cfg, src, peer, report, ex = _lvm01(tmp_path)
    src.fail = _fail_on("dom0-a", ("dmsetup", "create"), 1, STDERR)
    with pytest.raises(errors.MapFailed, match=r"^\[dom0-a\] lvmap failed: `dmsetup create "):
        ex.run()
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_failed_command_of_the_runs_own_is_reported_with_its_result(tmp_path):
    # the run's own directories (mkdir without -p, with an undo), not the prefix's mkdir -p
    src = FakeHost("dom0-a", fail=_fail_on("dom0-a", ("mkdir", "-m", "0700"), 1,
                                           "mkdir: cannot create directory"))
    peer = FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(errors.CommandFailed) as info:
        ex.run()
    assert type(info.value) is errors.CommandFailed and info.value.exit_code == 50
    assert info.value.result.argv[0] == "mkdir" and info.value.host == "dom0-a"
    assert "cannot create directory" in str(info.value)


def test_only_rsyncs_progress_updates_reach_the_progress_display(tmp_path):
    from toolkit.runners import CommandResult

    update = "     32,768  45%   12.34MB/s    0:00:10 (xfr#5, to-chk=10/20)"

    class Host(FakeHost):
        def stream(self, argv, on_line, *, env=None, on_start=None):
            self.calls.append(tuple(argv))
            for line in ("sending incremental file list", update, "etc/hostname"):
                on_line(line)
            return CommandResult(self.host, tuple(argv), 0, "", "", 0.1)

    src, peer = Host("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    seen: list[tuple[str, str]] = []
    cfg = config(tmp_path)
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01"),
                  on_progress=lambda fs, line: seen.append((fs, line)))
    ex.run()
    assert seen == [("xvda1", update), ("xvda5", update), ("xvda6", update)]


# -- R19: a full standby says which kind of full ----------------------------------------

def inodes_host(host: str, answer: tuple[int, int] | None) -> StatfsHost:
    """A host whose ``stat -f`` of a mount says ``answer`` (inodes, free), or fails (None)."""
    return StatfsHost(host, (1, "") if answer is None else (0, f"{answer[0]} {answer[1]}\n"))


@pytest.mark.parametrize(("ours", "said"), [
    ((500, 100), "standby filesystem xvda1 has no free inodes (1000 of 1000 used; the source "
                 "uses 400 of 500): files the source no longer has still hold them on the "
                 "standby; run init-standby --force to make it again, empty"),
    ((5000, 100), "standby filesystem xvda1 has no free inodes (1000 of 1000 used): the "
                  "standby was made with fewer inodes than the source (5000); run "
                  "init-standby --force"),
    (None, "standby filesystem xvda1 has no free inodes (1000 of 1000 used): the standby was "
           "made with fewer inodes than the source; run init-standby --force"),
], ids=["stale-files", "fewer-inodes", "source-unreadable"])
def test_a_standby_out_of_inodes_is_said_as_that_with_what_to_do(tmp_path, ours, said):
    src, peer = inodes_host("dom0-a", ours), inodes_host("dom0-b", (1000, 0))
    src.fstab_on = "xvda1"
    src.rsync_result = (11, "", "rsync: write failed: No space left on device (28)\n")
    plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(errors.PeerFull) as info:
        ex.run()
    assert str(info.value) == f"[dom0-b] {said}"
    assert info.value.host == "dom0-b"
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_standby_with_inodes_left_is_full_of_data(tmp_path):
    src, peer = inodes_host("dom0-a", (500, 100)), inodes_host("dom0-b", (1000, 900))
    src.fstab_on = "xvda1"
    src.rsync_result = (11, "", "rsync: write failed: No space left on device (28)\n")
    plan, report, ex = _executor(tmp_path, src, peer)
    with pytest.raises(errors.PeerFull, match="the standby filesystem is full"):
        ex.run()


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_planned_device_that_is_gone_stops_the_run_naming_it(tmp_path, side):
    gone = NoDeviceHost("dom0-a" if side == "source" else "dom0-b")
    src, peer = (gone, FakeHost("dom0-b")) if side == "source" else (FakeHost("dom0-a"), gone)
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    expected = errors.SourceGuardFailed if side == "source" else errors.StandbyGuardFailed
    with pytest.raises(expected) as info:
        ex.run()
    assert re.fullmatch(rf"\[{gone.host}\] expected device /dev/\S+p1 does not exist",
                        str(info.value)), str(info.value)
    assert _rsyncs(src) == [] and src.leftovers() == [] and peer.leftovers() == []


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_mount_that_did_not_happen_is_one_line_naming_mountpoint_and_device(tmp_path, side):
    src = FakeHost("dom0-a", silent_mount=side == "source")
    peer = FakeHost("dom0-b", silent_mount=side == "peer")
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    expected = errors.SourceGuardFailed if side == "source" else errors.StandbyGuardFailed
    with pytest.raises(expected) as info:
        ex.run()
    host = "dom0-a" if side == "source" else "dom0-b"
    assert re.fullmatch(rf"\[{host}\] /run/domu-backup/(src|dst)/web01\.{RUN}/xvda1 is not a "
                        r"mountpoint: the mount of /dev/\S+p1 did not happen; nothing was copied",
                        str(info.value)), str(info.value)


def test_stopping_the_copies_gives_each_rsync_its_grace_then_kills_it(tmp_path, monkeypatch):
    # A terminated rsync gets STOP_GRACE to finish cleanly; one that ignores SIGTERM is
    # killed once the grace is over, not waited for.
    import subprocess
    import time

    from toolkit.copying import SideBySide

    monkeypatch.setattr(SideBySide, "STOP_GRACE", 1.5)
    done = tmp_path / "finished-cleanly"
    clean = subprocess.Popen(["sh", "-c", f"trap 'sleep 0.3; touch {done}; exit 0' TERM; "
                              "sleep 30 & wait"], start_new_session=True)
    stubborn = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"],
                                start_new_session=True)
    try:
        time.sleep(0.3)  # both shells have set their traps
        plan, report, ex = _executor(tmp_path, FakeHost("dom0-a"), FakeHost("dom0-b"))
        sbs = SideBySide(ex, [])
        sbs._procs = [clean, stubborn]
        start = time.monotonic()
        sbs._halt()
        took = time.monotonic() - start
        assert done.exists() and clean.wait(5) == 0
        assert stubborn.wait(5) == -signal.SIGKILL
        assert 1.0 <= took < 10
    finally:
        for proc in (clean, stubborn):  # their background sleeps too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
