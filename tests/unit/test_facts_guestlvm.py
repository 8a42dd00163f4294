"""Guest LVM: the PV label and metadata parser, preflight, plan, fstab and recover.

Recordings under fixtures/recorded/guestlvm are the first MiB of real PVs
written by lvm2 2.03.16 on loop devices of this machine kind: lvm01's PV
(written by ``vgcfgrestore`` from the recipe) and ``vg0`` made by pvcreate,
vgcreate, lvcreate (root, swap), lvextend root (two segments) and lvcreate
``odd.name+x`` (five metadata writes, the current one last in the ring).
"""

from __future__ import annotations

import gzip
import struct
from hashlib import sha256

import pytest
from fakes import RECORDED, config, lv, play_reads
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import GuestLvmUnreadable, LayoutMismatch, UnsafeName
from toolkit.facts.blkid import FilesystemProbe, parse_blkid_export
from toolkit.facts.fsparams import SUPERBLOCK_BYTES, parse_params
from toolkit.facts.fstab import GuestFilesystem, parse_fstab, resolve_fstab
from toolkit.facts.guestlvm import (
    HEAD_BYTES,
    MDA_HEADER_SIZE,
    MDA_MAGIC,
    GuestVolume,
    PvHeader,
    Segment,
    metadata_text,
    parse_lvm_text,
    parse_pv_header,
    parse_vg,
    read_argv,
)
from toolkit.facts.records import BackupFacts, DiskFacts
from toolkit.facts.virsh import DomainDisk
from toolkit.plan import plan_backup, volume_map_name
from toolkit.preflight import read_layout
from toolkit.recover import owned_maps
from toolkit.runners import CommandResult

DATA = RECORDED / "guestlvm"
NOTHING = FilesystemProbe(None, None, None, None, None, None)


def head(name: str) -> bytes:
    return gzip.decompress((DATA / name).read_bytes())


def vg_of(name: str):
    data = head(name)
    pv = parse_pv_header(data[:HEAD_BYTES])
    assert pv is not None
    return parse_vg(metadata_text(data[:pv.mda_end], pv), pv)


# -- parser -----------------------------------------------------------------

def test_lvm01_pv_header_and_volumes_match_the_recipe():
    data = head("lvm01-p2-head.bin.gz")
    pv = parse_pv_header(data[:HEAD_BYTES])
    assert pv == PvHeader("5eed17-0000-0000-0000-0000-0000-0000p2", 267386880, 1 << 20, 4096,
                          1044480)
    vg = vg_of("lvm01-p2-head.bin.gz")
    assert (vg.name, vg.uuid, vg.extent_sectors) == (
        "vg_a", "5eed17-0000-0000-0000-0000-0000-0000vg", 8192)
    root, var = vg.volumes
    # the recipe put root at byte 69206016 of the disk, var at 236978176; p2 starts at 68157440
    assert root.segments == (Segment(0, 160 << 11, (69206016 - 68157440) // 512),)
    assert var.segments == (Segment(0, 23 * 8192, (236978176 - 68157440) // 512),)
    assert (root.uuid, var.name, root.skip_reason) == (
        "5eed17-0000-0000-0000-0000-0000-00root", "var", None)
    assert root.first_offset == 1 << 20


def test_extended_lv_maps_as_two_linear_segments_in_lv_order():
    vg = vg_of("vg0-extended-head.bin.gz")
    by = {v.name: v for v in vg.volumes}
    assert set(by) == {"root", "swap", "odd.name+x"}
    # root: extents 0-7 then 12-17 of the PV (1 MiB extents = 2048 sectors, pe_start 2048)
    assert by["root"].dm_table("/dev/mapper/p2") == (
        "0 16384 linear /dev/mapper/p2 2048,16384 12288 linear /dev/mapper/p2 26624")
    assert by["root"].sectors == 14 * 2048
    assert by["odd.name+x"].segments == (Segment(0, 8192, 2048 + 18 * 2048),)


def test_no_label_is_not_a_pv():
    assert parse_pv_header(bytes(HEAD_BYTES)) is None


def test_label_of_another_type_is_refused():
    data = bytearray(head("lvm01-p2-head.bin.gz")[:HEAD_BYTES])
    data[512 + 24:512 + 32] = b"LVM1 001"
    with pytest.raises(GuestLvmUnreadable, match="LVM1 001"):
        parse_pv_header(bytes(data))


def test_bad_metadata_magic_is_refused():
    data = bytearray(head("lvm01-p2-head.bin.gz"))
    data[4096 + 4] ^= 0xFF
    pv = parse_pv_header(bytes(data[:HEAD_BYTES]))
    assert pv is not None
    with pytest.raises(GuestLvmUnreadable, match="magic"):
        metadata_text(bytes(data[:pv.mda_end]), pv)


def test_short_read_of_the_metadata_area_is_refused():
    data = head("lvm01-p2-head.bin.gz")
    pv = parse_pv_header(data[:HEAD_BYTES])
    assert pv is not None
    with pytest.raises(GuestLvmUnreadable, match="bytes of a"):
        metadata_text(data[:pv.mda_end - 512], pv)


def test_metadata_text_wrapping_round_the_ring_is_joined():
    text = b'vg9 {\nid = "x"\n}\n'
    size = 4096
    pv = PvHeader("u", 1 << 20, 1 << 20, 4096, size)
    area = bytearray(4096 + size)
    mda = 4096
    area[mda + 4:mda + 20] = MDA_MAGIC
    offset = size - 7  # 7 bytes at the end of the ring, the rest after the header
    struct.pack_into("<QQ", area, mda + 40, offset, len(text))
    area[mda + offset:mda + size] = text[:7]
    area[mda + MDA_HEADER_SIZE:mda + MDA_HEADER_SIZE + len(text) - 7] = text[7:]
    assert metadata_text(bytes(area), pv) == text.decode()


def test_config_syntax_nested_sections_lists_strings_and_comments():
    cfg = parse_lvm_text('a {\n b = "x \\"q\\"" # note\n c = [ "p", 3 ]\n d { e = -1 }\n}\n'
                       'f = 1.5\n')
    assert cfg == {"a": {"b": 'x "q"', "c": ["p", 3], "d": {"e": -1}}, "f": 1.5}


@pytest.mark.parametrize("text", ["a {", "a = ", "a = [1 2]", "{", "a = }", "a b"])
def test_broken_config_syntax_is_a_clear_error(text):
    with pytest.raises(GuestLvmUnreadable, match="metadata text"):
        parse_lvm_text(text)


def _vg_text(lvs: str, pvs: str = 'pv0 { id = "PVID" pe_start = 2048 pe_count = 10 }') -> str:
    return (f'g {{ id = "VGID" extent_size = 8192 physical_volumes {{ {pvs} }} '
            f'logical_volumes {{ {lvs} }} }}')


PV = PvHeader("PVID", 1 << 30, 1 << 20, 4096, 1 << 20)


@pytest.mark.parametrize("lv,reason", [
    ('t { id = "T" status = ["READ", "VISIBLE"] segment_count = 1 segment1 { start_extent = 0 '
     'extent_count = 2 type = "thin" } }', "thin LV"),
    ('s { id = "S" status = ["VISIBLE"] segment_count = 1 segment1 { start_extent = 0 '
     'extent_count = 2 type = "striped" stripe_count = 2 stripes = ["pv0", 0, "pv1", 0] } }',
     "2-way striped"),
    ('h { id = "H" status = ["READ"] segment_count = 0 }', "hidden LV"),
    ('o { id = "O" status = ["VISIBLE"] segment_count = 1 segment1 { start_extent = 0 '
     'extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv1", 0] } }',
     "another of the VG's 2 PVs"),
])
def test_lvs_that_cannot_be_mapped_carry_their_reason(lv, reason):
    pvs = 'pv0 { id = "PVID" pe_start = 2048 } pv1 { id = "OTHER" pe_start = 2048 }'
    vg = parse_vg(_vg_text(lv, pvs), PV)
    (vol,) = vg.volumes
    assert vol.skip_reason is not None and reason in vol.skip_reason
    assert vol.segments == ()


def test_metadata_that_does_not_name_this_pv_is_refused():
    with pytest.raises(GuestLvmUnreadable, match="not in its metadata"):
        parse_vg(_vg_text("", 'pv0 { id = "SOMEONE" pe_start = 2048 }'), PV)


def test_gap_between_segments_is_refused():
    lv = ('r { id = "R" status = ["VISIBLE"] segment_count = 2 '
          'segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 '
          'stripes = ["pv0", 0] } segment2 { start_extent = 5 extent_count = 1 '
          'type = "striped" stripe_count = 1 stripes = ["pv0", 3] } }')
    with pytest.raises(GuestLvmUnreadable, match="not contiguous"):
        parse_vg(_vg_text(lv), PV)


def test_dm_table_refuses_a_device_path_with_a_separator():
    vol = GuestVolume("g", "V", "r", "R", (Segment(0, 8, 2048),))
    with pytest.raises(ValueError):
        vol.dm_table("/dev/mapper/a,b")


def test_read_argv_reads_whole_sectors_only():
    assert read_argv("/dev/vg/lv", 1024, 4096) == [
        "dd", "if=/dev/vg/lv", "bs=512", "skip=2", "count=8", "status=none"]
    with pytest.raises(ValueError):
        read_argv("/dev/vg/lv", 100, 512)


# An LVM2 label and PV header laid out as lvm2's label.h and format_text/layout.h give them
# (label_header: id, sector, crc, offset, type; pv_header: uuid, size, data areas, metadata
# areas, each list ending in (0, 0)), built here with struct from the layout.
_PV_UUID = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#",
                   min_size=32, max_size=32)
_AREA = st.tuples(st.integers(1, 1 << 40), st.integers(1, 1 << 40))
_MDA = st.tuples(st.integers(1, 1 << 24), st.integers(MDA_HEADER_SIZE + 1, 1 << 24))


def _label(sector, uuid, size, data, meta, *, sector_xl=None, offset_xl=32,
           kind=b"LVM2 001") -> bytes:
    head = bytearray(HEAD_BYTES)
    at = sector * 512
    struct.pack_into("<8sQII8s", head, at, b"LABELONE",
                     sector if sector_xl is None else sector_xl, 0, offset_xl, kind)
    body = uuid.encode("latin-1") + struct.pack("<Q", size)
    for areas in (data, meta):
        body += b"".join(struct.pack("<QQ", *a) for a in (*areas, (0, 0)))
    head[at + offset_xl:at + offset_xl + len(body)] = body
    return bytes(head[:HEAD_BYTES])


@st.composite
def pv_labels(draw):
    fields = {"sector": draw(st.integers(0, 3)), "uuid": draw(_PV_UUID),
              "size": draw(st.integers(0, 1 << 50)),
              "data": draw(st.lists(_AREA, min_size=1, max_size=3)),
              "meta": draw(st.lists(_MDA, min_size=1, max_size=2)),
              "offset_xl": draw(st.sampled_from([32, 64, 200]))}
    return fields


@settings(max_examples=100, deadline=None)
@given(pv_labels())
def test_any_pv_label_gives_its_uuid_size_pe_start_and_first_metadata_area(f):
    pv = parse_pv_header(_label(**f))
    u = f["uuid"]
    assert pv == PvHeader(f"{u[:6]}-{u[6:10]}-{u[10:14]}-{u[14:18]}-{u[18:22]}-{u[22:26]}-"
                          f"{u[26:]}", f["size"], f["data"][0][0], *f["meta"][0])


_LABEL_BREAKS = {
    "another label type": {"kind": b"LVM1 001"},
    "sector field not its sector": {"sector_xl": 7},
    "header offset too small": {"offset_xl": 31},
    "header offset past the sector": {"offset_xl": 512 - 47},
    "no data area": {"data": []},
    "no metadata area": {"meta": []},
    "metadata area no bigger than its header": {"meta": [(4096, MDA_HEADER_SIZE)]},
    "metadata area past 64 MiB": {"meta": [(64 << 20, 4096)]},
    "nine data areas": {"data": [(1, 1)] * 9},
    "uuid not ascii": {"uuid": "\xe9" * 32},
}


@pytest.mark.parametrize("how", sorted(_LABEL_BREAKS))
@settings(max_examples=10, deadline=None)
@given(f=pv_labels())
def test_a_pv_label_with_one_field_wrong_is_refused(how, f):
    with pytest.raises(GuestLvmUnreadable):
        parse_pv_header(_label(**{**f, **_LABEL_BREAKS[how]}))


_VG0 = head("vg0-extended-head.bin.gz")[:1 << 20]


def _bytes_read(data: bytes) -> list[tuple[int, int]]:
    """The byte ranges of a PV head the parsers read, worked out from the layout: the label
    id scanned at the start of each sector up to the label's, the label sector, the metadata
    area's magic and location, and the metadata text it points at."""
    label = next(s * 512 for s in range(4) if data[s * 512:s * 512 + 8] == b"LABELONE")
    mda = parse_pv_header(data[:HEAD_BYTES]).mda_offset
    offset, size = struct.unpack_from("<QQ", data, mda + 40)
    return [*((s, s + 8) for s in range(0, label, 512)), (label, label + 512),
            (mda + 4, mda + 20), (mda + 40, mda + 56), (mda + offset, mda + offset + size)]


_VG0_READ = _bytes_read(_VG0)
_VG0_CLEAN = vg_of("vg0-extended-head.bin.gz")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(0, len(_VG0) - 1),
                 st.sampled_from(_VG0_READ).flatmap(lambda r: st.integers(r[0], r[1] - 1)),
                 st.tuples(st.sampled_from(_VG0_READ), st.integers(0, 63), st.booleans()).map(
                     lambda t: t[0][1] + t[1] if t[2] else max(0, t[0][0] - 1 - t[1]))),
       st.binary(min_size=1, max_size=8))
def test_a_corrupted_pv_head_gives_the_same_vg_or_a_clear_error(position, junk):
    # Corruptions land anywhere in the MiB, in the bytes the parsers read, or within 64
    # bytes before or after them (where a parser reading a little too much would see them).
    data = bytearray(_VG0)
    data[position:position + len(junk)] = junk
    data = bytes(data[:1 << 20])
    touched = any(position < hi and position + len(junk) > lo for lo, hi in _VG0_READ)
    try:
        pv = parse_pv_header(data[:HEAD_BYTES])
        vg = None if pv is None else parse_vg(metadata_text(data[:pv.mda_end], pv), pv)
    except (GuestLvmUnreadable, UnsafeName):  # unreadable, or a name outside LVM's rules
        assert touched, "bytes the parser has no business reading made it fail"
        return
    if not touched:
        assert vg == _VG0_CLEAN  # bytes outside the label and metadata change nothing


# LVM's metadata syntax (lvm.conf(5) "SYNTAX", as vgcfgbackup writes it): sections
# "name { ... }", settings "name = value", values a number, a "string" with \\ and \"
# escaped, or a [list] of them; a "#" comment runs to the end of the line.
class _Decimal(str):
    """A number written with a decimal point, told apart from a string value."""


_CFG_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.+-]{0,8}", fullmatch=True)
_CFG_SCALAR = (st.integers(-(2**63), 2**64)
               | st.text(st.characters(blacklist_categories=("Cs",))
                         | st.sampled_from('"\\#{}[]=, \n'), max_size=12)
               | st.builds(lambda a, b: _Decimal(f"{a}.{b}"), st.integers(-999, 999),
                           st.integers(0, 999)))
_CFG_VALUE = _CFG_SCALAR | st.lists(_CFG_SCALAR, max_size=4)
_CFG_TREE = st.recursive(st.dictionaries(_CFG_NAME, _CFG_VALUE, max_size=4),
                         lambda inner: st.dictionaries(_CFG_NAME, _CFG_VALUE | inner,
                                                       max_size=4), max_leaves=12)


def _cfg_scalar(value) -> tuple[str, object]:
    """(the text vgcfgbackup writes for a value, what the parser must give back)."""
    if isinstance(value, int):
        return str(value), value
    if isinstance(value, _Decimal):
        return str(value), float(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', str(value)


def _cfg_render(tree: dict, sep) -> tuple[str, dict]:
    out, expected = [], {}
    for key, value in tree.items():
        if isinstance(value, dict):
            text, expected[key] = _cfg_render(value, sep)
            out.append(f"{key}{sep()}{{{sep()}{text}}}")
        elif isinstance(value, list):
            items = [_cfg_scalar(v) for v in value]
            out.append(f"{key} = [" + ("," + sep()).join(t for t, _ in items) + "]")
            expected[key] = [v for _, v in items]
        else:
            text, expected[key] = _cfg_scalar(value)
            out.append(f"{key}{sep()}={sep()}{text}")
    return "".join(part + sep() for part in out), expected


@st.composite
def lvm_configs(draw):
    seps = st.sampled_from([" ", "\n", "\t", "  \n\t", " # a comment {\n"])
    return _cfg_render(draw(_CFG_TREE), lambda: draw(seps))


@settings(max_examples=60, deadline=None)
@given(lvm_configs())
def test_any_lvm_config_text_gives_back_its_sections_settings_and_values(generated):
    text, expected = generated
    assert parse_lvm_text(text) == expected


@pytest.mark.parametrize("text", [
    'a { b = 1\n', 'a { b = 1 } }', 'a = ', 'a 1', 'a = [1 2]', 'a = [1,', 'a = "open',
    'a = "x\\"', 'a = {', '= 1', 'a = b', 'a = [[1]]', 'a { b { c = 1 }', 'a = 1 = 2',
])
def test_lvm_config_text_one_token_off_is_refused(text):
    with pytest.raises(GuestLvmUnreadable, match="metadata text"):
        parse_lvm_text(text)


# -- preflight: read_layout of a disk whose p2 is a guest PV ----------------

class DiskRunner:
    """Answers sfdisk, blkid and dd for one image held in memory (lvm01's layout)."""

    host = "dom0-a"

    def __init__(self, image: bytes, sfdisk: str, probes: dict[int, str]) -> None:
        self.image, self.sfdisk, self.probes = image, sfdisk, probes
        self.calls: list[list[str]] = []
        # Each filesystem's superblock read (fsparams): a recorded ext4 one.
        self.superblocks = {at: EXT4_HEAD for at, probe in probes.items() if "TYPE=ext4" in probe}

    def run(self, argv, *, check=True, timeout=None, input=None, ok_codes=(0,), env=None):
        played = play_reads(self.host, argv, lambda a: self.run(a, check=False))
        if played is not None:
            return played
        argv = list(argv)
        self.calls.append(argv)
        out = ""
        if argv[0] == "sfdisk":
            out = self.sfdisk
        elif argv[0] == "blkid":
            offset = int(argv[argv.index("-O") + 1]) if "-O" in argv else 0
            out = self.probes.get(offset, "")
        elif argv[0] == "dd":
            opts = dict(a.split("=", 1) for a in argv[1:])
            skip, count = int(opts["skip"]) * 512, int(opts["count"]) * 512
            data = self.image[skip:skip + count]
            if count == SUPERBLOCK_BYTES and skip in self.superblocks:
                data = self.superblocks[skip]
            out = data.decode("utf-8", "surrogateescape")
        return CommandResult(self.host, tuple(argv), 0 if out or argv[0] != "blkid" else 2,
                             out, "", 0.0)


LVM01_SFDISK = """{"partitiontable": {"label": "dos", "id": "0x5eed0017",
 "device": "/dev/vg_a/lvm01", "unit": "sectors", "sectorsize": 512, "partitions": [
 {"node": "/dev/vg_a/lvm01p1", "start": 2048, "size": 131072, "type": "83", "bootable": true},
 {"node": "/dev/vg_a/lvm01p2", "start": 133120, "size": 522240, "type": "8e"}]}}"""
P2 = 133120 * 512
EXT4_HEAD = (DATA.parent / "fsparams" / "ext4-new.head.bin").read_bytes()


def lvm01_runner() -> DiskRunner:
    image = bytearray(P2 + (1 << 20))
    image[P2:P2 + (1 << 20)] = head("lvm01-p2-head.bin.gz")
    probes = {
        1 << 20: "DEVNAME=x\nUUID=5eed0017-0000-4000-8000-000000000001\nTYPE=ext4\n",
        P2: "DEVNAME=x\nUUID=5eed17-0000-0000-0000-0000-0000-0000p2\nTYPE=LVM2_member\n"
            "USAGE=raid\n",
        P2 + (1 << 20): "DEVNAME=x\nUUID=5eed0017-0000-4000-8000-000000000002\n"
                        "LABEL=lvm01-root\nTYPE=ext4\n",
        P2 + 329728 * 512: "DEVNAME=x\nUUID=5eed0017-0000-4000-8000-000000000003\n"
                           "LABEL=lvm01-var\nTYPE=ext4\n",
    }
    return DiskRunner(bytes(image), LVM01_SFDISK, probes)


def test_read_layout_lists_each_guest_lv_after_its_pv_without_lvm_commands():
    runner = lvm01_runner()
    table, fss = read_layout(runner, "/dev/vg_a/lvm01", "xvda")
    assert [f.name for f in fss] == ["xvda1", "xvda2", "xvda2.vg_a.root", "xvda2.vg_a.var"]
    root = fss[2]
    assert root.volume is not None and root.volume.vg == "vg_a"
    assert (root.probe.type, root.probe.label) == ("ext4", "lvm01-root")
    assert root.partition is not None and root.partition.number == 2
    assert {c[0] for c in runner.calls} == {"sfdisk", "blkid", "dd"}  # never lvs/vgchange
    assert all(c[1] == "if=/dev/vg_a/lvm01" for c in runner.calls if c[0] == "dd")


def test_unreadable_guest_pv_names_the_partition_and_host():
    runner = lvm01_runner()
    runner.image = runner.image[:P2 + 4096]  # label but no metadata area
    with pytest.raises(GuestLvmUnreadable, match=r"\[dom0-a\] guest LVM on xvda2 "):
        read_layout(runner, "/dev/vg_a/lvm01", "xvda")


# -- plan ---------------------------------------------------------------------

def lvm01_facts(target_runner: DiskRunner | None = None) -> BackupFacts:
    table, fss = read_layout(lvm01_runner(), "/dev/vg_a/lvm01", "xvda")
    ttable, tfss = read_layout(target_runner or lvm01_runner(), "/dev/vg_b/lvm01", "xvda")
    disk = DomainDisk("xvda", "/dev/vg_a/lvm01", "block", "disk", "xen", False, False, None)
    size = 320 << 20
    d = DiskFacts(disk, lv("vg_a", "lvm01", size), table, fss,
                  lv("vg_b", "lvm01", size, "-wi-a-----"), ttable, tfss)
    # named web01: the unit config (fakes.CONFIG_TEXT) configures that domain
    return BackupFacts("web01", "dom0-a", "dom0-b", "root@dom0-b", 22, (d,))


def test_plan_maps_guest_lvs_read_only_on_the_source_and_writable_on_the_peer(tmp_path):
    plan = plan_backup(lvm01_facts(), config(tmp_path), "R1")
    assert [f.name for f in plan.filesystems] == ["xvda1", "xvda2.vg_a.root", "xvda2.vg_a.var"]
    assert any("xvda2: guest LVM physical volume" in s for s in plan.skipped)
    actions = [(s.role, s.action) for s in plan.steps]
    lvmaps = [s for s in plan.steps if s.action == "lvmap"]
    assert len(lvmaps) == 4
    src_root = volume_map_name("R1", "web01", "src", "xvda2.vg_a.root")
    dst_var = volume_map_name("R1", "web01", "dst", "xvda2.vg_a.var")
    assert src_root == "domubk-R1-web01-src-" + sha256(b"xvda2.vg_a.root").hexdigest()[:16]
    src = next(s for s in lvmaps if s.role == "source" and src_root in s.resource)
    assert src.argv == ("dmsetup", "create", "--concise",
                        f"{src_root},,,ro,"
                        "0 327680 linear /dev/mapper/vg_a-domubk--R1--web01--xvdap2 2048")
    assert src.undo == ("dmsetup", "remove", "--retry", src_root)
    assert "guest LV vg_a/root" in src.note
    dst = next(s for s in lvmaps if s.role == "peer" and dst_var in s.resource)
    assert dst.argv[3].startswith(f"{dst_var},,,rw,0 188416 linear "
                                  "/dev/mapper/domubk-R1-web01-xvdap2 329728")
    # each side: the partition maps first, the LV maps next, mounts after
    for host in ("source", "peer"):
        seq = [a for h, a in actions if h == host]
        assert seq.index("map") < seq.index("lvmap") < seq.index("mount")
    root = next(f for f in plan.filesystems if f.name == "xvda2.vg_a.root")
    assert root.source_device == f"/dev/mapper/{src_root}"
    assert (root.guest_vg, root.guest_lv, root.partuuid) == ("vg_a", "root", None)
    mount = next(s for s in plan.steps if s.action == "mount" and s.fs == root.name
                 and s.role == "source")
    assert "ro" in mount.argv[4].split(",") and mount.argv[-1].endswith("/xvda2.vg_a.root")


def test_standby_whose_guest_lv_moved_is_a_layout_mismatch(tmp_path):
    target = lvm01_runner()
    image = bytearray(target.image)
    text_at = P2 + 4096 + 512
    assert image.find(b'"pv0", 40', text_at) > 0
    at = image.find(b'"pv0", 40', text_at)
    image[at:at + 9] = b'"pv0", 41'  # var one extent further on the standby
    target.image = bytes(image)
    with pytest.raises(LayoutMismatch, match=r"xvda2\.vg_a\.var: guest LV vg_a/var differs"):
        plan_backup(lvm01_facts(target), config(tmp_path), "R1")


def test_long_guest_names_get_a_digest_within_the_dm_name_limit():
    from toolkit.plan import volume_map_name

    name = volume_map_name("20261127T101010-abcd", "d" * 40, "src", "xvda2." + "v" * 60 + ".x")
    assert len(name) <= 127 and name.startswith("domubk-20261127T101010-abcd-" + "d" * 40
                                                  + "-src-")


# -- guest fstab ----------------------------------------------------------------

def _guest(name: str, vg: str | None, lv_name: str | None, part: int, uuid: str):
    return GuestFilesystem(name, "xvda", 0, part,
                           parse_blkid_export(f"DEVNAME=x\nUUID={uuid}\nTYPE=ext4\n"),
                           volume=(vg, lv_name) if vg and lv_name else None)


def test_fstab_names_guest_lvs_by_mapper_and_vg_paths_with_dm_hyphen_escaping():
    fss = [_guest("xvda1", None, None, 1, "u1"),
           _guest("xvda2.my-vg.root", "my-vg", "root", 2, "u2"),
           _guest("xvda2.my-vg.var-log", "my-vg", "var-log", 2, "u3")]
    entries, _ = parse_fstab("/dev/mapper/my--vg-root / ext4 defaults 0 1\n"
                             "/dev/my-vg/var-log /var/log ext4 defaults 0 2\n"
                             "/dev/xvda1 /boot ext4 defaults 0 2\n")
    assert resolve_fstab(entries, fss) == {"xvda2.my-vg.root": "/", "xvda2.my-vg.var-log":
                                           "/var/log", "xvda1": "/boot"}


def test_a_partition_device_name_never_matches_a_guest_lv_on_it():
    fss = [_guest("xvda2.vg.root", "vg", "root", 2, "u2")]
    entries, _ = parse_fstab("/dev/xvda2 / ext4 defaults 0 1\n")
    from toolkit.errors import FstabError

    with pytest.raises(FstabError, match="names no filesystem"):
        resolve_fstab(entries, fss)


# -- recover ------------------------------------------------------------------

RUN = "20261127T085229Z-ce91"


def _vm(role: str, fs: str) -> str:
    return volume_map_name(RUN, "lvm01", role, fs)


KERNEL = [
    f"vg_a-domubk--{RUN.replace('-', '--')}--lvm01--xvda",
    f"vg_a-domubk--{RUN.replace('-', '--')}--lvm01--xvda-cow",
    f"vg_a-domubk--{RUN.replace('-', '--')}--lvm01--xvdap1",
    f"vg_a-domubk--{RUN.replace('-', '--')}--lvm01--xvdap2",
    _vm("src", "xvda2.vg_a.root"), _vm("src", "xvda2.vg_a.var"),
    f"domubk-{RUN}-lvm01-xvda", f"domubk-{RUN}-lvm01-xvdap1", f"domubk-{RUN}-lvm01-xvdap2",
    _vm("dst", "xvda2.vg_a.root"), "vg_a-root", f"domubk-{RUN}-web01-xvda",
]


def test_source_recover_takes_its_guest_lv_maps_before_the_partition_maps():
    picked = owned_maps(KERNEL, "source", "lvm01", ["vg_a"], "p")
    assert set(picked[:2]) == {_vm("src", "xvda2.vg_a.root"), _vm("src", "xvda2.vg_a.var")}
    assert picked[2:] == [f"vg_a-domubk--{RUN.replace('-', '--')}--lvm01--xvdap1",
                          f"vg_a-domubk--{RUN.replace('-', '--')}--lvm01--xvdap2"]


def test_peer_recover_takes_its_guest_lv_maps_first_and_never_the_sources():
    picked = owned_maps(KERNEL, "peer", "lvm01", [], "p")
    assert picked == [_vm("dst", "xvda2.vg_a.root"), f"domubk-{RUN}-lvm01-xvdap1",
                      f"domubk-{RUN}-lvm01-xvdap2", f"domubk-{RUN}-lvm01-xvda"]


# -- init-standby ---------------------------------------------------------------

def test_init_standby_copies_the_pv_head_raw_and_makes_each_guest_lv_filesystem(tmp_path):
    from toolkit.standby import mkfs_argv, plan_standby

    sp = plan_standby(lvm01_facts(), config(tmp_path), "R1", force=True)
    copy = next(s for s in sp.steps if s.action == "copy" and "pvhead" in " ".join(s.argv))
    assert copy.role == "source"
    assert f"skip={P2}" in copy.argv and f"count={1 << 20}" in copy.argv  # label + metadata
    assert copy.argv[1] == "if=/dev/vg_a/lvm01"
    peer = [s for s in sp.steps if s.role == "peer"]
    write = next(s for s in peer if s.action == "write" and "pvhead" in " ".join(s.argv))
    assert write.argv[2] == "of=/dev/mapper/domubk-R1-web01-xvdap2"
    lvmaps = [s for s in peer if s.action == "lvmap"]
    dst_root = volume_map_name("R1", "web01", "dst", "xvda2.vg_a.root")
    assert [s.resource for s in lvmaps] == [f"/dev/mapper/{dst_root}", "/dev/mapper/"
                                            + volume_map_name("R1", "web01", "dst",
                                                              "xvda2.vg_a.var")]
    assert all(s.undo and ",,,rw," in s.argv[3] for s in lvmaps)
    mkfs = [s.argv for s in peer if s.action == "mkfs"]
    # the guest LV's filesystem is made with its source's parameters (from its superblock)
    assert tuple(mkfs_argv("ext4", f"/dev/mapper/{dst_root}",
                           "5eed0017-0000-4000-8000-000000000002", "lvm01-root",
                           parse_params("ext4", EXT4_HEAD))) in mkfs
    # never a filesystem on the PV partition itself, and never an LVM command
    assert not any("/dev/mapper/domubk-R1-web01-xvdap2" in a for a in mkfs)
    assert not any(s.argv[0] in ("pvcreate", "vgcreate", "lvcreate", "vgchange", "lvm")
                   for s in sp.steps)
    order = [(s.action, s.argv[-1]) for s in peer]
    root_dev = f"/dev/mapper/{dst_root}"
    made = next(i for i, s in enumerate(peer) if s.action == "mkfs" and root_dev in s.argv)
    assert [a for a, _ in order].index("map") < [a for a, _ in order].index("lvmap") < made
    assert not sp.refusals
