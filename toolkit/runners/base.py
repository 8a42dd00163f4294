"""The runner contract: a command's result, the ``Runner`` protocol, argv checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import (
    CommandFailed,
)

DEFAULT_TIMEOUT = 600.0


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
    ) -> CommandResult:
        """Run argv (never a shell line) on the host, with LC_ALL=C and ``env`` added.

        An exit code not in ``ok_codes`` raises CommandFailed when ``check``; a command that
        outlives ``timeout`` seconds raises CommandTimedOut (what None means is the runner's).
        """
        ...

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


def terminate(proc: object) -> None:
    """Ask a started command to stop (SIGTERM); one that already ended is no error."""
    try:
        proc.terminate()  # type: ignore[attr-defined]
    except OSError:
        pass
