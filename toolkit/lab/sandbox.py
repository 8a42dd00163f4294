"""The sandbox: two fake Dom0 containers with loop-device LVM, SSH between them, virsh test driver.

``sandbox_up`` destroys what an earlier run left, then creates the private
network ``domubk-lab`` and the privileged containers ``dom0-a`` and ``dom0-b``
(``/dev`` bind-mounted from the engine, so device-mapper and loop devices are
the engine kernel's). Each gets a sparse-file loop PV and its own VG (``vg_a``,
``vg_b``: dm names are global to the kernel), one LV per disk of every guest domain
(``RUNS_ON``, sized from its recipe in ``fixtures/guests``: the source where the
domain runs, its standby on the other host), a root SSH key trusted by its peer with
the peer's host key pinned, the test driver's node XML, the toolkit config, and the
toolkit installed from the checkout. ``sandbox_down`` removes all of it, loop devices
and dm maps included.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import shlex
import subprocess
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .. import PREFIX
from ..errors import ParseError, ToolkitError
from ..owned import parse_owned
from ..restore_points import POINT_TAG, parse_point_lv
from ..runners import CommandResult, Runner
from . import LabEngine, say
from .docker_runner import docker_exec
from .images import ensure_dom0_image

if TYPE_CHECKING:
    from docker.models.containers import Container

    import docker

    from .guests import DomainRecipe

NETWORK = "domubk-lab"
LAB_LABEL = "org.domu-backup.lab"
JANITOR = "domubk-lab-janitor"
CONFIG_DIR = "/etc/domu-backup"
PV_DIR = "/var/lib/domu-lab"
# Sparse: only what the guest images write is allocated. Every LV of RUNS_ON fits
# (2.6 GiB), with room left for the 64M snapshots of any one run.
PV_SIZE = "4G"
SOURCE_DIR = "/opt/domu-backup/src"
MOUNT_ROOT = "/run/domu-backup"
EXEC_TIMEOUT = 600.0
# Directories of a checkout that never belong in the containers.
SKIP_DIRS = frozenset({".git", "__pycache__", ".venv", "venv", "build", "dist", ".pytest_cache",
                       ".ruff_cache", ".hypothesis", "reports", ".lab", ".mypy_cache"})


@dataclass(frozen=True)
class FakeDom0:
    """One fake Dom0 of the pair: its name (container and host name), VG, and peer."""

    name: str
    letter: str
    peer: str

    @property
    def vg(self) -> str:
        """Its volume group: ``vg_<letter>``."""
        return f"vg_{self.letter}"

    @property
    def pv_file(self) -> str:
        """The sparse file behind its loop-device PV."""
        return f"{PV_DIR}/{self.name}.pv"

    @property
    def volume(self) -> str:
        """The docker volume that holds its PV file (mounted at PV_DIR)."""
        return f"domubk-lab-{self.name}"


DOM0S = (FakeDom0("dom0-a", "a", "dom0-b"), FakeDom0("dom0-b", "b", "dom0-a"))
PV_FILES = frozenset(PurePosixPath(d.pv_file).name for d in DOM0S)


@dataclass(frozen=True)
class LoopDevice:
    """A loop device and the file behind it, as ``losetup --list --json`` reports them."""

    name: str
    back_file: str


@dataclass(frozen=True)
class Sandbox:
    """The running pair: container names, the docker client, helpers to run and copy in."""

    client: docker.DockerClient
    image: str
    containers: tuple[str, ...] = tuple(d.name for d in DOM0S)
    loop_devices: Mapping[str, str] = field(default_factory=dict)

    def container(self, name: str) -> Container:
        """The docker SDK container object of one fake Dom0."""
        return self.client.containers.get(name)

    def exec(self, container: str, argv: Sequence[str], *, check: bool = True,
             timeout: float | None = EXEC_TIMEOUT, ok_codes: Iterable[int] = (0,),
             env: Mapping[str, str] | None = None) -> CommandResult:
        """Run argv in a container (docker exec); raise CommandFailed on a bad exit code."""
        return exec_in(self.container(container), argv, check=check, timeout=timeout,
                       ok_codes=ok_codes, env=env)

    def put_file(self, container: str, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write one file into a container (its directory must exist)."""
        put_file(self.container(container), path, data, mode)

    def leak_report(self, container: str) -> list[str]:
        """The tool's leftovers on one fake Dom0 (see ``leak_report``), probed through the
        container's exec session (every test runs it at least twice)."""
        from .docker_runner import DockerRunner

        return leak_report(DockerRunner(container, client=self.client))

    def leak_reports(self, containers: Sequence[str]) -> dict[str, list[str]]:
        """``leak_report`` of each container, all at once (each through its own exec
        session; the pool hands a session to one thread at a time)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(containers)) as pool:
            return dict(zip(containers, pool.map(self.leak_report, containers), strict=True))


# -- running commands and copying files in ------------------------------------------------

def exec_in(container: Container, argv: Sequence[str], *, check: bool = True,
            timeout: float | None = EXEC_TIMEOUT, ok_codes: Iterable[int] = (0,),
            env: Mapping[str, str] | None = None) -> CommandResult:
    """Run argv in a container with one docker exec (the lab runner's ``docker_exec``);
    stdout and stderr kept apart. ``timeout``: seconds, None for no limit."""
    return docker_exec(container.client.api, container.id, argv,
                       host=f"docker://{container.name}", check=check, timeout=timeout,
                       ok_codes=ok_codes, env=env)


def tar_bytes(files: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A tar archive of ``{path: (data, mode)}``, owned by root, for ``put_archive``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = mode
            info.uid = info.gid = 0
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put_file(container: Container, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write one file into a container through the Docker API (no shared folder needed)."""
    if not container.put_archive("/", tar_bytes({path: (data, mode)})):
        raise ToolkitError(f"could not write {path}", host=f"docker://{container.name}")


def checkout_files(checkout: Path) -> list[Path]:
    """The checkout's files to install: git's tracked and unignored files, else a filtered walk."""
    if (checkout / ".git").exists():
        proc = subprocess.run(["git", "-C", str(checkout), "ls-files", "-z", "--cached",
                               "--others", "--exclude-standard"],
                              capture_output=True, check=False)
        if proc.returncode == 0:
            names = sorted({n for n in proc.stdout.decode().split("\0") if n})
            return [checkout / n for n in names
                    if not SKIP_DIRS.intersection(Path(n).parts) and (checkout / n).is_file()]
    return sorted(p for p in checkout.rglob("*")
                  if p.is_file() and not SKIP_DIRS.intersection(p.relative_to(checkout).parts))


def checkout_archive(checkout: Path, dest: str) -> bytes:
    """A tar of the checkout's files under ``dest``, owned by root, modes kept."""
    files = {}
    for path in checkout_files(checkout):
        rel = path.relative_to(checkout).as_posix()
        files[posixpath.join(dest, rel)] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    return tar_bytes(files)


# -- parsers of the leak and sweep commands -----------------------------------------------

def parse_dmsetup_ls(text: str) -> list[str]:
    """Map names from ``dmsetup ls`` ("No devices found" gives none)."""
    names = []
    for line in text.splitlines():
        if not line.strip() or line.strip() == "No devices found":
            continue
        names.append(line.split()[0])
    return names


def parse_losetup_json(text: str) -> list[LoopDevice]:
    """Loop devices from ``losetup --list --json -O NAME,BACK-FILE`` (empty output: none)."""
    if not text.strip():
        return []
    try:
        rows = json.loads(text)["loopdevices"]
        return [LoopDevice(r["name"], r.get("back-file") or "") for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        from ..errors import ParseError

        raise ParseError(f"unexpected losetup output: {text[:200]!r}") from exc


def is_sandbox_pv(loop: LoopDevice) -> bool:
    """True for the loop device of a sandbox PV (matched by the backing file's name)."""
    # The kernel reports the backing path as seen where losetup ran, or relative
    # to the volume's root from elsewhere, with " (deleted)" once it is removed.
    back = loop.back_file.removesuffix(" (deleted)").rstrip()
    return PurePosixPath(back).name in PV_FILES


def sandbox_dm_names(names: Iterable[str]) -> list[str]:
    """The dm maps the sandbox may remove: its VGs' LVs and kpartx maps, and the tool's."""
    vg_prefixes = tuple(f"{d.vg}-" for d in DOM0S)
    return [n for n in names if n.startswith(vg_prefixes) or PREFIX in n]


# -- leak report ---------------------------------------------------------------------------

DMSETUP_LS = ("dmsetup", "ls")
LOSETUP_LIST = ("losetup", "--list", "--json", "-O", "NAME,BACK-FILE")


def list_dm_maps(container: Container) -> list[str]:
    """Every device-mapper map of the engine's kernel, seen from a container."""
    return parse_dmsetup_ls(exec_in(container, DMSETUP_LS, timeout=60).stdout)


def list_loops(container: Container) -> list[LoopDevice]:
    """Every loop device of the engine's kernel with its backing file."""
    return parse_losetup_json(exec_in(container, LOSETUP_LIST, timeout=60).stdout)


# What leak_report reads, each command's output in its own section of one docker exec
# (a docker exec costs about half a second in the emulated lab).
STATE_DIR = "/var/lib/domu-backup"  # the sandbox config's state_dir (journals below it)
LEAK_PROBES = {
    "dm": DMSETUP_LS,
    "lvs": ("lvs", "--noheadings", "--separator", "|", "-o", "vg_name,lv_name,lv_tags"),
    "mounts": ("findmnt", "-rn", "-o", "SOURCE,TARGET"),
    "loops": LOSETUP_LIST,
    "locks": ("lslocks", "-n", "-r", "-o", "PATH"),
    # run directories below the mount prefixes and journals; either tree may not exist
    "files": ("sh", "-c", f"find {MOUNT_ROOT} {STATE_DIR}/journal -mindepth 1 -maxdepth 2 "
                          f"\\( -path '{MOUNT_ROOT}/*/*' -o -path '{STATE_DIR}/journal/*' \\) "
                          "-print 2>/dev/null; true"),
    "procs": ("ps", "-eo", "pid=,args="),
}
# A process of the tool's: the program itself, or a command working on its run directories.
_TOOL_PROCESS = re.compile(rf"domu-backup (backup|recover|init-standby|plan|status)\b"
                           rf"|{re.escape(MOUNT_ROOT)}/|setpriv --pdeathsig")
_SECTION = "@@domubk-probe"


def probe_script(probes: Mapping[str, Sequence[str]]) -> str:
    """A sh script printing each probe's output after a ``@@domubk-probe NAME`` line and
    its exit status after an ``@@domubk-probe NAME rc`` line."""
    parts = []
    for name, argv in probes.items():
        # the empty echo ends a last line printed without a newline; the parser drops it
        parts.append(f"echo '{_SECTION} {name}'; {shlex.join(argv)}; rc=$?; echo; "
                     f"echo '{_SECTION} {name} rc' $rc")
    return "\n".join(parts) + "\n"


def parse_probe_output(text: str, probes: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Each probe's output from ``probe_script``'s; ParseError if one is missing or failed."""
    out: dict[str, list[str]] = {}
    codes: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(_SECTION + " "):
            fields = line.split()
            if len(fields) == 2:
                current = fields[1]
                out[current] = []
            elif len(fields) == 4 and fields[2] == "rc":
                codes[fields[1]] = fields[3]
                if out.get(fields[1]) and out[fields[1]][-1] == "":
                    out[fields[1]].pop()  # the script's own newline
                current = None
            continue
        if current is not None:
            out[current].append(line)
    for name, argv in probes.items():
        if codes.get(name) != "0":
            raise ParseError(f"leak probe `{shlex.join(argv)}` "
                             + ("did not run" if name not in codes else
                                f"exited {codes[name]}"))
    return {name: "\n".join(lines) + ("\n" if lines else "") for name, lines in out.items()}


def leak_report(runner: Runner) -> list[str]:
    """The tool's leftovers on one fake Dom0 (``runner.host``): its dm maps, LVs, mounts of
    the tool's devices anywhere and anything below the mount prefixes, loops, held locks,
    run directories, journals and processes of the tool's."""
    res = runner.run(["sh", "-c", probe_script(LEAK_PROBES)], timeout=120)
    out = parse_probe_output(res.stdout, LEAK_PROBES)
    return leaks_from(out, host=runner.host)


def map_owner(name: str, delimiter: str = "p") -> str | None:
    """The fake Dom0 a dm map of the shared kernel belongs to, from its name; None if unsure.

    A map named after a VG is that VG's host's (the source's snapshots and their partition
    maps); the tool's own names are the peer's standby aliases, their partition maps and
    guest LV maps ("dst"), or the source's guest LV maps ("src"), of a domain running on
    the host ``RUNS_ON`` names.
    """
    for d in DOM0S:
        if name.startswith(d.vg.replace("-", "--") + "-"):
            return d.name
    owned = parse_owned(name, None, delimiter)
    if owned is None or owned.domain not in RUNS_ON:
        return None
    source = RUNS_ON[owned.domain]
    if owned.role == "src":
        return source
    return next(d.peer for d in DOM0S if d.name == source)


def stray_maps(maps: Sequence[str], lvs: str, host: str | None) -> list[str]:
    """Maps named after ``host``'s VG that are none of its LVs (nor a snapshot's -real and
    -cow parts): a partition map a test or the tool made of an LV and left behind. The
    tool's own names are reported by their prefix; this catches every other name."""
    dom0 = next((d for d in DOM0S if d.name == host), None)
    if dom0 is None:
        return []
    lv_maps = set()
    for line in lvs.splitlines():
        fields = [part.strip() for part in line.split("|")]
        if len(fields) >= 2 and fields[0] == dom0.vg:
            lv_maps.add(f"{dom0.vg.replace('-', '--')}-{fields[1].replace('-', '--')}")
    prefix = dom0.vg.replace("-", "--") + "-"
    return [n for n in maps
            if n.startswith(prefix) and PREFIX not in n and n not in lv_maps
            and n.removesuffix("-real").removesuffix("-cow") not in lv_maps]


def _point_lvs(lvs: str) -> list[tuple[str, str]]:
    """(VG, LV) of each restore point in the leak probe's ``lvs`` lines: named and tagged
    as one."""
    out = []
    for line in lvs.splitlines():
        vg, lv, *rest = (part.strip() for part in line.split("|"))
        if parse_point_lv(lv) is not None and POINT_TAG in (rest[0] if rest else "").split(","):
            out.append((vg, lv))
    return out


def leaks_from(out: Mapping[str, str], host: str | None = None) -> list[str]:
    """The leftovers named by the probes' outputs (``parse_probe_output``); with ``host``,
    the dm maps of the other fake Dom0 (they share a kernel) are left to its own report,
    and a map whose owner cannot be told is reported by both."""
    leaks: list[str] = []
    # A restore point is kept on purpose: its LV and its dm maps (the LV's, and -cow for a
    # classic one) are no leftover. Its partition maps, and anything else, still are.
    points = _point_lvs(out["lvs"])
    point_maps = {f"{vg.replace('-', '--')}-{lv.replace('-', '--')}" for vg, lv in points}
    maps = [n for n in parse_dmsetup_ls(out["dm"])
            if n not in point_maps and n.removesuffix("-cow") not in point_maps]
    leaks += [f"dm map {n}" for n in maps
              if PREFIX in n and (host is None or map_owner(n) in (host, None))]
    leaks += [f"dm map {n} (not an LV)" for n in stray_maps(maps, out["lvs"], host)]
    for line in out["lvs"].splitlines():
        if PREFIX in line:
            vg, lv, *_ = (part.strip() for part in line.split("|"))
            if (vg, lv) not in points:
                leaks.append(f"LV {vg}/{lv}")
    for line in out["mounts"].splitlines():
        source, _, target = line.partition(" ")
        tools_device = source.startswith("/dev/mapper/") and PREFIX in source
        if target == MOUNT_ROOT or target.startswith(MOUNT_ROOT + "/") or tools_device:
            leaks.append(f"mount {target} ({source})")
    leaks += [f"loop {lo.name} ({lo.back_file})" for lo in parse_losetup_json(out["loops"])
              if not is_sandbox_pv(lo)]
    for path in out["locks"].splitlines():
        if "domu-backup" in path or PREFIX in path:
            leaks.append(f"lock {path}")
    leaks += [f"left {path}" for path in out.get("files", "").splitlines() if path]
    for line in out.get("procs", "").splitlines():
        if _SECTION not in line and _TOOL_PROCESS.search(line):
            leaks.append(f"process {line.strip()}")
    return leaks


# -- guest disks ---------------------------------------------------------------------------

# Where each guest domain runs; it is defined, shut off, on the other host, which keeps
# its standby. web01 and db01 are the everyday guests; the others are the disk layouts
# of fixtures/guests (lvm01's e2e test waits for guest LVM support in the engine).
RUNS_ON = {"web01": "dom0-a", "db01": "dom0-b", "gpt01": "dom0-a", "whole01": "dom0-a",
           "multi01": "dom0-a", "ext01": "dom0-a", "xfs01": "dom0-a", "dirty01": "dom0-a",
           "lvm01": "dom0-a", "web01.prod": "dom0-a"}


def lv_name(domain: DomainRecipe, device: str) -> str:
    """The LV holding one disk of a domain: the domain's name, or NAME-DEVICE for several disks."""
    return domain.name if len(domain.disks) == 1 else f"{domain.name}-{device}"


def guest_domains(checkout: Path) -> tuple[DomainRecipe, ...]:
    """The recipes of every domain in ``RUNS_ON``, from ``fixtures/guests``."""
    from .guests import load_domain

    return tuple(load_domain(checkout / "fixtures" / "guests" / f"{name}.toml")
                 for name in RUNS_ON)


def sandbox_volumes(checkout: Path) -> tuple[tuple[str, int], ...]:
    """(LV name, size in bytes) of every guest disk; each fake Dom0 has them all."""
    return tuple((lv_name(dom, disk.device), disk.size)
                 for dom in guest_domains(checkout) for disk in dom.disks)


def write_disk_image(container: Container, image_path_in_container: str,
                     lv_path: str) -> CommandResult:
    """Write a disk image file (already in the container) onto an LV, byte for byte."""
    size = int(exec_in(container, ["stat", "-c", "%s", image_path_in_container]).stdout)
    lv_size = int(exec_in(container, ["blockdev", "--getsize64", lv_path]).stdout)
    if size > lv_size:
        raise ToolkitError(f"{image_path_in_container} ({size} bytes) does not fit {lv_path} "
                           f"({lv_size} bytes)", host=f"docker://{container.name}")
    # conv=sparse skips the image's holes, so those must read as zeroes first:
    # zero-out the LV (on a loop-backed VG this punches holes, it writes nothing).
    zeroed = exec_in(container, ["blkdiscard", "--zeroout", "--force", lv_path], check=False)
    conv = "fsync,sparse" if zeroed.exit_code == 0 else "fsync"
    return exec_in(container, ["dd", f"if={image_path_in_container}", f"of={lv_path}",
                               "bs=4M", f"conv={conv}", "status=none"])


# -- up and down ---------------------------------------------------------------------------

def sandbox_up(engine: LabEngine, checkout: Path) -> Sandbox:
    """Create the pair from scratch (destroying what an earlier run left) and check it works."""
    start = time.monotonic()
    image = ensure_dom0_image(engine)
    client = engine.client(timeout=600)
    _destroy(client, image)
    client.networks.create(NETWORK, driver="bridge", internal=True, labels={LAB_LABEL: "sandbox"})
    sources = checkout_archive(checkout, SOURCE_DIR)
    # The two hosts are independent until they trade keys: set them up side by side.
    with ThreadPoolExecutor(len(DOM0S)) as pool:
        loops = dict(pool.map(lambda d: _provision(engine, image, d, checkout, sources), DOM0S))
        sandbox = Sandbox(client, image, loop_devices=loops)
        for dom0 in DOM0S:
            public = sandbox.exec(dom0.name, ["cat", f"{CONFIG_DIR}/id_ed25519.pub"]).stdout
            sandbox.put_file(dom0.peer, "/root/.ssh/authorized_keys", public.encode(), 0o600)
        list(pool.map(lambda d: _pin_and_check(engine, d, checkout), DOM0S))
    say(f"sandbox up in {time.monotonic() - start:.0f}s")
    return sandbox


def _provision(engine: LabEngine, image: str, dom0: FakeDom0, checkout: Path,
               sources: bytes) -> tuple[str, str]:
    """One fake Dom0 on its own: container, toolkit, storage, SSH key, node XML, config."""
    # A client per thread: the SDK's HTTP session is not shared across threads.
    client = engine.client(timeout=600)
    client.volumes.create(dom0.volume, labels={LAB_LABEL: "sandbox"})
    container = client.containers.run(
        image, name=dom0.name, hostname=dom0.name, detach=True, privileged=True,
        network=NETWORK, labels={LAB_LABEL: "sandbox"}, environment={"DM_DISABLE_UDEV": "1"},
        volumes={"/dev": {"bind": "/dev", "mode": "rw"},
                 dom0.volume: {"bind": PV_DIR, "mode": "rw"}})
    if not container.put_archive("/", sources):
        raise ToolkitError("could not copy the checkout in", host=f"docker://{dom0.name}")
    exec_in(container, ["python3", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                        "--no-build-isolation", "--break-system-packages",
                        "--disable-pip-version-check", "--root-user-action=ignore", SOURCE_DIR])
    loop = _make_storage(container, dom0, sandbox_volumes(checkout))
    exec_in(container, ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                        f"{PREFIX}-lab@{dom0.name}", "-f", f"{CONFIG_DIR}/id_ed25519"])
    fixtures = checkout / "fixtures" / "sandbox"
    put_file(container, f"{CONFIG_DIR}/node.xml",
             (fixtures / f"node-{dom0.letter}.xml").read_bytes(), 0o644)
    put_file(container, f"{CONFIG_DIR}/backup.toml", (fixtures / "backup.toml").read_bytes(),
             0o600)
    # The switch that lets DOMU_BACKUP_FAILPOINT act here: a lab host, never a production one.
    put_file(container, f"{CONFIG_DIR}/test-hooks", b"failpoints enabled by the rehearsal lab\n",
             0o600)
    return dom0.name, loop


def _make_storage(container: Container, dom0: FakeDom0,
                  volumes: Sequence[tuple[str, int]]) -> str:
    """A sparse-file loop PV listed in the devices file, the VG and its LVs; returns the loop."""
    exec_in(container, ["truncate", "-s", PV_SIZE, dom0.pv_file])
    loop = ""
    for attempt in range(5):
        # Two containers may pick the same free loop device at once; one loses.
        res = exec_in(container, ["losetup", "--find", "--show", dom0.pv_file], check=False)
        if res.exit_code == 0:
            loop = res.stdout.strip()
            break
        time.sleep(0.5 * (attempt + 1))
    if not loop:
        raise ToolkitError(f"losetup could not attach {dom0.pv_file}",
                           host=f"docker://{dom0.name}")
    exec_in(container, ["lvm", "lvmdevices", "--adddev", loop])
    exec_in(container, ["pvcreate", "-y", loop])
    exec_in(container, ["vgcreate", dom0.vg, loop])
    for name, size in volumes:
        exec_in(container, ["lvcreate", "-y", "-L", f"{size}b", "-n", name, dom0.vg])
    return loop


def _scan_host_keys(container: Container, peer: str, timeout: float = 120) -> str:
    """The peer's host keys as ``ssh-keyscan`` sees them from ``container`` (sshd may lag)."""
    deadline = time.monotonic() + timeout
    while True:
        res = exec_in(container, ["ssh-keyscan", "-T", "5", peer], check=False)
        keys = [line for line in res.stdout.splitlines() if line and not line.startswith("#")]
        if keys:
            return "\n".join(keys) + "\n"
        if time.monotonic() > deadline:
            raise ToolkitError(f"sshd on {peer} did not answer ssh-keyscan: {res.stderr.strip()}",
                               host=f"docker://{container.name}")
        time.sleep(1)


def ssh_check_argv(peer: str) -> list[str]:
    """The strict, non-interactive SSH login the sandbox must allow from each host to its peer."""
    return ["ssh", "-i", f"{CONFIG_DIR}/id_ed25519", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={CONFIG_DIR}/known_hosts",
            f"root@{peer}", "true"]


def parse_virsh_list(text: str) -> dict[str, str]:
    """Domain name -> state from ``virsh list --all`` (columns Id, Name, State)."""
    states = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] == "Id" or set(line.strip()) == {"-"}:
            continue
        states[parts[1]] = " ".join(parts[2:])
    return states


def _pin_and_check(engine: LabEngine, dom0: FakeDom0, checkout: Path) -> None:
    """Pin the peer's host keys, then prove the host is usable: SSH, virsh, LVs, toolkit."""
    container = engine.client(timeout=600).containers.get(dom0.name)
    put_file(container, f"{CONFIG_DIR}/known_hosts",
             _scan_host_keys(container, dom0.peer).encode(), 0o644)
    exec_in(container, ssh_check_argv(dom0.peer), timeout=60)
    states = parse_virsh_list(exec_in(container, ["virsh", "-c", f"test://{CONFIG_DIR}/node.xml",
                                                  "list", "--all"]).stdout)
    for domain, host in RUNS_ON.items():
        expected = "running" if host == dom0.name else "shut off"
        got = states.get(domain)
        if got != expected:
            raise ToolkitError(f"virsh says {domain} is {got!r}, expected {expected!r}",
                               host=f"docker://{dom0.name}")
    for name, _size in sandbox_volumes(checkout):
        exec_in(container, ["test", "-b", f"/dev/{dom0.vg}/{name}"])
    exec_in(container, ["python3", "-c", "import toolkit"])
    exec_in(container, ["domu-backup", "--version"])


def sandbox_down(engine: LabEngine) -> None:
    """Remove the pair, its loop devices and dm maps, volumes and network; idempotent."""
    from .images import DOM0_REPOSITORY, dom0_tag, has_image

    client = engine.client(timeout=600)
    # Any dom0 image can sweep (it has dmsetup and losetup), also one of an older recipe.
    image = next((ref for ref in (dom0_tag(), f"{DOM0_REPOSITORY}:latest")
                  if has_image(client, ref)), None)
    _destroy(client, image)


def _destroy(client: docker.DockerClient, image: str | None) -> None:
    """Remove containers, then sweep dm maps and loops, then volumes and the network."""
    import docker.errors

    from .docker_runner import close_sessions

    close_sessions()  # their containers are about to go

    found = False
    for dom0 in DOM0S:
        try:
            container = client.containers.get(dom0.name)
        except docker.errors.NotFound:
            continue
        found = True
        if container.status == "running":
            # LVM's own deactivation also removes the /dev/VG links it made
            # (udev does not run here); whatever stays busy is swept below.
            exec_in(container, ["vgchange", "-an", dom0.vg], check=False, timeout=120)
        container.remove(force=True, v=True)
    try:
        client.containers.get(JANITOR).remove(force=True)
    except docker.errors.NotFound:
        pass
    volumes = [v for v in client.volumes.list() if v.name in {d.volume for d in DOM0S}]
    # The containers' mount namespaces are gone with them, so nothing holds
    # the maps open any more: the sweep sees the kernel's global state. With no
    # container and no volume left, no loop PV can exist, and the sweep (a
    # container start, slow under TCG) is skipped.
    if image is not None and (found or volumes):
        _sweep_kernel(client, image)
    for volume in volumes:
        volume.remove(force=True)
    for network in client.networks.list(names=[NETWORK]):
        network.remove()


def _sweep_kernel(client: docker.DockerClient, image: str) -> None:
    """Remove the sandbox's dm maps and detach its loop devices, from a throwaway container."""
    janitor = client.containers.run(
        image, entrypoint=["sleep", "infinity"], name=JANITOR, detach=True, privileged=True,
        network_mode="none", labels={LAB_LABEL: "janitor"},
        environment={"DM_DISABLE_UDEV": "1"}, volumes={"/dev": {"bind": "/dev", "mode": "rw"}})
    try:
        names = sandbox_dm_names(list_dm_maps(janitor))
        # Holders before what they hold (partitions, snapshots, origins): retry
        # until a pass removes nothing more.
        while names:
            left = [n for n in names
                    if exec_in(janitor, ["dmsetup", "remove", n], check=False).exit_code != 0]
            if len(left) == len(names):
                break
            names = left
        for loop in list_loops(janitor):
            if is_sandbox_pv(loop):
                exec_in(janitor, ["losetup", "-d", loop.name], check=False)
        leftovers = sandbox_dm_names(list_dm_maps(janitor))
        for dom0 in DOM0S:
            # Links LVM made in the shared /dev; a later vgcreate refuses to run beside them.
            if not any(name.startswith(f"{dom0.vg}-") for name in leftovers):
                exec_in(janitor, ["rm", "-rf", "--", f"/dev/{dom0.vg}"])
        loops = [lo.name for lo in list_loops(janitor) if is_sandbox_pv(lo)]
    finally:
        janitor.remove(force=True)
    if leftovers or loops:
        raise ToolkitError(f"sandbox teardown left dm maps {leftovers} and loop devices {loops}")
