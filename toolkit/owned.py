"""The names a run gives what it creates, parsed exactly (R1, R21).

Every object a run makes is named from the tool's prefix, the run id, the
domain and a suffix of a fixed shape. ``recover`` and the start-of-run clean-up
find a domain's leftovers by parsing these names in full, never by prefix, so
recovering ``web`` never selects what a live run of ``web-01`` or ``web.prod``
holds: after the domain's name only a suffix of the run's own grammar may
follow (a disk target, a partition map of it, or a guest LV map), and
``web``'s grammar never reads ``01-xvda`` or ``prod.<run>`` as one.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from . import PREFIX
from .names import DISK_TARGET as DISK_TARGET_RULE

# new_run_id(): UTC time, "Z", a dash and 4 hex digits.
RUN_ID = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4}"
# A domain name as the config accepts it.
DOMAIN = r"[A-Za-z0-9_+.][A-Za-z0-9_+.-]*"
# A disk target by the one rule names.DISK_TARGET, which the domain XML parser holds
# every target to (xvda, or xvda1 for a Xen guest given one partition as a disk).
DISK_TARGET = rf"(?:{DISK_TARGET_RULE.pattern})"
# A guest LV map names its guest LV by a digest (plan.volume_map_name).
_GUEST_FS = r"[0-9a-f]{16}"


@dataclass(frozen=True)
class OwnedName:
    """One parsed owned name: a disk's snapshot or alias, its partition map, or a guest LV map."""

    run_id: str
    domain: str
    disk: str | None = None
    partition: int | None = None
    role: str | None = None  # "src" or "dst" for a guest LV map
    fs: str | None = None


def _domain(domain: str | None) -> str:
    return DOMAIN if domain is None else re.escape(domain)


def parse_owned(name: str, domain: str | None, delimiter: str) -> OwnedName | None:
    """The parts of ``domubk-<run>-<domain>-<suffix>``; None unless the name is exactly that.

    With ``domain`` given, only that domain's names parse.
    """
    pattern = (rf"{PREFIX}-(?P<run>{RUN_ID})-(?P<domain>{_domain(domain)})-(?:"
               rf"(?P<role>src|dst)-(?P<fs>{_GUEST_FS})"
               rf"|(?P<pdisk>{DISK_TARGET}){re.escape(delimiter)}(?P<part>[0-9]+)"
               rf"|(?P<disk>{DISK_TARGET}))")
    m = re.fullmatch(pattern, name)
    if m is None:
        return None
    part = m.group("part")
    return OwnedName(m.group("run"), m.group("domain"), m.group("pdisk") or m.group("disk"),
                     int(part) if part is not None else None, m.group("role"), m.group("fs"))


def snapshot_lv(lv_name: str, domain: str | None) -> bool:
    """An LV name of a run's snapshot of ``domain`` (``domubk-<run>-<domain>-<disk>``)."""
    owned = parse_owned(lv_name, domain, "\0")
    return owned is not None and owned.disk is not None and owned.partition is None


def snapshot_partition_map(dm_name: str, vgs: list[str], domain: str | None,
                           delimiter: str) -> bool:
    """A kpartx map of one of our snapshots in one of ``vgs``: ``<vg>-<escaped lv><sep><n>``.

    device-mapper names an LV ``<vg>-<lv>`` with every dash inside either doubled.
    """
    for vg in vgs:
        head = vg.replace("-", "--") + "-"
        if not dm_name.startswith(head):
            continue
        owned = parse_owned(dm_name[len(head):].replace("--", "-"), domain, delimiter)
        if owned is not None and owned.disk is not None and owned.partition is not None:
            return True
    return False


def run_dir_of(component: str, domain: str | None) -> bool:
    """A run directory name ``<domain>.<run>`` (under a mount prefix)."""
    return re.fullmatch(rf"{_domain(domain)}\.{RUN_ID}", component) is not None


def journal_of(path: str, domain: str | None) -> bool:
    """A journal file ``<domain>.<run>.jsonl``."""
    return re.fullmatch(rf"{_domain(domain)}\.{RUN_ID}\.jsonl",
                        posixpath.basename(path)) is not None


def under_run_dir(path: str, prefix: str, domain: str | None) -> bool:
    """A path inside (or equal to) a run directory of ``domain`` directly below ``prefix``."""
    base = prefix.rstrip("/") + "/"
    if not path.startswith(base):
        return False
    return run_dir_of(path[len(base):].split("/", 1)[0], domain)
