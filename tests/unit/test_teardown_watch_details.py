"""Details of teardown, the failpoint, the snapshot watch and guest paths that only a run
shows, each pinned by a test that fails when the detail is changed:

- a peer that stops answering during teardown (its first undo times out) is tried no more:
  every other resource there is reported "not undone, the connection to the peer is lost",
  the source is still cleaned completely, and the peer's journal is kept for recover;
- the ``sigkill`` failpoint kills the process at once (SIGKILL, in a child process);
- the watch goes on after a poll whose ``lvs`` fails and still stops a copy whose snapshot
  fills up; a fill below 1% is reported as it is; an overflowed snapshot whose ``lvs`` row
  has no ``snap_percent`` still stops the copy and is reported invalid;
- a guest fstab naming guest LVs by ``/dev/mapper/VG-LV`` or ``/dev/VG/LV`` gives those
  filesystems their guest paths.

Everything goes through ``Executor.run`` on fake Dom0s (tests/unit/fakes.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeHost, web01_run

import toolkit.copying
import toolkit.execute
from toolkit import errors
from toolkit.execute import Failpoint
from toolkit.runners import CommandResult

RUN = "20260101T000000Z-abcd"
ROOT = Path(__file__).resolve().parents[2]  # the checkout whose toolkit/ is under test
LOST = "not undone, the connection to the peer is lost"


def _executor(tmp_path, src, peer, facts=None, **defaults):
    run = web01_run(tmp_path, src, peer, facts=facts, **defaults)
    return run.plan, run.report, run.ex


def _journals(tmp_path, host: FakeHost) -> list[str]:
    """The journal files a run left on ``host`` (under the state directory's journal/)."""
    top = f"{tmp_path / 'state'}/journal/"
    return sorted(p for p in host.files if p.startswith(top) and p.endswith(".jsonl"))


# -- teardown: a peer that stops answering ------------------------------------------------

def test_a_peer_whose_first_undo_times_out_is_tried_no_more_and_keeps_its_journal(
        tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    timed_out: list[tuple[str, ...]] = []
    after: list[tuple[str, ...]] = []  # what the peer was sent after the timeout
    undos: set[tuple[str, ...]] = set()

    def first_undo_times_out(argv):
        if timed_out:
            after.append(argv)
        elif argv in undos:
            timed_out.append(argv)
            raise errors.CommandTimedOut(CommandResult("dom0-b", argv, -9, "", "", 30.0))
        return None

    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b", fail=first_undo_times_out)
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    peer_steps = [s for s in plan.steps if s.role == "peer" and s.undo]
    undos.update(tuple(s.undo) for s in peer_steps)
    assert len(peer_steps) > 2
    with pytest.raises(errors.TeardownIncomplete):
        ex.run()  # the copies went through: teardown's errors are the run's error

    assert len(timed_out) == 1  # the newest of the peer's resources, tried once
    assert not any(a in undos for a in after)  # and no other undo was sent there
    assert not any(a[0] == "rm" for a in after)  # nor the removal of its journal
    first = next(s for s in peer_steps if tuple(s.undo) == timed_out[0])
    for s in peer_steps:
        said = [e for e in report.teardown_errors
                if e.startswith(f"[dom0-b] {s.action} {s.resource}: ")]
        assert len(said) == 1, (s.action, s.resource, report.teardown_errors)
        assert (LOST in said[0]) == (s is not first), said[0]
    # The source did not wait on the peer: everything there is undone, its journal gone.
    assert src.leftovers() == [] and _journals(tmp_path, src) == []
    assert not any(e.startswith("[dom0-a]") for e in report.teardown_errors)
    # The peer keeps its journal, naming what recover must undo there.
    (journal,) = _journals(tmp_path, peer)
    assert journal.endswith(f"/web01.{RUN}.jsonl")
    assert all(s.resource in peer.files[journal] for s in peer_steps)
    assert peer.leftovers()  # the resources themselves are still there


# -- the failpoint's SIGKILL -----------------------------------------------------------------

def test_the_sigkill_failpoint_kills_the_process_at_once():
    # fire() runs here too (its raise effect), so a tool that picks the tests covering it
    # picks this one; the SIGKILL itself can only end a child process.
    with pytest.raises(errors.ToolkitError, match=r"^failpoint after:mount raised$"):
        Failpoint("after", "mount", 1, "raise").fire()
    code = ("from toolkit.execute import Failpoint\n"
            "Failpoint('after', 'mount', 1, 'sigkill').fire()\n"
            "print('still alive')\n")
    path = os.pathsep.join([str(ROOT), *sys.path])
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": path})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert "still alive" not in res.stdout and res.stderr == ""


# -- the snapshot watch during a copy -----------------------------------------------------

class CopyingHost(FakeHost):
    """A source whose first rsync is a real process (``sleep``) that only the watch cuts
    short; ``polls(n, lv)`` decides what the n-th ``lvs`` of the snapshots after that copy
    started sees (it may change ``lv``, the snapshot's fake LVM record, return a result, or
    raise). Each later copy ends at once."""

    def __init__(self, host: str, polls, seconds: float = 10) -> None:
        super().__init__(host, fail=self._poll)
        self.polls, self.seconds = polls, seconds
        self.procs: list[subprocess.Popen] = []
        self.copying = False
        self.n = 0
        self.fstab_on = "xvda1"

    def _poll(self, argv):
        if self.copying and argv[0] == "lvs" and "--reportformat" in argv:
            self.n += 1
            (lv,) = self.lvs.values()
            return self.polls(self.n, lv, argv)
        return None

    def stream(self, argv, on_line, *, env=None, on_start=None):
        args = tuple(argv)
        self.calls.append(args)
        proc = subprocess.Popen(["sleep", str(self.seconds if not self.procs else 0)])
        self.procs.append(proc)
        if on_start is not None:
            on_start(proc)
        self.copying = True
        return CommandResult(self.host, args, proc.wait(), "", "", 0.1)


def _watched(tmp_path, monkeypatch, src):
    """An executor whose snapshot watch polls every 50 ms."""
    real = toolkit.copying.SnapshotWatch
    monkeypatch.setattr(toolkit.copying, "SnapshotWatch",
                        lambda *args, interval: real(*args, interval=0.05))
    return _executor(tmp_path, src, FakeHost("dom0-b"))


def _thread_crashes(monkeypatch) -> list[BaseException]:
    crashed: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    return crashed


@pytest.mark.parametrize("failure", ["exit", "raise"])
def test_a_poll_that_fails_does_not_end_the_watch_a_later_full_one_stops_the_copy(
        tmp_path, monkeypatch, failure):
    def polls(n, lv, argv):
        if n == 1:  # the first look during the copy cannot read the snapshot
            res = CommandResult("dom0-a", argv, 5, "", "  Reading VG vg_a failed.\n", 60.0)
            if failure == "raise":
                raise errors.CommandTimedOut(res)
            return res
        lv["percent"] = "95.00"  # the next one finds it past snapshot_max_fill (80%)
        return None

    src = CopyingHost("dom0-a", polls)
    crashed = _thread_crashes(monkeypatch)
    plan, report, ex = _watched(tmp_path, monkeypatch, src)
    with pytest.raises(errors.SnapshotInvalid,
                       match=r"is 95\.0% full \(limit 80%\); copy stopped before it "
                             r"overflowed") as info:
        ex.run()
    assert info.value.host == "dom0-a"
    assert src.n >= 2  # the failed poll, then the one that saw the fill
    assert len(src.procs) == 1 and src.procs[0].returncode == -signal.SIGTERM  # cut short
    assert [f.outcome for f in report.filesystems][0] == "failed"
    assert report.snapshots[0].fill_percent == 95.0
    assert crashed == []
    assert src.leftovers() == [] and ex.peer.leftovers() == []


def test_a_fill_below_one_percent_is_reported_as_it_is(tmp_path):
    def quarter_full(argv):
        if argv[0] == "lvs" and "--reportformat" in argv:
            for v in src.lvs.values():
                v["percent"] = "0.25"
        return None

    src, peer = FakeHost("dom0-a", fail=quarter_full), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, report, ex = _executor(tmp_path, src, peer)
    ex.run()
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert [s.fill_percent for s in report.snapshots] == [0.25]
    assert not report.snapshots[0].invalid


def test_an_overflow_reported_without_a_fill_still_stops_the_copy(tmp_path, monkeypatch):
    # lvs of an invalid snapshot may print no snap_percent at all: the overflow alone must
    # stop the copy. Once the watch has seen it, lvs cannot read the VG any more, so what
    # the run reports is the watch's own finding.
    def polls(n, lv, argv):
        if n == 1:
            lv["attr"], lv["percent"] = "swi-I-s---", ""
            return None
        return CommandResult("dom0-a", argv, 5, "", "  Reading VG vg_a failed.\n", 0.1)

    src = CopyingHost("dom0-a", polls)
    crashed = _thread_crashes(monkeypatch)
    plan, report, ex = _watched(tmp_path, monkeypatch, src)
    (snap,) = plan.snapshots
    with pytest.raises(errors.SnapshotInvalid) as info:
        ex.run()
    assert str(info.value) == (f"[dom0-a] snapshot {snap.vg}/{snap.name} overflowed during the "
                               "copy; rsync stopped, the standby stays marked dirty")
    assert len(src.procs) == 1 and src.procs[0].returncode == -signal.SIGTERM  # cut short
    assert [f.outcome for f in report.filesystems][0] == "failed"
    assert report.snapshots[0].invalid is True
    assert crashed == []  # the watch did not die on the missing fill
    assert src.leftovers() == [] and ex.peer.leftovers() == []


# -- guest paths of guest LVs ---------------------------------------------------------------

def _lvm01(tmp_path, fstab: str):
    """lvm01 (LVM on xvda2: vg_a/root and vg_a/var; ext4 on xvda1), run as web01."""
    from test_facts_guestlvm import lvm01_facts

    src = FakeHost("dom0-a", devices=("/dev/vg_a/lvm01",))
    peer = FakeHost("dom0-b", devices=("/dev/vg_b/lvm01",))
    src.fstab_on, src.fstab = "xvda2.vg_a.root", fstab
    for host in (src, peer):
        host.partition_numbers = (1, 2)
    plan, report, ex = _executor(tmp_path, src, peer, facts=lvm01_facts())
    return src, peer, plan, report, ex


@pytest.mark.parametrize(("root", "var"), [
    ("/dev/mapper/vg_a-root", "/dev/vg_a/var"),
    ("/dev/vg_a/root", "/dev/mapper/vg_a-var"),
], ids=["mapper-root", "vg-path-root"])
def test_a_guest_fstab_naming_guest_lvs_by_device_path_gives_their_guest_paths(
        tmp_path, root, var):
    fstab = (f"{root} / ext4 defaults 0 1\n"
             f"{var} /var ext4 defaults 0 2\n"
             "UUID=5eed0017-0000-4000-8000-000000000001 /boot ext4 defaults 0 2\n")
    src, peer, plan, report, ex = _lvm01(tmp_path, fstab)
    ex.run()
    assert {f.name: f.guest_path for f in report.filesystems} == {
        "xvda1": "/boot", "xvda2.vg_a.root": "/", "xvda2.vg_a.var": "/var"}
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_filesystem_whose_guest_lv_name_is_unknown_is_not_taken_for_a_guest_lv(tmp_path):
    # Only a filesystem with both its guest VG and LV names is matched by LV device paths;
    # one with a VG name alone is not an LV to the fstab (and does not break its reading).
    fstab = ("/dev/mapper/vg_a-root / ext4 defaults 0 1\n"
             "UUID=5eed0017-0000-4000-8000-000000000003 /var ext4 defaults 0 2\n"
             "UUID=5eed0017-0000-4000-8000-000000000001 /boot ext4 defaults 0 2\n")
    src, peer, plan, report, ex = _lvm01(tmp_path, fstab)
    fss = tuple(replace(f, guest_lv=None) if f.name == "xvda2.vg_a.var" else f
                for f in plan.filesystems)
    ex.plan = replace(plan, filesystems=fss)
    ex.run()
    assert {f.name: f.guest_path for f in report.filesystems} == {
        "xvda1": "/boot", "xvda2.vg_a.root": "/", "xvda2.vg_a.var": "/var"}
