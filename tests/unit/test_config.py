"""The config loader: every key validated, unknown keys refused, errors that
name the file and the key, permission checks, and garbage never crashes it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import errors
from toolkit.config import (
    ClusterSettings,
    Config,
    Defaults,
    DiskConfig,
    DomainConfig,
    HypervisorSettings,
    SnapshotSize,
    SSHSettings,
    check_root,
    default_config_path,
    load_config,
    parse_config,
)
from toolkit.runners import HostSpec

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "config"
CONF = Path("/etc/domu-backup/backup.toml")

BASE = """\
[cluster.dom0s]
dom0-a = "ssh://root@dom0-a:22"
dom0-b = "ssh://root@dom0-b:22"

[hypervisor]
uri = "xen:///system"
"""


def parse(extra: str = "") -> Config:
    return parse_config(BASE + extra, CONF)


def config_error(text: str) -> str:
    with pytest.raises(errors.ConfigError) as caught:
        parse_config(text, CONF)
    message = str(caught.value)
    assert message.startswith(f"{CONF}: ")
    return message


# --- the example and the defaults ------------------------------------------------


def test_example_config_loads_with_its_documented_values() -> None:
    config = load_config(FIXTURES / "example.toml", check_permissions=False)
    assert dict(config.dom0s) == {
        "xen-a": HostSpec("ssh", "xen-a.example.net", "root", 22),
        "xen-b": HostSpec("ssh", "xen-b.example.net", "root", 22),
    }
    assert config.hypervisor_uri == "xen:///system"
    web01 = config.domain("web01")
    assert web01.peer == "xen-b"
    assert config.peer_of("web01") == ("xen-b", config.dom0s["xen-b"])
    assert web01.disks == {"xvda": DiskConfig("/dev/vg0/web01")}
    assert web01.standby_lv("xvda", "/dev/vg0/web01") == "/dev/vg0/web01"
    assert dict(web01.mounts) == {"xvda1": "/", "xvda2": "/var"}
    assert web01.effective_snapshot_size(config.defaults).lvcreate_args() == ["-L", "2G"]
    assert config.ssh == SSHSettings()
    assert config.defaults == Defaults()


def test_skip_filesystems_names_filesystems_like_the_mounts_keys() -> None:
    config = parse('[domains.web01]\npeer = "dom0-b"\nskip_filesystems = ["xvda1", "xvdb"]\n')
    assert config.domain("web01").skip_filesystems == ("xvda1", "xvdb")
    assert parse('[domains.web01]\npeer = "dom0-b"\n').domain("web01").skip_filesystems == ()


def test_a_minimal_config_gets_the_documented_defaults() -> None:
    config = parse('[domains.web01]\npeer = "dom0-b"\n')
    d = config.defaults
    assert d.snapshot_size == SnapshotSize(percent_origin=20)
    assert d.snapshot_size.lvcreate_args() == ["-l", "20%ORIGIN"]
    assert (d.kpartx_delimiter, d.source_prefix, d.peer_prefix) == (
        "p", "/run/domu-backup/src", "/run/domu-backup/dst")
    assert (d.state_dir, d.report_dir, d.lock_dir) == (
        "/var/lib/domu-backup", "/var/lib/domu-backup/reports", "/run/lock/domu-backup")
    assert (d.rsync_args, d.excludes, d.bwlimit, d.compress) == ((), (), None, False)
    assert (d.max_delete, d.snapshot_max_fill, d.snapshot_extend, d.allow_vanished) == (
        10000, 80, None, False)
    ssh = config.ssh
    assert (ssh.key, ssh.known_hosts) == (Path("/etc/domu-backup/id_ed25519"),
                                          Path("/etc/domu-backup/known_hosts"))
    assert (ssh.connect_timeout, ssh.command_timeout, ssh.keepalive, ssh.cipher) == (
        10.0, 600.0, 15, "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com")
    web01 = config.domain("web01")
    assert web01 == DomainConfig("web01", "dom0-b")
    assert web01.standby_lv("xvda", "/dev/vg_a/web01") == "/dev/vg_a/web01"
    assert config.domains["web01"] is web01


def test_every_setting_is_read() -> None:
    config = parse("""
[ssh]
key = "/root/k"
known_hosts = "/root/kh"
connect_timeout = 2.5
command_timeout = 30
keepalive = 0
cipher = "aes128-gcm@openssh.com"

[defaults]
snapshot_size = "512M"
kpartx_delimiter = "-part"
source_prefix = "/srv/src"
peer_prefix = "/srv/dst"
state_dir = "/srv/state"
report_dir = "/srv/reports"
lock_dir = "/run/lock/x"
rsync_args = ["--partial", "--checksum"]
excludes = ["/tmp/*", "/proc/*"]
bwlimit = "20M"
compress = true
max_delete = 0
snapshot_max_fill = 100
snapshot_extend = "256M"
allow_vanished = true

[domains."db.example+1"]
peer = "dom0-a"
excludes = ["/var/tmp/*", "/tmp/*"]
rsync_args = ["--inplace"]
snapshot_size = "100%ORIGIN"
[domains."db.example+1".disks.xvdb]
[domains."db.example+1".disks.vda]
standby_lv = "/dev/mapper/vg_b-db"
""")
    assert config.ssh == SSHSettings(Path("/root/k"), Path("/root/kh"), 2.5, 30.0, 0,
                                     "aes128-gcm@openssh.com")
    d = config.defaults
    assert d == Defaults(SnapshotSize(absolute="512M"), "-part", "/srv/src", "/srv/dst",
                         "/srv/state", "/srv/reports", "/run/lock/x", ("--partial", "--checksum"),
                         ("/tmp/*", "/proc/*"), "20M", True, 0, 100, "256M", True)
    db = config.domain("db.example+1")
    assert db.effective_excludes(d) == ("/tmp/*", "/proc/*", "/var/tmp/*")
    assert db.effective_rsync_args(d) == ("--partial", "--checksum", "--inplace")
    assert db.effective_snapshot_size(d).lvcreate_args() == ["-l", "100%ORIGIN"]
    assert db.disks == {"xvdb": DiskConfig(None), "vda": DiskConfig("/dev/mapper/vg_b-db")}
    assert db.standby_lv("xvdb", "/dev/vg_a/db-b") == "/dev/vg_a/db-b"
    assert db.standby_lv("vda", "/dev/vg_a/db") == "/dev/mapper/vg_b-db"


def test_config_is_immutable() -> None:
    config = parse('[domains.web01]\npeer = "dom0-b"\n[domains.web01.mounts]\nxvda1 = "/"\n')
    with pytest.raises(TypeError):
        config.domains["evil"] = config.domains["web01"]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.dom0s["dom0-c"] = HostSpec("local")  # type: ignore[index]
    with pytest.raises(TypeError):
        config.domains["web01"].mounts["xvda2"] = "/var"  # type: ignore[index]
    with pytest.raises(AttributeError):
        config.hypervisor_uri = "qemu:///system"  # type: ignore[misc]
    assert isinstance(config.defaults.excludes, tuple)


def test_unknown_domain_names_the_file() -> None:
    config = parse('[domains.web01]\npeer = "dom0-b"\n')
    with pytest.raises(errors.DomainUnknown) as caught:
        config.domain("web02")
    assert str(CONF) in str(caught.value) and "web02" in str(caught.value)
    assert "web01" in str(caught.value)


# --- snapshot sizes ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "args"), [
    ("2G", ["-L", "2G"]), ("512M", ["-L", "512M"]), ("1T", ["-L", "1T"]),
    ("4096K", ["-L", "4096K"]), ("1%ORIGIN", ["-l", "1%ORIGIN"]),
    ("20%ORIGIN", ["-l", "20%ORIGIN"]), ("100%ORIGIN", ["-l", "100%ORIGIN"]),
])
def test_snapshot_size_becomes_lvcreate_args(text: str, args: list[str]) -> None:
    assert parse(f'[defaults]\nsnapshot_size = "{text}"\n').defaults.snapshot_size \
        .lvcreate_args() == args


@pytest.mark.parametrize("value", ['"0G"', '"0%ORIGIN"', '"101%ORIGIN"', '"2GB"', '"2 G"',
                                   '"G"', '"1.5G"', '"-2G"', '"20%"', '"20%FREE"', '""',
                                   "2", "true", '"20%origin"', '"02G"'])
def test_bad_snapshot_sizes_are_refused(value: str) -> None:
    message = config_error(BASE + f"[defaults]\nsnapshot_size = {value}\n")
    assert "defaults.snapshot_size: expected" in message


# --- each key's validation ----------------------------------------------------------

def _without_hypervisor(section: str) -> str:
    if section == "hypervisor":
        return BASE.replace('[hypervisor]\nuri = "xen:///system"\n', "")
    return BASE


BAD_VALUES = [
    ("ssh", "key", '"relative/key"'), ("ssh", "key", '"/"'), ("ssh", "key", "3"),
    ("ssh", "known_hosts", '"/etc/../kh"'), ("ssh", "known_hosts", '"//etc/kh"'),
    ("ssh", "connect_timeout", "0"), ("ssh", "connect_timeout", '"10"'),
    ("ssh", "connect_timeout", "true"), ("ssh", "connect_timeout", "inf"),
    ("ssh", "connect_timeout", "nan"),
    ("ssh", "command_timeout", "-5"), ("ssh", "keepalive", "-1"), ("ssh", "keepalive", "1.5"),
    ("ssh", "cipher", '"aes; rm -rf /"'), ("ssh", "cipher", '"-oProxyCommand=x"'),
    ("defaults", "kpartx_delimiter", '""'), ("defaults", "kpartx_delimiter", '"p p"'),
    ("defaults", "kpartx_delimiter", '"/"'),
    ("defaults", "source_prefix", '"relative"'), ("defaults", "source_prefix", '"/a/./b"'),
    ("defaults", "peer_prefix", '"/"'), ("defaults", "peer_prefix", '"/a/b/"'),
    ("defaults", "state_dir", '"/var/lib/x\\n"'), ("defaults", "report_dir", "[]"),
    ("defaults", "lock_dir", '"run/lock"'),
    ("defaults", "rsync_args", '"--partial"'), ("defaults", "rsync_args", '["x"]'),
    ("defaults", "rsync_args", "[1]"), ("defaults", "rsync_args", '["--"]'),
    ("defaults", "excludes", '[""]'), ("defaults", "excludes", '["a\\nb"]'),
    ("defaults", "excludes", "[true]"),
    ("defaults", "bwlimit", '"0"'), ("defaults", "bwlimit", '"-1"'),
    ("defaults", "bwlimit", '"20 M"'), ("defaults", "bwlimit", "5000"),
    ("defaults", "compress", '"yes"'), ("defaults", "compress", "1"),
    ("defaults", "max_delete", "-1"), ("defaults", "max_delete", '"10"'),
    ("defaults", "max_delete", "1.0"),
    ("defaults", "snapshot_max_fill", "0"), ("defaults", "snapshot_max_fill", "101"),
    ("defaults", "snapshot_extend", '"20%ORIGIN"'), ("defaults", "snapshot_extend", '"big"'),
    ("defaults", "allow_vanished", '"false"'),
    ("hypervisor", "uri", '""'), ("hypervisor", "uri", '"not a uri"'),
    ("hypervisor", "uri", "42"),
]


@pytest.mark.parametrize(("section", "key", "value"), BAD_VALUES)
def test_each_bad_value_names_its_key_and_what_was_expected(section: str, key: str,
                                                            value: str) -> None:
    message = config_error(_without_hypervisor(section) + f"\n[{section}]\n{key} = {value}\n")
    assert f"{section}.{key}" in message
    assert "expected" in message


GOOD_VALUES = [
    ("ssh", "keepalive", "0"), ("ssh", "connect_timeout", "0.5"), ("ssh", "cipher", '""'),
    ("ssh", "cipher", '"aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"'),
    ("defaults", "bwlimit", '"5000"'), ("defaults", "bwlimit", '"1.5m"'),
    ("defaults", "bwlimit", '""'), ("defaults", "kpartx_delimiter", '"_part"'),
    ("defaults", "rsync_args", '["--partial", "--timeout=60"]'),
    ("defaults", "snapshot_extend", '""'), ("defaults", "max_delete", "0"),
    ("hypervisor", "uri", '"qemu+ssh://root@host/system"'),
    ("hypervisor", "uri", '"test:///tmp/node.xml"'),
]


@pytest.mark.parametrize(("section", "key", "value"), GOOD_VALUES)
def test_good_values_are_accepted(section: str, key: str, value: str) -> None:
    config = parse_config(_without_hypervisor(section) + f"\n[{section}]\n{key} = {value}\n",
                          CONF)
    assert config.path == CONF


@pytest.mark.parametrize(("extra", "key"), [
    ("[domains.web01]\npeer = 3\n", "domains.web01.peer"),
    ("[domains.web01]\npeer = \"dom0-b\"\nexcludes = [\"/tmp\", 1]\n",
     "domains.web01.excludes[1]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nrsync_args = [\"--partial\", \"dest:/\"]\n",
     "domains.web01.rsync_args[1]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nsnapshot_size = \"99%FREE\"\n",
     "domains.web01.snapshot_size"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks = 3\n", "domains.web01.disks"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda = \"/dev/vg/x\"\n",
     "domains.web01.disks.xvda"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.XVDA = {}\n", "domains.web01.disks.XVDA"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.1xvda = {}\n", "domains.web01.disks.1xvda"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda.standby_lv = \"/etc/passwd\"\n",
     "domains.web01.disks.xvda.standby_lv"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda.standby_lv = \"/dev/vg/../sda\"\n",
     "domains.web01.disks.xvda.standby_lv"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda.standby_lv = \"/dev/vg/a b\"\n",
     "domains.web01.disks.xvda.standby_lv"),
    ("[domains.web01]\npeer = \"dom0-b\"\nmounts = []\n", "domains.web01.mounts"),
    ("[domains.web01]\npeer = \"dom0-b\"\nmounts.xvda1 = \"var\"\n",
     "domains.web01.mounts.xvda1"),
    ("[domains.web01]\npeer = \"dom0-b\"\nmounts.xvda1 = \"/var/\"\n",
     "domains.web01.mounts.xvda1"),
    ("[domains.web01]\npeer = \"dom0-b\"\nmounts.xvda1 = \"/..\"\n",
     "domains.web01.mounts.xvda1"),
    ("[domains.web01]\npeer = \"dom0-b\"\nmounts.xvda1 = 1\n", "domains.web01.mounts.xvda1"),
    ("[domains.web01]\npeer = \"dom0-b\"\nmounts.\"xvda1/../\" = \"/\"\n",
     "domains.web01.mounts.xvda1/../"),
    ("[domains.web01]\npeer = \"dom0-b\"\nmounts.xvda1 = \"/\"\nmounts.xvda2 = \"/\"\n",
     "domains.web01.mounts.xvda2"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = \"xvda1\"\n",
     "domains.web01.skip_filesystems"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = [1]\n",
     "domains.web01.skip_filesystems[0]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = [\"xvda1\", \"/\"]\n",
     "domains.web01.skip_filesystems[1]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = [\"xvda1/../\"]\n",
     "domains.web01.skip_filesystems[0]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = [\"XVDA1\"]\n",
     "domains.web01.skip_filesystems[0]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = [\"xvda1\\n\"]\n",
     "domains.web01.skip_filesystems[0]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = [\"xvda2.vg0.root\"]\n",
     "domains.web01.skip_filesystems[0]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nskip_filesystems = [\"xvda1\", \"xvda1\"]\n",
     "domains.web01.skip_filesystems[1]"),
    ("[domains]\nweb01 = \"dom0-b\"\n", "domains.web01"),
    ("[domains.\"web 01\"]\npeer = \"dom0-b\"\n", "domains.web 01"),
    ("[domains.\"web;01\"]\npeer = \"dom0-b\"\n", "domains.web;01"),
    ("domains = []\n", "domains"),
    ("ssh = 3\n", "ssh"),
])
def test_domain_settings_are_validated(extra: str, key: str) -> None:
    # Bare keys go first, where TOML puts them at the top level.
    text = extra + BASE if extra[0] != "[" else BASE + extra
    message = config_error(text)
    assert f": {key}: " in message


@pytest.mark.parametrize(("text", "key"), [
    ("[cluster.dom0s]\na = \"ssh://root@a:22\"\n\"-b\" = \"ssh://root@b:22\"\n"
     "[hypervisor]\nuri = \"xen:///system\"\n", "cluster.dom0s.-b"),
    ("[cluster.dom0s]\na = \"ssh://root@a:22\"\nb = 22\n[hypervisor]\nuri = \"xen:///\"\n",
     "cluster.dom0s.b"),
    ("[cluster.dom0s]\na = \"ssh://root@a:22\"\nb = \"ssh://root@b:port\"\n"
     "[hypervisor]\nuri = \"xen:///\"\n", "cluster.dom0s.b"),
    ("[cluster.dom0s]\na = \"ssh://root@a:22\"\nb = \"b\"\n[hypervisor]\nuri = \"xen:///\"\n",
     "cluster.dom0s.b"),
    ("[cluster]\ndom0s = []\n[hypervisor]\nuri = \"xen:///\"\n", "cluster.dom0s"),
    ("[cluster]\n[hypervisor]\nuri = \"xen:///\"\n", "cluster.dom0s"),
    ("cluster = 1\n[hypervisor]\nuri = \"xen:///\"\n", "cluster"),
    ("[cluster.dom0s]\n[hypervisor]\nuri = \"xen:///\"\n", "cluster.dom0s"),
    ("[cluster.dom0s]\na = \"ssh://root@a:22\"\nb = \"ssh://root@b:22\"\n", "hypervisor"),
    ("hypervisor = \"x\"\n[cluster.dom0s]\na = \"ssh://root@a:22\"\nb = \"ssh://root@b:22\"\n",
     "hypervisor"),
])
def test_cluster_and_hypervisor_are_validated(text: str, key: str) -> None:
    assert f": {key}: " in config_error(text)


@pytest.mark.parametrize(("uri", "message"), [
    (None, "hypervisor.uri: missing required key (expected a libvirt URI like "
     '"xen:///system")'),
    ('""', 'hypervisor.uri: expected a libvirt URI like "xen:///system", got \'\''),
    ('"xen:// system"', 'hypervisor.uri: expected a libvirt URI like "xen:///system", '
     "got 'xen:// system'"),
    ('"xen:///\\u0007"', 'hypervisor.uri: expected a libvirt URI like "xen:///system", '
     "got 'xen:///\\x07'"),
    ("42", "hypervisor.uri: expected a string, got 42"),
])
def test_hypervisor_uri_errors_say_exactly_what_was_expected(uri: str | None,
                                                             message: str) -> None:
    text = _without_hypervisor("hypervisor") + "[hypervisor]\n" + (
        f"uri = {uri}\n" if uri else "")
    assert config_error(text) == f"{CONF}: {message}"


def test_cluster_errors_keep_their_words() -> None:
    assert config_error('[cluster]\n[hypervisor]\nuri = "xen:///"\n') == (
        f'{CONF}: cluster.dom0s: missing required table [cluster.dom0s] (name = '
        '"ssh://user@host:port")')
    assert config_error('[cluster.dom0s]\na = "ssh://root@a:22"\n') == (
        f"{CONF}: cluster.dom0s: expected at least 2 Dom0s (this host and its peer), got ['a']")
    assert config_error(BASE.replace("[cluster.dom0s]", "[cluster]\nx = 1\n[cluster.dom0s]")
                        ) == f"{CONF}: cluster.x: unknown key (expected one of dom0s)"
    assert config_error(BASE + "[hypervisor.extra]\n").endswith(
        ": hypervisor.extra: unknown key (expected one of uri)")


def test_given_holds_the_keys_the_file_sets_whatever_their_value() -> None:
    config = parse('[defaults]\nmax_delete = 10000\ntarget_prefix = "/srv/peer"\n'
                   '[domains.web01]\npeer = "dom0-b"\n[domains.web01.disks.xvda]\n')
    assert config.defaults == Defaults(peer_prefix="/srv/peer")
    assert config.given == {"cluster.dom0s", "hypervisor.uri", "defaults.max_delete",
                            "defaults.peer_prefix", "domains.web01.peer",
                            "domains.web01.disks"}
    assert parse().given == {"cluster.dom0s", "hypervisor.uri"}


def test_peer_must_be_a_cluster_dom0() -> None:
    message = config_error(BASE + '[domains.web01]\npeer = "dom0-c"\n')
    assert message == (f"{CONF}: domains.web01.peer: expected one of the cluster's Dom0s "
                       "(dom0-a, dom0-b), got 'dom0-c'")


def test_cluster_accepts_ports_users_and_lab_transports() -> None:
    config = parse_config(
        '[cluster.dom0s]\na = "ssh://backup@10.0.0.1:2222"\nb = "docker://dom0-b"\n'
        '[hypervisor]\nuri = "xen:///system"\n', CONF, allow_lab_hosts=True)
    assert config.dom0("a") == HostSpec("ssh", "10.0.0.1", "backup", 2222)
    assert config.dom0("b") == HostSpec("docker", "dom0-b")
    with pytest.raises(errors.ConfigError, match="dom0-z"):
        config.dom0("dom0-z")


# --- unknown keys, at every level ------------------------------------------------


@pytest.mark.parametrize(("extra", "key"), [
    ("[backup]\nx = 1\n", "backup"),
    ("verbose = true\n", "verbose"),
    ("[hypervisor.extra]\n", "hypervisor.extra"),
    ("[ssh]\nport = 22\n", "ssh.port"),
    ("[defaults]\nsnapshot_sise = \"2G\"\n", "defaults.snapshot_sise"),
    ("[domains.web01]\npeer = \"dom0-b\"\nbwlimit = \"1M\"\n", "domains.web01.bwlimit"),
    ("[domains.web01]\npeer = \"dom0-b\"\n[domains.web01.disks.xvda]\nsize = \"1G\"\n",
     "domains.web01.disks.xvda.size"),
])
def test_unknown_keys_are_errors_at_each_level(extra: str, key: str) -> None:
    text = extra + BASE if extra[0] != "[" else BASE + extra
    message = config_error(text)
    assert f": {key}: unknown key" in message


def test_unknown_key_in_cluster_table() -> None:
    text = BASE.replace("[cluster.dom0s]", "[cluster]\nname = \"x\"\n[cluster.dom0s]")
    assert ": cluster.name: unknown key" in config_error(text)


# --- the bad fixtures -------------------------------------------------------------


BAD_FIXTURES = sorted((FIXTURES / "bad").glob("*.toml"))


def test_there_are_bad_fixtures() -> None:
    assert len(BAD_FIXTURES) >= 20


@pytest.mark.parametrize("path", BAD_FIXTURES, ids=lambda p: p.stem)
def test_bad_config_error_names_the_file_and_the_key(path: Path) -> None:
    expect = re.match(r"# expect: (.+)\n", path.read_text())
    assert expect, f"{path} lacks its '# expect: KEY' first line"
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path, check_permissions=False)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expect.group(1) in message


# --- files: missing, unreadable, bad TOML, permissions -----------------------------


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=re.escape(str(tmp_path / "nope.toml"))):
        load_config(tmp_path / "nope.toml")


def test_directory_and_unreadable_paths_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="is a directory"):
        load_config(tmp_path)
    not_a_dir = _write(tmp_path / "file", "")
    with pytest.raises(errors.ConfigError, match="cannot read"):
        load_config(not_a_dir / "backup.toml")


def test_bad_toml_names_file_line_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.toml", BASE + "[defaults]\ncompress = yes\n")
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid TOML")
    assert "line 8" in message and "column" in message


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    path.chmod(0o600)
    with pytest.raises(errors.ConfigError, match="UTF-8"):
        load_config(path)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620, 0o602])
def test_group_or_world_writable_config_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "backup.toml", BASE, mode)
    with pytest.raises(errors.InsecureFile) as caught:
        load_config(path)
    assert str(path) in str(caught.value) and f"{mode:04o}" in str(caught.value)
    assert caught.value.exit_code == errors.InsecureFile.exit_code
    assert load_config(path, check_permissions=False).hypervisor_uri == "xen:///system"


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o400, 0o640])
def test_config_not_writable_by_others_is_accepted(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path / "backup.toml", BASE, mode)
    assert load_config(path).dom0s.keys() == {"dom0-a", "dom0-b"}


def test_writable_ssh_key_is_refused_and_a_missing_one_is_not_checked(tmp_path: Path) -> None:
    key = _write(tmp_path / "id_ed25519", "key", 0o660)
    path = _write(tmp_path / "backup.toml", BASE + f'[ssh]\nkey = "{key}"\n')
    with pytest.raises(errors.InsecureFile) as caught:
        load_config(path)
    assert str(key) in str(caught.value) and "0660" in str(caught.value)
    key.chmod(0o600)
    assert load_config(path).ssh.key == key
    key.unlink()
    assert load_config(path).ssh.key == key


def test_default_config_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.delenv("DOMU_BACKUP_CONFIG", raising=False)
    assert default_config_path() == Path("/etc/domu-backup/backup.toml")
    path = _write(tmp_path / "c.toml", BASE)
    monkeypatch.setenv("DOMU_BACKUP_CONFIG", str(path))
    assert default_config_path() == path
    assert load_config().path == path


def test_check_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(errors.NotRoot) as caught:
        check_root()
    assert caught.value.exit_code == errors.NotRoot.exit_code
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    check_root()


# --- garbage in, ConfigError out --------------------------------------------------


# --- generated configs: valid ones read back, and one value out of its rule refused -----

def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string


def _render(tables: dict[str, list[str]]) -> str:
    return "".join(f"[{header}]\n" + "".join(f"{line}\n" for line in lines) + "\n"
                   for header, lines in tables.items())


_TARGETS = st.builds(lambda bus, letter, part: bus + letter + part,
                     st.sampled_from(["xvd", "sd", "vd", "hd"]), st.sampled_from("abc"),
                     st.sampled_from(["", "1", "2", "15"]))
_GUEST_PATH = st.lists(st.text("abcz09_-.", min_size=1, max_size=6).filter(
    lambda p: p not in (".", "..")), max_size=3).map(lambda parts: "/" + "/".join(parts))


def _names(first: str, rest: str, longest: int):
    return st.builds(lambda a, b: a + b, st.sampled_from(first), st.text(rest, max_size=longest))


@st.composite
def config_tables(draw, min_domains: int = 0):
    """({TOML table: its lines}, what the parser must make of them), built key by key from
    the README's description of each setting."""
    names = draw(st.lists(_names("az09_+", "az09_+.-", 12), min_size=2, max_size=3,
                          unique=True))
    tables: dict[str, list[str]] = {"cluster.dom0s": [], "hypervisor": ['uri = "xen:///system"']}
    dom0s = {}
    for i, name in enumerate(names):
        user = draw(st.sampled_from(["", "root@", "backup@", "_bk.1@"]))
        port = draw(st.sampled_from(["", ":22", ":2222", ":65535"]))
        host = f"node{i}.Example.net"
        tables["cluster.dom0s"].append(f"{_q(name)} = {_q(f'ssh://{user}{host}{port}')}")
        dom0s[name] = HostSpec("ssh", host.lower(), user[:-1] or "root", int(port[1:] or 22))
    ssh = {"connect_timeout": draw(st.sampled_from([0.5, 3, 10.0, 3600])),
           "keepalive": draw(st.integers(0, 600)),
           "cipher": draw(st.sampled_from(["", "aes256-ctr", "aes128-gcm@openssh.com,aes256-ctr"]))}
    tables["ssh"] = [f"{k} = {json.dumps(v)}" for k, v in ssh.items()]
    defaults = {"max_delete": draw(st.integers(0, 2**40)),
                "snapshot_max_fill": draw(st.integers(1, 100)),
                "copy_jobs": draw(st.integers(1, 16)), "compress": draw(st.booleans()),
                "allow_vanished": draw(st.booleans()),
                "kpartx_delimiter": draw(st.sampled_from(["p", "-part", "_", "p."])),
                "bwlimit": draw(st.sampled_from(["", "20M", "5000", "1.5m"])),
                "excludes": draw(st.lists(st.sampled_from(["/tmp/*", "*.deb", "/var/cache/*",
                                                           "a b"]), max_size=3))}
    tables["defaults"] = [f"{k} = {json.dumps(v)}" for k, v in defaults.items()]
    domains = {}
    lvs = iter(range(1000))
    for name in draw(st.lists(_names("aZ09_+", "aZ09_+.", 15), min_size=min_domains,
                              max_size=3, unique=True)):
        peer = draw(st.sampled_from(names))
        mounts = dict(zip(draw(st.lists(_TARGETS, unique=True, max_size=3)),
                          draw(st.lists(_GUEST_PATH, unique=True, min_size=3, max_size=3)),
                          strict=False))
        disks = {t: f"/dev/vg0/lv{next(lvs)}"
                 for t in draw(st.lists(_TARGETS, unique=True, max_size=2))}
        skip = draw(st.lists(_TARGETS, unique=True, max_size=2))
        domains[name] = (peer, mounts, disks, skip)
        tables[f"domains.{_q(name)}"] = [f"peer = {_q(peer)}",
                                         f"skip_filesystems = {json.dumps(skip)}"]
        tables[f"domains.{_q(name)}.mounts"] = [f"{t} = {_q(p)}" for t, p in mounts.items()]
        for t, lv in disks.items():
            tables[f"domains.{_q(name)}.disks.{t}"] = [f"standby_lv = {_q(lv)}"]
    return tables, (dom0s, ssh, defaults, domains)


@settings(max_examples=60, deadline=None)
@given(config_tables())
def test_any_valid_config_is_read_back_key_by_key(generated) -> None:
    tables, (dom0s, ssh, defaults, domains) = generated
    config = parse_config(_render(tables), CONF)
    assert dict(config.dom0s) == dom0s
    assert (config.ssh.connect_timeout, config.ssh.keepalive, config.ssh.cipher) == (
        ssh["connect_timeout"], ssh["keepalive"], ssh["cipher"] or None)
    got = {k: getattr(config.defaults, k) for k in defaults}
    assert got == {**defaults, "bwlimit": defaults["bwlimit"] or None,
                   "excludes": tuple(defaults["excludes"])}
    assert {name: (d.peer, dict(d.mounts), {t: c.standby_lv for t, c in d.disks.items()},
                   list(d.skip_filesystems)) for name, d in config.domains.items()} == domains


# One value out of its rule, as an operator might write it: (table, key, TOML line).
_CONFIG_BREAKS = [
    ("defaults", "max_delete = -1"), ("defaults", "copy_jobs = 17"),
    ("defaults", "copy_jobs = 0"), ("defaults", "snapshot_max_fill = 101"),
    ("defaults", "snapshot_max_fill = 0"), ("defaults", 'kpartx_delimiter = "p/1"'),
    ("defaults", 'bwlimit = "20 M"'), ("defaults", 'excludes = ["/tmp/*", ""]'),
    ("defaults", "compress = 1"), ("defaults", "max_delete = true"),
    ("defaults", 'state_dir = "/etc"'), ("defaults", 'source_prefix = "/run/x/../y"'),
    ("defaults", "typo = 1"), ("ssh", "connect_timeout = 0"), ("ssh", "keepalive = -1"),
    ("ssh", 'cipher = "aes 256"'), ("ssh", 'key = "relative/key"'), ("ssh", "typo = 1"),
    ("cluster.dom0s", 'lab = "local://"'), ("cluster.dom0s", '"-x" = "ssh://root@z:22"'),
    ("cluster.dom0s", 'pw = "ssh://root:secret@z:22"'),
    ("cluster.dom0s", 'far = "ssh://root@z:65536"'),
    ("domain", 'peer = "nobody"'), ("domain", "skip_filesytems = []"),
    ("domain", 'skip_filesystems = ["xvdq", "xvdq"]'), ("mounts", 'xvdz = "var"'),
    ("mounts", 'xvdz = "/srv/../etc"'), ("mounts", 'nvme0n1 = "/x"'),
    ("mounts", 'xvdy = "/twice"\nxvdz = "/twice"'),
]


def _set(lines: list[str], line: str) -> list[str]:
    """The table's lines with ``line`` in place of the line of the same key."""
    key = line.split(" = ")[0]
    return [x for x in lines if x.split(" = ")[0] != key] + [line]


@pytest.mark.parametrize("broken", _CONFIG_BREAKS,
                         ids=lambda b: f"{b[0]}: {b[1]}".replace("\n", " / "))
@settings(max_examples=3, deadline=None)
@given(generated=config_tables(min_domains=1))
def test_a_valid_config_with_one_value_out_of_its_rule_is_refused_naming_it(
        broken, generated) -> None:
    tables, (_d, _s, _f, domains) = generated
    where, line = broken
    name = next(iter(domains))
    table = {"domain": f"domains.{_q(name)}", "mounts": f"domains.{_q(name)}.mounts"}.get(
        where, where)
    tables[table] = _set(tables[table], line)
    message = config_error(_render(tables))
    named = {"domain": f"domains.{name}", "mounts": f"domains.{name}"}.get(where, where)
    assert named in message, message


def test_cipher_defaults_to_aes_gcm_first_and_empty_means_ssh_default() -> None:
    preferred = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"
    assert parse().ssh.cipher == SSHSettings().cipher == preferred
    assert parse("[ssh]\ncipher = \"\"\n").ssh.cipher is None
    assert parse("[ssh]\ncipher = \"aes256-ctr\"\n").ssh.cipher == "aes256-ctr"


# --- rsync_args: an allowlist (R23) ------------------------------------------------

FORBIDDEN_RSYNC = [
    "--rsh=ssh -o StrictHostKeyChecking=no", "-e", "-essh", "--rsync-path=sh -c x",
    "--max-delete=1000000", "--max-delete=-1", "--delete-before", "--delete-during",
    "--delete-after", "--delete-excluded", "--del", "--ignore-errors", "--force",
    "--dry-run", "-n", "--list-only", "--log-file=/etc/shadow", "--log-file-format=%n",
    "--remove-source-files", "--files-from=/etc/x", "--exclude-from=/etc/x",
    "--include-from=/etc/x", "--filter=. /etc/x", "-F", "--exclude=x", "--include=*",
    "--link-dest=/", "--compare-dest=/", "--copy-dest=/", "--backup", "-b",
    "--backup-dir=/etc", "--suffix=~", "--devices", "-D", "--specials", "--copy-devices",
    "--write-devices", "--daemon", "--port=873", "--password-file=/etc/pw",
    "--address=0.0.0.0", "--sockopts=x", "--read-batch=/tmp/b", "--write-batch=/tmp/b",
    "--only-write-batch=/tmp/b", "--chown=0:0", "--usermap=*:0", "--groupmap=*:0",
    "--chmod=a+rwx", "--no-numeric-ids", "--no-one-file-system", "--no-x", "--no-delete",
    "--temp-dir=/etc", "-T", "--partial-dir=/etc", "--mkpath", "--existing",
    "--ignore-existing", "--size-only", "--modify-window=100", "--append",
    "--append-verify", "--stats", "--info=all", "--out-format=%n", "-v", "--verbose", "-q",
    "--bwlimit=1", "--server", "--sender", "--protocol=20", "--iconv=x", "-h",
    "--copy-links", "-L", "--keep-dirlinks", "-cW", "-Wc", "--timeout=0", "--timeout=x",
    "--checksum-choice=none", "--block-size=1G", "--compress-level=99", "-", "--", "x",
    "dest:/", "--partial=",
]


@pytest.mark.parametrize("option", FORBIDDEN_RSYNC)
def test_each_forbidden_rsync_option_is_a_config_error(option: str) -> None:
    quoted = option.replace("\\", "\\\\").replace('"', '\\"')
    message = config_error(BASE + f'[defaults]\nrsync_args = ["--partial", "{quoted}"]\n')
    assert ": defaults.rsync_args[1]: " in message and repr(option) in message
    message = config_error(BASE + f'[domains.web01]\npeer = "dom0-b"\n'
                                  f'rsync_args = ["{quoted}"]\n')
    assert ": domains.web01.rsync_args[0]: " in message and repr(option) in message


def test_a_forbidden_rsync_option_says_why() -> None:
    assert "strict host keys" in config_error(BASE + '[defaults]\nrsync_args = ["--rsh=x"]\n')
    assert "max_delete" in config_error(BASE + '[defaults]\nrsync_args = ["--max-delete=9"]\n')
    assert "success" in config_error(BASE + '[defaults]\nrsync_args = ["--dry-run"]\n')


def test_allowed_rsync_options_load_and_come_before_the_tools_own() -> None:
    from toolkit.rsync_options import EXTRA_OPTIONS

    plain = [name for name, (check, _why) in EXTRA_OPTIONS.items() if check is None]
    valued = ["--timeout=600", "--block-size=8192", "--compress-level=3",
              "--compress-choice=zstd", "--checksum-choice=xxh128"]
    listed = ", ".join(f'"{o}"' for o in plain + valued)
    config = parse(f"[defaults]\nrsync_args = [{listed}]\n"
                   '[domains.web01]\npeer = "dom0-b"\nrsync_args = ["--inplace"]\n')
    assert config.defaults.rsync_args == (*plain, *valued)
    assert {name.rstrip("=") for name in EXTRA_OPTIONS} == {
        o.partition("=")[0] for o in plain + valued} | {"--timeout", "--block-size",
                                                        "--compress-level",
                                                        "--compress-choice",
                                                        "--checksum-choice"}


# --- host specs (R14) ----------------------------------------------------------------


def _cluster(a: str, b: str) -> str:
    return f'[cluster.dom0s]\na = "{a}"\nb = "{b}"\n[hypervisor]\nuri = "xen:///system"\n'


@pytest.mark.parametrize("spec", [
    "ssh://root@-oProxyCommand=x", "ssh://root@host_name", "ssh://root@ho st",
    "ssh://root@.host", "ssh://root@host.", "ssh://root@a..b", "ssh://root@-a",
    "ssh://root@a-", "ssh://root@" + "a" * 64, "ssh://root@999.1.1.1", "ssh://root@1.2.3",
    "ssh://root@1.2.3.4.5", "ssh://root@[::1", "ssh://root@[host]", "ssh://root@::1",
    "ssh://root@[fe80::1%25eth0]", "ssh://root@host:0", "ssh://root@host:65536",
    "ssh://root@host:", "ssh://root@host:+22", "ssh://root@host:22x", "ssh://root:pw@host",
    "ssh://:pw@host", "ssh://root@host/path", "ssh://root@host?x=1", "ssh://root@host#x",
    "ssh://-l@host", "ssh://ro ot@host", "ssh://@host", "ssh://root@", "ssh://",
    "ssh://root@host::module", "rsync://root@host", "ssh://a@b@host",
    "ssh://root@h\u00e9st",
])
def test_bad_host_specs_are_config_errors(spec: str) -> None:
    message = config_error(_cluster("ssh://root@dom0-a:22", spec))
    assert ": cluster.dom0s.b: " in message


def test_a_password_in_a_host_spec_is_refused_without_repeating_it() -> None:
    message = config_error(_cluster("ssh://root@dom0-a", "ssh://root:s3cret@dom0-b"))
    assert "password" in message and "s3cret" not in message


@pytest.mark.parametrize(("spec", "host", "user", "port"), [
    ("ssh://root@dom0-b", "dom0-b", "root", 22),
    ("ssh://dom0-b", "dom0-b", "root", 22),
    ("ssh://backup@10.0.0.2:2222", "10.0.0.2", "backup", 2222),
    ("ssh://root@[2001:db8::2]:65535", "2001:db8::2", "root", 65535),
    ("ssh://root@Xen-B.Example.NET:1", "xen-b.example.net", "root", 1),
])
def test_good_host_specs(spec: str, host: str, user: str, port: int) -> None:
    config = parse_config(_cluster("ssh://root@dom0-a:22", spec), CONF)
    assert config.dom0("b") == HostSpec("ssh", host, user, port)


@pytest.mark.parametrize(("a", "b"), [
    ("ssh://root@dom0-b:22", "ssh://backup@dom0-b"),
    ("ssh://root@DOM0-B", "ssh://root@dom0-b:22"),
    ("ssh://root@[2001:db8::2]", "ssh://root@[2001:db8:0:0::2]:22"),
    ("ssh://root@10.0.0.2:2222", "ssh://root@10.0.0.2:2222"),
])
def test_two_dom0s_at_one_address_and_port_are_refused(a: str, b: str) -> None:
    message = config_error(_cluster(a, b))
    assert ": cluster.dom0s.b: " in message and "cluster.dom0s.a" in message


def test_the_same_host_on_another_port_is_another_dom0() -> None:
    config = parse_config(_cluster("ssh://root@lab:2201", "ssh://root@lab:2202"), CONF)
    assert {spec.port for spec in config.dom0s.values()} == {2201, 2202}


@pytest.mark.parametrize("spec", ["local://", "docker://dom0-b"])
def test_lab_transports_are_refused_in_an_operators_config(spec: str, tmp_path: Path) -> None:
    text = _cluster("ssh://root@dom0-a", spec)
    path = _write(tmp_path / "backup.toml", text, 0o600)
    with pytest.raises(errors.ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert ": cluster.dom0s.b: " in message and spec in message and "lab" in message
    with pytest.raises(errors.ConfigError):
        parse_config(text, CONF, allow_lab_hosts=False)
    assert parse_config(text, CONF, allow_lab_hosts=True).dom0("b").scheme in ("local",
                                                                               "docker")
    assert load_config(path, allow_lab_hosts=True).dom0("b").scheme in ("local", "docker")


@pytest.mark.parametrize(("spec", "remote"), [
    ("ssh://root@[2001:db8::2]:2222", "root@[2001:db8::2]:/run/dst/web01/xvda1/"),
    ("ssh://backup@10.0.0.2", "backup@10.0.0.2:/run/dst/web01/xvda1/"),
    ("ssh://root@dom0-b:22", "root@dom0-b:/run/dst/web01/xvda1/"),
])
def test_the_peer_address_reaches_rsync_as_a_host(spec: str, remote: str) -> None:
    from toolkit.rsync import SshOptions, rsync_argv
    from toolkit.runners import parse_host_spec

    peer = parse_host_spec(spec)
    assert peer.rsync_address + ":/x" == remote.split(":/")[0] + ":/x"
    # preflight builds the address as user@host; rsync_argv brackets an IPv6 host
    argv = rsync_argv("/run/src/web01/xvda1", f"{peer.user}@{peer.host}",
                      "/run/dst/web01/xvda1", SshOptions("/k", "/kh", peer.port))
    assert argv[-1] == remote and "::" not in argv[-1].replace("[2001:db8::2]", "")


# --- domain names and the names built from them --------------------------------------


@pytest.mark.parametrize("name", [".web01", "-web01", "web/01", "web 01", "web:01",
                                  "web01\u00e9", "x" * 300, "x" * 41, "a-" * 14 + "a",
                                  "web\\01", "*", "web01*"])
def test_bad_domain_names_are_config_errors(name: str) -> None:
    key = json.dumps(name)
    message = config_error(BASE + f'[domains.{key}]\npeer = "dom0-b"\n')
    assert ": domains." in message and "domain name" in message


@pytest.mark.parametrize("name", ["web01", "x" * 40, "db.example+1", "_x", "+x",
                                  "a-b-c", "a" * 10 + "-" * 5 + "b" * 10, "9"])
def test_good_domain_names(name: str) -> None:
    key = json.dumps(name)
    assert name in parse(f'[domains.{key}]\npeer = "dom0-b"\n').domains


def test_the_longest_domain_keeps_every_built_name_within_its_limits() -> None:
    from toolkit.config import DOMAIN_NAME_MAX
    from toolkit.facts.lvm import dm_name
    from toolkit.plan import mapped_partition, owned_name, volume_map_name

    run_id = "20261205T213000Z-ab12"
    vg = "v" * 32
    disk = "xvdaaaaa"  # longer than any disk target a guest has
    delimiter = "-part"  # the longest kpartx_delimiter allowed (5)
    for domain in ("d" * DOMAIN_NAME_MAX, "d-" * (DOMAIN_NAME_MAX // 4) + "d",
                   "-".join(["d"] * ((DOMAIN_NAME_MAX + 2) // 3))):
        parse(f'[domains."{domain}"]\npeer = "dom0-b"\n')  # allowed
        snapshot = owned_name(run_id, domain, disk)
        snap_dm = dm_name(vg, snapshot)
        names = [snapshot, snap_dm, snap_dm + "-cow",
                 mapped_partition(snap_dm, delimiter, 128).removeprefix("/dev/mapper/"),
                 mapped_partition(snapshot, delimiter, 128).removeprefix("/dev/mapper/"),
                 volume_map_name(run_id, domain, "src", f"{disk}128.{'g' * 60}.{'l' * 60}")]
        for name in names:
            assert len(name.encode()) <= 127, (domain, name, len(name))
        for component in (f"{domain}.{run_id}", f"{domain}.{run_id}.jsonl", f"{domain}.lock",
                          f"{domain}.json", f".{domain}.json.0123456789ab.tmp"):
            assert len(component.encode()) <= 255
    too_long = "d" * (DOMAIN_NAME_MAX + 1)
    assert "domain name" in config_error(BASE + f'[domains."{too_long}"]\npeer = "dom0-b"\n')


def test_a_kpartx_delimiter_longer_than_five_characters_is_refused() -> None:
    assert parse('[defaults]\nkpartx_delimiter = "-part"\n').defaults.kpartx_delimiter == "-part"
    message = config_error(BASE + '[defaults]\nkpartx_delimiter = "-parts"\n')
    assert ": defaults.kpartx_delimiter: " in message


def test_two_domains_may_not_share_a_standby_lv() -> None:
    text = (BASE + '[domains.web01]\npeer = "dom0-b"\n[domains.web01.disks.xvda]\n'
            'standby_lv = "/dev/vg_b/web01"\n[domains.db01]\npeer = "dom0-b"\n'
            '[domains.db01.disks.xvdb]\nstandby_lv = "/dev/vg_b/web01"\n')
    message = config_error(text)
    assert ": domains.db01.disks.xvdb.standby_lv: " in message
    assert "domains.web01.disks.xvda" in message
    same_domain = (BASE + '[domains.web01]\npeer = "dom0-b"\n[domains.web01.disks.xvda]\n'
                   'standby_lv = "/dev/vg_b/x"\n[domains.web01.disks.xvdb]\n'
                   'standby_lv = "/dev/vg_b/x"\n')
    assert ": domains.web01.disks.xvdb.standby_lv: " in config_error(same_domain)


# --- directories and files named in the config -----------------------------------------

DIR_KEYS = [("defaults", "source_prefix"), ("defaults", "peer_prefix"),
            ("defaults", "lock_dir"), ("defaults", "report_dir"), ("defaults", "state_dir"),
            ("ssh", "key"), ("ssh", "known_hosts")]
SYSTEM_PATHS = ["/", "/proc", "/proc/self", "/sys/x", "/dev", "/dev/shm/x", "/boot/x",
                "/usr", "/usr/local/lib/x", "/bin/x", "/sbin", "/lib/x", "/lib64", "/etc",
                "/etc/x", "/etc/domu-backup", "/var", "/run", "/tmp", "/home", "/root",
                "/srv", "/opt", "/mnt", "/media", "/var/lib", "/run/lock", "/a b",
                "/a/../b", "/a/", "a", "/a;b", "/a$b", "/a\\b"]


@pytest.mark.parametrize(("section", "key"), DIR_KEYS)
@pytest.mark.parametrize("path", SYSTEM_PATHS)
def test_system_directories_and_unplain_paths_are_refused(section: str, key: str,
                                                          path: str) -> None:
    value = json.dumps(path)
    message = config_error(_without_hypervisor(section) + f"\n[{section}]\n{key} = {value}\n")
    assert f": {section}.{key}: " in message


@pytest.mark.parametrize(("section", "key"), DIR_KEYS)
def test_ordinary_directories_are_accepted(section: str, key: str) -> None:
    config = parse_config(_without_hypervisor(section) +
                          f'\n[{section}]\n{key} = "/srv/domu-backup/x"\n', CONF)
    assert config.path == CONF


def test_ssh_files_may_live_in_etc_domu_backup_and_nowhere_else_in_etc() -> None:
    config = parse('[ssh]\nkey = "/etc/domu-backup/id_ed25519"\n'
                   'known_hosts = "/etc/domu-backup/known_hosts"\n')
    assert config.ssh.key == Path("/etc/domu-backup/id_ed25519")
    assert ": ssh.key: " in config_error(BASE + '[ssh]\nkey = "/etc/ssh/ssh_host_ed25519_key"\n')
    assert ": defaults.lock_dir: " in config_error(
        BASE + '[defaults]\nlock_dir = "/etc/domu-backup/lock"\n')


@pytest.mark.parametrize(("settings", "key"), [
    ('source_prefix = "/run/x"\npeer_prefix = "/run/x"\n', "defaults.peer_prefix"),
    ('source_prefix = "/run/x"\npeer_prefix = "/run/x/dst"\n', "defaults.peer_prefix"),
    ('source_prefix = "/run/x/src"\npeer_prefix = "/run/x"\n', "defaults.peer_prefix"),
    ('source_prefix = "/var/lib/domu-backup/src"\n', "defaults.source_prefix"),
    ('peer_prefix = "/run/lock/domu-backup/x"\n', "defaults.peer_prefix"),
    ('source_prefix = "/srv/m"\nreport_dir = "/srv/m/reports"\n', "defaults.source_prefix"),
    ('source_prefix = "/srv/m"\nstate_dir = "/srv/m"\n', "defaults.source_prefix"),
])
def test_mount_prefixes_nest_in_nothing_of_the_tools(settings: str, key: str) -> None:
    message = config_error(BASE + "[defaults]\n" + settings)
    assert f": {key}: " in message


def _tree(tmp_path: Path, config_mode: int = 0o644, key_mode: int = 0o600,
          hosts_mode: int = 0o644, dir_mode: int = 0o755) -> Path:
    d = tmp_path / "etc-domu-backup"
    d.mkdir()
    key = _write(d / "id_ed25519", "key", key_mode)
    hosts = _write(d / "known_hosts", "hosts", hosts_mode)
    path = _write(d / "backup.toml", BASE + f'[ssh]\nkey = "{key}"\nknown_hosts = "{hosts}"\n',
                  config_mode)
    d.chmod(dir_mode)
    return path


def test_the_sandbox_layout_loads(tmp_path: Path) -> None:
    # /etc/domu-backup in the lab: root's, 0755 (or 0700); config 0600/0644, key 0600.
    config = load_config(_tree(tmp_path))
    assert config.ssh.key.name == "id_ed25519"
    (tmp_path / "b").mkdir()
    assert load_config(_tree(tmp_path / "b", config_mode=0o600, dir_mode=0o700)).path.exists()


def test_a_key_readable_by_others_is_refused_like_ssh_does(tmp_path: Path) -> None:
    path = _tree(tmp_path, key_mode=0o644)
    with pytest.raises(errors.InsecureFile) as caught:
        load_config(path)
    key = path.parent / "id_ed25519"
    assert str(key) in str(caught.value) and f"chmod 600 {key}" in str(caught.value)
    assert load_config(path, check_permissions=False).ssh.key == key


def test_a_writable_known_hosts_is_refused(tmp_path: Path) -> None:
    path = _tree(tmp_path, hosts_mode=0o666)
    with pytest.raises(errors.InsecureFile, match="known_hosts.*0666.*chmod go-w"):
        load_config(path)


def test_a_missing_known_hosts_stays_the_runners_error(tmp_path: Path) -> None:
    path = _tree(tmp_path)
    (path.parent / "known_hosts").unlink()
    (path.parent / "id_ed25519").unlink()
    assert load_config(path).ssh.known_hosts == path.parent / "known_hosts"


def test_a_config_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    path = _tree(tmp_path, dir_mode=0o777)
    with pytest.raises(errors.InsecureFile) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path.parent}: ") and "0777" in str(caught.value)


def test_config_and_key_owned_by_another_user_are_refused(tmp_path: Path) -> None:
    from toolkit.safefs import FsView

    path = _tree(tmp_path)
    for victim in (path, path.parent / "id_ed25519", path.parent / "known_hosts",
                   path.parent):
        ino = (os.lstat(victim).st_dev, os.lstat(victim).st_ino)

        def lstat(p: str, ino: tuple[int, int] = ino) -> os.stat_result:
            st = os.lstat(p)
            if (st.st_dev, st.st_ino) != ino:
                return st
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, 4242,
                                   st.st_gid, st.st_size, 0, 0, 0))

        with pytest.raises(errors.InsecureFile, match="uid 4242") as caught:
            load_config(path, view=FsView(lstat=lstat))
        assert str(caught.value).startswith(f"{victim}: ")


def test_every_key_is_one_field_with_its_reader_default_and_doc() -> None:
    # The records are the one table of keys: a key the parser accepts is a field with a
    # reader (a _Parser method), and every field but a domain's name is such a key.
    from dataclasses import fields

    from toolkit.config import _Parser

    for record in (ClusterSettings, HypervisorSettings, SSHSettings, Defaults, DiskConfig,
                   DomainConfig):
        for f in fields(record):
            if record is DomainConfig and f.name == "name":
                assert "read" not in f.metadata
                continue
            method, _options = f.metadata["read"]
            assert callable(getattr(_Parser, method)), (record.__name__, f.name)
            assert f.metadata["doc"].strip(), (record.__name__, f.name)


@pytest.mark.parametrize("table,record,extra", [
    ("ssh", SSHSettings, ""), ("defaults", Defaults, ""),
    ("domains.web01", DomainConfig, 'peer = "dom0-b"\n'),
    ("domains.web01.disks.xvda", DiskConfig, ""),
])
def test_an_unknown_key_lists_exactly_the_fields_of_its_table(table, record, extra) -> None:
    from dataclasses import fields

    domain = '\n[domains.web01]\npeer = "dom0-b"\n' if table.endswith(".xvda") else ""
    message = config_error(BASE + domain + f"\n[{table}]\n{extra}not_a_key = 1\n")
    names = sorted(f.name for f in fields(record) if f.name != "name")
    assert message.endswith(f"{table}.not_a_key: unknown key (expected one of "
                            f"{', '.join(names)})")


# --- keys read under their former names --------------------------------------------


def test_former_key_names_are_read_with_a_warning_naming_the_file_and_the_key() -> None:
    config = parse("""
[defaults]
target_prefix = "/srv/standby"

[domains.web01]
peer = "dom0-b"
disks.xvda.target_lv = "/dev/vg_b/web01"
""")
    assert config.defaults.peer_prefix == "/srv/standby"
    assert config.domains["web01"].standby_lv("xvda", "/dev/vg_a/web01") == "/dev/vg_b/web01"
    assert config.warnings == (
        f"{CONF}: defaults.target_prefix: renamed peer_prefix; the former name is still "
        "read, rename it in the file",
        f"{CONF}: domains.web01.disks.xvda.target_lv: renamed standby_lv; the former name "
        "is still read, rename it in the file",
    )


def test_the_current_key_names_give_no_warning() -> None:
    config = parse('[defaults]\npeer_prefix = "/srv/standby"\n[domains.web01]\npeer = "dom0-b"\n'
                   'disks.xvda.standby_lv = "/dev/vg_b/web01"\n')
    assert config.warnings == ()


@pytest.mark.parametrize(("table", "old", "new", "value"), [
    ("[defaults]", "target_prefix", "peer_prefix", '"/srv/a"'),
    ('[domains.web01]\npeer = "dom0-b"\n[domains.web01.disks.xvda]', "target_lv", "standby_lv",
     '"/dev/vg_b/web01"'),
])
def test_a_key_set_under_both_its_names_is_refused(table: str, old: str, new: str,
                                                   value: str) -> None:
    message = config_error(f"{BASE}\n{table}\n{old} = {value}\n{new} = {value}\n")
    assert f": {old} is the former name of {new}; set " in message
    assert message.endswith(f".{new} only")


def test_a_former_name_is_checked_like_the_current_one() -> None:
    message = config_error(BASE + '[domains.web01]\npeer = "dom0-b"\n'
                           'disks.xvda.target_lv = "/etc/passwd"\n')
    assert "domains.web01.disks.xvda.target_lv: expected an absolute, normalized /dev/" in message


def test_an_unknown_key_lists_only_the_current_names() -> None:
    message = config_error(BASE + "[defaults]\nnot_a_key = 1\n")
    assert "peer_prefix" in message and "target_prefix" not in message
