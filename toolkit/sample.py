"""The annotated sample config: `domu-backup sample-config` prints it, the README shows it.

Generated from the records in ``toolkit.config``: every key is a field of
``ClusterSettings``, ``HypervisorSettings``, ``SSHSettings`` or ``Defaults``,
shown at its default (or, without one, at its example value here) with its
``doc`` metadata as the comment above it, and the example domain has one key
per field of ``DomainConfig`` and ``DiskConfig``. A field without a doc, or a
default with no TOML spelling, is an error here, so the sample can never lag
behind the code (tests/unit/test_sample_config.py).

``effective_settings`` writes a loaded config's settings the same way, each
marked set in the file or default (`domu-backup check-config`).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import PurePath
from typing import Any

from .config import (
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

WIDTH = 79  # the longest comment line, "# " included

_HEADER = """\
domu-backup configuration: /etc/domu-backup/backup.toml
(or the file named by $DOMU_BACKUP_CONFIG). It must not be group- or
world-writable. Unknown keys are errors, so a typo never goes unnoticed."""

_SSH = """\
How this Dom0 reaches its peer. The key and known_hosts belong to the tool: an \
unknown or changed host key is refused, never learned. Pin the peer's key once with:
  ssh-keyscan -t ed25519 xen-b.example.net >> /etc/domu-backup/known_hosts"""

_DEFAULTS = """\
Settings every domain inherits (the values shown are the defaults).
Directories (source_prefix, peer_prefix, state_dir, report_dir, lock_dir) are \
plain absolute paths (letters, digits and ._+@=,~- between single slashes), never \
a system directory (/, /var, /run, /tmp, ... or anything below /proc, /sys, /dev, \
/boot, /usr, /etc), the two mount prefixes apart from each other and from the \
other three."""

# The example values of the keys that have no default.
DOM0S = {"xen-a": "ssh://root@xen-a.example.net:22", "xen-b": "ssh://root@xen-b.example.net:22"}
HYPERVISOR_URI = "xen:///system"
_EXAMPLES: dict[type, dict[str, Any]] = {ClusterSettings: {"dom0s": DOM0S},
                                         HypervisorSettings: {"uri": HYPERVISOR_URI}}

# The example domain: a value per DomainConfig field (its name is the table's name).
DOMAIN = "web01"
_DOMAIN_EXAMPLE: dict[str, Any] = {
    "peer": "xen-b",
    "excludes": ["/tmp/*", "/var/cache/apt/archives/*.deb"],
    "rsync_args": [],
    "snapshot_size": "2G",
    "skip_filesystems": ["xvda1"],
    "disks": {"xvda": {"standby_lv": "/dev/vg0/web01"}},
    "mounts": {"xvda1": "/", "xvda2": "/var"},
    "restore_points": {"keep_daily": 7, "keep_weekly": 4},
    "hooks": {"on_failure": ["/usr/local/sbin/notify-admin", "web01"]},
    "freeze": "agent",
    "freeze_fallback": "refuse",
}
_COMMENTED_OUT = frozenset({"skip_filesystems"})  # shown, but not set, in the example
_NAME_FIELD = "name"  # DomainConfig.name: the table's name, not a key


# --- TOML values ----------------------------------------------------------------

_INT64 = range(-(2**63), 2**63)


def toml_value(value: Any) -> str:
    """``value`` as a TOML value: a string, an integer, a float, a boolean or a list of them.

    Strings are JSON-escaped, which TOML's basic strings read the same, except that
    DEL is escaped too (TOML allows it only escaped) and a lone surrogate, which no
    UTF-8 file can hold, is refused. Anything else is a TypeError.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value not in _INT64:
            raise ValueError(f"{value}: TOML integers are 64-bit")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # "10.0", "1e-05", "inf", "-inf": all TOML floats
    if isinstance(value, str):
        if any("\ud800" <= c <= "\udfff" for c in value):
            raise ValueError(f"{value!r}: a lone surrogate has no TOML (UTF-8) spelling")
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"{key!r}: a TOML key is a string")
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{value!r}: no TOML value for a {type(value).__name__}")


def toml_key(key: str) -> str:
    """A bare TOML key when it may be one, else a quoted key."""
    if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key):
        return key
    return toml_value(key)


def comment(text: str) -> list[str]:
    """``text`` as comment lines: each paragraph wrapped, a line indented by 2 kept as it is."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        if paragraph.startswith("  "):
            lines.append(f"#{paragraph}")
            continue
        lines += textwrap.wrap(paragraph, WIDTH, initial_indent="# ", subsequent_indent="# ",
                               break_long_words=False, break_on_hyphens=False) or ["#"]
    return lines


# --- the records' fields --------------------------------------------------------


def doc(f: Field[Any], owner: type) -> str:
    """A field's doc; ValueError when it has none, so an undocumented key never ships."""
    text = f.metadata.get("doc", "")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{owner.__name__}.{f.name} has no doc: give it "
                         "field(..., metadata={\"doc\": \"...\"}) in toolkit/config/fields.py")
    return text


def default_toml(f: Field[Any], owner: type) -> Any:
    """A field's default as the TOML value the parser reads back as that default."""
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        raise ValueError(f"{owner.__name__}.{f.name} has no default to show")
    return as_toml(f, owner, value, "default")


def as_toml(f: Field[Any], owner: type, value: Any, what: str = "value") -> Any:
    """A field's value as the TOML value the parser reads back as that value."""
    if value is None:
        if "toml_none" not in f.metadata:
            raise ValueError(f"{owner.__name__}.{f.name}: its {what} None has no TOML "
                             "spelling (metadata \"toml_none\")")
        return f.metadata["toml_none"]
    if isinstance(value, (PurePath, SnapshotSize)):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _setting(key: str, value: Any, text: str, *, commented: bool = False) -> list[str]:
    line = f"{toml_key(key)} = {toml_value(value)}"
    return [*comment(text), f"# {line}" if commented else line]


def _table(name: str, record: type, intro: str = "") -> list[str]:
    """``[name]``: each field of ``record`` below its doc, at its default or its example
    value; a table-valued field as its own table ``[name.field]``, after the others."""
    examples = _EXAMPLES.get(record, {})
    settings: list[str] = []
    tables: list[list[str]] = []
    for f in fields(record):
        text = doc(f, record)
        value = examples[f.name] if f.name in examples else default_toml(f, record)
        if is_dataclass(value):  # a table of its own, each key below its doc
            tables.append([*comment(text), f"[{name}.{toml_key(f.name)}]",
                           *(line for g in fields(value) for line in _setting(
                               g.name, default_toml(g, type(value)), doc(g, type(value))))])
        elif isinstance(value, Mapping):
            tables.append([*comment(text), f"[{name}.{toml_key(f.name)}]",
                           *(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())])
        else:
            settings += _setting(f.name, value, text)
    if settings:
        tables.insert(0, [*(comment(intro) if intro else []), f"[{name}]", *settings])
    return [line for i, table in enumerate(tables) for line in ([""] if i else []) + table]


def _domain_tables() -> list[str]:
    table = f"domains.{toml_key(DOMAIN)}"
    lines: list[str] = []
    subtables: list[str] = []
    for f in fields(DomainConfig):
        text = doc(f, DomainConfig)
        if f.name == _NAME_FIELD:
            lines += [*comment(text), f"[{table}]"]
            continue
        if f.name not in _DOMAIN_EXAMPLE:
            raise ValueError(f"DomainConfig.{f.name} has no example value in toolkit/sample.py")
        value = _DOMAIN_EXAMPLE[f.name]
        if f.name == "disks":
            for target, disk in value.items():
                subtables += ["", *comment(text), f"[{table}.disks.{toml_key(target)}]"]
                for g in fields(DiskConfig):
                    subtables += _setting(g.name, disk[g.name], doc(g, DiskConfig))
        elif isinstance(value, dict):
            subtables += ["", *comment(text), f"[{table}.{toml_key(f.name)}]"]
            subtables += [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()]
        else:
            lines += _setting(f.name, value, text, commented=f.name in _COMMENTED_OUT)
    return lines + subtables


def render_sample() -> str:
    """The annotated sample config (TOML text, ending in a newline)."""
    parts = [
        comment(_HEADER),
        _table("cluster", ClusterSettings),
        _table("hypervisor", HypervisorSettings),
        _table("ssh", SSHSettings, _SSH),
        _table("defaults", Defaults, _DEFAULTS),
        _table("monitoring", MonitoringSettings),
        _table("schedule", ScheduleSettings),
        _domain_tables(),
    ]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"


# --- a loaded config's settings (check-config) -------------------------------------------

UNSET = "(unset)"  # a None with no TOML spelling: the key is left out (its doc says what then)


def effective_settings(config: Config) -> list[tuple[str, str, bool]]:
    """Every setting of ``[ssh]``, ``[defaults]``, ``[monitoring]`` and each domain (each
    disk's too), as (dotted key, its value in TOML, whether the file sets it) in the records'
    order."""
    out: list[tuple[str, str, bool]] = []

    def record(shown: str, dotted: str, value: Any) -> None:
        for f in fields(value):
            if "read" not in f.metadata:
                continue  # DomainConfig.name: the table's name, not a key
            key, given = f"{shown}.{toml_key(f.name)}", f"{dotted}.{f.name}"
            item = getattr(value, f.name)
            if isinstance(item, (RestorePoints, Hooks)):  # a table of its own
                record(key, given, item)
                continue
            if isinstance(item, Mapping) and item and all(map(is_dataclass, item.values())):
                for name, sub in item.items():  # domains.NAME.disks.TARGET: a record each
                    record(f"{key}.{toml_key(name)}", f"{given}.{name}", sub)
                continue
            text = (UNSET if item is None and "toml_none" not in f.metadata
                    else toml_value(as_toml(f, type(value), item)))
            out.append((key, text, given in config.given))

    record("ssh", "ssh", config.ssh)
    record("defaults", "defaults", config.defaults)
    record("monitoring", "monitoring", config.monitoring)
    record("schedule", "schedule", config.schedule)
    for name, domain in config.domains.items():
        record(f"domains.{toml_key(name)}", f"domains.{name}", domain)
    return out
