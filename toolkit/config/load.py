"""Loading the config file: where it is, the root check, and who may change its files.

The config file, the SSH key and known_hosts must be files only root (or the user the
tool runs as) can change; the text is parsed by ``parser``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import safefs
from ..errors import ConfigError, NotRoot
from .fields import Config
from .parser import parse_config

DEFAULT_CONFIG_PATH = Path("/etc/domu-backup/backup.toml")
CONFIG_ENV = "DOMU_BACKUP_CONFIG"


def default_config_path() -> Path:
    """The config path: ``$DOMU_BACKUP_CONFIG``, else /etc/domu-backup/backup.toml."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else DEFAULT_CONFIG_PATH


def check_root() -> None:
    """Raise NotRoot unless running as root."""
    if os.geteuid() != 0:
        raise NotRoot("this command needs root (LVM, device-mapper and mounts); "
                      f"running as uid {os.geteuid()}")


def load_config(path: Path | None = None, *, check_permissions: bool = True,
                allow_lab_hosts: bool = False, view: safefs.FsView = safefs.REAL) -> Config:
    """Read, parse and validate the config file; refuse files others could change.

    The config file, the SSH key and known_hosts must be owned by root (or the
    effective uid when not root) and not group- or world-writable, the key not
    readable by others either, each below directories only root can change
    (InsecureFile, exit 6). A missing key or known_hosts is the SSH runner's
    error to report when it is needed. ``local://`` and ``docker://`` Dom0s
    are refused unless ``allow_lab_hosts`` (the rehearsal lab).
    """
    path = Path(path) if path is not None else default_config_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (set {CONFIG_ENV} or "
                          "pass --config)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: "
                          f"{exc.strerror or exc}") from None
    if check_permissions:
        _check_trusted(path, os.path.abspath(path), "the config file", "", view)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    config = parse_config(text, path, allow_lab_hosts=allow_lab_hosts)
    if check_permissions:
        _check_trusted(path, str(config.ssh.key), "the SSH key", "ssh.key", view, secret=True)
        _check_trusted(path, str(config.ssh.known_hosts), "the known_hosts file",
                       "ssh.known_hosts", view)
    return config


def _check_trusted(config_path: Path, file: str, what: str, key: str, view: safefs.FsView,
                   *, secret: bool = False) -> None:
    try:
        safefs.check_trusted_file(file, what, secret=secret, view=view)
    except FileNotFoundError:
        if not key:
            raise ConfigError(f"{config_path}: no such config file") from None
        # a missing key or known_hosts is the SSH runner's error to report, when needed
    except OSError as exc:
        raise ConfigError(f"{config_path}: {key or 'config'}: cannot inspect {file}: "
                          f"{exc.strerror or exc}") from None
