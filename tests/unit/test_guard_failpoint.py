"""The failpoint does what the lab's fault-injection tests ask of it, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from toolkit import errors, signals
from toolkit.execute import Failpoint


def test_raise_fails_the_step_naming_it():
    with pytest.raises(errors.ToolkitError, match=r"^failpoint after:mount raised$"):
        Failpoint("after", "mount", 2, "raise").fire()


@pytest.mark.parametrize(("what", "seconds"), [("sleep=0.25", 0.25), ("sleep=0", 0.0),
                                               ("sleep=12", 12.0)])
def test_sleep_waits_that_long_and_nothing_else(monkeypatch, what, seconds):
    slept: list[float] = []
    monkeypatch.setattr("toolkit.execute.time.sleep", slept.append)
    Failpoint("before", "rsync", 0, what).fire()
    assert slept == [seconds]


@pytest.mark.parametrize("what", ["sigterm", "sigint", "sighup"])
def test_a_signal_is_sent_to_the_run_itself(what):
    signum = getattr(signal, what.upper())
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        Failpoint("after", "snapshot", 1, what).fire()
    assert info.value.exit_code == 128 + signum


def test_sigkill_kills_the_run_at_once():
    code = ("from toolkit.execute import Failpoint\n"
            "Failpoint('after', 'mount', 1, 'sigkill').fire()\n"
            "print('still alive')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == -signal.SIGKILL and "still alive" not in res.stdout


def test_an_effect_it_does_not_know_is_an_error_not_a_signal():
    with pytest.raises(errors.ToolkitError, match=r"failpoint action 'explode' unknown"):
        Failpoint("after", "mount", 1, "explode").fire()
