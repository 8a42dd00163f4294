"""Mount facts from `findmnt --json`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import CommandFailed, ParseError
from ..runners import CommandResult

COLUMNS = "TARGET,SOURCE,FSTYPE,OPTIONS"
DEVICE_COLUMNS = f"{COLUMNS},MAJ:MIN"  # and the mounted device's number (the mount guards)
_MAJMIN = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")


@dataclass(frozen=True)
class Mount:
    """One mounted filesystem as the kernel reports it."""

    target: str
    source: str
    fstype: str
    options: tuple[str, ...]
    majmin: str = ""  # "major:minor" of the mounted device, when findmnt was asked for it

    @property
    def read_only(self) -> bool:
        """Mounted read-only (the "ro" option)."""
        return "ro" in self.options


def findmnt_argv(target: str | None = None, *, submounts: bool = False,
                 device: bool = False) -> list[str]:
    """All mounts, or the mounts at exactly ``target`` (and below it with ``submounts``);
    with ``device``, each with its device's major:minor too."""
    argv = ["findmnt", "--json", "-o", DEVICE_COLUMNS if device else COLUMNS]
    if target is None:
        if submounts:
            raise ValueError("submounts needs a target")
        return argv
    if not target.startswith("/"):
        raise ValueError(f"findmnt target must be an absolute path: {target!r}")
    if submounts:
        argv.append("--submounts")
    # --mountpoint takes the path as its own argument: it is never read as an
    # option, and never matched as a source device.
    return [*argv, "--mountpoint", target]


def split_options(text: str) -> tuple[str, ...]:
    """Split a mount option string on commas outside double quotes (SELinux contexts)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quoted:
        raise ParseError(f"findmnt: unbalanced quote in options {text!r}")
    parts.append("".join(current))
    return tuple(p for p in parts if p)


def _text(entry: dict[str, Any], key: str, *, nullable: bool = False) -> str:
    value = entry.get(key, ...)
    if value is ...:
        raise ParseError(f"findmnt: a filesystem entry lacks {key!r}: {entry!r}"[:300])
    if value is None and nullable:
        return ""
    if not isinstance(value, str):
        raise ParseError(f"findmnt: {key!r} is not a string: {value!r}")
    return value


def _majmin(entry: dict[str, Any]) -> str:
    if "maj:min" not in entry:
        return ""
    value = _text(entry, "maj:min")
    if not _MAJMIN.fullmatch(value):
        raise ParseError(f"findmnt: 'maj:min' is not major:minor: {value!r}"[:300])
    return value


def _walk(entries: Any, out: list[Mount], depth: int) -> None:
    if not isinstance(entries, list):
        raise ParseError("findmnt: 'filesystems'/'children' is not a list")
    if depth > 256:
        raise ParseError("findmnt: mount tree nested implausibly deep")
    for entry in entries:
        if not isinstance(entry, dict):
            raise ParseError(f"findmnt: a filesystem entry is not an object: {entry!r}"[:300])
        target = _text(entry, "target")
        if not target.startswith("/"):
            raise ParseError(f"findmnt: target is not an absolute path: {target!r}")
        out.append(Mount(
            target=target,
            # Some kernel mounts have no source; findmnt prints null for them.
            source=_text(entry, "source", nullable=True),
            fstype=_text(entry, "fstype"),
            options=split_options(_text(entry, "options", nullable=True)),
            majmin=_majmin(entry),
        ))
        if "children" in entry:
            _walk(entry["children"], out, depth + 1)


def parse_findmnt(text: str) -> list[Mount]:
    """Every mount in `findmnt --json` output, the tree flattened parents first.

    Empty output is an error here: findmnt prints nothing and exits 1 when
    nothing matched, which only mounts_from_result may read as "no mounts".
    """
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise ParseError(f"findmnt: output is not JSON ({exc}): {str(text)[:200]!r}") from None
    if not isinstance(doc, dict) or "filesystems" not in doc:
        raise ParseError("findmnt: JSON has no 'filesystems' list")
    out: list[Mount] = []
    _walk(doc["filesystems"], out, 0)
    if not out:
        raise ParseError("findmnt: 'filesystems' is empty")
    return out


def mounts_from_result(result: CommandResult) -> list[Mount]:
    """Mounts from a whole findmnt run: exit 1 with no output at all means "none match"."""
    if result.exit_code == 0:
        return parse_findmnt(result.stdout)
    if result.exit_code == 1 and not result.stdout.strip() and not result.stderr.strip():
        return []
    raise CommandFailed(result)


def top_mount(mounts: list[Mount], target: str) -> Mount | None:
    """The mount visible at ``target``: findmnt lists stacked mounts bottom first."""
    visible = None
    for mount in mounts:
        if mount.target == target:
            visible = mount
    return visible
