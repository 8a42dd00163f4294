"""virsh facts, on outputs recorded from libvirt's test driver (fixtures/recorded/virsh)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.errors import ParseError
from toolkit.facts import virsh
from toolkit.runners import CommandResult

RECORDED = Path(__file__).resolve().parents[2] / "fixtures" / "recorded"


def recorded(name: str) -> CommandResult:
    data = json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))
    return CommandResult("rec", tuple(data["argv"]), data["exit_code"], data["stdout"],
                         data["stderr"], 0.0)


def test_argv_keeps_a_dash_name_a_name():
    assert virsh.domstate_argv("qemu:///system", "-x") == [
        "virsh", "-c", "qemu:///system", "domstate", "--", "-x"]
    assert virsh.dumpxml_argv("qemu:///system", "web01")[-2:] == ["--", "web01"]
    with pytest.raises(ValueError):
        virsh.list_argv("-c")


@pytest.mark.parametrize("name", sorted(p.stem for p in (RECORDED / "virsh").glob("*.json")))
def test_recordings_were_made_with_the_current_argv_builders(name):
    result = recorded(f"virsh/{name}")
    uri, command = result.argv[2], result.argv[3]
    if command == "list":
        assert list(result.argv) == virsh.list_argv(uri)
    else:
        builder = {"domstate": virsh.domstate_argv, "dumpxml": virsh.dumpxml_argv}[command]
        assert list(result.argv) == builder(uri, result.argv[-1])


@pytest.mark.parametrize("name, state", [
    ("running", "running"), ("paused", "paused"), ("shut-off", "shut off"),
    ("crashed", "crashed"), ("idle", "idle"), ("in-shutdown", "in shutdown"),
    ("pmsuspended", "pmsuspended"),
])
def test_parse_domstate_reads_every_recorded_state(name, state):
    result = recorded(f"virsh/domstate-{name}")
    assert result.exit_code == 0
    assert virsh.parse_domstate(result.stdout) == state


@pytest.mark.parametrize("text", ["", "\n\n", "running (booted)\n", "runnin\n",
                                  "running\npaused\n", "error: failed\n", "Running\n"])
def test_parse_domstate_rejects_anything_but_one_known_state(text):
    with pytest.raises(ParseError):
        virsh.parse_domstate(text)


def test_unknown_domain_is_told_apart_from_other_failures():
    for name in ("domstate-missing", "dumpxml-missing"):
        assert virsh.domain_missing(recorded(f"virsh/{name}"))
    assert not virsh.domain_missing(recorded("virsh/domstate-running"))
    broken = CommandResult("h", ("virsh",), 1, "",
                           "error: failed to connect to the hypervisor\n", 0.0)
    assert not virsh.domain_missing(broken)
    older = CommandResult("h", ("virsh",), 1, "",
                          "error: Domain not found: no domain with matching name 'x'\n", 0.0)
    assert virsh.domain_missing(older)


def test_parse_domain_list_keeps_odd_names_exactly():
    names = virsh.parse_domain_list(recorded("virsh/list-node").stdout)
    assert names == ["web01", "db-01", "-dashed", "idle01", "stopping01", "suspended01",
                     "mail 01 ünï"]
    assert virsh.parse_domain_list(recorded("virsh/list-default").stdout) == ["test"]


def test_parse_domain_list_empty_only_for_virshs_empty_answer():
    assert virsh.parse_domain_list("\n") == []
    for text in ("", "web01\n", "web01", "web01\n\nother\n\n"):
        with pytest.raises(ParseError):
            virsh.parse_domain_list(text)


def test_parse_domain_list_refuses_table_output():
    table = " Id   Name    State\n-----------------------\n 1    web01   running\n\n"
    with pytest.raises(ParseError):
        virsh.parse_domain_list(table)


def test_web01_backs_up_its_two_block_disks_and_skips_the_rest():
    disks = virsh.parse_domain_disks(recorded("virsh/dumpxml-web01").stdout)
    assert [(d.target, d.source, d.skip_reason) for d in disks] == [
        ("xvda", "/dev/vg0/web01-disk", None),
        ("xvdb", "/dev/vg0/web01-data", None),
        ("xvdc", "/var/lib/xen/images/web01-swap.img", "file-backed"),
        ("hdc", None, "cdrom"),
    ]
    assert disks[0].bus == "xen" and disks[0].disk_type == "block" and disks[0].device == "disk"
    assert disks[3].readonly and not disks[3].shareable


def test_db01_skip_reasons_cover_every_kind_of_disk():
    disks = {d.target: d for d in virsh.parse_domain_disks(recorded("virsh/dumpxml-db-01").stdout)}
    assert {t: d.skip_reason for t, d in disks.items()} == {
        "vda": None,
        "vdb": "shareable",
        "vdc": "readonly",
        "vdd": "network",
        "vde": "storage-pool volume",
        "sda": "lun (SCSI passthrough)",
        "sdb": "cdrom",
    }
    assert disks["vda"].source == "/dev/vg--data/db--01-root"
    assert disks["vdd"].source is None and disks["vdd"].disk_type == "network"
    assert disks["vdb"].shareable and disks["vdc"].readonly


def test_domain_with_spaces_and_unicode_and_no_disks():
    disks = virsh.parse_domain_disks(recorded("virsh/dumpxml-mail01").stdout)
    assert [(d.target, d.source) for d in disks] == [("xvda", "/dev/vg0/mail 01")]
    assert virsh.parse_domain_disks(recorded("virsh/dumpxml-no-disks").stdout) == []
    default = virsh.parse_domain_disks(recorded("virsh/dumpxml-default-test").stdout)
    assert [(d.target, d.skip_reason) for d in default] == [("vda", "file-backed")]


@pytest.mark.parametrize("text", [
    "", "   ", "not xml", "<domain>", "<node><domain/></node>",
    "<domain><devices><disk type='block' device='disk'><source dev='/dev/x'/></disk>"
    "</devices></domain>",
    "<domain><devices><disk device='disk'><target dev='xvda'/></disk></devices></domain>",
    "<domain><devices><disk type='block' device='disk'><target dev='xvda'/></disk>"
    "<disk type='block' device='disk'><target dev='xvda'/></disk></devices></domain>",
    "<domain xmlns='urn:other'><devices/></domain>",
])
def test_parse_domain_disks_rejects_bad_xml_and_non_domains(text):
    with pytest.raises(ParseError):
        virsh.parse_domain_disks(text)


def test_parse_domain_disks_resolves_no_entities(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("/dev/vg0/stolen")
    xxe = (f'<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]>'
           "<domain><devices><disk type='block' device='disk'><source dev='&x;'/>"
           "<target dev='xvda'/></disk></devices></domain>")
    with pytest.raises(ParseError) as exc:
        virsh.parse_domain_disks(xxe)
    assert "stolen" not in str(exc.value)
    laughs = ('<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
              "<domain><name>&b;</name></domain>")
    with pytest.raises(ParseError):
        virsh.parse_domain_disks(laughs)


_ATTR = st.sampled_from(["block", "file", "network", "volume", "dir", "nvme"])
_DEVICE = st.sampled_from(["disk", "cdrom", "floppy", "lun"])


@given(st.lists(st.tuples(_ATTR, _DEVICE, st.booleans(), st.booleans(), st.booleans()),
                max_size=6))
def test_a_disk_is_backed_up_exactly_when_it_is_a_writable_private_block_disk(specs):
    parts = []
    for i, (dtype, device, has_source, ro, shared) in enumerate(specs):
        attr = {"block": "dev", "file": "file", "dir": "dir"}.get(dtype, "name")
        source = f"<source {attr}='/dev/vg0/d{i}'/>" if has_source else ""
        parts.append(f"<disk type='{dtype}' device='{device}'>{source}"
                     f"<target dev='xvd{chr(97 + i)}' bus='xen'/>"
                     f"{'<readonly/>' if ro else ''}{'<shareable/>' if shared else ''}</disk>")
    xml = f"<domain type='xen'><devices>{''.join(parts)}</devices></domain>"
    disks = virsh.parse_domain_disks(xml)
    assert len(disks) == len(specs)
    for disk, (dtype, device, has_source, ro, shared) in zip(disks, specs, strict=True):
        wanted = dtype == "block" and device == "disk" and has_source and not ro and not shared
        assert disk.backed_up == wanted
        assert (disk.source is not None) == (has_source and dtype in ("block", "file", "dir"))


@given(st.text())
def test_virsh_parsers_raise_only_parse_error_on_any_text(text):
    for parse in (virsh.parse_domstate, virsh.parse_domain_list, virsh.parse_domain_disks):
        try:
            parse(text)
        except ParseError:
            pass


@given(st.integers(min_value=0, max_value=2000))
def test_truncated_domain_xml_is_an_error_not_fewer_disks(cut):
    text = recorded("virsh/dumpxml-db-01").stdout
    stripped = text.rstrip()
    if cut >= len(stripped):
        return
    with pytest.raises(ParseError):
        virsh.parse_domain_disks(stripped[:cut])
