"""Guest disk recipes: parsing, validation, layouts, fstab, sizes and partition tables.

Pure tests: nothing here runs a tool, needs root, a loop device or a mount. The tests
that build images (sfdisk, mkfs.*, mkswap, lvm, setcap, debugfs, blkid, loop mounts)
and stage or mutate guest trees (chown to other ids, mknod, setcap) run in the
rehearsal lab: tests/e2e/test_guest_images.py.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from toolkit.errors import ConfigError, UsageError
from toolkit.lab.guests import (
    MIB,
    Extent,
    GuestRecipe,
    build_disk_image,
    container_extent,
    guest_device,
    load_domain,
    load_recipe,
    parse_domain,
    parse_recipe,
    parse_size,
    partition_type,
    plan_layout,
    plan_volumes,
    render_fstab,
    sfdisk_script,
)
from toolkit.runners import CommandResult

GUESTS = Path(__file__).resolve().parents[2] / "fixtures" / "guests"
WEB01 = GUESTS / "web01.toml"
DB01 = GUESTS / "db01.toml"


def _raw(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


@pytest.fixture(scope="module")
def web01() -> GuestRecipe:
    return load_recipe(WEB01)


# --------------------------------------------------------------------------- recipes


def test_web01_recipe_has_root_var_and_swap_taking_the_rest(web01: GuestRecipe) -> None:
    assert (web01.name, web01.size, web01.table, web01.disk_id) == (
        "web01", 256 * MIB, "dos", "0x5eed0001")
    assert [(p.number, p.fs, p.mount, p.label) for p in web01.partitions] == [
        (1, "ext4", "/", "web01-root"), (2, "ext4", "/var", "web01-var"),
        (3, "swap", None, "web01-swap")]
    assert [(e.start, e.size) for e in plan_layout(web01)] == [
        (MIB, 160 * MIB), (161 * MIB, 64 * MIB), (225 * MIB, 31 * MIB)]


def test_web01_fstab_names_filesystems_by_uuid(web01: GuestRecipe) -> None:
    lines = [ln.split("\t") for ln in render_fstab(web01).splitlines() if not ln.startswith("#")]
    assert lines == [
        ["UUID=5eed0001-0000-4000-8000-000000000001", "/", "ext4", "errors=remount-ro", "0", "1"],
        ["UUID=5eed0001-0000-4000-8000-000000000002", "/var", "ext4", "defaults", "0", "2"],
        ["UUID=5eed0001-0000-4000-8000-000000000003", "none", "swap", "sw", "0", "0"],
        ["proc", "/proc", "proc", "defaults", "0", "0"],
    ]


def test_db01_fstab_names_root_by_label() -> None:
    db01 = load_recipe(DB01)
    assert [(e.start, e.size) for e in plan_layout(db01)] == [(MIB, 63 * MIB)]
    body = [ln for ln in render_fstab(db01).splitlines() if not ln.startswith("#")]
    assert body == ["LABEL=db01-root\t/\text4\terrors=remount-ro\t0\t1"]


@pytest.mark.parametrize(("fstab_by", "spec"), [
    ("device", "/dev/xvda2"),
    ("label", "LABEL=web01-var"),
    ("partuuid", "PARTUUID=5eed0001-02"),
])
def test_fstab_can_name_a_filesystem_by_device_label_or_partuuid(fstab_by: str,
                                                                 spec: str) -> None:
    raw = _raw(WEB01)
    raw["partitions"][1]["fstab_by"] = fstab_by
    recipe = parse_recipe(raw, source="web01.toml")
    assert f"{spec}\t/var\text4\tdefaults\t0\t2" in render_fstab(recipe).splitlines()


@pytest.mark.parametrize(("text", "size"), [
    ("256M", 256 * MIB), ("1G", 1024 * MIB), ("512KiB", 512 * 1024), ("64mb", 64 * MIB),
    (4096, 4096),
])
def test_parse_size_reads_binary_units(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "M", "12X", "-5M", "0M", "1.5G", 0, True, None])
def test_parse_size_rejects_what_is_not_a_size(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def _set(path: str, value: Any):  # a recipe edit for the table below
    def edit(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = raw
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return edit


_DELETE = object()


@pytest.mark.parametrize(("edit", "key", "why"), [
    (_set("size", _DELETE), "size", "missing"),
    (_set("size", "12X"), "size", "not a size"),
    (_set("sise", "256M"), "sise", "unknown key"),
    (_set("label", "bsd"), "label", "not one of"),
    (_set("disk_id", "5eed0001"), "disk_id", "not a dos disk id"),
    (_set("seed", True), "seed", "must be an integer"),
    (_set("name", "web_01"), "name", "not a valid host name"),
    (_set("partitions", []), "partitions", "missing or empty"),
    (_set("partitions.0.mnt", "/"), "partitions[0].mnt", "unknown key"),
    (_set("partitions.0.size", "1500K"), "partitions[0].size", "whole number of MiB"),
    (_set("partitions.0.size", _DELETE), "partitions[0].size", "only the last partition"),
    (_set("partitions.0.size", "250M"), "size", "need more than the 256 MiB disk"),
    (_set("partitions.1.uuid", "not-a-uuid"), "partitions[1].uuid", "is not a UUID"),
    (_set("partitions.1.uuid", "{5eed0001-0000-4000-8000-000000000002}"), "partitions[1].uuid",
     "must be written as"),
    (_set("partitions.1.uuid", "5eed0001-0000-4000-8000-000000000001"), "partitions[1].uuid",
     "already used by partitions[0]"),
    (_set("partitions.2.label", "web01-root"), "partitions[2].label", "already used"),
    (_set("partitions.1.mount", "/"), "partitions[1].mount", "already used"),
    (_set("partitions.1.mount", "var"), "partitions[1].mount", "absolute path"),
    (_set("partitions.1.mount", "/var/../etc"), "partitions[1].mount", "normalised"),
    (_set("partitions.1.fs", "xfs"), "partitions[1].size", "xfs needs at least 300 MiB"),
    (_set("partitions.1.fs", "ntfs"), "partitions[1].fs", "not one of"),
    (_set("partitions.1.fs", _DELETE), "partitions[1].fs", "missing"),
    (_set("partitions.1.label", "a-label-of-17-chr"), "partitions[1].label", "at most 16"),
    (_set("partitions.1.fstab_by", "path"), "partitions[1].fstab_by", "not one of"),
    (_set("partitions.2.content", "rich"), "partitions[2].content", "holds no files"),
    (_set("partitions.2.mount", "/swap"), "partitions[2].mount", "no mount point"),
    (_set("partitions.1.content", "full"), "partitions[1].content", "not one of"),
    (_set("partitions.1.partuuid", "5eed0001-0000-4000-8000-00000000000a"),
     "partitions[1].partuuid", "only gpt"),
    (_set("partitions.1.type", "zz"), "partitions[1].type", "not a dos partition type"),
    (_set("partitions.1.bootable", "yes"), "partitions[1].bootable", "must be true or false"),
    (_set("label", "none"), "disk_id", "has no disk id"),
    (_set("label", "gpt"), "disk_id", "not a UUID"),
])
def test_invalid_recipe_is_refused_naming_file_and_key(edit: Any, key: str, why: str) -> None:
    raw = copy.deepcopy(_raw(WEB01))
    edit(raw)
    with pytest.raises(ConfigError) as info:
        parse_recipe(raw, source="fixtures/guests/web01.toml")
    assert str(info.value).startswith(f"fixtures/guests/web01.toml: {key}: ")
    assert why in str(info.value)


def test_upper_case_uuids_are_written_as_blkid_reports_them() -> None:
    raw = _raw(WEB01)
    raw["partitions"][1]["uuid"] = "5EED0001-0000-4000-8000-0000000000AB"
    recipe = parse_recipe(raw, source="web01.toml")
    assert recipe.partitions[1].uuid == "5eed0001-0000-4000-8000-0000000000ab"


def test_fstab_by_label_needs_a_label() -> None:
    raw = _raw(WEB01)
    del raw["partitions"][1]["label"]
    raw["partitions"][1]["fstab_by"] = "label"
    with pytest.raises(ConfigError, match=r"partitions\[1\]\.fstab_by: \"label\" needs a label"):
        parse_recipe(raw, source="web01.toml")


def test_more_than_four_dos_partitions_are_refused() -> None:
    raw = _raw(WEB01)
    raw["partitions"] = [
        {"size": "8M", "fs": "ext4", "uuid": f"5eed0001-0000-4000-8000-00000000010{i}"}
        for i in range(5)]
    with pytest.raises(ConfigError, match=r"partitions: more than 4 dos partitions"):
        parse_recipe(raw, source="web01.toml")


def test_gpt_partition_needs_a_fixed_partuuid() -> None:
    raw = _raw(WEB01)
    raw["label"] = "gpt"
    raw["disk_id"] = "5eed0001-0000-4000-8000-0000000000ff"
    with pytest.raises(ConfigError, match=r"partitions\[0\]\.partuuid: missing"):
        parse_recipe(raw, source="web01.toml")


def test_load_recipe_names_the_file_when_toml_is_broken(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('size = "256M"\n[[partitions]\n')
    with pytest.raises(ConfigError, match=rf"^{bad}: not valid TOML"):
        load_recipe(bad)


def test_load_recipe_takes_the_name_from_the_file(tmp_path: Path) -> None:
    text = WEB01.read_text().replace('name = "web01"\n', "")
    path = tmp_path / "web02.toml"
    path.write_text(text)
    assert load_recipe(path).name == "web02"



# --------------------------------------------------------------------------- build arguments


class RunsNothing:
    """A runner that records argv and fails the test if anything is run at all."""

    def __init__(self) -> None:
        self.host = "runs-nothing"
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.calls.append(tuple(argv))
        raise AssertionError(f"build_disk_image ran {list(argv)} before checking its arguments")


def test_build_rejects_relative_paths_and_bad_scale(web01: GuestRecipe) -> None:
    runner = RunsNothing()
    with pytest.raises(UsageError):
        build_disk_image(runner, web01, "web01.img", workdir="/tmp")
    with pytest.raises(UsageError):
        build_disk_image(runner, web01, "/tmp/x.img", workdir="work")
    with pytest.raises(UsageError):
        build_disk_image(runner, web01, "/tmp/x.img", workdir="/tmp", scale=0)
    assert runner.calls == []


# --------------------------------------------------------------------------- more layouts


GPT01, WHOLE01, MULTI01 = GUESTS / "gpt01.toml", GUESTS / "whole01.toml", GUESTS / "multi01.toml"
EXT01, XFS01, DIRTY01 = GUESTS / "ext01.toml", GUESTS / "xfs01.toml", GUESTS / "dirty01.toml"
LVM01 = GUESTS / "lvm01.toml"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"


def _lines(fstab: str) -> list[list[str]]:
    return [ln.split("\t") for ln in fstab.splitlines() if not ln.startswith("#")]


# --------------------------------------------------------------------------- recipes of the layouts


def test_gpt01_layout_types_and_fstab() -> None:
    gpt01 = load_recipe(GPT01)
    assert gpt01.boot_area and gpt01.table == "gpt"
    assert [(e.number, e.start // MIB, e.size // MIB) for e in plan_layout(gpt01)] == [
        (1, 1, 1), (2, 2, 64), (3, 66, 128), (4, 194, 125)]
    assert [partition_type(gpt01, p) for p in gpt01.partitions] == [
        BIOS_BOOT, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"]
    assert _lines(render_fstab(gpt01)) == [
        ["PARTUUID=5eed0011-0000-4000-8000-0000000000a3", "/", "ext4", "errors=remount-ro", "0",
         "1"],
        ["PARTUUID=5eed0011-0000-4000-8000-0000000000a4", "/home", "ext4", "defaults", "0", "2"],
        ["UUID=5EED-0B01", "/boot/efi", "vfat", "umask=0077", "0", "2"],
    ]


def test_whole01_is_one_filesystem_named_by_label_on_xvda1() -> None:
    whole01 = load_recipe(WHOLE01)
    assert (whole01.table, whole01.device, whole01.disk_id) == ("none", "xvda1", None)
    assert plan_layout(whole01) == (Extent(1, 0, 128 * MIB),)
    assert guest_device(whole01, 1) == "/dev/xvda1"
    assert _lines(render_fstab(whole01)) == [
        ["LABEL=whole01-root", "/", "ext4", "errors=remount-ro", "0", "1"]]


def test_multi01_has_two_disks_and_one_fstab_naming_both() -> None:
    multi01 = load_domain(MULTI01)
    assert [(d.device, d.table, d.size // MIB, d.seed) for d in multi01.disks] == [
        ("xvda", "dos", 128, 13), ("xvdb", "gpt", 96, 14)]
    xvda, xvdb = multi01.disks
    assert xvda.root is not None and xvdb.root is None
    assert render_fstab(xvda) == render_fstab(xvdb)
    assert _lines(render_fstab(xvda)) == [
        ["UUID=5eed0013-0000-4000-8000-000000000001", "/", "ext4", "errors=remount-ro", "0", "1"],
        ["/dev/xvdb1", "/srv", "ext4", "defaults", "0", "2"],
    ]
    assert load_recipe(MULTI01, "xvdb") == xvdb
    with pytest.raises(ConfigError, match=r"multi01.toml: disks: multi01 has 2 disks \(xvda, "
                                          r"xvdb\); name one"):
        load_recipe(MULTI01)
    with pytest.raises(ConfigError, match=r"disks: no disk 'xvdc'"):
        load_recipe(MULTI01, "xvdc")


def test_single_disk_recipe_is_a_domain_of_one_disk() -> None:
    web01 = load_domain(WEB01)
    assert [d.device for d in web01.disks] == ["xvda"]
    assert web01.disks[0] == load_recipe(WEB01)


def test_ext01_numbers_logical_partitions_from_five_inside_an_extended_one() -> None:
    ext01 = load_recipe(EXT01)
    assert [(p.number, p.logical, p.fs) for p in ext01.partitions] == [
        (1, False, "ext4"), (5, True, "ext4"), (6, True, "ext4"), (7, True, "swap")]
    assert [(e.number, e.start // MIB, e.size // MIB) for e in plan_layout(ext01)] == [
        (1, 1, 128), (5, 130, 64), (6, 195, 64), (7, 260, 60)]
    assert container_extent(ext01) == Extent(2, 129 * MIB, 191 * MIB)
    assert [p.partuuid for p in ext01.partitions] == [
        "5eed0014-01", "5eed0014-05", "5eed0014-06", "5eed0014-07"]
    assert "start=264192, size=391168, type=5" in sfdisk_script(ext01).splitlines()
    assert _lines(render_fstab(ext01)) == [
        ["/dev/xvda1", "/", "ext4", "errors=remount-ro", "0", "1"],
        ["/dev/xvda5", "/var", "ext4", "defaults", "0", "2"],
        ["/dev/xvda6", "/srv", "ext4", "defaults", "0", "2"],
        ["/dev/xvda7", "none", "swap", "sw", "0", "0"],
    ]


def test_lvm01_volumes_sit_at_whole_extents_after_pe_start() -> None:
    lvm01 = load_recipe(LVM01)
    pv = lvm01.partition(2)
    assert pv.vg is not None and (pv.fs, pv.vg.name, pv.vg.extent_size) == ("lvm", "vg_a",
                                                                             4 * MIB)
    assert partition_type(lvm01, pv) == "8e"
    assert [(v.name, v.first_extent, v.extent_count, v.start, v.size)
            for v in plan_volumes(lvm01)] == [
        ("root", 0, 40, 66 * MIB, 160 * MIB), ("var", 40, 23, 226 * MIB, 92 * MIB)]
    assert _lines(render_fstab(lvm01)) == [
        ["/dev/mapper/vg_a-root", "/", "ext4", "errors=remount-ro", "0", "1"],
        ["UUID=5eed0017-0000-4000-8000-000000000001", "/boot", "ext4", "defaults", "0", "2"],
        ["/dev/vg_a/var", "/var", "ext4", "defaults", "0", "2"],
    ]
    assert lvm01.root == lvm01.volume("vg_a/root")


def test_mapper_names_double_the_dashes_in_vg_and_lv_names() -> None:
    raw = _raw(LVM01)
    raw["partitions"][1]["vg"] = "vg-guest"
    raw["partitions"][1]["volumes"][0]["name"] = "lv-root"
    recipe = parse_recipe(raw, source="lvm01.toml")
    assert recipe.root is not None and recipe.root.mapper == "/dev/mapper/vg--guest-lv--root"
    assert "/dev/mapper/vg--guest-lv--root\t/\text4" in render_fstab(recipe)


@pytest.mark.parametrize(("recipe", "edit", "key", "why"), [
    (GPT01, _set("partitions.0.uuid", "5eed0011-0000-4000-8000-000000000001"),
     "partitions[0].uuid", "a raw partition has no filesystem UUID"),
    (GPT01, _set("partitions.1.uuid", "5eed0b01"), "partitions[1].uuid", "not a FAT volume id"),
    (GPT01, _set("partitions.1.label", "gpt01-esp"), "partitions[1].label", "upper-case"),
    (GPT01, _set("partitions.1.label", "TWELVE-CHARS"), "partitions[1].label", "at most 11"),
    (GPT01, _set("partitions.1.size", "32M"), "partitions[1].size", "vfat needs at least 40"),
    (GPT01, _set("partitions.1.content", "rich"), "partitions[1].content",
     "does not apply to vfat"),
    (GPT01, _set("partitions.2.content", "esp"), "partitions[2].content",
     "does not apply to ext4"),
    (GPT01, _set("partitions.2.logical", True), "partitions[2].logical", "only dos"),
    (GPT01, _set("partitions.0.mount", "/boot"), "partitions[0].mount", "has no mount point"),
    (GPT01, _set("partitions.3.partuuid", "5eed0011-0000-4000-8000-0000000000a1"),
     "partitions[3].partuuid", "already used by partitions[0]"),
    (WHOLE01, _set("boot_area", True), "boot_area", "no boot area"),
    (EXT01, _set("partitions.3.logical", False), "partitions[3].logical",
     "cannot follow a logical one"),
    (XFS01, _set("partitions.1.label", "xfs01-data-13"), "partitions[1].label", "at most 12"),
    (XFS01, _set("partitions.1.dirty", "yes"), "partitions[1].dirty", "true or false"),
    (DIRTY01, _set("partitions.0.fs", "ext2"), "partitions[0].dirty", "only ext3, ext4"),
    (DIRTY01, _set("partitions.0.content", "empty"), "partitions[0].dirty", "needs content"),
    (LVM01, _set("partitions.1.uuid", "5eed0017-0000-4000-8000-000000000009"),
     "partitions[1].uuid", "not an LVM UUID"),
    (LVM01, _set("partitions.1.vg", "-vg"), "partitions[1].vg", "not an LVM name"),
    (LVM01, _set("partitions.1.vg_uuid", _DELETE), "partitions[1].vg_uuid", "missing"),
    (LVM01, _set("partitions.1.extent_size", "3M"), "partitions[1].extent_size",
     "not a power of two"),
    (LVM01, _set("partitions.1.volumes", []), "partitions[1].volumes", "missing or empty"),
    (LVM01, _set("partitions.1.volumes.0.size", "162M"), "partitions[1].volumes[0].size",
     "whole number of 4 MiB extents"),
    (LVM01, _set("partitions.1.volumes.0.size", "400M"), "partitions[1].volumes",
     "need more than the 63 extents"),
    (LVM01, _set("partitions.1.volumes.1.name", "root"), "partitions[1].volumes[1].name",
     "already an LV of vg_a"),
    (LVM01, _set("partitions.1.volumes.1.lv_uuid", "5eed17-0000-0000-0000-0000-0000-00root"),
     "partitions[1].volumes[1].lv_uuid", "already used by partitions[1].volumes[0]"),
    (LVM01, _set("partitions.1.volumes.1.fstab_by", "partuuid"),
     "partitions[1].volumes[1].fstab_by", "not one of uuid, label, device, mapper"),
    (LVM01, _set("partitions.0.fstab_by", "mapper"), "partitions[0].fstab_by", "not one of"),
    (LVM01, _set("partitions.0.vg", "vg_b"), "partitions[0].vg", "only an lvm partition"),
    (LVM01, _set("partitions.1.volumes.0.mount", "/boot"), "partitions[1].volumes[0].mount",
     "already used by partitions[0]"),
    (MULTI01, _set("size", "128M"), "size", "put it in each [[disks]]"),
    (MULTI01, _set("disks.1.device", "xvda"), "disks[1].device", "already used by disks[0]"),
    (MULTI01, _set("disks.1.partitions.0.uuid", "5eed0013-0000-4000-8000-000000000001"),
     "disks[1].partitions[0].uuid", "already used by disks[0].partitions[0]"),
    (MULTI01, _set("disks.1.partitions.0.mount", "/"), "disks[1].partitions[0].mount",
     "already used by disks[0].partitions[0]"),
    (MULTI01, _set("disks.1.sise", "1G"), "disks[1].sise", "unknown key"),
    (MULTI01, _set("disks.1.size", "2M"), "disks[1].size", "need more than the 2 MiB disk"),
    (MULTI01, _set("disks", []), "disks", "non-empty list"),
])
def test_invalid_layouts_are_refused_naming_file_and_key(recipe: Path, edit: Any, key: str,
                                                         why: str) -> None:
    raw = copy.deepcopy(_raw(recipe))
    edit(raw)
    with pytest.raises(ConfigError) as info:
        parse_domain(raw, source=recipe.name)
    assert str(info.value).startswith(f"{recipe.name}: {key}: ")
    assert why in str(info.value)


def test_four_primaries_leave_no_room_for_an_extended_partition() -> None:
    raw = _raw(EXT01)
    raw["partitions"][0:1] = [
        {"size": "8M", "fs": "ext4", "uuid": f"5eed0014-0000-4000-8000-00000000010{i}",
         "content": "minimal"} for i in range(4)]
    with pytest.raises(ConfigError, match=r"partitions: more than 3 primary dos partitions "
                                          r"beside an extended one"):
        parse_recipe(raw, source="ext01.toml")
