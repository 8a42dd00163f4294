"""The rehearsal lab: a Docker engine whose kernel has device-mapper, and the sandbox on it.

``engine`` picks or boots the engine (``vm`` runs QEMU), ``images`` makes the
fake Dom0 image, ``sandbox`` runs the pair of fake Dom0s. This module holds
what they share: where the cache lives, where the recipes are, recipe hashing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log
from ..errors import NotRoot, ToolkitError
from ..runners import LocalRunner

if TYPE_CHECKING:
    import docker

# Bumped when the code that turns a recipe into an artefact changes in a way
# the recipe files do not show, so cached artefacts are rebuilt.
BUILD_FORMAT = "1"
MIRROR = os.environ.get("DOMU_LAB_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# A root file system is built on the host in a minute or two; give slow mirrors room.
BUILD_TIMEOUT = 3600.0


say = log.lab  # progress of slow lab steps: one timestamped line on stderr


@dataclass(frozen=True)
class LabEngine:
    """A Docker engine the lab can use: ``local`` or ``vm``."""

    kind: str
    docker_host: str | None  # None: the local engine's default socket

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A docker SDK client for this engine."""
        import docker

        environment = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        if self.docker_host:
            environment["DOCKER_HOST"] = self.docker_host
        return docker.from_env(version="auto", timeout=timeout, environment=environment)

    def env(self) -> dict[str, str]:
        """Environment for the docker CLI and testinfra's docker backend."""
        return {"DOCKER_HOST": self.docker_host} if self.docker_host else {}


def cache_dir() -> Path:
    """The lab's cache directory (``${XDG_CACHE_HOME:-~/.cache}/domu-backup/lab``), created."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "domu-backup" / "lab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkout_root() -> Path:
    """The source checkout this package runs from (it holds ``docker/`` and ``fixtures/``)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "docker").is_dir():
        raise ToolkitError(f"the lab recipes are not next to the toolkit ({root}/docker is "
                           "missing): run the lab from a source checkout")
    return root


def recipe_dir(name: str) -> Path:
    """One recipe directory under ``docker/`` (``vm``, ``base``, ``dom0``)."""
    path = checkout_root() / "docker" / name
    if not path.is_dir():
        raise ToolkitError(f"lab recipe {path} is missing")
    return path


def tree_hash(root: Path, extra: Iterable[str] = ()) -> str:
    """SHA-256 of a recipe tree: relative paths, executable bits, contents, plus ``extra`` strings.

    Two trees with the same files hash the same wherever they live; any change
    to a name, a mode's executable bit or a byte changes the hash.
    """
    digest = hashlib.sha256()
    digest.update(f"format {BUILD_FORMAT}\0".encode())
    for item in extra:
        digest.update(f"extra {item}\0".encode())
    files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    for path in files:
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel.split("/"):
            continue
        if path.is_symlink():
            digest.update(f"link {rel}\0{os.readlink(path)}\0".encode())
            continue
        executable = "x" if path.stat().st_mode & 0o111 else "-"
        data = path.read_bytes()
        digest.update(f"file {rel}\0{executable}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def prune(parent: Path, prefix: str, keep: str) -> None:
    """Remove cached artefacts of earlier recipes (same prefix, another key).

    Callers hold the lab lock, so no other build is writing beside them.
    """
    for entry in parent.glob(f"{prefix}*"):
        if entry.name == keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def build_cached(out: Path, prefix: str, build: Callable[[Path], Path]) -> None:
    """Make ``out`` with ``build(scratch_dir)``, moved in place only once complete.

    A killed build leaves no half-made artefact under the final name; earlier
    recipes' artefacts (same ``prefix``) are pruned afterwards.
    """
    work = Path(tempfile.mkdtemp(prefix=f"{out.name}.", dir=out.parent))
    try:
        made = build(work)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(made, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    prune(out.parent, prefix, keep=out.name)


def debootstrap(root: Path, recipe: Path, include: Sequence[str] = ()) -> None:
    """``debootstrap --variant=minbase`` into ``root``, then the recipe's ``rootfs/`` over it."""
    if os.geteuid() != 0:
        raise NotRoot("debootstrap of the lab's images needs root", host="lab")
    run = LocalRunner("lab").run
    debs = cache_dir() / "debs"  # downloaded packages, shared by every build
    debs.mkdir(exist_ok=True)
    extra = [f"--include={','.join(include)}"] if include else []
    run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}", *extra, SUITE, str(root),
         MIRROR], timeout=BUILD_TIMEOUT)
    run(["cp", "-a", "--no-preserve=ownership", f"{recipe / 'rootfs'}/.", f"{root}/"])

