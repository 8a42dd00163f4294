"""The backup config: one TOML file, parsed once into frozen records, validated.

Unknown keys are errors. Every error is a ``ConfigError`` naming the file,
the dotted key and what was expected. The records' fields are the one table of keys:
each field's default, reader (``_Parser`` method and the form it expects) and doc
drive the parser, the records, the error messages and the sample config alike.

``fields`` holds the records, ``readers`` and ``parser`` the TOML parser, ``load``
the loading of the file with its permission checks; every name is imported from here.
"""

from __future__ import annotations

from .fields import (
    DOM0_NAME_MAX,
    DOMAIN_NAME_MAX,
    SSH_FILES_DIR,
    ClusterSettings,
    Config,
    Defaults,
    DiskConfig,
    DomainConfig,
    Hooks,
    HypervisorSettings,
    MonitoringSettings,
    RestorePoints,
    ScheduleSettings,
    SnapshotSize,
    SSHSettings,
)
from .load import CONFIG_ENV, DEFAULT_CONFIG_PATH, check_root, default_config_path, load_config
from .parser import _Parser, parse_config
from .readers import SYSTEM_DIRS, SYSTEM_TREES

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DOM0_NAME_MAX",
    "DOMAIN_NAME_MAX",
    "SSH_FILES_DIR",
    "SYSTEM_DIRS",
    "SYSTEM_TREES",
    "ClusterSettings",
    "Config",
    "Hooks",
    "MonitoringSettings",
    "RestorePoints",
    "ScheduleSettings",
    "Defaults",
    "DiskConfig",
    "DomainConfig",
    "HypervisorSettings",
    "SSHSettings",
    "SnapshotSize",
    "_Parser",
    "check_root",
    "default_config_path",
    "load_config",
    "parse_config",
]
