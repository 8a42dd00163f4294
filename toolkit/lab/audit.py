"""Audit a standby against its source in the lab: a checksum rsync dry run per filesystem.

Both disks are mapped read-only (``kpartx -r``) and mounted read-only on their
own host; from the source host ``rsync -n -c -aHAX --numeric-ids --delete -i``
compares each filesystem with the standby's over SSH. Any output line is a
difference. Everything the audit maps and mounts is removed again.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from ..bootarea import ByteRange, boot_ranges
from ..bootarea import read_argv as boot_read_argv
from ..facts.blkid import NOTHING, FilesystemProbe, blkid_argv, probe_from_result
from ..facts.partitions import partition_table_from_result, sfdisk_argv
from ..plan import dir_probe, mount_probe, partition_maps_probe
from ..rsync import SshOptions, ssh_argv
from ..runners import Runner
from ..undo import undo_with_retry

AUDIT_ROOT = "/run/domubk-audit"
MOUNTABLE = {"ext2": "ro,noload", "ext3": "ro,noload", "ext4": "ro,noload",
             "xfs": "ro,norecovery,nouuid", "vfat": "ro", "btrfs": "ro"}


@dataclass(frozen=True)
class AuditedFs:
    """One filesystem (or the boot area) as the audit compared it: where it was read on each
    host, and each difference found (none: the standby matches)."""

    name: str
    fstype: str
    source: str
    target: str
    differences: tuple[str, ...]


def _added_maps(kpartx_output: str, tag: str) -> list[tuple[str, str]]:
    """(map name, partition number) of each "add map" line ``kpartx -a -v -p TAG`` printed."""
    added = []
    for line in kpartx_output.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[:2] == ["add", "map"]:
            added.append((fields[2], fields[2].rsplit(tag, 1)[-1]))
    return added


def _partitions(runner: Runner, device: str, tag: str, readonly: bool = True) -> list[
        tuple[str, str]]:
    """Map a device; (partition number, device) of each partition, or ("", the device)."""
    ro = ["-r"] if readonly else []
    res = runner.run(["kpartx", "-a", *ro, "-s", "-v", "-p", tag, device], check=False,
                     timeout=120)
    found = [(number, f"/dev/mapper/{name}") for name, number in _added_maps(res.stdout, tag)]
    if not found:
        runner.run(["kpartx", "-d", "-s", "-p", tag, device], check=False, timeout=120)
        return [("", device)]
    return found


@contextmanager
def partition_maps(runner: Runner, lv: str, tag: str, *, writable: bool = False
                   ) -> Iterator[dict[int, str]]:
    """An LV's partitions mapped with kpartx (read-only unless ``writable``): number ->
    /dev/mapper path. Unmapped on the way out with the teardown's bounded retry: right
    after a write, udev's probe can hold a map for a moment and ``kpartx -d`` then fails
    without a word."""
    res = runner.run(["kpartx", "-a", *([] if writable else ["-r"]), "-s", "-v", "-p", tag,
                      lv], timeout=120)
    added = _added_maps(res.stdout, tag)
    maps = {int(number): f"/dev/mapper/{name}" for name, number in added}
    parent = added[0][0].removesuffix(tag + added[0][1]) if added else ""
    try:
        yield maps
    finally:
        if maps:
            undo_with_retry(runner, ("kpartx", "-d", "-s", "-p", tag, lv),
                            partition_maps_probe(parent, tag), 120)


def _probe(runner: Runner, device: str) -> FilesystemProbe:
    """What blkid finds on a device; a partition map without a filesystem holds nothing.

    On a kpartx partition map blkid also reports the partition's own table entry
    (``PART_ENTRY_*``), alone when the partition holds no filesystem, such as a gpt BIOS
    boot partition: that is nothing found, not an unreadable probe.
    """
    res = runner.run(blkid_argv(device), check=False, timeout=60)
    if res.exit_code == 0:
        keys = {line.partition("=")[0] for line in res.stdout.splitlines() if line}
        if keys and all(k == "DEVNAME" or k.startswith("PART_ENTRY_") for k in keys):
            return NOTHING
    return probe_from_result(res)


@contextmanager
def mounted(runner: Runner, device: str, where: str, tag: str, *, readonly: bool = True
            ) -> Iterator[dict[str, tuple[str, str]]]:
    """Mount every filesystem of ``device`` under ``where``; yields number -> (dir, type)."""
    with ExitStack() as stack:
        parts = _partitions(runner, device, tag, readonly)
        if parts and parts[0][1] != device:
            name = parts[0][1].removeprefix("/dev/mapper/")
            stack.callback(undo_with_retry, runner, ("kpartx", "-d", "-s", "-p", tag, device),
                           partition_maps_probe(name.removesuffix(f"{tag}{parts[0][0]}"), tag),
                           120)
        out: dict[str, tuple[str, str]] = {}
        parts = list(parts)
        for number, dev in parts:
            probe = _probe(runner, dev)
            if probe.type == "LVM2_member":
                parts += _guest_volumes(runner, stack, dev, where, number or "whole", readonly)
                continue
            if probe.type not in MOUNTABLE:
                continue
            mnt = posixpath.join(where, number or "whole")
            runner.run(["mkdir", "-p", mnt], timeout=30)
            stack.callback(undo_with_retry, runner, ("rmdir", mnt), dir_probe(mnt), 30)
            opts = MOUNTABLE[probe.type] if readonly else "rw"
            runner.run(["mount", "-t", probe.type, "-o", opts, dev, mnt], timeout=120)
            stack.callback(undo_with_retry, runner, ("umount", mnt), mount_probe(mnt), 120)
            out[number or "whole"] = (mnt, probe.type)
        yield out


def _guest_volumes(runner: Runner, stack: ExitStack, pv_dev: str, where: str, number: str,
                   readonly: bool) -> list[tuple[str, str]]:
    """Map each linear LV of the guest VG on ``pv_dev`` (as the backup does, no LVM command)."""
    from ..preflight import read_guest_vg

    vg = read_guest_vg(runner, pv_dev, 0, pv_dev)
    found = []
    for vol in vg.volumes:
        if vol.skip_reason:
            continue
        key = f"{number}.{vol.vg}.{vol.name}"
        name = f"domubk-audit-{posixpath.basename(where)}-{key}"
        flags = "ro" if readonly else "rw"
        runner.run(["dmsetup", "create", "--concise",
                    f"{name},,,{flags},{vol.dm_table(pv_dev)}"], timeout=60)
        stack.callback(undo_with_retry, runner, ("dmsetup", "remove", "--retry", name),
                       ("dmsetup", "info", "-c", "--noheadings", "-o", "name", name), 120)
        found.append((key, f"/dev/mapper/{name}"))
    return found


def _range_digest(runner: Runner, device: str, r: ByteRange) -> str:
    argv = shlex.join(boot_read_argv(device, r))
    return runner.run(["sh", "-c", f"{argv} | sha256sum"], timeout=600).stdout.split()[0]


def audit_boot_area(source: Runner, peer: Runner, source_lv: str,
                    standby_lv: str) -> AuditedFs | None:
    """Compare the boot area (boot code, the gap, BIOS boot partitions) of both disks."""
    table = partition_table_from_result(source.run(sfdisk_argv(source_lv), check=False,
                                                   timeout=120))
    ranges = boot_ranges(table)
    if not ranges:
        return None
    diffs = tuple(f"{r.what} (bytes {r.start}+{r.length}) differs" for r in ranges
                  if _range_digest(source, source_lv, r) != _range_digest(peer, standby_lv, r))
    return AuditedFs("boot area", "raw", source_lv, standby_lv, diffs)


def audit_standby(source: Runner, peer: Runner, source_lv: str, standby_lv: str, peer_address: str,
                  ssh: SshOptions) -> list[AuditedFs]:
    """Compare every filesystem of source_lv with standby_lv; returns per-filesystem differences.

    The boot area is compared too (an entry named "boot area"), for a partitioned disk. A
    filesystem only on one side, or no filesystem at all, is a difference: an audit that
    compared nothing never passes.
    """
    results: list[AuditedFs] = []
    boot = audit_boot_area(source, peer, source_lv, standby_lv)
    if boot is not None:
        results.append(boot)
    with mounted(source, source_lv, f"{AUDIT_ROOT}/src", "a") as src, \
            mounted(peer, standby_lv, f"{AUDIT_ROOT}/dst", "a") as dst:
        for name, (mnt, fstype) in sorted(src.items()):
            if name not in dst:
                results.append(AuditedFs(name, fstype, mnt, "", ("missing on the standby",)))
                continue
            argv = ["rsync", "-n", "-c", "-aHAX", "--numeric-ids", "--delete", "-i",
                    "-e", shlex.join(ssh_argv(ssh)), f"{mnt}/", f"{peer_address}:{dst[name][0]}/"]
            res = source.run(argv, check=False, timeout=1800)
            lines = tuple(line for line in res.stdout.splitlines() if line.strip())
            if res.exit_code != 0:
                lines += (f"rsync exited {res.exit_code}: {res.stderr.strip()[-300:]}",)
            results.append(AuditedFs(name, fstype, mnt, dst[name][0], lines))
        for name, (mnt, fstype) in sorted(dst.items()):
            if name not in src:
                results.append(AuditedFs(name, fstype, "", mnt, ("not on the source",)))
    if not src:
        # An audit that compared nothing proves nothing: it is a difference, never a pass.
        results.append(AuditedFs("(none)", "", "", "", ("the audit compared no filesystem: "
                                                        f"none mounted from {source_lv}",)))
    return results


def fingerprint(runner: Runner, path: str) -> str:
    """The MD5 of a file or a whole device on a fake Dom0, to prove it unchanged. What it
    must catch is a change the tool made by mistake, not a forgery; MD5 reads a 256 MiB LV
    in 2.8 s under the lab VM's emulation, SHA-256 in 5.1 s."""
    return runner.run(["md5sum", "--", path], timeout=600).stdout.split()[0]
