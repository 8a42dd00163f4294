"""The lab's runner: argv run in a fake Dom0 container through the docker SDK's exec API.

Only the rehearsal lab (a checkout) uses it; the installed product reaches hosts locally
or over SSH (``toolkit/runners.py``). By default a command goes to a long-lived exec
session in the container (``exec_session``), which saves the half second a docker exec
costs under emulation; ``sessions=False`` (or ``DOMUBK_LAB_EXEC=direct`` in the
environment) makes one docker exec per command.
"""

from __future__ import annotations

import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..errors import CommandFailed, CommandTimedOut
from ..runners import (
    DEFAULT_TIMEOUT,
    NO_LIMIT,
    CommandResult,
    _checked,
    time_limit,
    validate_argv,
)
from .exec_session import FRAME_HEADER, POOL, Session, SessionLost

_MAKE_LOCK = threading.Lock()  # the SDK's HTTP session is shared: one session start at a time


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


_KILLED_BY_TIMEOUT = 137  # coreutils `timeout -s KILL` exits 128 + 9
_EXEC_GRACE = 5.0  # seconds the client reads past a command's bound before it stops


class DockerRunner:
    """Runs argv in a container through the docker SDK's exec API.

    Docker's exec has no timeout and cannot kill an exec'd process, so a
    timed command runs as ``timeout -s KILL N argv`` (coreutils, present in
    the Debian-based containers) to kill it inside the container, and the
    client also stops reading at a deadline a few seconds later in case
    something still holds the output open. A command that names no ``timeout``
    may run ``command_timeout`` seconds; ``timeout=NO_LIMIT`` runs it unbounded.
    """

    _GRACE = _EXEC_GRACE

    def __init__(self, container: str, client: object | None = None, *,
                 sessions: bool | None = None,
                 command_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.container = container
        self.host = container
        self._client = client
        if sessions is None:
            sessions = os.environ.get("DOMUBK_LAB_EXEC", "session") != "direct"
        self.sessions = sessions
        self.command_timeout = command_timeout

    @property
    def client(self):  # docker.DockerClient, imported lazily
        """The docker SDK client, made from the environment on first use."""
        if self._client is None:
            import docker  # a Dom0 in production never needs the SDK

            self._client = docker.from_env()
        return self._client

    def close(self) -> None:
        """Close the SDK client if this runner made it."""
        client, self._client = self._client, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def __enter__(self) -> DockerRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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
        """Run argv in the container, with LC_ALL=C and ``env`` added.

        ``timeout`` as the ``Runner`` protocol says: seconds, None for ``command_timeout``,
        NO_LIMIT for none. Through a pooled exec session unless ``sessions`` is off (then
        one docker exec each, ``docker_exec``); output cut short, or a kill by the
        ``timeout -s KILL`` prefix, is CommandTimedOut.
        """
        args = validate_argv(argv)
        limit = time_limit(timeout, self.command_timeout)
        if not self.sessions:
            return docker_exec(self.client.api, self.container, args, host=self.host,
                               check=check, timeout=limit, input=input, ok_codes=ok_codes,
                               env=env, grace=self._GRACE)
        return self._run_in_session(args, _bounded(args, limit), _environment(env),
                                    check=check, timeout=limit, input=input,
                                    ok_codes=ok_codes)

    def _run_in_session(self, args: tuple[str, ...], command: list[str],
                        environment: dict[str, str], *, check: bool, timeout: float | None,
                        input: str | None, ok_codes: Iterable[int]) -> CommandResult:
        client = self.client

        def make() -> Session:
            with _MAKE_LOCK:
                return Session(client.api, self.container, {"LC_ALL": "C"})

        start = time.monotonic()
        session = POOL.take(self.container, make)
        deadline = None if timeout is None else start + timeout + self._GRACE
        data = input.encode("utf-8", "surrogateescape") if input is not None else None
        try:
            code, out, err = session.call(command, environment, data, deadline)
        except TimeoutError:
            session.close()
            return _exec_result(self.host, args, None, b"", b"", start, timeout,
                                complete=False, check=check, ok_codes=ok_codes)
        except SessionLost as exc:
            session.close()
            return _exec_result(self.host, args, None, b"", str(exc).encode(), start, timeout,
                                complete=True, check=check, ok_codes=ok_codes, lost=str(exc))
        POOL.give_back(session)
        return _exec_result(self.host, args, code, out, err, start, timeout, complete=True,
                            check=check, ok_codes=ok_codes)


def docker_exec(api, container: str, argv: Sequence[str], *, host: str, check: bool = True,
                timeout: float | None, input: str | None = None,
                ok_codes: Iterable[int] = (0,), env: Mapping[str, str] | None = None,
                grace: float = _EXEC_GRACE) -> CommandResult:
    """Run argv in a container with one docker exec (``api``: the SDK's low-level client),
    with LC_ALL=C and ``env`` added; the lab's one way to do it.

    ``timeout``: the seconds the command may run, None (or NO_LIMIT) for no limit: already
    resolved, this is no ``Runner``. A bounded command runs as ``timeout -s KILL N argv``
    and the client stops reading ``grace`` seconds after the bound; output cut short, or a
    kill by that prefix, is CommandTimedOut. The result is named ``host``.
    """
    args = validate_argv(argv)
    if timeout == NO_LIMIT:
        timeout = None
    start = time.monotonic()
    exec_id = api.exec_create(container, _bounded(args, timeout), stdout=True, stderr=True,
                              stdin=input is not None, tty=False,
                              environment=_environment(env))["Id"]
    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)
    deadline = None if timeout is None else start + timeout + grace
    data = input.encode("utf-8", "surrogateescape") if input is not None else None
    try:
        out, err, complete = _read_exec_stream(
            raw, data, deadline, lambda: bool(api.exec_inspect(exec_id).get("Running")))
    finally:
        raw.close()
        if raw is not sock:
            sock.close()
    code = _exec_exit_code(api, exec_id, time.monotonic() + (10.0 if complete else 0.0))
    return _exec_result(host, args, code, out, err, start, timeout, complete=complete,
                        check=check, ok_codes=ok_codes)


def docker_exec_detached(api, container: str, argv: Sequence[str], *,
                         env: Mapping[str, str] | None = None) -> str:
    """Start argv in a container with one detached docker exec and leave it running; its
    exec id, for ``api.exec_inspect`` (``Running``, ``ExitCode``).

    Unlike ``docker_exec`` nothing is added to ``env`` (no LC_ALL=C) and there is no
    timeout prefix: the command runs as a background job would, with the container's
    default user and working directory, its output left unread.
    """
    args = validate_argv(argv)
    exec_id = api.exec_create(container, list(args), environment=dict(env or {}))["Id"]
    api.exec_start(exec_id, detach=True)
    return exec_id


def _bounded(args: tuple[str, ...], timeout: float | None) -> list[str]:
    """argv as run in the container: under coreutils' ``timeout -s KILL`` when bounded."""
    if timeout is None:
        return list(args)
    return ["timeout", "-s", "KILL", f"{timeout:.3f}s", *args]


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    return {"LC_ALL": "C", **(env or {})}


def _exec_result(host: str, args: tuple[str, ...], code: int | None, out: bytes, err: bytes,
                 start: float, timeout: float | None, *, complete: bool, check: bool,
                 ok_codes: Iterable[int], lost: str = "") -> CommandResult:
    """The command's result, the same way however it ran: output cut short or a kill
    by the timeout prefix is a timeout, no exit code is never a success."""
    duration = time.monotonic() - start
    result = CommandResult(host, args, -1 if code is None else code,
                           _decode(out), _decode(err), duration)
    if not complete or (timeout is not None and code == _KILLED_BY_TIMEOUT
                        and duration >= timeout):
        raise CommandTimedOut(result, f"command timed out after {timeout}s: "
                                      f"{shlex.join(args)}")
    if code is None:
        if check:
            raise CommandFailed(result, f"command `{shlex.join(args)}` ended without "
                                        "an exit code" + (f" ({lost})" if lost else ""))
        return result
    return _checked(result, check, ok_codes)


def close_sessions() -> None:
    """Close the idle exec sessions of every container (the sandbox goes or comes anew)."""
    POOL.close_all()


def _read_exec_stream(sock: socket.socket, data: bytes | None, deadline: float | None,
                      running: Callable[[], bool] | None = None) -> tuple[bytes, bytes, bool]:
    """Demultiplex a non-tty exec stream until EOF or the deadline; False if cut short.

    The engine sometimes never closes the stream of a finished exec (seen with
    the lab VM's engine behind QEMU's user network): after a quiet second the
    exec is inspected, and once it has ended and stays quiet the output is done.
    """
    if data is not None:
        # A writer thread, so a large input and a large output cannot wait on
        # each other; shutting down our side closes the command's stdin.
        def feed() -> None:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        threading.Thread(target=feed, daemon=True).start()
    streams: dict[int, list[bytes]] = {1: [], 2: []}
    buf = b""
    quiet_after_exit = 0
    while True:
        slice_ = 1.0 if running is not None else None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return b"".join(streams[1]), b"".join(streams[2]), False
            slice_ = min(slice_, left) if slice_ is not None else left
        sock.settimeout(slice_)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if running is not None and not running():
                quiet_after_exit += 1
                if quiet_after_exit >= 2:
                    break
            continue
        if not chunk:
            break
        buf += chunk
        while len(buf) >= FRAME_HEADER.size:
            stream, size = FRAME_HEADER.unpack_from(buf)
            if len(buf) < FRAME_HEADER.size + size:
                break
            payload = buf[FRAME_HEADER.size:FRAME_HEADER.size + size]
            buf = buf[FRAME_HEADER.size + size:]
            streams.setdefault(stream, []).append(payload)
    return b"".join(streams[1]), b"".join(streams[2]), True


def _exec_exit_code(api, exec_id: str, deadline: float) -> int | None:
    """The exec's exit code; it can lag the end of its output by a moment."""
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
