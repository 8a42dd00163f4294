"""The parser's readers of single values: each reads, checks and converts one TOML value.

Every error is a ``ConfigError`` naming the file, the dotted key and what was expected
(``_Parser``, in ``parser``, builds on these readers).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..sizes import ABSOLUTE as ABSOLUTE_SIZE
from .fields import SSH_FILES_DIR, SnapshotSize

_PERCENT_ORIGIN = re.compile(r"([0-9]{1,3})%ORIGIN")
# A directory or file the config names: plain characters only, absolute and normal.
_PLAIN_PATH = re.compile(r"(/[A-Za-z0-9._+@=,~-]+)+")
# Never a directory (or file) of the tool's: these trees, or exactly these directories.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32",
                "/lib64", "/libx32", "/etc")
SYSTEM_DIRS = frozenset({"/", "/var", "/run", "/tmp", "/home", "/root", "/srv", "/opt",
                         "/mnt", "/media", "/var/lib", "/run/lock", "/var/run", "/var/lock",
                         "/var/tmp", "/var/log", "/var/cache"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_REQUIRED = object()


class _Reader:
    """Reads, checks and converts one TOML value at a time; knows the file's name."""

    def __init__(self, path: Path, *, allow_lab_hosts: bool = False) -> None:
        self.path = path
        self.allow_lab_hosts = allow_lab_hosts
        self.dom0_names: list[str] = []  # known once [cluster.dom0s] is read
        self.warnings: list[str] = []
        self.given: set[str] = set()  # the dotted keys the file sets (Config.given)
        self.point_defaults: Any = None  # [defaults.restore_points], once read
        self.hook_defaults: Any = None  # [defaults.hooks], once read

    def fail(self, key: str, expected: str, value: object = _REQUIRED) -> ConfigError:
        got = "" if value is _REQUIRED else f", got {_show(value)}"
        return ConfigError(f"{self.path}: {key}: expected {expected}{got}")

    def table(self, parent: Mapping[str, Any], key: str, dotted: str, known: set[str] | None,
              *, required: bool = False) -> Mapping[str, Any]:
        if key not in parent:
            if required:
                raise ConfigError(f"{self.path}: {dotted}: missing required table [{dotted}]")
            return {}
        value = parent[key]
        if not isinstance(value, dict):
            raise self.fail(dotted, "a table", value)
        if known is not None:
            self.only(value, dotted, known)
        return value

    def only(self, table: Mapping[str, Any], dotted: str, known: set[str],
             former: Iterable[str] = ()) -> None:
        """Every key of ``table`` is one of ``known`` (or a ``former`` name of one)."""
        for key in table:
            if key not in known and key not in former:
                where = f"{dotted}.{key}" if dotted else key
                raise ConfigError(f"{self.path}: {where}: unknown key (expected one of "
                                  f"{', '.join(sorted(known))})")

    # scalar readers -----------------------------------------------------

    def string(self, table: Mapping[str, Any], key: str, dotted: str,
               default: Any = _REQUIRED, expected: str = "a string") -> Any:
        if key not in table:
            if default is _REQUIRED:
                raise ConfigError(f"{self.path}: {dotted}: missing required key "
                                  f"(expected {expected})")
            return default
        value = table[key]
        if not isinstance(value, str):
            raise self.fail(dotted, "a string", value)
        return value

    def boolean(self, table: Mapping[str, Any], key: str, dotted: str, default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(dotted, "true or false", value)
        return value

    def integer(self, table: Mapping[str, Any], key: str, dotted: str, default: int,
                low: int, high: int | None = None) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(dotted, "an integer", value)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise self.fail(dotted, f"an integer {bound}", value)
        return value

    def seconds(self, table: Mapping[str, Any], key: str, dotted: str,
                default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(dotted, "a number of seconds", value)
        if not value > 0 or value == float("inf"):
            raise self.fail(dotted, "a number of seconds > 0", value)
        return float(value)

    def strings(self, table: Mapping[str, Any], key: str, dotted: str,
                default: tuple[str, ...] = (), check: str | None = None) -> tuple[str, ...]:
        """A list of strings, each checked by the named ``check_*`` method."""
        value = table.get(key, list(default))
        if not isinstance(value, list):
            raise self.fail(dotted, "a list of strings", value)
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{dotted}[{index}]", "a string", item)
            if check is not None:
                getattr(self, check)(item, f"{dotted}[{index}]")
            out.append(item)
        return tuple(out)

    def absolute_path(self, table: Mapping[str, Any], key: str, dotted: str,
                      default: str, *, ssh_file: bool = False) -> str:
        value = self.string(table, key, dotted, default)
        if not _clean_absolute(value) or not _PLAIN_PATH.fullmatch(value):
            raise self.fail(dotted, "a plain, absolute, normalized path (letters, digits and "
                            "._+@=,~- between single slashes)", value)
        system = _system_path(value, ssh_file=ssh_file)
        if system:
            where = (f"outside {system}" if system in SYSTEM_TREES
                     else f"a directory of the tool's own, not {system} itself")
            if ssh_file and system == "/etc":
                where += f" (under /etc only in {SSH_FILES_DIR}/)"
            raise self.fail(dotted, where, value)
        return value

    def snapshot_size(self, value: Any, dotted: str) -> SnapshotSize:
        if isinstance(value, str):
            if ABSOLUTE_SIZE.fullmatch(value):
                return SnapshotSize(absolute=value)
            match = _PERCENT_ORIGIN.fullmatch(value)
            if match and 1 <= int(match.group(1)) <= 100:
                return SnapshotSize(percent_origin=int(match.group(1)))
        raise self.fail(dotted, 'a size like "2G" or "512M" (units K, M, G, T) or a '
                        'percentage like "20%ORIGIN" (1-100)', value)

    def ssh_file(self, table: Mapping[str, Any], key: str, dotted: str, default: Path) -> Path:
        return Path(self.absolute_path(table, key, dotted, str(default), ssh_file=True))

    def pattern(self, table: Mapping[str, Any], key: str, dotted: str, default: str | None,
                regex: re.Pattern[str], expected: str, empty_is_none: bool = True) -> str | None:
        """A string of the form ``regex`` matches in full; "" is None where it may be."""
        if key not in table:
            return default
        value = self.string(table, key, dotted)
        if value == "" and empty_is_none:
            return None
        if not regex.fullmatch(value):
            raise self.fail(dotted, expected, value)
        return str(value)

    def size(self, table: Mapping[str, Any], key: str, dotted: str,
             default: SnapshotSize | None) -> SnapshotSize | None:
        return self.snapshot_size(table[key], dotted) if key in table else default


def _clean_absolute(path: str) -> bool:
    """Absolute, one line, and already normal: no "..", ".", "//" or trailing "/"."""
    return (path.startswith("/") and not path.startswith("//") and not _CONTROL.search(path)
            and posixpath.normpath(path) == path)


def _system_path(path: str, *, ssh_file: bool = False) -> str | None:
    """The system directory ``path`` is (or lies in) where the tool must not go, or None."""
    if path in SYSTEM_DIRS:
        return path
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            if ssh_file and path.startswith(SSH_FILES_DIR + "/"):
                return None
            return tree
    return None


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list) and len(repr(value)) > 60:
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
