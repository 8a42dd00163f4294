"""The SSH transport (paramiko): argv quoted once at the boundary, run on the peer."""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import os
import re
import select
import shlex
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import paramiko

from ..errors import (
    CommandFailed,
    CommandTimedOut,
    ConnectionLost,
    HostKeyRejected,
    PeerUnreachable,
    UsageError,
)
from .base import DEFAULT_TIMEOUT, CommandResult, _checked, time_limit, validate_argv
from .spec import HostSpec

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
        command_timeout: float = DEFAULT_TIMEOUT,
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
        """Run argv on the peer. ``timeout`` as the ``Runner`` protocol says: seconds, None
        for the runner's ``command_timeout`` (from the config), NO_LIMIT for none."""
        args = validate_argv(argv)
        command = remote_command(args, env)
        limit = time_limit(timeout, self.command_timeout)
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
            code, out, err = self._pump(channel, data,
                                        math.inf if limit is None else start + limit)
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
