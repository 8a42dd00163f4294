"""The runner contract: a command's result, the ``Runner`` protocol, argv checks."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import (
    CommandFailed,
)

DEFAULT_TIMEOUT = 600.0
"""The bound of a local or lab runner's command that names none (an SSH runner's is its
``command_timeout``, from the config)."""

NO_LIMIT = math.inf
"""``timeout=NO_LIMIT``: the command may run as long as it takes (the one way to say so)."""


@dataclass(frozen=True)
class CommandResult:
    """What one command did on a host: its argv, exit code, output and seconds taken."""

    host: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    # Deliberately no __bool__: a result is not a truth value; test exit_code.


@runtime_checkable
class Runner(Protocol):
    """Runs argv on one host.

    ``timeout`` means the same for every runner:

    - a number: the command may run that many seconds;
    - ``None`` (the default): the runner's own bound, its ``command_timeout``
      (``DEFAULT_TIMEOUT`` for a local or a lab runner, the config's
      ``[ssh] command_timeout`` for an SSH runner): no command is unbounded by omission;
    - ``NO_LIMIT`` (``math.inf``): no bound at all, said explicitly.

    A command that outlives its bound raises CommandTimedOut. ``time_limit`` turns a
    ``timeout`` into the seconds a runner waits (None for no limit).
    """

    host: str

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
        """Run argv (never a shell line) on the host, with LC_ALL=C and ``env`` added.

        An exit code not in ``ok_codes`` raises CommandFailed when ``check``; a command that
        outlives its bound raises CommandTimedOut. ``timeout``: seconds, None for the
        runner's ``command_timeout``, NO_LIMIT for none (the class docstring).
        """
        ...

    def close(self) -> None:
        """Let go of the host: the SSH connection, if any (a local runner holds nothing)."""
        ...


@runtime_checkable
class StreamingRunner(Runner, Protocol):
    """A runner that can also hand over a command's output line by line as it comes (the
    local runner: rsync's progress on the source). Others run the command to its end."""

    def stream(
        self,
        argv: Sequence[str],
        on_line: Callable[[str], None],
        *,
        env: Mapping[str, str] | None = None,
        on_start: Callable[[subprocess.Popen], None] | None = None,
    ) -> CommandResult:
        """Run argv with no time limit, calling ``on_line`` for each line of its stdout;
        ``on_start`` gets the process (a watcher may stop it)."""
        ...


def time_limit(timeout: float | None, command_timeout: float) -> float | None:
    """The seconds a command may run, None for no limit: ``timeout`` as the ``Runner``
    protocol reads it (None is the runner's ``command_timeout``, NO_LIMIT none)."""
    if timeout is None:
        return command_timeout
    if timeout == NO_LIMIT:
        return None
    return timeout


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


def terminate(proc: object) -> None:
    """Ask a started command to stop (SIGTERM); one that already ended is no error."""
    try:
        proc.terminate()  # type: ignore[attr-defined]
    except OSError:
        pass
