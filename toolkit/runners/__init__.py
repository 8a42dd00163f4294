"""One ``run`` primitive per transport.

Every command is an argv list. Only the SSH transport ever turns argv into a
string, with ``shlex.join``, at the boundary. Results are frozen records;
errors carry the result. ``timeout`` means one thing for every runner (the
``Runner`` protocol's docstring): seconds; None for the runner's own bound;
NO_LIMIT for none. The SSH transport (and paramiko) is imported only when a
host needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    DEFAULT_TIMEOUT,
    NO_LIMIT,
    CommandResult,
    Runner,
    StreamingRunner,
    _checked,
    time_limit,
    validate_argv,
)
from .local import LocalRunner
from .spec import HostSpec, parse_host_spec

if TYPE_CHECKING:
    from .ssh import SSHRunner, remote_command

__all__ = ["DEFAULT_TIMEOUT", "NO_LIMIT", "CommandResult", "HostSpec", "LocalRunner", "Runner",
           "SSHRunner", "StreamingRunner", "_checked", "parse_host_spec", "remote_command",
           "time_limit", "validate_argv"]


def __getattr__(name: str) -> Any:
    if name in ("SSHRunner", "remote_command"):
        from . import ssh

        return getattr(ssh, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
