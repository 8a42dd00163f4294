"""libvirt facts: domain state, the domain list and the disks of a domain."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from lxml import etree

from ..errors import ParseError, UnsafeName
from ..names import DISK_TARGET_RULE_TEXT, is_disk_target
from ..runners import CommandResult

# Every state `virsh domstate` prints (virshDomainStateToString); "idle" is
# libvirt's BLOCKED state.
DOMAIN_STATES = frozenset({
    "no state", "running", "idle", "paused", "in shutdown", "shut off", "crashed",
    "pmsuspended",
})

# Devices whose skipping is expected and never a warning.
_EXPECTED_SKIPS = frozenset({"cdrom", "floppy"})


@dataclass(frozen=True)
class DomainDisk:
    """One ``<disk>`` of a domain, and whether the backup takes it."""

    target: str
    source: str | None
    disk_type: str
    device: str
    bus: str | None
    readonly: bool
    shareable: bool
    skip_reason: str | None
    driver_type: str | None = None  # <driver type=...>; None (absent) means raw
    # Skipping this disk makes the run finish with warnings: it holds data the
    # standby will not have (not a cdrom, floppy, empty drive or swap-only disk).
    warning: bool = False

    @property
    def backed_up(self) -> bool:
        """Whether the backup takes this disk (no skip reason)."""
        return self.skip_reason is None


def _base(uri: str) -> list[str]:
    if not uri or uri.startswith("-"):
        raise ValueError(f"bad libvirt URI {uri!r}")
    return ["virsh", "-c", uri]


def domstate_argv(uri: str, domain: str) -> list[str]:
    """`virsh domstate` for one domain; ``--`` keeps a name starting with "-" a name."""
    return [*_base(uri), "domstate", "--", domain]


def dumpxml_argv(uri: str, domain: str, *, inactive: bool = False) -> list[str]:
    """`virsh dumpxml` of the live definition of one domain; with ``inactive``, of the
    persistent definition it boots from next (what a standby is defined with)."""
    return [*_base(uri), "dumpxml", *(["--inactive"] if inactive else []), "--", domain]


def list_argv(uri: str) -> list[str]:
    """`virsh list --all --name`: every defined domain, one name a line."""
    return [*_base(uri), "list", "--all", "--name"]


def parse_domstate(text: str) -> str:
    """The state `virsh domstate` printed ("running", "shut off", ...)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ParseError(f"virsh domstate: expected one line, got {len(lines)}: {text[:200]!r}")
    state = lines[0].strip()
    if state not in DOMAIN_STATES:
        raise ParseError(f"virsh domstate: unknown state {state!r}")
    return state


def domain_missing(result: CommandResult) -> bool:
    """Whether virsh failed because the domain is not defined on that host."""
    if result.exit_code == 0:
        return False
    err = result.stderr
    return "failed to get domain" in err or "Domain not found" in err


def _parser() -> etree.XMLParser:
    # Domain XML comes from a hypervisor we do not fully trust: no entities,
    # no DTD, no network, no huge trees.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_comments=True)


def parse_domain_xml(xml_text: str) -> etree._Element:
    """Parse `virsh dumpxml` output into the ``<domain>`` element."""
    if not isinstance(xml_text, str) or not xml_text.strip():
        raise ParseError("domain XML is empty")
    try:
        tree = etree.fromstring(xml_text.encode("utf-8", "surrogateescape"), _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ParseError(f"domain XML is not well-formed: {exc}") from None
    doctype = tree.getroottree().docinfo.doctype
    if doctype:
        raise ParseError(f"domain XML carries a DOCTYPE ({doctype}); refusing it")
    if tree.tag != "domain":
        raise ParseError(f"expected a <domain> document, got <{tree.tag}>")
    return tree


def _source(disk: etree._Element, disk_type: str) -> str | None:
    src = disk.find("source")
    if src is None:
        return None
    attr = {"block": "dev", "file": "file", "dir": "dir"}.get(disk_type)
    if attr is None:
        return None
    value = src.get(attr)
    return value or None


def _has_source(disk: etree._Element) -> bool:
    """Whether the drive has a medium at all (an empty cdrom or floppy has no <source>)."""
    src = disk.find("source")
    return src is not None and (any(v for v in src.attrib.values()) or len(src) > 0)


def is_device_path(path: str | None) -> bool:
    """A normal absolute path below /dev: what `xl` with qdisk declares as a file for an LV."""
    return (path is not None and path.startswith("/dev/") and posixpath.normpath(path) == path
            and not any(ord(c) < 32 or ord(c) == 127 for c in path))


def _skip_reason(disk: etree._Element, disk_type: str, device: str, source: str | None,
                 readonly: bool, shareable: bool, driver_type: str | None) -> str | None:
    if device == "cdrom":
        return "cdrom"
    if device == "floppy":
        return "floppy"
    if device == "lun":
        return "lun (SCSI passthrough)"
    if device != "disk":
        return f"device {device!r}"
    # A file under /dev is a block device (xl's qdisk backend declares an LV so).
    if disk_type == "file" and is_device_path(source):
        pass
    elif disk_type != "block":
        return {
            "file": "file-backed",
            "network": "network",
            "volume": "storage-pool volume",
        }.get(disk_type, f"disk type {disk_type!r}")
    if source is None:
        return "no source"
    if driver_type is not None and driver_type != "raw":
        return (f"driver type {driver_type!r}, not raw: the volume holds a disk image, not "
                "the guest's own partitions")
    if disk.find("transient") is not None:
        return "transient (its changes are discarded when the guest stops)"
    mirror = disk.find("mirror")
    if mirror is not None:
        job = mirror.get("job") or "copy"
        return f"block job in progress (<mirror job={job!r}>): the disk is being copied or moved"
    if readonly:
        return "readonly"
    if shareable:
        return "shareable"
    return None


# Every <target dev=...> is held to the one disk target rule (R20), names.DISK_TARGET,
# which the config's disk and filesystem names and the names a run gives what it
# creates (owned) share.
def _check_target(target: str, domain: str | None) -> str:
    if not is_disk_target(target):
        raise UnsafeName(
            f"domain {domain!r}: disk target {target!r} is refused: a target must be "
            f"{DISK_TARGET_RULE_TEXT}")
    return target


def parse_domain_disks(xml_text: str, domain_name: str | None = None) -> list[DomainDisk]:
    """Every ``<disk>`` of a domain, in document order, with a skip reason where not backed up.

    A target name outside ``names.DISK_TARGET`` is refused (UnsafeName naming the
    domain, ``domain_name`` or else the XML's own <name>): it would become part
    of snapshot, device-mapper and mount point names.
    """
    domain = parse_domain_xml(xml_text)
    name = domain_name if domain_name is not None else domain.findtext("name")
    disks: list[DomainDisk] = []
    for disk in domain.iterfind("devices/disk"):
        disk_type = disk.get("type")
        device = disk.get("device")
        target_el = disk.find("target")
        target = target_el.get("dev") if target_el is not None else None
        if not disk_type or not device:
            raise ParseError(f"<disk> without type or device attribute (target {target!r})")
        if not target:
            raise ParseError(f"<disk type={disk_type!r}> has no <target dev=...>")
        _check_target(target, name)
        bus = target_el.get("bus") if target_el is not None else None
        source = _source(disk, disk_type)
        readonly = disk.find("readonly") is not None
        shareable = disk.find("shareable") is not None
        driver = disk.find("driver")
        driver_type = (driver.get("type") or None) if driver is not None else None
        reason = _skip_reason(disk, disk_type, device, source, readonly, shareable, driver_type)
        disks.append(DomainDisk(
            target=target, source=source, disk_type=disk_type, device=device, bus=bus,
            readonly=readonly, shareable=shareable, skip_reason=reason, driver_type=driver_type,
            warning=(reason is not None and device not in _EXPECTED_SKIPS
                     and _has_source(disk)),
        ))
    targets = [d.target for d in disks]
    if len(set(targets)) != len(targets):
        raise ParseError(f"domain XML names a disk target twice: {targets}")
    return disks
