"""A filesystem's creation parameters, read from its own superblock.

``init-standby`` makes each standby filesystem with the source's parameters,
not with the peer's ``mkfs`` defaults: a guest made years ago (ext3, ext4
without ``metadata_csum`` or ``64bit``, 128-byte inodes, one inode per 2 KiB)
would otherwise get a standby with other features and fewer inodes, one that
a later backup fills up with small files, or that the guest's old kernel or
boot loader cannot read. Every backup compares these parameters on both hosts
(a difference is a layout mismatch).

Preflight reads the first ``SUPERBLOCK_BYTES`` of each filesystem with one
``dd`` (read-only, at the partition's offset, no loop device): the ext2/3/4
superblock (bytes 1024-2047), the XFS superblock (sector 0) and the FAT boot
sector (sector 0) all lie there. The parsers here are pure; ``mkfs_options``
turns the parameters into the options of ``mkfs.ext*``, ``mkfs.xfs`` and
``mkfs.vfat`` that reproduce them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import ParseError

SECTOR = 512
# What preflight reads of each filesystem: ext's superblock ends at byte 2048.
SUPERBLOCK_BYTES = 2048
EXT_TYPES = ("ext2", "ext3", "ext4")
PARAM_TYPES = (*EXT_TYPES, "xfs", "vfat")
MiB = 1 << 20

# -- ext2/3/4 ---------------------------------------------------------------

EXT_MAGIC = 0xEF53
# e2fsprogs' names (lib/e2p/feature.c), as mke2fs -O and dumpe2fs spell them.
_EXT_COMPAT = {
    0x0001: "dir_prealloc", 0x0002: "imagic_inodes", 0x0004: "has_journal",
    0x0008: "ext_attr", 0x0010: "resize_inode", 0x0020: "dir_index", 0x0040: "lazy_bg",
    0x0100: "snapshot_bitmap", 0x0200: "sparse_super2", 0x0400: "fast_commit",
    0x0800: "stable_inodes", 0x1000: "orphan_file",
}
_EXT_RO_COMPAT = {
    0x0001: "sparse_super", 0x0002: "large_file", 0x0008: "huge_file", 0x0010: "uninit_bg",
    0x0020: "dir_nlink", 0x0040: "extra_isize", 0x0080: "snapshot", 0x0100: "quota",
    0x0200: "bigalloc", 0x0400: "metadata_csum", 0x0800: "replica", 0x1000: "read-only",
    0x2000: "project", 0x4000: "shared_blocks", 0x8000: "verity", 0x10000: "orphan_present",
}
_EXT_INCOMPAT = {
    0x0001: "compression", 0x0002: "filetype", 0x0004: "needs_recovery", 0x0008: "journal_dev",
    0x0010: "meta_bg", 0x0040: "extent", 0x0080: "64bit", 0x0100: "mmp", 0x0200: "flex_bg",
    0x0400: "ea_inode", 0x1000: "dirdata", 0x2000: "metadata_csum_seed", 0x4000: "large_dir",
    0x8000: "inline_data", 0x10000: "encrypt", 0x20000: "casefold",
}
# Flags that say what state a filesystem is in, not how it was made: a snapshot of a
# running guest has needs_recovery set, so they are neither compared nor passed to mkfs.
EXT_STATE_FEATURES = frozenset({"needs_recovery", "orphan_present"})
_JNL_BACKUP_BLOCKS = 1


@dataclass(frozen=True)
class ExtParams:
    """What ``dumpe2fs -h`` shows of how an ext2/3/4 filesystem was made."""

    features: tuple[str, ...]  # sorted, state flags left out
    block_size: int
    inode_size: int
    inode_count: int
    block_count: int
    reserved_blocks: int
    blocks_per_group: int
    revision: int
    flex_bg_size: int | None = None  # flex_bg only
    cluster_size: int | None = None  # bigalloc only
    journal_bytes: int | None = None  # an internal journal whose size the superblock records

    def compared(self) -> dict[str, object]:
        """What must match on the standby, by name: features, block and inode size, inode count."""
        return {"features": self.features, "block size": self.block_size,
                "inode size": self.inode_size, "inode count": self.inode_count}


def _flag_names(value: int, names: dict[int, str], kind: str) -> list[str]:
    out = []
    for bit in range(32):
        mask = 1 << bit
        if value & mask:
            out.append(names.get(mask, f"FEATURE_{kind}{bit}"))
    return out


def parse_ext(head: bytes) -> ExtParams | None:
    """The parameters in an ext2/3/4 superblock (``head`` starts at the filesystem's byte 0)."""
    sb = head[1024:2048]
    if len(sb) < 1024 or struct.unpack_from("<H", sb, 0x38)[0] != EXT_MAGIC:
        return None
    (inodes, blocks_lo, r_blocks_lo, _free_blocks, _free_inodes, _first_data, log_block,
     log_cluster, blocks_per_group) = struct.unpack_from("<9I", sb, 0)
    revision = struct.unpack_from("<I", sb, 0x4C)[0]
    compat, incompat, ro_compat = struct.unpack_from("<3I", sb, 0x5C)
    if log_block > 6 or log_cluster > 30:
        raise ParseError(f"ext superblock: block size 1024<<{log_block} is not one ext uses")
    block_size = 1024 << log_block
    inode_size = struct.unpack_from("<H", sb, 0x58)[0] if revision >= 1 else 128
    features = (_flag_names(compat, _EXT_COMPAT, "C") + _flag_names(ro_compat, _EXT_RO_COMPAT, "R")
                + _flag_names(incompat, _EXT_INCOMPAT, "I"))
    blocks_hi, r_blocks_hi = 0, 0
    if incompat & 0x0080:  # 64bit
        blocks_hi, r_blocks_hi = struct.unpack_from("<2I", sb, 0x150)
    flex = None
    if incompat & 0x0200:
        flex = 1 << sb[0x174]
    cluster = (1024 << log_cluster) if ro_compat & 0x0200 else None
    journal = None
    journal_inum = struct.unpack_from("<I", sb, 0xE0)[0]
    if compat & 0x0004 and journal_inum and sb[0xFD] == _JNL_BACKUP_BLOCKS:
        size_hi, size_lo = struct.unpack_from("<2I", sb, 0x10C + 15 * 4)
        journal = (size_hi << 32) | size_lo or None
    return ExtParams(
        features=tuple(sorted(f for f in features if f not in EXT_STATE_FEATURES)),
        block_size=block_size, inode_size=inode_size, inode_count=inodes,
        block_count=(blocks_hi << 32) | blocks_lo,
        reserved_blocks=(r_blocks_hi << 32) | r_blocks_lo,
        blocks_per_group=blocks_per_group, revision=revision, flex_bg_size=flex,
        cluster_size=cluster, journal_bytes=journal)


def ext_mkfs_options(p: ExtParams) -> tuple[list[str], list[str]]:
    """mke2fs options (before the device) and its size argument (after it) that make ``p``."""
    opts = ["-b", str(p.block_size)]
    if p.revision == 0:
        opts += ["-r", "0"]
    else:
        # "none" first: only the source's features, none of this mke2fs's defaults.
        opts += ["-O", ",".join(("none", *p.features)), "-I", str(p.inode_size)]
    opts += ["-N", str(p.inode_count), "-g", str(p.blocks_per_group)]
    if p.flex_bg_size is not None:
        opts += ["-G", str(p.flex_bg_size)]
    if p.cluster_size is not None:
        opts += ["-C", str(p.cluster_size)]
    if p.journal_bytes and p.journal_bytes % MiB == 0:
        opts += ["-J", f"size={p.journal_bytes // MiB}"]
    opts += ["-m", reserved_percent(p.reserved_blocks, p.block_count)]
    return opts, [str(p.block_count)]


def reserved_percent(reserved: int, blocks: int) -> str:
    """The -m percentage from which mke2fs computes exactly ``reserved`` blocks.

    mke2fs reserves ``int(percent * blocks / 100)``; half a block above the
    wanted count survives the rounding of the decimal text.
    """
    if reserved <= 0 or blocks <= 0:
        return "0"
    return f"{min(50.0, (reserved + 0.5) * 100 / blocks):.12g}"


# -- XFS ----------------------------------------------------------------------

XFS_MAGIC = b"XFSB"
XFS_MIN_LOG = 64 * MiB
_XFS_V4_FLAGS = {0x0010: "attr", 0x0400: "logv2", 0x1000: "extflg", 0x2000: "dirv2",
                 0x4000: "ascii-ci"}
_XFS_FEATURES2 = {0x0002: "lazy-count", 0x0008: "attr2", 0x0080: "projid32bit", 0x0200: "ftype"}
_XFS_RO_COMPAT = {0x1: "finobt", 0x2: "rmapbt", 0x4: "reflink", 0x8: "inobtcount"}
_XFS_INCOMPAT = {0x1: "ftype", 0x2: "sparse", 0x4: "meta_uuid", 0x8: "bigtime", 0x20: "nrext64"}


@dataclass(frozen=True)
class XfsParams:
    """What ``xfs_info`` shows of how an XFS filesystem was made."""

    crc: bool
    features: tuple[str, ...]  # sorted: finobt, reflink, rmapbt, sparse, bigtime, ftype, ...
    block_size: int
    sector_size: int
    inode_size: int
    agcount: int
    agblocks: int
    data_blocks: int
    log_blocks: int
    log_internal: bool
    dir_block_size: int
    imax_pct: int
    stripe_unit: int  # blocks
    stripe_width: int  # blocks

    def compared(self) -> dict[str, object]:
        """What must match on the standby, by name: features (crc among them), block and
        inode size, allocation group count."""
        return {"features": (("crc",) if self.crc else ()) + self.features,
                "block size": self.block_size, "inode size": self.inode_size,
                "agcount": self.agcount}


def parse_xfs(head: bytes) -> XfsParams | None:
    """The parameters in the primary XFS superblock (sector 0, big-endian)."""
    if len(head) < SECTOR or head[:4] != XFS_MAGIC:
        return None
    block_size, data_blocks = struct.unpack_from(">IQ", head, 4)
    logstart = struct.unpack_from(">Q", head, 48)[0]
    agblocks, agcount, _rbm, log_blocks = struct.unpack_from(">4I", head, 84)
    version, sector_size, inode_size = struct.unpack_from(">3H", head, 100)
    imax_pct = head[127]
    stripe_unit, stripe_width = struct.unpack_from(">2I", head, 184)
    dirblklog = head[192]
    features2 = struct.unpack_from(">I", head, 200)[0]
    ro_compat, incompat = struct.unpack_from(">2I", head, 212)
    crc = (version & 0xF) == 5
    feats: set[str] = set()
    if crc:
        feats |= set(_flag_names(ro_compat, _XFS_RO_COMPAT, "R"))
        feats |= set(_flag_names(incompat, _XFS_INCOMPAT, "I"))
        feats.discard("meta_uuid")  # set by xfs_admin -U, not by mkfs
        feats.add("ftype")  # always there on v5
    else:
        feats |= {n for m, n in _XFS_V4_FLAGS.items() if version & m}
        if version & 0x8000:
            feats |= {n for m, n in _XFS_FEATURES2.items() if features2 & m}
    return XfsParams(
        crc=crc, features=tuple(sorted(feats)), block_size=block_size, sector_size=sector_size,
        inode_size=inode_size, agcount=agcount, agblocks=agblocks, data_blocks=data_blocks,
        log_blocks=log_blocks, log_internal=logstart != 0, dir_block_size=block_size << dirblklog,
        imax_pct=imax_pct, stripe_unit=stripe_unit, stripe_width=stripe_width)


def xfs_mkfs_options(p: XfsParams) -> list[str]:
    """mkfs.xfs options that make ``p`` (an external log's size stays mkfs's own)."""
    on = set(p.features)

    def flag(name: str) -> str:
        return f"{name}={int(name in on)}"

    data = [f"agsize={p.agblocks * p.block_size}", f"size={p.data_blocks * p.block_size}"]
    if p.stripe_unit and p.stripe_width:
        data += [f"sunit={p.stripe_unit * p.block_size // SECTOR}",
                 f"swidth={p.stripe_width * p.block_size // SECTOR}"]
    inode = [f"size={p.inode_size}", f"maxpct={p.imax_pct}"]
    log_bytes = p.log_blocks * p.block_size
    # mkfs.xfs 5.19 and later refuse a log under 64 MiB (older ones made them): such a
    # log gets that mkfs's own size, which only changes how much metadata a
    # transaction may hold, never what a kernel can read.
    log = [f"size={log_bytes}"] if p.log_internal and log_bytes >= XFS_MIN_LOG else []
    naming = [f"size={p.dir_block_size}"]
    if p.crc:
        meta = ["crc=1", *(flag(n) for n in ("finobt", "reflink", "rmapbt", "inobtcount",
                                             "bigtime"))]
        inode.append(flag("sparse"))
        if "nrext64" in on:
            inode.append("nrext64=1")
    else:
        meta = ["crc=0"]
        inode += ["attr=2" if "attr2" in on else "attr=1", flag("projid32bit")]
        naming.append(flag("ftype"))
        if p.log_internal:
            log.append(flag("lazy-count"))
    opts = ["-b", f"size={p.block_size}", "-s", f"size={p.sector_size}",
            "-m", ",".join(meta), "-i", ",".join(inode), "-d", ",".join(data),
            "-n", ",".join(naming)]
    if log:
        opts += ["-l", ",".join(log)]
    return opts


# -- FAT ----------------------------------------------------------------------


@dataclass(frozen=True)
class FatParams:
    """What a FAT boot sector says of how the filesystem was made."""

    fat_size: int  # 12, 16 or 32
    sector_size: int
    cluster_sectors: int
    reserved_sectors: int
    fats: int
    root_entries: int
    total_sectors: int
    hidden_sectors: int

    @property
    def cluster_size(self) -> int:
        """Bytes per cluster."""
        return self.cluster_sectors * self.sector_size

    def compared(self) -> dict[str, object]:
        """What must match on the standby, by name: FAT size, cluster and sector size."""
        return {"FAT size": self.fat_size, "cluster size": self.cluster_size,
                "sector size": self.sector_size}


def parse_fat(head: bytes) -> FatParams | None:
    """The parameters in a FAT boot sector; the FAT size from the cluster count, as Microsoft's."""
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        return None
    bps, spc, reserved, fats, root_entries, total16 = struct.unpack_from("<HBHBHH", head, 11)
    fat16_sectors = struct.unpack_from("<H", head, 22)[0]
    hidden, total32, fat32_sectors = struct.unpack_from("<3I", head, 28)
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or not fats:
        return None
    fat_sectors = fat16_sectors or fat32_sectors
    total = total16 or total32
    root_sectors = -(-root_entries * 32 // bps)
    data = total - (reserved + fats * fat_sectors + root_sectors)
    clusters = data // spc
    fat_size = 12 if clusters < 4085 else 16 if clusters < 65525 else 32
    return FatParams(fat_size=fat_size, sector_size=bps, cluster_sectors=spc,
                     reserved_sectors=reserved, fats=fats, root_entries=root_entries,
                     total_sectors=total, hidden_sectors=hidden)


def fat_mkfs_options(p: FatParams) -> tuple[list[str], list[str]]:
    """mkfs.vfat options (before the device) and its block count (after it) that make ``p``."""
    opts = ["-F", str(p.fat_size), "-s", str(p.cluster_sectors), "-S", str(p.sector_size),
            "-R", str(p.reserved_sectors), "-f", str(p.fats), "-h", str(p.hidden_sectors)]
    if p.fat_size != 32:
        opts += ["-r", str(p.root_entries)]
    size = p.total_sectors * p.sector_size
    return opts, ([str(size // 1024)] if size % 1024 == 0 else [])


# -- all of them --------------------------------------------------------------

FsParams = ExtParams | XfsParams | FatParams


def parse_params(fstype: str, head: bytes) -> FsParams | None:
    """The parameters of a ``fstype`` filesystem from its first bytes; None for other types.

    Raises ParseError when blkid's type and the superblock disagree.
    """
    if fstype in EXT_TYPES:
        found: FsParams | None = parse_ext(head)
    elif fstype == "xfs":
        found = parse_xfs(head)
    elif fstype == "vfat":
        found = parse_fat(head)
    else:
        return None
    if found is None:
        raise ParseError(f"blkid says {fstype}, but its first {len(head)} bytes hold no "
                         f"{fstype} superblock")
    return found


def read_argv(device: str, offset: int) -> list[str]:
    """``dd`` reading the superblock area of the filesystem at byte ``offset`` (never writes)."""
    if offset % SECTOR:
        raise ValueError("offset must be whole sectors")
    return ["dd", f"if={device}", f"bs={SECTOR}", f"skip={offset // SECTOR}",
            f"count={SUPERBLOCK_BYTES // SECTOR}", "status=none"]


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value)


def param_differences(name: str, source: FsParams | None, standby: FsParams | None) -> list[str]:
    """Each parameter of filesystem ``name`` that differs on the standby, as a sentence."""
    if source is None or standby is None or type(source) is not type(standby):
        return []
    a, b = source.compared(), standby.compared()
    out = []
    for key, want in a.items():
        have = b[key]
        if want == have:
            continue
        if key == "features":
            assert isinstance(want, tuple) and isinstance(have, tuple)
            lacks = sorted(set(want) - set(have))
            extra = sorted(set(have) - set(want))
            parts = ([f"lacks {','.join(lacks)}"] if lacks else []) + (
                [f"has {','.join(extra)} too"] if extra else [])
            out.append(f"{name}: features differ, the standby {' and '.join(parts)} (source: "
                       f"{_show(want)})")
        else:
            out.append(f"{name}: {key} {_show(want)} on source, {_show(have)} on standby")
    return out
