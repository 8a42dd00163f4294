"""One ``run`` primitive per transport.

Every command is an argv list. Only the SSH transport ever turns argv into a
string, with ``shlex.join``, at the boundary. Results are frozen records;
errors carry the result.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from .errors import CommandFailed, CommandTimedOut, UsageError

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
            proc = subprocess.run(
                args,
                input=input,
                capture_output=True,
                text=True,
                errors="surrogateescape",
                timeout=timeout,
                env=full_env,
                shell=False,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            result = CommandResult(
                self.host, args, -1, _text(exc.stdout), _text(exc.stderr),
                time.monotonic() - start,
            )
            raise CommandTimedOut(result, f"command timed out after {timeout}s: {args[0]}") from None
        except FileNotFoundError:
            result = CommandResult(self.host, args, 127, "", f"{args[0]}: command not found",
                                   time.monotonic() - start)
            return _checked(result, check, ok_codes)
        result = CommandResult(self.host, args, proc.returncode, proc.stdout, proc.stderr,
                               time.monotonic() - start)
        return _checked(result, check, ok_codes)

    def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        *,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run argv, calling ``on_line`` for each stdout line or carriage-return update.

        Used for rsync's ``--info=progress2``, which rewrites one line with \\r.
        The result's stdout holds the last 200 lines only, so memory does not
        grow with the size of the transfer.
        """
        args = validate_argv(argv)
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        start = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=full_env, shell=False)
        tail: list[str] = []
        buf = b""
        assert proc.stdout is not None
        while True:
            chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(4096)
            if not chunk:
                break
            buf += chunk
            while True:
                idx = min((i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0), default=-1)
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
        stderr = proc.stderr.read().decode("utf-8", "surrogateescape") if proc.stderr else ""
        code = proc.wait()
        return CommandResult(self.host, args, code, "\n".join(tail[-200:]), stderr,
                             time.monotonic() - start)


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "surrogateescape")
    return data


@dataclass(frozen=True)
class HostSpec:
    """A parsed host spec: ``local://``, ``ssh://user@host:port``, ``docker://name``."""

    scheme: str
    host: str = ""
    user: str = "root"
    port: int = 22

    @property
    def address(self) -> str:
        return self.host

    def __str__(self) -> str:
        if self.scheme == "local":
            return "local://"
        if self.scheme == "docker":
            return f"docker://{self.host}"
        return f"ssh://{self.user}@{self.host}:{self.port}"


def parse_host_spec(spec: str) -> HostSpec:
    """Parse a testinfra-style host spec; raise UsageError naming what is wrong."""
    if not isinstance(spec, str) or "://" not in spec:
        raise UsageError(f"host spec {spec!r} must look like local://, ssh://user@host:port "
                         "or docker://name")
    parts = urlsplit(spec)
    scheme = parts.scheme
    if scheme == "local":
        return HostSpec("local", "localhost")
    if scheme == "docker":
        if not parts.hostname:
            raise UsageError(f"host spec {spec!r}: docker:// needs a container name")
        return HostSpec("docker", parts.netloc)
    if scheme == "ssh":
        if not parts.hostname:
            raise UsageError(f"host spec {spec!r}: ssh:// needs a host name")
        try:
            port = parts.port or 22
        except ValueError as exc:
            raise UsageError(f"host spec {spec!r}: bad port") from exc
        return HostSpec("ssh", parts.hostname, parts.username or "root", port)
    raise UsageError(f"host spec {spec!r}: unknown scheme {scheme!r} "
                     "(expected local, ssh or docker)")
