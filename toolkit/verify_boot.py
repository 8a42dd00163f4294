"""The boot area, as ``verify`` looks at it: each disk's partition table and boot code,
and the boot loader's files where the guest has them.

A guest may have no boot loader at all (its domain definition names the kernel): only what
the guest has must be whole. A boot loader directory (``/boot/grub``, ``/boot/grub2``,
``/boot/extlinux``, or the same in a ``/boot`` filesystem) must hold the file it boots
from; boot code that is GRUB's needs GRUB's directory. Files are looked at through the
caller's ``guest_file``, which never follows a guest symlink.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .facts.partitions import PartitionTable
from .runners import Runner

# Each boot loader's directory, as the guest may have it (in / or in a /boot filesystem),
# and the files one of which it must hold to boot.
BOOT_DIRS: dict[str, tuple[str, ...]] = {
    "boot/grub": ("grub.cfg", "menu.lst", "grub.conf"), "boot/grub2": ("grub.cfg",),
    "boot/extlinux": ("extlinux.conf",), "grub": ("grub.cfg", "menu.lst", "grub.conf"),
    "grub2": ("grub.cfg",), "extlinux": ("extlinux.conf",),
}
BOOT_CODE = 440  # the MBR's boot code: the bytes before the disk signature


def boot_code(runner: Runner, device: str) -> bytes:
    """The boot code of a device's first sector (read with dd, as hex)."""
    res = runner.run(["sh", "-c", f'dd if="$1" bs={BOOT_CODE} count=1 status=none | '
                      "od -An -v -tx1", "sh", device], timeout=60)
    return bytes(int(x, 16) for x in res.stdout.split())


def boot_area(runner: Runner, tables: Mapping[str, tuple[PartitionTable, str]],
              mounted: Mapping[str, str], guest_file: Callable[[str, str], bool | str]
              ) -> tuple[list[str], list[str]]:
    """(what was found, the problems) of the disks' boot areas and the mounted filesystems'
    boot loader files; ``tables``: disk -> (its table, the device read)."""
    lines: list[str] = []
    problems: list[str] = []
    dirs: list[tuple[str, str]] = []  # (filesystem, directory) the guest has
    files: list[str] = []
    for name, mnt in mounted.items():
        for rel, wanted in BOOT_DIRS.items():
            if guest_file(mnt, rel) is not True:
                continue
            dirs.append((name, rel))
            have = [f"{name}:/{rel}/{f}" for f in wanted if guest_file(mnt, f"{rel}/{f}") is True]
            files += have
            if not have:
                problems.append(f"boot: {name} has /{rel} but none of {', '.join(wanted)} in it")
    grub = any("grub" in rel for _name, rel in dirs)
    for disk, (table, device) in sorted(tables.items()):
        if table.label is None:
            lines.append(f"{disk}: no partition table (a whole-disk filesystem)")
            continue
        code = boot_code(runner, device)
        kind = "empty" if not any(code) else "GRUB" if b"GRUB" in code else "present"
        lines.append(f"{disk}: {table.label} partition table, {len(table.partitions)} "
                     f"partitions, boot code {kind}")
        if kind == "GRUB" and not grub:
            problems.append(f"boot: {disk}'s boot code is GRUB's, but no filesystem holds "
                            "/boot/grub")
    lines.append("boot loader files: " + (", ".join(files) or "none (the domain's definition "
                                          "names the kernel, or the disk's boot code loads it)"))
    return lines, problems
