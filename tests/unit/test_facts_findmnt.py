"""findmnt facts, on outputs recorded from a tree of read-only loop mounts."""

from __future__ import annotations

import json

import pytest
from fakes import RECORDED, recorded_result
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import CommandFailed, ParseError
from toolkit.facts import findmnt

ROOT = "/tmp/domubk-fixture-recording/mnt/web01"


@pytest.mark.parametrize("name", sorted(p.stem for p in (RECORDED / "findmnt").glob("*.json")
                                        if p.stem != "bad-column"))
def test_recordings_were_made_with_the_current_argv_builder(name):
    argv = recorded_result(f"findmnt/{name}").argv
    assert list(argv) == findmnt.findmnt_argv(argv[-1], submounts="--submounts" in argv)


def test_argv_matches_mountpoints_exactly():
    assert findmnt.findmnt_argv() == ["findmnt", "--json", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS"]
    assert findmnt.findmnt_argv("/-x")[-2:] == ["--mountpoint", "/-x"]
    for bad in ({"target": "relative"}, {"target": None, "submounts": True}):
        with pytest.raises(ValueError):
            findmnt.findmnt_argv(**bad)


def test_the_tree_is_flattened_parents_first_with_odd_names_decoded():
    mounts = findmnt.mounts_from_result(recorded_result("findmnt/tree-submounts"))
    assert [m.target[len(ROOT):] for m in mounts] == [
        "", "/boot/efi", "/var lib", "/srv/wö rk", "/tab\there", "/data", "/data"]
    assert {m.fstype for m in mounts} == {"ext4", "xfs"}
    assert all(m.read_only and {"nosuid", "nodev", "noexec"} <= set(m.options) for m in mounts)
    xfs = mounts[2]
    assert {"norecovery", "nouuid", "logbsize=32k"} <= set(xfs.options)
    assert all(m.source.startswith("/dev/loop") for m in mounts)


def test_a_stacked_mountpoint_lists_both_and_the_last_is_visible():
    mounts = findmnt.mounts_from_result(recorded_result("findmnt/stacked-mountpoint"))
    assert [m.target for m in mounts] == [f"{ROOT}/data"] * 2
    assert findmnt.top_mount(mounts, f"{ROOT}/data") is mounts[1]
    assert mounts[0].source != mounts[1].source
    assert findmnt.top_mount(mounts, ROOT) is None


def test_a_bind_mount_shows_the_subdirectory_in_its_source():
    (mount,) = findmnt.mounts_from_result(recorded_result("findmnt/bind-mount"))
    assert mount.source.endswith("[/boot]")


@pytest.mark.parametrize("name", ["not-a-mountpoint", "missing-path"])
def test_no_match_is_exit_1_with_no_output_and_means_no_mounts(name):
    result = recorded_result(f"findmnt/{name}")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "")
    assert findmnt.mounts_from_result(result) == []
    with pytest.raises(ParseError):
        findmnt.parse_findmnt(result.stdout)


def test_exit_1_with_a_message_is_a_failure():
    with pytest.raises(CommandFailed, match="unknown column"):
        findmnt.mounts_from_result(recorded_result("findmnt/bad-column"))


def test_options_split_outside_quotes():
    assert findmnt.split_options('rw,context="system_u:object_r:tmp_t:s0:c1,c2",noexec') == (
        "rw", 'context="system_u:object_r:tmp_t:s0:c1,c2"', "noexec")
    with pytest.raises(ParseError):
        findmnt.split_options('rw,context="open')


def entry(**over) -> dict:
    return {"target": "/", "source": "/dev/vda", "fstype": "ext4", "options": "rw", **over}


@pytest.mark.parametrize("doc", [
    {}, [], {"filesystems": []}, {"filesystems": {}}, {"filesystems": [1]},
    {"filesystems": [entry(target="relative")]}, {"filesystems": [entry(fstype=None)]},
    {"filesystems": [entry(options=5)]}, {"filesystems": [entry(children={})]},
    {"filesystems": [{"target": "/", "source": "x", "options": "rw"}]},
])
def test_parse_findmnt_rejects_wrong_shapes(doc):
    with pytest.raises(ParseError):
        findmnt.parse_findmnt(json.dumps(doc))


def test_a_mount_without_source_keeps_an_empty_source():
    (mount,) = findmnt.parse_findmnt(json.dumps({"filesystems": [entry(source=None)]}))
    assert mount.source == ""


# findmnt --json as the kernel's tree gives it: generated from its shape, so every example
# reaches the walk, and the expected list is worked out here, separately from the parser.
_PART = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"),
                min_size=1, max_size=6)
_OPTION = st.sampled_from(["ro", "rw", "nosuid", "nodev", "noexec", "relatime",
                           "norecovery", "logbsize=32k", "errors=remount-ro",
                           'context="system_u:object_r:tmp_t:s0:c1,c2"'])
_ENTRY = st.fixed_dictionaries({
    "target": st.lists(_PART, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    "source": st.none() | st.sampled_from(["/dev/loop0", "/dev/mapper/vg--a-x", "tmpfs",
                                           "/dev/vda1[/boot]", "host:/export"]),
    "fstype": st.sampled_from(["ext4", "xfs", "vfat", "tmpfs", "fuse.sshfs"]),
    "options": st.lists(_OPTION, min_size=1, max_size=4),
})
# a node is (entry, [child nodes])
_NODE = st.recursive(st.tuples(_ENTRY, st.just([])),
                     lambda inner: st.tuples(_ENTRY, st.lists(inner, min_size=1, max_size=3)),
                     max_leaves=6)
_FORESTS = st.lists(_NODE, min_size=1, max_size=3)


def _render(nodes) -> list[dict]:
    out = []
    for entry, children in nodes:
        obj = {**entry, "options": ",".join(entry["options"])}
        if children:
            obj["children"] = _render(children)
        out.append(obj)
    return out


def _parents_first(nodes) -> list[tuple]:
    rows = []
    for entry, children in nodes:
        rows.append((entry["target"], entry["source"] or "", entry["fstype"],
                     tuple(entry["options"])))
        rows.extend(_parents_first(children))
    return rows


@settings(max_examples=60)
@given(_FORESTS)
def test_any_mount_tree_is_flattened_parents_first_with_every_field(forest):
    text = json.dumps({"filesystems": _render(forest)})
    got = [(m.target, m.source, m.fstype, m.options) for m in findmnt.parse_findmnt(text)]
    assert got == _parents_first(forest)


_BREAKS = {
    "no target": lambda e: e.pop("target"),
    "no fstype": lambda e: e.pop("fstype"),
    "no options": lambda e: e.pop("options"),
    "relative target": lambda e: e.update(target=e["target"].lstrip("/") or "x"),
    "fstype null": lambda e: e.update(fstype=None),
    "options a list": lambda e: e.update(options=e["options"].split(",")),
    "open quote": lambda e: e.update(options=e["options"] + ',context="x'),
    "children an object": lambda e: e.update(children={"target": "/x"}),
    "child not an object": lambda e: e.update(children=[e["target"]]),
}


@pytest.mark.parametrize("how", sorted(_BREAKS))
@settings(max_examples=8)
@given(forest=_FORESTS, at=st.integers(0, 20))
def test_one_broken_entry_anywhere_in_the_tree_is_a_parse_error(how, forest, at):
    doc = _render(forest)
    entries = []

    def collect(nodes):
        for obj in nodes:
            entries.append(obj)
            collect(obj.get("children", []))

    collect(doc)
    _BREAKS[how](entries[at % len(entries)])
    with pytest.raises(ParseError):
        findmnt.parse_findmnt(json.dumps({"filesystems": doc}))


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                     lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
                     max_leaves=8)


@given(st.sampled_from(["target", "source", "fstype", "options", "children"]), _JSON)
def test_any_value_in_any_field_parses_or_raises_parse_error(field, value):
    try:
        findmnt.parse_findmnt(json.dumps({"filesystems": [entry(**{field: value})]}))
    except ParseError:
        pass


_TREE_TEXT = recorded_result("findmnt/tree-submounts").stdout.rstrip()


@given(st.integers(min_value=0, max_value=len(_TREE_TEXT) - 1))
def test_truncated_output_is_an_error_not_fewer_mounts(cut):
    with pytest.raises(ParseError):
        findmnt.parse_findmnt(_TREE_TEXT[:cut])


def test_the_device_columns_give_each_mount_its_device_number_checked():
    argv = findmnt.findmnt_argv("/srv", device=True)
    assert argv == ["findmnt", "--json", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS,MAJ:MIN",
                    "--mountpoint", "/srv"]
    row = {"target": "/srv", "source": "/dev/mapper/x", "fstype": "ext4", "options": "ro"}
    (mount,) = findmnt.parse_findmnt(json.dumps({"filesystems": [{**row, "maj:min": "253:7"}]}))
    assert mount.majmin == "253:7"
    (mount,) = findmnt.parse_findmnt(json.dumps({"filesystems": [row]}))
    assert mount.majmin == ""  # not asked for
    for bad in ("253", "253:7:1", "x:y", " 253:7", 2537):
        with pytest.raises(ParseError, match="maj:min"):
            findmnt.parse_findmnt(json.dumps({"filesystems": [{**row, "maj:min": bad}]}))
