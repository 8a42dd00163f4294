"""The lab's Docker engine: the local one where its kernel has device-mapper, else the QEMU VM.

``lab_up`` picks or starts the engine and records it in ``state.json`` in the
lab cache, so later processes (tests, other tasks) find it with
``current_engine``. For the VM, the dom0 image is built once into a cached
disk layer ("baked"), so a warm ``lab_up`` only boots.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ToolkitError, UsageError
from . import LabEngine, cache_dir, prune, say, vm
from . import images as images_mod
from .timing import phase

KINDS = ("auto", "local", "vm")
BOOT_TIMEOUT = float(os.environ.get("DOMU_LAB_BOOT_TIMEOUT", "600"))
# Opening the control node loads dm_mod where it is a module; /proc/misc then
# lists it. Any image with a shell and grep can run this.
PROBE_SCRIPT = "exec 3<>/dev/mapper/control && grep -qw device-mapper /proc/misc"


@dataclass(frozen=True)
class LabState:
    """What ``state.json`` records about the running engine."""

    kind: str
    docker_host: str | None
    pid: int | None = None
    port: int | None = None
    overlay: str | None = None
    disk: str | None = None
    console: str | None = None
    qmp: str | None = None
    started: float = 0.0

    def vm_process(self) -> vm.VmProcess:
        """The recorded VM as a VmProcess; ToolkitError when the state names no VM."""
        if self.pid is None or self.port is None or self.overlay is None:
            raise ToolkitError("the lab state names no VM", host=vm.HOST)
        overlay = Path(self.overlay)
        return vm.VmProcess(self.pid, self.port, overlay,
                            Path(self.console or overlay.parent / "console.log"),
                            Path(self.qmp or overlay.parent / "qmp.sock"))


@dataclass(frozen=True)
class LabStatus:
    """The engine as ``lab status`` shows it."""

    kind: str | None
    healthy: bool
    docker_host: str | None = None
    pid: int | None = None
    overlay: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.kind is None:
            return f"lab: down ({self.detail})" if self.detail else "lab: down"
        parts = [f"lab: {self.kind}", "healthy" if self.healthy else "NOT healthy"]
        if self.docker_host:
            parts.append(f"DOCKER_HOST={self.docker_host}")
        if self.pid:
            parts.append(f"qemu pid {self.pid}")
        if self.overlay:
            parts.append(f"overlay {self.overlay}")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


def state_path() -> Path:
    """Where the running engine is recorded: ``state.json`` in the lab's cache directory."""
    return cache_dir() / "state.json"


def read_state() -> LabState | None:
    """The recorded engine, or None when there is none (or the record is unreadable)."""
    try:
        data = json.loads(state_path().read_text())
        return LabState(**data)
    except (OSError, ValueError, TypeError):
        return None


def write_state(state: LabState) -> None:
    """Record the running engine (written beside ``state.json``, then renamed over it)."""
    tmp = state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    os.replace(tmp, state_path())


def clear_state() -> None:
    """Forget the recorded engine (there being none is fine)."""
    state_path().unlink(missing_ok=True)


@contextmanager
def lab_lock() -> Iterator[None]:
    """One ``lab up``/``lab down`` at a time on this machine."""
    with open(cache_dir() / "lab.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def answers(engine: LabEngine, timeout: int = 5) -> bool:
    """True if the engine's API answers a ping."""
    try:
        return bool(engine.client(timeout=timeout).ping())
    except Exception:  # any failure to reach it means "not answering"
        return False


def local_engine() -> LabEngine:
    """The engine of this host: ``DOCKER_HOST`` if it names one that is not the lab VM."""
    host = os.environ.get("DOCKER_HOST") or None
    state = read_state()
    if host and state is not None and state.kind == "vm" and host == state.docker_host:
        host = None
    return LabEngine("local", host)


def probe_local(log: Callable[[str], None] = say) -> str | None:
    """None if the local engine can run the lab, else why not."""
    import docker.errors

    engine = local_engine()
    if not answers(engine):
        return "no local Docker engine answers"
    client = engine.client(timeout=600)
    image = images_mod.ensure_base_image(client, log)
    probe = client.containers.create(image, ["sh", "-c", PROBE_SCRIPT], privileged=True,
                                     network_mode="none",
                                     volumes={"/dev": {"bind": "/dev", "mode": "rw"}})
    try:
        probe.start()
        code = probe.wait(timeout=120)["StatusCode"]
    except docker.errors.APIError as exc:
        return f"the local engine cannot run a privileged container: {exc.explanation or exc}"
    finally:
        probe.remove(force=True)
    return None if code == 0 else "the local engine's kernel has no device-mapper"


def lab_up(engine: str = "auto", *, log: Callable[[str], None] = say) -> LabEngine:
    """Start (or reuse) the lab engine: ``local`` where dm works, else ``vm``; ``auto`` picks."""
    if engine not in KINDS:
        raise UsageError(f"lab engine must be one of {', '.join(KINDS)}, not {engine!r}")
    with lab_lock():
        state = read_state()
        if state is not None:
            reused = _reuse_or_clear(state, engine, log)
            if reused is not None:
                return reused
        if engine in ("auto", "local"):
            why_not = probe_local(log)
            if why_not is None:
                chosen = local_engine()
                write_state(LabState("local", chosen.docker_host, started=time.time()))
                log("lab engine: local (its kernel has device-mapper)")
                return chosen
            if engine == "local":
                raise ToolkitError(f"the local engine cannot run the lab: {why_not}")
            log(f"local engine unusable ({why_not}); using the VM")
        return _start_vm(log)


def _reuse_or_clear(state: LabState, wanted: str, log: Callable[[str], None]) -> LabEngine | None:
    if state.kind == "vm":
        proc = state.vm_process()
        alive = vm.is_running(proc.pid, proc.overlay)
        engine = LabEngine("vm", state.docker_host)
        current = str(_baked_path(vm.vm_recipe_key()))
        if alive and wanted != "local" and state.disk == current and answers(engine):
            return engine
        reason = ("its recipe changed" if alive and state.disk != current
                  else "it does not answer" if alive else "it is not running")
        log(f"stale lab VM (pid {proc.pid}): {reason}; starting afresh")
        _stop_vm(state)
        return None
    engine = LabEngine("local", state.docker_host)
    if wanted != "vm" and answers(engine):
        return engine
    clear_state()
    return None


def _baked_path(vm_key: str) -> Path:
    return cache_dir() / f"baked-{vm_key[:16]}-{images_mod.dom0_recipe_key()[:16]}.qcow2"


def _start_vm(log: Callable[[str], None]) -> LabEngine:
    with phase("lab VM image (build or cache)"):
        image = vm.ensure_vm_image(log)
    with phase("dom0 image (bake or cache)"):
        disk = _ensure_baked(image, log)
    log(f"booting the lab VM ({vm.accel()}, {vm.CPUS} vCPUs, {vm.MEMORY_MIB} MiB)")
    with phase("lab VM boot"):
        return _boot(image, disk, log)


def _boot(image: vm.VmImage, disk: Path, log: Callable[[str], None]) -> LabEngine:
    start = time.monotonic()
    proc = vm.boot(disk, image, cache_dir() / "run")
    state = LabState("vm", proc.docker_host, proc.pid, proc.port, str(proc.overlay), str(disk),
                     str(proc.console), str(proc.qmp), time.time())
    write_state(state)
    engine = LabEngine("vm", proc.docker_host)
    try:
        vm.wait_ready(proc, lambda: answers(engine, timeout=3), BOOT_TIMEOUT)
    except BaseException:
        _stop_vm(state)
        raise
    log(f"lab VM up in {time.monotonic() - start:.0f}s: DOCKER_HOST={proc.docker_host}")
    return engine


def _ensure_baked(image: vm.VmImage, log: Callable[[str], None]) -> Path:
    """The VM disk with the dom0 image built in: a qcow2 layer over the VM image, cached."""
    baked = _baked_path(image.key)
    if baked.is_file():
        return baked
    log("building the dom0 image into the VM's disk (once per recipe)")
    start = time.monotonic()
    bake_dir = cache_dir() / "bake"
    proc = vm.boot(image.disk, image, bake_dir)
    try:
        engine = LabEngine("vm", proc.docker_host)
        images_mod.ensure_dom0_root_tarball(log)  # host work, while the VM boots
        vm.wait_ready(proc, lambda: answers(engine, timeout=3), BOOT_TIMEOUT)
        images_mod.ensure_dom0_image(engine, log)
        # A layer cut from a VM that did not shut down cleanly could hold a
        # half-written Docker store: refuse to cache it.
        if not vm.power_off(proc):
            raise ToolkitError("the VM did not power off after the dom0 image build; console:\n"
                               + vm.console_tail(proc.console), host=vm.HOST)
        os.replace(proc.overlay, baked)
    except BaseException:
        vm.kill(proc)
        raise
    finally:
        shutil.rmtree(bake_dir, ignore_errors=True)
    prune(cache_dir(), "baked-", keep=baked.name)
    log(f"dom0 image baked into {baked.name} in {time.monotonic() - start:.0f}s")
    return baked


def _stop_vm(state: LabState) -> None:
    proc = state.vm_process()
    vm.kill(proc)
    proc.overlay.unlink(missing_ok=True)
    proc.qmp.unlink(missing_ok=True)
    clear_state()


def lab_down() -> None:
    """Stop the lab VM and remove its overlay; for a local engine, remove the sandbox."""
    with lab_lock():
        state = read_state()
        if state is None:
            return
        if state.kind == "vm":
            _stop_vm(state)
            return
        engine = LabEngine("local", state.docker_host)
        if answers(engine):
            from .sandbox import sandbox_down

            sandbox_down(engine)
        clear_state()


def current_engine() -> LabEngine | None:
    """The running lab engine recorded by ``lab_up``, if it still answers."""
    state = read_state()
    if state is None:
        return None
    if state.kind == "vm":
        proc = state.vm_process()
        if not vm.is_running(proc.pid, proc.overlay):
            return None
    engine = LabEngine(state.kind, state.docker_host)
    return engine if answers(engine) else None


def lab_status() -> LabStatus:
    """What runs: the engine kind, whether it answers, and the VM's pid and overlay."""
    state = read_state()
    if state is None:
        return LabStatus(None, False)
    engine = LabEngine(state.kind, state.docker_host)
    if state.kind == "vm":
        proc = state.vm_process()
        if not vm.is_running(proc.pid, proc.overlay):
            return LabStatus(None, False, detail=f"stale state: qemu pid {proc.pid} is gone")
        return LabStatus("vm", answers(engine), state.docker_host, proc.pid, state.overlay,
                         f"up {time.time() - state.started:.0f}s")
    return LabStatus("local", answers(engine), state.docker_host)
