"""The failpoint does what the lab's fault-injection tests ask of it, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from toolkit import errors, signals
from toolkit.failpoint import Failpoint


def test_raise_fails_the_step_naming_it():
    with pytest.raises(errors.ToolkitError, match=r"^failpoint after:mount raised$"):
        Failpoint("after", "mount", 2, "raise").fire()


@pytest.mark.parametrize(("what", "seconds"), [("sleep=0.25", 0.25), ("sleep=0", 0.0),
                                               ("sleep=12", 12.0)])
def test_sleep_waits_that_long_and_nothing_else(monkeypatch, what, seconds):
    slept: list[float] = []
    monkeypatch.setattr("toolkit.failpoint.time.sleep", slept.append)
    Failpoint("before", "rsync", 0, what).fire()
    assert slept == [seconds]


@pytest.mark.parametrize("what", ["sigterm", "sigint", "sighup"])
def test_a_signal_is_sent_to_the_run_itself(what):
    signum = getattr(signal, what.upper())
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        Failpoint("after", "snapshot", 1, what).fire()
    assert info.value.exit_code == 128 + signum


def test_sigkill_kills_the_run_at_once():
    code = ("from toolkit.failpoint import Failpoint\n"
            "Failpoint('after', 'mount', 1, 'sigkill').fire()\n"
            "print('still alive')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == -signal.SIGKILL and "still alive" not in res.stdout


def test_an_effect_it_does_not_know_is_an_error_not_a_signal():
    with pytest.raises(errors.ToolkitError, match=r"failpoint action 'explode' unknown"):
        Failpoint("after", "mount", 1, "explode").fire()


@pytest.mark.parametrize(("raw", "why"), [
    ("after:mount", "three parts separated by ':'"),
    ("after:mount:sleep=1:2", "sleep needs seconds, got 'sleep=1:2'"),
    ("after:mount@1@2:raise", "the occurrence '1@2' is not a whole number from 1"),
    ("after:mnt:raise", "unknown action 'mnt' (alias, bootread, bootwrite, check, define, "
                        "freeze, fstab, keep, keep-classic, lock, lvmap, map, marker, "
                        "merge, mkdir, mount, point, posthook, prehook, prune, rollback, "
                        "rsync, snapshot, start, tag, thaw)"),
    ("after:mount:explode", "unknown effect 'explode' (raise, sigterm, sigkill, sigint, sighup "
                            "or sleep=N)"),
    ("after:mount:sleep=3600.5", "sleep is 0 to 3600 seconds"),
    ("after:mount:sleep=-1", "sleep is 0 to 3600 seconds"),
])
def test_a_malformed_failpoint_says_exactly_what_is_wrong(raw, why):
    with pytest.raises(errors.UsageError) as info:
        Failpoint.parse(raw)
    assert str(info.value) == (f"DOMU_BACKUP_FAILPOINT={raw!r}: {why} (expected "
                               "when:action[@n]:what, e.g. after:mount@2:sigkill)")


@pytest.mark.parametrize(("raw", "parsed"), [
    ("after:mount@1:raise", Failpoint("after", "mount", 1, "raise")),
    ("before:rsync:sleep=0", Failpoint("before", "rsync", 0, "sleep=0")),
    ("before:rsync:sleep=3600", Failpoint("before", "rsync", 0, "sleep=3600")),
])
def test_the_edges_of_a_well_formed_failpoint_parse(raw, parsed):
    assert Failpoint.parse(raw) == parsed
