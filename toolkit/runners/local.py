"""The local transport: argv run as a child process of this one."""

from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

from ..errors import (
    CommandTimedOut,
)
from .base import DEFAULT_TIMEOUT, CommandResult, _checked, time_limit, validate_argv


class LocalRunner:
    """Runs commands on this host with subprocess: argv, never a shell.

    A command that names no ``timeout`` may run ``command_timeout`` seconds.
    """

    def __init__(self, host: str = "local", *, command_timeout: float = DEFAULT_TIMEOUT) -> None:
        self.host = host
        self.command_timeout = command_timeout

    def close(self) -> None:
        """Nothing to let go of: every command was its own process."""

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
        """Run argv here as a child process in a session of its own, with LC_ALL=C and ``env``.

        ``timeout`` as the ``Runner`` protocol says: seconds, None for ``command_timeout``,
        NO_LIMIT to wait as long as it takes. At the bound the whole process group is
        killed (CommandTimedOut). A missing or non-executable program exits 127 or 126, as
        in a shell.
        """
        args = validate_argv(argv)
        limit = time_limit(timeout, self.command_timeout)
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
            stdout, stderr = proc.communicate(data, timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            stdout, stderr = _drain_after_kill(proc)
            result = CommandResult(self.host, args, -1, _text(stdout), _text(stderr),
                                   time.monotonic() - start)
            raise CommandTimedOut(result, f"command timed out after {limit}s: "
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
