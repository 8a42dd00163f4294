"""The fake Dom0 image (``docker/dom0/Dockerfile``) and the roots it is built on.

No image registry answers on this project's machines, so the roots are made locally
with ``debootstrap --variant=minbase`` on the host (fast, native), the slim settings of
``docker/base/`` copied over them, cached as tarballs and imported into the engine when
it lacks them: ``debian:bookworm-slim`` (the local engine's probe), and
``domubk-dom0-root``, the same with the fake Dom0's packages (``docker/dom0/packages.txt``)
installed natively, so the Dockerfile's steps under the VM's emulation only add settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ToolkitError
from ..runners import LocalRunner
from . import (
    MIRROR,
    SUITE,
    LabEngine,
    build_cached,
    cache_dir,
    debootstrap,
    recipe_dir,
    say,
    tree_hash,
)

if TYPE_CHECKING:
    import docker


BASE_IMAGE = ("debian", "bookworm-slim")
DOM0_ROOT_REPOSITORY = "domubk-dom0-root"  # the Dockerfile's FROM
DOM0_REPOSITORY = "domubk-dom0"
RECIPE_LABEL = "org.domu-backup.recipe"
HOST = "lab-images"


def base_recipe_key() -> str:
    """Hash of ``docker/base/`` and the debootstrap settings."""
    return tree_hash(recipe_dir("base"), extra=(MIRROR, SUITE, "minbase"))


def dom0_recipe_key() -> str:
    """Hash of ``docker/dom0/`` and of the base it builds on."""
    return tree_hash(recipe_dir("dom0"), extra=(base_recipe_key(),))


def dom0_tag(key: str | None = None) -> str:
    """The dom0 image's tag for a recipe key (the current recipe by default)."""
    return f"{DOM0_REPOSITORY}:{(key or dom0_recipe_key())[:16]}"


def ensure_base_tarball(log: Callable[[str], None] = say) -> Path:
    """The cached root tarball of ``debian:bookworm-slim``, debootstrapped if missing."""
    key = base_recipe_key()
    tarball = cache_dir() / f"base-{key[:16]}.tar"
    if tarball.is_file():
        return tarball
    log(f"debootstrap --variant=minbase {SUITE} for the base image (about a minute)")
    start = time.monotonic()
    build_cached(tarball, "base-", _build_base_tarball)
    log(f"base tarball made in {time.monotonic() - start:.0f}s")
    return tarball


def dom0_packages() -> list[str]:
    """The fake Dom0's Debian packages (``docker/dom0/packages.txt``)."""
    from .vm import read_packages

    return read_packages(recipe_dir("dom0") / "packages.txt")


def ensure_dom0_root_tarball(log: Callable[[str], None] = say) -> Path:
    """The cached root tarball of the fake Dom0: the slim base plus its packages, natively."""
    key = dom0_recipe_key()
    tarball = cache_dir() / f"dom0-root-{key[:16]}.tar"
    if tarball.is_file():
        return tarball
    log(f"debootstrap of the fake Dom0's root with {len(dom0_packages())} packages, natively "
        "(about a minute)")
    start = time.monotonic()
    build_cached(tarball, "dom0-root-", lambda work: _build_base_tarball(work, dom0_packages()))
    log(f"dom0 root tarball made in {time.monotonic() - start:.0f}s")
    return tarball


def _build_base_tarball(work: Path, include: list[str] | None = None) -> Path:
    root = work / "root"
    debootstrap(root, recipe_dir("base"), include=include or ())
    for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for entry in (root / leftover).glob("*"):
            if entry.is_file():
                entry.unlink()
    # The engine's resolver and name are set per container; the host's must not leak in.
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).unlink(missing_ok=True)
    tarball = work / "base.tar"
    LocalRunner(HOST).run(["tar", "-C", str(root), "--numeric-owner", "--xattrs", "-cf",
                           str(tarball), "."], timeout=600)
    return tarball


def has_image(client: docker.DockerClient, ref: str) -> bool:
    """True if the engine holds an image named ``ref``."""
    import docker.errors

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_base_image(client: docker.DockerClient, log: Callable[[str], None] = say) -> str:
    """Make sure the engine has ``debian:bookworm-slim``, importing the local one if not."""
    ref = ":".join(BASE_IMAGE)
    if has_image(client, ref):
        return ref
    tarball = ensure_base_tarball(log)
    log(f"importing {ref} into the engine")
    repository, tag = BASE_IMAGE
    client.api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    if not has_image(client, ref):
        raise ToolkitError(f"docker import of {tarball} did not give {ref}", host=HOST)
    return ref


def ensure_dom0_root_image(client: docker.DockerClient,
                           log: Callable[[str], None] = say) -> str:
    """Make sure the engine has this recipe's ``domubk-dom0-root``, importing it if not."""
    key = dom0_recipe_key()[:16]
    ref = f"{DOM0_ROOT_REPOSITORY}:{key}"
    if not has_image(client, ref):
        tarball = ensure_dom0_root_tarball(log)
        log(f"importing {ref} into the engine")
        start = time.monotonic()
        client.api.import_image_from_file(str(tarball), repository=DOM0_ROOT_REPOSITORY,
                                          tag=key)
        if not has_image(client, ref):
            raise ToolkitError(f"docker import of {tarball} did not give {ref}", host=HOST)
        log(f"{ref} imported in {time.monotonic() - start:.0f}s")
    client.api.tag(ref, DOM0_ROOT_REPOSITORY, "latest")  # what the Dockerfile's FROM names
    return ref


def ensure_dom0_image(engine: LabEngine, log: Callable[[str], None] = say) -> str:
    """The dom0 image's tag, built in the engine from ``docker/dom0/`` if it lacks it."""
    key = dom0_recipe_key()
    tag = dom0_tag(key)
    client = engine.client(timeout=1800)
    if has_image(client, tag):
        return tag
    ensure_dom0_root_image(client, log)
    log(f"building {tag} in the {engine.kind} engine")
    start = time.monotonic()
    lines: list[str] = []
    for chunk in client.api.build(path=str(recipe_dir("dom0")), tag=tag, labels={RECIPE_LABEL: key},
                                  rm=True, forcerm=True, pull=False, decode=True):
        if "error" in chunk:
            tail = "\n".join(lines[-30:])
            raise ToolkitError(f"building {tag} failed: {chunk['error'].strip()}\n{tail}",
                               host=HOST)
        text = chunk.get("stream", "")
        lines.extend(line for line in text.splitlines() if line.strip())
    if not has_image(client, tag):
        raise ToolkitError(f"the build of {tag} ended without the image:\n"
                           + "\n".join(lines[-30:]), host=HOST)
    client.api.tag(tag, DOM0_REPOSITORY, "latest")
    log(f"{tag} built in {time.monotonic() - start:.0f}s")
    return tag
