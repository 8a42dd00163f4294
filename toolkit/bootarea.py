"""The boot area follows the guest: copied from the snapshot to the standby on every run.

A guest's boot loader lives outside its filesystems: the boot code of the first
sector, the gap before the first partition of an msdos disk (where GRUB embeds
its core image) and any BIOS boot partition of a GPT disk. ``grub-install``
rewrites them on every GRUB upgrade, so a standby whose boot area was copied
once by ``init-standby`` would boot a stale loader against new files.

Each run copies these byte ranges from the snapshot to the peer's alias of the
standby, after the partition tables were proven equal, and never a byte of the
tables themselves: on msdos the table and disk signature (bytes 440-511 of the
first sector) are left alone, on GPT everything but the first sector's boot
code and the BIOS boot partitions (the GPT headers and entries hold the
standby's own size). The read and the write are two steps of the plan, shown
with their exact commands.
"""

from __future__ import annotations

from dataclasses import dataclass

from .facts.partitions import PartitionTable

BIOS_BOOT = "21686148-6449-6e6f-744e-656564454649"
BOOT_CODE = 440  # bytes of boot code before the msdos disk signature and table
GAP_MAX = 1 << 20  # the gap before the first partition copied, at most this much
_CHUNK = 65536


@dataclass(frozen=True)
class ByteRange:
    """``length`` bytes at byte ``start`` of a disk, with what they are."""

    start: int
    length: int
    what: str


def boot_ranges(table: PartitionTable) -> tuple[ByteRange, ...]:
    """The byte ranges of a disk's boot area; none for a disk without a partition table."""
    if table.label is None:
        return ()
    ss = table.sector_size
    ranges = [ByteRange(0, BOOT_CODE, "boot code of the first sector")]
    if table.label == "dos":
        first = min((p.start for p in table.partitions), default=GAP_MAX // ss) * ss
        gap_end = min(first, GAP_MAX)
        if gap_end > ss:
            ranges.append(ByteRange(ss, gap_end - ss, "gap before the first partition"))
    for part in table.partitions:
        if part.type.lower() == BIOS_BOOT:
            ranges.append(ByteRange(part.start * ss, part.size * ss,
                                    f"BIOS boot partition {part.number}"))
    return tuple(ranges)


def read_argv(device: str, r: ByteRange) -> tuple[str, ...]:
    """dd printing ``r`` of ``device`` on stdout."""
    return ("dd", f"if={device}", f"bs={_CHUNK}", f"skip={r.start}", f"count={r.length}",
            "iflag=skip_bytes,count_bytes,fullblock", "status=none")


def write_argv(device: str, r: ByteRange) -> tuple[str, ...]:
    """dd writing stdin over ``r`` of ``device``: exactly that range, fsynced, never creating."""
    return ("dd", f"of={device}", f"bs={_CHUNK}", f"seek={r.start}", f"count={r.length}",
            "iflag=count_bytes,fullblock", "oflag=seek_bytes",
            "conv=notrunc,nocreat,fsync", "status=none")
