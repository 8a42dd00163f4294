"""virsh facts, on outputs recorded from libvirt's test driver (fixtures/recorded/virsh)."""

from __future__ import annotations

import string

import pytest
from fakes import RECORDED, recorded_result
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from toolkit.errors import ParseError, UnsafeName
from toolkit.facts import virsh
from toolkit.runners import CommandResult


def test_argv_keeps_a_dash_name_a_name():
    assert virsh.domstate_argv("qemu:///system", "-x") == [
        "virsh", "-c", "qemu:///system", "domstate", "--", "-x"]
    assert virsh.dumpxml_argv("qemu:///system", "web01")[-2:] == ["--", "web01"]
    with pytest.raises(ValueError):
        virsh.list_argv("-c")


@pytest.mark.parametrize("name", sorted(p.stem for p in (RECORDED / "virsh").glob("*.json")))
def test_recordings_were_made_with_the_current_argv_builders(name):
    result = recorded_result(f"virsh/{name}")
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
    result = recorded_result(f"virsh/domstate-{name}")
    assert result.exit_code == 0
    assert virsh.parse_domstate(result.stdout) == state


@pytest.mark.parametrize("text", ["", "\n\n", "running (booted)\n", "runnin\n",
                                  "running\npaused\n", "error: failed\n", "Running\n"])
def test_parse_domstate_rejects_anything_but_one_known_state(text):
    with pytest.raises(ParseError):
        virsh.parse_domstate(text)


def test_unknown_domain_is_told_apart_from_other_failures():
    for name in ("domstate-missing", "dumpxml-missing"):
        assert virsh.domain_missing(recorded_result(f"virsh/{name}"))
    assert not virsh.domain_missing(recorded_result("virsh/domstate-running"))
    broken = CommandResult("h", ("virsh",), 1, "",
                           "error: failed to connect to the hypervisor\n", 0.0)
    assert not virsh.domain_missing(broken)
    older = CommandResult("h", ("virsh",), 1, "",
                          "error: Domain not found: no domain with matching name 'x'\n", 0.0)
    assert virsh.domain_missing(older)


def test_web01_backs_up_its_two_block_disks_and_skips_the_rest():
    disks = virsh.parse_domain_disks(recorded_result("virsh/dumpxml-web01").stdout)
    assert [(d.target, d.source, d.skip_reason) for d in disks] == [
        ("xvda", "/dev/vg0/web01-disk", None),
        ("xvdb", "/dev/vg0/web01-data", None),
        ("xvdc", "/var/lib/xen/images/web01-swap.img", "file-backed"),
        ("hdc", None, "cdrom"),
    ]
    assert disks[0].bus == "xen" and disks[0].disk_type == "block" and disks[0].device == "disk"
    assert disks[3].readonly and not disks[3].shareable


def test_db01_skip_reasons_cover_every_kind_of_disk():
    disks = {d.target: d
             for d in virsh.parse_domain_disks(recorded_result("virsh/dumpxml-db-01").stdout)}
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
    disks = virsh.parse_domain_disks(recorded_result("virsh/dumpxml-mail01").stdout)
    assert [(d.target, d.source) for d in disks] == [("xvda", "/dev/vg0/mail 01")]
    assert virsh.parse_domain_disks(recorded_result("virsh/dumpxml-no-disks").stdout) == []
    default = virsh.parse_domain_disks(recorded_result("virsh/dumpxml-default-test").stdout)
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
_SOURCE_DIR = st.sampled_from(["/dev/vg0", "/dev/mapper", "/srv/images", "/dev/vg0/../../srv"])


@given(st.lists(st.tuples(_ATTR, _DEVICE, _SOURCE_DIR, st.booleans(), st.booleans(),
                          st.booleans()), max_size=6))
def test_a_disk_is_backed_up_exactly_when_it_is_a_writable_private_block_disk(specs):
    parts = []
    for i, (dtype, device, where, has_source, ro, shared) in enumerate(specs):
        attr = {"block": "dev", "file": "file", "dir": "dir"}.get(dtype, "name")
        source = f"<source {attr}='{where}/d{i}'/>" if has_source else ""
        parts.append(f"<disk type='{dtype}' device='{device}'>{source}"
                     f"<target dev='xvd{chr(97 + i)}' bus='xen'/>"
                     f"{'<readonly/>' if ro else ''}{'<shareable/>' if shared else ''}</disk>")
    xml = f"<domain type='xen'><devices>{''.join(parts)}</devices></domain>"
    disks = virsh.parse_domain_disks(xml)
    assert len(disks) == len(specs)
    for disk, (dtype, device, where, has_source, ro, shared) in zip(disks, specs, strict=True):
        # a file below /dev (a normal path) is a block device: xl's qdisk declares LVs so
        block = dtype == "block" or (dtype == "file" and where.startswith("/dev/")
                                     and ".." not in where)
        wanted = block and device == "disk" and has_source and not ro and not shared
        assert disk.backed_up == wanted
        assert (disk.source is not None) == (has_source and dtype in ("block", "file", "dir"))
        # only a drive with a medium that is not a cdrom or floppy is worth a warning
        assert disk.warning == (not wanted and has_source and device in ("disk", "lun"))


# virsh's state words (tools/virsh-domain-monitor.c, virshDomainStateToString), written out.
_STATES = ["no state", "running", "idle", "paused", "in shutdown", "shut off", "crashed",
           "pmsuspended"]


@given(st.sampled_from(_STATES), st.sampled_from(["", " ", "\n"]), st.sampled_from(["\n", "\n\n"]),
       st.sampled_from([None, "upper", "cut", "word", "twice", "reason"]))
def test_domstate_reads_each_state_and_refuses_it_changed_by_one_step(state, before, after,
                                                                    change):
    if change is None:
        assert virsh.parse_domstate(before + state + after) == state
        return
    changed = {"upper": state.title(), "cut": state[:-1], "word": state + " now",
               "twice": state + "\n" + state, "reason": state + " (booted)"}[change]
    with pytest.raises(ParseError, match="virsh domstate"):
        virsh.parse_domstate(before + changed + after)


_DB01_XML = recorded_result("virsh/dumpxml-db-01").stdout.rstrip()


@given(st.integers(min_value=0, max_value=len(_DB01_XML) - 1))
def test_truncated_domain_xml_is_an_error_not_fewer_disks(cut):
    with pytest.raises(ParseError):
        virsh.parse_domain_disks(_DB01_XML[:cut])


# -- disks as operators declare them (recorded from libvirt's test driver: node-disks.xml) --


def _disks(name: str) -> dict[str, virsh.DomainDisk]:
    return {d.target: d for d in virsh.parse_domain_disks(recorded_result(f"virsh/{name}").stdout)}


def test_an_lv_declared_as_a_file_under_dev_is_backed_up_like_a_block_disk():
    disks = _disks("dumpxml-qdisk01")
    assert {t: (d.source, d.skip_reason, d.warning) for t, d in disks.items()} == {
        "xvda": ("/dev/vg0/qdisk01", None, False),
        "xvdb": ("/dev/mapper/vg0-qdisk01--data", None, False),
        "xvdc": ("/var/lib/xen/images/qdisk01-scratch.img", "file-backed", True),
        "hdc": (None, "cdrom", False),
    }
    assert disks["xvda"].disk_type == "file" and disks["xvda"].backed_up


@pytest.mark.parametrize("path", ["/dev/vg0/../../srv/web01.img", "/dev//vg0/web01",
                                  "/dev/vg0/web01/", "/dev/", "/devices/web01", "dev/vg0/web01"])
def test_a_file_is_a_block_device_only_by_a_normal_path_below_dev(path):
    xml = (f"<domain><devices><disk type='file' device='disk'><source file='{path}'/>"
           "<target dev='xvda'/></disk></devices></domain>")
    (disk,) = virsh.parse_domain_disks(xml)
    assert disk.skip_reason == "file-backed" and disk.warning


def test_an_image_format_on_an_lv_is_skipped_never_read_as_a_raw_disk():
    disks = _disks("dumpxml-fmt01")
    assert {t: (d.driver_type, d.backed_up, d.warning) for t, d in disks.items()} == {
        "vda": ("qcow2", False, True),
        "vdb": ("raw", True, False),
        "vdc": (None, True, False),  # no driver type: raw
        "vdd": ("qcow2", False, True),  # a qcow2 "file" under /dev is no raw LV either
        "fda": (None, False, False),
    }
    assert "driver type 'qcow2', not raw" in disks["vda"].skip_reason
    assert "driver type 'qcow2', not raw" in disks["vdd"].skip_reason
    assert disks["fda"].skip_reason == "floppy"


def test_transient_and_block_copied_disks_are_skipped_with_the_reason():
    disks = _disks("dumpxml-jobs01")
    assert disks["vda"].backed_up and disks["vdc"].backed_up
    assert disks["vdb"].skip_reason.startswith("transient") and disks["vdb"].warning
    # libvirt shows <mirror> in the live XML while a block copy runs
    mirrored = _disks("dumpxml-jobs01-mirror-handwritten")
    assert mirrored["vdc"].skip_reason.startswith("block job in progress (<mirror job='copy'>)")
    assert mirrored["vdc"].warning and mirrored["vda"].backed_up


def test_pv_guest_partitions_each_on_their_own_lv_are_disks():
    disks = _disks("dumpxml-pv01")
    assert [(t, d.source, d.backed_up) for t, d in disks.items()] == [
        ("xvda1", "/dev/vg_a/pv01-swap", True), ("xvda2", "/dev/vg_a/web01", True)]


def test_only_disks_holding_data_warn_when_skipped():
    db = _disks("dumpxml-db-01")
    assert {t for t, d in db.items() if d.warning} == {"vdb", "vdc", "vdd", "vde", "sda"}
    web = _disks("dumpxml-web01")
    assert {t for t, d in web.items() if d.warning} == {"xvdc"}
    assert not _disks("dumpxml-qdisk02")["hdc"].warning  # an empty cdrom


# -- strict disk target names (R20) ----------------------------------------------------------


def _domain_with_target(target: str, name: str = "host01") -> str:
    domain = etree.Element("domain", type="xen")
    etree.SubElement(domain, "name").text = name
    disk = etree.SubElement(etree.SubElement(domain, "devices"), "disk", type="block",
                            device="disk")
    etree.SubElement(disk, "source", dev="/dev/vg0/host01")
    etree.SubElement(disk, "target", dev=target, bus="xen")
    return etree.tostring(domain, encoding="unicode")


@pytest.mark.parametrize("target", ["xvda", "xvda1", "sdb", "hdc", "vdaa", "ubdb", "xvdz12",
                                    "fda"])
def test_disk_targets_the_tool_accepts(target):
    assert virsh.is_disk_target(target)
    (disk,) = virsh.parse_domain_disks(_domain_with_target(target))
    assert disk.target == target


@pytest.mark.parametrize("target", ["../etc", "xvda/../../x", "-xvda", "xvda ", "xvda\n1",
                                    "xvd", "xvda1a", "XVDA", "nvme0n1", "xvdé", "xvda-1",
                                    "xvda.1", "xvda\n"])
def test_disk_targets_outside_the_rule_refuse_the_domain_naming_it_and_the_value(target):
    assert not virsh.is_disk_target(target)
    with pytest.raises(UnsafeName) as info:
        virsh.parse_domain_disks(_domain_with_target(target))
    assert "domain 'host01'" in str(info.value) and repr(target) in str(info.value)
    with pytest.raises(UnsafeName, match="domain 'web01'"):
        virsh.parse_domain_disks(_domain_with_target(target), domain_name="web01")


_VALID = st.builds(lambda bus, letters, number: bus + letters + number,
                   st.sampled_from(["hd", "sd", "vd", "xvd", "ubd", "fd"]),
                   st.text(string.ascii_lowercase, min_size=1, max_size=4),
                   st.sampled_from(["", "1", "2", "15", "128"]))
_HOSTILE = st.sampled_from(["/", "..", " ", "\n", "\r", "\t", "-", ".", "_", "A", "é", "\u0430",
                            "\uff41", "\u0661", "\u00b9", "\u0131", "\u212a", "\u200b", "%2f",
                            "\x00", "\x7f"])


@given(_VALID)
def test_generated_valid_targets_are_accepted(target):
    assert virsh.is_disk_target(target)
    (disk,) = virsh.parse_domain_disks(_domain_with_target(target))
    assert disk.target == target


@given(st.one_of(st.just(""), _VALID), _HOSTILE, st.one_of(st.just(""), _VALID,
                                                         st.sampled_from(["1", "a", "etc"])))
def test_generated_hostile_targets_are_refused(before, hostile, after):
    target = before + hostile + after
    assert not virsh.is_disk_target(target)
    try:
        xml = _domain_with_target(target)
    except ValueError:
        return  # not representable in XML (NUL, DEL): libvirt can never print it either
    with pytest.raises(UnsafeName, match="domain 'host01'"):
        virsh.parse_domain_disks(xml)


_BUSES = ("hd", "sd", "vd", "xvd", "ubd", "fd")


def _target_rule(name: str) -> bool:
    """The target rule as the docstring says it, without a regex: a bus prefix, one or more
    letters a-z, then digits 0-9 or nothing."""
    for bus in _BUSES:
        if name.startswith(bus):
            rest = name[len(bus):]
            letters = len(rest) - len(rest.lstrip(string.ascii_lowercase))
            if letters and all(c in string.digits for c in rest[letters:]):
                return True
    return False


def _insert(text: str, extra: str, at: int) -> str:
    at = min(at, len(text))
    return text[:at] + extra + text[at:]


# Near-valid names: a real or almost-real bus prefix, letters and digits in either order,
# and at times one foreign character put anywhere; about half are accepted.
_NEAR_TARGETS = st.builds(
    _insert,
    st.builds(lambda prefix, letters, digits, swap: prefix + (digits + letters if swap
                                                                else letters + digits),
              st.sampled_from(_BUSES) | st.sampled_from(["md", "xd", "v", "nvme", "HD", "Xvd",
                                                         "ubdd", "s"]),
              st.text("abz", min_size=1, max_size=3),
              st.text("019", max_size=3), st.sampled_from([False, False, False, True])),
    st.just("") | st.sampled_from(["A", "-", ".", "/", " ", "\n", "_", "\u0661", "\u00e9",
                                   "\u00b9", "\u212a", "0", ""]),
    st.integers(0, 10))


@given(_NEAR_TARGETS)
def test_a_target_is_accepted_exactly_when_it_follows_the_rule(target):
    assert virsh.is_disk_target(target) == _target_rule(target)
    if _target_rule(target):
        (disk,) = virsh.parse_domain_disks(_domain_with_target(target))
        assert disk.target == target
    else:
        with pytest.raises(UnsafeName, match="domain 'host01'"):
            virsh.parse_domain_disks(_domain_with_target(target))
