"""The backup config: one TOML file, parsed once into frozen records, validated.

Unknown keys are errors. Every error is a ``ConfigError`` naming the file,
the dotted key and what was expected. The records' fields are the one table of keys:
each field's default, reader (``_Parser`` method and the form it expects) and doc
drive the parser, the records, the error messages and the sample config alike.
"""

from __future__ import annotations

import os
import posixpath
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from . import safefs
from .errors import ConfigError, DomainUnknown, NotRoot, UsageError
from .names import is_disk_target
from .rsync_options import extra_option_problem
from .runners import HostSpec, parse_host_spec
from .sizes import ABSOLUTE as ABSOLUTE_SIZE
from .sizes import size_bytes

DEFAULT_CONFIG_PATH = Path("/etc/domu-backup/backup.toml")
CONFIG_ENV = "DOMU_BACKUP_CONFIG"

# Dom0 and domain names: letters, digits and _ + . -, not starting with - or ".".
_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_+.-]*")
DOM0_NAME_MAX = 64
# A domain name is part of the snapshot LV "domubk-<run id>-<domain>-<disk>", whose
# device-mapper name "<vg>-<lv>" doubles each "-" and gets "-cow" or kpartx's
# "<delimiter><N>" appended; dm and LV names are at most 127 bytes. With a 32-character
# VG, a 21-character run id, an 8-character disk target, a 5-character delimiter and
# partition 128 that leaves 44 for the domain with its "-" doubled: 40 keeps a margin
# (tests/unit/test_config.py proves it with the tool's own name builders).
DOMAIN_NAME_MAX = 40
_PERCENT_ORIGIN = re.compile(r"([0-9]{1,3})%ORIGIN")
_DELIMITER = re.compile(r"[A-Za-z0-9_+.-]{1,5}")
# A directory or file the config names: plain characters only, absolute and normal.
_PLAIN_PATH = re.compile(r"(/[A-Za-z0-9._+@=,~-]+)+")
# Never a directory (or file) of the tool's: these trees, or exactly these directories.
SYSTEM_TREES = ("/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32",
                "/lib64", "/libx32", "/etc")
SYSTEM_DIRS = frozenset({"/", "/var", "/run", "/tmp", "/home", "/root", "/srv", "/opt",
                         "/mnt", "/media", "/var/lib", "/run/lock", "/var/run", "/var/lock",
                         "/var/tmp", "/var/log", "/var/cache"})
SSH_FILES_DIR = "/etc/domu-backup"  # the only place under /etc the config may name (ssh.*)
_CIPHER = re.compile(r"[A-Za-z0-9@._+-]+(,[A-Za-z0-9@._+-]+)*")
_BWLIMIT = re.compile(r"[1-9][0-9]*(\.[0-9]+)?[KMGTkmgt]?|0\.[0-9]*[1-9][0-9]*[KMGTkmgt]?")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    skip_filesystems: tuple[str, ...] = field(default=(), metadata={
        "read": _read("skip_filesystems"), "doc": (
        "Filesystems (named like the mounts keys) deliberately left out of the backup; "
        "their standby copy is left as it is. A partition's name also covers the guest "
        "LVs inside it. Each name once; a name that is no filesystem of the domain is an "
        "error.")})

    def effective_excludes(self, defaults: Defaults) -> tuple[str, ...]:
        """The default excludes followed by this domain's, each once."""
        return tuple(dict.fromkeys((*defaults.excludes, *self.excludes)))

    def effective_rsync_args(self, defaults: Defaults) -> tuple[str, ...]:
        """The default extra rsync options followed by this domain's."""
        return (*defaults.rsync_args, *self.rsync_args)

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


def default_config_path() -> Path:
    """The config path: ``$DOMU_BACKUP_CONFIG``, else /etc/domu-backup/backup.toml."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else DEFAULT_CONFIG_PATH


def check_root() -> None:
    """Raise NotRoot unless running as root."""
    if os.geteuid() != 0:
        raise NotRoot("this command needs root (LVM, device-mapper and mounts); "
                      f"running as uid {os.geteuid()}")


def load_config(path: Path | None = None, *, check_permissions: bool = True,
                allow_lab_hosts: bool = False, view: safefs.FsView = safefs.REAL) -> Config:
    """Read, parse and validate the config file; refuse files others could change.

    The config file, the SSH key and known_hosts must be owned by root (or the
    effective uid when not root) and not group- or world-writable, the key not
    readable by others either, each below directories only root can change
    (InsecureFile, exit 6). A missing key or known_hosts is the SSH runner's
    error to report when it is needed. ``local://`` and ``docker://`` Dom0s
    are refused unless ``allow_lab_hosts`` (the rehearsal lab).
    """
    path = Path(path) if path is not None else default_config_path()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (set {CONFIG_ENV} or "
                          "pass --config)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: "
                          f"{exc.strerror or exc}") from None
    if check_permissions:
        _check_trusted(path, os.path.abspath(path), "the config file", "", view)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    config = parse_config(text, path, allow_lab_hosts=allow_lab_hosts)
    if check_permissions:
        _check_trusted(path, str(config.ssh.key), "the SSH key", "ssh.key", view, secret=True)
        _check_trusted(path, str(config.ssh.known_hosts), "the known_hosts file",
                       "ssh.known_hosts", view)
    return config


def _check_trusted(config_path: Path, file: str, what: str, key: str, view: safefs.FsView,
                   *, secret: bool = False) -> None:
    try:
        safefs.check_trusted_file(file, what, secret=secret, view=view)
    except FileNotFoundError:
        if not key:
            raise ConfigError(f"{config_path}: no such config file") from None
        # a missing key or known_hosts is the SSH runner's error to report, when needed
    except OSError as exc:
        raise ConfigError(f"{config_path}: {key or 'config'}: cannot inspect {file}: "
                          f"{exc.strerror or exc}") from None


def parse_config(text: str, path: Path | str, *, allow_lab_hosts: bool = False) -> Config:
    """Parse and validate config text; ``path`` names the file in every error.

    ``allow_lab_hosts=False`` refuses ``local://`` and ``docker://`` Dom0s, as
    ``load_config`` (every operator's config) does by default.
    """
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: arrays or tables nested too deeply") from None
    return _Parser(path, allow_lab_hosts=allow_lab_hosts).config(data)


_REQUIRED = object()


class _Parser:
    """Walks the TOML tree, turning each table into its record; knows the file's name."""

    def __init__(self, path: Path, *, allow_lab_hosts: bool = False) -> None:
        self.path = path
        self.allow_lab_hosts = allow_lab_hosts
        self.dom0_names: list[str] = []  # known once [cluster.dom0s] is read
        self.warnings: list[str] = []
        self.given: set[str] = set()  # the dotted keys the file sets (Config.given)

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

    # records: each field read by the reader its metadata names ----------------

    def record(self, cls: type[_Record], table: Mapping[str, Any], dotted: str,
               **given: Any) -> _Record:
        """``cls`` from ``table``: only its fields' keys, each read by its own reader."""
        readable = [f for f in fields(cls) if "read" in f.metadata]  # type: ignore[arg-type]
        self.only(table, dotted, {f.name for f in readable},
                  former=[f.metadata["former"] for f in readable if "former" in f.metadata])
        values = dict(given)
        for f in readable:
            method, options = f.metadata["read"]
            key = self.key_of(table, dotted, f)
            values[f.name] = getattr(self, method)(table, key, f"{dotted}.{key}",
                                                   _default_of(f), **options)
            if key in table:
                self.given.add(f"{dotted}.{f.name}")
        return cls(**values)

    def key_of(self, table: Mapping[str, Any], dotted: str, f: Field[Any]) -> str:
        """The key ``f`` is read from: its name, or its former name (with a warning)."""
        former = f.metadata.get("former")
        if former is None or former not in table:
            return f.name
        if f.name in table:
            raise ConfigError(f"{self.path}: {dotted}.{former}: {former} is the former name of "
                              f"{f.name}; set {dotted}.{f.name} only")
        self.warnings.append(f"{self.path}: {dotted}.{former}: renamed {f.name}; the former "
                             "name is still read, rename it in the file")
        return former

    # tables ---------------------------------------------------------------

    def config(self, data: Mapping[str, Any]) -> Config:
        self.only(data, "", {"cluster", "hypervisor", "ssh", "defaults", "domains"})
        cluster = self.record(ClusterSettings, self.table(data, "cluster", "cluster", None,
                                                          required=True), "cluster")
        dom0s = cluster.dom0s
        self.dom0_names = sorted(dom0s)
        hypervisor = self.record(HypervisorSettings, self.table(
            data, "hypervisor", "hypervisor", None, required=True), "hypervisor")
        ssh = self.ssh(self.table(data, "ssh", "ssh", None))
        defaults = self.defaults(self.table(data, "defaults", "defaults", None))
        domains_table = self.table(data, "domains", "domains", None)
        domains = {name: self.domain(name, value) for name, value in domains_table.items()}
        self.unique_standby_lvs(domains)
        return Config(self.path, dom0s, hypervisor.uri, ssh, defaults,
                      MappingProxyType(domains), tuple(self.warnings), frozenset(self.given))

    def uri(self, table: Mapping[str, Any], key: str, dotted: str, default: Any) -> str:
        expected = 'a libvirt URI like "xen:///system"'
        uri = self.string(table, key, dotted, default, expected=expected)
        if not _URI.fullmatch(uri) or _CONTROL.search(uri):
            raise self.fail(dotted, expected, uri)
        return str(uri)

    def dom0s(self, cluster: Mapping[str, Any], key: str, dotted: str,
              default: Any) -> Mapping[str, HostSpec]:
        if key not in cluster:
            raise ConfigError(f"{self.path}: {dotted}: missing required table "
                              f"[{dotted}] (name = \"ssh://user@host:port\")")
        table = self.table(cluster, key, dotted, None)
        dom0s: dict[str, HostSpec] = {}
        where: dict[tuple[str, str, int], str] = {}
        for name, value in table.items():
            item = f"{dotted}.{_short(name)}"
            if not _NAME.fullmatch(name) or len(name) > DOM0_NAME_MAX:
                raise ConfigError(f"{self.path}: {item}: bad Dom0 name (expected letters, "
                                  "digits and _ . + -, not starting with - or ., at most "
                                  f"{DOM0_NAME_MAX} characters)")
            if not isinstance(value, str):
                raise self.fail(item, 'a host spec string like "ssh://root@host:22"', value)
            shown = _PASSWORD.sub(r"\1:***@", value)
            try:
                spec = parse_host_spec(value)
            except UsageError as exc:
                raise self.fail(item, f"a host spec like \"ssh://root@host:22\" ({exc})",
                                shown) from None
            if spec.scheme != "ssh" and not self.allow_lab_hosts:
                raise self.fail(item, 'an ssh:// host spec like "ssh://root@host:22" '
                                "(local:// and docker:// are for the rehearsal lab only)",
                                shown)
            address = (spec.scheme, spec.host, spec.port)
            if address in where:
                raise self.fail(item, "an address and port no other Dom0 has (cluster.dom0s."
                                f"{where[address]} is {dom0s[where[address]]})", shown)
            where[address] = name
            dom0s[name] = spec
        if len(dom0s) < 2:
            raise self.fail(dotted, "at least 2 Dom0s (this host and its peer)", sorted(dom0s))
        return MappingProxyType(dom0s)

    def ssh(self, table: Mapping[str, Any]) -> SSHSettings:
        return self.record(SSHSettings, table, "ssh")

    def defaults(self, table: Mapping[str, Any]) -> Defaults:
        defaults = self.record(Defaults, table, "defaults")
        self.check_mount_prefixes({key: getattr(defaults, key) for key in (
            "source_prefix", "peer_prefix", "state_dir", "report_dir", "lock_dir")})
        return defaults

    def check_mount_prefixes(self, dirs: Mapping[str, str]) -> None:
        """The two mount prefixes nest neither in each other nor in the tool's own dirs."""
        source, peer = dirs["source_prefix"], dirs["peer_prefix"]
        if _nested(source, peer):
            raise self.fail("defaults.peer_prefix", "a mount prefix apart from "
                            f"defaults.source_prefix ({source}), neither inside the other",
                            peer)
        for key in ("source_prefix", "peer_prefix"):
            for other in ("state_dir", "lock_dir", "report_dir"):
                if _nested(dirs[key], dirs[other]):
                    raise self.fail(f"defaults.{key}", f"a mount prefix apart from "
                                    f"defaults.{other} ({dirs[other]}), neither inside the "
                                    "other", dirs[key])

    def check_rsync_arg(self, value: str, dotted: str) -> None:
        # Only options from rsync_options.EXTRA_OPTIONS: nothing that could switch off a guard.
        problem = extra_option_problem(value)
        if problem is not None or _CONTROL.search(value):
            raise ConfigError(f"{self.path}: {dotted}: rsync option {_show(value)} refused: "
                              f"{problem or 'control characters'}; expected one of the "
                              "options allowed in rsync_args (README: \"rsync options "
                              "allowed in rsync_args\")")

    def check_exclude(self, value: str, dotted: str) -> None:
        if not value or _CONTROL.search(value):
            raise self.fail(dotted, "a non-empty rsync exclude pattern on one line", value)

    def domain(self, name: str, value: Any) -> DomainConfig:
        dotted = f"domains.{_short(name)}"
        if not _NAME.fullmatch(name) or len(name) + name.count("-") > DOMAIN_NAME_MAX:
            raise ConfigError(f"{self.path}: {dotted}: bad domain name (expected letters, "
                              "digits and _ . + -, not starting with - or ., at most "
                              f"{DOMAIN_NAME_MAX} characters with each - counted twice, as "
                              "device-mapper names double it)")
        if not isinstance(value, dict):
            raise self.fail(dotted, "a table", value)
        return self.record(DomainConfig, value, dotted, name=name)

    def peer(self, table: Mapping[str, Any], key: str, dotted: str, default: Any) -> str:
        expected = f"one of the cluster's Dom0s ({', '.join(self.dom0_names)})"
        peer = self.string(table, key, dotted, default, expected=expected)
        if peer not in self.dom0_names:
            raise self.fail(dotted, expected, peer)
        return str(peer)

    def unique_standby_lvs(self, domains: Mapping[str, DomainConfig]) -> None:
        """No two disks, of one domain or two, are copied onto the same standby LV."""
        seen: dict[str, str] = {}
        for name, domain in domains.items():
            for target, disk in domain.disks.items():
                if disk.standby_lv is None:
                    continue
                where = f"domains.{name}.disks.{target}"
                key = _lv_key(disk.standby_lv)
                if key in seen:
                    raise self.fail(f"{where}.standby_lv", "a standby LV no other disk is "
                                    f"copied onto ({seen[key]} has it)", disk.standby_lv)
                seen[key] = where

    def disks(self, domain: Mapping[str, Any], key: str, dotted: str,
              default: Any) -> Mapping[str, DiskConfig]:
        disks = {}
        for target, value in self.table(domain, key, dotted, None).items():
            where = f"{dotted}.{target}"
            if not is_disk_target(target):
                raise ConfigError(f"{self.path}: {where}: bad disk target name (expected a "
                                  "guest disk target like xvda, vdb or sda)")
            if not isinstance(value, dict):
                raise self.fail(where, "a table", value)
            disks[target] = self.record(DiskConfig, value, where)
        return MappingProxyType(disks)

    def standby_lv(self, disk: Mapping[str, Any], key: str, dotted: str,
                  default: None) -> str | None:
        standby_lv = self.string(disk, key, dotted, default)
        if standby_lv is not None and (not _clean_absolute(standby_lv) or " " in standby_lv
                                      or not standby_lv.startswith("/dev/")):
            raise self.fail(dotted, 'an absolute, normalized /dev/... path like "/dev/vg0/web01"',
                            standby_lv)
        return standby_lv

    def skip_filesystems(self, domain: Mapping[str, Any], key: str, dotted: str,
                         default: tuple[str, ...]) -> tuple[str, ...]:
        names = self.strings(domain, key, dotted, default)
        for index, name in enumerate(names):
            where = f"{dotted}[{index}]"
            if not is_disk_target(name):
                raise self.fail(where, "a filesystem name: a disk target plus partition "
                                "number like xvda1, or the disk target alone", name)
            if name in names[:index]:
                raise self.fail(where, "each filesystem named once", name)
        return names

    def mounts(self, domain: Mapping[str, Any], key: str, dotted: str,
               default: Any) -> Mapping[str, str]:
        mounts: dict[str, str] = {}
        for fs_name, value in self.table(domain, key, dotted, None).items():
            where = f"{dotted}.{fs_name}"
            if not is_disk_target(fs_name):
                raise ConfigError(f"{self.path}: {where}: bad filesystem name (expected a "
                                  "disk target plus partition number like xvda1, or the "
                                  "disk target alone)")
            if not isinstance(value, str):
                raise self.fail(where, "an absolute guest path string", value)
            if not _clean_absolute(value):
                raise self.fail(where, 'an absolute, normalized guest path without ".." '
                                'like "/" or "/var"', value)
            if value in mounts.values():
                other = next(k for k, v in mounts.items() if v == value)
                raise self.fail(where, f"a mount point not already used by {other}", value)
            mounts[fs_name] = value
        return MappingProxyType(mounts)


_Record = TypeVar("_Record")


def _default_of(f: Field[Any]) -> Any:
    """A field's default (its factory's product), or _REQUIRED for a key without one."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return _REQUIRED

def _clean_absolute(path: str) -> bool:
    """Absolute, one line, and already normal: no "..", ".", "//" or trailing "/"."""
    return (path.startswith("/") and not path.startswith("//") and not _CONTROL.search(path)
            and posixpath.normpath(path) == path)


_PASSWORD = re.compile(r"(://[^@/]*?):[^@/]*@")
_MAPPER_LV = re.compile(r"/dev/mapper/((?:[^-]|--)+)-((?:[^-]|--)+)")


def _short(name: str) -> str:
    """A table name for an error message: long names cut short."""
    return name if len(name) <= 80 else name[:60] + "..."


def _nested(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same directory or one lies inside the other."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


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


def _lv_key(path: str) -> str:
    """One name for an LV however it is written: /dev/VG/LV or /dev/mapper/VG-LV."""
    match = _MAPPER_LV.fullmatch(path)
    if match:
        return f"/dev/{match.group(1).replace('--', '-')}/{match.group(2).replace('--', '-')}"
    return path


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list) and len(repr(value)) > 60:
        return "a list"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
