"""Where a recipe's partitions, volumes and tables lie on the disk, and the text written there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import GuestRecipe, PartitionRecipe

MIB = 1024 * 1024
SECTOR = 512
# Where a guest PV's first extent starts (LVM's default alignment).
PE_START = MIB
# The MBR's boot code ends where the disk signature starts.
MBR_CODE_BYTES = 440
GPT_FIRST_FREE_SECTOR = 34
_DOS_TYPES = {"swap": "82", "vfat": "ef", "lvm": "8e", "raw": "da"}
_GPT_TYPES = {"swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
              "vfat": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
              "lvm": "E6D6D379-F507-44C2-A23C-238F2A3DF928",
              "raw": "21686148-6449-6E6F-744E-656564454649"}
_DOS_LINUX = "83"
_DOS_EXTENDED = "5"
_GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"

# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Extent:
    """Where one partition lives in the image, in bytes."""

    number: int
    start: int
    size: int


@dataclass(frozen=True)
class VolumeExtent:
    """Where one linear LV lives: its extents on the PV and its bytes in the disk image."""

    vg: str
    name: str
    partition: int  # the PV partition's number
    first_extent: int
    extent_count: int
    start: int  # byte offset in the disk image
    size: int


def plan_layout(recipe: GuestRecipe) -> tuple[Extent, ...]:
    """Partition extents: MiB-aligned from 1 MiB on; the last may take the rest of the disk.

    A logical partition starts one MiB after the end of the one before: its EBR lives there.
    """
    if recipe.table == "none":
        return (Extent(1, 0, recipe.size),)
    # gpt keeps its backup header in the last 33 sectors; leave that whole MiB free.
    end = recipe.size - (MIB if recipe.table == "gpt" else 0)
    offset = MIB
    out = []
    for part in recipe.partitions:
        if part.logical:
            offset += MIB
        size = part.size if part.size is not None else end - offset
        if size <= 0 or offset + size > end:
            raise ValueError(f"the partitions need more than the {recipe.size // MIB} MiB disk "
                             f"(partition {part.number} would end at "
                             f"{(offset + max(size, 0)) // MIB} MiB of {end // MIB} usable)")
        out.append(Extent(part.number, offset, size))
        offset += size
    return tuple(out)


def container_extent(recipe: GuestRecipe) -> Extent | None:
    """The dos extended partition holding the logical ones, if there are any."""
    logical = [e for p, e in zip(recipe.partitions, plan_layout(recipe), strict=True)
               if p.logical]
    if not logical:
        return None
    number = sum(1 for p in recipe.partitions if not p.logical) + 1
    start = logical[0].start - MIB
    return Extent(number, start, logical[-1].start + logical[-1].size - start)


def plan_volumes(recipe: GuestRecipe) -> tuple[VolumeExtent, ...]:
    """Each guest LV's extents, allocated in order from the PV's first extent."""
    out = []
    for part, ext in zip(recipe.partitions, plan_layout(recipe), strict=True):
        if part.vg is None:
            continue
        extent = part.vg.extent_size
        pe_count = (ext.size - PE_START) // extent
        first = 0
        for vol in part.vg.volumes:
            count = vol.size // extent if vol.size is not None else pe_count - first
            if count <= 0 or first + count > pe_count:
                raise ValueError(f"the volumes need more than the {pe_count} extents of "
                                 f"{extent // MIB} MiB on {part.vg.name}'s PV (LV {vol.name} "
                                 f"would end at extent {first + max(count, 0)})")
            out.append(VolumeExtent(part.vg.name, vol.name, part.number, first, count,
                                    ext.start + PE_START + first * extent, count * extent))
            first += count
    return tuple(out)


def guest_device(recipe: GuestRecipe, number: int) -> str:
    """The guest's own device name for a partition, e.g. ``/dev/xvda2``."""
    if recipe.table == "none":
        return f"/dev/{recipe.device}"
    sep = "p" if recipe.device[-1].isdigit() else ""
    return f"/dev/{recipe.device}{sep}{number}"


def render_fstab(recipe: GuestRecipe) -> str:
    """The guest's /etc/fstab, naming each filesystem of the domain as its recipe says."""
    lines = [f"# /etc/fstab of {recipe.name}: static file system information.",
             "# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>"]
    lines.extend(e.line() for e in recipe.fstab_entries)
    lines.extend(recipe.extra_fstab)
    return "\n".join(lines) + "\n"


def sfdisk_script(recipe: GuestRecipe) -> str:
    """The sfdisk input that writes the recipe's partition table."""
    lines = [f"label: {recipe.table}", f"label-id: {recipe.disk_id}", "unit: sectors"]
    if recipe.table == "gpt":
        lines.append(f"first-lba: {MIB // SECTOR}")
    lines.append("")
    container = container_extent(recipe)
    for part, ext in zip(recipe.partitions, plan_layout(recipe), strict=True):
        if part.logical and container and ext.start == container.start + MIB:
            lines.append(f"start={container.start // SECTOR}, size={container.size // SECTOR}, "
                         f"type={_DOS_EXTENDED}")
        fields = [f"start={ext.start // SECTOR}", f"size={ext.size // SECTOR}",
                  f"type={partition_type(recipe, part)}"]
        if recipe.table == "gpt":
            fields.append(f"uuid={part.partuuid}")
            if part.name:
                fields.append(f'name="{part.name}"')
        if part.bootable:
            fields.append("bootable")
        lines.append(", ".join(fields))
    return "\n".join(lines) + "\n"


def partition_type(recipe: GuestRecipe, part: PartitionRecipe) -> str:
    """The partition type code written to the table (dos hex code or gpt type GUID)."""
    if part.type:
        return part.type.upper() if recipe.table == "gpt" else part.type.lower()
    if recipe.table == "gpt":
        return _GPT_TYPES.get(part.fs, _GPT_LINUX)
    return _DOS_TYPES.get(part.fs, _DOS_LINUX)


def render_vg_metadata(recipe: GuestRecipe, number: int) -> str:
    """LVM text metadata (as vgcfgbackup writes it) for the guest VG on partition ``number``."""
    part = recipe.partition(number)
    if part.vg is None:
        raise KeyError(number)
    vg = part.vg
    ext = next(e for e in plan_layout(recipe) if e.number == number)
    extents = [v for v in plan_volumes(recipe) if v.partition == number]
    lines = ['contents = "Text Format Volume Group"', "version = 1", "",
             f'description = "guest volume group of {recipe.name}"', "",
             f'creation_host = "{recipe.name}"', f"creation_time = {recipe.epoch}", "",
             f"{vg.name} {{", f'\tid = "{vg.uuid}"', "\tseqno = 1", '\tformat = "lvm2"',
             '\tstatus = ["RESIZEABLE", "READ", "WRITE"]', "\tflags = []",
             f"\textent_size = {vg.extent_size // SECTOR}", "\tmax_lv = 0", "\tmax_pv = 0",
             "\tmetadata_copies = 0", "", "\tphysical_volumes {", "", "\t\tpv0 {",
             f'\t\t\tid = "{part.uuid}"', f'\t\t\tdevice = "{guest_device(recipe, number)}"',
             '\t\t\tstatus = ["ALLOCATABLE"]', "\t\t\tflags = []",
             f"\t\t\tdev_size = {ext.size // SECTOR}", f"\t\t\tpe_start = {PE_START // SECTOR}",
             f"\t\t\tpe_count = {(ext.size - PE_START) // vg.extent_size}", "\t\t}", "\t}", "",
             "\tlogical_volumes {"]
    for vol, vx in zip(vg.volumes, extents, strict=True):
        lines += ["", f"\t\t{vol.name} {{", f'\t\t\tid = "{vol.lv_uuid}"',
                  '\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]', "\t\t\tflags = []",
                  f"\t\t\tcreation_time = {recipe.epoch}", f'\t\t\tcreation_host = "{recipe.name}"',
                  "\t\t\tsegment_count = 1", "", "\t\t\tsegment1 {", "\t\t\t\tstart_extent = 0",
                  f"\t\t\t\textent_count = {vx.extent_count}", "", '\t\t\t\ttype = "striped"',
                  "\t\t\t\tstripe_count = 1", "", "\t\t\t\tstripes = [",
                  f'\t\t\t\t\t"pv0", {vx.first_extent}', "\t\t\t\t]", "\t\t\t}", "\t\t}"]
    lines += ["\t}", "}", ""]
    return "\n".join(lines)


