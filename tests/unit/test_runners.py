"""The runner contract: LocalRunner for real, SSHRunner against an in-process
paramiko server on 127.0.0.1, DockerRunner against a fake exec API on a socketpair."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit import errors
from toolkit.config import SSHSettings
from toolkit.hosts import runner_for
from toolkit.lab.docker_runner import DockerRunner, docker_exec_detached
from toolkit.runners import (
    DEFAULT_TIMEOUT,
    NO_LIMIT,
    CommandResult,
    HostSpec,
    LocalRunner,
    Runner,
    SSHRunner,
    parse_host_spec,
    time_limit,
    validate_argv,
)

PY_ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


# --- LocalRunner -------------------------------------------------------------


def test_local_runner_returns_exit_code_stdout_and_stderr_separately() -> None:
    result = LocalRunner().run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.host == "local"
    assert result.duration >= 0


def test_command_failed_shows_command_code_and_stderr_tail() -> None:
    script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i >&2; done; exit 7"
    with pytest.raises(errors.CommandFailed) as caught:
        LocalRunner().run(["sh", "-c", script])
    message = str(caught.value)
    assert "sh -c" in message and "exited 7" in message
    assert "line6" in message and "line10" in message
    assert "line5" not in message
    assert caught.value.result.exit_code == 7
    assert caught.value.exit_code == errors.CommandFailed.exit_code


def test_ok_codes_accept_listed_nonzero_codes_only() -> None:
    runner = LocalRunner()
    assert runner.run(["sh", "-c", "exit 1"], ok_codes=(0, 1)).exit_code == 1
    with pytest.raises(errors.CommandFailed):
        runner.run(["sh", "-c", "exit 2"], ok_codes=(0, 1))
    with pytest.raises(errors.CommandFailed):
        runner.run(["true"], ok_codes=(1,))


def test_timeout_raises_command_timed_out_with_result() -> None:
    start = time.monotonic()
    with pytest.raises(errors.CommandTimedOut) as caught:
        LocalRunner().run(["sh", "-c", "echo started; exec sleep 30"], timeout=0.5)
    assert time.monotonic() - start < 5
    assert caught.value.result.exit_code == -1
    assert caught.value.result.stdout == "started\n"
    assert caught.value.exit_code == errors.CommandTimedOut.exit_code


def test_timeout_kills_grandchildren_that_hold_the_pipes() -> None:
    start = time.monotonic()
    with pytest.raises(errors.CommandTimedOut):
        LocalRunner().run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert time.monotonic() - start < 5


def test_a_timeout_means_one_thing_seconds_the_runners_own_bound_or_no_limit() -> None:
    assert time_limit(30, 600) == 30
    assert time_limit(None, 600) == 600  # None: the runner's command_timeout
    assert time_limit(NO_LIMIT, 600) is None  # NO_LIMIT: none at all
    for runner in (LocalRunner(), DockerRunner("c", client=object()),
                   SSHRunner(HostSpec("ssh", "peer"), key_file="/k", known_hosts="/kh")):
        assert runner.command_timeout == DEFAULT_TIMEOUT


def test_local_timeout_none_is_the_runners_command_timeout() -> None:
    runner = LocalRunner(command_timeout=0.5)
    for kwargs in ({}, {"timeout": None}):
        start = time.monotonic()
        with pytest.raises(errors.CommandTimedOut, match="after 0.5s"):
            runner.run(["sleep", "30"], **kwargs)
        assert time.monotonic() - start < 5


def test_local_no_limit_outlives_the_command_timeout_and_a_number_is_kept() -> None:
    runner = LocalRunner(command_timeout=0.2)
    slow = ["sh", "-c", "sleep 0.8; echo done"]
    assert runner.run(slow, timeout=NO_LIMIT).stdout == "done\n"
    assert runner.run(slow, timeout=10).stdout == "done\n"


def test_missing_binary_is_exit_127_and_fails_when_checked() -> None:
    result = LocalRunner().run(["/nonexistent/domubk-tool"], check=False)
    assert result.exit_code == 127
    assert "not found" in result.stderr
    with pytest.raises(errors.CommandFailed, match="exited 127"):
        LocalRunner().run(["/nonexistent/domubk-tool"])


def test_input_reaches_stdin_and_environment_is_c_locale_plus_extras() -> None:
    runner = LocalRunner()
    assert runner.run(["cat"], input="héllo\nworld").stdout == "héllo\nworld"
    result = runner.run(["sh", "-c", 'printf "%s|%s" "$LC_ALL" "$EXTRA"'],
                        env={"EXTRA": "a b;c"})
    assert result.stdout == "C|a b;c"


def test_output_is_not_newline_translated() -> None:
    result = LocalRunner().run(["printf", "a\rb\r\nc"])
    assert result.stdout == "a\rb\r\nc"


def test_argv_must_be_a_nonempty_list_of_strings_without_nul() -> None:
    with pytest.raises(TypeError):
        validate_argv("ls -l")
    with pytest.raises(TypeError):
        validate_argv([])
    with pytest.raises(TypeError):
        validate_argv(["ls", 3])
    with pytest.raises(ValueError):
        validate_argv(["ls", "a\0b"])


def test_results_are_frozen_and_not_truth_values() -> None:
    result = LocalRunner().run(["false"], check=False)
    assert "__bool__" not in vars(CommandResult)
    with pytest.raises(AttributeError):
        result.exit_code = 0  # type: ignore[misc]


def test_runners_satisfy_the_protocol() -> None:
    ssh = SSHRunner(HostSpec("ssh", "peer"), key_file="/k", known_hosts="/kh")
    for runner in (LocalRunner(), ssh, DockerRunner("dom0-a", client=object())):
        assert isinstance(runner, Runner)


# --- an in-process SSH server -------------------------------------------------


def _new_key(path: Path) -> paramiko.Ed25519Key:
    private = ed25519.Ed25519PrivateKey.generate()
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
    path.chmod(0o600)
    return paramiko.Ed25519Key(filename=str(path))


class _ExecServer(paramiko.ServerInterface):
    """Accepts one client key for root and runs exec requests with /bin/sh -c, like sshd."""

    def __init__(self, owner: SSHServer) -> None:
        self.owner = owner

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == "root" and key == self.owner.client_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED_OR_UNKNOWN_CHANNEL_TYPE

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.owner.commands.append(command)
        threading.Thread(target=_serve_exec, args=(channel, command), daemon=True).start()
        return True

    def check_channel_forward_agent_request(self, channel: paramiko.Channel) -> bool:
        self.owner.agent_requests += 1
        return False


def _serve_exec(channel: paramiko.Channel, command: bytes) -> None:
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)

    def to_stdin() -> None:
        while chunk := channel.recv(65536):
            try:
                proc.stdin.write(chunk)
                proc.stdin.flush()
            except BrokenPipeError:
                break
        proc.stdin.close()

    def pump(source, send) -> None:
        while chunk := source.read1(65536):
            try:
                send(chunk)
            except OSError:
                break

    threads = [threading.Thread(target=to_stdin, daemon=True),
               threading.Thread(target=pump, args=(proc.stdout, channel.sendall), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, channel.sendall_stderr),
                                daemon=True)]
    for thread in threads:
        thread.start()
    while proc.poll() is None:
        if channel.closed:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.02)
    threads[1].join(5)
    threads[2].join(5)
    if proc.returncode >= 0:
        channel.send_exit_status(proc.returncode)
    # Killed by a signal: like sshd's exit-signal, which paramiko ignores.
    channel.shutdown_write()
    channel.close()


class SSHServer:
    """A paramiko SSH server on 127.0.0.1 in background threads."""

    def __init__(self, tmp: Path) -> None:
        self.host_key = _new_key(tmp / "host_key")
        self.client_key_file = tmp / "client_key"
        self.client_key = _new_key(self.client_key_file)
        self.commands: list[bytes] = []
        self.transports: list[paramiko.Transport] = []
        self.agent_requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.known_hosts = tmp / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line(self.host_key))
        threading.Thread(target=self._accept, daemon=True).start()

    def known_hosts_line(self, key: paramiko.PKey) -> str:
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def spec(self) -> HostSpec:
        return HostSpec("ssh", "127.0.0.1", "root", self.port)

    def runner(self, **overrides: object) -> SSHRunner:
        options: dict[str, object] = {"key_file": self.client_key_file,
                                      "known_hosts": self.known_hosts, "connect_timeout": 5.0}
        options.update(overrides)
        return SSHRunner(self.spec(), **options)  # type: ignore[arg-type]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=_ExecServer(self))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    def close(self) -> None:
        self.sock.close()
        for transport in self.transports:
            transport.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = SSHServer(tmp_path_factory.mktemp("sshd"))
    yield srv
    srv.close()


@pytest.fixture
def ssh(server: SSHServer):
    with server.runner() as runner:
        yield runner


# --- SSHRunner ------------------------------------------------------------------


def test_ssh_runs_a_command_with_exit_code_and_separate_output(ssh: SSHRunner) -> None:
    result = ssh.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.host == "127.0.0.1"
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 3")
    with pytest.raises(errors.CommandFailed, match="exited 3") as caught:
        ssh.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert "boom" in str(caught.value)
    assert ssh.run(["sh", "-c", "exit 3"], ok_codes=(0, 3)).exit_code == 3


def test_ssh_sends_one_quoted_env_command(server: SSHServer, ssh: SSHRunner) -> None:
    result = ssh.run(["sh", "-c", 'printf "%s|%s" "$LC_ALL" "$X"', "arg 1"], env={"X": "$(id)"})
    assert result.stdout == "C|$(id)"
    assert server.commands[-1] == (
        b"env LC_ALL=C 'X=$(id)' sh -c 'printf \"%s|%s\" \"$LC_ALL\" \"$X\"' 'arg 1'")


def test_ssh_input_and_large_output_do_not_deadlock(ssh: SSHRunner) -> None:
    assert ssh.run(["cat"], input="hello\n").stdout == "hello\n"
    blob = "".join(f"{i:08d}\n" for i in range(400_000))  # 3.6 MB, beyond the SSH windows
    start = time.monotonic()
    result = ssh.run(["sh", "-c", "cat; cat /dev/null >&2"], input=blob, timeout=60)
    assert result.stdout == blob
    assert time.monotonic() - start < 30
    both = ssh.run(["sh", "-c", "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2"])
    assert len(both.stdout) == 3_000_000 and len(both.stderr) == 3_000_000


def test_ssh_reuses_one_connection_for_all_commands(server: SSHServer) -> None:
    before = len(server.transports)
    with server.runner() as runner:
        for _ in range(3):
            runner.run(["true"])
    assert len(server.transports) == before + 1


def test_ssh_connects_lazily(server: SSHServer) -> None:
    before = len(server.transports)
    runner = server.runner()
    assert len(server.transports) == before
    runner.close()


def test_ssh_timeout_raises_and_the_runner_stays_usable(ssh: SSHRunner) -> None:
    start = time.monotonic()
    with pytest.raises(errors.CommandTimedOut) as caught:
        ssh.run(["sh", "-c", "echo begun; exec sleep 30"], timeout=0.5)
    assert time.monotonic() - start < 5
    assert caught.value.result.exit_code == -1
    assert caught.value.result.stdout == "begun\n"
    assert ssh.run(["echo", "again"]).stdout == "again\n"


def test_ssh_default_timeout_is_the_runner_command_timeout(server: SSHServer) -> None:
    with server.runner(command_timeout=0.5) as runner, pytest.raises(errors.CommandTimedOut):
        runner.run(["sleep", "30"])


def test_ssh_timeout_none_is_the_runners_command_timeout(server: SSHServer) -> None:
    with server.runner(command_timeout=0.5) as runner:
        start = time.monotonic()
        with pytest.raises(errors.CommandTimedOut, match="after 0.5s"):
            runner.run(["sleep", "30"], timeout=None)
        assert time.monotonic() - start < 5


def test_ssh_no_limit_outlives_the_command_timeout_and_a_number_is_kept(
        server: SSHServer) -> None:
    with server.runner(command_timeout=0.2) as runner:
        slow = ["sh", "-c", "sleep 0.8; echo done"]
        assert runner.run(slow, timeout=NO_LIMIT).stdout == "done\n"
        assert runner.run(slow, timeout=10).stdout == "done\n"


def test_ssh_connection_lost_mid_command_raises_and_reconnects(server: SSHServer) -> None:
    with server.runner() as runner:
        runner.run(["true"])
        transport = server.transports[-1]
        threading.Timer(0.3, transport.close).start()
        with pytest.raises(errors.ConnectionLost) as caught:
            runner.run(["sleep", "30"], timeout=20)
        assert caught.value.host == "127.0.0.1"
        assert "recover" in str(caught.value)
        before = len(server.transports)
        assert runner.run(["echo", "back"]).stdout == "back\n"
        assert len(server.transports) == before + 1


def test_ssh_connection_dropped_between_commands_is_reopened(server: SSHServer) -> None:
    with server.runner() as runner:
        runner.run(["true"])
        server.transports[-1].close()
        before = len(server.transports)
        assert runner.run(["echo", "fresh"]).stdout == "fresh\n"
        assert len(server.transports) == before + 1


def test_ssh_missing_exit_status_is_never_success(ssh: SSHRunner) -> None:
    # Kills the remote login shell itself, so sshd reports a signal, not a status.
    killed = ["sh", "-c", "kill -9 $PPID"]
    assert ssh.run(killed, check=False).exit_code == -1
    with pytest.raises(errors.CommandFailed, match="without an exit status"):
        ssh.run(killed)
    with pytest.raises(errors.CommandFailed):
        ssh.run(killed, ok_codes=(-1, 0))


def test_ssh_unknown_host_key_is_rejected_and_nothing_written(server: SSHServer,
                                                               tmp_path: Path) -> None:
    other = _new_key(tmp_path / "other")
    known = tmp_path / "known_hosts"
    unrelated = f"[127.0.0.1]:{server.port + 1} {other.get_name()} {other.get_base64()}\n"
    known.write_text(unrelated)
    with server.runner(known_hosts=known) as runner:
        with pytest.raises(errors.HostKeyRejected) as caught:
            runner.run(["true"])
    message = str(caught.value)
    assert str(known) in message and "127.0.0.1" in message and "unknown" in message
    assert known.read_text() == unrelated


def test_ssh_changed_host_key_is_rejected(server: SSHServer, tmp_path: Path) -> None:
    impostor = _new_key(tmp_path / "impostor")
    known = tmp_path / "known_hosts"
    known.write_text(server.known_hosts_line(impostor))
    with server.runner(known_hosts=known) as runner:
        with pytest.raises(errors.HostKeyRejected) as caught:
            runner.run(["true"])
    message = str(caught.value)
    assert "changed" in message and str(known) in message and "127.0.0.1" in message
    assert known.read_text() == server.known_hosts_line(impostor)


def test_ssh_missing_known_hosts_file_is_rejected(server: SSHServer, tmp_path: Path) -> None:
    with server.runner(known_hosts=tmp_path / "absent") as runner:
        with pytest.raises(errors.HostKeyRejected, match="absent"):
            runner.run(["true"])
    assert not (tmp_path / "absent").exists()


def test_ssh_system_and_user_known_hosts_are_ignored(server: SSHServer, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "known_hosts").write_text(server.known_hosts_line(server.host_key))
    monkeypatch.setenv("HOME", str(home))
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with server.runner(known_hosts=empty) as runner:
        with pytest.raises(errors.HostKeyRejected):
            runner.run(["true"])


def test_ssh_wrong_key_is_peer_unreachable_and_default_keys_are_not_tried(
        server: SSHServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server's accepted key sits where look_for_keys would find it.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_bytes(server.client_key_file.read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    _new_key(tmp_path / "wrong")
    with server.runner(key_file=tmp_path / "wrong") as runner:
        with pytest.raises(errors.PeerUnreachable) as caught:
            runner.run(["true"])
    assert "127.0.0.1" in str(caught.value)
    assert caught.value.exit_code == errors.PeerUnreachable.exit_code


def test_ssh_never_asks_an_agent(server: SSHServer, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # An agent holding the accepted key: used, it would let a wrong key file in.
    monkeypatch.setattr(paramiko.agent.Agent, "__init__", lambda self: None)
    monkeypatch.setattr(paramiko.agent.Agent, "get_keys", lambda self: (server.client_key,))
    monkeypatch.setattr(paramiko.agent.Agent, "close", lambda self: None)
    _new_key(tmp_path / "wrong")
    with server.runner(key_file=tmp_path / "wrong") as runner:
        with pytest.raises(errors.PeerUnreachable):
            runner.run(["true"])
    with server.runner() as runner:
        runner.run(["true"])
    assert server.agent_requests == 0


def test_ssh_nothing_listening_is_peer_unreachable(server: SSHServer) -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    runner = SSHRunner(HostSpec("ssh", "127.0.0.1", "root", port),
                       key_file=server.client_key_file, known_hosts=server.known_hosts,
                       connect_timeout=2)
    with pytest.raises(errors.PeerUnreachable, match="127.0.0.1"):
        runner.run(["true"])


def test_ssh_missing_key_file_is_peer_unreachable(server: SSHServer, tmp_path: Path) -> None:
    with server.runner(key_file=tmp_path / "no_key") as runner:
        with pytest.raises(errors.PeerUnreachable, match="no_key|127.0.0.1"):
            runner.run(["true"])


_ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=20)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.one_of(_ARG, st.sampled_from(
    ["; touch SENTINEL", "$(touch SENTINEL)", "`touch SENTINEL`", "'; touch SENTINEL; '",
     '"$(touch SENTINEL)"', "\ntouch SENTINEL\n", "-rf", "a b", "*", "~", "$HOME"])),
    max_size=6))
def test_ssh_argv_arrives_literally_and_runs_nothing_else(ssh: SSHRunner, tmp_path: Path,
                                                          args: list[str]) -> None:
    sentinel = tmp_path / "sentinel"
    args = [a.replace("SENTINEL", str(sentinel)) for a in args]
    result = ssh.run([*PY_ARGV, *args])
    assert json.loads(result.stdout) == args
    assert not sentinel.exists()


# --- DockerRunner against a fake exec API ---------------------------------------


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


class FakeExecAPI:
    """The three docker low-level exec calls, serving a script over a socketpair."""

    def __init__(self, frames: list[bytes] | None = None, exit_code: int = 0,
                 echo_stdin: bool = False, hang: bool = False, delay: float = 0.0) -> None:
        self.frames = frames or []
        self.exit_code = exit_code
        self.echo_stdin = echo_stdin
        self.hang = hang
        self.delay = delay
        self.created: list[dict[str, object]] = []
        self.started: list[dict[str, object]] = []
        self.peers: list[socket.socket] = []

    def exec_create(self, container: str, cmd: list[str], **kwargs: object) -> dict:
        self.created.append({"container": container, "cmd": cmd, **kwargs})
        return {"Id": "exec-1"}

    def exec_start(self, exec_id: str, socket: bool = False, detach: bool = False) -> object:
        self.started.append({"exec_id": exec_id, "socket": socket, "detach": detach})
        if detach:
            return b""
        ours, theirs = _socketpair()
        self.peers.append(theirs)
        threading.Thread(target=self._serve, args=(theirs,), daemon=True).start()
        return ours

    def _serve(self, sock: socket.socket) -> None:
        if self.echo_stdin:
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            sock.sendall(_frame(1, data))
        time.sleep(self.delay)
        for frame in self.frames:
            sock.sendall(frame)
        if not self.hang:
            sock.close()

    def exec_inspect(self, exec_id: str) -> dict:
        return {"Running": False, "ExitCode": self.exit_code}


def _socketpair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


class FakeClient:
    def __init__(self, api: FakeExecAPI) -> None:
        self.api = api


def test_docker_demultiplexes_output_and_reports_exit_code() -> None:
    # A frame split across reads, and interleaved streams.
    api = FakeExecAPI([_frame(1, b"out1\n"), _frame(2, b"err\n"), _frame(1, b"out2\n")],
                      exit_code=3)
    runner = DockerRunner("dom0-a", client=FakeClient(api), sessions=False)
    result = runner.run(["lvs", "--reportformat", "json"], check=False, timeout=30,
                        env={"X": "1"})
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out1\nout2\n", "err\n")
    assert result.host == "dom0-a"
    created = api.created[0]
    assert created["container"] == "dom0-a"
    assert created["cmd"] == ["timeout", "-s", "KILL", "30.000s", "lvs", "--reportformat",
                              "json"]
    assert created["environment"] == {"LC_ALL": "C", "X": "1"}
    assert created["stdin"] is False and created["tty"] is False
    with pytest.raises(errors.CommandFailed, match="exited 3"):
        DockerRunner("dom0-a", client=FakeClient(FakeExecAPI(exit_code=3)),
                     sessions=False).run(["false"])


def test_docker_input_goes_to_stdin_which_is_then_closed() -> None:
    api = FakeExecAPI(echo_stdin=True)
    result = DockerRunner("c", client=FakeClient(api), sessions=False).run(["cat"],
                                                                            input="x" * 300_000)
    assert result.stdout == "x" * 300_000
    assert api.created[0]["stdin"] is True


def test_docker_no_limit_means_no_prefix() -> None:
    api = FakeExecAPI([_frame(1, b"ok")])
    DockerRunner("c", client=FakeClient(api), sessions=False).run(["true"], timeout=NO_LIMIT)
    assert api.created[0]["cmd"] == ["true"]


def test_docker_timeout_none_is_the_runners_command_timeout() -> None:
    api = FakeExecAPI()
    runner = DockerRunner("c", client=FakeClient(api), sessions=False)
    runner.run(["true"])
    runner.run(["true"], timeout=None)
    DockerRunner("c", client=FakeClient(api), sessions=False,
                 command_timeout=42).run(["true"], timeout=None)
    runner.run(["true"], timeout=7)
    assert [c["cmd"][:4] for c in api.created] == [
        ["timeout", "-s", "KILL", "600.000s"], ["timeout", "-s", "KILL", "600.000s"],
        ["timeout", "-s", "KILL", "42.000s"], ["timeout", "-s", "KILL", "7.000s"]]


def test_docker_output_that_never_ends_times_out_at_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DockerRunner, "_GRACE", 0.2)
    api = FakeExecAPI([_frame(1, b"partial")], hang=True)
    start = time.monotonic()
    with pytest.raises(errors.CommandTimedOut) as caught:
        DockerRunner("c", client=FakeClient(api), sessions=False).run(["sleep", "60"], timeout=0.3)
    assert time.monotonic() - start < 3
    assert caught.value.result.stdout == "partial"


def test_docker_kill_by_the_timeout_prefix_is_a_timeout() -> None:
    api = FakeExecAPI(exit_code=137, delay=0.3)
    with pytest.raises(errors.CommandTimedOut):
        DockerRunner("c", client=FakeClient(api), sessions=False).run(["sleep", "60"], timeout=0.2)
    quick = FakeExecAPI(exit_code=137)
    with pytest.raises(errors.CommandFailed) as caught:
        DockerRunner("c", client=FakeClient(quick), sessions=False).run(["oom"], timeout=30)
    assert not isinstance(caught.value, errors.CommandTimedOut)


def test_docker_exec_detached_starts_the_argv_as_is_and_returns_its_exec_id() -> None:
    api = FakeExecAPI()
    exec_id = docker_exec_detached(api, "0123abcd", ["domu-backup", "backup", "--domu", "web01"],
                                   env={"X": "1"})
    assert exec_id == "exec-1"
    assert api.created == [{"container": "0123abcd",
                            "cmd": ["domu-backup", "backup", "--domu", "web01"],
                            "environment": {"X": "1"}}]
    assert api.started == [{"exec_id": "exec-1", "socket": False, "detach": True}]
    docker_exec_detached(api, "c", ["true"])
    assert api.created[1]["environment"] == {}
    with pytest.raises(TypeError):
        docker_exec_detached(api, "c", "true")


def test_rehearse_start_in_is_a_detached_docker_exec_in_the_named_container() -> None:
    from toolkit.lab.rehearse import BackgroundRun, start_in

    api = FakeExecAPI()

    class Containers:
        def get(self, name: str) -> FakeContainer:
            assert name == "dom0-a"
            return FakeContainer(api)

    class Lab:
        client = FakeClient(api)

    Lab.client.containers = Containers()  # type: ignore[attr-defined]
    lab = Lab()
    run = start_in(lab, "dom0-a", ["dd", "if=/dev/zero"], {"Y": "2"})  # type: ignore[arg-type]
    assert isinstance(run, BackgroundRun) and run.exec_id == "exec-1" and run.lab is lab
    assert api.created == [{"container": "0123abcd", "cmd": ["dd", "if=/dev/zero"],
                            "environment": {"Y": "2"}}]
    assert [s["detach"] for s in api.started] == [True]


class FakeContainer:
    """The parts of a docker SDK container ``exec_in`` reads."""

    def __init__(self, api: FakeExecAPI) -> None:
        self.client = FakeClient(api)
        self.id = "0123abcd"
        self.name = "dom0-a"


def test_sandbox_exec_in_is_the_lab_runners_one_docker_exec() -> None:
    from toolkit.lab.sandbox import EXEC_TIMEOUT, exec_in

    api = FakeExecAPI([_frame(1, b"out\n"), _frame(2, b"err\n")], exit_code=3)
    res = exec_in(FakeContainer(api), ["lvs", "-o", "lv_name"], check=False, env={"X": "1"})
    assert (res.host, res.argv) == ("docker://dom0-a", ("lvs", "-o", "lv_name"))
    assert (res.exit_code, res.stdout, res.stderr) == (3, "out\n", "err\n")
    created = api.created[0]
    assert created["container"] == "0123abcd"
    assert created["cmd"] == ["timeout", "-s", "KILL", f"{EXEC_TIMEOUT:.3f}s", "lvs", "-o",
                              "lv_name"]
    assert created["environment"] == {"LC_ALL": "C", "X": "1"}
    assert created["stdin"] is False and created["tty"] is False
    with pytest.raises(errors.CommandFailed, match="exited 3"):
        exec_in(FakeContainer(FakeExecAPI(exit_code=3)), ["false"])
    assert exec_in(FakeContainer(FakeExecAPI(exit_code=3)), ["x"], ok_codes=(3,)).exit_code == 3


def test_sandbox_exec_in_timeout_none_is_no_limit_and_a_kill_is_a_timeout() -> None:
    from toolkit.lab.sandbox import exec_in

    api = FakeExecAPI()
    exec_in(FakeContainer(api), ["true"], timeout=None)
    exec_in(FakeContainer(api), ["true"], timeout=NO_LIMIT)
    exec_in(FakeContainer(api), ["true"], timeout=60)
    assert [c["cmd"] for c in api.created] == [
        ["true"], ["true"], ["timeout", "-s", "KILL", "60.000s", "true"]]
    killed = FakeExecAPI(exit_code=137, delay=0.3)
    with pytest.raises(errors.CommandTimedOut) as caught:
        exec_in(FakeContainer(killed), ["sleep", "60"], timeout=0.2, check=False)
    assert caught.value.result.host == "docker://dom0-a"


def test_docker_sdk_is_imported_lazily() -> None:
    code = "import sys, toolkit.runners; print('docker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


# ssh host specs built from their parts (RFC 1123 labels, IPv4, bracketed IPv6, user, port):
# every example is valid and its HostSpec is known before parsing.
_LABEL = st.builds(lambda a, mid, z: a + mid + z, st.sampled_from("aZ09"),
                   st.text("abcXYZ019-", max_size=8), st.sampled_from(["", "a", "Z", "9"])).filter(
    lambda lbl: not lbl.endswith("-"))
_HOST = st.lists(_LABEL, min_size=1, max_size=3).map(".".join).filter(
    lambda h: not all(x.isdigit() for x in h.split(".")))
_USER = st.builds(lambda a, b: a + b, st.sampled_from("aZ_"), st.text("az09_.-", max_size=8))


@st.composite
def host_specs(draw):
    kind = draw(st.sampled_from(["name", "ipv4", "ipv6"]))
    if kind == "name":
        written = draw(_HOST)
        host = written.lower()
    elif kind == "ipv4":
        host = written = ".".join(str(draw(st.integers(0, 255))) for _ in range(4))
    else:
        address = draw(st.ip_addresses(v=6))
        written, host = f"[{address.exploded if draw(st.booleans()) else address}]", str(address)
    user = draw(st.none() | _USER)
    port = draw(st.none() | st.integers(1, 65535))
    spec = "ssh://" + (f"{user}@" if user else "") + written + (f":{port}" if port else "")
    return spec, HostSpec("ssh", host, user or "root", port or 22)


@given(host_specs())
def test_any_ssh_host_spec_gives_its_user_host_and_port(generated: tuple) -> None:
    spec, expected = generated
    assert parse_host_spec(spec) == expected


_SPEC_BREAKS = {
    "password": lambda s: s.replace("ssh://", "ssh://root:secret@", 1),
    "port 0": lambda s: _with_port(s, "0"), "port 65536": lambda s: _with_port(s, "65536"),
    "port with a letter": lambda s: _with_port(s, "22a"),
    "leading zero port": lambda s: _with_port(s, "022"), "empty port": lambda s: _with_port(s, ""),
    "underscore in the host": lambda s: _host(s, "a_b.example"),
    "label ending in a dash": lambda s: _host(s, "a-.example"),
    "label of 64": lambda s: _host(s, "a" * 64), "empty label": lambda s: _host(s, "a..b"),
    "bad ipv4": lambda s: _host(s, "10.0.0.256"), "unclosed ipv6": lambda s: _host(s, "[::1"),
    "zone in ipv6": lambda s: _host(s, "[fe80::1%eth0]"),
    "user starting with a digit": lambda s: "ssh://1x@" + s.rpartition("@")[2].removeprefix(
        "ssh://"),
    "path": lambda s: s + "/x", "scheme": lambda s: s.replace("ssh://", "sftp://", 1),
}


def _split(spec: str) -> tuple[str, str, str]:
    """("user@" or "", host as written, port or "") of a generated spec."""
    user, at, hostport = spec.removeprefix("ssh://").rpartition("@")
    if hostport.endswith("]") or ":" not in hostport:
        return user + at, hostport, ""
    host, _colon, port = hostport.rpartition(":")
    return user + at, host, port


def _with_port(spec: str, port: str) -> str:
    user, host, _port = _split(spec)
    return f"ssh://{user}{host}:{port}"


def _host(spec: str, host: str) -> str:
    user, _host, port = _split(spec)
    return f"ssh://{user}{host}" + (f":{port}" if port else "")


@pytest.mark.parametrize("how", sorted(_SPEC_BREAKS))
@settings(max_examples=10)
@given(generated=host_specs())
def test_an_ssh_host_spec_with_one_part_wrong_is_refused(how: str, generated: tuple) -> None:
    spec, _expected = generated
    with pytest.raises(errors.UsageError, match="host spec"):
        parse_host_spec(_SPEC_BREAKS[how](spec))


def test_parse_host_spec_reads_user_host_and_port() -> None:
    assert parse_host_spec("ssh://backup@peer:2222") == HostSpec("ssh", "peer", "backup", 2222)
    assert parse_host_spec("ssh://peer") == HostSpec("ssh", "peer", "root", 22)
    assert parse_host_spec("docker://dom0-a") == HostSpec("docker", "dom0-a")
    with pytest.raises(errors.UsageError):
        parse_host_spec("ssh://root@[peer:22")


# --- runner_for -----------------------------------------------------------------


def test_runner_for_picks_the_transport_from_the_spec(tmp_path: Path) -> None:
    assert isinstance(runner_for("local://"), LocalRunner)
    docker = runner_for("docker://dom0-b")
    assert isinstance(docker, DockerRunner) and docker.container == "dom0-b"
    settings_ = SSHSettings(key=tmp_path / "k", known_hosts=tmp_path / "kh",
                            connect_timeout=3, command_timeout=30, keepalive=0)
    ssh = runner_for("ssh://backup@peer:2222", settings_)
    assert isinstance(ssh, SSHRunner)
    assert (ssh.spec, ssh.key_file, ssh.known_hosts) == (
        HostSpec("ssh", "peer", "backup", 2222), tmp_path / "k", tmp_path / "kh")
    assert (ssh.connect_timeout, ssh.command_timeout, ssh.keepalive) == (3, 30, 0)
    same = runner_for(HostSpec("ssh", "peer"), ssh_settings=settings_)
    assert isinstance(same, SSHRunner) and same.known_hosts == tmp_path / "kh"


def test_runner_for_defaults_to_the_tool_key_and_known_hosts() -> None:
    ssh = runner_for("ssh://root@peer:22")
    assert isinstance(ssh, SSHRunner)
    assert ssh.key_file == Path("/etc/domu-backup/id_ed25519")
    assert ssh.known_hosts == Path("/etc/domu-backup/known_hosts")


def test_runner_for_rejects_bad_specs() -> None:
    with pytest.raises(errors.UsageError):
        runner_for("ftp://peer")
    with pytest.raises(errors.UsageError):
        SSHRunner(HostSpec("docker", "x"), key_file="/k", known_hosts="/kh")



def test_the_ssh_transport_is_imported_only_when_a_host_needs_it() -> None:
    """Commands that never reach a peer (status of local history, check-config, plan from
    recorded facts) do not pay for paramiko's import; an ssh:// host brings it in."""
    code = ("import sys, toolkit.app, toolkit.commands, toolkit.recover\n"
            "assert 'paramiko' not in sys.modules, 'imported early'\n"
            "from toolkit.hosts import runner_for\n"
            "runner_for('ssh://root@peer:22')\n"
            "assert 'paramiko' in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
