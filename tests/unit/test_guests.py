"""Guest disk recipes and the image builder.

The build tests run the real tools (sfdisk, mkfs.ext4, mkfs.xfs, mkfs.fat, mkswap, lvm,
setcap, debugfs, blkid) on this host through LocalRunner and need root (chown to unknown ids,
mknod, setcap, mount) and loop devices: xfs is filled through a loop mount, a guest PV is
written through one, and the tests mount images read-only (noload, norecovery) and read LVM
reports through read-only loop devices, always detached. No device-mapper is used anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import random
import stat
import struct
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from toolkit.errors import ConfigError, UsageError
from toolkit.lab.guests import (
    MIB,
    BuiltImage,
    Extent,
    GuestRecipe,
    build_disk_image,
    build_domain_images,
    container_extent,
    guest_device,
    load_domain,
    load_recipe,
    mutate,
    parse_domain,
    parse_recipe,
    parse_size,
    partition_type,
    plan_layout,
    plan_volumes,
    render_fstab,
    sfdisk_script,
    stage_tree,
)
from toolkit.runners import CommandResult, LocalRunner

GUESTS = Path(__file__).resolve().parents[2] / "fixtures" / "guests"
WEB01 = GUESTS / "web01.toml"
DB01 = GUESTS / "db01.toml"
RUNNER = LocalRunner()
CAP_NET_RAW = 13


def _raw(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _run(argv: Sequence[str]) -> str:
    return RUNNER.run(argv).stdout


def _debugfs(image: str, offset: int, request: str) -> str:
    return _run(["debugfs", "-R", request, f"{image}?offset={offset}"])


def _stat(image: str, offset: int, path: str) -> dict[str, str]:
    """A few fields of debugfs's ``stat`` output for one inode."""
    text = _debugfs(image, offset, f'stat "{path}"')
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Inode:"):
            parts = line.split()
            fields["inode"] = parts[1]
            fields["type"] = line.split("Type:")[1].split("Mode:")[0].strip()
            fields["mode"] = line.split("Mode:")[1].split()[0]
        elif line.startswith("User:"):
            parts = line.split()
            fields["uid"], fields["gid"] = parts[1], parts[3]
            fields["size"] = parts[-1]
        elif line.startswith("Links:"):
            parts = line.split()
            fields["links"], fields["blocks"] = parts[1], parts[3]
        elif line.startswith("Device major/minor number:"):
            fields["rdev"] = line.split(":", 1)[1].split()[0]
        elif line.startswith("Fast link dest:"):
            fields["target"] = line.split(":", 1)[1].strip().strip('"')
    assert fields, f"debugfs found no inode at {path}"
    return fields


def _blkid(image: str, offset: int, size: int) -> dict[str, str]:
    out = _run(["blkid", "-p", "-O", str(offset), "-S", str(size), "-o", "export", image])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _ls(image: str, offset: int, path: str) -> list[str]:
    out = _debugfs(image, offset, f'ls -p "{path}"')
    names = [line.split("/")[5] for line in out.splitlines() if line.startswith("/")]
    return sorted(n for n in names if n not in (".", ".."))


def _sfdisk(image: str) -> dict[str, Any]:
    table = json.loads(_run(["sfdisk", "--json", image]))["partitiontable"]
    for part in table["partitions"]:
        part.pop("node")
    table.pop("device")
    return table


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def web01() -> GuestRecipe:
    return load_recipe(WEB01)


@pytest.fixture(scope="module")
def web01_image(web01: GuestRecipe, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    base = tmp_path_factory.mktemp("web01")
    return build_disk_image(RUNNER, web01, str(base / "web01.img"), workdir=str(base / "work"))


@pytest.fixture(scope="module")
def web01_standby(web01: GuestRecipe, tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    base = tmp_path_factory.mktemp("web01-standby")
    return build_disk_image(RUNNER, web01, str(base / "web01.img"), workdir=str(base / "work"),
                            standby=True)


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


def _set(path: str, value: Any):  # noqa: ANN202 - a recipe edit for the table below
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


# --------------------------------------------------------------------------- web01 image


def test_web01_partition_table_is_the_recipes(web01_image: BuiltImage) -> None:
    table = _sfdisk(web01_image.path)
    assert table == {
        "label": "dos", "id": "0x5eed0001", "unit": "sectors", "sectorsize": 512,
        "partitions": [
            {"start": 2048, "size": 327680, "type": "83", "bootable": True},
            {"start": 329728, "size": 131072, "type": "83"},
            {"start": 460800, "size": 63488, "type": "82"},
        ],
    }
    assert [(p.start, p.size) for p in web01_image.partitions] == [
        (MIB, 160 * MIB), (161 * MIB, 64 * MIB), (225 * MIB, 31 * MIB)]


def test_web01_filesystems_carry_the_recipes_uuids_and_labels(web01: GuestRecipe,
                                                              web01_image: BuiltImage) -> None:
    found = [_blkid(web01_image.path, p.start, p.size) for p in web01_image.partitions]
    assert [(f["TYPE"], f["UUID"], f["LABEL"]) for f in found] == [
        (p.fs, p.uuid, p.label) for p in web01.partitions]


def test_web01_root_holds_fstab_hostname_and_os_release(web01: GuestRecipe,
                                                        web01_image: BuiltImage) -> None:
    root = web01_image.partitions[0].start
    assert _debugfs(web01_image.path, root, "cat /etc/fstab") == render_fstab(web01)
    assert web01_image.fstab == render_fstab(web01)
    assert _debugfs(web01_image.path, root, "cat /etc/hostname") == "web01\n"
    assert 'VERSION_CODENAME=bookworm' in _debugfs(web01_image.path, root, "cat /etc/os-release")
    assert "var" in _ls(web01_image.path, root, "/")
    assert _ls(web01_image.path, root, "/var") == []


def test_web01_var_is_its_own_rich_filesystem(web01_image: BuiltImage) -> None:
    var = web01_image.partitions[1]
    names = _ls(web01_image.path, var.start, "/")
    assert {"data", "links", "special", "lost+found"} <= set(names)
    assert "etc" not in names
    assert var.tree is not None and var.tree.files > 500


@pytest.mark.parametrize(("path", "kind", "mode", "uid", "gid"), [
    ("/tmp", "directory", "01777", "0", "0"),
    ("/usr/bin/suid-tool", "regular", "04755", "0", "0"),
    ("/usr/bin/sgid-tool", "regular", "02755", "0", "42"),
    ("/modes/private", "regular", "0600", "4242", "4242"),
    ("/modes/public", "regular", "0644", "0", "0"),
    ("/modes/script.sh", "regular", "0755", "0", "0"),
    ("/modes/no-perms", "regular", "0000", "0", "0"),
    ("/modes/setgid-dir", "directory", "02775", "0", "4242"),
    ("/home/alice", "directory", "0750", "1234", "5678"),
    ("/home/alice/notes.txt", "regular", "0600", "1234", "5678"),
    ("/srv/www/index.html", "regular", "0644", "4242", "4242"),
    ("/links/rel-page", "symlink", "0777", "4242", "4242"),
    ("/special/fifo", "FIFO", "0644", "0", "0"),
    ("/special/null", "character special", "0666", "0", "0"),
    ("/data", "directory", "0755", "0", "0"),
    ("/etc/fstab", "regular", "0644", "0", "0"),
])
def test_web01_tree_keeps_types_modes_and_numeric_owners(web01_image: BuiltImage, path: str,
                                                         kind: str, mode: str, uid: str,
                                                         gid: str) -> None:
    got = _stat(web01_image.path, web01_image.partitions[0].start, path)
    assert (got["type"], got["mode"], got["uid"], got["gid"]) == (kind, mode, uid, gid)


def test_web01_device_node_is_like_dev_null(web01_image: BuiltImage) -> None:
    got = _stat(web01_image.path, web01_image.partitions[0].start, "/special/null")
    assert got["rdev"] == "01:03"


def test_web01_hard_link_group_is_one_inode_with_three_names(web01_image: BuiltImage) -> None:
    start = web01_image.partitions[0].start
    names = ("/links/hard-1", "/links/hard-2", "/data/hard-3")
    found = [_stat(web01_image.path, start, n) for n in names]
    assert {f["inode"] for f in found} == {found[0]["inode"]}
    assert found[0]["links"] == "3"
    assert (found[0]["uid"], found[0]["gid"], found[0]["mode"]) == ("1234", "5678", "0640")


def test_web01_symlinks_absolute_relative_and_dangling(web01_image: BuiltImage) -> None:
    start = web01_image.partitions[0].start
    targets = {n: _stat(web01_image.path, start, f"/links/{n}").get("target")
               for n in ("abs-hostname", "rel-page", "dangling", "dir-link")}
    assert targets == {"abs-hostname": "/etc/hostname", "rel-page": "../data/sizes/page.bin",
                       "dangling": "../data/no-such-file", "dir-link": "../data/deep"}
    long_link = _stat(web01_image.path, start, "/links/long-target")
    assert long_link["type"] == "symlink" and int(long_link["size"]) > 60
    assert "no-such-file" not in _ls(web01_image.path, start, "/data")


def test_web01_user_xattr_survives(web01_image: BuiltImage) -> None:
    start = web01_image.partitions[0].start
    out = _debugfs(web01_image.path, start, "ea_get /data/xattr.txt user.domubk")
    assert out.strip() == 'user.domubk (11) = "fixture-1:1"'


def test_web01_file_capability_is_cap_net_raw_effective(web01_image: BuiltImage,
                                                        tmp_path: Path) -> None:
    start = web01_image.partitions[0].start
    dump = tmp_path / "cap"
    _debugfs(web01_image.path, start,
             f"ea_get -f {dump} /usr/bin/netprobe security.capability")
    magic, permitted, inheritable = struct.unpack("<III", dump.read_bytes()[:12])
    assert magic & 0xFF000000 == 0x02000000  # VFS_CAP_REVISION_2
    assert magic & 1  # effective
    assert permitted == 1 << CAP_NET_RAW and inheritable == 0


def test_web01_acls_survive(web01_image: BuiltImage) -> None:
    start = web01_image.partitions[0].start
    assert "system.posix_acl_access" in _debugfs(web01_image.path, start,
                                                 "ea_list /data/acl.txt")
    assert "system.posix_acl_default" in _debugfs(web01_image.path, start,
                                                  "ea_list /data/acl-dir")


def test_web01_sparse_file_keeps_its_holes(web01_image: BuiltImage) -> None:
    got = _stat(web01_image.path, web01_image.partitions[0].start, "/data/sparse.img")
    assert int(got["size"]) == 16 * MIB
    assert int(got["blocks"]) * 512 <= 64 * 1024  # three 4 KiB extents plus metadata


def test_web01_files_of_many_sizes(web01_image: BuiltImage) -> None:
    start = web01_image.partitions[0].start
    sizes = {n: int(_stat(web01_image.path, start, f"/data/sizes/{n}")["size"])
             for n in _ls(web01_image.path, start, "/data/sizes")}
    assert sizes == {"empty.bin": 0, "one.bin": 1, "page.bin": 4096, "page-plus-one.bin": 4097,
                     "mebi.bin": MIB}
    big = [int(_stat(web01_image.path, start, f"/data/big/{n}")["size"])
           for n in _ls(web01_image.path, start, "/data/big")]
    assert len(big) == 3 and all(2 * MIB <= s < 7 * MIB for s in big)


def test_web01_empty_directories_stay_empty(web01_image: BuiltImage) -> None:
    start = web01_image.partitions[0].start
    assert _ls(web01_image.path, start, "/data/empty-dir") == []
    assert _ls(web01_image.path, start, "/empty/nested/deeper") == []


def test_web01_filesystems_pass_a_forced_fsck(web01_image: BuiltImage) -> None:
    for part in web01_image.partitions[:2]:
        result = RUNNER.run(["e2fsck", "-f", "-n", f"{web01_image.path}?offset={part.start}"],
                            check=False)
        assert result.exit_code == 0, result.stdout + result.stderr


def test_web01_image_file_is_sparse(web01_image: BuiltImage) -> None:
    st = os.stat(web01_image.path)
    assert st.st_size == 256 * MIB
    assert st.st_blocks * 512 < 100 * MIB


def test_web01_build_leaves_workdir_empty(web01_image: BuiltImage) -> None:
    workdir = Path(web01_image.path).parent / "work"
    assert list(workdir.iterdir()) == []


# --------------------------------------------------------------------------- standby


def test_standby_has_the_same_table_uuids_and_labels(web01_image: BuiltImage,
                                                     web01_standby: BuiltImage) -> None:
    assert _sfdisk(web01_standby.path) == _sfdisk(web01_image.path)
    source = [_blkid(web01_image.path, p.start, p.size) for p in web01_image.partitions]
    standby = [_blkid(web01_standby.path, p.start, p.size) for p in web01_standby.partitions]
    assert [(b["TYPE"], b["UUID"], b["LABEL"]) for b in standby] == [
        (b["TYPE"], b["UUID"], b["LABEL"]) for b in source]


def test_standby_filesystems_are_empty(web01_standby: BuiltImage) -> None:
    assert web01_standby.standby and web01_standby.fstab is None
    for part in web01_standby.partitions[:2]:
        assert _ls(web01_standby.path, part.start, "/") == ["lost+found"]
        assert part.content == "empty" and part.tree is None
        assert _stat(web01_standby.path, part.start, "/")["uid"] == "0"


# --------------------------------------------------------------------------- other builds


def test_two_builds_are_byte_identical(tmp_path: Path) -> None:
    db01 = load_recipe(DB01)
    first = build_disk_image(RUNNER, db01, str(tmp_path / "a.img"), workdir=str(tmp_path / "w"))
    second = build_disk_image(RUNNER, db01, str(tmp_path / "b.img"), workdir=str(tmp_path / "w"))
    assert _sha256(first.path) == _sha256(second.path)
    raw = _raw(DB01)
    raw["seed"] = 3
    other = build_disk_image(RUNNER, parse_recipe(raw, source="db01.toml"),
                             str(tmp_path / "c.img"), workdir=str(tmp_path / "w"))
    assert _sha256(other.path) != _sha256(first.path)


def _tiny(table: str, partitions: list[dict[str, Any]], **top: Any) -> GuestRecipe:
    raw = {"name": "tiny", "size": "16M", "label": table, "seed": 5, **top,
           "partitions": partitions}
    return parse_recipe(raw, source="tiny.toml")


def test_gpt_recipe_builds_with_its_guids(tmp_path: Path) -> None:
    recipe = _tiny("gpt", [
        {"size": "10M", "fs": "ext4", "uuid": "5eed0003-0000-4000-8000-000000000001",
         "partuuid": "5eed0003-0000-4000-8000-0000000000a1", "name": "root", "mount": "/",
         "content": "minimal", "fstab_by": "partuuid"},
        {"fs": "swap", "uuid": "5eed0003-0000-4000-8000-000000000002",
         "partuuid": "5eed0003-0000-4000-8000-0000000000a2"},
    ], disk_id="5eed0003-0000-4000-8000-0000000000ff")
    image = build_disk_image(RUNNER, recipe, str(tmp_path / "g.img"), workdir=str(tmp_path))
    table = _sfdisk(image.path)
    assert (table["label"], table["id"]) == ("gpt", "5EED0003-0000-4000-8000-0000000000FF")
    assert [(p["start"], p["size"], p["type"], p["uuid"], p.get("name")) for p in
            table["partitions"]] == [
        (2048, 20480, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
         "5EED0003-0000-4000-8000-0000000000A1", "root"),
        (22528, 8192, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
         "5EED0003-0000-4000-8000-0000000000A2", None)]
    assert _blkid(image.path, MIB, 10 * MIB)["UUID"] == "5eed0003-0000-4000-8000-000000000001"
    fstab = _debugfs(image.path, MIB, "cat /etc/fstab")
    assert "PARTUUID=5eed0003-0000-4000-8000-0000000000a1\t/\text4" in fstab
    assert _debugfs(image.path, MIB, "cat /README.txt") == "minimal fixture filesystem\n"


def test_whole_disk_recipe_builds_a_filesystem_at_offset_zero(tmp_path: Path) -> None:
    recipe = _tiny("none", [{"fs": "ext4", "uuid": "5eed0004-0000-4000-8000-000000000001",
                             "label": "tiny-data", "mount": "/", "fstab_by": "device",
                             "content": "minimal"}])
    image = build_disk_image(RUNNER, recipe, str(tmp_path / "w.img"), workdir=str(tmp_path))
    probe = _blkid(image.path, 0, 16 * MIB)
    assert (probe["TYPE"], probe["LABEL"]) == ("ext4", "tiny-data")
    assert "PTTYPE" not in probe
    assert "/dev/xvda\t/\text4" in _debugfs(image.path, 0, "cat /etc/fstab")


def test_tree_too_big_for_its_partition_is_refused(tmp_path: Path) -> None:
    recipe = _tiny("dos", [{"size": "8M", "fs": "ext4", "mount": "/",
                            "uuid": "5eed0005-0000-4000-8000-000000000001"}],
                   disk_id="0x5eed0005")
    with pytest.raises(ConfigError, match=r"^tiny.toml: partitions\[0\]\.size: the rich tree "
                                          r"at scale 1 needs about \d+ MiB, more than the 8 MiB"):
        build_disk_image(RUNNER, recipe, str(tmp_path / "t.img"), workdir=str(tmp_path / "w"))
    assert list((tmp_path / "w").iterdir()) == []


def test_refuses_to_replace_something_that_is_not_a_file(tmp_path: Path,
                                                         web01: GuestRecipe) -> None:
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(UsageError, match="not a regular file"):
        build_disk_image(RUNNER, web01, str(target), workdir=str(tmp_path / "w"))
    assert target.is_dir()


class RecordingRunner:
    """Runs through LocalRunner and keeps every argv it was given."""

    def __init__(self) -> None:
        self.host = "recording"
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.calls.append(tuple(argv))
        return RUNNER.run(argv, **kwargs)


def test_every_step_runs_as_argv_through_the_runner(tmp_path: Path) -> None:
    db01 = load_recipe(DB01)
    runner = RecordingRunner()
    out = str(tmp_path / "db01.img")
    build_disk_image(runner, db01, out, workdir=str(tmp_path / "w"))
    programs = [c[0] for c in runner.calls]
    for tool in ("sfdisk", "python3", "setcap", "mkfs.ext4", "debugfs", "dd"):
        assert tool in programs
    dd = next(c for c in runner.calls if c[0] == "dd")
    assert f"of={out}" in dd and "seek=1048576" in dd and "conv=notrunc,sparse" in dd
    assert "oflag=seek_bytes" in dd
    mkfs = next(c for c in runner.calls if c[0] == "mkfs.ext4")
    assert mkfs[mkfs.index("-U") + 1] == db01.partitions[0].uuid
    assert mkfs[mkfs.index("-L") + 1] == "db01-root"


def test_build_rejects_relative_paths_and_bad_scale(web01: GuestRecipe) -> None:
    with pytest.raises(UsageError):
        build_disk_image(RUNNER, web01, "web01.img", workdir="/tmp")
    with pytest.raises(UsageError):
        build_disk_image(RUNNER, web01, "/tmp/x.img", workdir="work")
    with pytest.raises(UsageError):
        build_disk_image(RUNNER, web01, "/tmp/x.img", workdir="/tmp", scale=0)


# --------------------------------------------------------------------------- staging and mutate


def test_scale_multiplies_the_file_counts(tmp_path: Path) -> None:
    db01 = load_recipe(DB01)
    one, _ = stage_tree(RUNNER, db01, 1, str(tmp_path / "one"))
    three, caps = stage_tree(RUNNER, db01, 1, str(tmp_path / "three"), scale=3)
    assert three.files - one.files == 2 * (500 + 2)
    assert caps == (("usr/bin/netprobe", "cap_net_raw+ep"),)
    assert len(list((tmp_path / "three" / "data" / "small").rglob("*.dat"))) == 1500
    assert len(list((tmp_path / "three" / "data" / "big").iterdir())) == 7


def test_nested_mount_points_are_made_in_the_nearest_filesystem(tmp_path: Path) -> None:
    raw = _raw(WEB01)
    raw["partitions"][2] = {"size": "16M", "fs": "ext4", "mount": "/var/lib/db",
                            "uuid": "5eed0001-0000-4000-8000-000000000009", "content": "minimal"}
    recipe = parse_recipe(raw, source="web01.toml")
    stage_tree(RUNNER, recipe, 1, str(tmp_path / "root"))
    stage_tree(RUNNER, recipe, 2, str(tmp_path / "var"))
    assert (tmp_path / "root" / "var").is_dir()
    assert not (tmp_path / "root" / "var" / "lib").exists()
    assert (tmp_path / "var" / "lib" / "db").is_dir()
    assert not (tmp_path / "var" / "etc").exists()


def _manifest(root: Path, *, dir_times: bool = True) -> dict[str, tuple[Any, ...]]:
    """Everything rsync -aHAX would carry, per path."""
    out: dict[str, tuple[Any, ...]] = {}
    for path in sorted([root, *root.rglob("*")]):
        st = path.lstat()
        rel = str(path.relative_to(root))
        body: Any = None
        if stat.S_ISREG(st.st_mode):
            body = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(path)
        xattrs = tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                              for n in os.listxattr(path, follow_symlinks=False)))
        mtime = None if stat.S_ISDIR(st.st_mode) and not dir_times else st.st_mtime_ns
        out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_rdev,
                    body, xattrs, mtime)
    return out


def test_staging_is_deterministic(tmp_path: Path) -> None:
    db01 = load_recipe(DB01)
    stage_tree(RUNNER, db01, 1, str(tmp_path / "a"))
    stage_tree(RUNNER, db01, 1, str(tmp_path / "b"))
    first, second = _manifest(tmp_path / "a"), _manifest(tmp_path / "b")
    assert first == second
    assert len(first) > 300
    assert {m[8] for m in first.values()} == {db01.epoch * 10**9}


def test_mutate_changes_the_tree_as_it_reports(tmp_path: Path) -> None:
    db01 = load_recipe(DB01)
    root = tmp_path / "guest"
    stage_tree(RUNNER, db01, 1, str(root))
    before = _manifest(root)
    summary = mutate(RUNNER, str(root), seed=7)
    after = _manifest(root)

    renamed = [p for p in after if p.endswith("-renamed-7")]
    assert len(renamed) == 1 and summary.renamed_dirs == 1
    old_dir = renamed[0].removesuffix("-renamed-7")
    assert old_dir not in after and Path(root, old_dir).parent != root
    # Undo the rename in the listing so the other changes can be counted path by path.
    after = {(old_dir + p[len(renamed[0]):] if p == renamed[0] or p.startswith(renamed[0] + "/")
              else p): v for p, v in after.items()}

    added = set(after) - set(before)
    deleted = set(before) - set(after)
    common = set(before) & set(after)
    assert added == {"mutated-7", "mutated-7/new-hard-link",
                     *(f"mutated-7/new-{i:03d}.dat" for i in range(20))}
    assert summary.added == 20 and summary.links_added == 1
    assert summary.links_removed == 1
    assert len(deleted) == summary.deleted + summary.links_removed == 11
    assert any(p in deleted for p in ("links/hard-1", "links/hard-2", "data/hard-3"))
    survivors = [p for p in ("links/hard-1", "links/hard-2", "data/hard-3") if p in after]
    assert [after[p][4] for p in survivors] == [2, 2]

    regular = [p for p in common if stat.S_ISREG(before[p][0])]
    changed_body = {p for p in regular if before[p][6] != after[p][6]}
    assert len(changed_body) == summary.modified == 10
    assert all(after[p][3] > before[p][3] for p in changed_body)
    mode_changed = {p for p in regular if stat.S_IMODE(before[p][0]) != stat.S_IMODE(after[p][0])}
    assert len(mode_changed) == summary.mode_changes == 5
    owner_changed = {p for p in regular if before[p][1:3] != after[p][1:3]}
    assert len(owner_changed) == summary.owner_changes == 5
    xattr_changed = {p for p in regular if before[p][7] != after[p][7]}
    assert xattr_changed == {"data/xattr.txt"} and summary.xattrs_changed == 1
    assert dict(after["data/xattr.txt"][7])["user.domubk"] == b"mutated-7"
    for name in ("fstab", "hostname", "os-release"):
        assert after[f"etc/{name}"] == before[f"etc/{name}"]


def test_mutate_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    db01 = load_recipe(DB01)
    manifests = []
    for name in ("a", "b"):
        stage_tree(RUNNER, db01, 1, str(tmp_path / name))
        first = mutate(RUNNER, str(tmp_path / name), seed=11)
        manifests.append(_manifest(tmp_path / name, dir_times=False))
    assert manifests[0] == manifests[1]
    stage_tree(RUNNER, db01, 1, str(tmp_path / "c"))
    other = mutate(RUNNER, str(tmp_path / "c"), seed=12)
    assert other == first
    assert _manifest(tmp_path / "c", dir_times=False) != manifests[0]


# --------------------------------------------------------------------------- more layouts


GPT01, WHOLE01, MULTI01 = GUESTS / "gpt01.toml", GUESTS / "whole01.toml", GUESTS / "multi01.toml"
EXT01, XFS01, DIRTY01 = GUESTS / "ext01.toml", GUESTS / "xfs01.toml", GUESTS / "dirty01.toml"
LVM01 = GUESTS / "lvm01.toml"
ESP_LOADER = "EFI/BOOT/BOOTX64.EFI"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
# Reports on a guest PV without the host's LVM configuration, devices file or device-mapper.
LVM_PRIVATE = ["--nolocking", "--driverloaded", "n", "--readonly", "--config",
               'devices { hints = "none" } backup { backup = 0 archive = 0 }']

Builder = Callable[..., tuple[BuiltImage, ...]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    """Build a recipe's disks once per module, source and standby apart."""
    cache: dict[tuple[Path, bool], tuple[BuiltImage, ...]] = {}

    def get(path: Path, *, standby: bool = False) -> tuple[BuiltImage, ...]:
        if (path, standby) not in cache:
            base = tmp_path_factory.mktemp(f"{path.stem}-{'standby' if standby else 'source'}")
            cache[(path, standby)] = build_domain_images(
                RUNNER, load_domain(path), str(base), workdir=str(base / "work"), standby=standby)
        return cache[(path, standby)]

    return get


def _identity(image: str, offset: int, size: int) -> dict[str, str]:
    """What blkid finds at ``offset``, without the image's own path."""
    found = _blkid(image, offset, size)
    found.pop("DEVNAME")
    return found


def _lines(fstab: str) -> list[list[str]]:
    return [ln.split("\t") for ln in fstab.splitlines() if not ln.startswith("#")]


def _extract(image: str, offset: int, size: int, dest: Path) -> Path:
    """Copy one filesystem out of an image into its own (sparse) file."""
    RUNNER.run(["dd", f"if={image}", f"of={dest}", "bs=1M", f"skip={offset}", f"count={size}",
                "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"])
    return dest


def _read(image: str, offset: int, size: int) -> bytes:
    with open(image, "rb") as f:
        f.seek(offset)
        return f.read(size)


@contextlib.contextmanager
def _loop(image: str, offset: int, size: int, *, writable: bool = False) -> Iterator[str]:
    argv = ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size)]
    loop = _run([*argv, *([] if writable else ["--read-only"]), image]).strip()
    try:
        yield loop
    finally:
        RUNNER.run(["losetup", "-d", loop])


@contextlib.contextmanager
def _mounted(image: str, offset: int, size: int, fstype: str, options: str, where: Path, *,
             writable: bool = False) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    with _loop(image, offset, size, writable=writable) as loop:
        RUNNER.run(["mount", "-t", fstype, "-o", options, loop, str(where)])
        try:
            yield where
        finally:
            RUNNER.run(["umount", str(where)])


def _lvm(image: str, offset: int, size: int, tmp_path: Path, *command: str) -> list[dict[str, str]]:
    """One LVM report on the PV at ``offset``, seen through a private read-only setup."""
    sysdir = tmp_path / "lvm-system"
    sysdir.mkdir(exist_ok=True)
    env = {"LVM_SYSTEM_DIR": str(sysdir), "LVM_SUPPRESS_FD_WARNINGS": "1"}
    with _loop(image, offset, size) as loop:
        out = RUNNER.run(["lvm", *command, "--devices", loop, *LVM_PRIVATE, "--reportformat",
                          "json", "--units", "b", "--nosuffix"], env=env).stdout
    report = json.loads(out)["report"][0]
    rows = next(iter(report.values()))
    return [{k: v.replace(loop, "PV") for k, v in row.items()} for row in rows]


def _fat_file(image: str, offset: int, path: str) -> bytes:
    """A file's bytes from a FAT32 filesystem at ``offset``, read by following its clusters."""
    boot = _read(image, offset, 512)
    bps, spc, reserved, nfats = struct.unpack_from("<HBHB", boot, 11)
    fat_sectors, root = struct.unpack_from("<I", boot, 36)[0], struct.unpack_from("<I", boot, 44)[0]
    fat = _read(image, offset + reserved * bps, fat_sectors * bps)
    data, csize = offset + (reserved + nfats * fat_sectors) * bps, bps * spc

    def body(cluster: int) -> bytes:
        out = b""
        while 2 <= cluster < 0x0FFFFFF8:
            out += _read(image, data + (cluster - 2) * csize, csize)
            cluster = struct.unpack_from("<I", fat, 4 * cluster)[0] & 0x0FFFFFFF
        return out

    cluster, size = root, 0
    for name in path.split("/"):
        listing = body(cluster)
        for i in range(0, len(listing), 32):
            entry = listing[i:i + 32]
            base, ext = entry[:8].decode().rstrip(), entry[8:11].decode().rstrip()
            if entry[0] not in (0, 0xE5) and entry[11] != 0x0F and name == (
                    f"{base}.{ext}" if ext else base):
                (hi,), (lo, size) = struct.unpack_from("<H", entry, 20), struct.unpack_from(
                    "<HI", entry, 26)
                cluster = hi << 16 | lo
                break
        else:
            raise AssertionError(f"{name} is not in the FAT directory")
    return body(cluster)[:size]


def _fidelity(root: Path) -> dict[str, tuple[Any, ...]]:
    """What rsync -aHAX carries, per path, minus what differs between filesystem types."""
    out = {}
    for rel, (mode, uid, gid, size, nlink, rdev, body, xattrs, mtime) in _manifest(root).items():
        if stat.S_ISDIR(mode):
            size = nlink = None  # directory sizes and link counts are the filesystem's own
        # trusted.SGI_ACL_* is how xfs shows root its ACLs, beside system.posix_acl_*.
        xattrs = tuple(x for x in xattrs if not x[0].startswith("trusted."))
        out[rel] = (mode, uid, gid, size, nlink, rdev, body, xattrs, mtime)
    return out


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


def test_nested_mount_points_across_disks_are_made_in_the_root(tmp_path: Path) -> None:
    multi01 = load_domain(MULTI01)
    stage_tree(RUNNER, multi01.disk("xvda"), 1, str(tmp_path / "root"))
    stage_tree(RUNNER, multi01.disk("xvdb"), 1, str(tmp_path / "srv"))
    assert (tmp_path / "root" / "srv").is_dir()
    assert not (tmp_path / "srv" / "etc").exists()
    assert (tmp_path / "root" / "etc" / "fstab").read_text() == render_fstab(multi01.disks[0])


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


# --------------------------------------------------------------------------- gpt01 image


def test_gpt01_table_has_the_recipes_types_guids_and_names(built: Builder) -> None:
    (image,) = built(GPT01)
    table = _sfdisk(image.path)
    assert (table["label"], table["id"]) == ("gpt", "5EED0011-0000-4000-8000-0000000000FF")
    assert [(p["start"], p["size"], p["type"], p["uuid"], p["name"])
            for p in table["partitions"]] == [
        (2048, 2048, BIOS_BOOT, "5EED0011-0000-4000-8000-0000000000A1", "BIOS boot partition"),
        (4096, 131072, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
         "5EED0011-0000-4000-8000-0000000000A2", "EFI System Partition"),
        (135168, 262144, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
         "5EED0011-0000-4000-8000-0000000000A3", "root"),
        (397312, 256000, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
         "5EED0011-0000-4000-8000-0000000000A4", "home"),
    ]


def test_gpt01_bios_boot_partition_holds_seeded_bytes_and_no_filesystem(built: Builder) -> None:
    (image,) = built(GPT01)
    bios = image.partitions[0]
    assert (bios.fs, bios.uuid, bios.content, bios.tree) == ("raw", None, "pattern", None)
    data = _read(image.path, bios.start, bios.size)
    assert data == random.Random("11:1:raw").randbytes(MIB)
    probe = RUNNER.run(["blkid", "-p", "-O", str(bios.start), "-S", str(bios.size), image.path],
                       check=False)
    assert probe.exit_code == 2 and probe.stdout == ""  # nothing blkid knows


def test_gpt01_boot_area_holds_a_boot_loader_and_keeps_the_table(built: Builder) -> None:
    (image,) = built(GPT01)
    code, gap = _read(image.path, 0, 440), _read(image.path, 34 * 512, MIB - 34 * 512)
    assert code == random.Random("11:boot-code").randbytes(440)
    assert gap == random.Random("11:boot-gap").randbytes(MIB - 34 * 512)
    assert _read(image.path, 510, 2) == b"\x55\xaa"
    assert _read(image.path, 512, 8) == b"EFI PART"
    whole = RUNNER.run(["blkid", "-p", "-o", "export", image.path]).stdout
    assert "PTTYPE=gpt" in whole.splitlines()


def test_gpt01_esp_is_fat32_with_its_volume_id_label_and_loader(built: Builder) -> None:
    (image,) = built(GPT01)
    esp = image.partitions[1]
    probe = _blkid(image.path, esp.start, esp.size)
    assert (probe["TYPE"], probe["VERSION"], probe["UUID"], probe["LABEL"]) == (
        "vfat", "FAT32", "5EED-0B01", "GPT01-ESP")
    assert _fat_file(image.path, esp.start, ESP_LOADER) == random.Random(
        f"11:2:{ESP_LOADER}").randbytes(40000)
    with _loop(image.path, esp.start, esp.size) as loop:
        check = RUNNER.run(["fsck.fat", "-n", "-v", "-l", loop])
    assert f"Checking file /{ESP_LOADER}" in check.stdout.splitlines()


def test_gpt01_root_names_everything_and_holds_the_mount_points(built: Builder) -> None:
    (image,) = built(GPT01)
    root = image.partitions[2]
    assert _debugfs(image.path, root.start, "cat /etc/fstab") == render_fstab(load_recipe(GPT01))
    assert {"home", "boot"} <= set(_ls(image.path, root.start, "/"))
    assert _ls(image.path, root.start, "/boot") == ["efi"]
    home = image.partitions[3]
    assert _blkid(image.path, home.start, home.size)["LABEL"] == "gpt01-home"
    assert home.tree is not None and home.tree.files > 500


def test_gpt01_builds_are_byte_identical(built: Builder, tmp_path: Path) -> None:
    (first,) = built(GPT01)
    (second,) = build_domain_images(RUNNER, load_domain(GPT01), str(tmp_path),
                                    workdir=str(tmp_path / "work"))
    assert _sha256(second.path) == _sha256(first.path)


def test_gpt01_standby_keeps_layout_ids_and_raw_bytes_with_empty_filesystems(
        built: Builder) -> None:
    (source,), (standby,) = built(GPT01), built(GPT01, standby=True)
    assert _sfdisk(standby.path) == _sfdisk(source.path)
    assert _read(standby.path, 0, 2 * MIB) == _read(source.path, 0, 2 * MIB)
    for src, sby in zip(source.partitions[1:], standby.partitions[1:], strict=True):
        assert _identity(standby.path, sby.start, sby.size) == _identity(source.path, src.start,
                                                                         src.size)
    esp = standby.partitions[1]
    with _loop(standby.path, esp.start, esp.size) as loop:
        listing = RUNNER.run(["fsck.fat", "-n", "-v", "-l", loop]).stdout
    assert "Checking file /EFI" not in listing and "1/129022 clusters" in listing
    for part in standby.partitions[2:]:
        assert _ls(standby.path, part.start, "/") == ["lost+found"]
    assert [p.content for p in standby.partitions] == ["pattern", "empty", "empty", "empty"]


def test_boot_area_on_a_dos_disk_fills_sectors_one_on(tmp_path: Path) -> None:
    recipe = _tiny("dos", [{"fs": "ext4", "uuid": "5eed0006-0000-4000-8000-000000000001",
                            "mount": "/", "content": "minimal"}],
                   disk_id="0x5eed0006", boot_area=True)
    image = build_disk_image(RUNNER, recipe, str(tmp_path / "b.img"), workdir=str(tmp_path))
    assert _read(image.path, 512, MIB - 512) == random.Random("5:boot-gap").randbytes(MIB - 512)
    assert _sfdisk(image.path)["id"] == "0x5eed0006"


# --------------------------------------------------------------------------- whole01, multi01


def test_whole01_filesystem_starts_at_byte_zero(built: Builder) -> None:
    (image,) = built(WHOLE01)
    assert image.path.endswith("/whole01-xvda1.img") and image.device == "xvda1"
    probe = _identity(image.path, 0, 128 * MIB)
    assert (probe["TYPE"], probe["UUID"], probe["LABEL"]) == (
        "ext4", "5eed0012-0000-4000-8000-000000000001", "whole01-root")
    assert "PTTYPE" not in probe
    assert "LABEL=whole01-root\t/\text4" in _debugfs(image.path, 0, "cat /etc/fstab")
    (standby,) = built(WHOLE01, standby=True)
    assert _identity(standby.path, 0, 128 * MIB) == probe
    assert _ls(standby.path, 0, "/") == ["lost+found"]


def test_multi01_builds_one_image_per_disk(built: Builder) -> None:
    xvda, xvdb = built(MULTI01)
    assert [Path(i.path).name for i in (xvda, xvdb)] == ["multi01-xvda.img", "multi01-xvdb.img"]
    assert (_sfdisk(xvda.path)["label"], _sfdisk(xvdb.path)["label"]) == ("dos", "gpt")
    assert xvda.fstab == render_fstab(load_recipe(MULTI01, "xvda")) and xvdb.fstab is None
    root, srv = xvda.partitions[0], xvdb.partitions[0]
    assert "/dev/xvdb1\t/srv\text4" in _debugfs(xvda.path, root.start, "cat /etc/fstab")
    assert _ls(xvda.path, root.start, "/srv") == []
    assert srv.device == "/dev/xvdb1"
    assert _blkid(xvdb.path, srv.start, srv.size)["UUID"] == "5eed0013-0000-4000-8000-000000000002"
    names = _ls(xvdb.path, srv.start, "/")
    assert "etc" not in names and {"data", "links"} <= set(names)
    # Each disk has its own seed, so the two trees differ.
    assert _debugfs(xvdb.path, srv.start, "ea_get /data/xattr.txt user.domubk").strip() == (
        'user.domubk (12) = "fixture-14:1"')


def test_multi01_standby_disks_keep_their_tables_and_ids(built: Builder) -> None:
    for src, sby in zip(built(MULTI01), built(MULTI01, standby=True), strict=True):
        assert _sfdisk(sby.path) == _sfdisk(src.path)
        part = sby.partitions[0]
        assert _blkid(sby.path, part.start, part.size)["UUID"] == src.partitions[0].uuid
        assert _ls(sby.path, part.start, "/") == ["lost+found"]


# --------------------------------------------------------------------------- ext01


def test_ext01_table_has_an_extended_partition_holding_five_to_seven(built: Builder) -> None:
    (image,) = built(EXT01)
    table = _sfdisk(image.path)
    assert [(p["start"], p["size"], p["type"]) for p in table["partitions"]] == [
        (2048, 262144, "83"), (264192, 391168, "5"), (266240, 131072, "83"),
        (399360, 131072, "83"), (532480, 122880, "82")]
    assert [p.device for p in image.partitions] == [
        "/dev/xvda1", "/dev/xvda5", "/dev/xvda6", "/dev/xvda7"]
    found = [_blkid(image.path, p.start, p.size) for p in image.partitions]
    assert [(f["TYPE"], f["LABEL"]) for f in found] == [
        ("ext4", "ext01-root"), ("ext4", "ext01-var"), ("ext4", "ext01-srv"),
        ("swap", "ext01-swap")]


def test_ext01_logical_filesystems_are_whole_and_the_root_holds_their_mount_points(
        built: Builder) -> None:
    (image,) = built(EXT01)
    root = image.partitions[0]
    assert {"var", "srv"} <= set(_ls(image.path, root.start, "/"))
    fstab = _debugfs(image.path, root.start, "cat /etc/fstab")
    assert "/dev/xvda5\t/var\text4\tdefaults\t0\t2" in fstab.splitlines()
    for part in image.partitions[:3]:
        result = RUNNER.run(["e2fsck", "-f", "-n", f"{image.path}?offset={part.start}"],
                            check=False)
        assert result.exit_code == 0, result.stdout + result.stderr
    (standby,) = built(EXT01, standby=True)
    assert _sfdisk(standby.path) == _sfdisk(image.path)
    assert [_blkid(standby.path, p.start, p.size)["UUID"] for p in standby.partitions] == [
        p.uuid for p in image.partitions]


# --------------------------------------------------------------------------- xfs01


def test_xfs01_data_filesystem_has_its_uuid_label_and_a_clean_log(built: Builder) -> None:
    (image,) = built(XFS01)
    data = image.partitions[1]
    assert (data.start, data.size, data.fs) == (129 * MIB, 383 * MIB, "xfs")
    probe = _blkid(image.path, data.start, data.size)
    assert (probe["TYPE"], probe["UUID"], probe["LABEL"]) == (
        "xfs", "5eed0015-0000-4000-8000-000000000002", "xfs01-data")
    with _loop(image.path, data.start, data.size) as loop:
        sb = _run(["xfs_db", "-r", "-c", "sb 0", "-c", "p uuid", loop])
        log = _run(["xfs_logprint", "-t", loop])
    assert sb.strip() == "uuid = 5eed0015-0000-4000-8000-000000000002"
    assert "state: <CLEAN>" in log


def test_xfs01_content_is_the_staged_tree_with_links_acls_xattrs_caps_and_holes(
        built: Builder, tmp_path: Path) -> None:
    (image,) = built(XFS01)
    data = image.partitions[1]
    staged = tmp_path / "staged"
    stage_tree(RUNNER, load_recipe(XFS01), 2, str(staged))
    RUNNER.run(["setcap", "cap_net_raw+ep", str(staged / "usr/bin/netprobe")])
    with _mounted(image.path, data.start, data.size, "xfs", "ro,norecovery,nouuid",
                  tmp_path / "mnt") as mnt:
        got = _fidelity(mnt)
        sparse = (mnt / "data/sparse.img").stat()
        caps = os.getxattr(mnt / "usr/bin/netprobe", "security.capability")
        hard = {(mnt / p).stat().st_ino for p in ("links/hard-1", "links/hard-2", "data/hard-3")}
    assert got == _fidelity(staged)
    assert len(got) > 500 and data.tree is not None and data.tree.files > 500
    assert sparse.st_size == 16 * MIB and sparse.st_blocks * 512 <= 64 * 1024
    assert struct.unpack("<III", caps[:12])[1] == 1 << CAP_NET_RAW
    assert len(hard) == 1
    assert got["data/acl.txt"][7][0][0] == "system.posix_acl_access"


def test_xfs01_root_holds_the_nested_mount_point(built: Builder) -> None:
    (image,) = built(XFS01)
    root = image.partitions[0]
    assert _ls(image.path, root.start, "/var/lib") == ["data"]
    assert "LABEL=xfs01-data\t/var/lib/data\txfs" in _debugfs(image.path, root.start,
                                                               "cat /etc/fstab")


def test_xfs01_standby_xfs_is_empty_with_the_same_identity(built: Builder,
                                                           tmp_path: Path) -> None:
    (source,), (standby,) = built(XFS01), built(XFS01, standby=True)
    assert _sfdisk(standby.path) == _sfdisk(source.path)
    data = standby.partitions[1]
    assert _identity(standby.path, data.start, data.size) == _identity(
        source.path, data.start, data.size)
    with _mounted(standby.path, data.start, data.size, "xfs", "ro,norecovery,nouuid",
                  tmp_path / "mnt") as mnt:
        assert list(mnt.iterdir()) == []


def test_builds_leave_no_loop_device_attached(built: Builder) -> None:
    images = [*built(XFS01), *built(DIRTY01), *built(LVM01), *built(LVM01, standby=True)]
    attached = _run(["losetup", "--list", "--noheadings", "--output", "BACK-FILE"])
    workdirs = {str(Path(i.path).parent / "work") for i in images}
    assert not [ln for ln in attached.splitlines() if any(w in ln for w in workdirs)]
    for workdir in workdirs:
        assert list(Path(workdir).iterdir()) == []


# --------------------------------------------------------------------------- dirty01


def test_dirty01_ext4_needs_recovery_and_mounts_with_noload(built: Builder,
                                                           tmp_path: Path) -> None:
    (image,) = built(DIRTY01)
    root = image.partitions[0]
    assert root.dirty and root.tree is not None
    region = _extract(image.path, root.start, root.size, tmp_path / "root.fs")
    header = _run(["dumpe2fs", "-h", str(region)])
    features = next(ln for ln in header.splitlines() if ln.startswith("Filesystem features:"))
    assert "needs_recovery" in features.split()
    dump = tmp_path / "page.bin"
    _run(["debugfs", "-R", f"dump /data/sizes/page.bin {dump}", str(region)])
    on_disk = dump.read_bytes()
    before = _sha256(image.path)
    with _mounted(image.path, root.start, root.size, "ext4", "ro,noload",
                  tmp_path / "mnt") as mnt:
        seen = (mnt / "data/sizes/page.bin").read_bytes()
        assert (mnt / "etc/fstab").read_text() == image.fstab
    assert _sha256(image.path) == before
    # Replaying the journal (here on a copy) changes the file: the transaction is real.
    RUNNER.run(["e2fsck", "-f", "-y", str(region)], ok_codes=(0, 1))
    dump.unlink()
    _run(["debugfs", "-R", f"dump /data/sizes/page.bin {dump}", str(region)])
    assert seen == on_disk and len(on_disk) == 4096
    assert dump.read_bytes() != on_disk
    assert "needs_recovery" not in _run(["dumpe2fs", "-h", str(region)])


def test_dirty01_xfs_log_is_dirty_and_mounts_with_norecovery(built: Builder,
                                                            tmp_path: Path) -> None:
    (image,) = built(DIRTY01)
    srv = image.partitions[1]
    assert srv.dirty
    with _loop(image.path, srv.start, srv.size) as loop:
        assert "state: <DIRTY>" in _run(["xfs_logprint", "-t", loop])
    before = _sha256(image.path)
    with _mounted(image.path, srv.start, srv.size, "xfs", "ro,norecovery,nouuid",
                  tmp_path / "ro") as mnt:
        names = sorted(p.name for p in mnt.iterdir())
        assert (mnt / "links/hard-1").stat().st_nlink == 3
    assert _sha256(image.path) == before
    assert "log-pending" not in names and {"data", "links", "special"} <= set(names)
    # Log recovery (a read-write mount of a copy) brings the logged change in place.
    copy_path = _extract(image.path, srv.start, srv.size, tmp_path / "srv.fs")
    with _mounted(str(copy_path), 0, srv.size, "xfs", "nouuid", tmp_path / "rw",
                  writable=True) as mnt:
        assert (mnt / "log-pending").is_dir()


def test_dirty01_standby_filesystems_are_clean_and_empty(built: Builder) -> None:
    (standby,) = built(DIRTY01, standby=True)
    root, srv = standby.partitions
    assert not root.dirty and not srv.dirty
    features = _run(["debugfs", "-R", "features", f"{standby.path}?offset={root.start}"])
    assert "has_journal" in features and "needs_recovery" not in features
    with _loop(standby.path, srv.start, srv.size) as loop:
        assert "state: <CLEAN>" in _run(["xfs_logprint", "-t", loop])


# --------------------------------------------------------------------------- lvm01


def test_lvm01_pv_carries_the_guest_vg_with_fixed_uuids(built: Builder, tmp_path: Path) -> None:
    (image,) = built(LVM01)
    pv = image.partitions[1]
    assert _sfdisk(image.path)["partitions"][1]["type"] == "8e"
    probe = _blkid(image.path, pv.start, pv.size)
    assert (probe["TYPE"], probe["UUID"]) == ("LVM2_member",
                                              "5eed17-0000-0000-0000-0000-0000-0000p2")
    assert _lvm(image.path, pv.start, pv.size, tmp_path, "pvs", "-o",
                "pv_name,pv_uuid,pe_start,vg_name") == [
        {"pv_name": "PV", "pv_uuid": "5eed17-0000-0000-0000-0000-0000-0000p2",
         "pe_start": str(MIB), "vg_name": "vg_a"}]
    assert _lvm(image.path, pv.start, pv.size, tmp_path, "vgs", "-o",
                "vg_name,vg_uuid,vg_extent_size,vg_extent_count,lv_count") == [
        {"vg_name": "vg_a", "vg_uuid": "5eed17-0000-0000-0000-0000-0000-0000vg",
         "vg_extent_size": str(4 * MIB), "vg_extent_count": "63", "lv_count": "2"}]
    assert _lvm(image.path, pv.start, pv.size, tmp_path, "lvs", "-o",
                "lv_name,lv_uuid,lv_size,seg_pe_ranges") == [
        {"lv_name": "root", "lv_uuid": "5eed17-0000-0000-0000-0000-0000-00root",
         "lv_size": str(160 * MIB), "seg_pe_ranges": "PV:0-39"},
        {"lv_name": "var", "lv_uuid": "5eed17-0000-0000-0000-0000-0000-000var",
         "lv_size": str(92 * MIB), "seg_pe_ranges": "PV:40-62"}]


def test_lvm01_volumes_hold_their_filesystems_where_lvm_maps_them(built: Builder) -> None:
    (image,) = built(LVM01)
    pv = image.partitions[1]
    assert [(v.name, v.start - pv.start) for v in image.volumes] == [
        ("root", MIB), ("var", MIB + 40 * 4 * MIB)]
    found = [_blkid(image.path, v.start, v.size) for v in image.volumes]
    assert [(f["TYPE"], f["UUID"], f["LABEL"]) for f in found] == [
        ("ext4", "5eed0017-0000-4000-8000-000000000002", "lvm01-root"),
        ("ext4", "5eed0017-0000-4000-8000-000000000003", "lvm01-var")]
    root = image.volumes[0]
    assert root.device == "/dev/vg_a/root" and root.mount == "/"
    fstab = _debugfs(image.path, root.start, "cat /etc/fstab")
    assert fstab == render_fstab(load_recipe(LVM01)) == image.fstab
    assert {"boot", "var"} <= set(_ls(image.path, root.start, "/"))
    assert _ls(image.path, root.start, "/var") == []
    for vol in image.volumes:
        result = RUNNER.run(["e2fsck", "-f", "-n", f"{image.path}?offset={vol.start}"],
                            check=False)
        assert result.exit_code == 0, result.stdout + result.stderr


def test_lvm01_standby_has_the_same_vg_and_empty_volumes(built: Builder, tmp_path: Path) -> None:
    (source,), (standby,) = built(LVM01), built(LVM01, standby=True)
    pv = standby.partitions[1]
    for cmd, fields in (("pvs", "pv_uuid,pe_start,vg_name,vg_uuid"),
                        ("lvs", "lv_name,lv_uuid,seg_pe_ranges")):
        assert _lvm(standby.path, pv.start, pv.size, tmp_path, cmd, "-o", fields) == _lvm(
            source.path, pv.start, pv.size, tmp_path, cmd, "-o", fields)
    for src, sby in zip(source.volumes, standby.volumes, strict=True):
        assert _identity(standby.path, sby.start, sby.size) == _identity(source.path, src.start,
                                                                         src.size)
        assert _ls(standby.path, sby.start, "/") == ["lost+found"]
        assert sby.content == "empty" and sby.tree is None


def test_guest_lvm_never_touches_the_hosts_lvm_files(tmp_path: Path) -> None:
    watched = [Path("/etc/lvm/backup"), Path("/etc/lvm/archive"), Path("/run/lvm")]

    def listing() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size)
                for d in watched if d.is_dir() for p in d.iterdir()}

    before = listing()
    recipe = load_recipe(LVM01)
    build_disk_image(RUNNER, recipe, str(tmp_path / "l.img"), workdir=str(tmp_path / "w"),
                     standby=True)
    assert listing() == before
    assert not Path("/etc/lvm/backup/vg_a").exists()
