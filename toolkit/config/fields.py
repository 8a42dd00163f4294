"""The config's one table of fields: the frozen records a config file is read into.

Each field's metadata names its reader (a ``_Parser`` method and its options), its doc
and, where it has one, its former name. The constants and forms the fields name are
here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import ConfigError, DomainUnknown
from ..retention import Retention
from ..runners import HostSpec
from ..sizes import ABSOLUTE as ABSOLUTE_SIZE
from ..sizes import size_bytes

DOM0_NAME_MAX = 64
# A domain name is part of the snapshot LV "domubk-<run id>-<domain>-<disk>", whose
# device-mapper name "<vg>-<lv>" doubles each "-" and gets "-cow" or kpartx's
# "<delimiter><N>" appended; dm and LV names are at most 127 bytes. With a 32-character
# VG, a 21-character run id, an 8-character disk target, a 5-character delimiter and
# partition 128 that leaves 44 for the domain with its "-" doubled: 40 keeps a margin
# (tests/unit/test_config.py proves it with the tool's own name builders).
DOMAIN_NAME_MAX = 40
_DELIMITER = re.compile(r"[A-Za-z0-9_+.-]{1,5}")
SSH_FILES_DIR = "/etc/domu-backup"  # the only place under /etc the config may name (ssh.*)
_CIPHER = re.compile(r"[A-Za-z0-9@._+-]+(,[A-Za-z0-9@._+-]+)*")
# A systemd calendar event and time span, in the characters their grammar uses (systemd
# itself is the judge: `systemd-analyze calendar`, and the test of the units).
_FREEZE = re.compile(r"none|agent")
_FREEZE_FALLBACK = re.compile(r"refuse|crash-consistent")
_CALENDAR = re.compile(r"[A-Za-z0-9*:,./~ -]{1,100}")
_TIMESPAN = re.compile(r"[0-9]{1,6}(us|ms|s|sec|m|min|h|hr|d|w)?( ?[0-9]{1,6}(us|ms|s|sec|m|"
                       r"min|h|hr|d|w))*")
_BWLIMIT = re.compile(r"[1-9][0-9]*(\.[0-9]+)?[KMGTkmgt]?|0\.[0-9]*[1-9][0-9]*[KMGTkmgt]?")


def _empty_mapping() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class SnapshotSize:
    """An lvcreate size: absolute (``2G``) or a percentage of the origin (``20%ORIGIN``)."""

    absolute: str | None = None
    percent_origin: int | None = None

    def bytes(self) -> int:
        """An absolute size in bytes (a percentage has none of its own: 0)."""
        return size_bytes(self.absolute) if self.absolute is not None else 0

    def lvcreate_args(self) -> list[str]:
        """The lvcreate options for this size: ``-L 2G`` or ``-l 20%ORIGIN``."""
        if self.absolute is not None:
            return ["-L", self.absolute]
        return ["-l", f"{self.percent_origin}%ORIGIN"]

    def __str__(self) -> str:
        return self.absolute if self.absolute is not None else f"{self.percent_origin}%ORIGIN"


# The records below are the config's one table of fields. Each key's field carries, as
# metadata: "read", how the parser reads and checks its TOML value (a _Parser method and
# its options, the expected form in every error message); "doc", the operator-facing
# description (the comment toolkit/sample.py writes above the key in the sample config,
# and so in the README); and, where the field's None is written another way in TOML,
# "toml_none" (the value the parser reads as None). The field's default is the key's
# default everywhere: parser, records and sample config.


def _read(method: str, **options: Any) -> tuple[str, Mapping[str, Any]]:
    """A field's reader: the ``_Parser`` method that reads, checks and converts its value."""
    return method, MappingProxyType(options)


@dataclass(frozen=True)
class ClusterSettings:
    """[cluster]: the Dom0s that back each other up."""

    dom0s: Mapping[str, HostSpec] = field(metadata={"read": _read("dom0s"), "doc": (
        "The Dom0s that back each other up: name = host spec. Every Dom0 uses the same "
        "file; the tool finds out which one it is running on. A name is letters, digits "
        f"and _ + . -, not starting with - or ., at most {DOM0_NAME_MAX} characters. A host "
        "spec is ssh://[user@]host[:port]: a host name, an IPv4 address or an IPv6 address "
        "in brackets (ssh://root@[2001:db8::2]:22), a port 1-65535 (22 by default), no "
        "password (the tool logs in with its key). At least two Dom0s; two may not share "
        "one address and port; local:// and docker:// are for the rehearsal lab only.")})


@dataclass(frozen=True)
class HypervisorSettings:
    """[hypervisor]: where this Dom0's domains are found."""

    uri: str = field(metadata={"read": _read("uri"), "doc": (
        "The libvirt URI of this Dom0's hypervisor, like \"xen:///system\".")})


@dataclass(frozen=True)
class SSHSettings:
    """How to reach the peer: the tool's own key and known_hosts, and timeouts."""

    key: Path = field(default=Path("/etc/domu-backup/id_ed25519"), metadata={
        "read": _read("ssh_file"), "doc": (
        "The tool's own private SSH key, for everything it runs on the peer and for "
        "rsync's ssh: owned by root and readable by root alone. A plain absolute path; "
        f"under /etc only in {SSH_FILES_DIR}/, never in another system directory.")})
    known_hosts: Path = field(default=Path("/etc/domu-backup/known_hosts"), metadata={
        "read": _read("ssh_file"), "doc": (
        "The tool's own known_hosts file, the only one it reads: the peer's host key must "
        "be in it. Owned by root, not group- or world-writable; a plain absolute path, "
        f"under /etc only in {SSH_FILES_DIR}/.")})
    connect_timeout: float = field(default=10.0, metadata={"read": _read("seconds"), "doc": (
        "Seconds to connect to the peer and authenticate: a number > 0 (rsync's ssh gets "
        "it rounded down to whole seconds).")})
    command_timeout: float = field(default=600.0, metadata={"read": _read("seconds"), "doc": (
        "Seconds any one of the tool's commands (taking a snapshot, mapping, mounting, ...) "
        "may take: a number > 0. The copy itself (rsync) has no time limit.")})
    keepalive: int = field(default=15, metadata={"read": _read("integer", low=0), "doc": (
        "Seconds between keepalives on the SSH connections to the peer, an integer, 0 or "
        "more: 0 = none on the tool's own connection and one a second on rsync's ssh, which "
        "gives up after 4 unanswered.")})
    # rsync's ssh: AES-GCM first (hardware AES makes it the fastest where the CPU has it;
    # measured by `invoke bench --workloads cipher`), ChaCha20 where the peer lacks it.
    cipher: str | None = field(
        default="aes128-gcm@openssh.com,chacha20-poly1305@openssh.com",
        metadata={"toml_none": "", "read": _read(
            "pattern", regex=_CIPHER, expected='an ssh cipher name like "aes128-gcm@openssh.com"'),
            "doc": (
            "The ciphers rsync's ssh offers (ssh -c), comma-separated, preferred first; \"\" "
            "leaves the choice to ssh. AES-GCM is the fastest where the CPU has AES "
            "instructions, ChaCha20 where it lacks them.")})


@dataclass(frozen=True)
class RestorePoints:
    """[defaults.restore_points] and [domains.NAME.restore_points]: the standby's history."""

    keep_last: int = field(default=0, metadata={"read": _read("integer", low=0), "doc": (
        "Keep the N newest restore points (an integer, 0 or more). A restore point is a "
        "snapshot of every standby LV of the domain, taken on the peer after each run that "
        "left the standby clean. With keep_last, keep_daily and keep_weekly all 0 (the "
        "default) no point is taken and none is removed.")})
    keep_daily: int = field(default=0, metadata={"read": _read("integer", low=0), "doc": (
        "Also keep the newest point of each of the N newest days (UTC) that have one.")})
    keep_weekly: int = field(default=0, metadata={"read": _read("integer", low=0), "doc": (
        "Also keep the newest point of each of the N newest ISO weeks (UTC) that have one.")})
    size: SnapshotSize = field(default=SnapshotSize(percent_origin=20), metadata={
        "read": _read("size"), "doc": (
        "The copy-on-write size of each point of a standby that is not a thin LV (a classic "
        "snapshot): \"2G\" or \"<1-100>%ORIGIN\", like snapshot_size. A classic point "
        "that fills up becomes invalid and is removed by the next run. A thin standby's "
        "points are thin snapshots and need no size.")})

    @property
    def retention(self) -> Retention:
        """The keep rules, as ``retention.select`` takes them."""
        return Retention(self.keep_last, self.keep_daily, self.keep_weekly)


@dataclass(frozen=True)
class ScheduleSettings:
    """[schedule]: when the systemd timers ``install-units`` writes run ``backup --all`` and
    ``verify --against-source --all``."""

    on_calendar: str = field(default="*-*-* 02:00:00", metadata={"read": _read(
        "pattern", regex=_CALENDAR, expected='a systemd calendar event like "daily" or '
        '"*-*-* 02:00:00"', empty_is_none=False), "doc": (
        "When the timer starts the backup, as systemd.time(7) writes a calendar event "
        "(OnCalendar=): \"daily\", \"*-*-* 02:00:00\", \"Mon..Fri 22:30\". Check one "
        "with `systemd-analyze calendar`.")})
    randomized_delay: str = field(default="30m", metadata={"read": _read(
        "pattern", regex=_TIMESPAN, expected='a systemd time span like "30m" or "1h"',
        empty_is_none=False), "doc": (
        "Up to how long after it the start is put off, at random (RandomizedDelaySec=), "
        "so a fleet of Dom0s does not start at once: a systemd time span like \"30m\", "
        "\"1h\", \"0\".")})
    verify_on_calendar: str = field(default="Sun *-*-* 04:00:00", metadata={"read": _read(
        "pattern", regex=_CALENDAR, expected='a systemd calendar event like "weekly" or '
        '"Sun *-*-* 04:00:00"', empty_is_none=False), "doc": (
        "When the second timer runs `verify --against-source --all`: each guest running "
        "here compared with its standby by checksum, writing nothing (weekly by default; "
        "it reads every file on both hosts, so keep it apart from the backup).")})


@dataclass(frozen=True)
class MonitoringSettings:
    """[monitoring]: what the tool leaves for the monitoring system after each run."""

    textfile: str | None = field(default=None, metadata={"toml_none": "", "read": _read(
        "textfile"), "doc": (
        "\"\" for none, else the Prometheus text file node_exporter's textfile collector "
        "reads (a plain absolute path ending in .prom, in a directory that exists): after "
        "every backup it is replaced, atomically, with each domain's last success, last "
        "exit code, phase times, bytes sent, files changed, standby state, restore points "
        "and snapshot fill.")})


@dataclass(frozen=True)
class Hooks:
    """[defaults.hooks] and [domains.NAME.hooks]: programs run around a domain's snapshots
    and when its backup ends."""

    on_success: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_hook_word"), "doc": (
        "Run after each domain's backup that succeeded (exit 0 or 1): an argv list, the "
        "program an absolute path, no shell unless it is the program you name, like "
        "[\"/usr/local/bin/ping-healthcheck\", \"web01\"]. Its environment has "
        "DOMU_BACKUP_DOMAIN, DOMU_BACKUP_RUN_ID, DOMU_BACKUP_OUTCOME and "
        "DOMU_BACKUP_EXIT_CODE; its standard input is the domain's JSON report. [] for "
        "none.")})
    on_failure: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_hook_word"), "doc": (
        "The same after each domain's backup that failed or was interrupted.")})
    timeout: float = field(default=60.0, metadata={"read": _read("seconds"), "doc": (
        "Seconds a hook may run before it is killed: a number > 0. A hook that fails or "
        "times out is logged and in the report; it never changes the backup's exit code.")})

    pre_snapshot: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_hook_word"), "doc": (
        "Run on the source right before the domain's snapshots are taken (flush a database "
        "in the guest over SSH, say): an argv list like on_success, with DOMU_BACKUP_DOMAIN, "
        "DOMU_BACKUP_RUN_ID and DOMU_BACKUP_PHASE=pre_snapshot. If it fails (or times out) "
        "the run stops before any snapshot, exit 38. [] for none.")})
    post_snapshot: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_hook_word"), "doc": (
        "Run on the source right after the snapshots exist, with DOMU_BACKUP_PHASE="
        "post_snapshot. Once pre_snapshot ran it always runs: after the snapshots, or in "
        "teardown when the run fails or is signalled before them, or by recover after a "
        "kill or a power loss (it is journalled). Its failure is a warning in the report.")})

    def argv(self, outcome: str) -> tuple[str, ...]:
        """The hook for a domain's outcome (success, failed, interrupted; none else)."""
        if outcome == "success":
            return self.on_success
        return self.on_failure if outcome in ("failed", "interrupted") else ()


@dataclass(frozen=True)
class Defaults:
    """Settings every domain inherits; each field's metadata "doc" says what it means."""

    snapshot_size: SnapshotSize = field(default=SnapshotSize(percent_origin=20), metadata={
        "read": _read("size"), "doc": (
                "The size of the read-only LVM snapshot taken of each guest disk: a whole "
                "number with a unit K, M, G or T (\"2G\", \"512M\"), or a percentage of the "
                "disk, \"<1-100>%ORIGIN\". A domain's own snapshot_size replaces it.")})
    kpartx_delimiter: str = field(default="p", metadata={"read": _read(
        "pattern", regex=_DELIMITER, expected="a delimiter of 1 to 5 letters, digits or _ + . -",
        empty_is_none=False), "doc": (
        "What kpartx puts between a mapped disk's name and its partition number "
        "(/dev/mapper/<snapshot>p1, p2, ...): 1 to 5 letters, digits or _ + . -.")})
    source_prefix: str = field(default="/run/domu-backup/src", metadata={
        "read": _read("absolute_path"), "doc": (
        "The snapshots are mounted read-only below this directory, in a directory of "
        "their own per run.")})
    peer_prefix: str = field(default="/run/domu-backup/dst", metadata={
        "read": _read("absolute_path"), "former": "target_prefix", "doc": (
        "The standby's filesystems are mounted below this directory on the peer.")})
    state_dir: str = field(default="/var/lib/domu-backup", metadata={
        "read": _read("absolute_path"), "doc": (
        "Journals for crash recovery (on both hosts) and the standby markers (on the peer, "
        "in standby/).")})
    report_dir: str = field(default="/var/lib/domu-backup/reports", metadata={
        "read": _read("absolute_path"), "doc": (
        "The JSON reports: last.json, <domain>.json and history.jsonl (made 0750 when "
        "missing).")})
    lock_dir: str = field(default="/run/lock/domu-backup", metadata={
        "read": _read("absolute_path"), "doc": (
        "One lock file per domain, so two runs never back up one domain at once (made 0755 "
        "when missing).")})
    rsync_args: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_rsync_arg"), "doc": (
        "Extra rsync options for every copy, e.g. [\"--partial\"]: only options from the "
        "README's list \"rsync options allowed in rsync_args\", one option per string, a "
        "valued one as \"--name=VALUE\". A domain's rsync_args come after these.")})
    excludes: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_exclude"), "doc": (
        "rsync exclude patterns for every domain, each non-empty and on one line. An "
        "absolute pattern is a guest path (\"/var/cache/*\" applies to the filesystem "
        "mounted at /var); a relative one (\"*.tmp\") applies to every filesystem.")})
    bwlimit: str | None = field(default=None, metadata={"toml_none": "", "read": _read(
        "pattern", regex=_BWLIMIT,
        expected='an rsync --bwlimit rate like "20M" or "5000" (or "" for none)'), "doc": (
        "The bandwidth limit of each rsync (rsync --bwlimit): \"\" for none, else KiB/s "
        "(\"5000\") or a rate with a unit K, M, G or T in either case (\"20M\", \"1.5g\"), more "
        "than 0.")})
    compress: bool = field(default=False, metadata={"read": _read("boolean"), "doc": (
        "Compress the copy's traffic with ssh compression (Compression=yes on rsync's "
        "ssh): true or false.")})
    max_delete: int = field(default=10000, metadata={"read": _read("integer", low=0), "doc": (
        "At most this many files and directories one filesystem's copy may delete on the "
        "standby (rsync --max-delete; an integer >= 0, 0 = delete nothing): past it rsync "
        "deletes no more and the run fails, unless run with --allow-mass-delete.")})
    snapshot_max_fill: int = field(default=80, metadata={
        "read": _read("integer", low=1, high=100), "doc": (
        "How full, in percent (an integer 1-100), a snapshot's copy-on-write area may get "
        "during the copy: there the snapshot is grown by snapshot_extend, or the copy is "
        "stopped before the snapshot overflows.")})
    snapshot_extend: str | None = field(default=None, metadata={"toml_none": "", "read": _read(
        "pattern", regex=ABSOLUTE_SIZE,
        expected='an lvextend step like "256M" (or "" to abort at the threshold)'), "doc": (
        "\"\" to stop the copy when a snapshot reaches snapshot_max_fill, else how much to "
        "grow it each time it does (lvextend -L +SIZE): a whole number with a unit K, M, G "
        "or T, like \"256M\".")})
    allow_vanished: bool = field(default=False, metadata={"read": _read("boolean"), "doc": (
        "Treat rsync exit 24 (source files vanished) as success. Files cannot vanish from "
        "a snapshot unless something is wrong, so by default it is a failure.")})
    copy_unlisted: bool = field(default=True, metadata={"read": _read("boolean"), "doc": (
        "Also copy the filesystems that neither the guest's fstab nor the domain's mounts "
        "name; false lists them as skipped.")})
    restore_points: RestorePoints = field(default=RestorePoints(), metadata={
        "read": _read("restore_points"), "doc": (
        "The table [defaults.restore_points] (keep_last, keep_daily, keep_weekly, size): "
        "restore points for every domain. A domain's own [domains.NAME.restore_points] "
        "replaces the keys it sets.")})
    hooks: Hooks = field(default=Hooks(), metadata={
        "read": _read("hooks"), "doc": (
        "The table [defaults.hooks] (on_success, on_failure, timeout): programs run when "
        "a domain's backup ends. A domain's own [domains.NAME.hooks] replaces the keys it "
        "sets.")})
    thin_pool_max_fill: int = field(default=80, metadata={
        "read": _read("integer", low=1, high=100), "doc": (
        "Where a standby LV is a thin LV: how full, in percent (an integer 1-100), its thin "
        "pool's data or metadata may be before a run. Above it the run is refused before "
        "anything is written: a full thin pool stops every LV in it.")})
    copy_jobs: int = field(default=1, metadata={"read": _read("integer", low=1, high=16), "doc": (
        "How many filesystems of one domain are copied at once, rsyncs side by side: an "
        "integer 1-16 (1 = one after another).")})


@dataclass(frozen=True)
class DiskConfig:
    """Per guest disk settings; ``standby_lv=None`` means the peer uses the source path."""

    standby_lv: str | None = field(default=None, metadata={
        "read": _read("standby_lv"), "former": "target_lv", "doc": (
        "The standby LV on the peer, an absolute, normalized /dev/... path (/dev/VG/LV or "
        "/dev/mapper/VG-LV). By default it is the source LV's path; set it when the peer's "
        "volume group is named differently. No two disks (of one domain or two) may name "
        "the same standby LV.")})


@dataclass(frozen=True)
class DomainConfig:
    """One domain's backup settings."""

    name: str = field(metadata={"doc": (
        "One table per domain, [domains.NAME], NAME as libvirt names it: letters, digits "
        "and _ + . -, not starting with - or ., at most "
        f"{DOMAIN_NAME_MAX} characters, each \"-\" counted twice (it is part of "
        "device-mapper names, which double it). Its disks are found in the domain's XML; "
        "the guest's own /etc/fstab says where each filesystem belongs.")})
    peer: str = field(metadata={"read": _read("peer"), "doc": (
        "The Dom0 that keeps the standby copy: one of the names in [cluster.dom0s]. "
        "Required.")})
    excludes: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_exclude"), "doc": (
        "rsync exclude patterns for this domain, added to defaults.excludes (the same "
        "rules).")})
    rsync_args: tuple[str, ...] = field(default=(), metadata={
        "read": _read("strings", check="check_rsync_arg"), "doc": (
        "Extra rsync options for this domain, after defaults.rsync_args (from the same "
        "list).")})
    snapshot_size: SnapshotSize | None = field(default=None, metadata={
        "read": _read("size"), "doc": (
        "This domain's snapshot size, in place of defaults.snapshot_size (the same forms); "
        "leave it out to use the default.")})
    disks: Mapping[str, DiskConfig] = field(default_factory=_empty_mapping, metadata={
        "read": _read("disks"), "doc": (
        "Per disk settings: one table [domains.NAME.disks.TARGET] per guest disk, TARGET "
        "its target in the domain's XML (xvda, vdb, sda, ...). A disk without one is "
        "copied onto the peer's LV with its source LV's path.")})
    mounts: Mapping[str, str] = field(default_factory=_empty_mapping, metadata={
        "read": _read("mounts"), "doc": (
        "Only needed when the guest's fstab cannot be used: filesystem name (disk target "
        "plus partition number like xvda1, or the disk target alone) = the absolute guest "
        "path it is mounted at, each path once. It overrides the guest's fstab.")})
    freeze: str = field(default="none", metadata={"read": _read(
        "pattern", regex=_FREEZE, expected='"none" or "agent"', empty_is_none=False), "doc": (
        "\"agent\": the guest's filesystems are frozen through its guest agent (virsh "
        "domfsfreeze) right before the snapshots and thawed right after they exist, so the "
        "snapshot is what the filesystems agree with; the thaw is journalled and run by "
        "teardown and recover, so a guest is never left frozen. \"none\": crash-"
        "consistent snapshots.")})
    freeze_fallback: str = field(default="refuse", metadata={"read": _read(
        "pattern", regex=_FREEZE_FALLBACK, expected='"refuse" or "crash-consistent"',
        empty_is_none=False), "doc": (
        "When freeze = \"agent\" and the agent does not answer: \"refuse\" (the run stops "
        "before any snapshot, exit 39) or \"crash-consistent\" (it goes on and says so in "
        "the report).")})
    skip_filesystems: tuple[str, ...] = field(default=(), metadata={
        "read": _read("skip_filesystems"), "doc": (
        "Filesystems (named like the mounts keys) deliberately left out of the backup; "
        "their standby copy is left as it is. A partition's name also covers the guest "
        "LVs inside it. Each name once; a name that is no filesystem of the domain is an "
        "error.")})

    restore_points: RestorePoints | None = field(default=None, metadata={
        "read": _read("restore_points"), "doc": (
        "This domain's restore points, [domains.NAME.restore_points]: the keys of "
        "[defaults.restore_points]; a key it leaves out has the default's value.")})

    hooks: Hooks | None = field(default=None, metadata={
        "read": _read("hooks"), "doc": (
        "This domain's hooks, [domains.NAME.hooks]: the keys of [defaults.hooks]; a key "
        "it leaves out has the default's value.")})

    def effective_hooks(self, defaults: Defaults) -> Hooks:
        """This domain's hooks (the defaults' where it has none)."""
        return self.hooks or defaults.hooks

    def effective_excludes(self, defaults: Defaults) -> tuple[str, ...]:
        """The default excludes followed by this domain's, each once."""
        return tuple(dict.fromkeys((*defaults.excludes, *self.excludes)))

    def effective_rsync_args(self, defaults: Defaults) -> tuple[str, ...]:
        """The default extra rsync options followed by this domain's."""
        return (*defaults.rsync_args, *self.rsync_args)

    def effective_restore_points(self, defaults: Defaults) -> RestorePoints:
        """This domain's restore point settings (the defaults' where it has none)."""
        return self.restore_points or defaults.restore_points

    def effective_snapshot_size(self, defaults: Defaults) -> SnapshotSize:
        """This domain's snapshot size, or the default one."""
        return self.snapshot_size or defaults.snapshot_size

    def standby_lv(self, disk_target: str, source_lv: str) -> str:
        """The peer's LV for a guest disk: the configured one, else the source path."""
        disk = self.disks.get(disk_target)
        if disk is not None and disk.standby_lv is not None:
            return disk.standby_lv
        return source_lv


@dataclass(frozen=True)
class Config:
    """The whole backup config, as loaded from ``path``."""

    path: Path
    dom0s: Mapping[str, HostSpec]
    hypervisor_uri: str
    ssh: SSHSettings = SSHSettings()
    defaults: Defaults = Defaults()
    domains: Mapping[str, DomainConfig] = field(default_factory=_empty_mapping)
    monitoring: MonitoringSettings = MonitoringSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    # What the file says in a way that still works but should change (a key's former name).
    warnings: tuple[str, ...] = ()
    # The dotted keys the file sets, each under its field's name (a former name counts as
    # its field's), whatever the value: "defaults.max_delete", "domains.web01.disks.xvda.
    # standby_lv", "domains.web01.mounts". A field not in it has its default.
    given: frozenset[str] = frozenset()

    def domain(self, name: str) -> DomainConfig:
        """The named domain's config; DomainUnknown if the file has none."""
        try:
            return self.domains[name]
        except KeyError:
            known = ", ".join(sorted(self.domains)) or "none"
            raise DomainUnknown(f"{self.path}: domain {name!r} is not configured "
                                f"(configured: {known})") from None

    def dom0(self, name: str) -> HostSpec:
        """The host spec of a cluster Dom0 by name."""
        try:
            return self.dom0s[name]
        except KeyError:
            raise ConfigError(f"{self.path}: no Dom0 named {name!r} in cluster.dom0s "
                              f"({', '.join(sorted(self.dom0s))})") from None

    def peer_of(self, domain: str) -> tuple[str, HostSpec]:
        """The (name, host spec) of the Dom0 that keeps the domain's standby."""
        peer = self.domain(domain).peer
        return peer, self.dom0(peer)
