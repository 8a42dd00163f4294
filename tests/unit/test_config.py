"""The config loader: every key validated, unknown keys refused, errors that
name the file and the key, permission checks, and garbage never crashes it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import errors
from toolkit.config import (
    Config,
    Defaults,
    DiskConfig,
    DomainConfig,
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
    assert web01.target_lv("xvda", "/dev/vg0/web01") == "/dev/vg0/web01"
    assert dict(web01.mounts) == {"xvda1": "/", "xvda2": "/var"}
    assert web01.effective_snapshot_size(config.defaults).lvcreate_args() == ["-L", "2G"]
    assert config.ssh == SSHSettings()
    assert config.defaults == Defaults()


def test_a_minimal_config_gets_the_documented_defaults() -> None:
    config = parse('[domains.web01]\npeer = "dom0-b"\n')
    d = config.defaults
    assert d.snapshot_size == SnapshotSize(percent_origin=20)
    assert d.snapshot_size.lvcreate_args() == ["-l", "20%ORIGIN"]
    assert (d.kpartx_delimiter, d.source_prefix, d.target_prefix) == (
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
    assert web01.target_lv("xvda", "/dev/vg_a/web01") == "/dev/vg_a/web01"
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
target_prefix = "/srv/dst"
state_dir = "/srv/state"
report_dir = "/srv/reports"
lock_dir = "/run/lock/x"
rsync_args = ["--partial", "-v"]
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
target_lv = "/dev/mapper/vg_b-db"
""")
    assert config.ssh == SSHSettings(Path("/root/k"), Path("/root/kh"), 2.5, 30.0, 0,
                                     "aes128-gcm@openssh.com")
    d = config.defaults
    assert d == Defaults(SnapshotSize(absolute="512M"), "-part", "/srv/src", "/srv/dst",
                         "/srv/state", "/srv/reports", "/run/lock/x", ("--partial", "-v"),
                         ("/tmp/*", "/proc/*"), "20M", True, 0, 100, "256M", True)
    db = config.domain("db.example+1")
    assert db.effective_excludes(d) == ("/tmp/*", "/proc/*", "/var/tmp/*")
    assert db.effective_rsync_args(d) == ("--partial", "-v", "--inplace")
    assert db.effective_snapshot_size(d).lvcreate_args() == ["-l", "100%ORIGIN"]
    assert db.disks == {"xvdb": DiskConfig(None), "vda": DiskConfig("/dev/mapper/vg_b-db")}
    assert db.target_lv("xvdb", "/dev/vg_a/db-b") == "/dev/vg_a/db-b"
    assert db.target_lv("vda", "/dev/vg_a/db") == "/dev/mapper/vg_b-db"


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
    ("defaults", "target_prefix", '"/"'), ("defaults", "target_prefix", '"/a/b/"'),
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
    ("defaults", "rsync_args", '["--partial", "--exclude-from=/etc/x"]'),
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
    ("[domains.web01]\npeer = \"dom0-b\"\nrsync_args = [\"--ok\", \"dest:/\"]\n",
     "domains.web01.rsync_args[1]"),
    ("[domains.web01]\npeer = \"dom0-b\"\nsnapshot_size = \"99%FREE\"\n",
     "domains.web01.snapshot_size"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks = 3\n", "domains.web01.disks"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda = \"/dev/vg/x\"\n",
     "domains.web01.disks.xvda"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.XVDA = {}\n", "domains.web01.disks.XVDA"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.1xvda = {}\n", "domains.web01.disks.1xvda"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda.target_lv = \"/etc/passwd\"\n",
     "domains.web01.disks.xvda.target_lv"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda.target_lv = \"/dev/vg/../sda\"\n",
     "domains.web01.disks.xvda.target_lv"),
    ("[domains.web01]\npeer = \"dom0-b\"\ndisks.xvda.target_lv = \"/dev/vg/a b\"\n",
     "domains.web01.disks.xvda.target_lv"),
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


def test_peer_must_be_a_cluster_dom0() -> None:
    message = config_error(BASE + '[domains.web01]\npeer = "dom0-c"\n')
    assert message == (f"{CONF}: domains.web01.peer: expected one of the cluster's Dom0s "
                       "(dom0-a, dom0-b), got 'dom0-c'")


def test_cluster_accepts_ports_users_and_lab_transports() -> None:
    config = parse_config(
        '[cluster.dom0s]\na = "ssh://backup@10.0.0.1:2222"\nb = "docker://dom0-b"\n'
        '[hypervisor]\nuri = "xen:///system"\n', CONF)
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


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_random_text_gives_config_error_or_a_config(text: str) -> None:
    try:
        parse_config(text, CONF)
    except errors.ConfigError as exc:
        assert str(exc).startswith(f"{CONF}: ")


_SECTIONS = ["cluster", "cluster.dom0s", "hypervisor", "ssh", "defaults", "domains",
             "domains.web01", "domains.web01.disks", "domains.web01.disks.xvda",
             "domains.web01.mounts", "x"]
_KEYS = ["dom0s", "dom0-a", "dom0-b", "uri", "key", "known_hosts", "connect_timeout",
         "command_timeout", "keepalive", "cipher", "snapshot_size", "kpartx_delimiter",
         "source_prefix", "target_prefix", "state_dir", "report_dir", "lock_dir",
         "rsync_args", "excludes", "bwlimit", "compress", "max_delete", "snapshot_max_fill",
         "snapshot_extend", "allow_vanished", "peer", "disks", "mounts", "target_lv",
         "xvda", "xvda1", "web01", "\"-x\"", "\"a b\""]
_VALUES = st.one_of(
    st.sampled_from(['"ssh://root@dom0-a:22"', '"xen:///system"', '"/"', '"/dev/vg/x"',
                     '"2G"', '"20%ORIGIN"', '"dom0-b"', '""', "[]", "{}", '["/tmp/*"]',
                     "true", "false", "0", "-1", "1e400", "nan", "inf", "1979-05-27",
                     "07:32:00", "1979-05-27T07:32:00Z", '{a = 1}', '[[1], ["x"]]',
                     "0x10", "'literal'", '"""multi\nline"""']),
    st.integers().map(str),
    st.text(max_size=10).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"')
                             .replace("\n", "\\n") + '"'),
)


@settings(max_examples=400, deadline=None)
@given(body=st.lists(st.tuples(st.sampled_from(_SECTIONS),
                               st.lists(st.tuples(st.sampled_from(_KEYS), _VALUES),
                                        max_size=4)),
                     max_size=6),
       base=st.booleans())
def test_toml_shaped_garbage_gives_config_error_or_a_config(
        body: list[tuple[str, list[tuple[str, str]]]], base: bool) -> None:
    text = BASE if base else ""
    for section, pairs in body:
        text += f"\n[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in pairs)
    try:
        config = parse_config(text, CONF)
    except errors.ConfigError as exc:
        assert str(exc).startswith(f"{CONF}: ")
    else:
        assert len(config.dom0s) >= 2


def test_cipher_defaults_to_aes_gcm_first_and_empty_means_ssh_default() -> None:
    preferred = "aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"
    assert parse().ssh.cipher == SSHSettings().cipher == preferred
    assert parse("[ssh]\ncipher = \"\"\n").ssh.cipher is None
    assert parse("[ssh]\ncipher = \"aes256-ctr\"\n").ssh.cipher == "aes256-ctr"
