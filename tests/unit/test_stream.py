"""LocalRunner.stream: progress lines as they come, bounded memory, no orphaned child."""

from __future__ import annotations

import threading
import time

import pytest

from toolkit.errors import Interrupted
from toolkit.runners import LocalRunner


def test_carriage_return_updates_arrive_as_lines_and_stderr_is_kept():
    lines: list[str] = []
    res = LocalRunner().stream(
        ["sh", "-c", "printf '  10%%\\r  50%%\\r 100%%\\nTotal: 3\\n'; echo oops >&2; exit 23"],
        lines.append)
    assert lines == ["  10%", "  50%", " 100%", "Total: 3"]
    assert res.exit_code == 23 and res.stderr == "oops"


def test_output_kept_is_bounded():
    res = LocalRunner().stream(["seq", "1", "100000"], lambda line: None)
    assert res.stdout.splitlines()[-1] == "100000"
    assert len(res.stdout.splitlines()) == 200


def test_large_stderr_does_not_deadlock():
    res = LocalRunner().stream(
        ["python3", "-c", "import sys; sys.stderr.write('e' * 1000000 + '\\n'); print('done')"],
        lambda line: None)
    assert res.exit_code == 0 and res.stdout == "done"


def test_interrupt_terminates_the_child():
    procs = []

    def interrupt(line: str) -> None:
        raise Interrupted(15)

    with pytest.raises(Interrupted):
        LocalRunner().stream(["sh", "-c", "echo start; sleep 30"], interrupt,
                             on_start=procs.append)
    assert procs[0].poll() is not None  # reaped, not left running


def test_watcher_can_stop_the_process():
    started = time.monotonic()

    def watch(proc) -> None:
        threading.Timer(0.3, proc.terminate).start()

    res = LocalRunner().stream(["sleep", "30"], lambda line: None, on_start=watch)
    assert res.exit_code == -15
    assert time.monotonic() - started < 10
