"""A fake Dom0 for executor tests: it keeps the state real commands would change.

``FakeHost`` answers the handful of commands the executor runs (lvcreate,
kpartx, dmsetup, mkdir, mount, findmnt, ...) by updating an in-memory model of
snapshots, maps, directories and mounts, so a test can assert exactly what
exists after a run. Outputs for fact commands come from recorded real outputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from toolkit.config import parse_config
from toolkit.errors import CommandFailed
from toolkit.facts.blkid import FilesystemProbe, parse_blkid_export
from toolkit.facts.lvm import LogicalVolume, dm_name
from toolkit.facts.partitions import parse_sfdisk
from toolkit.facts.virsh import DomainDisk
from toolkit.journal import (
    JOURNAL_FAILED_EXIT,
    JOURNAL_FAILED_MESSAGE,
    unwrap_journalled,
    unwrap_replace,
)
from toolkit.plan import BackupFacts, DiskFacts, FsFacts
from toolkit.runners import CommandResult, validate_argv

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
target_lv = "/dev/vg_b/web01"
"""

FSTAB = """# /etc/fstab of web01
UUID=3f1c2b9a-5d4e-4c7b-9a8f-0e1d2c3b4a59\t/\text4\tdefaults\t0 1
proc /proc proc defaults 0 0
"""

NOTHING = FilesystemProbe(None, None, None, None, None, None)
RSYNC_STATS = (RECORDED / "rsync" / "stats-incremental.txt").read_text()


def config(tmp_path: Path):  # noqa: ANN201
    text = CONFIG_TEXT.format(state=tmp_path / "state", lock=tmp_path / "lock")
    return parse_config(text, tmp_path / "backup.toml")


def recorded(kind: str, name: str) -> dict:
    return json.loads((RECORDED / kind / f"{name}.json").read_text())


def lv(vg: str, name: str, size: int, attr: str = "-wi-ao----") -> LogicalVolume:
    return LogicalVolume(vg=vg, name=name, path=f"/dev/{vg}/{name}", size_bytes=size, attr=attr,
                         origin="", pool="", snap_percent=None, tags=(),
                         dm_path=f"/dev/mapper/{vg}-{name}")


def disk_facts(kind: str, target: str, vg_src: str, vg_dst: str, lv_name: str,
               size: int = 512 << 20) -> DiskFacts:
    """A guest disk from a recorded image: "msdos", "gpt" or "notable-ext4" (whole disk)."""
    from toolkit.facts.partitions import partition_table_from_result
    from toolkit.runners import CommandResult as R

    rec = recorded("sfdisk", kind)
    table = partition_table_from_result(R("h", tuple(rec["argv"]), rec["exit_code"],
                                          rec["stdout"], rec["stderr"], 0.0))
    fss = []
    if table.label is None:
        probe = parse_blkid_export(recorded("blkid", kind)["stdout"])
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
    table = parse_sfdisk(recorded("sfdisk", "msdos")["stdout"])
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


class FakeHost:
    """In-memory Dom0: snapshots, dm maps, directories and mounts, changed by commands."""

    def __init__(self, host: str, *, fail: Callable[[tuple[str, ...]], CommandResult | None]
                 | None = None, silent_mount: bool = False) -> None:
        self.host = host
        self.calls: list[tuple[str, ...]] = []
        self.lvs: dict[str, dict] = {}  # "vg/name" -> {"attr":..., "percent":...}
        self.maps: set[str] = set()
        self.dirs: set[str] = set()
        self.mounts: dict[str, tuple[str, str]] = {}  # mountpoint -> (device, fstype)
        self.files: dict[str, str] = {}
        self.fail = fail
        self.silent_mount = silent_mount
        self.fstab_on: str | None = None  # mount path suffix of the fs holding etc/fstab
        self.rsync_result = (0, RSYNC_STATS, "")
        self._devnums: dict[str, int] = {}

    def leftovers(self) -> list[str]:
        return ([f"lv {k}" for k in self.lvs] + [f"map {m}" for m in self.maps]
                + [f"dir {d}" for d in self.dirs] + [f"mount {m}" for m in self.mounts])

    def _dev(self, path: str) -> str:
        n = self._devnums.setdefault(path, len(self._devnums) + 1)
        return f"253:{n}"

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float | None = 600,
            input: str | None = None, ok_codes: Iterable[int] = (0,),
            env: Mapping[str, str] | None = None) -> CommandResult:
        args = validate_argv(argv)
        self.calls.append(args)
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
                self.files[path] = self.files.get(path, "") + (input or "")
                res = self.run(inner, check=False, timeout=timeout, env=env)
            if check and res.exit_code not in tuple(ok_codes):
                raise CommandFailed(res)
            return res
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

    def _answer(self, a: tuple[str, ...], input: str | None) -> tuple[int, str, str]:
        cmd = a[0]
        if cmd == "lvcreate":
            name = a[a.index("--name") + 1]
            vg = a[-1].split("/")[0]
            self.lvs[f"{vg}/{name}"] = {"attr": "swi-a-s---", "percent": "1.50"}
            return 0, "", ""
        if cmd == "lvremove":
            return (0, "", "") if self.lvs.pop(a[-1], None) is not None else (5, "", "not found")
        if cmd == "lvs" and "--noheadings" in a:
            return (0, a[-1].split("/")[-1] + "\n", "") if a[-1] in self.lvs else (
                5, "", "Failed to find")
        if cmd == "lvs":
            names = a[a.index("--") + 1:]
            rows = []
            for n in names:
                if n not in self.lvs:
                    return 5, "", f"Failed to find logical volume {n}"
                vg, name = n.split("/")
                rows.append({"vg_name": vg, "lv_name": name, "lv_path": f"/dev/{n}",
                             "lv_dm_path": f"/dev/mapper/{vg}-{name}", "lv_size": "67108864",
                             "lv_attr": self.lvs[n]["attr"], "origin": "web01", "pool_lv": "",
                             "snap_percent": self.lvs[n]["percent"], "lv_tags": "domubk",
                             "lv_snapshot_invalid": "1" if self.lvs[n]["attr"][4] == "I" else ""})
            return 0, json.dumps({"report": [{"lv": rows}]}), ""
        if cmd == "kpartx":
            dev, sep = a[-1], a[a.index("-p") + 1]
            parent = (dev.removeprefix("/dev/mapper/") if dev.startswith("/dev/mapper/")
                      else dm_name(*dev.removeprefix("/dev/").split("/")))
            parts = {f"{parent}{sep}{n}" for n in (1, 2, 3)}
            if a[1] == "-a":
                self.maps |= parts
            else:
                self.maps -= parts
            return 0, "", ""
        if cmd == "dmsetup" and "-S" in a:
            pattern = a[a.index("-S") + 1].removeprefix('name=~"').removesuffix('"')
            rx = re.compile(pattern.replace("\\", "\\"))
            return 0, "".join(f"{m}\n" for m in sorted(self.maps) if rx.search(m)), ""
        if cmd == "dmsetup":
            name = a[2] if a[1] == "create" else a[-1]
            if name == "--concise":
                name = a[3].split(",", 1)[0]
            if a[1] == "create":
                self.maps.add(name)
                return 0, "", ""
            if name not in self.maps:
                return 1, "", f"Device {name} not found"
            if a[1] == "remove":
                self.maps.discard(name)
                return 0, "", ""
            return 0, f"{name}\n", ""
        if cmd == "mkdir":
            if "-p" not in a:
                self.dirs.add(a[-1])
            return 0, "", ""
        if cmd == "rmdir":
            path = a[-1]
            if path in self.mounts:
                return 1, "", f"rmdir: failed to remove '{path}': Device or resource busy"
            self.dirs.discard(path)
            return 0, "", ""
        if cmd == "find" and "-maxdepth" in a and a[a.index("-maxdepth") + 1] == "0":
            return (0, a[1] + "\n", "") if a[1] in self.dirs else (1, "", "No such file")
        if cmd == "mount":
            dev, mnt, fstype = a[-2], a[-1], a[a.index("-t") + 1]
            if not self.silent_mount:
                self.mounts[mnt] = (dev, fstype)
            return 0, "", ""
        if cmd == "umount":
            if self.mounts.pop(a[-1], None) is None:
                return 32, "", "not mounted"
            return 0, "", ""
        if cmd == "mountpoint":
            return (0, "", "") if a[-1] in self.mounts else (32, "", "")
        if cmd == "findmnt" and "-n" in a:
            mnt = a[-1]
            return (0, mnt + "\n", "") if mnt in self.mounts else (1, "", "")
        if cmd == "findmnt":
            mnt = a[a.index("--mountpoint") + 1]
            if mnt not in self.mounts:
                return 1, "", ""
            dev, fstype = self.mounts[mnt]
            return 0, json.dumps({"filesystems": [{"target": mnt, "source": dev,
                                                   "fstype": fstype,
                                                   "maj:min": self._dev(dev)}]}), ""
        if cmd == "stat":
            major, minor = (int(x) for x in self._dev(a[-1]).split(":"))
            return 0, f"{major:x}:{minor:x}\n", ""
        if cmd == "find":
            mnt = a[1]
            return 0, (f"{mnt}/etc\n" if mnt in self.mounts else ""), ""
        if cmd == "readlink":
            path = a[-1]
            if "-m" in a:  # canonical form, existing or not: no symlinks in fake trees
                return 0, path + "\n", ""
            if self.fstab_on and path.endswith(f"/{self.fstab_on}/etc/fstab"):
                return 0, path + "\n", ""
            return 1, "", ""
        if cmd == "cat":
            path = a[-1]
            if path.endswith("/etc/fstab"):
                return 0, FSTAB, ""
            if path in self.files:
                return 0, self.files[path], ""
            return 1, "", "No such file"
        if cmd == "tee":
            path = a[-1]
            self.files[path] = (self.files.get(path, "") if "-a" in a else "") + (input or "")
            return 0, "", ""
        if cmd == "dd" and "iflag=skip_bytes,count_bytes,fullblock" in a:  # a boot area read
            count = int(next(x for x in a if x.startswith("count=")).removeprefix("count="))
            skip = int(next(x for x in a if x.startswith("skip=")).removeprefix("skip="))
            return 0, "".join(chr(0xdc80 + (skip + i) % 128) for i in range(count)), ""
        if cmd == "dd" and not any(x.startswith("if=") for x in a):  # stdin to a file
            path = next(x for x in a if x.startswith("of=")).removeprefix("of=")
            kept = self.files.get(path, "") if "oflag=append" in a else ""
            self.files[path] = kept + (input or "")
            return 0, "", ""
        if cmd == "mv":
            self.files[a[-1]] = self.files.pop(a[-2])
            return 0, "", ""
        if cmd == "rm":
            self.files.pop(a[-1], None)
            return 0, "", ""
        if cmd == "sync":
            return 0, "", ""
        if cmd == "test" and a[1] == "-b":  # a dm node exists while its map does
            return (0, "", "") if a[2].removeprefix("/dev/mapper/") in self.maps else (1, "", "")
        if cmd == "setpriv" and a[1:4] == ("--pdeathsig", "KILL", "--"):
            return self._answer(a[4:], input)
        if cmd == "rsync":
            return self.rsync_result
        if a[:2] == ("sh", "-c") and len(a) == 5 and a[3] == "domu-backup-statedir":
            d = a[4]
            return 0, (f"0\nR {d}\nD 41c0 0 {d}\n"
                       + "".join(f"P 41ed 0 {p}\n" for p in _parents(d))), ""
        return 127, "", f"fake host: unknown command {a!r}"


def _parents(path: str) -> list[str]:
    out = []
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out
