"""One ``run`` primitive per transport.

Every command is an argv list. Only the SSH transport ever turns argv into a
string, with ``shlex.join``, at the boundary. Results are frozen records;
errors carry the result.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

import paramiko

from .errors import (
    CommandFailed,
    CommandTimedOut,
    ConnectionLost,
    HostKeyRejected,
    PeerUnreachable,
    UsageError,
)

if TYPE_CHECKING:
    from .config import SSHSettings

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class CommandResult:
    host: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    # Deliberately no __bool__: a result is not a truth value; test exit_code.


@runtime_checkable
class Runner(Protocol):
    """Runs argv on one host."""

    host: str

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        input: str | None = None,
        ok_codes: Iterable[int] = (0,),
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...

    def close(self) -> None:
        """Let go of the host: the SSH connection, if any (a local runner holds nothing)."""
        ...


def _checked(result: CommandResult, check: bool, ok_codes: Iterable[int]) -> CommandResult:
    if check and result.exit_code not in tuple(ok_codes):
        raise CommandFailed(result)
    return result


def validate_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """Reject anything that is not a non-empty sequence of strings."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("argv must be a sequence of strings, not a string")
    out = tuple(argv)
    if not out or not all(isinstance(a, str) for a in out):
        raise TypeError(f"argv must be a non-empty sequence of str: {argv!r}")
    if any("\0" in a for a in out):
        raise ValueError("argv items cannot contain NUL bytes")
    return out


class LocalRunner:
    """Runs commands on this host with subprocess: argv, never a shell."""

    def __init__(self, host: str = "local") -> None:
        self.host = host

    def close(self) -> None:
        """Nothing to let go of: every command was its own process."""

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
        input: str | None = None,
        ok_codes: Iterable[int] = (0,),
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        args = validate_argv(argv)
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        start = time.monotonic()
        try:
            # A session of its own, so a timeout can kill the whole process
            # group: killing only the child leaves grandchildren holding the
            # pipes open, and reading them to EOF would never return.
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=full_env,
                shell=False,
                start_new_session=True,
            )
        except FileNotFoundError:
            result = CommandResult(self.host, args, 127, "", f"{args[0]}: command not found",
                                   time.monotonic() - start)
            return _checked(result, check, ok_codes)
        except PermissionError:
            result = CommandResult(self.host, args, 126, "", f"{args[0]}: permission denied",
                                   time.monotonic() - start)
            return _checked(result, check, ok_codes)
        # Bytes, decoded here: text mode would turn a "\r" in the output
        # (a file name, a progress line) into "\n".
        data = input.encode("utf-8", "surrogateescape") if input is not None else None
        try:
            stdout, stderr = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = _drain_after_kill(proc)
            result = CommandResult(self.host, args, -1, _text(stdout), _text(stderr),
                                   time.monotonic() - start)
            raise CommandTimedOut(result, f"command timed out after {timeout}s: "
                                          f"{shlex.join(args)}") from None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        result = CommandResult(self.host, args, proc.returncode, _text(stdout), _text(stderr),
                               time.monotonic() - start)
        return _checked(result, check, ok_codes)

    def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        *,
        env: Mapping[str, str] | None = None,
        on_start: Callable[[subprocess.Popen], None] | None = None,
    ) -> CommandResult:
        """Run argv, calling ``on_line`` for each stdout line or carriage-return update.

        Used for rsync's ``--info=progress2``, which rewrites one line with \\r.
        The result keeps the last 200 lines of stdout and of stderr only, so memory
        does not grow with the size of the transfer. ``on_start`` receives the
        process (a watcher may terminate it). If this call is interrupted (a
        signal raised as an exception), the child is terminated, never orphaned.
        """
        args = validate_argv(argv)
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        start = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=full_env, shell=False)
        err_tail: list[str] = []

        def drain_stderr() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                err_tail.append(raw.decode("utf-8", "surrogateescape").rstrip("\n"))
                del err_tail[:-200]

        reader = threading.Thread(target=drain_stderr, daemon=True)
        reader.start()
        tail: list[str] = []
        buf = b""
        interrupted = False
        assert proc.stdout is not None
        stdout = cast(io.BufferedReader, proc.stdout)  # bufsize=-1: a buffered reader
        try:
            if on_start is not None:
                on_start(proc)
            while True:
                chunk = stdout.read1(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    idx = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0),
                              default=-1)
                    if idx < 0:
                        break
                    line, buf = buf[:idx], buf[idx + 1:]
                    text = line.decode("utf-8", "surrogateescape")
                    if text.strip():
                        on_line(text)
                        tail.append(text)
                        del tail[:-200]
            if buf.strip():
                text = buf.decode("utf-8", "surrogateescape")
                on_line(text)
                tail.append(text)
            code = proc.wait()
        except BaseException:
            interrupted = True
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        finally:
            # A grandchild may keep stderr open after an interruption: do not wait long.
            reader.join(timeout=2 if interrupted else 10)
        return CommandResult(self.host, args, code, "\n".join(tail[-200:]),
                             "\n".join(err_tail), time.monotonic() - start)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _drain_after_kill(proc: subprocess.Popen) -> tuple[bytes, bytes]:
    try:
        return proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # Something left the process group (setsid) and still holds a pipe.
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return b"", b""


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "surrogateescape")
    return data


@dataclass(frozen=True)
class HostSpec:
    """A parsed host spec: ``local://``, ``ssh://user@host:port``, ``docker://name``.

    An ssh host is a lower-case RFC 1123 host name, an IPv4 address, or an IPv6
    address (compressed, without brackets: what ssh and paramiko connect to).
    """

    scheme: str
    host: str = ""
    user: str = "root"
    port: int = 22

    @property
    def address(self) -> str:
        return self.host

    @property
    def rsync_address(self) -> str:
        """``user@host`` as rsync must read it: an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}"

    def __str__(self) -> str:
        if self.scheme == "local":
            return "local://"
        if self.scheme == "docker":
            return f"docker://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"


_SPEC_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_SPEC_PORT = re.compile(r"[1-9][0-9]{0,4}")
_DOCKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _spec_shown(spec: str) -> str:
    """The spec for an error message, a password in it replaced by ***."""
    scheme, sep, rest = spec.partition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hostport}"
    return spec


def parse_host_spec(spec: str) -> HostSpec:
    """Parse a testinfra-style host spec; raise UsageError naming what is wrong.

    ssh: ``ssh://[user@]host[:port]`` with a user name like ``root`` or
    ``backup``, a host name (RFC 1123 labels), an IPv4 address or an IPv6
    address in brackets, and a port 1-65535 (22 when left out). No password
    (the tool logs in with its own key), no path, query or fragment.
    """
    import ipaddress

    from .rsync import is_host_name

    if not isinstance(spec, str) or "://" not in spec:
        raise UsageError(f"host spec {spec!r} must look like local://, ssh://user@host:port "
                         "or docker://name")
    shown = repr(_spec_shown(spec))
    scheme, _sep, rest = spec.partition("://")
    if scheme == "local":
        if rest not in ("", "localhost"):
            raise UsageError(f"host spec {shown}: local:// takes no host")
        return HostSpec("local", "localhost")
    if scheme == "docker":
        if not _DOCKER_NAME.fullmatch(rest):
            raise UsageError(f"host spec {shown}: docker:// needs a container name "
                             "(letters, digits and _ . -)")
        return HostSpec("docker", rest)
    if scheme != "ssh":
        raise UsageError(f"host spec {shown}: unknown scheme {scheme!r} "
                         "(expected local, ssh or docker)")
    userinfo, at, hostport = rest.rpartition("@")
    if at and ":" in userinfo:
        raise UsageError(f"host spec {shown}: a password in the host spec is refused "
                         "(the tool logs in with its own key, ssh.key)")
    if at and not _SPEC_USER.fullmatch(userinfo):
        raise UsageError(f"host spec {shown}: bad user name {userinfo!r} (letters, digits "
                         "and _ . -, starting with a letter or _)")
    user = userinfo if at else "root"
    if hostport.startswith("["):
        inner, bracket, after = hostport[1:].partition("]")
        try:
            if not bracket or "%" in inner:
                raise ValueError(inner)
            host = ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise UsageError(f"host spec {shown}: expected an IPv6 address in brackets "
                             "like [2001:db8::2]") from None
    else:
        name, colon, port_text = hostport.partition(":")
        after = colon + port_text
        host = name.lower()
        if not name or not is_host_name(host):
            raise UsageError(f"host spec {shown}: {name!r} is not a host name (RFC 1123: "
                             "letters, digits and inner -, dot-separated), an IPv4 address "
                             "or an IPv6 address in brackets")
    port = 22
    if after:
        number = after[1:]
        if after[0] != ":" or not _SPEC_PORT.fullmatch(number) or int(number) > 65535:
            raise UsageError(f"host spec {shown}: bad port {after[1:]!r} after the host "
                             "(expected 1-65535)")
        port = int(number)
    return HostSpec("ssh", host, user, port)


# --- SSH -------------------------------------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POLL = 0.05  # seconds between checks of a remote command's channel


def remote_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The one shell string sent to the peer for argv: ``env LC_ALL=C ... argv`` quoted once.

    The remote login shell must be a POSIX shell (sshd runs ``$SHELL -c``).
    """
    args = validate_argv(argv)
    # env(1) takes every leading NAME=VALUE word as an assignment, so a
    # program name containing "=" would silently become one.
    if "=" in args[0]:
        raise ValueError(f"program name cannot contain '=': {args[0]!r}")
    assignments = ["LC_ALL=C"]
    for name, value in (env or {}).items():
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"bad environment variable name: {name!r}")
        if "\0" in value:
            raise ValueError(f"environment value for {name} contains a NUL byte")
        assignments.append(f"{name}={value}")
    return shlex.join(["env", *assignments, *args])


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that says which known_hosts file lacked the key."""

    def __init__(self, host: str, known_hosts: Path) -> None:
        self._host = host
        self._known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key) -> None:
        raise HostKeyRejected(
            f"unknown host key for {hostname} ({key.get_name()} "
            f"{_fingerprint(key)}): not in {self._known_hosts}; refusing to connect "
            "(pin the peer's key in that file)",
            host=self._host,
        )


def _fingerprint(key: paramiko.PKey) -> str:
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _quiet_paramiko() -> None:
    """paramiko logs a failed handshake ("Exception (client): ...") with a traceback of its
    own on stderr; the PeerUnreachable raised for it already says it in one line."""
    logger = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())
    logger.propagate = False


def _connect_reason(exc: BaseException) -> str:
    """Why a connection failed, in one line (paramiko's "[Errno None] Unable to connect to
    port 22 on ..." becomes each address's own reason)."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) and exc.errors:
        return "; ".join(f"{addr[0]}: {err.strerror or err}"
                         for addr, err in exc.errors.items())
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class SSHRunner:
    """Runs argv on a peer over one lazily opened paramiko connection, strict host keys."""

    def __init__(
        self,
        spec: HostSpec,
        *,
        key_file: str | os.PathLike[str],
        known_hosts: str | os.PathLike[str],
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        keepalive: int = 15,
    ) -> None:
        if spec.scheme != "ssh":
            raise UsageError(f"SSHRunner needs an ssh:// host spec, got {spec}")
        self.spec = spec
        self.host = spec.host
        self.key_file = Path(key_file)
        self.known_hosts = Path(known_hosts)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.keepalive = keepalive
        self._client: paramiko.SSHClient | None = None
        # Commands may run side by side over the one connection (preflight's peer reads);
        # only one of them (re)connects.
        self._connecting = threading.Lock()

    def __enter__(self) -> SSHRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the next ``run`` opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _connect(self) -> paramiko.SSHClient:
        with self._connecting:
            return self._connect_locked()

    def _connect_locked(self) -> paramiko.SSHClient:
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self.close()
        _quiet_paramiko()
        client = paramiko.SSHClient()
        try:
            # Only the tool's own known_hosts, never the system's or the
            # user's; nothing is ever written back (RejectPolicy never adds).
            client.load_host_keys(str(self.known_hosts))
        except OSError as exc:
            raise HostKeyRejected(
                f"cannot read known_hosts {self.known_hosts}: {exc.strerror or exc}; "
                f"no host key can be trusted for {self.spec.host}",
                host=self.host,
            ) from None
        client.set_missing_host_key_policy(_RejectUnknownHost(self.host, self.known_hosts))
        try:
            client.connect(
                self.spec.host,
                port=self.spec.port,
                username=self.spec.user,
                key_filename=str(self.key_file),
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                allow_agent=False,
                look_for_keys=False,
            )
        except HostKeyRejected:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyRejected(
                f"host key for {exc.hostname} changed: server offers "
                f"{exc.key.get_name()} {_fingerprint(exc.key)}, {self.known_hosts} has "
                f"{_fingerprint(exc.expected_key)}; refusing to connect "
                "(possible man-in-the-middle, or the peer was reinstalled)",
                host=self.host,
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise PeerUnreachable(
                f"authentication as {self.spec.user}@{self.spec.host}:{self.spec.port} "
                f"with key {self.key_file} failed: {exc}",
                host=self.host,
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise PeerUnreachable(
                f"cannot connect to {self.spec.user}@{self.spec.host}:{self.spec.port}: "
                f"{_connect_reason(exc)}",
                host=self.host,
            ) from None
        transport = client.get_transport()
        if transport is not None and self.keepalive > 0:
            transport.set_keepalive(int(self.keepalive))
        self._client = client
        return client

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
        ok_codes: Iterable[int] = (0,),
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run argv on the peer. ``timeout=None`` means the runner's command_timeout:
        a remote command is never unbounded."""
        args = validate_argv(argv)
        command = remote_command(args, env)
        limit = self.command_timeout if timeout is None else timeout
        start = time.monotonic()
        channel = self._open_channel()
        try:
            channel.exec_command(command.encode("utf-8", "surrogateescape"))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            channel.close()
            self.close()
            raise ConnectionLost(f"cannot start `{shlex.join(args)}`: {exc}; "
                                 "whether it ran on the peer is unknown", host=self.host) from None
        data = input.encode("utf-8", "surrogateescape") if input is not None else b""
        try:
            code, out, err = self._pump(channel, data, start + limit)
        except _Deadline as hit:
            # Closing the channel makes sshd hang up on the command; a remote
            # process that ignores SIGHUP and never writes may outlive it.
            channel.close()
            result = CommandResult(self.host, args, -1, _decode(hit.out), _decode(hit.err),
                                   time.monotonic() - start)
            raise CommandTimedOut(result, f"command timed out after {limit}s: "
                                          f"{shlex.join(args)}") from None
        except _Dropped as lost:
            self.close()
            raise ConnectionLost(
                f"connection lost during `{shlex.join(args)}`: {lost.reason}; "
                "the command's effect on the peer is unknown, run recover",
                host=self.host,
            ) from None
        finally:
            channel.close()
        result = CommandResult(self.host, args, code, _decode(out), _decode(err),
                               time.monotonic() - start)
        if code == -1:
            # paramiko's -1 means no exit status arrived (killed by a signal,
            # or the session vanished): never a success, whatever ok_codes say.
            if check:
                raise CommandFailed(result, f"command `{shlex.join(args)}` ended without "
                                            "an exit status (killed by a signal?)")
            return result
        return _checked(result, check, ok_codes)

    def _open_channel(self) -> paramiko.Channel:
        """A session channel; a connection found dead before anything ran is reopened once."""
        for attempt in (1, 2):
            transport = self._connect().get_transport()
            try:
                if transport is None:
                    raise paramiko.SSHException("no transport")
                return transport.open_session(timeout=self.connect_timeout)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                self.close()
                if attempt == 2:
                    raise ConnectionLost(f"cannot open an SSH session: {exc}",
                                         host=self.host) from None
        raise AssertionError("unreachable")

    def _pump(self, channel: paramiko.Channel, data: bytes,
              deadline: float) -> tuple[int, bytes, bytes]:
        """Feed stdin and drain stdout and stderr together until the command ends."""
        out: list[bytes] = []
        err: list[bytes] = []
        pending = memoryview(data)
        if not pending:
            channel.shutdown_write()
        transport = channel.get_transport()
        while True:
            busy = False
            if pending and channel.send_ready():
                sent = channel.send(pending[:32768])
                pending = pending[sent:]
                if not pending:
                    channel.shutdown_write()
                busy = True
            while channel.recv_ready():
                out.append(channel.recv(65536))
                busy = True
            while channel.recv_stderr_ready():
                err.append(channel.recv_stderr(65536))
                busy = True
            if channel.exit_status_ready() and channel.eof_received and not busy:
                if not channel.recv_ready() and not channel.recv_stderr_ready():
                    return channel.recv_exit_status(), b"".join(out), b"".join(err)
            if channel.closed and not channel.recv_ready() and not channel.recv_stderr_ready():
                if transport is None or not transport.is_active():
                    raise _Dropped("the SSH transport closed")
                return channel.recv_exit_status(), b"".join(out), b"".join(err)
            if transport is None or not transport.is_active():
                raise _Dropped("the SSH transport closed")
            if time.monotonic() >= deadline:
                raise _Deadline(b"".join(out), b"".join(err))
            if not busy:
                if channel.eof_received:
                    # After EOF the channel's fileno stays readable; select
                    # would spin while the exit status is still on its way:
                    # wait for the status itself (set by paramiko when it comes).
                    channel.status_event.wait(_POLL)
                else:
                    select.select([channel], [], [], _POLL)


class _Deadline(Exception):
    def __init__(self, out: bytes, err: bytes) -> None:
        self.out = out
        self.err = err


class _Dropped(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


# --- Choosing a runner -----------------------------------------------------


def runner_for(
    spec: str | HostSpec,
    ssh: SSHSettings | None = None,
    *,
    ssh_settings: SSHSettings | None = None,
) -> Runner:
    """The runner for a host spec; ssh:// uses the given SSH settings (or their defaults)."""
    host = parse_host_spec(spec) if isinstance(spec, str) else spec
    if host.scheme == "local":
        return LocalRunner()
    if host.scheme == "docker":
        try:
            from .lab.docker_runner import DockerRunner
        except ImportError:
            raise UsageError(f"{host}: docker:// hosts are the rehearsal lab's, which runs "
                             "from a checkout; this installation has no lab") from None
        return DockerRunner(host.host)
    settings = ssh or ssh_settings
    if settings is None:
        from .config import SSHSettings

        settings = SSHSettings()
    return SSHRunner(
        host,
        key_file=settings.key,
        known_hosts=settings.known_hosts,
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        keepalive=settings.keepalive,
    )
