"""The TOML parser: ``parse_config`` and ``_Parser``, which turns each table into its record.

Unknown keys are errors. Every error is a ``ConfigError`` naming the file, the dotted
key and what was expected. Each record's field is read by the reader its metadata names.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ..errors import ConfigError, UsageError
from ..names import is_disk_target
from ..rsync_options import extra_option_problem
from ..runners import HostSpec, parse_host_spec
from .fields import (
    DOM0_NAME_MAX,
    DOMAIN_NAME_MAX,
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
    SSHSettings,
)
from .readers import _CONTROL, _REQUIRED, _clean_absolute, _Reader, _show

# Dom0 and domain names: letters, digits and _ + . -, not starting with - or ".".
_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9_+.-]*")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]*")


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


class _Parser(_Reader):
    """Walks the TOML tree, turning each table into its record; knows the file's name."""

    # records: each field read by the reader its metadata names ----------------

    def record(self, cls: type[_Record], table: Mapping[str, Any], dotted: str,
               base: Any = None, **given: Any) -> _Record:
        """``cls`` from ``table``: only its fields' keys, each read by its own reader. A key
        the table leaves out has its field's default, or ``base``'s value where given."""
        readable = [f for f in fields(cls) if "read" in f.metadata]  # type: ignore[arg-type]
        self.only(table, dotted, {f.name for f in readable},
                  former=[f.metadata["former"] for f in readable if "former" in f.metadata])
        values = dict(given)
        for f in readable:
            method, options = f.metadata["read"]
            key = self.key_of(table, dotted, f)
            default = _default_of(f) if base is None else getattr(base, f.name)
            values[f.name] = getattr(self, method)(table, key, f"{dotted}.{key}", default,
                                                   **options)
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
        self.only(data, "", {"cluster", "hypervisor", "ssh", "defaults", "domains",
                             "monitoring", "schedule"})
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
        monitoring = self.record(MonitoringSettings, self.table(
            data, "monitoring", "monitoring", None), "monitoring")
        schedule = self.record(ScheduleSettings, self.table(data, "schedule", "schedule", None),
                               "schedule")
        return Config(self.path, dom0s, hypervisor.uri, ssh, defaults,
                      MappingProxyType(domains), monitoring, schedule, tuple(self.warnings),
                      frozenset(self.given))

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
        self.point_defaults = defaults.restore_points
        self.hook_defaults = defaults.hooks
        self.check_mount_prefixes({key: getattr(defaults, key) for key in (
            "source_prefix", "peer_prefix", "state_dir", "report_dir", "lock_dir")})
        return defaults

    def hooks(self, table: Mapping[str, Any], key: str, dotted: str,
              default: Hooks | None) -> Hooks | None:
        """[defaults.hooks], or a domain's: a domain's keys replace the defaults' one by one."""
        if key not in table:
            return default
        sub = self.table(table, key, dotted, None)
        base = self.hook_defaults if dotted.startswith("domains.") else None
        hooks = self.record(Hooks, sub, dotted, base)
        for name in ("on_success", "on_failure", "pre_snapshot", "post_snapshot"):
            argv = getattr(hooks, name)
            if argv and not _clean_absolute(argv[0]):
                raise self.fail(f"{dotted}.{name}[0]", "the program as an absolute, "
                                "normalized path", argv[0])
        return hooks

    def check_hook_word(self, value: str, dotted: str) -> None:
        if not value or "\0" in value or _CONTROL.search(value):
            raise self.fail(dotted, "a non-empty word on one line", value)

    def restore_points(self, table: Mapping[str, Any], key: str, dotted: str,
                       default: RestorePoints | None) -> RestorePoints | None:
        """[defaults.restore_points], or a domain's: a domain's keys replace the defaults'
        one by one (``self.point_defaults``, read before any domain)."""
        if key not in table:
            return default
        sub = self.table(table, key, dotted, None)
        base = self.point_defaults if dotted.startswith("domains.") else None
        return self.record(RestorePoints, sub, dotted, base)

    def textfile(self, table: Mapping[str, Any], key: str, dotted: str,
                 default: str | None) -> str | None:
        """An absolute path ending in .prom (node_exporter reads only those), or None."""
        expected = 'a plain absolute path ending in .prom, or "" for none'
        value = self.string(table, key, dotted, default, expected=expected)
        if value in (None, ""):
            return None
        path = self.absolute_path({key: value}, key, dotted, value)
        if not path.endswith(".prom") or posixpath.basename(path) == ".prom":
            raise self.fail(dotted, expected, value)
        return path

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


_PASSWORD = re.compile(r"(://[^@/]*?):[^@/]*@")
_MAPPER_LV = re.compile(r"/dev/mapper/((?:[^-]|--)+)-((?:[^-]|--)+)")


def _short(name: str) -> str:
    """A table name for an error message: long names cut short."""
    return name if len(name) <= 80 else name[:60] + "..."


def _nested(a: str, b: str) -> bool:
    """``a`` and ``b`` are the same directory or one lies inside the other."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _lv_key(path: str) -> str:
    """One name for an LV however it is written: /dev/VG/LV or /dev/mapper/VG-LV."""
    match = _MAPPER_LV.fullmatch(path)
    if match:
        return f"/dev/{match.group(1).replace('--', '-')}/{match.group(2).replace('--', '-')}"
    return path
