"""The standby's layout against the source's, and each filesystem's fate: copied,
skipped (and why), excluded by skip_filesystems, or vanished from the source."""

from __future__ import annotations

from .config import Config
from .errors import ConfigError
from .facts.fsparams import param_differences
from .facts.records import BackupFacts, DiskFacts, FsFacts
from .plan_records import SKIPPED_TYPES, SOURCE_MOUNT_OPTIONS, FsFate


def _copyable(fs: FsFacts) -> tuple[bool, str]:
    if fs.volume is not None and fs.volume.skip_reason is not None:
        return False, f"guest LV {fs.volume.vg}/{fs.volume.name}: {fs.volume.skip_reason}"
    if fs.partition is not None and fs.partition.is_container:
        return False, "extended partition container"
    fstype = fs.probe.type
    if fstype is None:
        return False, "no filesystem found"
    if fstype in SKIPPED_TYPES:
        return False, SKIPPED_TYPES[fstype]
    if fstype not in SOURCE_MOUNT_OPTIONS:
        return False, f"filesystem type {fstype!r} is not in the mount allowlist"
    return True, ""


def compare_layouts(disk: DiskFacts, excluded: frozenset[str] = frozenset()) -> list[str]:
    """Differences between the source disk's layout and the standby's, as sentences.

    Filesystems named in ``excluded`` (skip_filesystems) are not compared: they are not
    copied, and their standby copy is left as it is.
    """
    diffs: list[str] = []
    src, standby = disk.table, disk.standby_table
    if src.label != standby.label:
        diffs.append(f"partition table {src.label or 'none'} on source, "
                     f"{standby.label or 'none'} on standby")
        return diffs
    src_parts = {p.number: p for p in src.partitions}
    standby_parts = {p.number: p for p in standby.partitions}
    for number in sorted(set(src_parts) | set(standby_parts)):
        a, b = src_parts.get(number), standby_parts.get(number)
        if a is None or b is None:
            where = "standby" if a is None else "source"
            diffs.append(f"partition {number} exists only on the {where}")
        elif (a.start, a.size) != (b.start, b.size):
            diffs.append(f"partition {number}: start/size {a.start}/{a.size} on source, "
                         f"{b.start}/{b.size} on standby")
        elif a.type.lower() != b.type.lower():
            diffs.append(f"partition {number}: type {a.type} on source, {b.type} on standby")
    standby_fs = {f.name: f for f in disk.standby_filesystems}
    for fs in disk.filesystems:
        ok, _ = _copyable(fs)
        if not ok or is_excluded(fs.name, excluded):
            continue
        other = standby_fs.get(fs.name)
        if fs.volume is not None:
            theirs = other.volume if other is not None else None
            if theirs is None:
                diffs.append(f"{fs.name}: guest LV {fs.volume.vg}/{fs.volume.name} is missing "
                             "on the standby")
                continue
            if (theirs.segments, theirs.vg_uuid, theirs.uuid) != (
                    fs.volume.segments, fs.volume.vg_uuid, fs.volume.uuid):
                diffs.append(f"{fs.name}: guest LV {fs.volume.vg}/{fs.volume.name} differs "
                             "(UUIDs or extents) on the standby")
                continue
        if other is None or other.probe.type is None:
            diffs.append(f"{fs.name}: {fs.probe.type} on source, no filesystem on standby")
            continue
        if other.probe.type != fs.probe.type:
            diffs.append(f"{fs.name}: {fs.probe.type} on source, {other.probe.type} on standby")
        if other.probe.uuid != fs.probe.uuid:
            diffs.append(f"{fs.name}: UUID {fs.probe.uuid} on source, "
                         f"{other.probe.uuid} on standby")
        if other.probe.label != fs.probe.label:
            diffs.append(f"{fs.name}: label {fs.probe.label!r} on source, "
                         f"{other.probe.label!r} on standby")
        diffs += param_differences(fs.name, fs.params, other.params)
    return diffs


SKIP_KEY = "skip_filesystems"
EXCLUDED = f"excluded by config ({SKIP_KEY})"


def is_excluded(name: str, excluded: frozenset[str] | set[str]) -> bool:
    """Whether skip_filesystems names this filesystem, or the partition its guest LV is on."""
    return name in excluded or name.split(".", 1)[0] in excluded


def _gone(fs: FsFacts | None, standby: FsFacts) -> str | None:
    """Why a filesystem the standby holds is missing from the source, or None if it is not.

    The standby's filesystem counts only when the tool would copy it; the source's is
    missing when blkid finds none there, or one the tool does not copy: a filesystem never
    drops out of the backup unnoticed.
    """
    theirs, _ = _copyable(standby)
    if not theirs:
        return None
    what = f"{standby.probe.type} (UUID {standby.probe.uuid or '-'})"
    if fs is None:
        vol = standby.volume
        where = f"guest LV {vol.vg}/{vol.name}" if vol is not None else "it"
        return f"{what} on the standby, but {where} is gone from the source"
    ours, why = _copyable(fs)
    if ours:
        return None
    return f"{what} on the standby, but on the source: {why}"


def filesystem_fates(facts: BackupFacts, config: Config) -> tuple[FsFate, ...]:
    """Every filesystem of every disk (the source's, and guest LVs only the standby has), and
    its fate: copy, skipped (with the reason), excluded by skip_filesystems, or vanished.

    A name in skip_filesystems that is no filesystem of the domain's disks is a ConfigError.
    """
    domain_cfg = config.domain(facts.domain)
    excluded = frozenset(domain_cfg.skip_filesystems)
    known = {f.name for disk in facts.disks
             for f in (*disk.filesystems, *disk.standby_filesystems)}
    known |= {disk.target for disk in facts.skipped_disks}
    for name in domain_cfg.skip_filesystems:
        if name not in known:
            raise ConfigError(f"{config.path}: domains.{facts.domain}.{SKIP_KEY}: {name} is no "
                              f"filesystem of domain {facts.domain}'s disks (they hold: "
                              f"{', '.join(sorted(known)) or 'none'})")
    fates: list[FsFate] = []

    def judge(disk: DiskFacts, fs: FsFacts | None, standby: FsFacts | None) -> None:
        name = fs.name if fs is not None else standby.name  # type: ignore[union-attr]
        gone = _gone(fs, standby) if standby is not None else None
        fstype = fs.probe.type if fs is not None else None
        if is_excluded(name, excluded):
            fate, reason = "excluded", EXCLUDED
            if gone:
                reason += f"; {gone}: its standby copy is left as it is"
        elif gone:
            fate, reason = "vanished", gone
        else:
            assert fs is not None
            ok, why = _copyable(fs)
            fate, reason = ("copy", "") if ok else ("skipped", why)
        fates.append(FsFate(name, disk.disk.target, fate, reason, fstype,
                            domain_cfg.mounts.get(name)))

    for disk in facts.disks:
        ours = {f.name for f in disk.filesystems}
        theirs = {f.name: f for f in disk.standby_filesystems}
        # Guest LVs the standby has and the source does not, listed after their PV.
        only_theirs = [f for f in disk.standby_filesystems
                       if f.name not in ours and f.volume is not None]
        for fs in disk.filesystems:
            judge(disk, fs, theirs.get(fs.name))
            if fs.volume is None:
                for other in only_theirs:
                    if other.name.split(".", 1)[0] == fs.name:
                        judge(disk, None, other)
    return tuple(fates)
