"""LVM facts, on `lvs`/`vgs` reports recorded from lvm2 on loop-device PVs.

Snapshot rows cannot be recorded without device-mapper; they come from
fixtures/recorded/lvm/*-handwritten.json until the lab records them.
"""

from __future__ import annotations

import json

import pytest
from fakes import RECORDED, recorded_result
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import ParseError
from toolkit.facts import lvm
from toolkit.runners import CommandResult

LVM_RECORDINGS = sorted(p.stem for p in (RECORDED / "lvm").glob("*.json"))
# LVM's name alphabet (lvm(8) "VALID NAMES").
LVM_NAME = st.text(alphabet="abcXYZ019+_.-", min_size=1, max_size=20).filter(
    lambda s: not s.startswith("-") and s not in (".", ".."))


def lvs_json(rows: list[dict]) -> str:
    return json.dumps({"report": [{"lv": rows}]})


def row(**over: str) -> dict:
    base = {"vg_name": "vg0", "lv_name": "root", "lv_path": "/dev/vg0/root",
            "lv_dm_path": "/dev/mapper/vg0-root", "lv_size": "1048576",
            "lv_attr": "-wi-ao----", "origin": "", "pool_lv": "", "snap_percent": "",
            "lv_tags": "", "lv_snapshot_invalid": "0"}
    return {**base, **over}


def test_argv_asks_for_bytes_json_and_ends_options():
    argv = lvm.lvs_argv("vg0/root", "/dev/vg-x/-odd")
    assert argv[:7] == ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
                        "--binary"]
    assert argv[-3:] == ["--", "vg0/root", "/dev/vg-x/-odd"]
    assert lvm.vgs_argv()[-1] == "--"
    assert lvm.LVM_ENV == {"LC_ALL": "C"}
    with pytest.raises(ValueError):
        lvm.lvs_argv("")


@pytest.mark.parametrize("name", [n for n in LVM_RECORDINGS if "units" not in n])
def test_recordings_were_made_with_the_current_argv_builders(name):
    result = recorded_result(f"lvm/{name}")
    names = result.argv[result.argv.index("--") + 1:]
    builder = lvm.lvs_argv if result.argv[0] == "lvs" else lvm.vgs_argv
    assert list(result.argv) == builder(*names)


def test_parse_lvs_reads_the_recorded_report_with_odd_names_and_tags():
    lvs = lvm.parse_lvs(recorded_result("lvm/lvs-all").stdout)
    by_name = {lv.full_name: lv for lv in lvs}
    assert sorted(by_name) == ["vg-test/my--odd.lv_+x", "vg-test/root", "vg-test/web01-disk",
                               "vg0/web01-data"]
    disk = by_name["vg-test/web01-disk"]
    assert disk.size_bytes == 32 * 1024 * 1024
    assert disk.tags == ("domubk", "domubk-run=20240101T000000Z")
    assert disk.path == "/dev/vg-test/web01-disk"
    assert disk.dm_path == "/dev/mapper/vg--test-web01--disk"
    assert by_name["vg0/web01-data"].tags == ("backup/standby",)
    assert by_name["vg-test/root"].tags == ()
    assert not disk.is_snapshot and disk.snap_percent is None and disk.origin == ""


@pytest.mark.parametrize("name", ["lvs-all", "lvs-one", "lvs-dev-path", "lvs-all-de_DE",
                                  "lvs-snapshots-handwritten"])
def test_dm_name_matches_what_lvm_reports(name):
    lvs = lvm.parse_lvs(recorded_result(f"lvm/{name}").stdout)
    assert lvs
    for lv in lvs:
        assert lv.dm_path == "/dev/mapper/" + lvm.dm_name(lv.vg, lv.name)


def test_selected_lvs_come_back_alone():
    assert [lv.full_name for lv in lvm.parse_lvs(recorded_result("lvm/lvs-one").stdout)] == [
        "vg-test/web01-disk"]
    assert [lv.full_name for lv in lvm.parse_lvs(recorded_result("lvm/lvs-dev-path").stdout)] == [
        "vg0/web01-data"]


def test_unknown_activation_state_is_an_error_not_inactive():
    # Recorded with activation disabled: lvs prints "X" (unknown) for state and open.
    lv = lvm.parse_lvs(recorded_result("lvm/lvs-one").stdout)[0]
    assert lv.attr[4:6] == "XX" and lv.snap_invalid_field is None
    with pytest.raises(ParseError):
        _ = lv.is_open
    with pytest.raises(ParseError):
        _ = lv.is_active
    assert lv.snapshot_invalid is False  # not a snapshot: nothing to be invalid


def test_snapshot_rows_from_the_documented_format():
    lvs = {lv.name: lv
           for lv in lvm.parse_lvs(recorded_result("lvm/lvs-snapshots-handwritten").stdout)}
    origin = lvs["web01-disk"]
    assert not origin.is_snapshot and origin.is_open and origin.is_active
    good = lvs["domubk-20240101T000000Z-web01-disk"]
    assert good.is_snapshot and good.origin == "web01-disk" and good.snap_percent == 12.5
    assert good.is_active and not good.is_open and not good.snapshot_invalid
    bad = lvs["domubk-20240101T000000Z-db01-root"]
    assert bad.is_snapshot and bad.snapshot_invalid and bad.snap_percent == 100.0
    inactive = lvs["nightly-snap"]
    assert inactive.is_snapshot and not inactive.is_active and not inactive.snapshot_invalid


@pytest.mark.parametrize("attr, field, invalid", [
    ("swi-I-s---", "0", True),    # lv_attr state I alone is enough
    ("swi-a-s---", "1", True),    # the report field alone is enough
    ("swi-a-s---", "0", False),
    ("Swi-a-s---", "0", False),   # a merging snapshot
])
def test_snapshot_invalid_from_attr_or_field(attr, field, invalid):
    lv = lvm.parse_lvs(lvs_json([row(lv_attr=attr, lv_snapshot_invalid=field,
                                     snap_percent="50.00", origin="root")]))[0]
    assert lv.snapshot_invalid is invalid


@pytest.mark.parametrize("attr, field", [("swi-X-s---", "0"), ("swi-a-s---", "-1")])
def test_snapshot_of_unknown_validity_is_an_error(attr, field):
    lv = lvm.parse_lvs(lvs_json([row(lv_attr=attr, lv_snapshot_invalid=field)]))[0]
    with pytest.raises(ParseError):
        _ = lv.snapshot_invalid


def test_parse_vgs_reads_sizes_and_extents():
    vgs = {vg.name: vg for vg in lvm.parse_vgs(recorded_result("lvm/vgs-all").stdout)}
    assert vgs["vg-test"].extent_size == 4 * 1024 * 1024
    assert vgs["vg0"].extent_size == 1024 * 1024
    # 20 + 32 + 8 MiB of LVs in vg-test
    assert vgs["vg-test"].size_bytes - vgs["vg-test"].free_bytes == 60 * 1024 * 1024
    assert [vg.name for vg in lvm.parse_vgs(recorded_result("lvm/vgs-one").stdout)] == ["vg-test"]


def test_german_locale_in_bytes_parses_the_same():
    assert lvm.parse_lvs(recorded_result("lvm/lvs-all-de_DE").stdout) == lvm.parse_lvs(
        recorded_result("lvm/lvs-all").stdout)


@pytest.mark.parametrize("name, parse, hint", [
    ("lvs-all-de_DE-units-m", lvm.parse_lvs, "decimal comma"),
    ("lvs-snapshot-de_DE-handwritten", lvm.parse_lvs, "decimal comma"),
    ("vgs-all-units-g", lvm.parse_vgs, "unit suffix"),
])
def test_locale_and_unit_damage_is_refused_with_a_reason(name, parse, hint):
    with pytest.raises(ParseError, match=hint):
        parse(recorded_result(f"lvm/{name}").stdout)


def test_missing_lv_or_vg_is_recognised_from_the_result():
    for name in ("lvs-missing-lv", "lvs-missing-vg"):
        result = recorded_result(f"lvm/{name}")
        assert result.exit_code == 5 and lvm.lv_missing(result)
    assert not lvm.lv_missing(recorded_result("lvm/lvs-all"))
    locked = CommandResult("h", ("lvs",), 5, "", "  Read-only locking type set.\n", 0.0)
    assert not lvm.lv_missing(locked)


def test_an_empty_vg_is_an_empty_list_but_a_missing_section_is_an_error():
    assert lvm.parse_lvs('{"report": [{"lv": []}]}') == []
    with pytest.raises(ParseError):
        lvm.parse_lvs('{"report": [{"vg": []}]}')
    with pytest.raises(ParseError):
        lvm.parse_vgs('{"report": []}')


@pytest.mark.parametrize("text", [
    "", "  ", "{", "[]", "null", '{"report": {}}', '{"report": [[]]}',
    '{"report": [{"lv": {}}]}', '{"report": [{"lv": [1]}]}',
    lvs_json([row(lv_size="1,5")]), lvs_json([row(lv_size="")]), lvs_json([row(lv_size=3)]),
    lvs_json([row(lv_size="-1")]), lvs_json([row(lv_attr="-wi-a")]),
    lvs_json([row(snap_percent="abc")]), lvs_json([row(lv_snapshot_invalid="maybe")]),
    lvs_json([row(vg_name="")]), lvs_json([{k: v for k, v in row().items() if k != "lv_size"}]),
    "  WARNING: Failed to connect to lvmetad\n" + lvs_json([row()]),
])
def test_parse_lvs_rejects_garbage_and_wrong_shapes(text):
    with pytest.raises(ParseError):
        lvm.parse_lvs(text)


@given(LVM_NAME, LVM_NAME)
def test_dm_name_is_unambiguous(vg, lv):
    # The one "-" that is not half of a "--" pair separates VG from LV.
    name = lvm.dm_name(vg, lv)
    i = 0
    while True:
        j = name.index("-", i)
        if name[j + 1:j + 2] == "-":
            i = j + 2
            continue
        break
    assert (name[:j].replace("--", "-"), name[j + 1:].replace("--", "-")) == (vg, lv)


@given(LVM_NAME, LVM_NAME, st.integers(min_value=0, max_value=2**63),
       st.lists(st.text(alphabet="abc_+.-/=!:&#", min_size=1, max_size=8), max_size=4))
def test_parse_lvs_round_trips_any_valid_row(vg, lv, size, tags):
    text = lvs_json([row(vg_name=vg, lv_name=lv, lv_size=str(size), lv_tags=",".join(tags))])
    (got,) = lvm.parse_lvs(text)
    assert (got.vg, got.name, got.size_bytes, got.tags) == (vg, lv, size, tuple(tags))


_SIZE = st.integers(min_value=0, max_value=2**63)
_VG_ROW = st.fixed_dictionaries({"vg_name": LVM_NAME, "vg_size": _SIZE, "vg_free": _SIZE,
                                 "vg_extent_size": st.sampled_from([4096, 1 << 20, 4 << 20])})


def vgs_json(rows: list[dict]) -> str:
    return json.dumps({"report": [{"vg": [{k: str(v) for k, v in r.items()} for r in rows]}]})


@given(st.lists(_VG_ROW, max_size=5))
def test_parse_vgs_gives_every_row_as_reported(rows):
    got = lvm.parse_vgs(vgs_json(rows))
    assert [(vg.name, vg.size_bytes, vg.free_bytes, vg.extent_size) for vg in got] == [
        (r["vg_name"], r["vg_size"], r["vg_free"], r["vg_extent_size"]) for r in rows]


@given(st.lists(st.tuples(LVM_NAME, LVM_NAME, _SIZE), max_size=5))
def test_parse_lvs_gives_every_row_in_order(rows):
    text = lvs_json([row(vg_name=vg, lv_name=name, lv_size=str(size)) for vg, name, size in rows])
    assert [(lv.vg, lv.name, lv.size_bytes) for lv in lvm.parse_lvs(text)] == rows


# What the wrong locale, units or a damaged report put in a field: each is refused.
_NUMBER_DAMAGE = ["1,5", "1.5", "8g", "8.00g", "", "-1", " 1", "1 ", "0x10", "١"]


@pytest.mark.parametrize("damage", _NUMBER_DAMAGE)
@settings(max_examples=25, deadline=None)
@given(rows=st.lists(_VG_ROW, min_size=1, max_size=4), at=st.integers(0, 3),
       field=st.sampled_from(["vg_size", "vg_free", "vg_extent_size", "vg_name", "row"]))
def test_a_vgs_report_with_one_damaged_field_is_refused(damage, rows, at, field):
    raw = json.loads(vgs_json(rows))
    target = raw["report"][0]["vg"][at % len(rows)]
    if field == "vg_name":
        target["vg_name"] = ""
    elif field == "row":
        raw["report"][0]["vg"][at % len(rows)] = list(target.values())
    else:
        target[field] = damage
    with pytest.raises(ParseError, match="vgs"):
        lvm.parse_vgs(json.dumps(raw))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                     max_leaves=10)


@given(st.sampled_from(sorted(lvm.LVS_FIELDS)), _JSON)
def test_any_value_in_any_lvs_field_parses_or_raises_parse_error(field, value):
    try:
        lvm.parse_lvs(lvs_json([row(**{field: value})]))
    except ParseError:
        pass


_LVS_ALL = recorded_result("lvm/lvs-all").stdout.rstrip()


@given(st.integers(min_value=0, max_value=len(_LVS_ALL) - 1))
def test_truncated_report_is_an_error_not_fewer_lvs(cut):
    with pytest.raises(ParseError):
        lvm.parse_lvs(_LVS_ALL[:cut])
