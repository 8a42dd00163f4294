"""The guest recipe records: a domain, its disks, partitions, guest LVM volumes and fstab
lines, as parsed from a recipe (recipes.py) and read by layout and build."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VolumeRecipe:
    """One linear LV of a guest VG and the filesystem on it."""

    name: str
    lv_uuid: str
    size: int | None  # bytes, whole extents; None: the rest of the PV
    fs: str
    uuid: str
    label: str | None
    mount: str | None
    fstab_by: str  # "uuid" | "label" | "device" (/dev/VG/LV) | "mapper" (/dev/mapper/VG-LV)
    options: str
    content: str
    dirty: bool
    vg: str

    @property
    def device(self) -> str:
        """The guest's ``/dev/VG/LV`` name for this LV."""
        return f"/dev/{self.vg}/{self.name}"

    @property
    def mapper(self) -> str:
        """The guest's ``/dev/mapper`` name for this LV (dashes in names doubled)."""
        return f"/dev/mapper/{self.vg.replace('-', '--')}-{self.name.replace('-', '--')}"


@dataclass(frozen=True)
class VolumeGroupRecipe:
    """A guest VG on one PV partition; its LVs are allocated in order from extent 0."""

    name: str
    uuid: str
    extent_size: int
    volumes: tuple[VolumeRecipe, ...]


@dataclass(frozen=True)
class PartitionRecipe:
    """One partition (or the whole-disk filesystem) of a guest disk recipe."""

    number: int
    size: int | None  # bytes; None: the rest of the disk
    fs: str
    uuid: str | None  # filesystem UUID, FAT volume id, LVM PV UUID; None for raw
    label: str | None
    mount: str | None  # mount point in the guest fstab; None: not in the fstab
    fstab_by: str
    options: str
    content: str
    type: str | None  # partition type override (dos hex code or gpt type GUID)
    partuuid: str | None  # gpt only; dos PARTUUIDs derive from the disk id
    name: str | None  # gpt partition name
    bootable: bool
    logical: bool = False  # a dos logical partition, inside the extended one
    dirty: bool = False  # leave the journal (ext3/4) or log (xfs) needing recovery
    vg: VolumeGroupRecipe | None = None  # fs == "lvm": the guest VG on this PV


Filesystem = PartitionRecipe | VolumeRecipe


@dataclass(frozen=True)
class FstabLine:
    """One line of the guest's /etc/fstab."""

    spec: str
    mount: str  # "none" for swap
    fs: str
    options: str
    passno: int

    def line(self) -> str:
        """The tab-separated fstab line."""
        return f"{self.spec}\t{self.mount}\t{self.fs}\t{self.options}\t0\t{self.passno}"


@dataclass(frozen=True)
class GuestRecipe:
    """A guest disk: size, partition table and filesystems."""

    source: str
    name: str  # the domain's (host) name
    size: int
    table: str  # "dos" | "gpt" | "none"
    disk_id: str | None
    device: str  # the guest's own name for the disk, e.g. "xvda"
    seed: int
    epoch: int
    extra_fstab: tuple[str, ...]
    partitions: tuple[PartitionRecipe, ...]
    boot_area: bool = False
    fstab_entries: tuple[FstabLine, ...] = ()  # the whole domain's, on every disk

    def partition(self, number: int) -> PartitionRecipe:
        """The partition with this number; KeyError if there is none."""
        for part in self.partitions:
            if part.number == number:
                return part
        raise KeyError(number)

    def volume(self, path: str) -> VolumeRecipe:
        """The LV named ``VG/LV``; KeyError if there is none."""
        for vol in self.volumes:
            if f"{vol.vg}/{vol.name}" == path:
                return vol
        raise KeyError(path)

    @property
    def volumes(self) -> tuple[VolumeRecipe, ...]:
        """Every LV of the guest VGs on this disk, in recipe order."""
        return tuple(v for p in self.partitions if p.vg for v in p.vg.volumes)

    @property
    def filesystems(self) -> tuple[Filesystem, ...]:
        """Partitions and LVs that carry a filesystem or swap, in recipe order."""
        out: list[Filesystem] = []
        for part in self.partitions:
            if part.vg is not None:
                out.extend(part.vg.volumes)
            elif part.fs != "raw":
                out.append(part)
        return tuple(out)

    @property
    def root(self) -> Filesystem | None:
        """The filesystem on this disk mounted at ``/`` (it holds /etc/fstab), if any."""
        return next((f for f in self.filesystems if f.mount == "/"), None)


@dataclass(frozen=True)
class DomainRecipe:
    """A guest domain: its disks, in recipe order."""

    source: str
    name: str
    disks: tuple[GuestRecipe, ...]

    def disk(self, device: str) -> GuestRecipe:
        """The disk the guest calls ``device``; KeyError if there is none."""
        for disk in self.disks:
            if disk.device == device:
                return disk
        raise KeyError(device)
