"""One resource undone while it exists (teardown's and recover's undo): the exists-probe,
the bounded retries of a held device, and what "something was removed" means.

A scripted host answers the undo and the probe in turn; time.sleep is recorded, not slept.
"""

from __future__ import annotations

import pytest

from toolkit.errors import CommandFailed
from toolkit.runners import CommandResult
from toolkit.undo import resource_exists, undo_with_retry

UNDO = ("kpartx", "-d", "/dev/vg_a/domubk-R-web01-xvda")
PROBE = ("dmsetup", "info", "-c", "--noheadings", "-o", "name", "vg_a-domubk--R--web01--xvdap1")


class Scripted:
    """Exit codes of the undo, and "there"/"gone" answers of the probe, in turn."""

    host = "dom0-a"

    def __init__(self, undo_codes=(), probes=()):
        self.undo_codes = list(undo_codes)
        self.probes = list(probes)
        self.calls: list[tuple[tuple[str, ...], bool, float | None]] = []

    def run(self, argv, *, check=True, timeout=600, input=None, ok_codes=(0,), env=None):
        argv = tuple(argv)
        self.calls.append((argv, check, timeout))
        if argv == UNDO:
            code = self.undo_codes.pop(0)
            return CommandResult(self.host, argv, code, "", "" if code == 0 else
                                 "device busy", 0.0)
        assert argv == PROBE, argv
        there = self.probes.pop(0)
        return CommandResult(self.host, argv, 0 if there != "error" else 1,
                             "vg_a-domubk--R--web01--xvdap1\n" if there == "there" else "", "",
                             0.0)

    def order(self) -> list[str]:
        return ["undo" if argv == UNDO else "probe" for argv, _, _ in self.calls]


@pytest.fixture
def sleeps(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("toolkit.undo.time.sleep", slept.append)
    return slept


def test_a_resource_already_gone_is_not_undone_and_nothing_was_removed(sleeps):
    host = Scripted(probes=["gone"])
    assert undo_with_retry(host, UNDO, PROBE, 300) is False
    assert host.order() == ["probe"] and sleeps == []


def test_a_resource_there_is_undone_once_with_the_steps_timeout_unchecked(sleeps):
    host = Scripted(undo_codes=[0], probes=["there"])
    assert undo_with_retry(host, UNDO, PROBE, 300) is True
    assert host.calls == [(PROBE, False, 60), (UNDO, False, 300)] and sleeps == []


def test_a_held_resource_is_retried_while_it_is_there_with_a_growing_pause(sleeps):
    host = Scripted(undo_codes=[1, 1, 1, 0], probes=["there"] * 4)
    assert undo_with_retry(host, UNDO, PROBE, 300) is True
    assert host.order() == ["probe", "undo"] * 4
    assert sleeps == [0.25, 0.5, 1.0]


def test_a_resource_that_went_after_a_failed_undo_counts_as_removed(sleeps):
    # kpartx -d removed some maps and failed on one that udev released a moment later
    host = Scripted(undo_codes=[1], probes=["there", "gone"])
    assert undo_with_retry(host, UNDO, PROBE, 300) is True
    assert host.order() == ["probe", "undo", "probe"] and sleeps == [0.25]


def test_a_resource_held_through_every_attempt_fails_with_the_last_result(sleeps):
    host = Scripted(undo_codes=[1] * 6, probes=["there"] * 6)
    with pytest.raises(CommandFailed) as info:
        undo_with_retry(host, UNDO, PROBE, 300)
    assert info.value.result.argv == UNDO and info.value.result.stderr == "device busy"
    assert host.order().count("undo") == 6 and host.undo_codes == []
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0]  # doubled, at most 4 s; none after the last


def test_the_pause_stops_growing_at_four_seconds(sleeps):
    host = Scripted(undo_codes=[1] * 8, probes=["there"] * 8)
    with pytest.raises(CommandFailed):
        undo_with_retry(host, UNDO, PROBE, 300, attempts=8)
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_without_a_probe_every_attempt_runs_the_undo(sleeps):
    host = Scripted(undo_codes=[1, 0])
    assert undo_with_retry(host, UNDO, (), 300) is True
    assert host.order() == ["undo", "undo"] and sleeps == [0.25]
    host = Scripted(undo_codes=[1, 1])
    with pytest.raises(CommandFailed):
        undo_with_retry(host, UNDO, (), 300, attempts=2)


def test_a_runs_own_resource_is_undone_at_once_and_probed_only_after_a_failure(sleeps):
    host = Scripted(undo_codes=[0])
    assert undo_with_retry(host, UNDO, PROBE, 300, probe_first=False) is True
    assert host.order() == ["undo"]


def test_a_runs_own_resource_gone_before_its_undo_was_not_removed(sleeps):
    host = Scripted(undo_codes=[1], probes=["gone"])
    assert undo_with_retry(host, UNDO, PROBE, 300, probe_first=False) is False
    assert host.order() == ["undo", "probe"] and sleeps == []


def test_a_runs_own_resource_still_held_after_its_undo_is_retried_with_the_probe(sleeps):
    host = Scripted(undo_codes=[1, 1, 0], probes=["there", "there", "there"])
    assert undo_with_retry(host, UNDO, PROBE, 300, probe_first=False) is True
    assert host.order() == ["undo", "probe", "probe", "undo", "probe", "undo"]
    assert sleeps == [0.25, 0.5]


def test_a_probe_says_there_only_when_it_succeeds_and_prints_something():
    assert resource_exists(Scripted(probes=["there"]), PROBE) is True
    assert resource_exists(Scripted(probes=["gone"]), PROBE) is False  # exit 0, no output
    assert resource_exists(Scripted(probes=["error"]), PROBE) is False  # exit 1
    host = Scripted(probes=["there"])
    resource_exists(host, PROBE)
    assert host.calls == [(PROBE, False, 60)]


def test_no_attempt_allowed_runs_nothing_and_removes_nothing(sleeps):
    host = Scripted()
    assert undo_with_retry(host, UNDO, PROBE, 300, attempts=0) is False
    assert host.calls == [] and sleeps == []


# -- the one walk of undos: teardown, init-standby and recover ---------------------------

class Made:
    """A made resource as the walker sees it (a plan's step or a journal's entry)."""

    def __init__(self, name: str) -> None:
        self.action, self.resource = "mount", f"/mnt/{name}"
        self.undo, self.exists = ("umount", self.resource), ("findmnt", self.resource)


class Mounted:
    """A host holding some mounts; ``umount`` of one in ``stuck`` fails with its error."""

    host = "dom0-a"

    def __init__(self, names, stuck=None, lost=False):
        self.mounted = {f"/mnt/{n}" for n in names}
        self.stuck = dict(stuck or {})
        self.lost = lost
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, *, check=True, timeout=600, input=None, ok_codes=(0,), env=None):
        from toolkit.errors import ConnectionLost

        argv = tuple(argv)
        self.calls.append(argv)
        path = argv[-1]
        if argv[0] == "findmnt":
            return CommandResult(self.host, argv, 0 if path in self.mounted else 1,
                                 path if path in self.mounted else "", "", 0.0)
        if path in self.stuck:
            if self.lost:
                raise ConnectionLost("the peer went away", host=self.host)
            return CommandResult(self.host, argv, 32, "", self.stuck[path], 0.0)
        self.mounted.discard(path)
        return CommandResult(self.host, argv, 0, "", "", 0.0)


def test_the_walk_undoes_newest_first_and_one_failure_stops_no_other(sleeps):
    from toolkit.undo import unwind

    made = [Made(n) for n in ("a", "b", "c", "gone")]
    host = Mounted(["a", "b", "c"], stuck={"/mnt/b": "target is busy"})
    seen: list[str] = []
    done = unwind(host, made, timeout=30, timed=lambda m, wall, s: seen.append(m.resource))
    umounts = [c[-1] for c in host.calls if c[0] == "umount"]
    assert umounts[:2] == ["/mnt/c", "/mnt/b"] and umounts[-1] == "/mnt/a"  # newest first
    assert host.calls[0] == ("findmnt", "/mnt/gone")  # probed, gone: never unmounted
    assert [m.resource for m in done.removed] == ["/mnt/c", "/mnt/a"]
    assert [m.resource for m in done.gone] == ["/mnt/gone"]
    assert [(m.resource, why) for m, why in done.failed] == [
        ("/mnt/b", "[dom0-a] command `umount /mnt/b` exited 32: target is busy")]
    assert not done.clean and host.mounted == {"/mnt/b"}
    assert seen == ["/mnt/gone", "/mnt/c", "/mnt/b", "/mnt/a"]  # each attempt is timed


def test_after_an_error_it_gives_up_on_the_walk_tries_no_more_and_says_why(sleeps):
    from toolkit.errors import ConnectionLost
    from toolkit.undo import unwind

    made = [Made(n) for n in ("a", "b", "c")]
    host = Mounted(["a", "b", "c"], stuck={"/mnt/c": ""}, lost=True)
    done = unwind(host, made, timeout=30, probe_first=False,
                  give_up=lambda exc: "peer lost" if isinstance(exc, ConnectionLost) else "")
    assert host.calls == [("umount", "/mnt/c")]  # tried once, then nothing more
    assert [(m.resource, why) for m, why in done.failed] == [
        ("/mnt/c", "[dom0-a] the peer went away"), ("/mnt/b", "peer lost"),
        ("/mnt/a", "peer lost")]
    assert done.removed == [] and host.mounted == {"/mnt/a", "/mnt/b", "/mnt/c"}
