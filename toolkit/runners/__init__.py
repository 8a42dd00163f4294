"""One ``run`` primitive per transport.

Every command is an argv list. Only the SSH transport ever turns argv into a
string, with ``shlex.join``, at the boundary. Results are frozen records;
errors carry the result. The SSH transport (and paramiko) is imported only when
a host needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .base import DEFAULT_TIMEOUT, CommandResult, Runner, _checked, validate_argv
from .local import LocalRunner
from .spec import HostSpec, parse_host_spec

if TYPE_CHECKING:
    from ..config import SSHSettings
    from .ssh import SSHRunner, remote_command

__all__ = ["DEFAULT_TIMEOUT", "CommandResult", "HostSpec", "LocalRunner", "Runner",
           "SSHRunner", "_checked", "parse_host_spec", "remote_command", "runner_for",
           "validate_argv"]


def __getattr__(name: str) -> Any:
    if name in ("SSHRunner", "remote_command"):
        from . import ssh

        return getattr(ssh, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
            from ..lab.docker_runner import DockerRunner
        except ImportError:
            raise UsageError(f"{host}: docker:// hosts are the rehearsal lab's, which runs "
                             "from a checkout; this installation has no lab") from None
        return DockerRunner(host.host)
    settings = ssh or ssh_settings
    if settings is None:
        from ..config import SSHSettings

        settings = SSHSettings()
    from .ssh import SSHRunner

    return SSHRunner(
        host,
        key_file=settings.key,
        known_hosts=settings.known_hosts,
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        keepalive=settings.keepalive,
    )
