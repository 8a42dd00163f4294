"""Progress without a terminal: one line every 10 seconds, a percentage that never goes back."""

from __future__ import annotations

import contextlib
import types

import pytest
from fakes import config, web01_facts

from toolkit import app, progress
from toolkit.preflight import Preflight
from toolkit.progress import ProgressReporter


def update(nbytes: int, pct: int, left: int | None = None) -> str:
    tail = f" (xfr#3, to-chk={left}/200)" if left is not None else ""
    return f"  {nbytes:>14,} {pct:>3}%   10.00MB/s    0:00:01{tail}"


@pytest.fixture
def clock(monkeypatch):
    """The reporter's clock, moved by hand."""
    now = {"t": 1000.0}
    fake = types.SimpleNamespace(monotonic=lambda: now["t"])
    monkeypatch.setattr(progress, "time", fake)
    return now


def reporter() -> tuple[ProgressReporter, list[str]]:
    lines: list[str] = []
    return ProgressReporter(lines.append, tty=False), lines


def test_many_updates_at_100_percent_within_a_second_are_one_line(clock):
    rep, lines = reporter()
    rep("xvda1", update(1_000, 40, 150))
    for n in range(15):  # rsync's closing burst: every file checked is an update at 100%
        clock["t"] += 0.05
        rep("xvda1", update(5_000_000, 100, 14 - n))
    assert len(lines) == 1


def test_one_line_every_ten_seconds_whatever_the_rate_of_updates(clock):
    rep, lines = reporter()
    times = []
    for n in range(600):  # a minute of updates, ten a second, two copies side by side
        clock["t"] += 0.1
        before = len(lines)
        rep("xvda1" if n % 2 else "xvda5", update(n * 1000, min(n // 3, 100), 600 - n))
        if len(lines) > before:
            times.append(clock["t"])
    assert len(times) == 6
    assert all(b - a >= 10 for a, b in zip(times, times[1:], strict=False))


def test_the_line_names_every_copy_in_progress(clock):
    rep, lines = reporter()
    rep("xvda1", update(1000, 10))
    clock["t"] += 1
    rep("xvda5", update(2000, 20))
    clock["t"] += 10
    rep("xvda1", update(3000, 30))
    assert "xvda1: 30%" in lines[-1] and "xvda5: 20%" in lines[-1]


def test_the_percentage_never_goes_backwards(clock):
    rep, lines = reporter()
    rep("xvda1", update(1000, 50, 100))
    clock["t"] += 11
    # incremental recursion found more files: rsync's own percentage drops
    rep("xvda1", update(2000, 30, 400))
    assert [line.split(": ", 1)[1].split("%")[0] for line in lines] == ["50", "50"]
    assert "2,000" in lines[-1] or "2000" in lines[-1]


def test_each_domain_starts_its_copies_at_zero(clock):
    rep, lines = reporter()
    rep.begin("web01")
    rep("xvda1", update(1000, 100, 0))
    rep.begin("db01")
    clock["t"] += 11
    rep("xvda1", update(10, 5, 100))
    assert "xvda1: 5%" in lines[-1]


def test_the_terminal_bar_never_goes_backwards():
    shown: list[int] = []

    class Bar:
        def add_task(self, *a, **k):
            return 1

        def update(self, task, completed, **k):
            shown.append(completed)

    rep = ProgressReporter(lambda m: None, tty=True)
    rep._progress = Bar()
    rep("xvda1", update(1000, 60))
    rep("xvda1", update(2000, 20))
    assert shown == [60, 60]


def test_backup_domain_tells_the_reporter_each_domain_begins(monkeypatch, tmp_path):
    begun: list[str] = []

    class Reporter:
        def begin(self, domain):
            begun.append(domain)

        def __call__(self, fs, line):
            pass

    class Executor:
        def __init__(self, *a, **k):
            pass

        def run(self):
            pass

    monkeypatch.setattr(app, "domain_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(app, "local_node_name", lambda cfg, node=None: "dom0-a")
    monkeypatch.setattr(app, "locate", lambda *a, **k: "running")
    monkeypatch.setattr(app, "connect_peer", lambda *a, **k: "peer")
    monkeypatch.setattr("toolkit.recover.check_state_dir", lambda *a, **k: None)
    monkeypatch.setattr(app, "take_inventories", lambda *a, **k: {})
    monkeypatch.setattr(app, "recover_domain", lambda *a, **k: [])
    monkeypatch.setattr(app, "gather", lambda *a, **k: (
        Preflight(web01_facts(), "running", "shut off"), "peer"))
    monkeypatch.setattr(app, "Executor", Executor)
    app.backup_domain(config(tmp_path), "web01", app.Hosts(source="source"),
                      on_progress=Reporter())
    assert begun == ["web01"]
