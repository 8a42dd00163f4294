"""The sample config (`domu-backup sample-config`, and the README's): it parses, it shows
every default the parser uses, every key carries its doc, and the README holds it verbatim."""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit import sample
from toolkit.config import (
    ClusterSettings,
    Config,
    Defaults,
    DiskConfig,
    DomainConfig,
    Hooks,
    HypervisorSettings,
    RestorePoints,
    SnapshotSize,
    SSHSettings,
    parse_config,
)
from toolkit.runners import HostSpec
from toolkit.sample import UNSET, effective_settings, render_sample, toml_key, toml_value

README = Path(__file__).resolve().parents[2] / "README.md"
CONF = Path("/etc/domu-backup/backup.toml")
BEGIN, END = "<!-- sample-config:begin -->", "<!-- sample-config:end -->"


def parsed(text: str) -> Config:
    return parse_config(text, CONF, allow_lab_hosts=False)


def drift(text: str) -> list[str]:
    """The [ssh] and [defaults] keys whose value parsed from ``text`` is not the code's default."""
    config = parsed(text)
    out = []
    for record, default in ((config.ssh, SSHSettings()), (config.defaults, Defaults())):
        for f in dataclasses.fields(default):
            if getattr(record, f.name) != getattr(default, f.name):
                out.append(f"{type(default).__name__}.{f.name}")
    return out


def readme_sample(text: str) -> str:
    """The content of the README's ```toml block between the sample-config markers."""
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    match = re.search(re.escape(BEGIN) + r"\n```toml\n(.*?)```\n" + re.escape(END), text, re.S)
    assert match is not None, "the README's sample-config block is not a ```toml fence"
    return match.group(1)


def section(text: str, header: str) -> list[str]:
    """The lines of one table of the sample: from its header to the next blank line."""
    lines = text.splitlines()
    start = lines.index(header)
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


def comment_above(lines: list[str], index: int) -> str:
    """The comment lines right above ``lines[index]``, as one line of text."""
    above = []
    i = index - 1
    while i >= 0 and lines[i].startswith("#"):
        above.insert(0, lines[i].lstrip("#").strip())
        i -= 1
    return " ".join(above)


def words(text: str) -> str:
    return " ".join(text.split())


# --- the sample parses, with the code's defaults ---------------------------------------


def test_the_sample_parses_as_an_operators_config() -> None:
    config = parsed(render_sample())
    assert dict(config.dom0s) == {
        "xen-a": HostSpec("ssh", "xen-a.example.net", "root", 22),
        "xen-b": HostSpec("ssh", "xen-b.example.net", "root", 22),
    }
    assert config.hypervisor_uri == "xen:///system"
    assert list(config.domains) == ["web01"]


def test_every_ssh_and_defaults_value_in_the_sample_is_the_codes_default() -> None:
    config = parsed(render_sample())
    assert config.ssh == SSHSettings()
    assert config.defaults == Defaults()
    assert drift(render_sample()) == []


def test_the_sample_spells_the_defaults_whose_none_is_written_another_way() -> None:
    text = render_sample()
    assert 'bwlimit = ""' in text.splitlines()
    assert 'snapshot_extend = ""' in text.splitlines()
    assert 'snapshot_size = "20%ORIGIN"' in section(text, "[defaults]")
    assert 'key = "/etc/domu-backup/id_ed25519"' in section(text, "[ssh]")


def test_the_example_domain() -> None:
    web01 = parsed(render_sample()).domain("web01")
    assert web01 == DomainConfig(
        name="web01", peer="xen-b", excludes=("/tmp/*", "/var/cache/apt/archives/*.deb"),
        rsync_args=(), snapshot_size=SnapshotSize(absolute="2G"),
        disks=MappingProxyType({"xvda": DiskConfig("/dev/vg0/web01")}),
        mounts=MappingProxyType({"xvda1": "/", "xvda2": "/var"}), skip_filesystems=(),
        restore_points=RestorePoints(keep_daily=7, keep_weekly=4),
        hooks=Hooks(on_failure=("/usr/local/sbin/notify-admin", "web01")), freeze="agent")


def test_the_commented_out_skip_filesystems_parses_once_uncommented() -> None:
    text = render_sample()
    assert text.count("\n# skip_filesystems = ") == 1
    config = parsed(text.replace("\n# skip_filesystems = ", "\nskip_filesystems = "))
    assert config.domain("web01").skip_filesystems == ("xvda1",)


# --- every key documented ----------------------------------------------------------------


@pytest.mark.parametrize(("header", "record"), [("[ssh]", SSHSettings),
                                                ("[defaults]", Defaults),
                                                ("[defaults.restore_points]", RestorePoints)])
def test_every_field_is_in_the_sample_below_its_doc(header: str, record: type) -> None:
    lines = section(render_sample(), header)
    keys = [line.split(" = ", 1)[0] for line in lines if re.match(r"[a-z_]+ = ", line)]
    # A field whose value is a table of its own is that table, after the keys (below).
    tables = [f for f in dataclasses.fields(record) if f.name in ("restore_points", "hooks")]
    assert keys == [f.name for f in dataclasses.fields(record) if f not in tables]
    all_lines = render_sample().splitlines()
    for f in tables:
        index = all_lines.index(f"{header[:-1]}.{f.name}]")
        assert comment_above(all_lines, index) == words(f.metadata["doc"])
    for f in dataclasses.fields(record):
        if f in tables:
            continue
        doc = f.metadata.get("doc", "")
        assert doc.strip(), f"{record.__name__}.{f.name} has no doc"
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{f.name} = "))
        assert comment_above(lines, index) == words(doc)


@pytest.mark.parametrize("record", [ClusterSettings, HypervisorSettings, SSHSettings, Defaults,
                                    DomainConfig, DiskConfig, RestorePoints])
def test_every_settings_field_has_a_doc(record: type) -> None:
    for f in dataclasses.fields(record):
        assert isinstance(f.metadata.get("doc"), str) and f.metadata["doc"].strip(), f.name
        assert words(f.metadata["doc"]) in words(render_sample().replace("\n#", "\n"))


@pytest.mark.parametrize(("line", "record"), [("[cluster.dom0s]", ClusterSettings),
                                              ('uri = "xen:///system"', HypervisorSettings)])
def test_cluster_and_hypervisor_are_written_from_their_records(line: str, record: type) -> None:
    lines = render_sample().splitlines()
    (f,) = dataclasses.fields(record)
    assert comment_above(lines, lines.index(line)) == words(f.metadata["doc"])


def test_the_domain_example_shows_every_domain_key_below_its_doc() -> None:
    text = render_sample()
    lines = text.splitlines()
    header = lines.index("[domains.web01]")
    lines = lines[max(i for i in range(header) if not lines[i]):]  # the domain's part
    for f in dataclasses.fields(DomainConfig):
        if f.name == "name":
            line = "[domains.web01]"
        elif f.name in ("disks", "mounts", "restore_points", "hooks"):
            line = next(x for x in lines if x.startswith(f"[domains.web01.{f.name}"))
        else:
            line = next(x for x in lines if re.fullmatch(rf"(# )?{f.name} = .+", x))
        assert comment_above(lines, lines.index(line)) == words(f.metadata["doc"])
    target = lines.index('standby_lv = "/dev/vg0/web01"')
    assert comment_above(lines, target) == words(dataclasses.fields(DiskConfig)[0].metadata["doc"])


def test_a_field_without_a_doc_fails_the_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    f = next(f for f in dataclasses.fields(Defaults) if f.name == "copy_jobs")
    monkeypatch.setattr(f, "metadata", MappingProxyType({}))
    with pytest.raises(ValueError, match=r"Defaults\.copy_jobs has no doc"):
        render_sample()


def test_a_none_default_without_its_toml_spelling_fails_the_sample(
        monkeypatch: pytest.MonkeyPatch) -> None:
    f = next(f for f in dataclasses.fields(Defaults) if f.name == "bwlimit")
    monkeypatch.setattr(f, "metadata", MappingProxyType({"doc": f.metadata["doc"]}))
    with pytest.raises(ValueError, match=r"Defaults\.bwlimit: its default None"):
        render_sample()


def test_a_domain_field_without_an_example_fails_the_sample(
        monkeypatch: pytest.MonkeyPatch) -> None:
    example = dict(sample._DOMAIN_EXAMPLE)
    del example["mounts"]
    monkeypatch.setattr(sample, "_DOMAIN_EXAMPLE", example)
    with pytest.raises(ValueError, match=r"DomainConfig\.mounts has no example"):
        render_sample()


# --- the README ------------------------------------------------------------------------


def test_the_readme_holds_the_sample_verbatim() -> None:
    assert readme_sample(README.read_text()) == render_sample()


def test_the_readme_says_which_command_prints_the_sample() -> None:
    text = README.read_text()
    intro = text[text.index("### Configuration"):text.index(BEGIN)]
    assert "`domu-backup sample-config`" in intro


def test_a_changed_default_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A default changed in the code, with the README (or any stale sample) left behind."""
    stale = render_sample()
    names = [f.name for f in dataclasses.fields(Defaults)]
    init_defaults = list(Defaults.__init__.__defaults__)
    assert len(init_defaults) == len(names)
    init_defaults[names.index("max_delete")] = 9999
    monkeypatch.setattr(Defaults.__init__, "__defaults__", tuple(init_defaults))
    f = next(f for f in dataclasses.fields(Defaults) if f.name == "max_delete")
    monkeypatch.setattr(f, "default", 9999)
    assert Defaults().max_delete == 9999

    assert drift(stale) == ["Defaults.max_delete"]
    assert readme_sample(README.read_text()) != render_sample()
    assert "max_delete = 9999" in render_sample().splitlines()
    assert drift(render_sample()) == []


def test_a_sample_the_parser_reads_differently_is_caught() -> None:
    """What the comparison guards against: a value shown that is not what the parser makes."""
    text = render_sample()
    assert drift(text.replace("\ncopy_jobs = 1\n", "\ncopy_jobs = 2\n")) == ["Defaults.copy_jobs"]
    assert drift(text.replace("\nkeepalive = 15\n", "\nkeepalive = 0\n")) == [
        "SSHSettings.keepalive"]
    assert drift(text.replace('\nbwlimit = ""\n', '\nbwlimit = "20M"\n')) == ["Defaults.bwlimit"]


# --- TOML values ------------------------------------------------------------------------


def _round_trip(value: object) -> object:
    return tomllib.loads(f"v = {toml_value(value)}\n")["v"]


@pytest.mark.parametrize(("value", "toml"), [
    ("", '""'),
    ("plain", '"plain"'),
    ('a "quoted" \\ path', r'"a \"quoted\" \\ path"'),
    ("tab\tnew\nline", r'"tab\tnew\nline"'),
    ("\x00\x1f\x7f", r'"\u0000\u001f\u007f"'),
    ("ünïcödé ✓ 😀", '"ünïcödé ✓ 😀"'),
    (True, "true"),
    (False, "false"),
    (0, "0"),
    (-15, "-15"),
    (10.0, "10.0"),
    (0.5, "0.5"),
    (1e-05, "1e-05"),
    (float("inf"), "inf"),
    (float("-inf"), "-inf"),
    ([], "[]"),
    (["/tmp/*", "*.deb"], '["/tmp/*", "*.deb"]'),
    ((1, [True, "x"]), '[1, [true, "x"]]'),
    ({}, "{}"),
    ({"xvda1": "/", "a.b": [1], "t": {"x": False}}, '{xvda1 = "/", "a.b" = [1], t = {x = false}}'),
    (MappingProxyType({"xvda": "/var"}), '{xvda = "/var"}'),
])
def test_toml_value(value: object, toml: str) -> None:
    assert toml_value(value) == toml
    expected = [*value] if isinstance(value, tuple) else dict(value) if isinstance(
        value, MappingProxyType) else value
    assert _round_trip(value) == expected


def test_toml_value_nan() -> None:
    assert toml_value(float("nan")) == "nan"
    assert math.isnan(_round_trip(float("nan")))


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", 2**63, -(2**63) - 1])
def test_toml_value_refuses_what_toml_cannot_hold(value: object) -> None:
    with pytest.raises(ValueError):
        toml_value(value)


@pytest.mark.parametrize("value", [None, {1: "a"}, Path("/x"), b"bytes", {1}])
def test_toml_value_refuses_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        toml_value(value)


_SCALARS = (st.text() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False))


@settings(max_examples=500, deadline=None)
@given(value=_SCALARS | st.lists(_SCALARS, max_size=5)
       | st.lists(st.lists(_SCALARS, max_size=3), max_size=3))
def test_toml_value_round_trips_through_tomllib(value: object) -> None:
    assert _round_trip(value) == value


@settings(max_examples=300, deadline=None)
@given(key=st.text(min_size=1), value=st.text())
def test_toml_key_round_trips_through_tomllib(key: str, value: str) -> None:
    assert tomllib.loads(f"{toml_key(key)} = {toml_value(value)}\n") == {key: value}


def test_toml_key_is_bare_when_it_may_be() -> None:
    assert toml_key("xen-a") == "xen-a"
    assert toml_key("web_01") == "web_01"
    assert toml_key("web.01") == '"web.01"'
    assert toml_key("é") == '"é"'


# --- a loaded config's settings (check-config) ---------------------------------------------


CLUSTER = "\n".join(section(render_sample(), "[cluster.dom0s]")
                    + section(render_sample(), "[hypervisor]")) + "\n"
SET = CLUSTER + """
[ssh]
connect_timeout = 2
cipher = ""
[defaults]
copy_jobs = 1
bwlimit = "20M"
target_prefix = "/srv/peer"
[domains."db.01"]
peer = "xen-a"
mounts = {xvda1 = "/"}
[domains."db.01".disks.xvdb]
[domains."db.01".disks.xvdc]
standby_lv = "/dev/vg1/db"
"""


@pytest.mark.parametrize("text", [render_sample(), SET], ids=["sample", "set"])
def test_the_settings_shown_are_every_field_and_read_back_as_the_config(text: str) -> None:
    config = parsed(text)
    shown = effective_settings(config)
    keys = [key for key, _value, _given in shown]
    assert len(keys) == len(set(keys))
    tables = {name: [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
              for name, cls in (("restore_points", RestorePoints), ("hooks", Hooks))}
    for record, prefix in ((SSHSettings, "ssh."), (Defaults, "defaults.")):
        assert [k for k in keys if k.startswith(prefix)] == [
            prefix + name for f in dataclasses.fields(record)
            for name in tables.get(f.name, [f.name])]
    # Shown as TOML, every value reads back as what the parser made of the file.
    lines = [f"{key} = {value}" for key, value, _given in shown if value != UNSET]
    for key, value, _given in shown:  # a disk's table with no key set is still its table
        disk = key.rsplit(".", 1)[0]
        if value == UNSET and ".disks." in key and not any(
                line.startswith(f"{disk}.") for line in lines):
            lines.append(f"{disk} = {{}}")
    again = parsed("\n".join(lines) + "\n" + CLUSTER)
    assert (again.ssh, again.defaults, again.domains) == (config.ssh, config.defaults,
                                                          config.domains)


def test_the_settings_shown_say_which_the_file_sets() -> None:
    shown = {key: (value, given) for key, value, given in effective_settings(parsed(SET))}
    assert {key for key, (_value, given) in shown.items() if given} == {
        "ssh.connect_timeout", "ssh.cipher", "defaults.copy_jobs", "defaults.bwlimit",
        "defaults.peer_prefix", 'domains."db.01".peer', 'domains."db.01".mounts',
        'domains."db.01".disks.xvdc.standby_lv'}
    assert shown["ssh.connect_timeout"] == ("2.0", True)
    assert shown["ssh.cipher"] == ('""', True)
    assert shown["ssh.keepalive"] == ("15", False)
    assert shown["defaults.copy_jobs"] == ("1", True)  # set to its default: still set
    assert shown["defaults.peer_prefix"] == ('"/srv/peer"', True)  # under its former name
    assert shown["defaults.snapshot_size"] == ('"20%ORIGIN"', False)
    assert shown["defaults.bwlimit"] == ('"20M"', True)
    assert shown["defaults.snapshot_extend"] == ('""', False)
    assert shown['domains."db.01".snapshot_size'] == (UNSET, False)
    assert shown['domains."db.01".disks.xvdb.standby_lv'] == (UNSET, False)
    assert shown['domains."db.01".disks.xvdc.standby_lv'] == ('"/dev/vg1/db"', True)
    assert shown['domains."db.01".mounts'] == ('{xvda1 = "/"}', True)
    assert shown['domains."db.01".excludes'] == ("[]", False)
    assert 'domains."db.01".name' not in shown and 'domains."db.01".disks' not in shown
    no_disks = dict((k, (v, g)) for k, v, g in effective_settings(parsed(CLUSTER + (
        '[domains.w]\npeer = "xen-b"\n'))))
    assert no_disks["domains.w.disks"] == ("{}", False)
    assert no_disks["domains.w.mounts"] == ("{}", False)
