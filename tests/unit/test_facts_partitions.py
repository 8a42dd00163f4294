"""Partition tables, on `sfdisk --json` outputs recorded from real images and loop devices.

The images are made by fixtures/recorded/record.py with fixed identifiers, so
the expectations below are the recipe, not a copy of the output.
"""

from __future__ import annotations

import json

import pytest
from fakes import RECORDED, recorded_result
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import CommandFailed, ParseError, UnsafeName
from toolkit.facts import partitions
from toolkit.facts.blkid import parse_blkid_export
from toolkit.runners import CommandResult

MiB = 1024 * 1024
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


def table(name: str) -> partitions.PartitionTable:
    return partitions.partition_table_from_result(recorded_result(f"sfdisk/{name}"))


@pytest.mark.parametrize("name", sorted(p.stem for p in (RECORDED / "sfdisk").glob("*.json")))
def test_recordings_were_made_with_the_current_argv_builder(name):
    result = recorded_result(f"sfdisk/{name}")
    assert list(result.argv) == partitions.sfdisk_argv(result.argv[-1])


def test_msdos_with_extended_and_logical_partitions():
    t = table("msdos")
    assert (t.label, t.id, t.sector_size) == ("dos", "0x1234abcd", 512)
    assert [(p.number, p.type, p.bootable, p.is_container) for p in t.partitions] == [
        (1, "83", True, False), (2, "82", False, False), (3, "5", False, True),
        (5, "83", False, False), (6, "b", False, False), (7, "8e", False, False)]
    assert t.byte_range(1) == (MiB, 16 * MiB)
    assert all(p.uuid is None and p.name is None for p in t.partitions)
    # the logical partitions lie inside the extended one
    ext = t.partition(3)
    for n in (5, 6, 7):
        assert ext.start < t.partition(n).start and t.partition(n).end <= ext.end


def test_msdos_partuuid_matches_blkids_disk_identifier():
    t = table("msdos")
    ptuuid = parse_blkid_export(recorded_result("blkid/msdos-disk").stdout).ptuuid
    assert ptuuid == "1234abcd"
    assert t.partuuid(1) == f"{ptuuid}-01"
    assert t.partuuid(5) == f"{ptuuid}-05"   # logical partitions count from 5
    with pytest.raises(KeyError):
        t.partuuid(4)


def test_msdos_zero_identifier_has_no_partuuid_and_keeps_slot_numbers():
    t = table("msdos-gap-zero-id")
    assert [p.number for p in t.partitions] == [2]
    assert t.partuuid(2) is None
    assert parse_blkid_export(recorded_result("blkid/msdos-gap-zero-id-disk").stdout).ptuuid is None


def test_gpt_names_uuids_and_attributes():
    t = table("gpt")
    assert (t.label, t.id) == ("gpt", "8E2D5C1A-0B3F-4F6E-9A51-3C2B1D0E4F5A")
    assert [(p.number, p.name) for p in t.partitions] == [
        (1, "EFI system"), (2, "root fs ü"), (3, None), (4, "var"), (5, "empty")]
    root = t.partition(2)
    assert root.type == LINUX and root.bootable and root.attrs == "LegacyBIOSBootable"
    assert t.partition(1).type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert t.partuuid(2) == "53b9f43e-5e91-444d-8a05-6480c9c8c30a"
    assert not any(p.is_container for p in t.partitions)
    assert parse_blkid_export(recorded_result("blkid/gpt-disk").stdout).ptuuid == t.id.lower()


def test_gpt_with_4096_byte_sectors_gives_byte_ranges_in_bytes():
    t = table("gpt-4k-sectors")
    assert t.sector_size == 4096
    assert t.partition(1).start == 256
    assert t.byte_range(1) == (MiB, 16 * MiB)
    assert t.partition(1).number == 1   # node /dev/loopNp1


def test_gpt_read_with_the_wrong_sector_size_is_refused():
    with pytest.raises(ParseError, match="protective"):
        table("gpt-4k-read-as-512")


def test_grown_disk_and_empty_gpt_still_parse():
    grown = recorded_result("sfdisk/gpt-grown-disk")
    assert "backup GPT table is not on the end" in grown.stderr
    assert [p.number for p in table("gpt-grown-disk").partitions] == [1]
    empty = table("gpt-no-partitions")
    assert empty.label == "gpt" and empty.partitions == ()


@pytest.mark.parametrize("name", ["notable-ext4", "blank"])
def test_no_table_only_when_sfdisk_says_so(name):
    t = partitions.partition_table_from_result(recorded_result(f"sfdisk/{name}"), sector_size=4096)
    assert t == partitions.PartitionTable(label=None, id=None, sector_size=4096, partitions=())
    with pytest.raises(KeyError):
        t.partuuid(1)


def test_a_missing_device_is_a_failure_not_no_table():
    result = recorded_result("sfdisk/missing-device")
    assert result.exit_code == 1
    with pytest.raises(CommandFailed):
        partitions.partition_table_from_result(result)
    for code, err in ((1, "sfdisk: /dev/x: Permission denied\n"), (2, ""), (1, ""),
                      (1, "sfdisk: /dev/x: enthält keine erkennbare Partitionstabelle\n"),
                      (137, partitions.NO_TABLE_MESSAGE)):
        with pytest.raises(CommandFailed):
            partitions.partition_table_from_result(CommandResult("h", ("sfdisk",), code, "",
                                                                 err, 0.0))


def doc(label: str = "dos", parts: list | None = None, **over) -> str:
    table = {"label": label, "id": "0x1234abcd" if label == "dos" else LINUX,
             "device": "/dev/vg0/snap", "unit": "sectors", "sectorsize": 512,
             "partitions": parts if parts is not None else
             [{"node": "/dev/vg0/snap1", "start": 2048, "size": 2048, "type": "83"}]}
    table.update(over)
    return json.dumps({"partitiontable": table})


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"partitiontable": null}', doc(label="sun"), doc(label=None),
    doc(id="1234abcd"), doc(unit="cylinders"), doc(sectorsize=0), doc(sectorsize=1000),
    doc(sectorsize="512"), doc(partitions={}), doc(parts=[1]),
    doc(parts=[{"node": "/dev/vg0/snap1", "start": -1, "size": 1, "type": "83"}]),
    doc(parts=[{"node": "/dev/vg0/snap1", "start": True, "size": 1, "type": "83"}]),
    doc(parts=[{"node": "/dev/other1", "start": 1, "size": 1, "type": "83"}]),
    doc(parts=[{"node": "/dev/vg0/snapX", "start": 1, "size": 1, "type": "83"}]),
    doc(parts=[{"node": "/dev/vg0/snap0", "start": 1, "size": 1, "type": "83"}]),
    doc(parts=[{"node": "/dev/vg0/snap1", "start": 1, "size": 1, "type": "Linux"}]),
    doc(parts=[{"node": "/dev/vg0/snap1", "start": 1, "size": 1, "type": "83",
                "bootable": "yes"}]),
    doc(parts=[{"node": "/dev/vg0/snap1", "start": 1, "size": 1, "type": "83"}] * 2),
    doc(label="gpt", parts=[{"node": "/dev/vg0/snap1", "start": 1, "size": 1, "type": LINUX}]),
    doc(label="gpt", parts=[{"node": "/dev/vg0/snap1", "start": 1, "size": 1, "type": "83",
                             "uuid": LINUX}]),
])
def test_parse_sfdisk_rejects_garbage_and_wrong_shapes(text):
    with pytest.raises(ParseError):
        partitions.parse_sfdisk(text)


@pytest.mark.parametrize("device, node, number", [
    ("/dev/vg0/snap", "/dev/vg0/snap12", 12),
    ("/dev/loop3", "/dev/loop3p2", 2),
    ("/dev/mapper/vg0-disk1", "/dev/mapper/vg0-disk1-part3", 3),
    ("disk 1.img", "disk 1.imgp1", 1),
])
def test_partition_numbers_come_from_the_node_name(device, node, number):
    text = doc(device=device, parts=[{"node": node, "start": 1, "size": 1, "type": "83"}])
    assert partitions.parse_sfdisk(text).partitions[0].number == number


_DOS_PART = st.fixed_dictionaries({
    "start": st.integers(min_value=0, max_value=2**40),
    "size": st.integers(min_value=0, max_value=2**40),
    "type": st.integers(min_value=0, max_value=255).map(lambda n: f"{n:x}").filter(
        lambda t: t != "ee"),
    "bootable": st.booleans(),
})


@given(st.lists(_DOS_PART, max_size=16), st.integers(min_value=1, max_value=2**32 - 1))
def test_parse_sfdisk_round_trips_any_msdos_table(parts, ident):
    raw = [{"node": f"/dev/vg0/snap{i + 1}", **p} for i, p in enumerate(parts)]
    t = partitions.parse_sfdisk(doc(parts=raw, id=f"0x{ident:08x}"))
    assert [(p.number, p.start, p.size, p.type, p.bootable) for p in t.partitions] == [
        (i + 1, p["start"], p["size"], p["type"], p["bootable"]) for i, p in enumerate(parts)]
    for p in t.partitions:
        assert p.is_container == (p.type in ("5", "f", "85"))
        assert t.partuuid(p.number) == f"{ident:08x}-{p.number:02x}"


_HEX = "0123456789abcdefABCDEF"
_GUIDS = st.builds(lambda *p: "-".join(p), *(st.text(_HEX, min_size=n, max_size=n)
                                            for n in (8, 4, 4, 4, 12)))
# device -> how sfdisk names its partitions (the kernel's rule: "p" after a digit)
_DEVICES = {"/dev/vg0/snap": "", "/dev/loop3": "p", "/dev/mapper/vg0-disk1": "-part"}
_ATTRS = [None, "LegacyBIOSBootable", "RequiredPartition", "GUID:63",
          "RequiredPartition LegacyBIOSBootable"]
_GPT_PART = st.fixed_dictionaries({
    "start": st.integers(0, 2**40), "size": st.integers(0, 2**40), "type": _GUIDS,
    "uuid": _GUIDS, "attrs": st.sampled_from(_ATTRS),
    "name": st.none() | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=36),
})


@st.composite
def gpt_tables(draw):
    device = draw(st.sampled_from(sorted(_DEVICES)))
    numbers = draw(st.lists(st.integers(1, 128), unique=True, max_size=6))
    parts = [{"node": f"{device}{_DEVICES[device]}{n}", **draw(_GPT_PART)} for n in numbers]
    for p in parts:
        for key in ("attrs", "name"):
            if p[key] is None:
                del p[key]  # sfdisk leaves out what a partition does not have
    table = {"label": "gpt", "id": draw(_GUIDS), "device": device, "unit": "sectors",
             "sectorsize": draw(st.sampled_from([512, 4096])), "partitions": parts}
    return table, numbers


@given(gpt_tables())
def test_any_gpt_table_gives_each_partition_as_sfdisk_printed_it(generated):
    raw, numbers = generated
    t = partitions.parse_sfdisk(json.dumps({"partitiontable": raw}))
    assert (t.label, t.id, t.sector_size) == ("gpt", raw["id"], raw["sectorsize"])
    assert [(p.number, p.start, p.size, p.type, p.uuid, p.name, p.attrs) for p in t.partitions] == [
        (n, r["start"], r["size"], r["type"], r["uuid"], r.get("name"), r.get("attrs"))
        for n, r in zip(numbers, raw["partitions"], strict=True)]
    for n, r in zip(numbers, raw["partitions"], strict=True):
        assert t.partition(n).bootable == ("LegacyBIOSBootable" in r.get("attrs", ""))
        assert not t.partition(n).is_container
        assert t.partuuid(n) == r["uuid"].lower()
        assert t.byte_range(n) == (r["start"] * raw["sectorsize"], r["size"] * raw["sectorsize"])


_GPT_BREAKS = {
    "msdos type": lambda t, p: p.update(type="83"),
    "no uuid": lambda t, p: p.pop("uuid"),
    "short uuid": lambda t, p: p.update(uuid=p["uuid"][:-1]),
    "long uuid": lambda t, p: p.update(uuid=p["uuid"] + "0"),
    "braced type": lambda t, p: p.update(type="{" + p["type"] + "}"),
    "name with a newline": lambda t, p: p.update(name="root\nfs"),
    "name too long": lambda t, p: p.update(name="x" * 73),
    "bootable as text": lambda t, p: p.update(bootable="true"),
    "negative start": lambda t, p: p.update(start=-1),
    "node of another disk": lambda t, p: p.update(node="/dev/sdz1"),
    "node number 0": lambda t, p: p.update(node=t["device"] + _DEVICES[t["device"]] + "0"),
    "number twice": lambda t, p: t["partitions"].append(dict(p)),
    "sector size 1000": lambda t, p: t.update(sectorsize=1000),
    "disk id not a GUID": lambda t, p: t.update(id="0x1234abcd"),
}


@pytest.mark.parametrize("how", sorted(_GPT_BREAKS))
@settings(max_examples=10)
@given(generated=gpt_tables().filter(lambda g: g[1]), at=st.integers(0, 5))
def test_a_gpt_table_with_one_thing_wrong_is_refused(how, generated, at):
    raw, _numbers = generated
    _GPT_BREAKS[how](raw, raw["partitions"][at % len(raw["partitions"])])
    with pytest.raises((ParseError, UnsafeName)):
        partitions.parse_sfdisk(json.dumps({"partitiontable": raw}))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                     lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                     max_leaves=8)


@given(st.sampled_from(["node", "start", "size", "type", "uuid", "name", "bootable", "attrs"]),
       _JSON, st.sampled_from(["dos", "gpt"]))
def test_any_value_in_any_partition_field_parses_or_raises_parse_error(field, value, label):
    part = {"node": "/dev/vg0/snap1", "start": 1, "size": 1,
            "type": "83" if label == "dos" else LINUX, "uuid": LINUX, field: value}
    try:
        partitions.parse_sfdisk(doc(label=label, parts=[part]))
    except ParseError:
        pass
    except UnsafeName:  # R20: a partition name is one line of at most 72 characters
        assert field == "name" and isinstance(value, str)
        assert len(value) > 72 or any(ord(c) < 32 or ord(c) == 127 for c in value)


_GPT_TEXT = recorded_result("sfdisk/gpt").stdout.rstrip()


@given(st.integers(min_value=0, max_value=len(_GPT_TEXT) - 1))
def test_truncated_output_is_an_error_not_fewer_partitions(cut):
    with pytest.raises(ParseError):
        partitions.parse_sfdisk(_GPT_TEXT[:cut])
