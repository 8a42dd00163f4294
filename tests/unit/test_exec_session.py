"""The lab's exec sessions: the real server program, run here, behind a fake exec API that
frames its output as docker's non-tty exec stream does; DockerRunner on top of it.

Each command must come out as a docker exec of the same argv would: exit codes (128+N for
a signal), stdout and stderr apart, stdin closed or fed, the request's environment over
the session's, a session of its own; timeouts and a lost session are errors, never a
made-up exit code.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from toolkit import errors
from toolkit.lab import exec_session
from toolkit.lab.docker_runner import DockerRunner, close_sessions
from toolkit.lab.exec_session import POOL, Session, SessionLost
from toolkit.runners import NO_LIMIT


class LocalExecAPI:
    """exec_create/exec_start of docker's low-level API, running the command on this host."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.procs: list[subprocess.Popen] = []

    def exec_create(self, container: str, cmd: list[str], **kwargs: object) -> dict:
        self.created.append({"container": container, "cmd": cmd, **kwargs})
        return {"Id": f"exec-{len(self.created)}"}

    def exec_start(self, exec_id: str, socket: bool = False) -> object:
        import socket as sockets

        spec = self.created[int(exec_id.split("-")[1]) - 1]
        ours, theirs = sockets.socketpair()
        env = {"PATH": os.environ["PATH"], **spec["environment"]}
        proc = subprocess.Popen([sys.executable if spec["cmd"][0] == "python3"
                                 else spec["cmd"][0], *spec["cmd"][1:]],
                                stdin=theirs.fileno(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        self.procs.append(proc)
        lock = threading.Lock()

        def pump(stream: object, number: int) -> None:
            while data := os.read(stream.fileno(), 65536):
                with lock:
                    theirs.sendall(struct.pack(">BxxxL", number, len(data)) + data)

        pumps = [threading.Thread(target=pump, args=(proc.stdout, 1), daemon=True),
                 threading.Thread(target=pump, args=(proc.stderr, 2), daemon=True)]
        for t in pumps:
            t.start()

        def close_when_done() -> None:
            for t in pumps:
                t.join()
            theirs.close()

        threading.Thread(target=close_when_done, daemon=True).start()
        return ours


class Client:
    def __init__(self) -> None:
        self.api = LocalExecAPI()


@pytest.fixture
def client():
    close_sessions()
    c = Client()
    yield c
    close_sessions()
    for proc in c.api.procs:
        proc.kill()
        proc.wait()


def test_session_answers_like_an_exec_of_the_argv(client: Client) -> None:
    runner = DockerRunner("dom0-a", client=client)
    res = runner.run(["sh", "-c", 'echo "$LC_ALL $X"; echo oops >&2; exit 3'], check=False,
                     env={"X": "from the request"})
    assert (res.exit_code, res.stdout, res.stderr) == (3, "C from the request\n", "oops\n")
    assert res.host == "dom0-a" and res.argv == ("sh", "-c", 'echo "$LC_ALL $X"; echo oops >&2; '
                                                              "exit 3")
    # the next command does not inherit the last one's environment
    assert runner.run(["sh", "-c", 'echo "${X-unset}"']).stdout == "unset\n"
    # the session's start is the only exec: its argv names nothing a leak check looks for
    (start,) = client.api.created
    assert start["cmd"] == exec_session.BOOTSTRAP and start["stdin"] is True
    assert not any(w in " ".join(start["cmd"]) for w in ("domu", "rsync", "domubk"))


def test_session_stdin_is_empty_unless_input_is_given(client: Client) -> None:
    runner = DockerRunner("c", client=client)
    assert runner.run(["cat"], timeout=10).stdout == ""
    data = "ü" * 200_000 + "\n\udcff"  # large, non-ASCII, and not valid UTF-8 at the end
    assert runner.run(["cat"], input=data).stdout == data


def test_session_command_is_a_session_leader_and_a_signal_is_128_plus_n(client: Client) -> None:
    runner = DockerRunner("c", client=client)
    # /proc/PID/stat: "pid (comm) state ppid pgrp session ..."
    stat = runner.run(["sh", "-c", "echo $$; cat /proc/$$/stat"], timeout=NO_LIMIT).stdout
    pid, fields = stat.split("\n", 1)
    _state, _ppid, pgrp, session = fields.rsplit(")", 1)[1].split()[:4]
    assert pid == pgrp == session
    res = runner.run(["sh", "-c", "kill -TERM $$"], check=False)
    assert res.exit_code == 128 + signal.SIGTERM


def test_session_missing_program_is_127_not_a_lost_session(client: Client) -> None:
    runner = DockerRunner("c", client=client)
    res = runner.run(["no-such-program-here"], check=False)
    assert res.exit_code == 127 and "no-such-program-here" in res.stderr
    with pytest.raises(errors.CommandFailed):
        runner.run(["no-such-program-here"])
    assert runner.run(["echo", "still", "here"]).stdout == "still here\n"


def test_session_timeout_kills_the_command_and_is_an_error(client: Client) -> None:
    runner = DockerRunner("c", client=client)
    start = time.monotonic()
    with pytest.raises(errors.CommandTimedOut):
        runner.run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - start < 10
    assert runner.run(["echo", "next"]).stdout == "next\n"


def test_session_timeout_none_is_the_runners_command_timeout(client: Client) -> None:
    # The Runner rule: None (or no timeout at all) is the runner's own bound.
    runner = DockerRunner("c", client=client, command_timeout=0.5)
    for kwargs in ({}, {"timeout": None}):
        start = time.monotonic()
        with pytest.raises(errors.CommandTimedOut, match="after 0.5s"):
            runner.run(["sleep", "30"], **kwargs)
        assert time.monotonic() - start < 10


def test_session_no_limit_outlives_the_command_timeout_and_a_number_is_kept(
        client: Client) -> None:
    runner = DockerRunner("c", client=client, command_timeout=0.2)
    slow = ["sh", "-c", "sleep 0.8; echo done"]
    assert runner.run(slow, timeout=NO_LIMIT).stdout == "done\n"
    assert runner.run(slow, timeout=10).stdout == "done\n"


def test_session_whose_answer_never_comes_times_out_at_the_deadline(
        client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The timeout prefix kills sh, but the sleep it left in a session of its own still
    # holds the output open, so no answer comes; the client's own deadline ends the wait,
    # and the session that still waits for that output is not used again.
    monkeypatch.setattr(DockerRunner, "_GRACE", 0.3)
    runner = DockerRunner("c", client=client)
    runner.run(["true"])
    assert POOL.idle("c") == 1
    with pytest.raises(errors.CommandTimedOut):
        runner.run(["sh", "-c", "setsid sleep 30 & wait"], timeout=0.2)
    assert POOL.idle("c") == 0


def test_session_lost_mid_command_is_a_failure_without_an_exit_code(client: Client) -> None:
    runner = DockerRunner("c", client=client)
    runner.run(["true"])
    (server,) = client.api.procs
    res_holder = {}

    def run() -> None:
        res_holder["res"] = runner.run(["sleep", "30"], check=False, timeout=60)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    server.kill()
    t.join(20)
    assert res_holder["res"].exit_code == -1
    assert "session" in res_holder["res"].stderr
    with pytest.raises(errors.CommandFailed, match="without an exit code"):
        s = Session(client.api, "c", {"LC_ALL": "C"})
        client.api.procs[-1].kill()
        POOL.give_back(s)
        runner.run(["sleep", "30"])


def test_commands_side_by_side_each_get_a_session(client: Client) -> None:
    runner = DockerRunner("c", client=client)
    results: list[float] = []

    def one() -> None:
        t = time.monotonic()
        runner.run(["sleep", "1"])
        results.append(time.monotonic() - t)

    threads = [threading.Thread(target=one) for _ in range(3)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and time.monotonic() - start < 2.9
    assert len(client.api.created) == 3 and POOL.idle("c") == 3
    runner.run(["true"])
    assert len(client.api.created) == 3  # an idle one is reused


def test_a_session_that_never_says_ready_is_lost() -> None:
    a, b = socket.socketpair()

    class Api:
        def exec_create(self, *args: object, **kwargs: object) -> dict:
            return {"Id": "x"}

        def exec_start(self, *args: object, **kwargs: object) -> object:
            b.close()
            return a

    with pytest.raises(SessionLost):
        Session(Api(), "c", {})


def test_direct_mode_is_one_exec_per_command(client: Client,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOMUBK_LAB_EXEC", "direct")
    assert DockerRunner("c", client=client).sessions is False
    monkeypatch.delenv("DOMUBK_LAB_EXEC")
    assert DockerRunner("c", client=client).sessions is True
