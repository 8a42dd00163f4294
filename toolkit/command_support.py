"""What every command shares: reading the config (its warnings logged), an error as the
command's one line and exit code, the hosts of a run (or a replay)."""

from __future__ import annotations

from pathlib import Path

from .cmdline import CommandExit
from .errors import ToolkitError, UsageError


def _need_domu(domu: str | None, command: str) -> str:
    if not domu:
        raise CommandExit(f"error: {command} needs --domu NAME", code=UsageError.exit_code)
    return domu


def _config(path: str | None, *, check_permissions: bool = True):
    from .config import default_config_path, load_config
    from .log import logger

    config = load_config(Path(path) if path else default_config_path(),
                         check_permissions=check_permissions)
    for warning in config.warnings:
        logger().warning(f"warning: {warning}")
    return config


def _fail(exc: ToolkitError) -> CommandExit:
    from .app import one_line

    return CommandExit(f"error: {one_line(str(exc))}", code=exc.exit_code)


def _hosts(config, replay: str | None, node: str | None):
    from .app import Hosts
    from .preflight import local_node_name

    if not replay:
        return Hosts()
    from .replay import load_replay

    local = local_node_name(config, node)
    # The replay file names no peer; the plan's peer comes from the config.
    src, peer = load_replay(Path(replay), local, "peer")
    return Hosts(source=src, peer_factory=lambda name: _renamed(peer, name))


def _one_line(text: object) -> str:
    from .app import one_line

    return one_line(str(text))


def _renamed(runner, name):
    runner.host = name
    return runner
