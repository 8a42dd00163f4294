"""Copying a domain's filesystems side by side (``defaults.copy_jobs``) on fake Dom0s."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
from fakes import FakeHost, config, web01_run

from toolkit import errors, signals
from toolkit.config import parse_config
from toolkit.marker import marker_path
from toolkit.rsync import untied
from toolkit.runners import CommandResult

RUN = "20260101T000000Z-abcd"


def executor(tmp_path, src, peer, jobs):
    return web01_run(tmp_path, src, peer, copy_jobs=jobs)


def marker_state(cfg, peer) -> str | None:
    import json

    text = peer.files.get(marker_path(cfg, "web01"))
    return json.loads(text)["state"] if text else None


class Overlap:
    """A fail hook that holds each rsync a moment and counts how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def __call__(self, argv):
        if untied(argv)[0] == "rsync":
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            time.sleep(0.3)
            with self.lock:
                self.running -= 1
        return None


@pytest.mark.parametrize(("jobs", "peak"), [(1, 1), (2, 2), (8, 3)])
def test_copy_jobs_bounds_the_rsyncs_running_at_once(tmp_path, jobs, peak):
    overlap = Overlap()
    src, peer = FakeHost("dom0-a", fail=overlap), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = executor(tmp_path, src, peer, jobs)
    ex.run()
    assert len(plan.filesystems) == 3 and overlap.peak == peak
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert sorted(s.resource for s in report.steps if s.action == "rsync") == [
        "xvda1", "xvda5", "xvda6"]
    assert "rsync" in report.phases
    assert marker_state(cfg, peer) == "clean"
    assert src.leftovers() == [] and peer.leftovers() == []
    # the marker went clean only after every copy: no rsync call after the clean marker
    rsyncs = [i for i, c in enumerate(src.calls) if untied(c)[0] == "rsync"]
    assert len(rsyncs) == 3


class StreamingHost(FakeHost):
    """A FakeHost whose rsync is a real process (``sleep``), so it can be stopped.

    The copy of ``fail_fs`` fails with ``fail_code`` once every other copy has started.
    """

    def __init__(self, *a, fail_fs: str | None = None, fail_code: int = 25, **kw) -> None:
        super().__init__(*a, **kw)
        self.fail_fs, self.fail_code = fail_fs, fail_code
        self.procs: list[subprocess.Popen] = []
        self.others_started = threading.Event()

    def stream(self, argv, on_line, *, env=None, on_start=None):
        args = tuple(argv)
        self.calls.append(args)
        source = args[-2]
        if self.fail_fs and f"/{self.fail_fs}/" in source + "/":
            self.others_started.wait(5)
            return CommandResult(self.host, args, self.fail_code, "",
                                 "Deletions stopped due to --max-delete limit", 0.1)
        proc = subprocess.Popen(["sleep", "30"])
        self.procs.append(proc)
        if on_start is not None:
            on_start(proc)
        if len(self.procs) >= 2:
            self.others_started.set()
        code = proc.wait()
        return CommandResult(self.host, args, code, "", "", 0.1)


def test_the_first_failed_copy_stops_the_others_and_is_the_error(tmp_path, monkeypatch):
    src, peer = StreamingHost("dom0-a", fail_fs="xvda1"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = executor(tmp_path, src, peer, 3)
    start = time.monotonic()
    with pytest.raises(errors.MassDeleteRefused):
        ex.run()
    assert time.monotonic() - start < 15  # the two 30 s copies were stopped, not awaited
    assert len(src.procs) == 2 and all(p.poll() is not None for p in src.procs)
    outcomes = {f.name: f.outcome for f in report.filesystems}
    assert outcomes == {"xvda1": "failed", "xvda5": "stopped", "xvda6": "stopped"}
    assert marker_state(cfg, peer) == "dirty"
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_signal_stops_every_copy_before_teardown_and_exits_128_plus_n(tmp_path):
    src, peer = StreamingHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = executor(tmp_path, src, peer, 2)

    def send_term() -> None:
        # the two copies must be running when the signal comes (a loaded machine is slow)
        assert src.others_started.wait(60)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    threading.Thread(target=send_term, daemon=True).start()
    start = time.monotonic()
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        ex.run()
    assert info.value.exit_code == 143
    assert time.monotonic() - start < 75
    assert len(src.procs) == 2 and all(p.poll() is not None for p in src.procs)
    # the third filesystem never started; the two running ones were stopped
    assert sorted(f.outcome for f in report.filesystems) == ["pending", "stopped", "stopped"]
    assert marker_state(cfg, peer) == "dirty"
    assert src.leftovers() == [] and peer.leftovers() == []


def test_copy_jobs_is_checked_in_the_config(tmp_path):
    from fakes import CONFIG_TEXT

    def parse(value: str):
        text = CONFIG_TEXT.format(state=tmp_path / "s", lock=tmp_path / "l").replace(
            "[defaults]\n", f"[defaults]\ncopy_jobs = {value}\n")
        return parse_config(text, tmp_path / "backup.toml")

    assert parse("4").defaults.copy_jobs == 4
    assert config(tmp_path).defaults.copy_jobs == 1  # one after another unless asked
    for bad in ("0", "17", '"2"', "true"):
        with pytest.raises(errors.ConfigError, match=r"defaults\.copy_jobs"):
            parse(bad)


def test_a_failpoint_in_a_copy_thread_fails_the_run_and_the_others_stop(tmp_path, monkeypatch):
    hooks = tmp_path / "test-hooks"
    hooks.write_text("on\n")
    monkeypatch.setattr("toolkit.failpoint.TEST_HOOKS_FILE", str(hooks))
    monkeypatch.setenv("DOMU_BACKUP_FAILPOINT", "before:rsync@2:raise")
    src, peer = StreamingHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = executor(tmp_path, src, peer, 2)
    start = time.monotonic()
    with pytest.raises(errors.ToolkitError, match=r"failpoint before:rsync raised"):
        ex.run()
    assert time.monotonic() - start < 15
    # A copy that had started was stopped (the other thread may not have got that far);
    # the one at the failpoint and the third never ran.
    assert len(src.procs) <= 1 and all(p.poll() is not None for p in src.procs)
    outcomes = sorted(f.outcome for f in report.filesystems)
    assert outcomes.count("stopped") == len(src.procs)
    assert outcomes.count("pending") == 3 - len(src.procs)
    assert marker_state(cfg, peer) == "dirty"
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_signal_while_the_copy_threads_start_still_stops_the_started_copies(
        tmp_path, monkeypatch):
    """The signal lands between the first copy thread's start and the second's: the first
    copy is stopped before teardown unmounts anything, as for a signal a moment later."""
    src, peer = StreamingHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report, ex = executor(tmp_path, src, peer, 2)
    real_start = threading.Thread.start
    started: list[str] = []

    def start(self) -> None:
        if self.name.startswith("copy-") and started:
            deadline = time.monotonic() + 60
            while not src.procs and time.monotonic() < deadline:
                time.sleep(0.02)
            assert src.procs, "the first copy never started"
            raise errors.Interrupted(signal.SIGTERM)
        if self.name.startswith("copy-"):
            started.append(self.name)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        ex.run()
    assert info.value.exit_code == 143
    assert len(src.procs) == 1 and src.procs[0].poll() is not None
    assert "stopped" in [f.outcome for f in report.filesystems]
    assert src.leftovers() == [] and peer.leftovers() == []
