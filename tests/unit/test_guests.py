"""Guest disk recipes and the image builder.

The build tests run the real tools (sfdisk, mkfs.ext4, mkswap, setcap, debugfs, blkid) on
this host through LocalRunner and need root (chown to unknown ids, mknod, setcap). They use
no loop device and no device-mapper: images are inspected with sfdisk, blkid and debugfs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import stat
import struct
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from toolkit.errors import ConfigError, UsageError
from toolkit.lab.guests import (
    MIB,
    BuiltImage,
    GuestRecipe,
    build_disk_image,
    load_recipe,
    mutate,
    parse_recipe,
    parse_size,
    plan_layout,
    render_fstab,
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
    assert int(got["size"]) == 64 * MIB
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
