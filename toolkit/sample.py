"""The annotated sample config: `domu-backup sample-config` prints it, the README shows it.

Generated from the records in ``toolkit.config``: every key of ``[ssh]`` and
``[defaults]`` is a field of ``SSHSettings`` or ``Defaults``, shown at its
default with its ``doc`` metadata as the comment above it, and the example
domain has one key per field of ``DomainConfig`` and ``DiskConfig``. A field
without a doc, or a default with no TOML spelling, is an error here, so the
sample can never lag behind the code (tests/unit/test_sample_config.py).
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import MISSING, Field, fields
from pathlib import PurePath
from typing import Any

from .config import Defaults, DiskConfig, DomainConfig, SnapshotSize, SSHSettings

WIDTH = 79  # the longest comment line, "# " included

_HEADER = """\
domu-backup configuration: /etc/domu-backup/backup.toml
(or the file named by $DOMU_BACKUP_CONFIG). It must not be group- or
world-writable. Unknown keys are errors, so a typo never goes unnoticed."""

_CLUSTER = """\
The Dom0s that back each other up: name = host spec. Every Dom0 uses the same \
file; the tool finds out which one it is running on. A name is letters, digits \
and _ + . -, not starting with - or ., at most 64 characters. A host spec is \
ssh://[user@]host[:port]: a host name, an IPv4 address or an IPv6 address in \
brackets (ssh://root@[2001:db8::2]:22), a port 1-65535 (22 by default), no \
password (the tool logs in with its key). At least two Dom0s; two may not share \
one address and port; local:// and docker:// are for the rehearsal lab only."""

_HYPERVISOR = "The libvirt URI of this Dom0's hypervisor, like \"xen:///system\"."

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

DOM0S = {"xen-a": "ssh://root@xen-a.example.net:22", "xen-b": "ssh://root@xen-b.example.net:22"}
HYPERVISOR_URI = "xen:///system"

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
                         "field(..., metadata={\"doc\": \"...\"}) in toolkit/config.py")
    return text


def default_toml(f: Field[Any], owner: type) -> Any:
    """A field's default as the TOML value the parser reads back as that default."""
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        raise ValueError(f"{owner.__name__}.{f.name} has no default to show")
    if value is None:
        if "toml_none" not in f.metadata:
            raise ValueError(f"{owner.__name__}.{f.name}: its default None has no TOML "
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


def _defaults_table(name: str, record: type, intro: str) -> list[str]:
    lines = [*comment(intro), f"[{name}]"]
    for f in fields(record):
        lines += _setting(f.name, default_toml(f, record), doc(f, record))
    return lines


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
        [*comment(_CLUSTER), "[cluster.dom0s]",
         *(f"{toml_key(k)} = {toml_value(v)}" for k, v in DOM0S.items())],
        ["[hypervisor]", *comment(_HYPERVISOR), f"uri = {toml_value(HYPERVISOR_URI)}"],
        _defaults_table("ssh", SSHSettings, _SSH),
        _defaults_table("defaults", Defaults, _DEFAULTS),
        _domain_tables(),
    ]
    return "\n\n".join("\n".join(part) for part in parts) + "\n"
