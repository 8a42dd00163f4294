"""The transport of a configured host: its host spec and the config's SSH settings in, a
runner out. Above both ``config`` and ``runners``, so neither imports the other's
layer; the rehearsal lab's Docker transport is imported only for a ``docker://`` host.
"""

from __future__ import annotations

from .config import SSHSettings
from .errors import UsageError
from .runners import HostSpec, LocalRunner, Runner, parse_host_spec


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
        settings = SSHSettings()
    from .runners.ssh import SSHRunner

    return SSHRunner(
        host,
        key_file=settings.key,
        known_hosts=settings.known_hosts,
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
        keepalive=settings.keepalive,
    )
