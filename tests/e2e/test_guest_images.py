"""Guest disk images and guest trees, built in the lab and inspected inside the fake Dom0s.

Building an image runs sfdisk, mkfs.*, mkswap, lvm, setcap, debugfs and python3 as root,
with loop devices and mounts; staging a guest tree chowns to other ids and makes device
nodes. So these tests (once in tests/unit/test_guests.py, which keeps the pure recipe
tests) run in the containers, never on the host.

Most of them inspect images the sandbox builds anyway, with what ``build_disk_image``
reported for each (``Lab.built``):

* web01 (``GUESTS``: fixtures/guests/web01.toml, its one disk xvda): its source image on
  dom0-a and its empty standby on dom0-b, built when the sandbox came up;
* db01's source image on dom0-b, the first of the two builds that must be identical;
* the disk layouts (``LAYOUTS``: gpt01, whole01, multi01, ext01, xfs01, dirty01, lvm01),
  built once per sandbox by ``prepare_layout`` (which the layout tests use too): sources
  on dom0-a, standbys on dom0-b.

Those files are only read, through read-only loop devices and mounts; what a test changes
is a copy. Builds of a test's own go to a temporary directory of a container
(``scratch``), removed afterwards, with a check that nothing there is still mounted or
attached to a loop device; after the module, nothing below the lab's directory is.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import json
import posixpath
import random
import stat
import struct
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest

from toolkit.errors import ConfigError, UsageError
from toolkit.lab.guests import (
    MIB,
    BuiltImage,
    GuestRecipe,
    build_disk_image,
    build_domain_images,
    load_domain,
    load_recipe,
    mutate,
    parse_recipe,
    render_fstab,
    stage_tree,
)
from toolkit.lab.rehearse import GUESTS, IMAGES, WORKDIR, GuestDisk, Lab, prepare_layout
from toolkit.runners import CommandResult, Runner

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "guests"
WEB01, DB01 = FIXTURES / "web01.toml", FIXTURES / "db01.toml"
GPT01, WHOLE01 = FIXTURES / "gpt01.toml", FIXTURES / "whole01.toml"
MULTI01, EXT01 = FIXTURES / "multi01.toml", FIXTURES / "ext01.toml"
XFS01, DIRTY01 = FIXTURES / "xfs01.toml", FIXTURES / "dirty01.toml"
LVM01 = FIXTURES / "lvm01.toml"
CAP_NET_RAW = 13
ESP_LOADER = "EFI/BOOT/BOOTX64.EFI"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
# Reports on a guest PV without the container's LVM configuration, devices file or
# device-mapper (and without udev, which does not run in the fake Dom0s).
LVM_PRIVATE = ["--nolocking", "--driverloaded", "n", "--readonly", "--config",
               'devices { hints = "none" use_devicesfile = 0 obtain_device_list_from_udev = 0 }'
               " backup { backup = 0 archive = 0 }"]
# The lab's directory (images, work): a filesystem that holds user xattrs and ACLs.
LAB_DIR = posixpath.dirname(IMAGES)
SCRATCH_PREFIX = "guest-images."
DOM0S = ("dom0-a", "dom0-b")


# --------------------------------------------------------------------------- files in the lab


@dataclass(frozen=True)
class InLab:
    """A path inside one fake Dom0, with the runner of its container."""

    runner: Runner
    path: str

    def __truediv__(self, rel: str) -> InLab:
        return InLab(self.runner, posixpath.join(self.path, rel))

    def _test(self, flag: str) -> bool:
        return self.runner.run(["test", flag, self.path], check=False).exit_code == 0

    def is_dir(self) -> bool:
        return self._test("-d")

    def exists(self) -> bool:
        return self._test("-e")

    def read_bytes(self) -> bytes:
        return _read(self, 0, -1)

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def names(self) -> list[str]:
        """The directory's entries, sorted (``sorted(p.name for p in path.iterdir())``)."""
        return _probe(self.runner, {"op": "listdir", "path": self.path})

    def stat(self) -> SimpleNamespace:
        size, blocks, ino, nlink = _probe(self.runner, {"op": "stat", "path": self.path})
        return SimpleNamespace(st_size=size, st_blocks=blocks, st_ino=ino, st_nlink=nlink)


@dataclass(frozen=True)
class HostedImage(InLab):
    """An image file in a fake Dom0, and what build_disk_image reported when it built it."""

    built: BuiltImage

    def __getattr__(self, name: str) -> Any:
        if name == "built":
            raise AttributeError(name)
        return getattr(self.built, name)


def _hosted(runner: Runner, built: BuiltImage) -> HostedImage:
    return HostedImage(runner, built.path, built)


def _run(runner: Runner, argv: Sequence[str], **kwargs: Any) -> str:
    return runner.run(argv, **kwargs).stdout


def _raw(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def _probe_main(spec):
    """Runs in a fake Dom0, shipped as source by ``_probe``: the standard library only."""
    import base64
    import hashlib
    import os
    import pathlib
    import stat

    op = spec["op"]
    if op == "read":
        with open(spec["path"], "rb") as f:
            f.seek(spec["offset"])
            return base64.b64encode(f.read(spec["size"])).decode()
    if op == "listdir":
        return sorted(os.listdir(spec["path"]))
    if op == "stat":
        st = os.stat(spec["path"])
        return [st.st_size, st.st_blocks, st.st_ino, st.st_nlink]
    if op == "getxattr":
        return os.getxattr(spec["path"], spec["name"]).hex()
    if op == "count":
        return len(list(pathlib.Path(spec["path"]).rglob(spec["pattern"])))
    if op == "listing":
        watched = [pathlib.Path(d) for d in spec["dirs"]]
        return {str(p): [p.stat().st_mtime_ns, p.stat().st_size]
                for d in watched if d.is_dir() for p in d.iterdir()}
    if op == "manifest":
        # Everything rsync -aHAX would carry, per path.
        root = pathlib.Path(spec["root"])
        out = {}
        for path in sorted([root, *root.rglob("*")]):
            st = path.lstat()
            rel = str(path.relative_to(root))
            body = None
            if stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            xattrs = sorted([n, os.getxattr(path, n, follow_symlinks=False).hex()]
                            for n in os.listxattr(path, follow_symlinks=False))
            mtime = None if stat.S_ISDIR(st.st_mode) and not spec["dir_times"] else st.st_mtime_ns
            out[rel] = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink, st.st_rdev,
                        body, xattrs, mtime]
        return out
    raise SystemExit(f"unknown op {op!r}")


@functools.cache
def _probe_program() -> str:
    return (inspect.getsource(_probe_main)
            + "\nimport json, sys\nprint(json.dumps(_probe_main(json.loads(sys.argv[1]))))\n")


def _probe(runner: Runner, spec: dict[str, Any]) -> Any:
    """What ``_probe_main`` finds in the runner's container."""
    out = _run(runner, ["python3", "-c", _probe_program(), json.dumps(spec)], timeout=600)
    return json.loads(out)


def _read(f: InLab, offset: int, size: int) -> bytes:
    """``size`` bytes of a file at ``offset`` (-1: to its end)."""
    spec = {"op": "read", "path": f.path, "offset": offset, "size": size}
    return base64.b64decode(_probe(f.runner, spec))


def _sha256(f: InLab) -> str:
    return _run(f.runner, ["sha256sum", "--", f.path], timeout=600).split()[0]


def _debugfs(image: InLab, offset: int, request: str) -> str:
    return _run(image.runner, ["debugfs", "-R", request, f"{image.path}?offset={offset}"])


def _stat(image: InLab, offset: int, path: str) -> dict[str, str]:
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


def _blkid(image: InLab, offset: int, size: int) -> dict[str, str]:
    out = _run(image.runner, ["blkid", "-p", "-O", str(offset), "-S", str(size), "-o", "export",
                              image.path])
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _identity(image: InLab, offset: int, size: int) -> dict[str, str]:
    """What blkid finds at ``offset``, without the image's own path."""
    found = _blkid(image, offset, size)
    found.pop("DEVNAME")
    return found


def _ls(image: InLab, offset: int, path: str) -> list[str]:
    out = _debugfs(image, offset, f'ls -p "{path}"')
    names = [line.split("/")[5] for line in out.splitlines() if line.startswith("/")]
    return sorted(n for n in names if n not in (".", ".."))


def _sfdisk(image: InLab) -> dict[str, Any]:
    table = json.loads(_run(image.runner, ["sfdisk", "--json", image.path]))["partitiontable"]
    for part in table["partitions"]:
        part.pop("node")
    table.pop("device")
    return table


def _extract(image: InLab, offset: int, size: int, dest: InLab) -> InLab:
    """Copy one filesystem out of an image into its own (sparse) file, in the same container."""
    assert dest.runner.host == image.runner.host
    image.runner.run(["dd", f"if={image.path}", f"of={dest.path}", "bs=1M", f"skip={offset}",
                      f"count={size}", "iflag=skip_bytes,count_bytes", "conv=sparse",
                      "status=none"], timeout=600)
    return dest


@contextlib.contextmanager
def _loop(image: InLab, offset: int, size: int, *, writable: bool = False) -> Iterator[str]:
    argv = ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size)]
    loop = _run(image.runner, [*argv, *([] if writable else ["--read-only"]), image.path]).strip()
    assert loop.startswith("/dev/loop"), loop
    try:
        yield loop
    finally:
        image.runner.run(["losetup", "-d", loop])


@contextlib.contextmanager
def _mounted(image: InLab, offset: int, size: int, fstype: str, options: str, where: InLab, *,
             writable: bool = False) -> Iterator[InLab]:
    assert where.runner.host == image.runner.host
    where.runner.run(["mkdir", "-p", "--", where.path])
    with _loop(image, offset, size, writable=writable) as loop:
        image.runner.run(["mount", "-t", fstype, "-o", options, loop, where.path])
        try:
            yield where
        finally:
            image.runner.run(["umount", where.path])


def _lvm(image: InLab, offset: int, size: int, tmp: InLab, *command: str) -> list[dict[str, str]]:
    """One LVM report on the PV at ``offset``, seen through a private read-only setup."""
    sysdir = tmp / "lvm-system"
    tmp.runner.run(["mkdir", "-p", "--", sysdir.path])
    env = {"LVM_SYSTEM_DIR": sysdir.path, "LVM_SUPPRESS_FD_WARNINGS": "1"}
    with _loop(image, offset, size) as loop:
        out = _run(image.runner, ["lvm", *command, "--devices", loop, *LVM_PRIVATE,
                                  "--reportformat", "json", "--units", "b", "--nosuffix"],
                   env=env)
    report = json.loads(out)["report"][0]
    rows = next(iter(report.values()))
    return [{k: v.replace(loop, "PV") for k, v in row.items()} for row in rows]


def _fat_file(image: InLab, offset: int, path: str) -> bytes:
    """A file's bytes from a FAT32 filesystem at ``offset``, read by following its clusters."""
    chunks: dict[int, bytes] = {}

    def read(at: int, size: int) -> bytes:
        # The image is read from the container a MiB at a time, each MiB once.
        out = b""
        while size > 0:
            index, skip = divmod(at, MIB)
            if index not in chunks:
                chunks[index] = _read(image, index * MIB, MIB)
            piece = chunks[index][skip:skip + size]
            if not piece:
                break
            out, at, size = out + piece, at + len(piece), size - len(piece)
        return out

    boot = read(offset, 512)
    bps, spc, reserved, nfats = struct.unpack_from("<HBHB", boot, 11)
    fat_sectors, root = struct.unpack_from("<I", boot, 36)[0], struct.unpack_from("<I", boot, 44)[0]
    fat = read(offset + reserved * bps, fat_sectors * bps)
    data, csize = offset + (reserved + nfats * fat_sectors) * bps, bps * spc

    def body(cluster: int) -> bytes:
        out = b""
        while 2 <= cluster < 0x0FFFFFF8:
            out += read(data + (cluster - 2) * csize, csize)
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


def _manifest(root: InLab, *, dir_times: bool = True) -> dict[str, tuple[Any, ...]]:
    """Everything rsync -aHAX would carry, per path (read in the container)."""
    raw = _probe(root.runner, {"op": "manifest", "root": root.path, "dir_times": dir_times})
    return {rel: (mode, uid, gid, size, nlink, rdev, body,
                  tuple((n, bytes.fromhex(v)) for n, v in xattrs), mtime)
            for rel, (mode, uid, gid, size, nlink, rdev, body, xattrs, mtime) in raw.items()}


def _fidelity(root: InLab) -> dict[str, tuple[Any, ...]]:
    """What rsync -aHAX carries, per path, minus what differs between filesystem types."""
    out = {}
    for rel, (mode, uid, gid, size, nlink, rdev, body, xattrs, mtime) in _manifest(root).items():
        if stat.S_ISDIR(mode):
            size = nlink = None  # directory sizes and link counts are the filesystem's own
        # trusted.SGI_ACL_* is how xfs shows root its ACLs, beside system.posix_acl_*.
        xattrs = tuple(x for x in xattrs if not x[0].startswith("trusted."))
        out[rel] = (mode, uid, gid, size, nlink, rdev, body, xattrs, mtime)
    return out


def _held(runner: Runner, prefix: str) -> tuple[list[str], list[str]]:
    """Mount points below ``prefix`` and loop devices whose backing file is below it."""
    mounts = [t for t in _run(runner, ["findmnt", "-rn", "-o", "TARGET"]).splitlines()
              if t.startswith(prefix)]
    listed = _run(runner, ["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"])
    loops = [ln.split()[0] for ln in listed.splitlines()
             if len(ln.split()) > 1 and ln.split(None, 1)[1].strip().startswith(prefix)]
    return mounts, loops


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def nothing_left_attached(lab: Lab) -> Iterator[None]:
    """After the module: no mount below the lab's directory, no loop device on its files."""
    yield
    held = {c: _held(lab.runner(c), LAB_DIR + "/") for c in DOM0S}
    held = {c: v for c, v in held.items() if v != ([], [])}
    assert not held, f"mounts and loop devices left behind: {held}"


@pytest.fixture
def scratch(lab: Lab) -> Iterator[Callable[..., InLab]]:
    """A temporary directory in a fake Dom0 (dom0-a unless named), one per container and test.

    Afterwards nothing in it may be mounted or attached to a loop device (whatever is gets
    released, and the test fails), and it is removed.
    """
    made: dict[str, InLab] = {}

    def get(container: str = "dom0-a") -> InLab:
        if container not in made:
            r = lab.runner(container)
            path = _run(r, ["mktemp", "-d", "-p", LAB_DIR, f"{SCRATCH_PREFIX}XXXXXX"]).strip()
            made[container] = InLab(r, path)
        return made[container]

    yield get
    held = {}
    for container, tmp in made.items():
        mounts, loops = _held(tmp.runner, tmp.path + "/")
        for target in sorted(mounts, reverse=True):
            tmp.runner.run(["umount", target], check=False)
        for loop in loops:
            tmp.runner.run(["losetup", "-d", loop], check=False)
        if mounts or loops:
            held[container] = (mounts, loops)
        tmp.runner.run(["rm", "-rf", "--one-file-system", "--", tmp.path], timeout=600)
    assert not held, f"left mounted or attached: {held}"


def _guest(domain: str) -> GuestDisk:
    return next(g for g in GUESTS if g.domain == domain)


def _lab_image(lab: Lab, container: str, path: str) -> HostedImage:
    """An image the sandbox built, with what build_disk_image reported for it."""
    image = _hosted(lab.runner(container), lab.built[(container, path)])
    assert image.path == path
    return image


@pytest.fixture(scope="module")
def web01(lab: Lab) -> GuestRecipe:
    """web01's recipe, checked to be the one the sandbox built web01's images from."""
    g = _guest("web01")
    recipe = load_recipe(WEB01)
    assert (g.recipe, g.device, g.source, g.peer) == ("web01", "xvda", "dom0-a", "dom0-b")
    assert load_recipe(lab.recipe_path(g.recipe), g.device) == recipe
    return recipe


@pytest.fixture(scope="module")
def web01_image(lab: Lab, web01: GuestRecipe) -> HostedImage:
    """web01's image as the sandbox built it, on dom0-a where web01 runs."""
    g = _guest("web01")
    image = _lab_image(lab, g.source, g.source_image)
    assert (image.name, image.device, image.standby, image.scale) == ("web01", "xvda", False, 1)
    return image


@pytest.fixture(scope="module")
def web01_standby(lab: Lab, web01: GuestRecipe) -> HostedImage:
    """web01's empty standby as the sandbox built it, on dom0-b."""
    g = _guest("web01")
    image = _lab_image(lab, g.peer, g.standby_image)
    assert (image.name, image.device, image.scale) == ("web01", "xvda", 1)
    return image


Builder = Callable[..., tuple[HostedImage, ...]]


@pytest.fixture(scope="module")
def built(lab: Lab) -> Builder:
    """A layout's disk images as the lab built them (prepare_layout, once per sandbox).

    Sources on the host where the domain runs (dom0-a), standbys on its peer (dom0-b), in
    the order of the recipe's disks. prepare_layout also writes them onto the domain's LVs,
    as it does for the layout tests; the image files stay as built.
    """
    prepared: dict[Path, tuple[GuestDisk, ...]] = {}

    def get(path: Path, *, standby: bool = False) -> tuple[HostedImage, ...]:
        if path not in prepared:
            domain = load_domain(path)
            disks = prepare_layout(lab, domain.name)
            assert [g.device for g in disks] == [d.device for d in domain.disks]
            for g in disks:
                assert load_recipe(lab.recipe_path(g.recipe), g.device) == domain.disk(g.device)
            prepared[path] = disks
        return tuple(_lab_image(lab, g.peer, g.standby_image) if standby
                     else _lab_image(lab, g.source, g.source_image) for g in prepared[path])

    return get


# --------------------------------------------------------------------------- web01 image


def test_web01_partition_table_is_the_recipes(web01_image: HostedImage) -> None:
    table = _sfdisk(web01_image)
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
                                                              web01_image: HostedImage) -> None:
    found = [_blkid(web01_image, p.start, p.size) for p in web01_image.partitions]
    assert [(f["TYPE"], f["UUID"], f["LABEL"]) for f in found] == [
        (p.fs, p.uuid, p.label) for p in web01.partitions]


def test_web01_root_holds_fstab_hostname_and_os_release(web01: GuestRecipe,
                                                        web01_image: HostedImage) -> None:
    root = web01_image.partitions[0].start
    assert _debugfs(web01_image, root, "cat /etc/fstab") == render_fstab(web01)
    assert web01_image.fstab == render_fstab(web01)
    assert _debugfs(web01_image, root, "cat /etc/hostname") == "web01\n"
    assert 'VERSION_CODENAME=bookworm' in _debugfs(web01_image, root, "cat /etc/os-release")
    assert "var" in _ls(web01_image, root, "/")
    assert _ls(web01_image, root, "/var") == []


def test_web01_var_is_its_own_rich_filesystem(web01_image: HostedImage) -> None:
    var = web01_image.partitions[1]
    names = _ls(web01_image, var.start, "/")
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
def test_web01_tree_keeps_types_modes_and_numeric_owners(web01_image: HostedImage, path: str,
                                                         kind: str, mode: str, uid: str,
                                                         gid: str) -> None:
    got = _stat(web01_image, web01_image.partitions[0].start, path)
    assert (got["type"], got["mode"], got["uid"], got["gid"]) == (kind, mode, uid, gid)


def test_web01_device_node_is_like_dev_null(web01_image: HostedImage) -> None:
    got = _stat(web01_image, web01_image.partitions[0].start, "/special/null")
    assert got["rdev"] == "01:03"


def test_web01_hard_link_group_is_one_inode_with_three_names(web01_image: HostedImage) -> None:
    start = web01_image.partitions[0].start
    names = ("/links/hard-1", "/links/hard-2", "/data/hard-3")
    found = [_stat(web01_image, start, n) for n in names]
    assert {f["inode"] for f in found} == {found[0]["inode"]}
    assert found[0]["links"] == "3"
    assert (found[0]["uid"], found[0]["gid"], found[0]["mode"]) == ("1234", "5678", "0640")


def test_web01_symlinks_absolute_relative_and_dangling(web01_image: HostedImage) -> None:
    start = web01_image.partitions[0].start
    targets = {n: _stat(web01_image, start, f"/links/{n}").get("target")
               for n in ("abs-hostname", "rel-page", "dangling", "dir-link")}
    assert targets == {"abs-hostname": "/etc/hostname", "rel-page": "../data/sizes/page.bin",
                       "dangling": "../data/no-such-file", "dir-link": "../data/deep"}
    long_link = _stat(web01_image, start, "/links/long-target")
    assert long_link["type"] == "symlink" and int(long_link["size"]) > 60
    assert "no-such-file" not in _ls(web01_image, start, "/data")


def test_web01_user_xattr_survives(web01_image: HostedImage) -> None:
    start = web01_image.partitions[0].start
    out = _debugfs(web01_image, start, "ea_get /data/xattr.txt user.domubk")
    assert out.strip() == 'user.domubk (11) = "fixture-1:1"'


def test_web01_file_capability_is_cap_net_raw_effective(web01_image: HostedImage,
                                                        scratch: Callable[..., InLab]) -> None:
    start = web01_image.partitions[0].start
    dump = scratch(web01_image.runner.host) / "cap"
    _debugfs(web01_image, start,
             f"ea_get -f {dump.path} /usr/bin/netprobe security.capability")
    magic, permitted, inheritable = struct.unpack("<III", dump.read_bytes()[:12])
    assert magic & 0xFF000000 == 0x02000000  # VFS_CAP_REVISION_2
    assert magic & 1  # effective
    assert permitted == 1 << CAP_NET_RAW and inheritable == 0


def test_web01_acls_survive(web01_image: HostedImage) -> None:
    start = web01_image.partitions[0].start
    assert "system.posix_acl_access" in _debugfs(web01_image, start, "ea_list /data/acl.txt")
    assert "system.posix_acl_default" in _debugfs(web01_image, start, "ea_list /data/acl-dir")


def test_web01_sparse_file_keeps_its_holes(web01_image: HostedImage) -> None:
    got = _stat(web01_image, web01_image.partitions[0].start, "/data/sparse.img")
    assert int(got["size"]) == 4 * MIB
    assert int(got["blocks"]) * 512 <= 64 * 1024  # three 4 KiB extents plus metadata


def test_web01_files_of_many_sizes(web01_image: HostedImage) -> None:
    start = web01_image.partitions[0].start
    sizes = {n: int(_stat(web01_image, start, f"/data/sizes/{n}")["size"])
             for n in _ls(web01_image, start, "/data/sizes")}
    assert sizes == {"empty.bin": 0, "one.bin": 1, "page.bin": 4096, "page-plus-one.bin": 4097,
                     "mebi.bin": MIB}
    big = [int(_stat(web01_image, start, f"/data/big/{n}")["size"])
           for n in _ls(web01_image, start, "/data/big")]
    assert len(big) == 3 and all(MIB <= s < 4 * MIB for s in big)


def test_web01_empty_directories_stay_empty(web01_image: HostedImage) -> None:
    start = web01_image.partitions[0].start
    assert _ls(web01_image, start, "/data/empty-dir") == []
    assert _ls(web01_image, start, "/empty/nested/deeper") == []


def test_web01_filesystems_pass_a_forced_fsck(web01_image: HostedImage) -> None:
    for part in web01_image.partitions[:2]:
        result = web01_image.runner.run(
            ["e2fsck", "-f", "-n", f"{web01_image.path}?offset={part.start}"], check=False)
        assert result.exit_code == 0, result.stdout + result.stderr


def test_web01_image_file_is_sparse(web01_image: HostedImage) -> None:
    size, blocks, unit = _run(web01_image.runner,
                              ["stat", "-c", "%s %b %B", "--", web01_image.path]).split()
    assert int(size) == 256 * MIB
    assert int(blocks) * int(unit) < 100 * MIB


def test_web01_build_leaves_workdir_empty(web01_image: HostedImage,
                                          web01_standby: HostedImage) -> None:
    # The sandbox builds web01 (and every other image) with WORKDIR as the work directory.
    for image in (web01_image, web01_standby):
        assert InLab(image.runner, WORKDIR).names() == []


# --------------------------------------------------------------------------- standby


def test_standby_has_the_same_table_uuids_and_labels(web01_image: HostedImage,
                                                     web01_standby: HostedImage) -> None:
    assert _sfdisk(web01_standby) == _sfdisk(web01_image)
    source = [_blkid(web01_image, p.start, p.size) for p in web01_image.partitions]
    standby = [_blkid(web01_standby, p.start, p.size) for p in web01_standby.partitions]
    assert [(b["TYPE"], b["UUID"], b["LABEL"]) for b in standby] == [
        (b["TYPE"], b["UUID"], b["LABEL"]) for b in source]


def test_standby_filesystems_are_empty(web01_standby: HostedImage) -> None:
    assert web01_standby.standby and web01_standby.fstab is None
    for part in web01_standby.partitions[:2]:
        assert _ls(web01_standby, part.start, "/") == ["lost+found"]
        assert part.content == "empty" and part.tree is None
        assert _stat(web01_standby, part.start, "/")["uid"] == "0"


# --------------------------------------------------------------------------- other builds


def test_two_builds_are_byte_identical(lab: Lab, scratch: Callable[..., InLab]) -> None:
    # The first build is the sandbox's db01, on dom0-b where db01 runs; the second is made
    # beside it from the same recipe.
    g = _guest("db01")
    db01 = load_recipe(DB01)
    assert (g.recipe, g.device) == ("db01", "xvda")
    assert load_recipe(lab.recipe_path(g.recipe), g.device) == db01
    first = _lab_image(lab, g.source, g.source_image)
    assert not first.standby and first.scale == 1
    tmp = scratch(g.source)
    r = tmp.runner
    second = _hosted(r, build_disk_image(r, db01, (tmp / "b.img").path,
                                         workdir=(tmp / "w").path))
    assert _sha256(first) == _sha256(second)
    raw = _raw(DB01)
    raw["seed"] = 3
    other = _hosted(r, build_disk_image(r, parse_recipe(raw, source="db01.toml"),
                                        (tmp / "c.img").path, workdir=(tmp / "w").path))
    assert _sha256(other) != _sha256(first)


def _tiny(table: str, partitions: list[dict[str, Any]], **top: Any) -> GuestRecipe:
    raw = {"name": "tiny", "size": "16M", "label": table, "seed": 5, **top,
           "partitions": partitions}
    return parse_recipe(raw, source="tiny.toml")


def test_gpt_recipe_builds_with_its_guids(scratch: Callable[..., InLab]) -> None:
    recipe = _tiny("gpt", [
        {"size": "10M", "fs": "ext4", "uuid": "5eed0003-0000-4000-8000-000000000001",
         "partuuid": "5eed0003-0000-4000-8000-0000000000a1", "name": "root", "mount": "/",
         "content": "minimal", "fstab_by": "partuuid"},
        {"fs": "swap", "uuid": "5eed0003-0000-4000-8000-000000000002",
         "partuuid": "5eed0003-0000-4000-8000-0000000000a2"},
    ], disk_id="5eed0003-0000-4000-8000-0000000000ff")
    tmp = scratch()
    image = _hosted(tmp.runner, build_disk_image(tmp.runner, recipe, (tmp / "g.img").path,
                                                 workdir=tmp.path))
    table = _sfdisk(image)
    assert (table["label"], table["id"]) == ("gpt", "5EED0003-0000-4000-8000-0000000000FF")
    assert [(p["start"], p["size"], p["type"], p["uuid"], p.get("name")) for p in
            table["partitions"]] == [
        (2048, 20480, "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
         "5EED0003-0000-4000-8000-0000000000A1", "root"),
        (22528, 8192, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
         "5EED0003-0000-4000-8000-0000000000A2", None)]
    assert _blkid(image, MIB, 10 * MIB)["UUID"] == "5eed0003-0000-4000-8000-000000000001"
    fstab = _debugfs(image, MIB, "cat /etc/fstab")
    assert "PARTUUID=5eed0003-0000-4000-8000-0000000000a1\t/\text4" in fstab
    assert _debugfs(image, MIB, "cat /README.txt") == "minimal fixture filesystem\n"


def test_whole_disk_recipe_builds_a_filesystem_at_offset_zero(
        scratch: Callable[..., InLab]) -> None:
    recipe = _tiny("none", [{"fs": "ext4", "uuid": "5eed0004-0000-4000-8000-000000000001",
                             "label": "tiny-data", "mount": "/", "fstab_by": "device",
                             "content": "minimal"}])
    tmp = scratch()
    image = _hosted(tmp.runner, build_disk_image(tmp.runner, recipe, (tmp / "w.img").path,
                                                 workdir=tmp.path))
    probe = _blkid(image, 0, 16 * MIB)
    assert (probe["TYPE"], probe["LABEL"]) == ("ext4", "tiny-data")
    assert "PTTYPE" not in probe
    assert "/dev/xvda\t/\text4" in _debugfs(image, 0, "cat /etc/fstab")


def test_tree_too_big_for_its_partition_is_refused(scratch: Callable[..., InLab]) -> None:
    recipe = _tiny("dos", [{"size": "8M", "fs": "ext4", "mount": "/",
                            "uuid": "5eed0005-0000-4000-8000-000000000001"}],
                   disk_id="0x5eed0005")
    tmp = scratch()
    with pytest.raises(ConfigError, match=r"^tiny.toml: partitions\[0\]\.size: the rich tree "
                                          r"at scale 1 needs about \d+ MiB, more than the 8 MiB"):
        build_disk_image(tmp.runner, recipe, (tmp / "t.img").path, workdir=(tmp / "w").path)
    assert (tmp / "w").names() == []


def test_refuses_to_replace_something_that_is_not_a_file(scratch: Callable[..., InLab],
                                                         web01: GuestRecipe) -> None:
    tmp = scratch()
    target = tmp / "a-directory"
    tmp.runner.run(["mkdir", "--", target.path])
    with pytest.raises(UsageError, match="not a regular file"):
        build_disk_image(tmp.runner, web01, target.path, workdir=(tmp / "w").path)
    assert target.is_dir()


class RecordingRunner:
    """Runs through a fake Dom0's runner and keeps every argv it was given."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.host = "recording"
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.calls.append(tuple(argv))
        return self.inner.run(argv, **kwargs)


def test_every_step_runs_as_argv_through_the_runner(scratch: Callable[..., InLab]) -> None:
    db01 = load_recipe(DB01)
    tmp = scratch()
    runner = RecordingRunner(tmp.runner)
    out = (tmp / "db01.img").path
    build_disk_image(runner, db01, out, workdir=(tmp / "w").path)
    programs = [c[0] for c in runner.calls]
    for tool in ("sfdisk", "python3", "setcap", "mkfs.ext4", "debugfs", "dd"):
        assert tool in programs
    dd = next(c for c in runner.calls if c[0] == "dd")
    assert f"of={out}" in dd and "seek=1048576" in dd and "conv=notrunc,sparse" in dd
    assert "oflag=seek_bytes" in dd
    mkfs = next(c for c in runner.calls if c[0] == "mkfs.ext4")
    assert mkfs[mkfs.index("-U") + 1] == db01.partitions[0].uuid
    assert mkfs[mkfs.index("-L") + 1] == "db01-root"


# --------------------------------------------------------------------------- staging and mutate


def test_scale_multiplies_the_file_counts(scratch: Callable[..., InLab]) -> None:
    db01 = load_recipe(DB01)
    tmp = scratch()
    r = tmp.runner
    one, _ = stage_tree(r, db01, 1, (tmp / "one").path)
    three, caps = stage_tree(r, db01, 1, (tmp / "three").path, scale=3)
    assert three.files - one.files == 2 * (500 + 2)
    assert caps == (("usr/bin/netprobe", "cap_net_raw+ep"),)
    small = tmp / "three" / "data" / "small"
    assert _probe(r, {"op": "count", "path": small.path, "pattern": "*.dat"}) == 1500
    assert len((tmp / "three" / "data" / "big").names()) == 7


def test_nested_mount_points_are_made_in_the_nearest_filesystem(
        scratch: Callable[..., InLab]) -> None:
    raw = _raw(WEB01)
    raw["partitions"][2] = {"size": "16M", "fs": "ext4", "mount": "/var/lib/db",
                            "uuid": "5eed0001-0000-4000-8000-000000000009", "content": "minimal"}
    recipe = parse_recipe(raw, source="web01.toml")
    tmp = scratch()
    stage_tree(tmp.runner, recipe, 1, (tmp / "root").path)
    stage_tree(tmp.runner, recipe, 2, (tmp / "var").path)
    assert (tmp / "root" / "var").is_dir()
    assert not (tmp / "root" / "var" / "lib").exists()
    assert (tmp / "var" / "lib" / "db").is_dir()
    assert not (tmp / "var" / "etc").exists()


def test_nested_mount_points_across_disks_are_made_in_the_root(
        scratch: Callable[..., InLab]) -> None:
    multi01 = load_domain(MULTI01)
    tmp = scratch()
    stage_tree(tmp.runner, multi01.disk("xvda"), 1, (tmp / "root").path)
    stage_tree(tmp.runner, multi01.disk("xvdb"), 1, (tmp / "srv").path)
    assert (tmp / "root" / "srv").is_dir()
    assert not (tmp / "srv" / "etc").exists()
    assert (tmp / "root" / "etc" / "fstab").read_text() == render_fstab(multi01.disks[0])


def test_staging_is_deterministic(scratch: Callable[..., InLab]) -> None:
    db01 = load_recipe(DB01)
    tmp = scratch()
    stage_tree(tmp.runner, db01, 1, (tmp / "a").path)
    stage_tree(tmp.runner, db01, 1, (tmp / "b").path)
    first, second = _manifest(tmp / "a"), _manifest(tmp / "b")
    assert first == second
    assert len(first) > 300
    assert {m[8] for m in first.values()} == {db01.epoch * 10**9}


def test_mutate_changes_the_tree_as_it_reports(scratch: Callable[..., InLab]) -> None:
    db01 = load_recipe(DB01)
    tmp = scratch()
    root = tmp / "guest"
    stage_tree(tmp.runner, db01, 1, root.path)
    before = _manifest(root)
    summary = mutate(tmp.runner, root.path, seed=7)
    after = _manifest(root)

    renamed = [p for p in after if p.endswith("-renamed-7")]
    assert len(renamed) == 1 and summary.renamed_dirs == 1
    old_dir = renamed[0].removesuffix("-renamed-7")
    assert old_dir not in after and PurePosixPath(root.path, old_dir).parent != PurePosixPath(
        root.path)
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


def test_mutate_is_deterministic_for_a_seed(scratch: Callable[..., InLab]) -> None:
    db01 = load_recipe(DB01)
    tmp = scratch()
    manifests = []
    for name in ("a", "b"):
        stage_tree(tmp.runner, db01, 1, (tmp / name).path)
        first = mutate(tmp.runner, (tmp / name).path, seed=11)
        manifests.append(_manifest(tmp / name, dir_times=False))
    assert manifests[0] == manifests[1]
    stage_tree(tmp.runner, db01, 1, (tmp / "c").path)
    other = mutate(tmp.runner, (tmp / "c").path, seed=12)
    assert other == first
    assert _manifest(tmp / "c", dir_times=False) != manifests[0]


# --------------------------------------------------------------------------- gpt01 image


def test_gpt01_table_has_the_recipes_types_guids_and_names(built: Builder) -> None:
    (image,) = built(GPT01)
    table = _sfdisk(image)
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
    data = _read(image, bios.start, bios.size)
    assert data == random.Random("11:1:raw").randbytes(MIB)
    probe = image.runner.run(["blkid", "-p", "-O", str(bios.start), "-S", str(bios.size),
                              image.path], check=False)
    assert probe.exit_code == 2 and probe.stdout == ""  # nothing blkid knows


def test_gpt01_boot_area_holds_a_boot_loader_and_keeps_the_table(built: Builder) -> None:
    (image,) = built(GPT01)
    code, gap = _read(image, 0, 440), _read(image, 34 * 512, MIB - 34 * 512)
    assert code == random.Random("11:boot-code").randbytes(440)
    assert gap == random.Random("11:boot-gap").randbytes(MIB - 34 * 512)
    assert _read(image, 510, 2) == b"\x55\xaa"
    assert _read(image, 512, 8) == b"EFI PART"
    whole = _run(image.runner, ["blkid", "-p", "-o", "export", image.path])
    assert "PTTYPE=gpt" in whole.splitlines()


def test_gpt01_esp_is_fat32_with_its_volume_id_label_and_loader(built: Builder) -> None:
    (image,) = built(GPT01)
    esp = image.partitions[1]
    probe = _blkid(image, esp.start, esp.size)
    assert (probe["TYPE"], probe["VERSION"], probe["UUID"], probe["LABEL"]) == (
        "vfat", "FAT32", "5EED-0B01", "GPT01-ESP")
    assert _fat_file(image, esp.start, ESP_LOADER) == random.Random(
        f"11:2:{ESP_LOADER}").randbytes(40000)
    with _loop(image, esp.start, esp.size) as loop:
        check = image.runner.run(["fsck.fat", "-n", "-v", "-l", loop])
    assert f"Checking file /{ESP_LOADER}" in check.stdout.splitlines()


def test_gpt01_root_names_everything_and_holds_the_mount_points(built: Builder) -> None:
    (image,) = built(GPT01)
    root = image.partitions[2]
    assert _debugfs(image, root.start, "cat /etc/fstab") == render_fstab(load_recipe(GPT01))
    assert {"home", "boot"} <= set(_ls(image, root.start, "/"))
    assert _ls(image, root.start, "/boot") == ["efi"]
    home = image.partitions[3]
    assert _blkid(image, home.start, home.size)["LABEL"] == "gpt01-home"
    assert home.tree is not None and home.tree.files > 500


def test_gpt01_builds_are_byte_identical(built: Builder, scratch: Callable[..., InLab]) -> None:
    (first,) = built(GPT01)
    tmp = scratch(first.runner.host)
    (second,) = build_domain_images(tmp.runner, load_domain(GPT01), tmp.path,
                                    workdir=(tmp / "work").path)
    assert _sha256(_hosted(tmp.runner, second)) == _sha256(first)


def test_gpt01_standby_keeps_layout_ids_and_raw_bytes_with_empty_filesystems(
        built: Builder) -> None:
    (source,), (standby,) = built(GPT01), built(GPT01, standby=True)
    assert _sfdisk(standby) == _sfdisk(source)
    assert _read(standby, 0, 2 * MIB) == _read(source, 0, 2 * MIB)
    for src, sby in zip(source.partitions[1:], standby.partitions[1:], strict=True):
        assert _identity(standby, sby.start, sby.size) == _identity(source, src.start,
                                                                    src.size)
    esp = standby.partitions[1]
    with _loop(standby, esp.start, esp.size) as loop:
        listing = standby.runner.run(["fsck.fat", "-n", "-v", "-l", loop]).stdout
    assert "Checking file /EFI" not in listing and "1/129022 clusters" in listing
    for part in standby.partitions[2:]:
        assert _ls(standby, part.start, "/") == ["lost+found"]
    assert [p.content for p in standby.partitions] == ["pattern", "empty", "empty", "empty"]


def test_boot_area_on_a_dos_disk_fills_sectors_one_on(scratch: Callable[..., InLab]) -> None:
    recipe = _tiny("dos", [{"fs": "ext4", "uuid": "5eed0006-0000-4000-8000-000000000001",
                            "mount": "/", "content": "minimal"}],
                   disk_id="0x5eed0006", boot_area=True)
    tmp = scratch()
    image = _hosted(tmp.runner, build_disk_image(tmp.runner, recipe, (tmp / "b.img").path,
                                                 workdir=tmp.path))
    assert _read(image, 512, MIB - 512) == random.Random("5:boot-gap").randbytes(MIB - 512)
    assert _sfdisk(image)["id"] == "0x5eed0006"


# --------------------------------------------------------------------------- whole01, multi01


def test_whole01_filesystem_starts_at_byte_zero(built: Builder,
                                                scratch: Callable[..., InLab]) -> None:
    (image,) = built(WHOLE01)
    assert image.device == "xvda1"
    # build_domain_images names each disk's image NAME-DEVICE.img: seen on a build of the
    # (empty, quickly made) standby, the lab's own images being named after their LVs.
    tmp = scratch()
    (named,) = build_domain_images(tmp.runner, load_domain(WHOLE01), tmp.path,
                                   workdir=(tmp / "work").path, standby=True)
    assert named.path.endswith("/whole01-xvda1.img") and named.device == "xvda1"
    probe = _identity(image, 0, 128 * MIB)
    assert (probe["TYPE"], probe["UUID"], probe["LABEL"]) == (
        "ext4", "5eed0012-0000-4000-8000-000000000001", "whole01-root")
    assert "PTTYPE" not in probe
    assert "LABEL=whole01-root\t/\text4" in _debugfs(image, 0, "cat /etc/fstab")
    (standby,) = built(WHOLE01, standby=True)
    assert _identity(standby, 0, 128 * MIB) == probe
    assert _ls(standby, 0, "/") == ["lost+found"]


def test_multi01_builds_one_image_per_disk(built: Builder, scratch: Callable[..., InLab]) -> None:
    xvda, xvdb = built(MULTI01)
    # The file names build_domain_images gives: seen on a build of the (empty) standby disks.
    tmp = scratch()
    named = build_domain_images(tmp.runner, load_domain(MULTI01), tmp.path,
                                workdir=(tmp / "work").path, standby=True)
    assert [Path(i.path).name for i in named] == ["multi01-xvda.img", "multi01-xvdb.img"]
    assert [i.device for i in (xvda, xvdb)] == ["xvda", "xvdb"]
    assert (_sfdisk(xvda)["label"], _sfdisk(xvdb)["label"]) == ("dos", "gpt")
    assert xvda.fstab == render_fstab(load_recipe(MULTI01, "xvda")) and xvdb.fstab is None
    root, srv = xvda.partitions[0], xvdb.partitions[0]
    assert "/dev/xvdb1\t/srv\text4" in _debugfs(xvda, root.start, "cat /etc/fstab")
    assert _ls(xvda, root.start, "/srv") == []
    assert srv.device == "/dev/xvdb1"
    assert _blkid(xvdb, srv.start, srv.size)["UUID"] == "5eed0013-0000-4000-8000-000000000002"
    names = _ls(xvdb, srv.start, "/")
    assert "etc" not in names and {"data", "links"} <= set(names)
    # Each disk has its own seed, so the two trees differ.
    assert _debugfs(xvdb, srv.start, "ea_get /data/xattr.txt user.domubk").strip() == (
        'user.domubk (12) = "fixture-14:1"')


def test_multi01_standby_disks_keep_their_tables_and_ids(built: Builder) -> None:
    for src, sby in zip(built(MULTI01), built(MULTI01, standby=True), strict=True):
        assert _sfdisk(sby) == _sfdisk(src)
        part = sby.partitions[0]
        assert _blkid(sby, part.start, part.size)["UUID"] == src.partitions[0].uuid
        assert _ls(sby, part.start, "/") == ["lost+found"]


# --------------------------------------------------------------------------- ext01


def test_ext01_table_has_an_extended_partition_holding_five_to_seven(built: Builder) -> None:
    (image,) = built(EXT01)
    table = _sfdisk(image)
    assert [(p["start"], p["size"], p["type"]) for p in table["partitions"]] == [
        (2048, 262144, "83"), (264192, 391168, "5"), (266240, 131072, "83"),
        (399360, 131072, "83"), (532480, 122880, "82")]
    assert [p.device for p in image.partitions] == [
        "/dev/xvda1", "/dev/xvda5", "/dev/xvda6", "/dev/xvda7"]
    found = [_blkid(image, p.start, p.size) for p in image.partitions]
    assert [(f["TYPE"], f["LABEL"]) for f in found] == [
        ("ext4", "ext01-root"), ("ext4", "ext01-var"), ("ext4", "ext01-srv"),
        ("swap", "ext01-swap")]


def test_ext01_logical_filesystems_are_whole_and_the_root_holds_their_mount_points(
        built: Builder) -> None:
    (image,) = built(EXT01)
    root = image.partitions[0]
    assert {"var", "srv"} <= set(_ls(image, root.start, "/"))
    fstab = _debugfs(image, root.start, "cat /etc/fstab")
    assert "/dev/xvda5\t/var\text4\tdefaults\t0\t2" in fstab.splitlines()
    for part in image.partitions[:3]:
        result = image.runner.run(["e2fsck", "-f", "-n", f"{image.path}?offset={part.start}"],
                                  check=False)
        assert result.exit_code == 0, result.stdout + result.stderr
    (standby,) = built(EXT01, standby=True)
    assert _sfdisk(standby) == _sfdisk(image)
    assert [_blkid(standby, p.start, p.size)["UUID"] for p in standby.partitions] == [
        p.uuid for p in image.partitions]


# --------------------------------------------------------------------------- xfs01


def test_xfs01_data_filesystem_has_its_uuid_label_and_a_clean_log(built: Builder) -> None:
    (image,) = built(XFS01)
    data = image.partitions[1]
    assert (data.start, data.size, data.fs) == (129 * MIB, 383 * MIB, "xfs")
    probe = _blkid(image, data.start, data.size)
    assert (probe["TYPE"], probe["UUID"], probe["LABEL"]) == (
        "xfs", "5eed0015-0000-4000-8000-000000000002", "xfs01-data")
    with _loop(image, data.start, data.size) as loop:
        sb = _run(image.runner, ["xfs_db", "-r", "-c", "sb 0", "-c", "p uuid", loop])
        log = _run(image.runner, ["xfs_logprint", "-t", loop])
    assert sb.strip() == "uuid = 5eed0015-0000-4000-8000-000000000002"
    assert "state: <CLEAN>" in log


def test_xfs01_content_is_the_staged_tree_with_links_acls_xattrs_caps_and_holes(
        built: Builder, scratch: Callable[..., InLab]) -> None:
    (image,) = built(XFS01)
    data = image.partitions[1]
    tmp = scratch(image.runner.host)
    staged = tmp / "staged"
    stage_tree(tmp.runner, load_recipe(XFS01), 2, staged.path)
    tmp.runner.run(["setcap", "cap_net_raw+ep", (staged / "usr/bin/netprobe").path])
    with _mounted(image, data.start, data.size, "xfs", "ro,norecovery,nouuid",
                  tmp / "mnt") as mnt:
        got = _fidelity(mnt)
        sparse = (mnt / "data/sparse.img").stat()
        caps = bytes.fromhex(_probe(mnt.runner, {"op": "getxattr", "name": "security.capability",
                                                 "path": (mnt / "usr/bin/netprobe").path}))
        hard = {(mnt / p).stat().st_ino for p in ("links/hard-1", "links/hard-2", "data/hard-3")}
    assert got == _fidelity(staged)
    assert len(got) > 500 and data.tree is not None and data.tree.files > 500
    assert sparse.st_size == 4 * MIB and sparse.st_blocks * 512 <= 64 * 1024
    assert struct.unpack("<III", caps[:12])[1] == 1 << CAP_NET_RAW
    assert len(hard) == 1
    assert got["data/acl.txt"][7][0][0] == "system.posix_acl_access"


def test_xfs01_root_holds_the_nested_mount_point(built: Builder) -> None:
    (image,) = built(XFS01)
    root = image.partitions[0]
    assert _ls(image, root.start, "/var/lib") == ["data"]
    assert "LABEL=xfs01-data\t/var/lib/data\txfs" in _debugfs(image, root.start,
                                                               "cat /etc/fstab")


def test_xfs01_standby_xfs_is_empty_with_the_same_identity(
        built: Builder, scratch: Callable[..., InLab]) -> None:
    (source,), (standby,) = built(XFS01), built(XFS01, standby=True)
    assert _sfdisk(standby) == _sfdisk(source)
    data = standby.partitions[1]
    assert _identity(standby, data.start, data.size) == _identity(
        source, data.start, data.size)
    with _mounted(standby, data.start, data.size, "xfs", "ro,norecovery,nouuid",
                  scratch(standby.runner.host) / "mnt") as mnt:
        assert mnt.names() == []


def test_builds_leave_no_loop_device_attached(built: Builder) -> None:
    images = [*built(XFS01), *built(DIRTY01), *built(LVM01), *built(LVM01, standby=True)]
    # The lab builds every image with WORKDIR as its work directory, on dom0-a and dom0-b.
    assert {i.runner.host for i in images} == set(DOM0S)
    for runner in {i.runner.host: i.runner for i in images}.values():
        attached = _run(runner, ["losetup", "--list", "--noheadings", "--output", "BACK-FILE"])
        assert not [ln for ln in attached.splitlines() if WORKDIR in ln]
        assert InLab(runner, WORKDIR).names() == []


# --------------------------------------------------------------------------- dirty01


def test_dirty01_ext4_needs_recovery_and_mounts_with_noload(
        built: Builder, scratch: Callable[..., InLab]) -> None:
    (image,) = built(DIRTY01)
    r = image.runner
    tmp = scratch(r.host)
    root = image.partitions[0]
    assert root.dirty and root.tree is not None
    region = _extract(image, root.start, root.size, tmp / "root.fs")
    header = _run(r, ["dumpe2fs", "-h", region.path])
    features = next(ln for ln in header.splitlines() if ln.startswith("Filesystem features:"))
    assert "needs_recovery" in features.split()
    dump = tmp / "page.bin"
    _run(r, ["debugfs", "-R", f"dump /data/sizes/page.bin {dump.path}", region.path])
    on_disk = dump.read_bytes()
    before = _sha256(image)
    with _mounted(image, root.start, root.size, "ext4", "ro,noload", tmp / "mnt") as mnt:
        seen = (mnt / "data/sizes/page.bin").read_bytes()
        assert (mnt / "etc/fstab").read_text() == image.fstab
    assert _sha256(image) == before
    # Replaying the journal (here on a copy) changes the file: the transaction is real.
    r.run(["e2fsck", "-f", "-y", region.path], ok_codes=(0, 1))
    r.run(["rm", "--", dump.path])
    _run(r, ["debugfs", "-R", f"dump /data/sizes/page.bin {dump.path}", region.path])
    assert seen == on_disk and len(on_disk) == 4096
    assert dump.read_bytes() != on_disk
    assert "needs_recovery" not in _run(r, ["dumpe2fs", "-h", region.path])


def test_dirty01_xfs_log_is_dirty_and_mounts_with_norecovery(
        built: Builder, scratch: Callable[..., InLab]) -> None:
    (image,) = built(DIRTY01)
    tmp = scratch(image.runner.host)
    srv = image.partitions[1]
    assert srv.dirty
    with _loop(image, srv.start, srv.size) as loop:
        assert "state: <DIRTY>" in _run(image.runner, ["xfs_logprint", "-t", loop])
    before = _sha256(image)
    with _mounted(image, srv.start, srv.size, "xfs", "ro,norecovery,nouuid",
                  tmp / "ro") as mnt:
        names = mnt.names()
        assert (mnt / "links/hard-1").stat().st_nlink == 3
    assert _sha256(image) == before
    assert "log-pending" not in names and {"data", "links", "special"} <= set(names)
    # Log recovery (a read-write mount of a copy) brings the logged change in place.
    copy_path = _extract(image, srv.start, srv.size, tmp / "srv.fs")
    with _mounted(copy_path, 0, srv.size, "xfs", "nouuid", tmp / "rw", writable=True) as mnt:
        assert (mnt / "log-pending").is_dir()


def test_dirty01_standby_filesystems_are_clean_and_empty(built: Builder) -> None:
    (standby,) = built(DIRTY01, standby=True)
    root, srv = standby.partitions
    assert not root.dirty and not srv.dirty
    features = _run(standby.runner,
                    ["debugfs", "-R", "features", f"{standby.path}?offset={root.start}"])
    assert "has_journal" in features and "needs_recovery" not in features
    with _loop(standby, srv.start, srv.size) as loop:
        assert "state: <CLEAN>" in _run(standby.runner, ["xfs_logprint", "-t", loop])


# --------------------------------------------------------------------------- lvm01


def test_lvm01_pv_carries_the_guest_vg_with_fixed_uuids(built: Builder,
                                                        scratch: Callable[..., InLab]) -> None:
    (image,) = built(LVM01)
    tmp = scratch(image.runner.host)
    pv = image.partitions[1]
    assert _sfdisk(image)["partitions"][1]["type"] == "8e"
    probe = _blkid(image, pv.start, pv.size)
    assert (probe["TYPE"], probe["UUID"]) == ("LVM2_member",
                                              "5eed17-0000-0000-0000-0000-0000-0000p2")
    assert _lvm(image, pv.start, pv.size, tmp, "pvs", "-o",
                "pv_name,pv_uuid,pe_start,vg_name") == [
        {"pv_name": "PV", "pv_uuid": "5eed17-0000-0000-0000-0000-0000-0000p2",
         "pe_start": str(MIB), "vg_name": "vg_a"}]
    assert _lvm(image, pv.start, pv.size, tmp, "vgs", "-o",
                "vg_name,vg_uuid,vg_extent_size,vg_extent_count,lv_count") == [
        {"vg_name": "vg_a", "vg_uuid": "5eed17-0000-0000-0000-0000-0000-0000vg",
         "vg_extent_size": str(4 * MIB), "vg_extent_count": "63", "lv_count": "2"}]
    assert _lvm(image, pv.start, pv.size, tmp, "lvs", "-o",
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
    found = [_blkid(image, v.start, v.size) for v in image.volumes]
    assert [(f["TYPE"], f["UUID"], f["LABEL"]) for f in found] == [
        ("ext4", "5eed0017-0000-4000-8000-000000000002", "lvm01-root"),
        ("ext4", "5eed0017-0000-4000-8000-000000000003", "lvm01-var")]
    root = image.volumes[0]
    assert root.device == "/dev/vg_a/root" and root.mount == "/"
    fstab = _debugfs(image, root.start, "cat /etc/fstab")
    assert fstab == render_fstab(load_recipe(LVM01)) == image.fstab
    assert {"boot", "var"} <= set(_ls(image, root.start, "/"))
    assert _ls(image, root.start, "/var") == []
    for vol in image.volumes:
        result = image.runner.run(["e2fsck", "-f", "-n", f"{image.path}?offset={vol.start}"],
                                  check=False)
        assert result.exit_code == 0, result.stdout + result.stderr


def test_lvm01_standby_has_the_same_vg_and_empty_volumes(built: Builder,
                                                         scratch: Callable[..., InLab]) -> None:
    (source,), (standby,) = built(LVM01), built(LVM01, standby=True)
    pv = standby.partitions[1]
    src_tmp, sby_tmp = scratch(source.runner.host), scratch(standby.runner.host)
    for cmd, fields in (("pvs", "pv_uuid,pe_start,vg_name,vg_uuid"),
                        ("lvs", "lv_name,lv_uuid,seg_pe_ranges")):
        assert _lvm(standby, pv.start, pv.size, sby_tmp, cmd, "-o", fields) == _lvm(
            source, pv.start, pv.size, src_tmp, cmd, "-o", fields)
    for src, sby in zip(source.volumes, standby.volumes, strict=True):
        assert _identity(standby, sby.start, sby.size) == _identity(source, src.start,
                                                                    src.size)
        assert _ls(standby, sby.start, "/") == ["lost+found"]
        assert sby.content == "empty" and sby.tree is None


def test_guest_lvm_never_touches_the_hosts_lvm_files(scratch: Callable[..., InLab]) -> None:
    # On both fake Dom0s: dom0-a's own VG is named vg_a like lvm01's guest VG, dom0-b's is not.
    watched = ["/etc/lvm/backup", "/etc/lvm/archive", "/run/lvm"]
    recipe = load_recipe(LVM01)
    for container in DOM0S:
        tmp = scratch(container)

        def listing(tmp: InLab = tmp) -> dict[str, list[int]]:
            return _probe(tmp.runner, {"op": "listing", "dirs": watched})

        before = listing()
        build_disk_image(tmp.runner, recipe, (tmp / "l.img").path, workdir=(tmp / "w").path,
                         standby=True)
        assert listing() == before, container
        if container == "dom0-b":
            assert not InLab(tmp.runner, "/etc/lvm/backup/vg_a").exists()
