"""``verify``: which LVs it reads (``sources``), the throwaway device it reads them through
(``device_step``), the boot area, the filesystem checks, a whole run on a fake peer (every
resource journalled first and undone newest first, whatever fails), the text it prints and
the command through the command line.

The peer is ``Peer``: a ``fakes.FakeHost`` (LVs, maps, directories and mounts, changed by the
commands that change them) that also answers ``sfdisk``, ``blkid``, the superblock ``dd``,
the boot code read and the read-only checkers for the disk layouts a test gives it; a
guest's files appear below a mount point only while its device is mounted there.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fakes import BASE_DEVICES, CONFIG_TEXT, RECORDED, FakeHost

from toolkit import app, errors, signals
from toolkit import restore_points as rp
from toolkit.config import parse_config
from toolkit.facts.blkid import FilesystemProbe
from toolkit.facts.guestlvm import GuestVolume, Segment
from toolkit.facts.lvm import LogicalVolume, dm_name, lvs_argv, parse_lvs
from toolkit.facts.partitions import Partition, PartitionTable
from toolkit.facts.records import FsFacts
from toolkit.journal import journal_path, unwrap_journalled
from toolkit.marker import marker_path
from toolkit.plan_records import PEER
from toolkit.plan_steps import mapped_partition
from toolkit.runners import CommandResult
from toolkit.verify import (
    FsResult,
    Source,
    Verifier,
    VerifyReport,
    boot_code,
    device_step,
    render_verify,
    sources,
    verify,
)

RUN = "20260102T030405Z-beef"  # the verify's own run id
OLD = "20251230T020000Z-0a0a"  # restore point runs, oldest to newest
MID = "20251231T020000Z-1b1b"
NEW = "20260101T020000Z-2c2c"
GIB = 1 << 30
ROOT = f"/run/domu-backup/dst/web01.{RUN}"  # the verify's directory under the peer prefix
STANDBY = "/dev/vg_b/web01"
SNAP_NAME = f"domubk-vf-{RUN}-web01-xvda"
SNAP = f"/dev/vg_b/{SNAP_NAME}"


# -- filesystems and disks the fake peer holds -------------------------------------------------

@dataclass(frozen=True)
class Fs:
    """A filesystem as blkid reports it; ``head``: the recorded superblock it starts with."""

    fstype: str
    uuid: str
    label: str = ""
    head: str | None = None


EXT4 = Fs("ext4", "01d00e04-0000-4000-8000-000000000003", "data", "ext4-new")
EXT2 = Fs("ext2", "01d00e02-0000-4000-8000-000000000004", "boot", "ext2-boot")
XFS = Fs("xfs", "01d00f50-0000-4000-8000-000000000006", "srv", "xfs-new")
VFAT = Fs("vfat", "1234-ABCD", "EFI", "vfat16")
SWAP = Fs("swap", "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d", "swap0")
BTRFS = Fs("btrfs", "0b7f0000-0000-4000-8000-0000000000b7", "pool")

PART_SECTORS = 32768  # 16 MiB partitions, the first at sector 2048, one after another


@dataclass(frozen=True)
class Disk:
    """A guest disk: partitions (number -> filesystem or None) in a dos table, or one
    whole-disk filesystem (``whole``)."""

    parts: tuple[tuple[int, Fs | None], ...] = ()
    whole: Fs | None = None
    disk_id: str = "0x1234abcd"
    extended: int | None = None  # the number of an extended partition (a container)

    def start(self, number: int) -> int:
        return 2048 + [n for n, _ in self.parts].index(number) * PART_SECTORS

    def at(self, offset: int | None) -> Fs | None:
        if self.whole is not None:
            return self.whole if not offset else None
        for number, fs in self.parts:
            if offset == self.start(number) * 512:
                return fs
        return None

    def sfdisk(self, device: str) -> tuple[int, str, str]:
        if self.whole is not None:
            return 1, "", f"sfdisk: {device}: does not contain a recognized partition table\n"
        parts = [{"node": f"{device}{n}", "start": self.start(n), "size": PART_SECTORS,
                  "type": "5" if n == self.extended else "83"} for n, _ in self.parts]
        return 0, json.dumps({"partitiontable": {
            "label": "dos", "id": self.disk_id, "device": device, "unit": "sectors",
            "sectorsize": 512, "partitions": parts}}, indent=3), ""


WEB01 = Disk(((1, EXT4), (2, SWAP), (3, XFS)))
FSTAB = f"""# /etc/fstab of web01
UUID={EXT4.uuid}\t/\text4\tdefaults\t0 1
UUID={XFS.uuid}\t/srv\txfs\tdefaults\t0 2
UUID={SWAP.uuid}\tnone\tswap\tsw\t0 0
proc /proc proc defaults 0 0
"""
GRUB_CODE = bytes([0xEB, 0x63, 0x90]) + bytes(0x180 - 3) + b"GRUB \x00Geom\x00Hard Disk"
GRUB_CODE += bytes(440 - len(GRUB_CODE))
OTHER_CODE = bytes([0xFA, 0x31, 0xC0]) + b"SYSLINUX" + bytes(440 - 11)
CHECKERS = ("e2fsck", "xfs_repair", "fsck.fat")


def od(data: bytes) -> str:
    """What ``od -An -v -tx1`` prints: 16 bytes a line, each as two hex digits."""
    return "".join(" " + " ".join(f"{b:02x}" for b in data[i:i + 16]) + "\n"
                   for i in range(0, len(data), 16))


def part_dev(device: str, number: int) -> str:
    """The read-only kpartx map of partition ``number`` of ``device`` (delimiter "p")."""
    return mapped_partition(dm_name(*device.removeprefix("/dev/").split("/", 1)), "p", number)


def lv_row(vg: str, name: str, *, attr: str = "-wi-a-----", pool: str = "", origin: str = "",
           tags: tuple[str, ...] = (), percent: str = "") -> dict:
    """One LV as ``lvs_argv``'s JSON report gives it."""
    return {"vg_name": vg, "lv_name": name, "lv_path": f"/dev/{vg}/{name}",
            "lv_dm_path": f"/dev/mapper/{dm_name(vg, name)}", "lv_size": str(GIB),
            "lv_attr": attr, "origin": origin, "pool_lv": pool, "snap_percent": percent,
            "lv_tags": ",".join(tags), "lv_snapshot_invalid": "0"}


def point_row(run: str, disk: str = "xvda", domain: str = "web01", *, thin: bool = False,
              tags: tuple[str, ...] | None = None) -> dict:
    """One restore point LV (classic unless ``thin``), tagged as a point of ``run``."""
    name = rp.point_lv_name(run, domain, disk)
    tags = rp.point_tags(run) if tags is None else tags
    if thin:
        return lv_row("vg_b", name, attr="Vri-a-tz-k", pool="pool0", origin=domain, tags=tags)
    return lv_row("vg_b", name, attr="sri-a-s---", origin=domain, tags=tags, percent="1.00")


def the_lv(row: dict) -> LogicalVolume:
    return parse_lvs(json.dumps({"report": [{"lv": [row]}]}))[0]


class Peer(FakeHost):
    """The fake peer, answering what verify reads as well as what it makes."""

    def __init__(self, *, rows=(), devices=BASE_DEVICES, fail=None) -> None:
        super().__init__("dom0-b", fail=fail, devices=devices)
        self.rows: list[dict] = list(rows)  # what lvs reports
        self.disks: dict[str, Disk] = {}  # device path -> the layout read through it
        self.boot: dict[str, bytes] = {}  # device path -> its first 440 bytes
        self.checks: dict[str, tuple[int, str]] = {}  # device -> checker's (exit, stderr)
        self.guest: dict[str, dict[str, str]] = {}  # device -> {guest path: text}
        self.guest_links: dict[str, dict[str, str]] = {}  # device -> {guest path: target}
        self.journalled: list[tuple[dict, tuple[str, ...]]] = []  # (entry, argv) in order
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def run(self, argv, **kw):
        wrapped = unwrap_journalled(tuple(argv))
        if wrapped is not None:
            self.journalled.append((json.loads(kw["input"]), tuple(wrapped[1])))
        return super().run(argv, **kw)

    def _answer(self, a, input):
        if a[:2] == ("sh", "-c") and "od -An -v -tx1" in a[2]:
            device = a[-1]
            if self.resolve(device) is None:
                return 1, "", f"dd: failed to open '{device}': No such file or directory\n"
            return 0, od(self.boot.get(device, bytes(440))), ""
        if a[0] in CHECKERS:
            device = a[-1]
            if self.resolve(device) is None:
                return 8, "", f"{a[0]}: No such file or directory while trying to open {device}\n"
            code, err = self.checks.get(device, (0, ""))
            return code, "", err
        return super()._answer(a, input)

    def _cmd_lvs(self, a, input):
        if "--reportformat" not in a:
            return super()._cmd_lvs(a, input)
        rows = []
        for name in a[a.index("--") + 1:]:
            if name.startswith("@"):
                rows += [r for r in self.rows if name[1:] in r["lv_tags"].split(",")]
                continue
            hit = [r for r in self.rows if name in (r["lv_path"], f"{r['vg_name']}/"
                                                                   f"{r['lv_name']}")]
            if not hit:
                return 5, "", f'  Failed to find logical volume "{name.removeprefix("/dev/")}"\n'
            rows += hit
        return 0, json.dumps({"report": [{"lv": rows}]}), ""

    def _layout(self, device: str) -> Disk | None:
        return self.disks.get(device) if self.resolve(device) is not None else None

    def _cmd_sfdisk(self, a, input):
        disk = self._layout(a[-1])
        if disk is None:
            return 1, "", f"sfdisk: cannot open {a[-1]}: No such file or directory\n"
        return disk.sfdisk(a[-1])

    def _cmd_blkid(self, a, input):
        disk = self._layout(a[-1])
        if disk is None:
            return 2, "", ""
        fs = disk.at(int(a[a.index("-O") + 1]) if "-O" in a else None)
        if fs is None:
            return 2, "", ""  # nothing found
        label = f"LABEL={fs.label}\n" if fs.label else ""
        return 0, (f"DEVNAME={a[-1]}\n{label}UUID={fs.uuid}\nTYPE={fs.fstype}\n"
                   "USAGE=filesystem\n"), ""

    def _cmd_dd(self, a, input):
        if len(a) > 1 and a[1].startswith("if=") and "count=4" in a:  # a superblock read
            disk = self._layout(a[1].removeprefix("if="))
            skip = int(next(x for x in a if x.startswith("skip=")).removeprefix("skip="))
            fs = disk.at(skip * 512) if disk is not None else None
            if fs is None or fs.head is None:
                return 1, "", f"dd: {a[1]}: nothing recorded there\n"
            head = (RECORDED / "fsparams" / f"{fs.head}.head.bin").read_bytes()
            return 0, head.decode("utf-8", "surrogateescape"), ""
        return super()._cmd_dd(a, input)

    def _cmd_kpartx(self, a, input):
        disk = self.disks.get(a[-1])
        self.partition_numbers = tuple(n for n, _ in disk.parts) if disk else ()
        return super()._cmd_kpartx(a, input)

    def _cmd_mount(self, a, input):
        code, out, err = super()._cmd_mount(a, input)
        if code == 0:
            device, mnt = a[-2], a[-1]
            for rel, text in self.guest.get(device, {}).items():
                self.files[f"{mnt}/{rel}"] = text
            for rel, target in self.guest_links.get(device, {}).items():
                self.symlinks[f"{mnt}/{rel}"] = target
        return code, out, err

    def _cmd_umount(self, a, input):
        code, out, err = super()._cmd_umount(a, input)
        if code == 0:
            below = a[-1] + "/"
            for table in (self.files, self.symlinks):
                for path in [p for p in table if p.startswith(below)]:
                    del table[path]
        return code, out, err

    # what a test asks of the calls
    def runs(self, head: str) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] == head]


def boot_reads(peer: Peer) -> list[tuple[str, ...]]:
    return [c for c in peer.calls if c[:2] == ("sh", "-c") and "od -An" in c[2]]


def makes(argv: tuple[str, ...]) -> bool:
    """A command that makes a resource (which must be journalled first)."""
    return (argv[0] in ("lvcreate", "mkdir", "mount") or argv[:2] == ("kpartx", "-a")
            or argv[:2] == ("dmsetup", "create"))


def config(tmp_path: Path, extra: str = ""):
    text = CONFIG_TEXT.format(state=tmp_path / "state", lock=tmp_path / "lock")
    return parse_config(text.replace('[domains.web01]\n', f'[domains.web01]\n{extra}'),
                        tmp_path / "backup.toml")


def web01_peer(cfg, *, disk: Disk = WEB01, standby: dict[str, str] | None = None,
               state: str = "clean", fail=None, grub: bool = True) -> Peer:
    """A peer holding web01's clean standby (``disk`` on xvda), its fstab and GRUB on xvda1,
    read through the verify's snapshot."""
    standby = {"xvda": STANDBY} if standby is None else standby
    devices = tuple(dict.fromkeys((*BASE_DEVICES, *standby.values())))
    peer = Peer(rows=[lv_row(*p.removeprefix("/dev/").split("/")) for p in standby.values()],
                devices=devices, fail=fail)
    peer.files[marker_path(cfg, "web01")] = json.dumps(
        {"domain": "web01", "state": state, "standby": standby})
    peer.disks[SNAP] = disk
    peer.boot[SNAP] = GRUB_CODE
    peer.guest[part_dev(SNAP, 1)] = {"etc/fstab": FSTAB, "etc/hostname": "web01\n",
                                     **({"boot/grub/grub.cfg": "menuentry\n"} if grub else {})}
    return peer


def undos_run(peer: Peer) -> list[tuple[str, ...]]:
    """The undo commands of journalled resources, in the order the peer ran them."""
    undos = {tuple(entry["undo"]) for entry, _argv in peer.journalled}
    return [c for c in peer.calls if c in undos]


def assert_journalled_then_undone(peer: Peer, cfg) -> None:
    """Each resource's entry written in the same command, just before it was made; every
    one undone after the last was made, newest first; nothing left; the journal removed."""
    made = [i for i, c in enumerate(peer.calls) if makes(c)]
    assert made, "nothing was made"
    for i in made:
        wrapped = unwrap_journalled(peer.calls[i - 1])
        assert wrapped is not None and tuple(wrapped[1]) == peer.calls[i], peer.calls[i]
    assert [argv for _e, argv in peer.journalled] == [peer.calls[i] for i in made]
    expected = [tuple(e["undo"]) for e, _argv in reversed(peer.journalled)]
    assert undos_run(peer) == expected
    first_undo = peer.calls.index(expected[0])
    assert first_undo > made[-1]
    assert peer.leftovers() == []
    path = journal_path(cfg.defaults.state_dir, "web01", RUN)
    assert path not in peer.files and peer.calls[-1] == ("rm", "-f", path)


# -- sources: the standby's LVs, from its marker -----------------------------------------------

def test_the_standby_is_each_disk_the_clean_marker_names_sorted_by_disk(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, standby={"xvdb": "/dev/vg_b/web01-b", "xvda": STANDBY})
    srcs = sources(peer, cfg, "web01", None)
    assert [(s.disk, s.lv.path, s.point) for s in srcs] == [
        ("xvda", STANDBY, False), ("xvdb", "/dev/vg_b/web01-b", False)]
    assert ("cat", "--", marker_path(cfg, "web01")) in peer.calls
    assert lvs_argv(STANDBY) in [list(c) for c in peer.calls]


def test_a_dirty_standby_is_unsound_exit_46_and_no_lv_is_looked_up(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, state="dirty")
    with pytest.raises(errors.StandbyUnsound) as caught:
        sources(peer, cfg, "web01", None)
    assert caught.value.exit_code == 46
    text = str(caught.value)
    assert "dirty" in text and "--at" in text and "web01" in text and "dom0-b" in text
    assert peer.runs("lvs") == []


@pytest.mark.parametrize("marker", [
    {"state": "clean"},
    {"state": "clean", "standby": {}},
    {"state": "clean", "standby": [STANDBY]},
    {"state": "clean", "standby": STANDBY},
])
def test_a_clean_marker_naming_no_standby_lvs_is_unsound(tmp_path, marker):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    peer.files[marker_path(cfg, "web01")] = json.dumps(marker)
    with pytest.raises(errors.StandbyUnsound, match="names no standby LVs"):
        sources(peer, cfg, "web01", None)


@pytest.mark.parametrize("standby", [
    {"xvda": STANDBY, "../etc": "/dev/vg_b/web01-b"},
    {"xvda": STANDBY, "xvdb": None},
    {"xvda": STANDBY, "xvdb": ["/dev/vg_b/web01-b"]},
    {"xvda": STANDBY, "xvdb": "vg_b/web01-b"},
    {"xvda": STANDBY, "xvdb": "/etc/shadow"},
    {"xvda": STANDBY, "xvdb": "/dev/vg_b/../../etc/shadow"},
    {"xvda": STANDBY, "xvdb": "/dev/vg_b/web01-b/"},
    {"xvda": STANDBY, "xvdb": "/dev/vg_b/web01-b\n/dev/vg_b/x"},
])
def test_a_marker_naming_a_standby_that_is_no_disk_and_dev_path_is_unsound(tmp_path, standby):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    peer.files[marker_path(cfg, "web01")] = json.dumps({"state": "clean", "standby": standby})
    with pytest.raises(errors.StandbyUnsound, match="no disk target and /dev path"):
        sources(peer, cfg, "web01", None)
    assert all(c[-1] in (STANDBY, marker_path(cfg, "web01")) for c in peer.calls)


def test_a_standby_lv_lvs_says_is_missing_is_unsound_naming_it_and_its_disk(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, standby={"xvda": STANDBY, "xvdb": "/dev/vg_b/web01-b"})
    peer.rows = [r for r in peer.rows if r["lv_name"] != "web01-b"]
    with pytest.raises(errors.StandbyUnsound) as caught:
        sources(peer, cfg, "web01", None)
    assert "/dev/vg_b/web01-b" in str(caught.value) and "xvdb" in str(caught.value)
    assert "not there" in str(caught.value)


def test_a_standby_lvs_cannot_read_is_an_error_not_a_missing_lv(tmp_path):
    cfg = config(tmp_path)

    def broken(argv):
        if argv[0] == "lvs":
            return CommandResult("dom0-b", tuple(argv), 5, "", "  /dev/sdz: read failed\n", 0.0)
        return None

    peer = web01_peer(cfg, fail=broken)
    with pytest.raises(errors.CommandFailed):
        sources(peer, cfg, "web01", None)


def test_an_unreadable_marker_is_status_unknown(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    del peer.files[marker_path(cfg, "web01")]
    with pytest.raises(errors.StatusUnknown):
        sources(peer, cfg, "web01", None)


# -- sources: a restore point's LVs -----------------------------------------------------------

def points_peer() -> Peer:
    """web01's points of OLD (xvda) and MID (xvdb before xvda), among LVs verify must not
    take: other domains' points of MID, an untagged LV named like a point of MID, one tagged
    as another run's, and the standby."""
    return Peer(rows=[
        lv_row("vg_b", "web01"),
        point_row(OLD),
        point_row(MID, "xvdb"),
        point_row(MID, domain="web01.prod"),
        point_row(MID, domain="web01-old"),
        point_row(MID, "xvdc", tags=()),
        point_row(MID),
        point_row(NEW, domain="web01-old"),
        point_row(NEW, domain="web01.prod", tags=("other",)),
    ])


def test_at_a_run_gives_only_that_runs_tagged_points_of_the_domain_sorted_by_disk(tmp_path):
    peer = points_peer()
    srcs = sources(peer, config(tmp_path), "web01", MID)
    assert [(s.disk, s.lv.name, s.point) for s in srcs] == [
        ("xvda", rp.point_lv_name(MID, "web01", "xvda"), True),
        ("xvdb", rp.point_lv_name(MID, "web01", "xvdb"), True)]
    assert [list(c) for c in peer.calls] == [lvs_argv("@domubk_rp")]  # no marker read


def test_at_a_run_an_lv_without_the_point_tag_is_not_taken_even_if_lvs_lists_it(tmp_path):
    untagged = point_row(MID, "xvdb", tags=("domubk_rp_" + MID,))
    runner = Answers(json.dumps({"report": [{"lv": [point_row(MID), untagged]}]}))
    srcs = sources(runner, config(tmp_path), "web01", MID)
    assert [s.disk for s in srcs] == ["xvda"]
    assert runner.calls == [tuple(lvs_argv("@domubk_rp"))]


@pytest.mark.parametrize("run", [NEW, "20200101T000000Z-dead"])
def test_at_a_run_without_a_point_of_the_domain_is_a_usage_error_listing_its_runs(tmp_path,
                                                                                 run):
    with pytest.raises(errors.UsageError) as caught:
        sources(points_peer(), config(tmp_path), "web01", run)
    text = str(caught.value)
    assert caught.value.exit_code == 4
    assert f"--at {run}" in text and "web01" in text
    assert text.endswith(f"(its points: {MID}, {OLD})")


def test_at_a_run_of_a_domain_with_no_points_says_none(tmp_path):
    peer = Peer(rows=[point_row(MID, domain="web01.prod")])
    with pytest.raises(errors.UsageError, match=r"\(its points: none\)"):
        sources(peer, config(tmp_path), "web01", MID)


# -- device_step: the throwaway read-only device ----------------------------------------------

def test_a_thick_standby_is_read_through_a_classic_read_only_snapshot(tmp_path):
    cfg = config(tmp_path)
    step = device_step(Source("xvda", the_lv(lv_row("vg_b", "web01")), False), cfg, "web01",
                       RUN)
    assert step is not None and step.role == PEER and step.action == "snapshot"
    assert step.argv == ("lvcreate", "--snapshot", "--permission", "r", "--name", SNAP_NAME,
                         "--addtag", "domubk", "-L", "64M", "vg_b/web01")
    assert step.undo == ("lvremove", "--force", "--yes", f"vg_b/{SNAP_NAME}")
    assert step.exists == ("lvs", "--noheadings", "-o", "lv_name", f"vg_b/{SNAP_NAME}")
    assert step.resource == SNAP


def test_the_snapshot_takes_the_domains_own_snapshot_size(tmp_path):
    cfg = config(tmp_path, 'snapshot_size = "20%ORIGIN"\n')
    step = device_step(Source("xvdb", the_lv(lv_row("vg-x", "web01-b")), False), cfg,
                       "web01", RUN)
    name = f"domubk-vf-{RUN}-web01-xvdb"
    assert step is not None
    assert step.argv[-3:] == ("-l", "20%ORIGIN", "vg-x/web01-b") and "-L" not in step.argv
    assert step.undo == ("lvremove", "--force", "--yes", f"vg-x/{name}")
    assert step.resource == f"/dev/vg-x/{name}"


@pytest.mark.parametrize("row,point", [
    (lv_row("vg_b", "web01", attr="Vwi-a-tz--", pool="pool0"), False),
    (point_row(MID, thin=True), True),
])
def test_a_thin_standby_or_point_is_read_through_a_thin_snapshot_with_no_size(tmp_path, row,
                                                                              point):
    lv = the_lv(row)
    step = device_step(Source("xvda", lv, point), config(tmp_path), "web01", RUN)
    assert step is not None
    assert step.argv == ("lvcreate", "--snapshot", "--permission", "r", "--setactivationskip",
                         "n", "--name", SNAP_NAME, "--addtag", "domubk", lv.full_name)
    assert step.undo == ("lvremove", "--force", "--yes", f"vg_b/{SNAP_NAME}")
    assert step.resource == SNAP


def test_a_classic_point_is_read_as_it_is(tmp_path):
    assert device_step(Source("xvda", the_lv(point_row(MID)), True), config(tmp_path),
                       "web01", RUN) is None


# -- boot_code --------------------------------------------------------------------------------

class Answers:
    """A runner answering every command with one stdout, keeping the argv."""

    host = "dom0-b"

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.calls: list[tuple[str, ...]] = []

    def run(self, argv, **kw):
        self.calls.append(tuple(argv))
        return CommandResult(self.host, tuple(argv), 0, self.stdout, "", 0.0)


def test_boot_code_reads_440_bytes_with_the_device_as_an_argument_not_in_the_script():
    runner = Answers(od(GRUB_CODE))
    device = "/dev/vg_b/odd $(name)"
    assert boot_code(runner, device) == GRUB_CODE
    (argv,) = runner.calls
    assert argv[:2] == ("sh", "-c") and argv[-1] == device and device not in argv[2]
    assert "bs=440 count=1" in argv[2] and "od -An -v -tx1" in argv[2]


@pytest.mark.parametrize("stdout,expected", [
    (" eb 63 90 00\n 47 52 55 42\n", bytes([0xEB, 0x63, 0x90, 0, 0x47, 0x52, 0x55, 0x42])),
    ("  ff\n\n 0a  0b \n", bytes([0xFF, 0x0A, 0x0B])),
    ("", b""),
])
def test_boot_code_parses_od_hex_bytes_over_any_lines_and_spaces(stdout, expected):
    assert boot_code(Answers(stdout), "/dev/vg_b/x") == expected


# -- the boot area: check_boot ----------------------------------------------------------------

def verifier(tmp_path, peer, extra: str = "") -> tuple[Verifier, VerifyReport, list[str]]:
    logs: list[str] = []
    report = VerifyReport("web01", "dom0-b", "standby", RUN)
    return Verifier(config(tmp_path, extra), "web01", RUN, peer, report, logs.append), report, logs


def dos(*numbers: int) -> PartitionTable:
    return PartitionTable("dos", "0x1234abcd", 512, tuple(
        Partition(n, 2048 * n, 2048, "83", None, None, n == 1, False) for n in numbers))


NO_TABLE = PartitionTable(None, None, 512, ())
NO_LOADER = ("none (the domain's definition names the kernel, or the disk's boot code loads "
             "it)")


def boot_peer(code: bytes | None, **files: dict[str, str]) -> tuple[Peer, dict[str, str]]:
    """A peer where each filesystem named in ``files`` is mounted below ROOT holding those
    guest files, and STANDBY's boot code is ``code``."""
    peer = Peer()
    mounted = {}
    for name, held in files.items():
        mnt = f"{ROOT}/{name}"
        peer.dirs.add(mnt)
        mounted[name] = mnt
        for rel, text in held.items():
            peer.files[f"{mnt}/{rel}"] = text
    if code is not None:
        peer.boot[STANDBY] = code
    return peer, mounted


def test_grub_boot_code_with_grubs_files_is_sound_and_says_what_it_found(tmp_path):
    peer, mounted = boot_peer(GRUB_CODE, xvda1={"boot/grub/grub.cfg": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1, 2), STANDBY)}, mounted)
    assert report.problems == []
    assert report.boot == ["xvda: dos partition table, 2 partitions, boot code GRUB",
                           "boot loader files: xvda1:/boot/grub/grub.cfg"]


def test_grub_boot_code_with_grub2_on_a_separate_boot_filesystem_is_sound(tmp_path):
    peer, mounted = boot_peer(GRUB_CODE, xvda1={"etc/fstab": "x"},
                              xvda2={"grub2/grub.cfg": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1, 2), STANDBY)}, mounted)
    assert report.problems == []
    assert report.boot[-1] == "boot loader files: xvda2:/grub2/grub.cfg"


def test_grub_boot_code_without_boot_grub_is_a_problem_even_with_other_loader_files(tmp_path):
    peer, mounted = boot_peer(GRUB_CODE, xvda1={"boot/extlinux/extlinux.conf": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1), STANDBY)}, mounted)
    assert report.problems == ["boot: xvda's boot code is GRUB's, but no filesystem holds "
                               "/boot/grub"]
    assert report.boot[-1] == "boot loader files: xvda1:/boot/extlinux/extlinux.conf"


def test_a_guest_without_boot_code_or_boot_loader_boots_from_its_domains_kernel(tmp_path):
    peer, mounted = boot_peer(bytes(440), xvda1={"etc/fstab": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1), STANDBY)}, mounted)
    assert report.boot == ["xvda: dos partition table, 1 partitions, boot code empty",
                           "boot loader files: " + NO_LOADER]
    assert report.problems == []


@pytest.mark.parametrize("files,where", [
    ({"boot/grub/i386-pc/normal.mod": "x"}, "xvda1 has /boot/grub but none of grub.cfg, "
                                            "menu.lst, grub.conf in it"),
    ({"boot/grub2/grubenv": "x"}, "xvda1 has /boot/grub2 but none of grub.cfg in it"),
    ({"boot/extlinux/menu.c32": "x"}, "xvda1 has /boot/extlinux but none of extlinux.conf "
                                      "in it"),
    ({"grub/fonts/unicode.pf2": "x"}, "xvda1 has /grub but none of grub.cfg, menu.lst, "
                                      "grub.conf in it"),
])
def test_a_boot_loader_directory_without_the_file_it_boots_from_is_a_problem(
        tmp_path, files, where):
    peer, mounted = boot_peer(OTHER_CODE, xvda1=files)
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1), STANDBY)}, mounted)
    assert report.problems == [f"boot: {where}"]
    assert report.boot[-1] == "boot loader files: " + NO_LOADER


def test_grub_boot_code_with_grubs_directory_but_not_its_config_is_one_problem(tmp_path):
    peer, mounted = boot_peer(GRUB_CODE, xvda2={"grub2/i386-pc/core.img": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1, 2), STANDBY)}, mounted)
    assert report.problems == ["boot: xvda2 has /grub2 but none of grub.cfg in it"]


def test_each_boot_loader_directory_must_hold_its_own_file(tmp_path):
    peer, mounted = boot_peer(OTHER_CODE, xvda1={"boot/grub/grub.cfg": "x",
                                                 "boot/extlinux/ldlinux.sys": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1), STANDBY)}, mounted)
    assert report.problems == ["boot: xvda1 has /boot/extlinux but none of extlinux.conf in "
                               "it"]
    assert report.boot[-1] == "boot loader files: xvda1:/boot/grub/grub.cfg"


@pytest.mark.parametrize("code,files,kind", [
    (bytes(440), {"boot/extlinux/extlinux.conf": "x"}, "empty"),
    (bytes(440), {"boot/grub/menu.lst": "x"}, "empty"),
    (OTHER_CODE, {}, "present"),
])
def test_boot_code_or_a_boot_loaders_files_is_enough(tmp_path, code, files, kind):
    peer, mounted = boot_peer(code, xvda1=files)
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1), STANDBY)}, mounted)
    assert report.problems == []
    assert report.boot[0].endswith(f"boot code {kind}")


def test_a_whole_disk_filesystem_says_so_and_its_boot_code_is_not_read(tmp_path):
    peer, mounted = boot_peer(None, xvda={"boot/grub/menu.lst": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (NO_TABLE, STANDBY)}, mounted)
    assert report.boot == ["xvda: no partition table (a whole-disk filesystem)",
                           "boot loader files: xvda:/boot/grub/menu.lst"]
    assert report.problems == []
    assert boot_reads(peer) == []


def test_a_whole_disk_filesystem_without_a_boot_loader_is_no_problem(tmp_path):
    peer, mounted = boot_peer(None, xvda={"etc/fstab": "x"})
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (NO_TABLE, STANDBY)}, mounted)
    assert report.problems == []
    assert report.boot == ["xvda: no partition table (a whole-disk filesystem)",
                           "boot loader files: " + NO_LOADER]


def test_every_disk_is_looked_at_in_order_and_one_disks_boot_code_boots_the_guest(tmp_path):
    peer, mounted = boot_peer(GRUB_CODE, xvda1={"boot/grub/grub.cfg": "x"})
    peer.boot["/dev/vg_a/web01"] = bytes(440)
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvdb": (dos(1), "/dev/vg_a/web01"), "xvda": (dos(1, 2, 3), STANDBY)},
                 mounted)
    assert report.boot[:2] == ["xvda: dos partition table, 3 partitions, boot code GRUB",
                               "xvdb: dos partition table, 1 partitions, boot code empty"]
    assert report.problems == []


def test_boot_loader_files_and_grubs_directory_behind_a_guest_symlink_do_not_count(tmp_path):
    peer, mounted = boot_peer(GRUB_CODE, xvda1={"etc/fstab": "x"})
    peer.files["/boot/grub/grub.cfg"] = "the host's own"
    peer.symlinks[f"{ROOT}/xvda1/boot"] = "/boot"  # the guest's boot -> the host's
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1), STANDBY)}, mounted)
    assert report.boot[-1] == "boot loader files: " + NO_LOADER
    assert report.problems == ["boot: xvda's boot code is GRUB's, but no filesystem holds "
                               "/boot/grub"]
    assert peer.runs("cat") == []


# -- guest files: never through a symlink -----------------------------------------------------

def test_guest_file_is_true_for_a_file_there_and_false_for_one_that_is_not(tmp_path):
    peer, mounted = boot_peer(None, xvda1={"etc/fstab": "x"})
    v, _report, _ = verifier(tmp_path, peer)
    assert v.guest_file(mounted["xvda1"], "etc/fstab") is True
    assert v.guest_file(mounted["xvda1"], "etc/passwd") is False
    assert ("readlink", "-e", "--", f"{ROOT}/xvda1/etc/fstab") in peer.calls


@pytest.mark.parametrize("link,target,canonical", [
    ("etc/fstab", "/etc/shadow", "/etc/shadow"),  # to a host file
    ("etc", "/etc", "/etc/fstab"),  # a directory on the way, to the host's
    ("etc/fstab", "fstab.real", f"{ROOT}/xvda1/etc/fstab.real"),  # inside the guest too
])
def test_guest_file_reports_a_symlink_and_never_reads_through_it(tmp_path, link, target,
                                                                  canonical):
    peer, mounted = boot_peer(None, xvda1={"etc/fstab.real": "guest"})
    peer.files.update({"/etc/shadow": "root:secret", "/etc/fstab": "host"})
    peer.symlinks[f"{ROOT}/xvda1/{link}"] = target
    v, _report, _ = verifier(tmp_path, peer)
    assert v.guest_file(mounted["xvda1"], "etc/fstab") == (
        f"etc/fstab is a symlink (to {canonical!r}), not followed")
    assert peer.runs("cat") == []


def test_a_symlinked_fstab_is_a_problem_and_another_filesystems_fstab_is_read(tmp_path):
    peer, mounted = boot_peer(None, xvda1={}, xvda3={"etc/fstab": FSTAB})
    peer.files["/etc/shadow"] = "root:secret"
    peer.symlinks[f"{ROOT}/xvda1/etc/fstab"] = "/etc/shadow"
    v, report, _ = verifier(tmp_path, peer)
    found = [(FsFacts("xvda1", dos(1).partitions[0], probe(EXT4)), "/dev/x1", "xvda"),
             (FsFacts("xvda3", dos(3).partitions[0], probe(XFS)), "/dev/x3", "xvda")]
    v.check_fstab(found, mounted)
    assert report.problems == ["xvda1: etc/fstab is a symlink (to '/etc/shadow'), not followed"]
    assert report.fstab == "from xvda3: every entry resolves (xvda1=/, xvda3=/srv)"
    assert peer.runs("cat") == [("cat", "--", f"{ROOT}/xvda3/etc/fstab")]


# -- check_filesystems ------------------------------------------------------------------------

def probe(fs: Fs | None) -> FilesystemProbe:
    if fs is None:
        return FilesystemProbe(None, None, None, None, None, None)
    return FilesystemProbe(fs.fstype, fs.uuid, fs.label or None, "filesystem", None, None)


def one_fs(fs: Fs, name: str = "xvda1", device: str = "/dev/mapper/x1"):
    return (FsFacts(name, dos(1).partitions[0], probe(fs)), device, "xvda")


TAIL = "line one | bad inode"  # the last two lines of what the checker said


@pytest.mark.parametrize("fs,checker,code,sound,summary", [
    (EXT4, "e2fsck", 0, True, "e2fsck: no errors"),
    (EXT2, "e2fsck", 0, True, "e2fsck: no errors"),
    (EXT4, "e2fsck", 4, False, "e2fsck exited 4 (errors left uncorrected): " + TAIL),
    (EXT4, "e2fsck", 1, False, "e2fsck exited 1 (reported corrections, which a read-only "
                               "check never makes): " + TAIL),
    (EXT4, "e2fsck", 12, False, "e2fsck exited 12 (errors left uncorrected, operational "
                                "error): " + TAIL),
    (XFS, "xfs_repair", 0, True, "xfs_repair: no errors"),
    (XFS, "xfs_repair", 1, False, "xfs_repair exited 1 (corruption found): " + TAIL),
    (XFS, "xfs_repair", 2, False, "xfs_repair exited 2 (the log needs replaying (mount it "
                                  "once)): " + TAIL),
    (VFAT, "fsck.fat", 0, True, "fsck.fat: no errors"),
    (VFAT, "fsck.fat", 1, False, "fsck.fat exited 1 (errors found): " + TAIL),
])
def test_each_checkers_exit_code_is_its_verdict(tmp_path, fs, checker, code, sound, summary):
    peer = Peer()
    peer.checks[STANDBY] = (code, "checker 1.0\nline one\nbad inode\n" if code else "")
    v, report, logs = verifier(tmp_path, peer)
    v.check_filesystems([one_fs(fs, device=STANDBY)])
    assert peer.runs(checker) == [(checker, *(("-f", "-n") if checker == "e2fsck" else ("-n",)),
                                   STANDBY)]
    assert report.filesystems == [FsResult("xvda1", fs.fstype, sound, True, summary)]
    assert report.problems == ([] if sound else [f"xvda1: {summary}"])
    assert logs == [f"xvda1 ({fs.fstype}): {summary}"]


def test_swap_and_a_guest_pv_are_skipped_and_a_type_without_a_checker_is_not_checked(
        tmp_path):
    peer = Peer()
    v, report, _ = verifier(tmp_path, peer)
    pv = Fs("LVM2_member", "Gst0PV-a1b2-c3d4-e5f6-g7h8-i9j0-k1l2m3")
    v.check_filesystems([one_fs(SWAP, "xvda2", STANDBY), one_fs(pv, "xvda7", STANDBY),
                         one_fs(BTRFS, "xvda5", STANDBY), one_fs(EXT4, "xvda1", STANDBY)])
    assert [c[0] for c in peer.calls] == ["e2fsck"]
    assert report.filesystems == [
        FsResult("xvda5", "btrfs", False, False, "not checked: no read-only check for btrfs"),
        FsResult("xvda1", "ext4", True, True, "e2fsck: no errors")]
    assert report.problems == ["xvda5: not checked: no read-only check for btrfs"]


# -- the whole run on a fake peer -------------------------------------------------------------

def run_verify(tmp_path, peer=None, *, at=None, cfg=None, **kw) -> tuple[VerifyReport, Peer]:
    cfg = cfg or config(tmp_path)
    peer = peer or web01_peer(cfg, **kw)
    report = verify(cfg, "web01", peer, RUN, at, peer_name="dom0-b")
    return report, peer


def test_a_sound_standby_is_read_through_its_snapshot_and_everything_is_undone(tmp_path):
    cfg = config(tmp_path)
    report, peer = run_verify(tmp_path, cfg=cfg)
    assert report.problems == [] and report.teardown_errors == [] and report.ok
    assert (report.domain, report.peer, report.what, report.run_id) == (
        "web01", "dom0-b", "standby", RUN)
    assert report.filesystems == [
        FsResult("xvda1", "ext4", True, True, "e2fsck: no errors", "/"),
        FsResult("xvda3", "xfs", True, True, "xfs_repair: no errors", "/srv")]
    assert report.fstab == "from xvda1: every entry resolves (xvda1=/, xvda3=/srv)"
    assert report.boot == ["xvda: dos partition table, 3 partitions, boot code GRUB",
                           "boot loader files: xvda1:/boot/grub/grub.cfg"]
    made = [argv for _entry, argv in peer.journalled]
    p1, p3 = part_dev(SNAP, 1), part_dev(SNAP, 3)
    assert made == [
        ("mkdir", "-p", "-m", "0700", ROOT),
        ("lvcreate", "--snapshot", "--permission", "r", "--name", SNAP_NAME, "--addtag",
         "domubk", "-L", "64M", "vg_b/web01"),
        ("kpartx", "-a", "-r", "-s", "-p", "p", SNAP),
        ("mkdir", "-m", "0700", f"{ROOT}/xvda1"),
        ("mount", "-t", "ext4", "-o", "ro,nosuid,nodev,noexec,noload", p1, f"{ROOT}/xvda1"),
        ("mkdir", "-m", "0700", f"{ROOT}/xvda3"),
        ("mount", "-t", "xfs", "-o", "ro,nosuid,nodev,noexec,norecovery,nouuid", p3,
         f"{ROOT}/xvda3"),
    ]
    assert peer.runs("e2fsck") == [("e2fsck", "-f", "-n", p1)]
    assert peer.runs("xfs_repair") == [("xfs_repair", "-n", p3)]
    assert_journalled_then_undone(peer, cfg)
    # the standby itself is only ever the origin of the snapshot
    assert [c for c in peer.calls if any("vg_b/web01" in w for w in c)
            and c[0] != "lvcreate" and unwrap_journalled(c) is None] == [tuple(lvs_argv(STANDBY))]


def test_every_entry_names_its_resource_undo_and_probe_for_recover(tmp_path):
    report, peer = run_verify(tmp_path)
    entries = [e for e, _argv in peer.journalled]
    assert {(e["run_id"], e["domain"]) for e in entries} == {(RUN, "web01")}
    assert [(e["action"], e["resource"]) for e in entries] == [
        ("mkdir", ROOT), ("snapshot", SNAP), ("map", SNAP),
        ("mkdir", f"{ROOT}/xvda1"), ("mount", f"{ROOT}/xvda1"),
        ("mkdir", f"{ROOT}/xvda3"), ("mount", f"{ROOT}/xvda3")]
    assert entries[1]["undo"] == ["lvremove", "--force", "--yes", f"vg_b/{SNAP_NAME}"]
    assert entries[2]["undo"] == ["kpartx", "-d", "-s", "-p", "p", SNAP]
    assert entries[4]["undo"] == ["umount", f"{ROOT}/xvda1"]
    assert all(e["exists"] for e in entries)


def test_a_failed_check_is_reported_and_the_rest_still_runs_and_is_undone(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    peer.checks[part_dev(SNAP, 1)] = (4, "Inode 12 has illegal blocks\n")
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.filesystems[0] == FsResult(
        "xvda1", "ext4", False, True,
        "e2fsck exited 4 (errors left uncorrected): Inode 12 has illegal blocks", "/")
    assert report.problems == ["xvda1: e2fsck exited 4 (errors left uncorrected): Inode 12 "
                               "has illegal blocks"]
    assert report.fstab.startswith("from xvda1: every entry resolves") and not report.ok
    assert len(peer.runs("mount")) == 2
    assert_journalled_then_undone(peer, cfg)


def test_a_mount_failure_is_a_problem_and_the_other_filesystems_are_still_read(tmp_path):
    cfg = config(tmp_path)

    def no_mount(argv):
        if argv[0] == "mount" and argv[-2] == part_dev(SNAP, 1):
            return CommandResult("dom0-b", tuple(argv), 32, "",
                                 f"mount: {argv[-1]}: wrong fs type, bad option\n", 0.0)
        return None

    peer = web01_peer(cfg, fail=no_mount)
    peer.guest[part_dev(SNAP, 3)] = {"grub/grub.cfg": "x"}
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.problems[0].startswith(
        f"xvda1: cannot be mounted read-only: [dom0-b] `mount -t ext4 -o "
        f"ro,nosuid,nodev,noexec,noload {part_dev(SNAP, 1)} {ROOT}/xvda1` exited 32: mount: ")
    assert ("fstab: no /etc/fstab on any filesystem (set [domains.web01.mounts] for a guest "
            "without one)") in report.problems
    assert report.boot[-1] == "boot loader files: xvda3:/grub/grub.cfg"
    assert ("readlink", "-e", "--", f"{ROOT}/xvda3/etc/fstab") in peer.calls
    assert [c for c in peer.calls if c[0] == "readlink" and f"{ROOT}/xvda1/" in c[-1]] == []
    assert not report.ok and report.teardown_errors == []
    # the failed mount was journalled and its undo tried; nothing is left
    assert ("umount", f"{ROOT}/xvda1") in peer.calls
    assert peer.leftovers() == [] and peer.mounts == {}
    assert journal_path(cfg.defaults.state_dir, "web01", RUN) not in peer.files


def test_a_layout_that_cannot_be_read_is_a_problem_and_what_was_made_is_undone(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    del peer.disks[SNAP]
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert len(report.problems) == 1 and "sfdisk --json" in report.problems[0]
    assert report.filesystems == [] and not report.ok
    assert [argv[0] for _e, argv in peer.journalled] == ["mkdir", "lvcreate"]
    assert_journalled_then_undone(peer, cfg)


def test_a_snapshot_lvm_refuses_is_a_problem_naming_the_command(tmp_path):
    cfg = config(tmp_path)

    def full(argv):
        if argv[0] == "lvcreate":
            return CommandResult("dom0-b", tuple(argv), 5, "",
                                 '  Volume group "vg_b" has insufficient free space\n', 0.0)
        return None

    report, peer = run_verify(tmp_path, cfg=cfg, fail=full)
    assert len(report.problems) == 1
    assert "`lvcreate --snapshot" in report.problems[0]
    assert "exited 5: Volume group \"vg_b\" has insufficient free space" in report.problems[0]
    assert peer.runs("sfdisk") == [] and peer.leftovers() == []
    assert report.teardown_errors == []


def test_a_resource_that_cannot_be_undone_is_a_teardown_error_and_the_journal_stays(
        tmp_path, monkeypatch):
    monkeypatch.setattr("toolkit.undo.time.sleep", lambda s: None)
    cfg = config(tmp_path)

    def busy(argv):
        if argv[:1] == ("lvremove",):
            return CommandResult("dom0-b", tuple(argv), 5, "",
                                 f"  Logical volume {argv[-1]} in use.\n", 0.0)
        return None

    report, peer = run_verify(tmp_path, cfg=cfg, fail=busy)
    assert report.problems == []
    assert len(report.teardown_errors) == 1 and not report.ok
    assert report.teardown_errors[0].startswith(f"[dom0-b] snapshot {SNAP}: ")
    assert "in use" in report.teardown_errors[0]
    # the others were still undone, newest first, and the journal is kept for recover
    assert undos_run(peer)[-1] == ("rmdir", ROOT)
    assert peer.leftovers() == [f"lv vg_b/{SNAP_NAME}"]
    path = journal_path(cfg.defaults.state_dir, "web01", RUN)
    assert path in peer.files and ("rm", "-f", path) not in peer.calls


def test_an_interrupt_mid_check_still_undoes_everything_and_is_raised(tmp_path):
    cfg = config(tmp_path)

    def interrupted(argv):
        if argv[0] == "xfs_repair":
            raise errors.Interrupted(signal.SIGTERM)
        return None

    peer = web01_peer(cfg, fail=interrupted)
    report = VerifyReport("web01", "dom0-b", "standby", RUN)
    v = Verifier(cfg, "web01", RUN, peer, report, lambda m: None)
    with pytest.raises(errors.Interrupted):
        v.run(sources(peer, cfg, "web01", None))
    assert peer.leftovers() == [] and peer.runs("umount") == []
    assert journal_path(cfg.defaults.state_dir, "web01", RUN) not in peer.files


def test_a_whole_disk_filesystem_is_read_without_a_map_or_boot_code(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, disk=Disk(whole=EXT4))
    peer.guest = {SNAP: {"etc/fstab": f"UUID={EXT4.uuid} / ext4 defaults 0 1\n",
                         "boot/grub/menu.lst": "title web01\n"}}
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.ok, report.problems
    assert report.filesystems == [FsResult("xvda", "ext4", True, True, "e2fsck: no errors",
                                           "/")]
    assert report.boot == ["xvda: no partition table (a whole-disk filesystem)",
                           "boot loader files: xvda:/boot/grub/menu.lst"]
    assert peer.runs("kpartx") == [] and boot_reads(peer) == []
    assert peer.runs("e2fsck") == [("e2fsck", "-f", "-n", SNAP)]
    assert_journalled_then_undone(peer, cfg)


def test_each_disk_of_the_standby_gets_its_own_snapshot(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, standby={"xvda": STANDBY, "xvdb": "/dev/vg_b/web01-b"})
    snap_b = f"/dev/vg_b/domubk-vf-{RUN}-web01-xvdb"
    peer.disks[snap_b] = Disk(whole=VFAT)
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.ok, report.problems
    assert [(f.name, f.guest_path) for f in report.filesystems] == [
        ("xvda1", "/"), ("xvda3", "/srv"), ("xvdb", None)]
    assert [c[-1] for c in peer.runs("lvcreate")] == ["vg_b/web01", "vg_b/web01-b"]
    assert peer.runs("fsck.fat") == [("fsck.fat", "-n", snap_b)]
    assert report.boot[1] == "xvdb: no partition table (a whole-disk filesystem)"
    assert_journalled_then_undone(peer, cfg)


def test_a_classic_point_is_read_as_it_is_with_no_snapshot(tmp_path):
    cfg = config(tmp_path)
    point = f"/dev/vg_b/{rp.point_lv_name(MID, 'web01', 'xvda')}"
    peer = Peer(rows=[point_row(MID)], devices=(*BASE_DEVICES, point))
    peer.disks[point] = WEB01
    peer.boot[point] = GRUB_CODE
    peer.guest[part_dev(point, 1)] = {"etc/fstab": FSTAB, "boot/grub/grub.cfg": "x"}
    report, _ = run_verify(tmp_path, peer, at=MID, cfg=cfg)
    assert report.ok, report.problems
    assert report.what == f"restore point {MID}"
    assert peer.runs("lvcreate") == [] and peer.runs("cat")[0][0] == "cat"
    assert peer.runs("kpartx")[0] == ("kpartx", "-a", "-r", "-s", "-p", "p", point)
    assert peer.runs("e2fsck") == [("e2fsck", "-f", "-n", part_dev(point, 1))]
    assert_journalled_then_undone(peer, cfg)


def test_a_thin_point_is_read_through_a_thin_snapshot_of_it(tmp_path):
    cfg = config(tmp_path)
    point = f"/dev/vg_b/{rp.point_lv_name(MID, 'web01', 'xvda')}"
    peer = Peer(rows=[point_row(MID, thin=True)], devices=(*BASE_DEVICES, point))
    peer.disks[SNAP] = WEB01
    peer.boot[SNAP] = GRUB_CODE
    peer.guest[part_dev(SNAP, 1)] = {"etc/fstab": FSTAB, "boot/grub/grub.cfg": "x"}
    report, _ = run_verify(tmp_path, peer, at=MID, cfg=cfg)
    assert report.ok, report.problems
    assert peer.runs("lvcreate") == [(
        "lvcreate", "--snapshot", "--permission", "r", "--setactivationskip", "n", "--name",
        SNAP_NAME, "--addtag", "domubk", point.removeprefix("/dev/"))]
    assert_journalled_then_undone(peer, cfg)


def test_an_extended_partition_is_neither_checked_nor_mounted_its_logical_one_is(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, disk=Disk(((1, EXT4), (2, None), (5, XFS)), extended=2))
    peer.guest[part_dev(SNAP, 1)]["etc/fstab"] = FSTAB.replace(f"UUID={SWAP.uuid}", "#")
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.ok, report.problems
    assert [(f.name, f.guest_path) for f in report.filesystems] == [("xvda1", "/"),
                                                                    ("xvda5", "/srv")]
    assert report.boot[0] == "xvda: dos partition table, 3 partitions, boot code GRUB"
    assert not [c for c in peer.calls if any(w.endswith("xvda2") or w.endswith("p2")
                                             for w in c)]
    assert_journalled_then_undone(peer, cfg)


def test_the_first_filesystem_holding_etc_fstab_is_the_one_read(tmp_path):
    peer, mounted = boot_peer(None, xvda1={"etc/fstab": FSTAB},
                              xvda3={"etc/fstab": "LABEL=nowhere /x ext4 defaults 0 0\n"})
    v, report, _ = verifier(tmp_path, peer)
    found = [(FsFacts("xvda1", dos(1).partitions[0], probe(EXT4)), "/dev/x1", "xvda"),
             (FsFacts("xvda3", dos(3).partitions[0], probe(XFS)), "/dev/x3", "xvda")]
    v.check_fstab(found, mounted)
    assert report.problems == []
    assert report.fstab == "from xvda1: every entry resolves (xvda1=/, xvda3=/srv)"
    assert peer.runs("cat") == [("cat", "--", f"{ROOT}/xvda1/etc/fstab")]


def test_an_fstab_naming_a_filesystem_not_on_the_disks_is_a_problem(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    peer.guest[part_dev(SNAP, 1)]["etc/fstab"] = FSTAB + "LABEL=gone /data ext4 defaults 0 2\n"
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert len(report.problems) == 1 and report.problems[0].startswith("fstab: fstab line 6: ")
    assert "LABEL=gone" in report.problems[0] and report.fstab.startswith("from xvda1: ")
    assert [f.guest_path for f in report.filesystems] == [None, None] and not report.ok


def test_an_fstab_by_guest_device_names_resolves_and_the_fstabs_own_filesystem_is_root(
        tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    peer.guest[part_dev(SNAP, 1)]["etc/fstab"] = "/dev/xvda3 /srv xfs defaults 0 2\n"
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.ok, report.problems
    assert report.fstab == "from xvda1: every entry resolves (xvda3=/srv)"
    assert [(f.name, f.guest_path) for f in report.filesystems] == [("xvda1", "/"),
                                                                    ("xvda3", "/srv")]


def test_a_standby_whose_grub_directory_lost_its_config_is_not_sound(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, grub=False)
    peer.guest[part_dev(SNAP, 1)]["boot/grub/grubenv"] = "# GRUB Environment Block\n"
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.problems == ["boot: xvda1 has /boot/grub but none of grub.cfg, menu.lst, "
                               "grub.conf in it"]
    assert not report.ok


def test_a_standby_without_boot_code_or_boot_loader_is_sound(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, grub=False)
    peer.boot[SNAP] = bytes(440)
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.ok, report.problems
    assert report.boot[-1] == "boot loader files: " + NO_LOADER


def test_a_dirty_standby_stops_verify_before_anything_is_made(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, state="dirty")
    with pytest.raises(errors.StandbyUnsound):
        verify(cfg, "web01", peer, RUN, None, peer_name="dom0-b")
    assert peer.journalled == [] and not any(makes(c) for c in peer.calls)


# -- VerifyReport.ok and render_verify --------------------------------------------------------

SOUND = FsResult("xvda1", "ext4", True, True, "e2fsck: no errors", "/")
BAD = FsResult("xvda3", "xfs", False, True, "xfs_repair exited 1 (corruption found)")


@pytest.mark.parametrize("change,ok", [
    ({}, True),
    ({"problems": ["boot: x"]}, False),
    ({"teardown_errors": ["[dom0-b] mount /x: busy"]}, False),
    ({"filesystems": [SOUND, BAD]}, False),
    ({"filesystems": [SOUND, replace(BAD, fstype="swap")]}, True),
])
def test_ok_is_false_on_any_problem_teardown_error_or_unsound_filesystem(change, ok):
    report = VerifyReport("web01", "dom0-b", "standby", RUN, filesystems=[SOUND])
    for key, value in change.items():
        setattr(report, key, value)
    assert report.ok is ok


def test_render_says_each_filesystem_fstab_boot_problems_teardown_and_the_verdict():
    report = VerifyReport("web01", "dom0-b", f"restore point {MID}", RUN,
                          filesystems=[SOUND, BAD], fstab="from xvda1: every entry resolves",
                          boot=["xvda: dos partition table, 3 partitions, boot code GRUB",
                                "boot loader files: none"],
                          problems=["xvda3: xfs_repair exited 1 (corruption found)"],
                          teardown_errors=["[dom0-b] mount /m: target is busy"])
    assert render_verify(report) == "\n".join([
        f"verify web01: restore point {MID} on dom0-b (run {RUN})",
        "  xvda1      ext4   /          sound: e2fsck: no errors",
        "  xvda3      xfs    -          NOT SOUND: xfs_repair exited 1 (corruption found)",
        "  fstab: from xvda1: every entry resolves",
        "  boot: xvda: dos partition table, 3 partitions, boot code GRUB",
        "  boot: boot loader files: none",
        "  PROBLEM: xvda3: xfs_repair exited 1 (corruption found)",
        "  TEARDOWN: [dom0-b] mount /m: target is busy",
        "  verdict: NOT SOUND",
    ])


@pytest.mark.parametrize("change", [{"teardown_errors": ["[dom0-b] x"]},
                                    {"filesystems": [SOUND, BAD]}])
def test_render_says_not_sound_whenever_the_report_is_not_ok(change):
    report = VerifyReport("web01", "dom0-b", "standby", RUN, **{"filesystems": [SOUND],
                                                                 **change})
    assert render_verify(report).splitlines()[-1] == "  verdict: NOT SOUND"


def test_render_of_a_sound_report_with_no_fstab_read_yet():
    report = VerifyReport("web01", "dom0-b", "standby", RUN, filesystems=[SOUND])
    assert render_verify(report).splitlines()[-2:] == ["  fstab: -", "  verdict: sound"]


# -- the command ------------------------------------------------------------------------------

CLI_CONFIG = """
[cluster.dom0s]
dom0-a = "ssh://root@127.0.0.1:2"
dom0-b = "ssh://root@127.0.0.1:1"
[hypervisor]
uri = "test:///default"
[ssh]
key = "{tmp}/id_ed25519"
known_hosts = "{tmp}/known_hosts"
connect_timeout = 2
[defaults]
snapshot_size = "64M"
state_dir = "{tmp}/state"
lock_dir = "{tmp}/lock"
report_dir = "{tmp}/reports"
[domains.web01]
peer = "dom0-b"
"""


@pytest.fixture
def command(tmp_path, monkeypatch):
    """The config file, with the commands' root check passing, run ids fixed and the peer
    reached over "SSH" as the Peer the test sets (``peers[0]``)."""
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "backup.toml"
    path.write_text(CLI_CONFIG.format(tmp=tmp_path))
    path.chmod(0o600)
    monkeypatch.setattr("toolkit.config.check_root", lambda: None)
    monkeypatch.delenv("DOMU_BACKUP_NODE", raising=False)
    monkeypatch.setattr(app, "new_run_id", lambda: RUN)
    peers: list[Peer] = []
    asked: list[str] = []

    def peer_runner(config, name):
        asked.append(name)
        return peers[0]

    monkeypatch.setattr(app, "peer_runner", peer_runner)
    return path, peers, asked


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from toolkit import cli as program

    code = program.finish(program.run(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def errors_in(err: str) -> list[str]:
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


def verify_cli(capsys, command, peer, *extra: str) -> tuple[int, str, str]:
    path, peers, _asked = command
    peers.append(peer)
    return cli(capsys, "verify", "--domu", "web01", "--node", "dom0-a", "--config", str(path),
               *extra)


def cli_peer(tmp_path, **kw) -> Peer:
    return web01_peer(parse_config(CLI_CONFIG.format(tmp=tmp_path), tmp_path / "b.toml"), **kw)


def test_the_command_exits_0_and_prints_the_report_when_sound(tmp_path, capsys, command):
    peer = cli_peer(tmp_path)
    code, out, err = verify_cli(capsys, command, peer)
    assert code == 0, err
    assert errors_in(err) == []
    assert out.splitlines()[0] == f"verify web01: standby on dom0-b (run {RUN})"
    assert out.rstrip().endswith("verdict: sound")
    assert command[2] == ["dom0-b"] and peer.closed and peer.leftovers() == []


def test_the_command_exits_46_with_one_error_line_naming_the_problem(tmp_path, capsys,
                                                                     command):
    peer = cli_peer(tmp_path)
    peer.checks[part_dev(SNAP, 3)] = (1, "agno 0: bad magic\n")
    code, out, err = verify_cli(capsys, command, peer)
    assert code == 46
    assert errors_in(err) == ["error: web01: standby is not sound: xvda3: xfs_repair exited 1 "
                              "(corruption found): agno 0: bad magic"]
    assert err.splitlines()[-1] == errors_in(err)[0]
    assert "verdict: NOT SOUND" in out and peer.closed and peer.leftovers() == []


def test_the_command_names_the_teardown_error_when_that_is_all_that_is_wrong(
        tmp_path, capsys, command, monkeypatch):
    monkeypatch.setattr("toolkit.undo.time.sleep", lambda s: None)

    def busy(argv):
        if argv[:2] == ("rmdir", ROOT):
            return CommandResult("dom0-b", tuple(argv), 1, "",
                                 f"rmdir: failed to remove '{ROOT}': Device or resource busy\n",
                                 0.0)
        return None

    code, _out, err = verify_cli(capsys, command, cli_peer(tmp_path, fail=busy))
    assert code == 46
    (line,) = errors_in(err)
    assert line.startswith(f"error: web01: standby is not sound: [dom0-b] mkdir {ROOT}: ")


def test_the_command_with_a_dirty_standby_exits_46_in_one_line(tmp_path, capsys, command):
    code, out, err = verify_cli(capsys, command, cli_peer(tmp_path, state="dirty"))
    assert code == 46 and out == ""
    (line,) = errors_in(err)
    assert "dirty" in line and "web01" in line


def test_the_command_at_an_unknown_run_exits_4_listing_the_runs(tmp_path, capsys, command):
    code, out, err = verify_cli(capsys, command, points_peer(), "--at", NEW)
    assert code == 4 and out == ""
    (line,) = errors_in(err)
    assert line.endswith(f"(its points: {MID}, {OLD})")


def test_the_command_needs_a_domain_exit_4(tmp_path, capsys, command):
    path, _peers, asked = command
    code, out, err = cli(capsys, "verify", "--config", str(path))
    assert code == 4 and out == ""
    assert errors_in(err) == ["error: verify needs --domu NAME"] and asked == []


def test_the_command_against_the_source_takes_no_at_exit_4(tmp_path, capsys, command):
    path, _peers, asked = command
    code, out, err = cli(capsys, "verify", "--domu", "web01", "--against-source", "--at", MID,
                         "--config", str(path))
    assert code == 4 and out == "" and asked == []
    (line,) = errors_in(err)
    assert "--against-source" in line and "--at" in line


@pytest.mark.parametrize("args", [("--all",), ("--all", "--against-source", "--domu", "web01"),
                                  ("--all", "--against-source", "--at", MID)])
def test_all_goes_with_against_source_alone_exit_4(tmp_path, capsys, command, args):
    path, _peers, asked = command
    code, out, err = cli(capsys, "verify", *args, "--config", str(path))
    assert code == 4 and out == "" and asked == []
    (line,) = errors_in(err)
    assert "--all goes with --against-source alone" in line


def test_the_command_prints_json_with_ok(tmp_path, capsys, command):
    peer = cli_peer(tmp_path)
    peer.checks[part_dev(SNAP, 1)] = (4, "bad\n")
    code, out, _err = verify_cli(capsys, command, peer, "--json")
    assert code == 46
    data = json.loads(out)
    assert data["ok"] is False and data["domain"] == "web01" and data["run_id"] == RUN
    assert [(f["name"], f["sound"]) for f in data["filesystems"]] == [("xvda1", False),
                                                                       ("xvda3", True)]


# -- bugs, pinned -----------------------------------------------------------------------------

def test_a_grub_legacy_guest_booting_from_grub_conf_is_sound(tmp_path):
    peer, mounted = boot_peer(GRUB_CODE, xvda1={"grub/grub.conf": "title CentOS\n",
                                                "grub/stage2": "x"})
    peer.symlinks[f"{ROOT}/xvda1/grub/menu.lst"] = "./grub.conf"
    v, report, _ = verifier(tmp_path, peer)
    v.check_boot({"xvda": (dos(1, 2), STANDBY)}, mounted)
    assert report.problems == []


def test_an_fstab_by_partuuid_resolves_as_it_does_for_the_backup(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg)
    peer.guest[part_dev(SNAP, 1)]["etc/fstab"] = (
        "PARTUUID=1234abcd-01 / ext4 defaults 0 1\nPARTUUID=1234abcd-03 /srv xfs defaults 0 2\n")
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.problems == []
    assert report.fstab == "from xvda1: every entry resolves (xvda1=/, xvda3=/srv)"


def test_a_partition_without_a_filesystem_is_no_problem(tmp_path):
    cfg = config(tmp_path)
    peer = web01_peer(cfg, disk=Disk(((1, EXT4), (2, None), (3, XFS))))
    report, _ = run_verify(tmp_path, peer, cfg=cfg)
    assert report.problems == [] and report.ok


def test_a_guest_lv_the_backup_skips_is_not_mapped_with_an_empty_table(tmp_path):
    def created(argv):  # dmsetup's own answer to an empty table is not modelled
        if argv[:2] == ("dmsetup", "create"):
            return CommandResult("dom0-b", tuple(argv), 0, "", "", 0.0)
        return None

    peer = Peer(fail=created)
    v, _report, _ = verifier(tmp_path, peer)
    hidden = GuestVolume("vg0", "vg0-uuid", "pool_tmeta", "lv-uuid", (),
                         "hidden LV (part of another LV)")
    fs = FsFacts("xvda2.vg0.pool_tmeta", dos(2).partitions[0], probe(None), hidden)
    v.fs_device(fs, STANDBY, "xvda")
    assert not [c for c in peer.calls if c[:2] == ("dmsetup", "create")
                and c[-1].endswith(",ro,")]


def test_a_guest_lv_is_mapped_read_only_from_its_pv(tmp_path):
    peer = Peer()
    peer.maps.add("vg_b-web01p2")  # the PV's partition, mapped by kpartx
    v, _report, _ = verifier(tmp_path, peer)
    vol = GuestVolume("vg0", "vg0-uuid", "root", "lv-uuid", (Segment(0, 2048, 2048),))
    fs = FsFacts("xvda2.vg0.root", dos(2).partitions[0], probe(EXT4), vol)
    device = v.fs_device(fs, STANDBY, "xvda")
    pv = part_dev(STANDBY, 2)
    (entry, argv), = peer.journalled
    name = device.removeprefix("/dev/mapper/")
    assert name.startswith(f"domubk-vf-{RUN}-web01-") and len(name.rsplit("-", 1)[1]) == 16
    assert argv == ("dmsetup", "create", "--concise", f"{name},,,ro,0 2048 linear {pv} 2048")
    assert entry["undo"] == ["dmsetup", "remove", "--retry", name]


def test_sigint_during_the_checks_exits_130(tmp_path, capsys, command):
    def interrupt(argv):
        if argv[0] == "xfs_repair":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
        return None

    peer = cli_peer(tmp_path, fail=interrupt)
    code, _out, err = verify_cli(capsys, command, peer)
    assert peer.leftovers() == []
    assert code == 130 and "SIGINT" in errors_in(err)[0]


def test_sigint_during_teardown_is_not_lost(tmp_path, capsys, command):
    def interrupt(argv):
        if argv[:2] == ("rmdir", ROOT):
            os.kill(os.getpid(), signal.SIGINT)
        return None

    try:
        code, _out, _err = verify_cli(capsys, command, cli_peer(tmp_path, fail=interrupt))
    finally:
        signals.pending_signal()  # nothing else in this process may see it
    assert code == 130


def test_a_blank_standby_is_not_sound_even_when_the_config_names_its_mounts(tmp_path):
    """Zeroed, or never filled: no table, no filesystem. The config's mounts (for a guest
    without an fstab) must not make that sound: what they name must be there."""
    import dataclasses

    cfg = config(tmp_path)
    web = dataclasses.replace(cfg.domains["web01"], mounts={"xvda1": "/"})
    cfg = dataclasses.replace(cfg, domains={**cfg.domains, "web01": web})
    report, _peer = run_verify(tmp_path, cfg=cfg, disk=Disk())
    assert not report.ok
    assert "no filesystem found on it: a blank standby, or one whose filesystems were " \
           "never filled" in report.problems
    assert "fstab: [domains.web01.mounts] names xvda1, not found on it" in report.problems
