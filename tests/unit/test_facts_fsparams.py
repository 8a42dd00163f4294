"""Filesystem parameters: read from recorded superblocks, carried to mkfs, checked for drift.

The superblocks in fixtures/recorded/fsparams/ were made by mkfs on regular files
(fixtures/recorded/fsparams/record.py): a source made with old or unusual
settings, the standby init-standby makes of it, and one made with mkfs's own
defaults (what init-standby did before). These tests only read them.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from fakes import RECORDED, FakeHost, config, web01_facts
from test_preflight import records, run_gather

from toolkit import errors
from toolkit.execute import Executor
from toolkit.facts.fsparams import (
    SUPERBLOCK_BYTES,
    ExtParams,
    FatParams,
    XfsParams,
    parse_params,
    read_argv,
    reserved_percent,
)
from toolkit.plan import compare_layouts, plan_backup
from toolkit.report import DomainReport
from toolkit.rsync import inode_exhaustion, inodes_argv, parse_inodes
from toolkit.runners import CommandResult
from toolkit.standby import mkfs_argv, plan_standby

DATA = RECORDED / "fsparams"
CASES = json.loads((DATA / "cases.json").read_text())["cases"]
RUN = "20260101T000000Z-abcd"


def head(name: str) -> bytes:
    return (DATA / f"{name}.head.bin").read_bytes()


def params(name: str):
    return parse_params(CASES[name.split(".")[0]]["type"], head(name))


def info(name: str) -> dict[str, str]:
    """``Key: value`` lines of dumpe2fs -h / fsck.fat -v output."""
    out = {}
    for line in (DATA / f"{name}.info.txt").read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def xfs_info(name: str) -> dict[str, str]:
    """``key=value`` pairs of xfs_db's info (its sections prefix the ambiguous ones)."""
    out, section = {}, ""
    for line in (DATA / f"{name}.info.txt").read_text().splitlines():
        head_, _, rest = line.partition("=")
        if head_.strip():
            section = head_.strip()
        for key, value in re.findall(r"([\w-]+)=(\S+?),?(?=\s|$)", line):
            out[f"{section}.{key}"] = out.get(f"{section}.{key}", value)
    return out


EXT = [n for n, c in CASES.items() if c["type"].startswith("ext")]
XFS = [n for n, c in CASES.items() if c["type"] == "xfs"]
FAT = [n for n, c in CASES.items() if c["type"] == "vfat"]


# -- the parsers give what the filesystems' own tools show ---------------------------

@pytest.mark.parametrize("name", [f"{n}{v}" for n in EXT for v in ("", ".standby", ".defaults")])
def test_ext_superblock_gives_what_dumpe2fs_shows(name):
    p = params(name)
    shown = info(name)
    assert isinstance(p, ExtParams)
    assert set(p.features) == set(shown["Filesystem features"].split()) - {"needs_recovery"}
    assert p.inode_count == int(shown["Inode count"])
    assert p.inode_size == int(shown["Inode size"])
    assert p.block_size == int(shown["Block size"])
    assert p.block_count == int(shown["Block count"])
    assert p.reserved_blocks == int(shown["Reserved block count"])
    assert p.blocks_per_group == int(shown["Blocks per group"])
    assert p.flex_bg_size == (int(shown["Flex block group size"])
                              if "Flex block group size" in shown else None)
    if "Total journal size" in shown:
        size = shown["Total journal size"]
        assert p.journal_bytes == int(size[:-1]) << {"k": 10, "M": 20, "G": 30}[size[-1]]


def test_the_old_ext4_of_the_issue_is_read_as_it_was_made():
    """ext4 without metadata_csum or 64bit, 128-byte inodes, one inode per 2 KiB."""
    old, new = params("ext4-old"), params("ext4-old.defaults")
    assert "metadata_csum" not in old.features and "64bit" not in old.features
    assert (old.inode_size, old.inode_count, old.block_size) == (128, 131072, 1024)
    # what this mkfs makes by default on the same size: half the inodes, other features
    assert (new.inode_size, new.inode_count) == (256, 65536)
    assert {"metadata_csum", "64bit"} <= set(new.features)


@pytest.mark.parametrize("name", [f"{n}{v}" for n in XFS for v in ("", ".standby", ".defaults")])
def test_xfs_superblock_gives_what_xfs_info_shows(name):
    p = params(name)
    shown = xfs_info(name)
    assert isinstance(p, XfsParams)
    assert p.inode_size == int(shown["meta-data.isize"])
    assert p.agcount == int(shown["meta-data.agcount"])
    assert p.agblocks == int(shown["meta-data.agsize"])
    assert p.block_size == int(shown["data.bsize"])
    assert p.data_blocks == int(shown["data.blocks"])
    assert p.log_blocks == int(shown["log.blocks"])
    assert p.crc == (shown["meta-data.crc"] == "1")
    for feature in ("finobt", "sparse", "rmapbt", "reflink", "bigtime", "inobtcount", "nrext64"):
        if p.crc:
            assert (feature in p.features) == (shown[f"meta-data.{feature}"] == "1"), feature
    assert ("ftype" in p.features) == (shown["naming.ftype"] == "1")


@pytest.mark.parametrize("name", [f"{n}{v}" for n in FAT for v in ("", ".standby", ".defaults")])
def test_fat_boot_sector_gives_what_fsck_fat_shows(name):
    p = params(name)
    text = (DATA / f"{name}.info.txt").read_text()
    assert isinstance(p, FatParams)
    assert f"{p.fats} FATs, {p.fat_size} bit entries" in text
    assert re.search(rf"^\s+{p.cluster_size} bytes per cluster$", text, re.M)
    assert re.search(rf"^\s+{p.reserved_sectors} reserved sectors?$", text, re.M)
    assert re.search(rf"^\s+{p.total_sectors} sectors total$", text, re.M)


def test_a_superblock_that_is_not_the_type_blkid_named_is_a_parse_error():
    with pytest.raises(errors.ParseError, match="blkid says xfs"):
        parse_params("xfs", head("ext4-old"))
    with pytest.raises(errors.ParseError, match="blkid says ext4"):
        parse_params("ext4", bytes(SUPERBLOCK_BYTES))
    assert parse_params("btrfs", head("ext4-old")) is None


def test_the_state_of_a_live_guests_filesystem_is_not_a_parameter():
    sb = bytearray(head("ext4-old"))
    sb[1024 + 0x60] |= 0x04  # needs_recovery: a snapshot of a running guest
    assert params("ext4-old") == parse_params("ext4", bytes(sb))


def test_preflight_reads_one_superblock_of_each_filesystem_read_only():
    assert read_argv("/dev/vg_a/web01", 1048576) == [
        "dd", "if=/dev/vg_a/web01", "bs=512", "skip=2048", "count=4", "status=none"]


# -- init-standby's mkfs carries them -------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_init_standby_mkfs_argv_carries_the_source_parameters(name):
    case = CASES[name]
    argv = mkfs_argv(case["type"], f"{name}.standby.img", case["uuid"], case["label"],
                     params(name))
    # the argv recorded, which made a standby with exactly the source's parameters
    assert argv == case["standby_argv"]
    assert params(f"{name}.standby") == params(name)


def test_the_issues_ext4_gets_its_features_inodes_and_block_size_on_the_standby():
    argv = mkfs_argv("ext4", "/dev/mapper/x", None, None, params("ext4-old"))
    opt = dict(zip(argv[3:-2:2], argv[4:-2:2], strict=True))
    assert opt["-O"].split(",")[0] == "none"  # none of this mkfs's defaults
    assert set(opt["-O"].split(",")[1:]) == set(params("ext4-old").features)
    assert "metadata_csum" not in opt["-O"] and "64bit" not in opt["-O"]
    assert (opt["-N"], opt["-I"], opt["-b"]) == ("131072", "128", "1024")
    assert argv[-2:] == ["/dev/mapper/x", "262144"]  # the source's size, in blocks


def test_ext3_stays_ext3():
    argv = mkfs_argv("ext3", "/dev/x", None, None, params("ext3-old"))
    assert argv[0] == "mkfs.ext3"
    features = argv[argv.index("-O") + 1].split(",")
    assert "has_journal" in features and "extent" not in features


def test_reserved_blocks_survive_the_percentage():
    for reserved, blocks in ((13107, 262144), (655, 65536), (1, 7), (0, 100), (5000, 10000)):
        percent = float(reserved_percent(reserved, blocks))
        assert int(percent * blocks / 100.0) == reserved


def test_an_xfs_log_smaller_than_mkfs_allows_gets_mkfs_own():
    p = dataclasses.replace(params("xfs-old"), log_blocks=2560)  # 10 MiB, older mkfs.xfs
    argv = mkfs_argv("xfs", "/dev/x", None, None, p)
    assert not any(a.startswith("size=") and a.endswith("10485760") for a in argv)
    assert "-l" not in argv
    assert "crc=1,finobt=0,reflink=0,rmapbt=0,inobtcount=0,bigtime=0" in argv


def test_vfat_keeps_its_fat_size_and_cluster_size():
    argv = mkfs_argv("vfat", "/dev/x", "1234-ABCD", "EFI", params("vfat16"))
    assert argv[argv.index("-F") + 1] == "16" and argv[argv.index("-s") + 1] == "4"


def test_init_standby_plan_makes_each_filesystem_with_its_source_parameters(tmp_path):
    facts = web01_facts()
    disk = facts.disks[0]
    fss = tuple(dataclasses.replace(f, params=params("ext4-old")) if f.probe.type == "ext4"
                else f for f in disk.filesystems)
    facts = dataclasses.replace(facts, disks=(dataclasses.replace(disk, filesystems=fss),))
    plan = plan_standby(facts, config(tmp_path), "R1", force=True)
    mkfs = [s.argv for s in plan.steps if s.action == "mkfs" and s.argv[0] == "mkfs.ext4"]
    assert mkfs and all("-N" in a and a[a.index("-N") + 1] == "131072" for a in mkfs)
    assert all(a[a.index("-O") + 1].startswith("none,") for a in mkfs)


# -- every backup checks them on both hosts ----------------------------------------

def with_params(source: str, standby: str):
    facts = web01_facts()
    disk = facts.disks[0]

    def put(fss, name):
        return tuple(dataclasses.replace(f, params=params(name)) if f.probe.type == "ext4"
                     else f for f in fss)

    disk = dataclasses.replace(disk, filesystems=put(disk.filesystems, source),
                               standby_filesystems=put(disk.standby_filesystems, standby))
    return dataclasses.replace(facts, disks=(disk,))


def test_a_standby_made_with_mkfs_defaults_is_a_layout_mismatch_naming_the_difference(tmp_path):
    facts = with_params("ext4-old", "ext4-old.defaults")
    diffs = compare_layouts(facts.disks[0])
    assert "xvda1: features differ, the standby has 64bit,metadata_csum too" in diffs[0]
    assert "xvda1: inode size 128 on source, 256 on standby" in diffs
    assert "xvda1: inode count 131072 on source, 65536 on standby" in diffs
    with pytest.raises(errors.LayoutMismatch, match="xvda1: inode count 131072 on source") as e:
        plan_backup(facts, config(tmp_path), RUN)
    assert e.value.exit_code == 19


def test_a_standby_made_by_init_standby_matches(tmp_path):
    facts = with_params("ext4-old", "ext4-old.standby")
    assert compare_layouts(facts.disks[0]) == []
    plan_backup(facts, config(tmp_path), RUN)


def test_the_block_size_and_missing_features_are_named_too():
    facts = with_params("ext4-new", "ext3-old")
    diffs = " ".join(compare_layouts(facts.disks[0]))
    assert "xvda1: block size 4096 on source, 1024 on standby" in diffs
    assert "the standby lacks 64bit,dir_nlink,extent" in diffs


def test_preflight_reads_the_parameters_on_both_hosts_and_a_drift_refuses_the_run():
    recs = records()
    _, pre, _ = run_gather(recs)
    (disk,) = pre.facts.disks
    for fss in (disk.filesystems, disk.standby_filesystems):
        got = {f.name: f.params for f in fss}
        assert isinstance(got["xvda1"], ExtParams) and isinstance(got["xvda2"], ExtParams)
        assert got["xvda3"] is None  # swap
    # the peer's root made with other defaults: same type, UUID and label, other parameters
    other = head("ext4-old.defaults").decode("utf-8", "surrogateescape")
    for r in recs:
        if r["role"] == "peer" and r["argv"][0] == "dd" and "skip=2048" in r["argv"]:
            r["stdout"] = other
    cfg, pre, _ = run_gather(recs)
    with pytest.raises(errors.LayoutMismatch, match=r"disk xvda: xvda1: inode count \d+ on "
                                                   r"source, 65536 on standby"):
        plan_backup(pre.facts, cfg, "20260101T000000Z-0000")


# -- an ENOSPC that is inode exhaustion says so --------------------------------------

def test_inodes_are_read_with_statvfs_on_the_mount():
    assert inodes_argv("/srv/x") == ["stat", "-f", "--format", "%c %d", "--", "/srv/x"]
    assert parse_inodes("65536 0\n") == (65536, 0)
    assert parse_inodes("0 0\n") is None  # vfat: no inodes to run out of
    assert parse_inodes("fd:1\n") is None


def test_no_free_inodes_on_a_standby_with_fewer_than_the_source():
    err = inode_exhaustion("xvda1", (65536, 0), (131072, 30000), host="dom0-b")
    assert isinstance(err, errors.PeerFull) and err.exit_code == 43
    assert str(err) == ("[dom0-b] standby filesystem xvda1 has no free inodes (65536 of 65536 "
                        "used): the standby was made with fewer inodes than the source (131072); "
                        "run init-standby --force")
    assert "fewer inodes than the source; run init-standby --force" in str(
        inode_exhaustion("xvda1", (65536, 3), None))


def test_no_free_inodes_with_as_many_as_the_source_names_the_leftovers():
    err = inode_exhaustion("xvda1", (65536, 0), (65536, 60000))
    assert "the source uses 5536 of 65536" in str(err) and "init-standby --force" in str(err)


def test_a_standby_with_free_inodes_is_simply_full():
    assert inode_exhaustion("xvda1", (65536, 30000), (65536, 30000)) is None
    assert inode_exhaustion("xvda1", None, (65536, 30000)) is None


def _stat_f(answers: dict[str, str]):
    def fail(argv):
        if argv[:2] == ("stat", "-f"):
            for suffix, out in answers.items():
                if argv[-1].endswith(suffix):
                    return CommandResult("fake", argv, 0, out, "", 0.0)
        return None
    return fail


@pytest.mark.parametrize(("peer_inodes", "message"), [
    ("32768 0\n", "standby filesystem xvda1 has no free inodes (32768 of 32768 used): the "
                  "standby was made with fewer inodes than the source (65536); run "
                  "init-standby --force"),
    ("32768 20000\n", "the standby filesystem is full (rsync exit 23); free space or grow "
                      "the standby LV"),
])
def test_a_run_whose_rsync_hits_enospc_checks_the_standbys_inodes(tmp_path, peer_inodes,
                                                                  message):
    src = FakeHost("dom0-a", fail=_stat_f({"/xvda1": "65536 35000\n"}))
    peer = FakeHost("dom0-b", fail=_stat_f({"/xvda1": peer_inodes}))
    src.fstab_on = "xvda1"
    src.rsync_result = (23, "", 'rsync: mkstemp "/x/.a.XXXX" failed: No space left on device '
                                "(28)\nrsync error: some files/attrs were not transferred")
    cfg = config(tmp_path)
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01"))
    with pytest.raises(errors.PeerFull) as e:
        ex.run()
    assert message in str(e.value) and e.value.exit_code == 43
    assert any(c[:2] == ("stat", "-f") for c in peer.calls)
