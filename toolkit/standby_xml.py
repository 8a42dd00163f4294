"""The domain's definition as the peer would start it: each disk on its standby LV.

What failover needs besides the data is the definition: ``virsh dumpxml --inactive`` read
on the source, with each backed-up disk's source rewritten to its standby LV on the peer
(a raw block device). A removable drive (cdrom, floppy) is left empty: its medium is a path
on the source. Any other disk the backup leaves out keeps its source as it was, and is
named, so whoever starts the guest from it knows what the peer must provide. The rest of
the definition (name, UUID, memory, interfaces, boot) is the source's.

A backup reads the definition on the source (``defread``) and writes it on the peer beside
the standby marker (``defwrite``) in every run that leaves the standby clean; ``promote``
defines the domain from it. Pure: it parses and writes XML and runs nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from .errors import ParseError
from .facts.virsh import parse_domain_xml
from .names import is_disk_target

REMOVABLE = frozenset({"cdrom", "floppy"})


def definition_path(state_dir: str, domain: str) -> str:
    """Where the standby definition of a domain lives on its peer: beside its marker."""
    return posixpath.join(state_dir, "standby", f"{domain}.xml")


@dataclass(frozen=True)
class StandbyDefinition:
    """The rewritten definition, and each disk left as the source has it (with why)."""

    xml: str
    kept: tuple[str, ...]


def standby_definition(xml_text: str, standby: Mapping[str, str]) -> StandbyDefinition:
    """``xml_text`` (the source's definition) with each disk target of ``standby`` on its
    standby LV (``/dev/...``); ParseError for a definition that cannot be read or a standby
    path that is no plain /dev path. A disk of ``standby`` the definition lacks is named in
    ``kept``."""
    for name, path in standby.items():
        if not is_disk_target(name) or not path.startswith("/dev/") or "\n" in path:
            raise ParseError(f"standby of {name!r}: {path!r} is no disk target and /dev path")
    domain = parse_domain_xml(xml_text)
    seen: set[str] = set()
    kept: list[str] = []
    for disk in domain.iterfind("devices/disk"):
        target_el = disk.find("target")
        target = (target_el.get("dev") if target_el is not None else None) or ""
        device = disk.get("device") or "disk"
        if target in standby:
            seen.add(target)
            _on_block(disk, standby[target])
        elif device in REMOVABLE:
            for src in disk.findall("source"):
                disk.remove(src)  # an empty drive: the medium was a path on the source
        else:
            src = disk.find("source")
            where = "" if src is None else " ".join(f"{k}={v}" for k, v in src.attrib.items())
            kept.append(f"{target}: not backed up, kept as the source has it "
                        f"({where or 'no source'})")
    # A disk attached to the running domain only (hot-plugged, not in its definition): the
    # standby holds its copy, the definition does not name it; said, not refused.
    kept += [f"{t}: attached to the running domain only, not in its definition; add it "
             f"after promoting ({standby[t]})" for t in sorted(set(standby) - seen)]
    text = etree.tostring(domain, encoding="unicode", pretty_print=True)
    return StandbyDefinition(text, tuple(kept))


def _on_block(disk: etree._Element, path: str) -> None:
    """Make ``disk`` a raw block device at ``path``, keeping its target, bus and the rest."""
    disk.set("type", "block")
    for src in disk.findall("source"):
        disk.remove(src)
    for child in disk.findall("backingStore"):
        disk.remove(child)
    source = etree.Element("source", dev=path)
    target = disk.find("target")
    driver = disk.find("driver")
    if driver is not None:
        driver.addnext(source)
    elif target is not None:
        target.addprevious(source)
    else:
        disk.append(source)
    if driver is not None and driver.get("type"):
        driver.set("type", "raw")
