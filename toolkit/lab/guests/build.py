"""Building a recipe into a disk image on the host behind a runner."""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass

from ...errors import ConfigError, ParseError, ToolkitError, UsageError
from ...runners import Runner
from .layout import (
    GPT_FIRST_FREE_SECTOR,
    MBR_CODE_BYTES,
    MIB,
    SECTOR,
    Extent,
    container_extent,
    guest_device,
    plan_layout,
    plan_volumes,
    render_fstab,
    render_vg_metadata,
    sfdisk_script,
)
from .model import (
    DomainRecipe,
    Filesystem,
    GuestRecipe,
    PartitionRecipe,
    VolumeRecipe,
)
from .recipes import (
    _LVM_CONFIG,
    _OS_RELEASE,
    _PENDING_FILE,
    ESP_LOADER,
    XFS_PENDING_DIR,
    _places,
)
from .ship import _run_program

# --------------------------------------------------------------------------- builder


@dataclass(frozen=True)
class TreeSummary:
    """What a staging tree holds, as counted on the target host."""

    entries: int
    files: int
    dirs: int
    symlinks: int
    specials: int
    apparent_bytes: int
    allocated_bytes: int


@dataclass(frozen=True)
class BuiltPartition:
    """One partition as built into the image."""

    number: int
    start: int
    size: int
    fs: str
    uuid: str | None
    label: str | None
    mount: str | None
    partuuid: str | None
    device: str  # the guest's name for it, e.g. /dev/xvda1
    content: str  # what was built: "empty" for every filesystem of a standby
    tree: TreeSummary | None
    dirty: bool = False


@dataclass(frozen=True)
class BuiltVolume:
    """One guest LV's filesystem as built into the image."""

    vg: str
    name: str
    lv_uuid: str
    start: int  # byte offset in the disk image
    size: int
    fs: str
    uuid: str
    label: str | None
    mount: str | None
    device: str  # the guest's /dev/VG/LV
    content: str
    tree: TreeSummary | None
    dirty: bool = False


@dataclass(frozen=True)
class BuiltImage:
    """A built disk image and its layout."""

    path: str
    name: str
    size: int
    table: str
    disk_id: str | None
    partitions: tuple[BuiltPartition, ...]
    fstab: str | None  # the /etc/fstab text written into the root filesystem
    standby: bool
    scale: int
    duration: float
    device: str = "xvda"
    boot_area: bool = False
    volumes: tuple[BuiltVolume, ...] = ()


def build_domain_images(
    runner: Runner,
    domain: DomainRecipe,
    out_dir: str,
    *,
    workdir: str,
    standby: bool = False,
    scale: int = 1,
    python: str = "python3",
) -> tuple[BuiltImage, ...]:
    """Build every disk of ``domain`` as ``OUT_DIR/NAME-DEVICE.img`` (e.g. multi01-xvdb.img)."""
    _check_abs(out_dir, "out_dir")
    return tuple(build_disk_image(runner, disk, posixpath.join(out_dir, image_name(disk)),
                                  workdir=workdir, standby=standby, scale=scale, python=python)
                 for disk in domain.disks)


def image_name(recipe: GuestRecipe) -> str:
    """The file name ``build_domain_images`` gives a disk's image."""
    return f"{recipe.name}-{recipe.device}.img"


def build_disk_image(
    runner: Runner,
    recipe: GuestRecipe,
    out_path: str,
    *,
    workdir: str,
    standby: bool = False,
    scale: int = 1,
    python: str = "python3",
) -> BuiltImage:
    """Build the recipe's disk image at ``out_path`` on the runner's host.

    ``standby=True`` builds the peer's copy: same table, UUIDs, labels and guest VG, empty
    filesystems, the same raw partitions and boot area bytes. ``workdir`` must hold user
    xattrs and POSIX ACLs: ext4, xfs, overlayfs (tmpfs only from Linux 6.6 on). Inside the
    lab, dd the image into an LV without ``conv=sparse``, so the image's holes overwrite what
    the LV held before.
    """
    _check_abs(out_path, "out_path")
    _check_abs(workdir, "workdir")
    if '"' in workdir:
        raise UsageError(f"workdir must not hold a double quote (debugfs names it): {workdir!r}")
    if not isinstance(scale, int) or scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale!r}")
    started = time.monotonic()
    layout = plan_layout(recipe)
    fstab = render_fstab(recipe) if recipe.root is not None else None
    runner.run(["mkdir", "-p", "--", workdir])
    _refuse_non_file(runner, out_path)
    runner.run(["rm", "-f", "--", out_path])
    runner.run(["truncate", "-s", str(recipe.size), "--", out_path])
    if recipe.table != "none":
        runner.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never",
                    out_path], input=sfdisk_script(recipe))
        if recipe.boot_area:
            # After sfdisk: it would clear the MBR's boot code when it writes a new label.
            gap = (GPT_FIRST_FREE_SECTOR if recipe.table == "gpt" else 1) * SECTOR
            _fill(runner, python, out_path, 0, MBR_CODE_BYTES, f"{recipe.seed}:boot-code")
            _fill(runner, python, out_path, gap, layout[0].start - gap, f"{recipe.seed}:boot-gap")
        _verify_table(runner, recipe, out_path)
    ctx = DiskBuild(runner, recipe, workdir, standby, scale, python, fstab)
    built: list[BuiltPartition] = []
    volumes: list[BuiltVolume] = []
    for part, ext in zip(recipe.partitions, layout, strict=True):
        tree = None
        content = "empty" if standby and part.fs != "raw" else part.content
        if part.fs == "raw":
            # Raw bytes are no filesystem a file copy could carry: the standby has them too.
            if content == "pattern":
                _fill(runner, python, out_path, ext.start, ext.size,
                      f"{recipe.seed}:{part.number}:raw")
        elif part.vg is not None:
            volumes.extend(ctx.physical_volume(part, ext, out_path))
        else:
            tree = ctx.filesystem_into(part, f"p{part.number}", ext.size, out_path, ext.start)
        built.append(BuiltPartition(part.number, ext.start, ext.size, part.fs, part.uuid,
                                    part.label, part.mount, part.partuuid,
                                    guest_device(recipe, part.number), content, tree,
                                    part.dirty and not standby))
    return BuiltImage(out_path, recipe.name, recipe.size, recipe.table, recipe.disk_id,
                      tuple(built), fstab if not standby else None, standby, scale,
                      time.monotonic() - started, recipe.device, recipe.boot_area,
                      tuple(volumes))


def stage_tree(
    runner: Runner,
    recipe: GuestRecipe,
    number: int | str,
    dest: str,
    *,
    scale: int = 1,
    python: str = "python3",
    debugfs_cmds: str | None = None,
    as_user: bool = False,
) -> tuple[TreeSummary, tuple[tuple[str, str], ...]]:
    """Create the file tree of partition ``number`` (or LV ``"VG/LV"``) under ``dest``.

    ``dest`` must not exist. Returns the tree's summary and the (relative path, capability)
    pairs still to be set with setcap. ``debugfs_cmds``, if given, receives debugfs commands
    that pin every inode's ctime to the recipe's epoch. ``as_user`` stages without root:
    the owners stay the caller's and the tree has no device node (never for an image).
    """
    _check_abs(dest, "dest")
    fs: Filesystem = recipe.volume(number) if isinstance(number, str) else recipe.partition(number)
    spec = {
        "op": "stage",
        "root": dest,
        "content": fs.content,
        "seed": f"{recipe.seed}:{_seed_key(fs)}",
        "scale": scale,
        "epoch": recipe.epoch,
        "etc": _etc_files(recipe) if fs.mount == "/" and fs.content != "empty" else {},
        "mountpoints": _mountpoints(recipe, fs),
        "debugfs_cmds": debugfs_cmds,
    }
    out = _run_program(runner, spec, python, timeout=_timeout(scale),
                       env={"DOMUBK_STAGE_AS_USER": "1"} if as_user else None)
    summary = TreeSummary(**out["summary"])
    caps = tuple((str(rel), str(cap)) for rel, cap in out["capabilities"])
    return summary, caps


def _seed_key(fs: Filesystem) -> str:
    return f"{fs.vg}/{fs.name}" if isinstance(fs, VolumeRecipe) else str(fs.number)


@dataclass(frozen=True)
class DiskBuild:
    """One disk build in progress: where it runs and what it makes."""

    runner: Runner
    recipe: GuestRecipe
    workdir: str
    standby: bool
    scale: int
    python: str
    fstab: str | None

    def path(self, key: str, suffix: str) -> str:
        name = f"{self.recipe.name}-{self.recipe.device}-{key}.{suffix}"
        return posixpath.join(self.workdir, name)

    def filesystem_into(self, fs: Filesystem, key: str, size: int, out_path: str,
                        offset: int) -> TreeSummary | None:
        """Make one filesystem as a file and copy it into the image at ``offset``."""
        fs_file = self.path(key, "fs")
        try:
            tree = self.make(fs, key, size, fs_file)
            self.copy_in(fs_file, out_path, offset)
        finally:
            self.runner.run(["rm", "-f", "--", fs_file], check=False)
        return tree

    def copy_in(self, src: str, out_path: str, offset: int) -> None:
        self.runner.run(["dd", f"if={src}", f"of={out_path}", "bs=1M", f"seek={offset}",
                         "oflag=seek_bytes", "conv=notrunc,sparse", "status=none"],
                        timeout=_timeout(self.scale))

    def make(self, fs: Filesystem, key: str, size: int, fs_file: str) -> TreeSummary | None:
        content = "empty" if self.standby else fs.content
        dirty = fs.dirty and not self.standby
        self.runner.run(["rm", "-f", "--", fs_file])
        self.runner.run(["truncate", "-s", str(size), "--", fs_file])
        if fs.fs == "swap":
            argv = ["mkswap", "-U", fs.uuid or ""]
            if fs.label:
                argv += ["-L", fs.label]
            self.runner.run([*argv, "--", fs_file])
            return None
        if fs.fs == "vfat":
            self.make_vfat(fs, content, fs_file)
            return None
        if fs.fs == "xfs":
            return self.make_xfs(fs, key, size, fs_file, content, dirty)
        return self.make_ext(fs, key, size, fs_file, content, dirty)

    def make_ext(self, fs: Filesystem, key: str, size: int, fs_file: str, content: str,
                 dirty: bool) -> TreeSummary | None:
        runner, recipe = self.runner, self.recipe
        # E2FSPROGS_FAKE_TIME pins the superblock and lost+found times, so builds are identical.
        env = {"E2FSPROGS_FAKE_TIME": str(recipe.epoch), "E2FSPROGS_SKIP_PROGRESS": "1"}
        argv = [f"mkfs.{fs.fs}", "-F", "-q", "-U", fs.uuid or "",
                "-E", f"root_owner=0:0,hash_seed={fs.uuid}"]
        if fs.label:
            argv += ["-L", fs.label]
        if content == "empty":
            runner.run([*argv, fs_file], env=env)
            return None
        tree, cmds = self.path(key, "tree"), self.path(key, "debugfs")
        runner.run(["rm", "-rf", "--one-file-system", "--", tree])
        try:
            staged = self.stage(fs, tree, cmds)
            _check_fits(recipe, fs, size, staged, self.scale)
            if staged.entries + 64 > size // _inode_ratio(size):
                argv += ["-N", str(staged.entries + 1024)]
            runner.run([*argv, "-d", tree, fs_file], env=env, timeout=_timeout(self.scale))
            # populate copies each inode's ctime from the staging tree, where it is "now";
            # pin them so two builds give identical bytes.
            result = runner.run(["debugfs", "-w", "-f", cmds, fs_file], env=env,
                                timeout=_timeout(self.scale))
            self.debugfs_errors(result.stderr, fs, "pinning inode times")
        finally:
            runner.run(["rm", "-rf", "--one-file-system", "--", tree, cmds], check=False)
        if dirty:
            self.dirty_journal(fs, key, fs_file, content, env)
        return staged

    def debugfs_errors(self, stderr: str, fs: Filesystem, doing: str) -> None:
        errors = [ln for ln in stderr.splitlines() if ln and not ln.startswith("debugfs ")]
        if errors:
            raise ToolkitError(f"{self.recipe.source}: {doing} in {_describe(fs)} failed: "
                               f"{errors[0]}", host=self.runner.host)

    def dirty_journal(self, fs: Filesystem, key: str, fs_file: str, content: str,
                      env: dict[str, str]) -> None:
        """Commit one transaction to the journal and leave it unreplayed (needs_recovery)."""
        runner = self.runner
        rel = _PENDING_FILE[content]
        out = runner.run(["debugfs", "-R", f'bmap "/{rel}" 0', fs_file]).stdout.strip()
        block_size = _dumpe2fs_field(runner, fs_file, "Block size")
        if not out.isdigit() or not block_size.isdigit():
            raise ParseError(f"{fs_file}: no block for /{rel} ({out!r}) or block size "
                             f"({block_size!r})", host=runner.host)
        data = self.path(key, "journal")
        try:
            _fill(runner, self.python, data, 0, int(block_size),
                  f"{self.recipe.seed}:{_seed_key(fs)}:journal", create=True)
            result = runner.run(["debugfs", "-w", "-f", "-", fs_file], env=env,
                                input=f'jo\njw -b {out} "{data}"\njc\n')
            self.debugfs_errors(result.stderr, fs, "writing a journal transaction")
        finally:
            runner.run(["rm", "-f", "--", data], check=False)
        if "needs_recovery" not in _dumpe2fs_field(runner, fs_file, "Filesystem features"):
            raise ToolkitError(f"{fs_file}: the journal was written but needs_recovery is not "
                               "set", host=runner.host)

    def make_xfs(self, fs: Filesystem, key: str, size: int, fs_file: str, content: str,
                 dirty: bool) -> TreeSummary | None:
        runner = self.runner
        argv = ["mkfs.xfs", "-f", "-q", "-m", f"uuid={fs.uuid}"]
        if fs.label:
            argv += ["-L", fs.label]
        runner.run([*argv, fs_file])
        staged = None
        if content != "empty":
            tree, mnt = self.path(key, "tree"), self.path(key, "mnt")
            runner.run(["rm", "-rf", "--one-file-system", "--", tree])
            try:
                staged = self.stage(fs, tree, None)
                _check_fits(self.recipe, fs, size, staged, self.scale)
                self.fill_through_mount(fs_file, tree, mnt, dirty)
            finally:
                runner.run(["rm", "-rf", "--one-file-system", "--", tree], check=False)
        probe = _probe(runner, fs_file)
        if (probe.get("TYPE"), probe.get("UUID"), probe.get("LABEL")) != ("xfs", fs.uuid,
                                                                           fs.label):
            raise ToolkitError(f"{fs_file}: blkid finds {probe}, not xfs {fs.uuid} {fs.label}",
                               host=runner.host)
        if dirty and "<DIRTY>" not in runner.run(["xfs_logprint", "-t", fs_file]).stdout:
            raise ToolkitError(f"{fs_file}: the xfs log was left clean", host=runner.host)
        return staged

    def fill_through_mount(self, fs_file: str, tree: str, mnt: str, dirty: bool) -> None:
        """Copy a staging tree into an xfs file through a loop mount; always detach."""
        runner = self.runner
        runner.run(["mkdir", "-p", "--", mnt])
        loop = _attach(runner, fs_file)
        try:
            runner.run(["mount", "-t", "xfs", "-o", "nouuid", loop, mnt])
            try:
                runner.run(["cp", "-a", "--sparse=always", "--", tree + "/.", mnt + "/"],
                           timeout=_timeout(self.scale))
                if dirty:
                    # Freeze writes everything back in place; what follows lives only in the
                    # log, and the shutdown keeps it there.
                    runner.run(["xfs_io", "-x", "-c", "freeze", "-c", "thaw", mnt])
                    runner.run(["mkdir", "--", posixpath.join(mnt, XFS_PENDING_DIR)])
                    runner.run(["xfs_io", "-x", "-c", "shutdown -f", mnt])
            finally:
                runner.run(["umount", mnt])
        finally:
            runner.run(["losetup", "-d", loop], check=False)
            runner.run(["rmdir", "--", mnt], check=False)

    def make_vfat(self, fs: Filesystem, content: str, fs_file: str) -> None:
        runner = self.runner
        # --invariant pins the boot sector's and the label entry's time-based values.
        argv = ["mkfs.fat", "-F", "32", "--invariant", "-i", (fs.uuid or "").replace("-", "")]
        if fs.label:
            argv += ["-n", fs.label]
        runner.run([*argv, fs_file])
        if content == "esp":
            _run_program(runner, {"op": "fat", "path": fs_file, "epoch": self.recipe.epoch,
                                  "seed": f"{self.recipe.seed}:{_seed_key(fs)}",
                                  "files": [list(ESP_LOADER)]}, self.python,
                         timeout=_timeout(1))
        runner.run(["fsck.fat", "-n", fs_file])

    def stage(self, fs: Filesystem, tree: str, cmds: str | None) -> TreeSummary:
        which = f"{fs.vg}/{fs.name}" if isinstance(fs, VolumeRecipe) else fs.number
        staged, caps = stage_tree(self.runner, self.recipe, which, tree, scale=self.scale,
                                  python=self.python, debugfs_cmds=cmds)
        for rel, cap in caps:
            # After the program's chown/chmod: chown clears a file capability.
            self.runner.run(["setcap", cap, posixpath.join(tree, rel)])
        return staged

    def physical_volume(self, part: PartitionRecipe, ext: Extent,
                        out_path: str) -> list[BuiltVolume]:
        """Write the guest PV and VG metadata, then each LV's filesystem at its extents."""
        runner, vg = self.runner, part.vg
        assert vg is not None
        pv_file = self.path(f"p{part.number}", "pv")
        meta, sysdir = self.path(f"p{part.number}", "vg"), self.path(f"p{part.number}", "lvm")
        planned = [v for v in plan_volumes(self.recipe) if v.partition == part.number]
        try:
            runner.run(["rm", "-rf", "--", pv_file, sysdir])
            runner.run(["truncate", "-s", str(ext.size), "--", pv_file])
            runner.run(["mkdir", "-m", "0700", "--", sysdir])
            _write_file(runner, self.python, meta,
                        render_vg_metadata(self.recipe, part.number))
            loop = _attach(runner, pv_file)
            try:
                env = {"LVM_SYSTEM_DIR": sysdir, "LVM_SUPPRESS_FD_WARNINGS": "1"}
                opts = ["--devices", loop, "--nolocking", "--driverloaded", "n",
                        "--config", _LVM_CONFIG]
                runner.run(["lvm", "pvcreate", *opts, "--uuid", part.uuid or "",
                            "--restorefile", meta, loop], env=env)
                # Where a VG of the same name is active (lvm01's guest VG is named like
                # dom0-a's own), vgcfgrestore asks first; the answer is yes: it writes only
                # to this loop device (--devices), the host's VG is not touched.
                runner.run(["lvm", "vgcfgrestore", *opts, "-f", meta, vg.name], env=env,
                           input="y\n")
                pvs = runner.run(["lvm", "pvs", *opts, "--reportformat", "json", "--units", "b",
                                  "--nosuffix", "-o", "pv_uuid,pe_start,vg_name,vg_uuid,"
                                  "vg_extent_size"], env=env).stdout
                lvs = runner.run(["lvm", "lvs", *opts, "--reportformat", "json", "-o",
                                  "lv_name,lv_uuid,vg_name,seg_start_pe,seg_pe_ranges"],
                                 env=env).stdout
            finally:
                runner.run(["losetup", "-d", loop], check=False)
            starts = _check_lvm_reports(runner, part, ext, loop, pvs, lvs)
            if starts != {v.name: v.start for v in planned}:
                raise ToolkitError(f"{out_path}: LVM placed {vg.name}'s LVs at {starts}, "
                                   f"expected {[(v.name, v.start) for v in planned]}",
                                   host=runner.host)
            self.copy_in(pv_file, out_path, ext.start)
        finally:
            runner.run(["rm", "-rf", "--", pv_file, meta, sysdir], check=False)
        built = []
        for vol, vx in zip(vg.volumes, planned, strict=True):
            tree = self.filesystem_into(vol, f"{vg.name}-{vol.name}", vx.size, out_path,
                                        vx.start)
            built.append(BuiltVolume(vg.name, vol.name, vol.lv_uuid, vx.start, vx.size, vol.fs,
                                     vol.uuid, vol.label, vol.mount, vol.device,
                                     "empty" if self.standby else vol.content, tree,
                                     vol.dirty and not self.standby))
        return built


def _describe(fs: Filesystem) -> str:
    if isinstance(fs, VolumeRecipe):
        return f"LV {fs.vg}/{fs.name}"
    return f"partition {fs.number}"


def _check_lvm_reports(runner: Runner, part: PartitionRecipe, ext: Extent, loop: str, pvs: str,
                       lvs: str) -> dict[str, int]:
    """Image offsets of each LV, from what pvs and lvs report; errors if the VG is not ours."""
    vg = part.vg
    assert vg is not None
    try:
        pv_rows = json.loads(pvs)["report"][0]["pv"]
        lv_rows = json.loads(lvs)["report"][0]["lv"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ParseError(f"unexpected pvs/lvs report ({exc})", host=runner.host) from exc
    got_pv = [(r.get("pv_uuid"), r.get("vg_name"), r.get("vg_uuid"), r.get("vg_extent_size"))
              for r in pv_rows]
    want_pv = [(part.uuid, vg.name, vg.uuid, str(vg.extent_size))]
    if got_pv != want_pv or not str(pv_rows[0].get("pe_start", "")).isdigit():
        raise ToolkitError(f"pvs reports {pv_rows}, expected {want_pv}", host=runner.host)
    pe_start = int(pv_rows[0]["pe_start"])
    starts: dict[str, int] = {}
    uuids = {v.name: v.lv_uuid for v in vg.volumes}
    for row in lv_rows:
        device, _, extents = str(row.get("seg_pe_ranges", "")).rpartition(":")
        first = extents.split("-")[0]
        if (device != loop or row.get("vg_name") != vg.name or row.get("seg_start_pe") != "0"
                or uuids.get(row.get("lv_name")) != row.get("lv_uuid") or not first.isdigit()):
            raise ToolkitError(f"lvs reports {row}: not one linear segment of an LV of "
                               f"{vg.name} on {loop}", host=runner.host)
        starts[row["lv_name"]] = ext.start + pe_start + int(first) * vg.extent_size
    return starts


def _dumpe2fs_field(runner: Runner, fs_file: str, field: str) -> str:
    for line in runner.run(["dumpe2fs", "-h", fs_file]).stdout.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == field:
            return value.strip()
    return ""


def _probe(runner: Runner, path: str) -> dict[str, str]:
    out = runner.run(["blkid", "-p", "-o", "export", "--", path]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _attach(runner: Runner, path: str) -> str:
    loop = runner.run(["losetup", "--find", "--show", "--", path]).stdout.strip()
    if not loop.startswith("/dev/loop"):
        raise ParseError(f"losetup printed {loop!r}, not a loop device", host=runner.host)
    return loop


def _fill(runner: Runner, python: str, path: str, offset: int, size: int, key: str, *,
          create: bool = False) -> None:
    _run_program(runner, {"op": "fill", "path": path, "offset": offset, "size": size,
                          "key": key, "create": create}, python, timeout=_timeout(1))


def _write_file(runner: Runner, python: str, path: str, text: str) -> None:
    _run_program(runner, {"op": "write", "path": path, "text": text}, python,
                 timeout=_timeout(1))


def _inode_ratio(size: int) -> int:
    # mke2fs.conf: "small" filesystems (< 512 MiB) get one inode per 4 KiB, others per 16 KiB.
    return 4096 if size < 512 * MIB else 16384


def _check_fits(recipe: GuestRecipe, fs: Filesystem, size: int, tree: TreeSummary,
                scale: int) -> None:
    # Metadata (inode tables, journal, directories) needs room beside the data.
    need = tree.allocated_bytes + tree.entries * 256 + size // 10 + 4 * MIB
    if need > size:
        where = next(w for w, item in _places(recipe, "") if item is fs)
        raise ConfigError(f"{recipe.source}: {where}.size: the "
                          f"{fs.content} tree at scale {scale} needs about {need // MIB} MiB, "
                          f"more than the {size // MIB} MiB partition")


def _etc_files(recipe: GuestRecipe) -> dict[str, str]:
    return {"fstab": render_fstab(recipe), "hostname": recipe.name + "\n",
            "os-release": _OS_RELEASE}


def _mountpoints(recipe: GuestRecipe, fs: Filesystem) -> list[str]:
    """Directories in this filesystem on which the guest mounts its other filesystems."""
    if fs.mount is None or fs.content == "empty":
        return []
    mounts = [e.mount for e in recipe.fstab_entries if e.mount.startswith("/")]
    out = []
    for other in mounts:
        if other == fs.mount or not _under(other, fs.mount):
            continue
        # Only the nearest enclosing filesystem holds the mount point.
        parents = [m for m in mounts if m != other and _under(other, m)]
        if max(parents, key=len) == fs.mount:
            out.append(posixpath.relpath(other, fs.mount))
    return sorted(out)


def _under(path: str, parent: str) -> bool:
    return path != parent and (parent == "/" or path.startswith(parent + "/"))


def _check_abs(path: str, what: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or "\n" in path:
        raise UsageError(f"{what} must be an absolute path, got {path!r}")


def _refuse_non_file(runner: Runner, path: str) -> None:
    result = runner.run(["stat", "-c", "%F", "--", path], check=False)
    kind = result.stdout.strip()
    if result.exit_code == 0 and kind not in ("regular file", "regular empty file"):
        raise UsageError(f"refusing to replace {path}: it is a {kind}, not a regular file",
                         host=runner.host)


def _verify_table(runner: Runner, recipe: GuestRecipe, out_path: str) -> None:
    """Read the table back with sfdisk and check it is the one planned."""
    result = runner.run(["sfdisk", "--json", out_path])
    try:
        table = json.loads(result.stdout)["partitiontable"]
        got = [(int(p["start"]), int(p["size"])) for p in table["partitions"]]
        label = table["label"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"sfdisk --json {out_path}: unexpected output ({exc})",
                         host=runner.host) from exc
    extents = list(plan_layout(recipe))
    container = container_extent(recipe)
    if container is not None:
        extents.append(container)
    want = [(e.start // SECTOR, e.size // SECTOR) for e in sorted(extents, key=lambda e: e.number)]
    if label != recipe.table or got != want:
        raise ToolkitError(f"{out_path}: sfdisk wrote {label} {got}, expected {recipe.table} "
                           f"{want}", host=runner.host)


def _timeout(scale: int) -> float:
    return 300.0 + 120.0 * scale


