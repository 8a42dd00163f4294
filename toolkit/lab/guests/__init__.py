"""Fake guest disks built from declarative recipes, for the rehearsal lab and its tests.

A recipe (TOML, ``fixtures/guests/*.toml``) describes one guest domain and its disks. A
domain with one disk writes the disk's keys at the top level (``size``, ``label``,
``disk_id``, ``device``, ``boot_area``, ``[[partitions]]``). A domain with several disks
lists them as ``[[disks]]`` tables holding those same keys (``[[disks.partitions]]``), and
shares ``name``, ``seed``, ``epoch`` and ``extra_fstab``; each disk's seed defaults to the
domain's plus its index. The guest's ``/etc/fstab``, in whichever filesystem is mounted at
``/``, names every filesystem of the domain on every disk, parents before children.
``load_domain`` reads any recipe; ``load_recipe`` reads one disk of it.

What a disk can hold:

- ``label``: ``dos``, ``gpt``, or ``none`` (no table: one filesystem spans the disk, as Xen
  PV guests given an LV as ``xvda1`` have).
- ``logical = true`` on the last dos partitions puts them in an extended partition:
  primaries are numbered 1.., the extended container takes the next number and spans the
  logicals, which are numbered 5, 6, ... Each logical is preceded by the MiB holding its EBR.
- ``boot_area = true`` fills the MBR boot code (bytes 0-439) and the gap between the table
  and the first partition (sectors 1-2047 on dos, 34-2047 on gpt) with seeded bytes, as a
  BIOS boot loader does.
- ``fs``: ``ext2``/``ext3``/``ext4``, ``xfs``, ``vfat`` (FAT32; ``content = "esp"`` puts
  ``EFI/BOOT/BOOTX64.EFI`` in it; its ``uuid`` is the volume id, ``"5EED-0B01"``), ``swap``,
  ``raw`` (no filesystem: ``content = "pattern"`` fills it with seeded bytes, e.g. a gpt BIOS
  boot partition) and ``lvm``: a PV holding one guest VG (``vg``, ``vg_uuid``,
  ``extent_size``) whose linear LVs, ``[[partitions.volumes]]``, carry filesystems named in
  the fstab by ``uuid``, ``label``, ``device`` (``/dev/VG/LV``) or ``mapper``
  (``/dev/mapper/VG-LV``). LVM UUIDs are written as lvs prints them.
- ``dirty = true`` on ext3/ext4 leaves one committed journal transaction unreplayed
  (``needs_recovery``): it rewrites the first block of ``data/sizes/page.bin`` (rich) or
  ``README.txt`` (minimal). On xfs it leaves the log dirty: the tree is written back in
  place (freeze), then the directory ``log-pending`` is made and the filesystem shut down,
  so that directory exists only after log recovery.

``build_disk_image`` builds one disk into a sparse image file on the host behind a runner;
``build_domain_images`` builds every disk of a domain. Each filesystem is made as its own
file and copied into place with ``dd``:

- ext: ``mkfs.ext4 -d TREE`` from a staging tree, then debugfs pins inode ctimes; no mount.
- xfs: ``mkfs.xfs -m uuid=`` then a loop mount (``nouuid``: a guest's UUID may be mounted
  elsewhere in this kernel), ``cp -a`` of the staging tree, unmount, detach.
- vfat: ``mkfs.fat --invariant``, then files written straight into the FAT32 structures (the
  lab kernel may lack vfat, its containers lack mtools).
- lvm: ``pvcreate --restorefile`` and ``vgcfgrestore`` on a loop device of the partition's
  file, from VG metadata rendered here with the recipe's UUIDs, under a private LVM setup
  (an empty ``LVM_SYSTEM_DIR``, ``--devices`` that one loop device, no locking, no
  device-mapper, no hints, backups or archives): the host's LVM never sees the guest VG,
  even when it has the same name as a host VG, and nothing is activated. Each LV's
  filesystem is then written where ``pvs -o pe_start`` and ``lvs -o seg_pe_ranges`` say.

``standby=True`` builds the peer's copy: the same tables, UUIDs, labels, PARTUUIDs and guest
VG, empty filesystems, and the same raw partitions and boot area bytes.

Staging trees are created by a small self-contained Python program passed as an argv item,
so a build runs the same locally and inside a lab container. ext, vfat, swap and raw bytes
are identical between two builds; xfs (filled through a mount), guest LVM metadata (LVM
stamps the write time) and a dirty ext journal (its commit time) differ in those bytes
between builds, never in content.
"""


from __future__ import annotations

from .build import (
    BuiltImage,
    BuiltPartition,
    BuiltVolume,
    TreeSummary,
    build_disk_image,
    build_domain_images,
    image_name,
    stage_tree,
)
from .layout import (
    MIB,
    Extent,
    VolumeExtent,
    container_extent,
    guest_device,
    partition_type,
    plan_layout,
    plan_volumes,
    render_fstab,
    render_vg_metadata,
    sfdisk_script,
)

# the public names, from the modules that hold them: recipes (the TOML), layout (where
# things lie on the disk), build (the images), mutation (a guest at work), ship (the tree
# program, tree_program.py, run where an image is built)
from .model import (
    DomainRecipe,
    FstabLine,
    GuestRecipe,
    PartitionRecipe,
    VolumeGroupRecipe,
    VolumeRecipe,
)
from .mutation import MutationSummary, mutate
from .recipes import (
    ESP_LOADER,
    load_domain,
    load_recipe,
    parse_domain,
    parse_recipe,
    parse_size,
)
from .ship import remote_program

__all__ = [
    "BuiltImage",
    "BuiltPartition",
    "BuiltVolume",
    "DomainRecipe",
    "ESP_LOADER",
    "Extent",
    "FstabLine",
    "GuestRecipe",
    "MIB",
    "MutationSummary",
    "PartitionRecipe",
    "TreeSummary",
    "VolumeExtent",
    "VolumeGroupRecipe",
    "VolumeRecipe",
    "build_disk_image",
    "build_domain_images",
    "container_extent",
    "guest_device",
    "image_name",
    "load_domain",
    "load_recipe",
    "mutate",
    "parse_domain",
    "parse_recipe",
    "parse_size",
    "partition_type",
    "plan_layout",
    "plan_volumes",
    "remote_program",
    "render_fstab",
    "render_vg_metadata",
    "sfdisk_script",
    "stage_tree",
]
