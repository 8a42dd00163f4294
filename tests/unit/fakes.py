"""A fake Dom0 for executor tests: it keeps the state real commands would change.

``FakeHost`` answers the handful of commands the executor runs (lvcreate,
kpartx, dmsetup, mkdir, mount, findmnt, ...) by updating an in-memory model of
snapshots, maps, directories and mounts, so a test can assert exactly what
exists after a run. Outputs for fact commands come from recorded real outputs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from toolkit.config import parse_config
from toolkit.errors import CommandFailed, ConnectionLost
from toolkit.facts.blkid import FilesystemProbe, parse_blkid_export
from toolkit.facts.lvm import LogicalVolume, dm_name
from toolkit.facts.partitions import parse_sfdisk
from toolkit.facts.records import BackupFacts, DiskFacts, FsFacts
from toolkit.facts.virsh import DomainDisk
from toolkit.journal import (
    JOURNAL_FAILED_EXIT,
    JOURNAL_FAILED_MESSAGE,
    unwrap_journalled,
    unwrap_replace,
)
from toolkit.runners import CommandResult, validate_argv
from toolkit.safefs import FsView
from toolkit.step_batch import (
    NODE_MISSING,
    read_section,
    step_mark,
    unwrap_reads,
    unwrap_step_batch,
)
from toolkit.undo import batch_mark, dm_node_probes, unwrap_undo_batch

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "fixtures" / "recorded"

CONFIG_TEXT = """
[cluster.dom0s]
dom0-a = "ssh://root@dom0-a:22"
dom0-b = "ssh://root@dom0-b:22"
[hypervisor]
uri = "test:///etc/domu-backup/node.xml"
[defaults]
snapshot_size = "64M"
state_dir = "{state}"
lock_dir = "{lock}"
[domains.web01]
peer = "dom0-b"
excludes = ["/var/cache/*"]
[domains.web01.disks.xvda]
standby_lv = "/dev/vg_b/web01"
"""

FSTAB = """# /etc/fstab of web01
UUID=3f1c2b9a-5d4e-4c7b-9a8f-0e1d2c3b4a59\t/\text4\tdefaults\t0 1
proc /proc proc defaults 0 0
"""

NOTHING = FilesystemProbe(None, None, None, None, None, None)
RSYNC_STATS = (RECORDED / "rsync" / "stats-incremental.txt").read_text()


def config(tmp_path: Path):
    text = CONFIG_TEXT.format(state=tmp_path / "state", lock=tmp_path / "lock")
    return parse_config(text, tmp_path / "backup.toml")


def report_config(tmp_path: Path):
    """``config(tmp_path)`` with its report_dir in tmp_path/reports (the default is a system
    path)."""
    cfg = config(tmp_path)
    return dataclasses.replace(cfg, defaults=dataclasses.replace(
        cfg.defaults, report_dir=str(tmp_path / "reports")))


def recorded(name: str) -> dict:
    """A command output recorded from the real tool: fixtures/recorded/NAME.json, with NAME
    as "KIND/FILE" ("blkid/msdos-p1"); its argv, exit_code, stdout and stderr."""
    return json.loads((RECORDED / f"{name}.json").read_text(encoding="utf-8"))


def recorded_result(name: str) -> CommandResult:
    """``recorded(name)`` as a runner returns it (host "rec", no time taken)."""
    data = recorded(name)
    return CommandResult("rec", tuple(data["argv"]), data["exit_code"], data["stdout"],
                         data["stderr"], 0.0)


def lv(vg: str, name: str, size: int, attr: str = "-wi-ao----") -> LogicalVolume:
    return LogicalVolume(vg=vg, name=name, path=f"/dev/{vg}/{name}", size_bytes=size, attr=attr,
                         origin="", pool="", snap_percent=None, tags=(),
                         dm_path=f"/dev/mapper/{vg}-{name}")


def disk_facts(kind: str, target: str, vg_src: str, vg_dst: str, lv_name: str,
               size: int = 512 << 20) -> DiskFacts:
    """A guest disk from a recorded image: "msdos", "gpt" or "notable-ext4" (whole disk)."""
    from toolkit.facts.partitions import partition_table_from_result
    from toolkit.runners import CommandResult as R

    rec = recorded(f"sfdisk/{kind}")
    table = partition_table_from_result(R("h", tuple(rec["argv"]), rec["exit_code"],
                                          rec["stdout"], rec["stderr"], 0.0))
    fss = []
    if table.label is None:
        probe = parse_blkid_export(recorded(f"blkid/{kind}")["stdout"])
        fss.append(FsFacts(target, None, probe))
    for part in table.partitions:
        path = RECORDED / "blkid" / f"{kind}-p{part.number}.json"
        probe = (parse_blkid_export(json.loads(path.read_text())["stdout"]) if path.exists()
                 else NOTHING)
        fss.append(FsFacts(f"{target}{part.number}", part, probe))
    disk = DomainDisk(target, f"/dev/{vg_src}/{lv_name}", "block", "disk", "xen", False, False,
                      None)
    return DiskFacts(disk, lv(vg_src, lv_name, size), table, tuple(fss),
                     lv(vg_dst, lv_name, size, "-wi-a-----"), table, tuple(fss))


def web01_facts() -> BackupFacts:
    """web01 with the recorded msdos disk: ext4 p1, and p2 as recorded."""
    table = parse_sfdisk(recorded("sfdisk/msdos")["stdout"])
    fss = []
    for part in table.partitions:
        path = RECORDED / "blkid" / f"msdos-p{part.number}.json"
        if path.exists():
            probe = parse_blkid_export(json.loads(path.read_text())["stdout"])
        else:
            probe = NOTHING
        fss.append(FsFacts(f"xvda{part.number}", part, probe))
    disk = DomainDisk("xvda", "/dev/vg_a/web01", "block", "disk", "xen", False, False, None)
    size = 256 << 20
    d = DiskFacts(disk, lv("vg_a", "web01", size), table, tuple(fss), lv("vg_b", "web01", size,
                                                                         "-wi-a-----"),
                  table, tuple(fss))
    return BackupFacts("web01", "dom0-a", "dom0-b", "root@dom0-b", 22, (d,))


# The devices a Dom0 has before any run: the guest's LV on the source, its standby on the
# peer (both hosts know both: a fake serves either role).
BASE_DEVICES = ("/dev/vg_a/web01", "/dev/vg_b/web01")
# The partitions kpartx finds on any disk it maps: the recorded msdos table web01_facts uses.
MSDOS_PARTITIONS = tuple(p.number for p in parse_sfdisk(
    recorded("sfdisk/msdos")["stdout"]).partitions)


# The options and fields the real report commands accept (lvs(8), vgs(8) and dmsetup(8) of
# lvm2 2.03, findmnt(8) of util-linux 2.38), as far as the tool could ever use them. The fake
# refuses anything else the way the command does, so a misspelt option or field fails.
_LVM_OPTIONS_WITH_VALUE = {"-o", "--options", "-S", "--select", "--reportformat", "--units",
                           "--separator", "-O", "--sort", "--config"}
_LVM_FLAGS = {"--noheadings", "--nosuffix", "--binary", "--readonly", "-a", "--all", "--"}
_LVM_FIELDS = {
    "lv_name", "vg_name", "lv_path", "lv_dm_path", "lv_size", "lv_attr", "origin", "pool_lv",
    "snap_percent", "data_percent", "metadata_percent", "lv_tags", "lv_snapshot_invalid",
    "lv_uuid", "lv_active", "lv_role", "lv_layout", "lv_device_open", "lv_time",
    "lv_kernel_major", "lv_kernel_minor", "devices", "seg_count", "copy_percent",
    "vg_size", "vg_free", "vg_extent_size", "vg_extent_count", "vg_free_count", "vg_uuid",
    "vg_tags", "vg_attr", "pv_count", "lv_count", "snap_count", "pv_name",
}
_DMSETUP_INFO_WITH_VALUE = {"-o", "--options", "-S", "--select", "--separator", "--sort"}
_DMSETUP_INFO_FLAGS = {"-c", "-C", "--columns", "--noheadings", "--nameprefixes", "--rows"}
_DMSETUP_FIELDS = {"name", "uuid", "major", "minor", "open", "attr", "segments", "events",
                   "devno", "blkdevname", "blkdevs_used", "names_using_dev", "subsystem"}
_FINDMNT_WITH_VALUE = {"-o", "--output", "-M", "--mountpoint", "-T", "--target", "-S",
                       "--source", "-t", "--types", "-O", "--options", "-N", "--task"}
_FINDMNT_FLAGS = {"-J", "--json", "-l", "--list", "-n", "--noheadings", "-r", "--raw", "-u",
                  "--notruncate", "-e", "--evaluate", "--real", "--kernel", "-k", "-b",
                  "--bytes", "-f", "--first-only", "-v", "--nofsroot"}
_FINDMNT_COLUMNS = {"TARGET", "SOURCE", "FSTYPE", "OPTIONS", "MAJ:MIN", "UUID", "LABEL",
                    "FSROOT", "VFS-OPTIONS", "FS-OPTIONS", "ID", "PARENT", "PROPAGATION",
                    "SIZE", "AVAIL", "USED", "USE%", "PARTUUID", "PARTLABEL", "SOURCES"}


def _check_options(a: tuple[str, ...], start: int, with_value: set[str], flags: set[str],
                   fields: set[str] | None, fields_option: tuple[str, ...], unknown_option,
                   unknown_field, fold: bool = False) -> tuple[int, str, str] | None:
    i = start
    while i < len(a):
        word = a[i]
        if word == "--":
            return None  # names follow
        if word in with_value:
            if i + 1 >= len(a):
                return unknown_option(word)
            if fields is not None and word in fields_option:
                for f in a[i + 1].split(","):
                    name = f.strip().removeprefix("+")
                    if (name.upper() if fold else name) not in fields:
                        return unknown_field(f)
            i += 2
        elif word in flags:
            i += 1
        elif word.startswith("-"):
            return unknown_option(word)
        else:
            i += 1  # a name (an LV, a VG, a map)
    return None


_FIND_WITH_VALUE = {"-mindepth", "-maxdepth", "-type", "-name", "-path", "-printf", "-newer"}
_FIND_FLAGS = {"-xdev", "-mount", "-print", "-print0", "-o", "-a", "-not", "!", "(", ")",
               "-quit", "-empty"}


def _refuse_find(a: tuple[str, ...]) -> tuple[int, str, str] | None:
    """find(1): paths, then an expression of primaries it knows, each value checked."""
    i = 1
    while i < len(a) and not a[i].startswith("-") and a[i] not in ("!", "(", ")"):
        i += 1  # the starting points
    while i < len(a):
        word = a[i]
        if word in _FIND_WITH_VALUE:
            if i + 1 >= len(a):
                return 1, "", f"find: missing argument to `{word}'\n"
            value = a[i + 1]
            if word in ("-mindepth", "-maxdepth") and not value.isdigit():
                return 1, "", (f"find: Expected a positive decimal integer argument to {word}, "
                               f"but got `{value}'\n")
            if word == "-type" and value not in ("b", "c", "d", "p", "f", "l", "s", "D"):
                return 1, "", f"find: Unknown argument to -type: {value}\n"
            i += 2
        elif word in _FIND_FLAGS:
            i += 1
        else:
            return 1, "", f"find: unknown predicate `{word}'\n"
    return None


def refuse_unknown_options(a: tuple[str, ...]) -> tuple[int, str, str] | None:
    """What lvs, vgs, ``dmsetup info``, ``dmsetup remove``, lvremove, findmnt and find answer
    to an option, a field or a value they do not know (None: everything is real)."""
    cmd = a[0]
    if cmd == "find":
        return _refuse_find(a)
    if cmd == "lvremove":
        return _check_options(a, 1, set(), {"-f", "--force", "-y", "--yes", "--"}, None, (),
                              lambda w: (3, "", f"lvremove: unrecognized option '{w}'\n"),
                              lambda f: None)
    if cmd == "dmsetup" and len(a) > 1 and a[1] == "remove":
        return _check_options(a, 2, set(), {"--retry", "-f", "--force", "--deferred"}, None, (),
                              lambda w: (1, "", f"dmsetup: unrecognized option '{w}'\n"),
                              lambda f: None)
    if cmd in ("lvs", "vgs"):
        return _check_options(
            a, 1, _LVM_OPTIONS_WITH_VALUE, _LVM_FLAGS, _LVM_FIELDS, ("-o", "--options"),
            lambda w: (3, "", f"{cmd}: unrecognized option '{w}'\n  Error during parsing of "
                              "command line.\n"),
            lambda f: (5, "", f"  Unrecognised field: {f}\n"))
    if cmd == "dmsetup" and len(a) > 1 and a[1] == "info":
        return _check_options(
            a, 2, _DMSETUP_INFO_WITH_VALUE, _DMSETUP_INFO_FLAGS, _DMSETUP_FIELDS,
            ("-o", "--options"),
            lambda w: (1, "", f"dmsetup: unrecognized option '{w}'\n"),
            lambda f: (1, "", f"Unrecognised field: {f}\nCommand failed.\n"))
    if cmd == "findmnt":
        return _check_options(
            a, 1, _FINDMNT_WITH_VALUE, _FINDMNT_FLAGS, _FINDMNT_COLUMNS, ("-o", "--output"),
            lambda w: (1, "", f"findmnt: unrecognized option '{w}'\n"),
            lambda f: (1, "", f"findmnt: unknown column: {f}\n"), fold=True)
    return None


def _split_operands(a: tuple[str, ...], flags: set[str]) -> tuple[set[str], list[str], str]:
    """A coreutils command line: (flags given, operands, "" or the unknown option). After
    ``--`` every word is an operand, even one starting with a dash."""
    given: set[str] = set()
    operands: list[str] = []
    for i, word in enumerate(a[1:], 1):
        if word == "--":
            return given, operands + list(a[i + 1:]), ""
        if word.startswith("-"):
            if word not in flags:
                return given, operands, word
            given.add(word)
        else:
            operands.append(word)
    return given, operands, ""


# readlink(1) of GNU coreutils 9: every option it has (each taking no value), and the
# canonicalisation mode of those that set one ("e", "f", "m"; the last given wins).
_READLINK_FLAGS = {"-e": "e", "--canonicalize-existing": "e", "-f": "f", "--canonicalize": "f",
                   "-m": "m", "--canonicalize-missing": "m", "-n": "", "--no-newline": "",
                   "-q": "", "--quiet": "", "-s": "", "--silent": "", "-v": "", "--verbose": "",
                   "-z": "", "--zero": ""}


def _readlink_options(a: tuple[str, ...]) -> tuple[list[str], list[str], str]:
    """readlink's command line as getopt reads it: (options given, in order, bundles such as
    "-ev" taken apart; operands; "" or the first unknown option). After ``--`` every word
    is an operand, and so is a lone "-"."""
    given: list[str] = []
    operands: list[str] = []
    for i, word in enumerate(a[1:], 1):
        if word == "--":
            return given, operands + list(a[i + 1:]), ""
        if not word.startswith("-") or word == "-":
            operands.append(word)
            continue
        for option in [word] if word.startswith("--") else [f"-{c}" for c in word[1:]]:
            if option not in _READLINK_FLAGS:
                return given, operands, option
            given.append(option)
    return given, operands, ""


def play_reads(host: str, argv: Sequence[str], run_one: Callable[[tuple[str, ...]],
               CommandResult]) -> CommandResult | None:
    """A host's answer to a reads_argv command: each probe run by ``run_one``, every one,
    its output and exit code between its lines; None for any other argv."""
    reads = unwrap_reads(argv)
    if reads is None:
        return None
    boundary, probes = reads
    out = err = ""
    for k, probe in enumerate(probes):
        inner = run_one(probe)
        out += read_section(k, boundary, inner.stdout, inner.exit_code)
        err += read_section(k, boundary, inner.stderr, inner.exit_code)
    return CommandResult(host, tuple(argv), 0, out, err, 0.0)


class FakeHost:
    """In-memory Dom0: LVs, dm maps, directories and mounts, changed by commands.

    It refuses what the real commands refuse, so an order or ownership mistake fails
    here as it would on a Dom0:

    - ``lvremove`` of an LV that a map sits on, that is mounted or that a running process
      has open (its command line names the node, as ``dd if=``/``of=`` do): exit 5,
      "in use";
    - ``dmsetup remove`` / ``kpartx -d`` of a map that is mounted, that another map sits
      on or that a running process has open: exit 1, "Device or resource busy";
    - ``rmdir`` of a directory with a mount on it, or anything below it;
    - ``mkdir`` of a directory that exists or whose parent does not;
    - ``mount`` of a device or onto a mountpoint that does not exist: exit 32;
    - ``umount`` of a mount with a mount below it, or that a process works in: busy.

    Every device (an LV or a map) gets its own number when it is made, kept in
    ``devices`` (name -> "major:minor"), which ``stat`` of its node reports. ``mount``
    records the number of the device it mounted in the mount table, which ``findmnt``
    reports: a mount of another device shows another number.
    """

    def __init__(self, host: str, *, fail: Callable[[tuple[str, ...]], CommandResult | None]
                 | None = None, silent_mount: bool = False,
                 devices: Iterable[str] = BASE_DEVICES) -> None:
        self.host = host
        self.calls: list[tuple[str, ...]] = []
        # each call's bound as passed: None is the runner's own (command_timeout), NO_LIMIT none
        self.timeouts: list[tuple[tuple[str, ...], float | None]] = []
        # "vg/name" -> {"attr", "percent", "tags", "origin"}: the LVs runs make
        self.lvs: dict[str, dict] = {}
        self.vg_free: dict[str, int] = {}  # a VG's free bytes (vgs); 8 GiB when not set
        # a classic merge the kernel has begun but LVM has not finished: "vg/point" ones
        # (lvconvert --merge then leaves the point a merging snapshot, attr "S")
        self.merge_stalls: set[str] = set()
        self.maps: set[str] = set()
        self.map_on: dict[str, str] = {}  # map name -> dm name of the device it sits on
        self.dirs: set[str] = set()  # directories a run made (mkdir without -p)
        self.base_dirs: set[str] = {"/"}  # directories made with mkdir -p, and their parents
        # mountpoint -> (device as given to mount, fstype, "major:minor" of that device)
        self.mounts: dict[str, tuple[str, str, str]] = {}
        self.mount_options: dict[str, str] = {}  # mountpoint -> the options mount was given
        self.files: dict[str, str] = {}
        self.processes: dict[int, str] = {}  # pid -> command line (holds its paths busy)
        self.ignores_term: set[int] = set()  # processes only SIGKILL ends
        self.fail = fail
        self.silent_mount = silent_mount
        self.boot_writes: list[tuple[str, int, str]] = []  # (device, offset, data) of dd
        self.late_nodes = False  # True: no udev makes /dev/mapper nodes of dmsetup's maps
        self.no_node: set[str] = set()  # maps whose /dev/mapper node is not there yet
        self.fstab_on: str | None = None  # mount path suffix of the fs holding etc/fstab
        self.fstab = FSTAB  # what that etc/fstab says
        self.symlinks: dict[str, str] = {}  # absolute path -> its target, as readlink sees it
        self.cwd = "/root"  # where a command starts (root's home, over ssh)
        self.rsync_result = (0, RSYNC_STATS, "")
        self.partition_numbers: tuple[int, ...] = MSDOS_PARTITIONS
        self.devices: dict[str, str] = {}  # dm name -> "major:minor", per device
        self._minor = 0
        self.base_lvs: dict[str, tuple[str, ...]] = {}  # "vg/name" -> tags, not the run's
        # domain -> what `virsh dumpxml` prints of it (the recorded web01 unless set)
        self.definitions: dict[str, str] = {}
        for path in devices:
            vg, name = path.removeprefix("/dev/").split("/")
            self.base_lvs[f"{vg}/{name}"] = ()
            self._new_device(dm_name(vg, name))

    def close(self) -> None:
        """A Runner's close: the fake holds no connection."""

    def leftovers(self) -> list[str]:
        return ([f"lv {k}" for k in self.lvs] + [f"map {m}" for m in sorted(self.maps)]
                + [f"dir {d}" for d in sorted(self.dirs)] + [f"mount {m}" for m in self.mounts])

    # -- the device model ----------------------------------------------

    def _new_device(self, name: str) -> None:
        self._minor += 1
        self.devices[name] = f"253:{self._minor}"

    def _lv_dm_names(self) -> dict[str, str]:
        return {dm_name(*k.split("/")): k for k in (*self.base_lvs, *self.lvs)}

    def resolve(self, path: str) -> str | None:
        """The dm name of an existing device node (/dev/mapper/NAME or /dev/VG/LV)."""
        if path.startswith("/dev/mapper/"):
            name = path.removeprefix("/dev/mapper/")
        elif path.startswith("/dev/") and path.count("/") == 3:
            name = dm_name(*path.removeprefix("/dev/").split("/"))
        else:
            return None
        return name if name in self.maps or name in self._lv_dm_names() else None

    def _users(self, name: str) -> tuple[list[str], list[str]]:
        """(mountpoints of the device, maps sitting on it and processes holding it open)."""
        mounted = [m for m, (dev, _, _) in self.mounts.items() if self.resolve(dev) == name]
        # a process holds a device open when its command line names the node (dd if=/of=)
        opened = [f"pid {pid}" for pid, args in sorted(self.processes.items())
                  if any(self.resolve(tok.split("=", 1)[-1]) == name for tok in args.split())]
        return mounted, sorted(m for m, on in self.map_on.items() if on == name) + opened

    def _remove_map(self, name: str) -> tuple[int, str]:
        if name not in self.maps:
            return 1, f"Device {name} not found\nCommand failed.\n"
        mounted, held = self._users(name)
        if mounted or held:
            return 1, (f"device-mapper: remove ioctl on {name}  failed: Device or resource "
                       "busy\nCommand failed.\n")
        self.maps.discard(name)
        self.map_on.pop(name, None)
        self.devices.pop(name, None)
        return 0, ""

    def _exists_dir(self, path: str) -> bool:
        return path in self.dirs or path in self.base_dirs

    def _busy_paths(self) -> list[str]:
        return [tok.split(":", 1)[-1] for args in self.processes.values()
                for tok in args.split()]

    # -- the runner ------------------------------------------------------

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = None,
            input: str | None = None, ok_codes: Iterable[int] = (0,),
            env: Mapping[str, str] | None = None) -> CommandResult:
        args = validate_argv(argv)
        self.calls.append(args)
        self.timeouts.append((args, timeout))
        wrapped = unwrap_journalled(args)
        if wrapped is not None:
            # journalled_argv: the entry is appended (unless the fail hook refuses the
            # write), then the wrapped command runs as a call of its own.
            path, inner = wrapped
            refused = self.fail(("dd", f"of={path}")) if self.fail else None
            if refused is not None:
                res = CommandResult(self.host, args, JOURNAL_FAILED_EXIT, "",
                                    f"{JOURNAL_FAILED_MESSAGE}: {path}", 0.0)
            else:
                self.base_dirs.update(_parents(path))  # the wrapper makes its directory
                self.files[path] = self.files.get(path, "") + (input or "")
                res = self.run(inner, check=False, timeout=timeout, env=env)
            if check and res.exit_code not in tuple(ok_codes):
                raise CommandFailed(res)
            return res
        batch = unwrap_undo_batch(args)
        if batch is not None:
            # undo_batch_argv: each undo runs as a call of its own, until one fails.
            out = batch_mark(None, None, time.monotonic())
            for n, undo in enumerate(batch):
                inner = self.run(undo, check=False, timeout=timeout, env=env)
                out += inner.stdout + batch_mark(n, inner.exit_code, time.monotonic())
                if inner.exit_code != 0:
                    break
            return CommandResult(self.host, args, 0, out, "", 0.0)
        played = play_reads(self.host, args, lambda a: self.run(a, check=False,
                                                                timeout=timeout, env=env))
        if played is not None:
            return played
        steps = unwrap_step_batch(args)
        if steps is not None:
            return self._step_batch(args, steps, timeout, env)
        replaced = unwrap_replace(args)
        if replaced is not None:
            # replace_file_argv: the fail hook sees it as the dd of the temp file.
            res = self.fail(("dd", f"of={replaced}.tmp")) if self.fail else None
            if res is None:
                self.files[replaced] = input or ""
                res = CommandResult(self.host, args, 0, "", "", 0.0)
            if check and res.exit_code not in tuple(ok_codes):
                raise CommandFailed(res)
            return res
        res = self.fail(args) if self.fail else None
        if res is None:
            code, out, err = self._answer(args, input)
            res = CommandResult(self.host, args, code, out, err, 0.0)
        if check and res.exit_code not in tuple(ok_codes):
            raise CommandFailed(res)
        return res

    def _step_batch(self, args, steps, timeout, env) -> CommandResult:
        """step_batch_argv: each journal entry appended (unless the fail hook refuses the
        write), then each command run as a call of its own, until one fails."""
        out, err = step_mark(None, "", time.monotonic()), ""
        for k, step in enumerate(steps):
            if step.journal:
                if self.fail and self.fail(("dd", f"of={step.journal}")) is not None:
                    err += f"{JOURNAL_FAILED_MESSAGE}: {step.journal}\n"
                    out += step_mark(k, str(JOURNAL_FAILED_EXIT), time.monotonic())
                    break
                self.base_dirs.update(_parents(step.journal))
                self.files[step.journal] = self.files.get(step.journal, "") + step.entry + "\n"
            res = self.run(step.argv, check=False, timeout=timeout, env=env)
            out, err = out + res.stdout, err + res.stderr
            code = str(res.exit_code)
            if code == "0" and step.node:
                is_block, mknodes = dm_node_probes(step.node)
                if self.run(is_block, check=False, timeout=60).exit_code != 0:
                    self.run(mknodes, check=False, timeout=60)
                    if self.run(is_block, check=False, timeout=60).exit_code != 0:
                        code = NODE_MISSING
            out += step_mark(k, code, time.monotonic())
            if code != "0":
                break
        return CommandResult(self.host, args, 0, out, err, 0.0)

    def _answer(self, a: tuple[str, ...], input: str | None) -> tuple[int, str, str]:
        cmd = a[0]
        refused = refuse_unknown_options(a)
        if refused is not None:
            return refused
        handler = getattr(self, f"_cmd_{cmd}", None)
        if handler is not None:
            answer = handler(a, input)
            if answer is not None:
                return answer
        if cmd == "sync":
            return 0, "", ""
        if cmd == "setpriv" and a[1:4] == ("--pdeathsig", "KILL", "--"):
            return self._answer(a[4:], input)
        if cmd == "rsync":
            return self.rsync_result
        if a[:2] == ("sh", "-c") and len(a) == 5 and a[3] == "domu-backup-statedir":
            d = a[4]
            return 0, (f"0\nR {d}\nD 41c0 0 {d}\n"
                       + "".join(f"P 41ed 0 {p}\n" for p in _parents(d))), ""
        return 127, "", f"fake host: unknown command {a!r}"

    # -- LVM -------------------------------------------------------------

    def _cmd_lvcreate(self, a, input):
        name = a[a.index("--name") + 1]
        vg, origin = a[-1].split("/")
        tags = tuple(a[i + 1] for i, x in enumerate(a) if x == "--addtag")
        if dm_name(vg, origin) not in self._lv_dm_names():
            return 5, "", f'  Failed to find logical volume "{vg}/{origin}"\n'
        if f"{vg}/{name}" in self.lvs or f"{vg}/{name}" in self.base_lvs:
            return 5, "", f'  Logical Volume "{name}" already exists in volume group "{vg}"\n'
        pool = self._all_lvs()[f"{vg}/{origin}"].get("pool", "")
        writable = "--permission" in a and a[a.index("--permission") + 1] == "rw"
        if pool:  # a thin snapshot: in its origin's pool, no copy-on-write fill
            attr = ("Vwi-a-tz--" if writable else "Vri-a-tz--")
            self.lvs[f"{vg}/{name}"] = {"attr": attr, "percent": "", "tags": tags,
                                        "origin": origin, "pool": pool}
        else:
            self.lvs[f"{vg}/{name}"] = {"attr": "swi-a-s---", "percent": "1.50", "tags": tags,
                                        "origin": origin}
        self._new_device(dm_name(vg, name))
        return 0, f'  Logical volume "{name}" created.\n', ""

    def _cmd_lvrename(self, a, input):
        vg, old, new = a[1:4]
        if f"{vg}/{old}" not in self.lvs:
            return 5, "", f'  Existing logical volume "{old}" not found in volume group "{vg}"\n'
        if f"{vg}/{new}" in self._all_lvs():
            return 5, "", f'  Logical Volume "{new}" already exists in volume group "{vg}"\n'
        self.lvs[f"{vg}/{new}"] = self.lvs.pop(f"{vg}/{old}")
        for lv in self.lvs.values():  # its snapshots follow it
            if lv.get("origin") == old:
                lv["origin"] = new
        self.devices[dm_name(vg, new)] = self.devices.pop(dm_name(vg, old))
        return 0, f'  Renamed "{old}" to "{new}" in volume group "{vg}"\n', ""

    def _cmd_lvchange(self, a, input):
        key = a[-1]
        if key not in self.lvs:
            return 5, "", f'  Failed to find logical volume "{key}"\n'
        tags = list(self.lvs[key]["tags"])
        for i, w in enumerate(a[:-1]):
            if w == "--addtag" and a[i + 1] not in tags:
                tags.append(a[i + 1])
            elif w == "--deltag" and a[i + 1] in tags:
                tags.remove(a[i + 1])
            elif w.startswith("-") and w not in ("--addtag", "--deltag"):
                return 3, "", f"lvchange: option {w} is not modelled\n"
        self.lvs[key]["tags"] = tuple(tags)
        return 0, f'  Logical volume {key} changed.\n', ""

    def _cmd_lvremove(self, a, input):
        key = a[-1]
        if key not in self.lvs:
            return 5, "", f'  Failed to find logical volume "{key}"\n'
        mounted, held = self._users(dm_name(*key.split("/")))
        if mounted:
            return 5, "", f"  Logical volume {key} contains a filesystem in use.\n"
        if held:
            return 5, "", f"  Logical volume {key} in use.\n"
        del self.lvs[key]
        self.devices.pop(dm_name(*key.split("/")), None)
        return 0, f'  Logical volume "{key.split("/")[1]}" successfully removed.\n', ""

    def _all_lvs(self) -> dict[str, dict]:
        base = {k: {"attr": "-wi-ao----", "percent": "", "tags": tags, "origin": ""}
                for k, tags in self.base_lvs.items()}
        return {**base, **self.lvs}

    def _cmd_lvs(self, a, input):
        every = self._all_lvs()
        if "--reportformat" in a:  # lvs_argv: the JSON report of named LVs
            rows = []
            names = []
            for n in a[a.index("--") + 1:]:
                if n.startswith("@"):  # every LV with that tag
                    names += [k for k in sorted(every) if n[1:] in every[k]["tags"]]
                elif "/" not in n:  # a VG: every LV in it
                    names += [k for k in sorted(every) if k.startswith(f"{n}/")]
                else:
                    names.append(n.removeprefix("/dev/"))  # lvs takes /dev/VG/LV as VG/LV
            for n in names:
                if n not in every:
                    return 5, "", f'  Failed to find logical volume "{n}"\n'
                vg, name, lv = *n.split("/"), every[n]
                rows.append({"vg_name": vg, "lv_name": name, "lv_path": f"/dev/{n}",
                             "lv_dm_path": f"/dev/mapper/{dm_name(vg, name)}",
                             "lv_size": "67108864", "lv_attr": lv["attr"],
                             "origin": lv["origin"], "pool_lv": lv.get("pool", ""),
                             "snap_percent": lv["percent"], "lv_tags": ",".join(lv["tags"]),
                             "lv_snapshot_invalid": "1" if lv["attr"][4] == "I" else ""})
            return 0, json.dumps({"report": [{"lv": rows}]}), ""
        fields, select, names, i = ["lv_name"], None, [], 1
        while i < len(a):
            if a[i] in ("-o", "--options"):
                fields, i = a[i + 1].split(","), i + 2
            elif a[i] in ("-S", "--select"):
                select, i = a[i + 1], i + 2
            elif a[i] in ("--noheadings", "--"):
                i += 1
            else:
                names.append(a[i])
                i += 1
        for n in names:
            if n not in every:
                return 5, "", f'  Failed to find logical volume "{n}"\n'
        picked = names or sorted(every)
        if select is not None and select.startswith("origin="):
            picked = [n for n in picked if every[n]["origin"] == select.removeprefix("origin=")]
        elif select is not None:
            m = re.fullmatch(r"(?:lv_)?tags=([\[{]?)\"?([^\]}\"]+)\"?([\]}]?)", select)
            if m is None:
                return 127, "", f"fake host: lvs selection {select!r} is not modelled"
            # a single item, bare or in [] or {}: the LVs whose tags include it
            picked = [n for n in picked if m.group(2) in every[n]["tags"]]
        out = []
        for n in picked:
            vg, name = n.split("/")
            value = {"vg_name": vg, "lv_name": name, "lv_tags": ",".join(every[n]["tags"]),
                     "lv_attr": every[n]["attr"]}
            out.append("  " + " ".join(value[f] for f in fields) + "\n")
        return 0, "".join(out), ""

    def _cmd_vgs(self, a, input):
        vgs = sorted({k.split("/")[0] for k in self._all_lvs()})
        if "--reportformat" in a:  # vgs_argv: the JSON report of the named VGs
            names = a[a.index("--") + 1:] or vgs
            rows = [{"vg_name": v, "vg_size": str(64 << 30),
                     "vg_free": str(self.vg_free.get(v, 8 << 30)),
                     "vg_extent_size": str(4 << 20)} for v in names]
            return 0, json.dumps({"report": [{"vg": rows}]}), ""
        return 0, "".join(f"  {v}\n" for v in vgs), ""

    def _cmd_lvconvert(self, a, input):
        """A classic snapshot merged into its origin (``--merge``: the origin takes the
        point's content, here its ``content`` key, and the point is gone), or a merge begun
        and stalled (``merge_stalls``) gone on with (``--startpoll`` of the origin)."""
        if a[1] == "--startpoll":
            vg, origin = a[2].split("/")
            stalled = [k for k in sorted(self.merge_stalls)
                       if k.startswith(f"{vg}/") and self.lvs[k]["origin"] == origin]
            for key in stalled:
                self.merge_stalls.discard(key)
                self._finish_merge(key)
            return 0, "", ""
        if a[1] != "--merge":
            return 3, "", f"lvconvert: {a[1]} is not modelled\n"
        key = a[-1]
        lv = self.lvs.get(key)
        if lv is None:
            return 5, "", f'  Failed to find logical volume "{key}"\n'
        if lv["attr"][0] not in "sS" or lv.get("pool"):
            return 5, "", f"  {key} is not a mergeable logical volume.\n"
        if key in self.merge_stalls:  # the kernel began; the command was cut short
            lv["attr"] = "S" + lv["attr"][1:]
            return 137, "", "Killed\n"
        self._finish_merge(key)
        return 0, f"  Merging of volume {key} started.\n  {key}: Merged: 100.00%\n", ""

    def _finish_merge(self, key: str) -> None:
        vg, _ = key.split("/")
        lv = self.lvs.pop(key)
        self.devices.pop(dm_name(*key.split("/")), None)
        origin = self._all_lvs()[f"{vg}/{lv['origin']}"]
        for other in self.lvs.values():  # every other snapshot keeps what it showed
            if other.get("origin") == lv["origin"] and "content" not in other:
                other["content"] = origin.get("content", "standby as it was")
        target = self.lvs.get(f"{vg}/{lv['origin']}")
        if target is not None:
            target["content"] = lv.get("content", f"content of {key}")

    # -- device-mapper ---------------------------------------------------

    def _cmd_kpartx(self, a, input):
        dev, sep = a[-1], a[a.index("-p") + 1]
        parent = self.resolve(dev)
        if parent is None:
            return 1, "", f"failed to stat() {dev}\n"
        parts = [f"{parent}{sep}{n}" for n in self.partition_numbers]
        if a[1] == "-a":
            for name in parts:
                if name not in self.maps:
                    self.maps.add(name)
                    self.map_on[name] = parent
                    self._new_device(name)
            return 0, "", ""
        errs = []
        for name in reversed(parts):
            if name in self.maps:
                code, err = self._remove_map(name)
                if code:
                    errs.append(err.splitlines()[0] + "\n")
        return (1, "", "".join(errs)) if errs else (0, "", "")

    def _cmd_dmsetup(self, a, input):
        names = sorted(self.maps | set(self._lv_dm_names()))
        if a[1] == "info" and "-S" in a:
            pattern = a[a.index("-S") + 1].removeprefix('name=~"').removesuffix('"')
            rx = re.compile(pattern)
            return 0, "".join(f"{m}\n" for m in names if rx.search(m)), ""
        if a[1] == "info":
            positional = [x for x in a[2:] if not x.startswith("-") and x not in ("name",)]
            if not positional:  # every dm device: maps and LVM's own
                return (0, "".join(f"{m}\n" for m in names), "") if names else (
                    0, "No devices found\n", "")
            name = positional[-1]
            return (0, f"{name}\n", "") if name in names else (
                1, "", "Device does not exist.\nCommand failed.\n")
        if a[1] == "create":
            if a[2] == "--concise":
                name, _, _, _, table = a[3].split(",", 4)
            else:
                name, table = a[2], a[a.index("--table") + 1]
            words = table.split()
            below = self.resolve(words[words.index("linear") + 1])
            if name in names:
                return 1, "", (f"device-mapper: create ioctl on {name}  failed: Device or "
                               "resource busy\nCommand failed.\n")
            if below is None:
                return 1, "", (f"device-mapper: reload ioctl on {name}  failed: No such "
                               "device or address\nCommand failed.\n")
            self.maps.add(name)
            self.map_on[name] = below
            self._new_device(name)
            if self.late_nodes:
                self.no_node.add(name)  # udev has not made /dev/mapper/NAME (yet)
            return 0, "", ""
        if a[1] == "remove":
            name = a[-1]
            if name not in self.maps and name in names:
                return 1, "", (f"fake host: {name} is LVM's own device (lvremove owns it)\n")
            code, err = self._remove_map(name)
            return code, "", err
        if a[1] == "mknodes":
            # makes the node of the map named (every map's without a name), if it exists
            self.no_node -= set(a[2:3]) if len(a) > 2 else set(self.no_node)
            return 0, "", ""
        return None

    def _cmd_test(self, a, input):
        if a[1] == "-b":  # a dm node exists while its device does, once it is made
            name = self.resolve(a[2])
            return (0, "", "") if name is not None and name not in self.no_node else (1, "", "")
        return None

    def _cmd_stat(self, a, input):
        if "-f" in a:
            return None
        name = self.resolve(a[-1])
        if name is None:
            return 1, "", f"stat: cannot statx '{a[-1]}': No such file or directory\n"
        major, minor = (int(x) for x in self.devices[name].split(":"))
        return 0, f"{major:x}:{minor:x}\n", ""

    # -- directories and mounts ------------------------------------------

    def _cmd_mkdir(self, a, input):
        path = a[-1]
        if "-p" in a:
            self.base_dirs.add(path)
            self.base_dirs.update(_parents(path))
            return 0, "", ""
        if self._exists_dir(path):
            return 1, "", f"mkdir: cannot create directory '{path}': File exists\n"
        if not self._exists_dir(path.rsplit("/", 1)[0] or "/"):
            return 1, "", (f"mkdir: cannot create directory '{path}': No such file or "
                           "directory\n")
        self.dirs.add(path)
        return 0, "", ""

    def _cmd_rmdir(self, a, input):
        """rmdir(1): every operand in turn (after ``--`` even one starting with a dash); an
        unknown option refuses all, a failing operand makes the exit status 1."""
        _, operands, unknown = _split_operands(a, set())
        if unknown:
            return 1, "", f"rmdir: unrecognized option '{unknown}'\n"
        if not operands:
            return 1, "", "rmdir: missing operand\n"
        errs = [err for path in operands if (err := self._rmdir_one(path))]
        return (1, "", "".join(errs)) if errs else (0, "", "")

    def _rmdir_one(self, path: str) -> str:
        if not path.startswith("/"):
            return f"rmdir: fake host: relative path '{path}'\n"
        if path in self.mounts:
            return f"rmdir: failed to remove '{path}': Device or resource busy\n"
        if not self._exists_dir(path):
            return f"rmdir: failed to remove '{path}': No such file or directory\n"
        below = path.rstrip("/") + "/"
        if any(p.startswith(below) for p in (*self.dirs, *self.base_dirs, *self.mounts,
                                             *self.files)):
            return f"rmdir: failed to remove '{path}': Directory not empty\n"
        self.dirs.discard(path)
        self.base_dirs.discard(path)
        return ""

    def _cmd_mount(self, a, input):
        dev, mnt, fstype = a[-2], a[-1], a[a.index("-t") + 1]
        if not self._exists_dir(mnt):
            return 32, "", f"mount: {mnt}: mount point does not exist.\n"
        name = self.resolve(dev)
        if name is None:
            return 32, "", f"mount: {mnt}: special device {dev} does not exist.\n"
        if not self.silent_mount:
            self.mounts[mnt] = (dev, fstype, self.devices[name])
            self.mount_options[mnt] = a[a.index("-o") + 1] if "-o" in a else "rw"
        return 0, "", ""

    def _cmd_umount(self, a, input):
        mnt = a[-1]
        if mnt not in self.mounts:
            return 32, "", f"umount: {mnt}: not mounted.\n"
        below = mnt.rstrip("/") + "/"
        if any(m.startswith(below) for m in self.mounts) or any(
                p == mnt or p.startswith(below) for p in self._busy_paths()):
            return 32, "", f"umount: {mnt}: target is busy.\n"
        del self.mounts[mnt]
        return 0, "", ""

    def _cmd_mountpoint(self, a, input):
        return (0, "", "") if a[-1] in self.mounts else (32, "", "")

    def _cmd_findmnt(self, a, input):
        """``--json`` with the ``-o`` columns asked for (lower case keys, as findmnt writes
        them); ``--mountpoint`` narrows to one mountpoint (exit 1, no output: none)."""
        columns = (a[a.index("-o") + 1].lower().split(",") if "-o" in a
                   else ["target", "source", "fstype", "options"])
        if "--mountpoint" in a:
            mnt = a[a.index("--mountpoint") + 1]
            if mnt not in self.mounts:
                return 1, "", ""
            targets = [mnt]
        else:  # the whole table (recover's sweep): the host's own root first
            targets = ["/", *self.mounts]
        if "-n" in a:
            return 0, "".join(f"{t}\n" for t in targets), ""
        rows = []
        for t in targets:
            dev, fstype, majmin = self.mounts.get(t, ("/dev/vda1", "ext4", "254:1"))
            known = {"target": t, "source": dev, "fstype": fstype, "maj:min": majmin,
                     "options": self.mount_options.get(t, "rw")}
            rows.append({c: known[c] for c in columns})
        return 0, json.dumps({"filesystems": rows}) if rows else "", ""

    def _cmd_find(self, a, input):
        top = a[1]
        opt = {a[i]: a[i + 1] for i in range(2, len(a) - 1) if a[i] in (
            "-maxdepth", "-mindepth", "-type", "-name")}
        if "-xdev" in a:  # the source's not-empty guard
            return 0, (f"{top}/etc\n" if top in self.mounts else ""), ""
        if opt.get("-maxdepth") == "0":
            return (0, top + "\n", "") if self._exists_dir(top) or top in self.files else (
                1, "", f"find: '{top}': No such file or directory\n")
        if not self._exists_dir(top):
            return 1, "", f"find: '{top}': No such file or directory\n"
        if opt.get("-type") == "f":
            found = [p for p in self.files if p.rsplit("/", 1)[0] == top]
        elif opt.get("-type", "d") != "d":  # D (a door), b, c...: none in these trees
            found = []
        else:
            found = [p for p in self.dirs | self.base_dirs
                     if p != "/" and (p.rsplit("/", 1)[0] or "/") == top]
        glob = opt.get("-name", "*")
        return 0, "".join(f"{p}\n" for p in sorted(found)
                          if fnmatch.fnmatchcase(p.rsplit("/", 1)[1], glob)), ""

    # -- files -----------------------------------------------------------

    def _cmd_readlink(self, a, input):
        """readlink(1) of GNU coreutils: each operand on a line of its own (relative ones
        from ``cwd``), canonical with -e (every component exists), -f (all but the last)
        or -m (none need to), else the value of the symlink it names. An operand it cannot
        answer makes the exit status 1, silently unless -v; an unknown option refuses all."""
        options, operands, unknown = _readlink_options(a)
        if unknown:
            said = (f"unrecognized option '{unknown}'" if unknown.startswith("--")
                    else f"invalid option -- '{unknown[1:2]}'")
            return 1, "", f"readlink: {said}\nTry 'readlink --help' for more information.\n"
        if not operands:
            return 1, "", "readlink: missing operand\nTry 'readlink --help' for more information.\n"
        given = set(options)
        mode = next((_READLINK_FLAGS[o] for o in reversed(options) if _READLINK_FLAGS[o]), "")
        end = "\0" if given & {"-z", "--zero"} else "\n"
        if len(operands) == 1 and given & {"-n", "--no-newline"}:
            end = ""
        out, errs = [], []
        for word in operands:
            path = word if word.startswith("/") else posixpath.join(self.cwd, word)
            value = self._canonical(path, mode) if mode else self.symlinks.get(path)
            if value is None:
                errs.append(f"readlink: {word}: No such file or directory\n")
            else:
                out.append(value + end)
        verbose = bool(given & {"-v", "--verbose"})
        return (1 if errs else 0), "".join(out), "".join(errs) if verbose else ""

    def _canonical(self, path: str, mode: str) -> str | None:
        """``path`` with every symlink (``symlinks``), ``.`` and ``..`` resolved, as
        readlink -e/-f/-m (``mode``) prints it; None where that mode fails."""
        todo = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                done = done[:-1]
                continue
            here = "/" + "/".join([*done, part])
            if here in self.symlinks:
                hops += 1
                if hops > 40:  # ELOOP
                    return None
                target = self.symlinks[here]
                if target.startswith("/"):
                    done = []
                todo = [p for p in target.split("/") if p] + todo
                continue
            if not self._exists_path(here) and (mode == "e" or (mode == "f" and todo)):
                return None
            done.append(part)
        return "/" + "/".join(done)

    def _exists_path(self, path: str) -> bool:
        """Something is there: a directory, a file, a mount, a device node or symlink, the
        guest's etc/fstab (``fstab_on``), or a directory holding one of these."""
        fstab = f"/{self.fstab_on}/etc/fstab" if self.fstab_on else None
        if (path in ("/", "/dev", "/dev/mapper") or self._exists_dir(path)
                or path in self.files or path in self.mounts or path in self.symlinks
                or self.resolve(path) is not None
                or (fstab is not None and (path.endswith(fstab)
                                           or path.endswith(fstab.rsplit("/", 1)[0])))):
            return True
        below = path.rstrip("/") + "/"
        return any(p.startswith(below) for p in (*self.dirs, *self.base_dirs, *self.files,
                                                 *self.mounts, *self.symlinks)) or (
            path.startswith("/dev/") and path.count("/") == 2
            and any(k.split("/")[0] == path[5:] for k in (*self.base_lvs, *self.lvs)))

    def _cmd_cat(self, a, input):
        """cat(1): every operand in turn (after ``--`` even one starting with a dash); a
        missing or relative one is an error (exit 1) after the others are printed."""
        _, operands, unknown = _split_operands(a, set())
        if unknown:
            return 1, "", f"cat: invalid option -- '{unknown.lstrip('-')[:1]}'\n"
        out, errs = [], []
        for path in operands:
            if self.fstab_on and path.endswith("/etc/fstab"):
                out.append(self.fstab)
            elif path.startswith("/") and path in self.files:
                out.append(self.files[path])
            else:
                errs.append(f"cat: {path}: No such file or directory\n")
        return (1 if errs else 0), "".join(out), "".join(errs)

    def _cmd_tee(self, a, input):
        path = a[-1]
        self.files[path] = (self.files.get(path, "") if "-a" in a else "") + (input or "")
        return 0, "", ""

    def _cmd_dd(self, a, input):
        if "iflag=skip_bytes,count_bytes,fullblock" in a:  # a boot area read
            count = int(next(x for x in a if x.startswith("count=")).removeprefix("count="))
            skip = int(next(x for x in a if x.startswith("skip=")).removeprefix("skip="))
            return 0, "".join(chr(0xdc80 + (skip + i) % 128) for i in range(count)), ""
        if "oflag=seek_bytes" in a:  # a boot area write: onto a device that must exist
            path = next(x for x in a if x.startswith("of=")).removeprefix("of=")
            if self.resolve(path) is None:
                return 1, "", f"dd: failed to open '{path}': No such file or directory\n"
            seek = int(next(x for x in a if x.startswith("seek=")).removeprefix("seek="))
            self.boot_writes.append((path, seek, input or ""))
            return 0, "", ""
        if not any(x.startswith("if=") for x in a):  # stdin to a file
            path = next(x for x in a if x.startswith("of=")).removeprefix("of=")
            kept = self.files.get(path, "") if "oflag=append" in a else ""
            self.files[path] = kept + (input or "")
            return 0, "", ""
        return None

    def _cmd_virsh(self, a, input):
        # virsh -c URI dumpxml [--inactive] -- NAME: the recorded definition of the domain
        if len(a) >= 5 and a[1] == "-c" and a[3] == "dumpxml" and a[-2] == "--":
            name = a[-1]
            if name not in self.definitions and name == "web01":
                return 0, recorded("virsh/dumpxml-web01")["stdout"], ""
            if name in self.definitions:
                return 0, self.definitions[name], ""
            return 1, "", f"error: failed to get domain '{name}'\n"
        return 127, "", f"fake host: unknown command {a}"

    def _cmd_touch(self, a, input):
        path = a[-1]
        self.files.setdefault(path, "")
        return 0, "", ""

    def _cmd_mv(self, a, input):
        self.files[a[-1]] = self.files.pop(a[-2])
        return 0, "", ""

    def _cmd_rm(self, a, input):
        """rm(1) of files: ``-f`` (a missing file is no error), ``--`` ends the options,
        every operand in turn. A relative operand is refused: a fake host has no working
        directory, and the tool only ever removes absolute paths it built."""
        given, operands, unknown = _split_operands(a, {"-f", "--force"})
        if unknown:
            return 1, "", f"rm: unrecognized option '{unknown}'\n"
        force = bool(given)
        if not operands:
            return 1, "", "rm: missing operand\n"
        errs = []
        for path in operands:
            if not path.startswith("/"):
                errs.append(f"rm: fake host: relative path '{path}'\n")
            elif path in self.files:
                del self.files[path]
            elif not force:
                errs.append(f"rm: cannot remove '{path}': No such file or directory\n")
        return (1, "", "".join(errs)) if errs else (0, "", "")

    # -- processes -------------------------------------------------------

    def _cmd_ps(self, a, input):
        """procps ps: ``-eo FORMAT`` lists every process, ``-o FORMAT -p LIST`` those of
        LIST that exist (exit 1 when none does); an unknown format or option is refused."""
        i, fmt, wanted, every = 1, None, None, False
        while i < len(a):
            word = a[i]
            if word in ("-eo", "-o") and i + 1 < len(a):
                every = every or word == "-eo"
                fmt = a[i + 1]
                i += 2
            elif word == "-e":
                every, i = True, i + 1
            elif word == "-p" and i + 1 < len(a):
                try:
                    wanted = {int(p) for p in re.split(r"[ ,]", a[i + 1]) if p}
                except ValueError:
                    return 1, "", "error: process ID list syntax error\n"
                i += 2
            else:
                return 1, "", f"error: unsupported option (BSD syntax)\n{word}\n"
        columns = [c.strip() for c in (fmt or "pid=").split(",")]
        for c in columns:
            if c.rstrip("=") not in ("pid", "args", "comm", "ppid", "cmd"):
                return 1, "", f'error: unknown user-defined format specifier "{c}"\n'
        if [c.rstrip("=") for c in columns] not in (["pid"], ["pid", "args"]):
            return 1, "", "fake host: only pid= and pid=,args= are modelled\n"
        with_args = len(columns) == 2
        if wanted is not None:
            pids = sorted(wanted & set(self.processes))
        elif every:
            pids = sorted(self.processes)
        else:
            return 1, "", "fake host: ps without -e or -p lists the caller's tty only\n"
        out = "".join(f"{p} {self.processes[p]}\n" if with_args else f"{p}\n" for p in pids)
        return (0 if pids or wanted is None else 1), out, ""

    def _cmd_kill(self, a, input):
        """procps kill: a known signal, then pids; a pid that is gone is an error (exit 1),
        the others are still signalled. A pid in ``ignores_term`` survives TERM."""
        signals = {"-TERM": "TERM", "-KILL": "KILL", "-INT": "INT", "-HUP": "HUP",
                   "-15": "TERM", "-9": "KILL", "-s": None}
        if len(a) < 2 or a[1] not in signals or a[1] == "-s":
            return 1, "", f"kill: unknown signal name {a[1] if len(a) > 1 else ''!r}\n"
        pids = list(a[2:])
        if pids[:1] == ["--"]:
            pids = pids[1:]
        errs = []
        for pid_text in pids:
            if not pid_text.lstrip("-").isdigit():
                errs.append(f"kill: failed to parse argument: '{pid_text}'\n")
                continue
            pid = int(pid_text)
            if pid not in self.processes:
                errs.append(f"kill: ({pid}): No such process\n")
            elif signals[a[1]] == "KILL" or pid not in self.ignores_term:
                del self.processes[pid]
        return (1, "", "".join(errs)) if errs else (0, "", "")


class StatfsHost(FakeHost):
    """A host whose ``stat -f`` of a mount answers (exit code, stdout), or loses the
    connection (None)."""

    def __init__(self, host: str, answer: tuple[int, str] | None) -> None:
        super().__init__(host)
        self.answer = answer

    def _cmd_stat(self, a, input):
        if "-f" not in a:
            return super()._cmd_stat(a, input)
        if self.answer is None:
            raise ConnectionLost("cannot open an SSH session", host=self.host)
        code, out = self.answer
        return code, out, "" if code == 0 else "stat: cannot read file system information\n"


class NoDeviceHost(FakeHost):
    """A host where the node of the device planned for xvda1 cannot be stat'ed."""

    def _cmd_stat(self, a, input):
        if "-L" in a and a[-1].endswith("p1"):
            return 1, "", f"stat: cannot statx '{a[-1]}': No such file or directory\n"
        return super()._cmd_stat(a, input)


def _parents(path: str) -> list[str]:
    out = []
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


# -- ownership seen through a view (toolkit.safefs.FsView), so tests of root-only rules run
# as any user ------------------------------------------------------------------------------

def with_uid(st: os.stat_result, uid: int) -> os.stat_result:
    return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, uid, st.st_gid,
                           st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))


def owned_by(uid: int, *paths: Path, euid: int | None = None) -> FsView:
    """A view in which the given files or directories (not following links) belong to uid."""
    ids = {(os.lstat(p).st_dev, os.lstat(p).st_ino) for p in paths}

    def lstat(path: str) -> os.stat_result:
        st = os.lstat(path)
        return with_uid(st, uid) if (st.st_dev, st.st_ino) in ids else st

    def fstat(fd: int) -> os.stat_result:
        st = os.fstat(fd)
        return with_uid(st, uid) if (st.st_dev, st.st_ino) in ids else st

    if euid is None:
        return FsView(lstat=lstat, fstat=fstat)
    return FsView(lstat=lstat, fstat=fstat, euid=lambda: euid)


# -- one run of web01 on two fake Dom0s: the helper every executor test shares ------------

RUN_ID = "20260101T000000Z-abcd"


class WebRun(NamedTuple):
    """What a test needs of a prepared run: its config, plan, report and executor."""

    cfg: Any
    plan: Any
    report: Any
    ex: Any


def web01_hosts(src_fail=None, peer_fail=None) -> tuple[FakeHost, FakeHost]:
    """A source holding web01's guest fstab on xvda1, and a peer, each with a fail hook."""
    src, peer = FakeHost("dom0-a", fail=src_fail), FakeHost("dom0-b", fail=peer_fail)
    src.fstab_on = "xvda1"
    return src, peer


def web01_run(tmp_path: Path, src: FakeHost, peer: FakeHost, *, facts=None, plan=None,
              ssh: Mapping[str, Any] | None = None, allow_mass_delete: bool = False,
              log=None, lock_held: bool = False, **defaults: Any) -> WebRun:
    """web01's run prepared from the test config, with ``defaults`` and ``ssh`` settings
    replaced; ``plan`` (made from that config) in place of the planned one if given."""
    from dataclasses import replace

    from toolkit.execute import Executor
    from toolkit.plan import plan_backup
    from toolkit.report import DomainReport

    cfg = config(tmp_path)
    if defaults:
        cfg = replace(cfg, defaults=replace(cfg.defaults, **defaults))
    if ssh:
        cfg = replace(cfg, ssh=replace(cfg.ssh, **ssh))
    if plan is None:
        plan = plan_backup(facts or web01_facts(), cfg, RUN_ID,
                           allow_mass_delete=allow_mass_delete)
    report = DomainReport("web01")
    return WebRun(cfg, plan, report, Executor(plan, cfg, src, peer, report, log=log,
                                              lock_held=lock_held))


def symlink_guest_fstab(host: FakeHost, to: str = "/etc/shadow", fs: str = "xvda1") -> None:
    """``host``'s readlink says the guest's etc/fstab on ``fs`` is a symlink to ``to``."""
    original = host._answer

    def symlinked(a: tuple[str, ...], input: str | None) -> tuple[int, str, str]:
        if a[0] == "readlink" and a[-1].endswith(f"/{fs}/etc/fstab"):
            return 0, f"{to}\n", ""
        return original(a, input)

    host._answer = symlinked  # type: ignore[method-assign]
