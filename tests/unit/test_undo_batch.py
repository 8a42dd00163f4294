"""A run's teardown undoes a host's resources in one command (``undo_batch_argv``).

The script is run by the real ``sh`` here: it stops at the first undo that fails, quotes
every word, and times each undo by the host's clock. The walk then takes the failed undo
and the ones after it one by one, probing first, as before.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from fakes import FakeHost

from toolkit.errors import ConnectionLost
from toolkit.runners import CommandResult
from toolkit.undo import (
    batch_mark,
    undo_batch_argv,
    undone_in_batch,
    unwind,
    unwrap_undo_batch,
)


def sh(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def test_the_batch_runs_in_order_and_stops_at_the_first_failure(tmp_path):
    log = tmp_path / "log"
    undos = [["sh", "-c", f'echo one >> {log}'], ["sh", "-c", f'echo two >> {log}'],
             ["false"], ["sh", "-c", f'echo four >> {log}']]
    out = sh(undo_batch_argv(undos))
    assert log.read_text() == "one\ntwo\n"  # the undo after the failure never ran
    assert len(undone_in_batch(out)) == 2


def test_every_word_reaches_its_undo_as_it_is(tmp_path):
    odd = tmp_path / "a dir with $HOME and 'quotes' ; rm -rf x"
    odd.mkdir()
    argv = undo_batch_argv([["rmdir", "--", str(odd)]])
    assert unwrap_undo_batch(argv) == [["rmdir", "--", str(odd)]]
    assert len(undone_in_batch(sh(argv))) == 1
    assert not odd.exists()


def test_each_undo_is_timed_by_the_hosts_clock():
    times = undone_in_batch(sh(undo_batch_argv([["true"], ["sleep", "0.3"], ["true"]])))
    assert len(times) == 3 and all(t is not None for t in times)
    assert times[1] >= 0.25 and times[0] < 0.2 and times[2] < 0.2
    # a host whose clock cannot be read: the undos still count, untimed
    assert undone_in_batch("\n@@domubk-undo - r= t=\n\n@@domubk-undo 0 r=0 t=\n") == [None]


def test_an_undo_that_prints_a_mark_of_its_own_claims_nothing():
    # undo 0 fails; its output names itself and the next one done: the host's own mark wins
    forged = (batch_mark(0, 0, 1.0) + batch_mark(1, 0, 1.0))
    out = batch_mark(None, None, 0.0) + forged + batch_mark(0, 1, 1.0)
    assert undone_in_batch(out) == []
    assert unwrap_undo_batch(["sh", "-c", "true", "sh"]) is None


@dataclass(frozen=True)
class Made:
    action: str
    resource: str
    undo: tuple[str, ...]
    exists: tuple[str, ...]


def _mounts(host: FakeHost, n: int) -> list[Made]:
    made = []
    for i in range(n):
        d = f"/run/x/{i}"
        host.dirs.add(d)
        made.append(Made("mkdir", d, ("rmdir", d), ("find", d, "-maxdepth", "0")))
    return made


def test_teardown_sends_one_command_and_takes_a_failed_undo_one_by_one_probing_first():
    host = FakeHost("dom0-a")
    host.base_dirs.add("/run/x")
    made = _mounts(host, 4)
    busy = {"left": 1}

    def held_once(argv):
        if argv == ("rmdir", "/run/x/1") and busy["left"]:
            busy["left"] -= 1
            return CommandResult("dom0-a", argv, 1, "", "Device or resource busy", 0.0)
        return None

    host.fail = held_once
    done = unwind(host, made, timeout=30, probe_first=False, batched=True)
    assert done.clean and sorted(m.resource for m in done.removed) == [m.resource
                                                                       for m in made]
    batches = [c for c in host.calls if unwrap_undo_batch(c) is not None]
    # newest first: 3, 2, then 1 fails; 1 is probed and retried; 0 goes in a batch of one
    assert len(batches) == 1 and unwrap_undo_batch(batches[0])[:3] == [
        ["rmdir", "/run/x/3"], ["rmdir", "/run/x/2"], ["rmdir", "/run/x/1"]]
    after = host.calls[host.calls.index(batches[0]) + 1:]
    assert [c[0] for c in after if unwrap_undo_batch(c) is None][-3:] == [
        "find", "rmdir", "rmdir"]  # probe, the undo again, then the last one
    assert host.dirs == set()


def test_a_lost_host_fails_the_first_undo_with_the_error_and_gives_up_on_the_rest():
    class Gone(FakeHost):
        def run(self, argv, **kw):
            self.calls.append(tuple(argv))
            raise ConnectionLost("cannot open an SSH session", host=self.host)

    host = Gone("dom0-b")
    made = _mounts(host, 3)
    done = unwind(host, made, timeout=30, probe_first=False, batched=True,
                  give_up=lambda exc: "not undone, the connection is lost")
    assert len(host.calls) == 1  # one batch, nothing after it
    reasons = [why for _, why in done.failed]
    assert [m.resource for m, _ in done.failed] == ["/run/x/2", "/run/x/1", "/run/x/0"]
    assert "cannot open an SSH session" in reasons[0]
    assert reasons[1:] == ["not undone, the connection is lost"] * 2


def test_recover_and_unbatched_walks_send_each_undo_on_its_own():
    host = FakeHost("dom0-a")
    host.base_dirs.add("/run/x")
    made = _mounts(host, 3)
    done = unwind(host, made, timeout=30)
    assert done.clean and not any(unwrap_undo_batch(c) for c in host.calls)
