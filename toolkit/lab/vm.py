"""The lab VM: a QEMU guest running dockerd, reached on a 127.0.0.1 port.

The VM's disk is built on the host from ``docker/vm/`` (debootstrap, then
``mkfs.ext4 -d``) and cached under the lab cache keyed by the recipe's hash.
Each boot runs on a copy-on-write qcow2 overlay, so the cached disk stays
clean; the kernel and initrd are taken from the built root and passed with
``-kernel``/``-initrd``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CommandFailed, ToolkitError
from ..runners import LocalRunner
from . import MIRROR, SUITE, build_cached, cache_dir, debootstrap, recipe_dir, say, tree_hash

DISK_SIZE = "64G"
MEMORY_MIB = 8192
CPUS = 2
DOCKER_PORT = 2375
HOST = "lab-vm"
# systemd colours its console status lines.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class VmImage:
    """A cached VM disk with the kernel and initrd to boot it."""

    key: str
    disk: Path
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class VmProcess:
    """A running QEMU: its pid, the host port forwarded to dockerd, and its files."""

    pid: int
    port: int
    overlay: Path
    console: Path
    qmp: Path

    @property
    def docker_host(self) -> str:
        """The DOCKER_HOST of the VM's dockerd, through the forwarded port."""
        return f"tcp://127.0.0.1:{self.port}"


def vm_recipe_key() -> str:
    """Hash of ``docker/vm/`` plus the build settings that are not files."""
    return tree_hash(recipe_dir("vm"), extra=(MIRROR, SUITE, DISK_SIZE))


def read_packages(path: Path) -> list[str]:
    """Package names from a list file: one a line, ``#`` comments and blank lines ignored."""
    names = []
    for line in path.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def ensure_vm_image(log: Callable[[str], None] = say) -> VmImage:
    """The cached VM disk for the current recipe, built on the host if it is missing."""
    key = vm_recipe_key()
    out = cache_dir() / f"vm-{key[:16]}"
    image = VmImage(key, out / "disk.qcow2", out / "vmlinuz", out / "initrd.img")
    if image.disk.is_file() and image.kernel.is_file() and image.initrd.is_file():
        return image
    log(f"building the lab VM image {out.name} (debootstrap {SUITE}, about 2 minutes)")
    start = time.monotonic()
    build_cached(out, "vm-", lambda work: _build_vm_image(recipe_dir("vm"), work))
    log(f"lab VM image built in {time.monotonic() - start:.0f}s")
    return image


def _build_vm_image(recipe: Path, work: Path) -> Path:
    """debootstrap, customize in a chroot, then the disk, kernel and initrd in one directory."""
    run = LocalRunner(HOST).run
    root, out = work / "root", work / "image"
    out.mkdir()
    debootstrap(root, recipe, read_packages(recipe / "packages.txt"))
    shutil.copy(recipe / "customize", root / "root" / "customize")
    run(["chroot", str(root), "/bin/sh", "-eu", "/root/customize"], timeout=600)
    (root / "root" / "customize").unlink()
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise ToolkitError(f"the VM root has no kernel or initrd in {root}/boot", host=HOST)
    shutil.copy(kernels[-1], out / "vmlinuz")
    shutil.copy(initrds[-1], out / "initrd.img")
    raw = work / "disk.raw"
    run(["mkfs.ext4", "-q", "-F", "-L", "domu-lab", "-d", str(root), str(raw), DISK_SIZE],
        timeout=600)
    shutil.rmtree(root)
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "disk.qcow2")], timeout=600)
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accel() -> str:
    """QEMU's accelerator: TCG unless ``DOMU_LAB_ACCEL`` says otherwise (e.g. ``kvm``)."""
    # /dev/kvm exists on this project's machines but does not run stock
    # kernels, so KVM is opt-in rather than tried first.
    return os.environ.get("DOMU_LAB_ACCEL", "tcg")


# Every feature TCG emulates except AVX and AVX2: with them glibc and Python pick vector
# code paths that TCG runs slower than the SSE ones. Measured side by side in the lab
# (same sandbox, same guest): an incremental backup 22.4 s against 25.2 s with ``max``,
# recover 5.1 s against 5.9 s, 50 process starts 1.2 s against 1.6 s.
CPU_MODEL = "max,-avx,-avx2"


def cpu_model() -> str:
    """QEMU's CPU model: ``DOMU_LAB_CPU`` if set, else ``CPU_MODEL``."""
    return os.environ.get("DOMU_LAB_CPU", CPU_MODEL)


def qemu_argv(backing: VmImage, run_dir: Path, port: int) -> list[str]:
    """The QEMU command line that boots ``run_dir/overlay.qcow2`` with dockerd on ``port``."""
    cmdline = " ".join([
        "root=/dev/vda", "rw", "console=ttyS0,115200", "net.ifnames=0", "panic=-1",
        # AppArmor in the VM stops dockerd from starting build containers.
        "apparmor=0",
    ])
    return [
        "qemu-system-x86_64", "-name", "domu-lab", "-machine", "pc", "-accel", accel(),
        "-cpu", cpu_model(), "-smp", str(CPUS), "-m", str(MEMORY_MIB),
        "-kernel", str(backing.kernel), "-initrd", str(backing.initrd), "-append", cmdline,
        # The overlay is thrown away at down, so host-side flushes buy nothing;
        # QEMU still writes everything out when it exits cleanly.
        "-drive", f"file={run_dir / 'overlay.qcow2'},if=virtio,format=qcow2,"
                  "cache=unsafe,discard=unmap",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:{DOCKER_PORT}",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-display", "none", "-no-reboot",
        "-serial", f"file:{run_dir / 'console.log'}",
        "-qmp", f"unix:{run_dir / 'qmp.sock'},server=on,wait=off",
        "-pidfile", str(run_dir / "qemu.pid"), "-daemonize",
    ]


def boot(disk: Path, image: VmImage, run_dir: Path) -> VmProcess:
    """Boot a fresh copy-on-write overlay of ``disk`` in ``run_dir``; returns once QEMU runs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("overlay.qcow2", "console.log", "qmp.sock", "qemu.pid"):
        (run_dir / name).unlink(missing_ok=True)
    run = LocalRunner(HOST).run
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk),
         str(run_dir / "overlay.qcow2")])
    for attempt in range(3):
        # The port is free when picked but could be taken before QEMU binds it.
        port = free_port()
        result = run(qemu_argv(image, run_dir, port), timeout=120, check=False)
        if result.exit_code == 0:
            break
        if "host forwarding" not in result.stderr or attempt == 2:
            raise CommandFailed(result)
    pid = int((run_dir / "qemu.pid").read_text().strip())
    return VmProcess(pid, port, run_dir / "overlay.qcow2", run_dir / "console.log",
                     run_dir / "qmp.sock")


def is_running(pid: int, overlay: Path) -> bool:
    """True if ``pid`` is a live QEMU booted on ``overlay`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu-system" in cmdline and str(overlay).encode() in cmdline


def console_tail(path: Path, lines: int = 40) -> str:
    """The last lines of the serial console log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    text = ANSI_ESCAPE.sub("", text.replace("\r", ""))
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def wait_ready(vm: VmProcess, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready`` until it answers True; raise with the console's tail if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(vm.pid, vm.overlay):
            raise ToolkitError("the lab VM stopped while booting; console:\n"
                               + console_tail(vm.console), host=HOST)
        if ready():
            return
        time.sleep(1.0)
    raise ToolkitError(f"the lab VM's dockerd did not answer on 127.0.0.1:{vm.port} within "
                       f"{timeout:.0f}s; console:\n{console_tail(vm.console)}", host=HOST)


def qmp(sock_path: Path, command: str, timeout: float = 10.0) -> dict:
    """Send one QMP command to QEMU and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        reader = sock.makefile("r")
        json.loads(reader.readline())  # the greeting
        for execute in ("qmp_capabilities", command):
            sock.sendall(json.dumps({"execute": execute}).encode() + b"\n")
            while True:
                line = reader.readline()
                if not line:
                    raise ToolkitError(f"QEMU closed its QMP socket during {execute}", host=HOST)
                reply = json.loads(line)
                if "return" in reply or "error" in reply:
                    break
            if "error" in reply:
                raise ToolkitError(f"QMP {execute}: {reply['error']}", host=HOST)
        return reply


def power_off(vm: VmProcess, timeout: float = 120.0) -> bool:
    """Shut the guest down cleanly (ACPI power button); True once QEMU has exited."""
    try:
        qmp(vm.qmp, "system_powerdown")
    except (OSError, ToolkitError):
        return not is_running(vm.pid, vm.overlay)
    return _wait_exit(vm, timeout)


def kill(vm: VmProcess, timeout: float = 20.0) -> None:
    """Stop QEMU now (SIGTERM, then SIGKILL); the guest is not shut down cleanly."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_running(vm.pid, vm.overlay):
            return
        try:
            os.kill(vm.pid, sig)
        except ProcessLookupError:
            return
        if _wait_exit(vm, timeout):
            return
    raise ToolkitError(f"QEMU (pid {vm.pid}) did not exit", host=HOST)


def _wait_exit(vm: VmProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(vm.pid, vm.overlay):
            return True
        time.sleep(0.5)
    return False
