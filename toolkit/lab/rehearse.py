"""The rehearsal: a real backup between the two fake Dom0s, then an audit of the standby.

Used by ``invoke rehearse`` (the README's first command) and by the e2e suite.
The backup itself runs *inside* dom0-a exactly as on a production Dom0
(``domu-backup backup --domu web01``: local commands plus paramiko to dom0-b).

The everyday guests (``GUESTS``: web01, db01) are built when the sandbox comes up. The
disk layout guests (``LAYOUTS``: gpt01, multi01, ...) are built on demand by
``prepare_layout``, once per sandbox, so a run that does not test them does not pay for
them.
"""

from __future__ import annotations

import json
import posixpath
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ToolkitError
from ..log import lab as lab_log
from ..rsync import SshOptions
from ..runners import CommandResult, Runner
from .audit import AuditedFs, audit_standby
from .docker_runner import DockerRunner, docker_exec_detached
from .timing import phase

if TYPE_CHECKING:
    from .guests import BuiltImage

IMAGES = "/var/lib/domubk-lab/images"
WORKDIR = "/var/lib/domubk-lab/work"
SSH = SshOptions(key="/etc/domu-backup/id_ed25519", known_hosts="/etc/domu-backup/known_hosts")


@dataclass(frozen=True)
class GuestDisk:
    """One guest disk of the sandbox: where it runs, its LV there and its standby's."""

    domain: str
    recipe: str
    source: str  # container where the domain runs
    peer: str
    source_lv: str
    standby_lv: str
    device: str = "xvda"  # the recipe's disk, the domain's <target dev>

    @property
    def source_image(self) -> str:
        """On the source: the guest disk's built image, written to its LV at each reset."""
        return f"{IMAGES}/{posixpath.basename(self.source_lv)}-source.img"

    @property
    def standby_image(self) -> str:
        """On the peer: the standby's built image (the layout, filesystems empty), written to the
        standby LV at each reset."""
        return f"{IMAGES}/{posixpath.basename(self.standby_lv)}-standby.img"

    @property
    def synced_image(self) -> str:
        """On the peer: the source image itself, i.e. a standby already in sync."""
        return f"{IMAGES}/{posixpath.basename(self.standby_lv)}-synced.img"


GUESTS = (
    GuestDisk("web01", "web01", "dom0-a", "dom0-b", "/dev/vg_a/web01", "/dev/vg_b/web01"),
    GuestDisk("db01", "db01", "dom0-b", "dom0-a", "/dev/vg_b/db01", "/dev/vg_a/db01"),
)


def _layout(domain: str, *devices: str) -> tuple[GuestDisk, ...]:
    """A layout guest's disks: running on dom0-a, standby on dom0-b, same LV names.

    One disk (``devices`` is its device alone): the LV is named after the domain;
    several: ``DOMAIN-DEVICE`` (as ``sandbox.lv_name``).
    """
    out = []
    for device in devices:
        lv = domain if len(devices) == 1 else f"{domain}-{device}"
        out.append(GuestDisk(domain, domain, "dom0-a", "dom0-b", f"/dev/vg_a/{lv}",
                             f"/dev/vg_b/{lv}", device))
    return tuple(out)


# The disk layouts of fixtures/guests, built on demand by prepare_layout.
LAYOUTS = {
    "gpt01": _layout("gpt01", "xvda"),
    "whole01": _layout("whole01", "xvda1"),
    "multi01": _layout("multi01", "xvda", "xvdb"),
    "ext01": _layout("ext01", "xvda"),
    "xfs01": _layout("xfs01", "xvda"),
    "dirty01": _layout("dirty01", "xvda"),
    "lvm01": _layout("lvm01", "xvda"),
    "web01.prod": _layout("web01.prod", "xvda"),  # its name extends web01's (R21)
}


def guest_disks(domain: str) -> tuple[GuestDisk, ...]:
    """Every disk of one sandbox domain, everyday guest or layout; KeyError if unknown."""
    found = tuple(g for g in GUESTS if g.domain == domain) or LAYOUTS.get(domain, ())
    if not found:
        raise KeyError(domain)
    return found


log = lab_log


@dataclass
class Lab:
    """The lab in use: its engine, the sandbox of two fake Dom0s, the docker client, and the
    images built in it."""

    engine: object
    sandbox: object
    client: object
    started_engine: bool
    checkout: Path | None = None
    synced_images: set[str] = field(default_factory=set)  # in-sync standbys on the peers
    # What build_disk_image reported for each image the sandbox built, by (container, path):
    # the e2e tests inspect those images instead of building them again.
    built: dict[tuple[str, str], BuiltImage] = field(default_factory=dict)

    def runner(self, container: str) -> Runner:
        """A runner for commands in one of the sandbox's containers."""
        return DockerRunner(container, client=self.client)

    def recipe_path(self, name: str) -> Path:
        """The guest recipe ``fixtures/guests/<name>.toml`` of the lab's checkout (or this one)."""
        from . import checkout_root

        return (self.checkout or checkout_root()) / "fixtures" / "guests" / f"{name}.toml"


def sandbox_ready(engine_kind: str, checkout: Path, *, log: Callable[[str], None] = log,
                  synced: tuple[str, ...] = ()) -> Lab:
    """Bring up the lab engine and a fresh sandbox with guest disks built and written.

    ``synced`` names the domains whose in-sync standby image is built too (see
    ``build_synced_standbys``), for tests that start from a standby in sync.
    """
    from .engine import current_engine, lab_up
    from .sandbox import sandbox_up

    t0 = time.monotonic()
    running = current_engine()
    engine = lab_up(engine_kind)
    log(f"lab engine {engine.kind} ready ({time.monotonic() - t0:.0f}s)")
    t1 = time.monotonic()
    with phase("sandbox up (two fake Dom0s)"):
        sandbox = sandbox_up(engine, checkout)
    log(f"sandbox up ({time.monotonic() - t1:.0f}s)")
    lab = Lab(engine, sandbox, engine.client(), started_engine=running is None,
              checkout=checkout)
    t2 = time.monotonic()
    with phase("guest images built"):
        build_guest_images(lab, checkout)
        build_synced_standbys(lab, synced)
    log(f"guest images built ({time.monotonic() - t2:.0f}s)")
    with phase("guest disks written"):
        reset_disks(lab)
    return lab


def build_guest_images(lab: Lab, checkout: Path, scale: int = 1) -> None:
    """Build each guest's source image where it runs and its empty standby on the peer, each
    fake Dom0 its own images, both at once."""
    from .guests import build_disk_image, load_recipe

    jobs: dict[str, list[tuple[str, object, bool]]] = {}
    for g in GUESTS:
        recipe = load_recipe(checkout / "fixtures" / "guests" / f"{g.recipe}.toml", g.device)
        jobs.setdefault(g.source, []).append((g.source_image, recipe, False))
        jobs.setdefault(g.peer, []).append((g.standby_image, recipe, True))

    def build(r: Runner, items: list[tuple[str, object, bool]]) -> None:
        r.run(["mkdir", "-p", IMAGES, WORKDIR], timeout=30)
        for path, recipe, standby in items:
            lab.built[(r.host, path)] = build_disk_image(
                r, recipe, path, workdir=WORKDIR, standby=standby, scale=scale)

    on_each_host(lab, jobs, build)


def build_synced_standbys(lab: Lab, domains: tuple[str, ...]) -> None:
    """For each of ``domains`` not done yet in this sandbox, build its source recipe again on
    the peer: a standby already in sync, block for block the guest's disk."""
    from .guests import build_disk_image, load_recipe

    todo = [g for g in GUESTS if g.domain in domains and g.domain not in lab.synced_images]
    jobs: dict[str, list[GuestDisk]] = {}
    for g in todo:
        jobs.setdefault(g.peer, []).append(g)

    def build(r: Runner, disks: list[GuestDisk]) -> None:
        for g in disks:
            recipe = load_recipe(lab.recipe_path(g.recipe), g.device)
            lab.built[(r.host, g.synced_image)] = build_disk_image(
                r, recipe, g.synced_image, workdir=WORKDIR)

    if todo:
        on_each_host(lab, jobs, build)
        _prove_synced(lab, todo)


def _prove_synced(lab: Lab, disks: list[GuestDisk]) -> None:
    """Each in-sync standby built on the peer is byte for byte its source image (SHA-256);
    one that is not is an error here, not a difference found later by some test's audit."""
    if not disks:
        return
    files: dict[str, list[str]] = {}
    for g in disks:
        files.setdefault(g.source, []).append(g.source_image)
        files.setdefault(g.peer, []).append(g.synced_image)
    sums: dict[tuple[str, str], str] = {}

    def digest(r: Runner, paths: list[str]) -> None:
        out = r.run(["sha256sum", "--", *paths], timeout=600).stdout
        for line in out.splitlines():
            value, _, path = line.partition("  ")
            sums[(r.host, path)] = value

    on_each_host(lab, files, digest)
    for g in disks:
        if sums[(g.source, g.source_image)] != sums[(g.peer, g.synced_image)]:
            raise ToolkitError(f"the in-sync standby of {g.domain} built on {g.peer} is not "
                               f"byte for byte its source image on {g.source}", host=g.peer)
        lab.synced_images.add(g.domain)


def on_each_host(lab: Lab, by_host: dict[str, list], work: Callable[[Runner, list], int | None]
                 ) -> list[int | None]:
    """``work(runner, items)`` for each container's items, all containers at once.

    Each thread gets a docker client of its own: the SDK's HTTP session is not shared.
    """
    def one(item: tuple[str, list]) -> int | None:
        container, items = item
        with DockerRunner(container, client=lab.engine.client(timeout=600)) as r:
            return work(r, items)

    with ThreadPoolExecutor(len(by_host)) as pool:
        return list(pool.map(one, by_host.items()))


def reset_disks(lab: Lab, *, synced: tuple[str, ...] = ()) -> None:
    """Write the saved images into the LVs: the guest disks and their blank standbys.

    The standbys of the domains named in ``synced`` are written already in sync
    (block for block the guest's disk), so a test that needs a full standby does not
    pay for a first full copy. Each fake Dom0 writes its own LVs, both at once.
    """
    build_synced_standbys(lab, synced)  # once a sandbox, unless built with it
    by_host: dict[str, list[tuple[str, str]]] = {}
    for g in GUESTS:
        by_host.setdefault(g.source, []).append((g.source_image, g.source_lv))
        standby = g.synced_image if g.domain in synced else g.standby_image
        by_host.setdefault(g.peer, []).append((standby, g.standby_lv))

    def write(r: Runner, pairs: list[tuple[str, str]]) -> None:
        # One exec per host: each LV zeroed first (on the loop-backed VG that punches holes
        # and writes nothing), then only the image's data written (its holes skipped).
        r.run(["sh", "-c", "\n".join(_sparse_write(image, lv) for image, lv in pairs)],
              timeout=600)

    on_each_host(lab, by_host, write)


def _sparse_write(image: str, lv: str) -> str:
    """A sh line writing ``image`` onto ``lv`` byte for byte; the holes as zeroes, unwritten
    where the LV can be zeroed by discard, written where it cannot."""
    i, o = shlex.quote(image), shlex.quote(lv)
    return (f"if blkdiscard --zeroout --force {o} 2>/dev/null; "
            f"then dd if={i} of={o} bs=4M conv=fsync,sparse status=none || exit 1; "
            f"else dd if={i} of={o} bs=4M conv=fsync status=none || exit 1; fi")


def prepare_layout(lab: Lab, domain: str) -> tuple[GuestDisk, ...]:
    """Give a layout guest freshly written disks: its source image(s) and blank standby(s).

    The images are built the first time a sandbox needs them (the source where the domain
    runs, the standby on the peer, side by side) and kept in the containers; later calls
    only write them onto the LVs again. Returns the domain's disks.
    """
    from .sandbox import write_disk_image

    disks = LAYOUTS[domain]
    t0 = time.monotonic()
    jobs = [(g.source, g.source_image, g, False) for g in disks]
    jobs += [(g.peer, g.standby_image, g, True) for g in disks]
    by_host: dict[str, list[tuple[str, GuestDisk, bool]]] = {}
    for container, image, g, standby in jobs:
        by_host.setdefault(container, []).append((image, g, standby))
    built = sum(on_each_host(lab, by_host, lambda r, items: _build_missing(lab, r, items)))
    if built:
        log(f"{domain}: {built} image(s) built ({time.monotonic() - t0:.0f}s)")
    for container, image, g, standby in jobs:
        write_disk_image(lab.sandbox.container(container), image,
                         g.standby_lv if standby else g.source_lv)
    return disks


def _build_missing(lab: Lab, r: Runner, items: list[tuple[str, GuestDisk, bool]]) -> int:
    """Build the images of one container that are not there yet; returns how many were built."""
    from .guests import build_disk_image, load_recipe

    r.run(["mkdir", "-p", IMAGES, WORKDIR], timeout=30)
    built = 0
    for image, g, standby in items:
        if r.run(["test", "-f", image], check=False, timeout=30).exit_code == 0:
            continue
        recipe = load_recipe(lab.recipe_path(g.recipe), g.device)
        # Under a temporary name until complete: an interrupted build is redone.
        partial = f"{image}.partial"
        result = build_disk_image(r, recipe, partial, workdir=WORKDIR, standby=standby)
        r.run(["mv", "-f", "--", partial, image], timeout=30)
        lab.built[(r.host, image)] = replace(result, path=image)
        built += 1
    return built


def write_config(lab: Lab, path: str, extra: str, container: str = "dom0-a") -> None:
    """A config of a test's own on a fake Dom0: the lab's backup.toml with ``extra`` TOML
    appended, written 0600 at ``path``."""
    r = lab.runner(container)
    base = r.run(["cat", "/etc/domu-backup/backup.toml"], timeout=60).stdout
    r.run(["sh", "-c", 'cat > "$1" && chmod 0600 "$1"', "sh", path], input=base + extra,
          timeout=60)


def run_backup(lab: Lab, domain: str, *extra: str, container: str = "dom0-a",
               env: dict[str, str] | None = None, timeout: float = 1800) -> CommandResult:
    """``domu-backup backup --domu DOMAIN`` inside a fake Dom0, as cron would run it."""
    r = lab.runner(container)
    return r.run(["domu-backup", "backup", "--domu", domain, *extra], check=False,
                 timeout=timeout, env=env)


def leftovers(lab: Lab) -> dict[str, list[str]]:
    """What the tool left on each fake Dom0 (the leak check of both; [] where clean)."""
    return lab.sandbox.leak_reports(("dom0-a", "dom0-b"))


def standby_marker(lab: Lab, domain: str, peer: str = "dom0-b") -> dict:
    """The standby marker of ``domain`` on its peer ({} while there is none)."""
    res = lab.runner(peer).run(["cat", f"/var/lib/domu-backup/standby/{domain}.json"],
                               check=False, timeout=60)
    return json.loads(res.stdout) if res.exit_code == 0 else {}


@dataclass
class BackgroundRun:
    """A command (a ``domu-backup backup``) started with docker exec and left running."""

    lab: Lab
    exec_id: str

    def running(self) -> bool:
        """Whether the command is still running."""
        return bool(self.lab.client.api.exec_inspect(self.exec_id)["Running"])

    def wait(self, timeout: float = 1800) -> int:
        """Its exit code, once it has ended; TimeoutError if it runs past ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the backup still runs after {timeout:g}s")
            time.sleep(1)
        return int(self.lab.client.api.exec_inspect(self.exec_id)["ExitCode"])


def start_backup(lab: Lab, domain: str, *extra: str, env: dict[str, str] | None = None,
                 container: str = "dom0-a") -> BackgroundRun:
    """``domu-backup backup --domu DOMAIN`` in the background, as cron would start it."""
    return start_in(lab, container, ["domu-backup", "backup", "--domu", domain, *extra], env)


def start_in(lab: Lab, container: str, argv: list[str],
             env: dict[str, str] | None = None) -> BackgroundRun:
    """``argv`` started in the background by its own docker exec, and left running."""
    box = lab.client.containers.get(container)
    return BackgroundRun(lab, docker_exec_detached(lab.client.api, box.id, argv, env=env))


def wait_until_dirty(lab: Lab, domain: str, timeout: float = 300) -> bool:
    """Wait for the run to mark the standby "sync in progress" (it is about to copy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if standby_marker(lab, domain).get("state") == "dirty":
            return True
        time.sleep(1)
    return False


def audit(lab: Lab, domain: str = "web01", device: str | None = None) -> list[AuditedFs]:
    """Audit one disk of a domain: its only or first disk, or the one named ``device``."""
    disks = guest_disks(domain)
    g = next(x for x in disks if x.device == device) if device else disks[0]
    return audit_standby(lab.runner(g.source), lab.runner(g.peer), g.source_lv, g.standby_lv,
                         f"root@{g.peer}", SSH)


def teardown(lab: Lab, *, keep: bool) -> None:
    """Bring the sandbox down, and the engine if this lab started it; ``keep`` leaves both up."""
    if keep:
        log("sandbox kept: docker exec -it dom0-a bash (with the lab's DOCKER_HOST)")
        return
    from .engine import lab_down
    from .sandbox import sandbox_down

    sandbox_down(lab.engine)
    if lab.started_engine:
        lab_down()


def rehearse(checkout: Path, *, engine: str = "auto", keep: bool = False) -> int:
    """The README's main command; returns the exit code."""
    t0 = time.monotonic()
    lab = sandbox_ready(engine, checkout)
    code = 1
    try:
        t1 = time.monotonic()
        log("running `domu-backup backup --domu web01` inside dom0-a")
        res = run_backup(lab, "web01")
        print(res.stdout, end="")
        print(res.stderr, end="", file=sys.stderr)
        log(f"backup exited {res.exit_code} ({time.monotonic() - t1:.0f}s)")
        if res.exit_code != 0:
            return res.exit_code
        t2 = time.monotonic()
        results = audit(lab, "web01")
        diffs = [(a.name, d) for a in results for d in a.differences]
        for name, d in diffs:
            print(f"audit {name}: {d}")
        if not [a for a in results if a.name != "boot area"]:
            print("audit: no filesystem compared")
            return 1
        names = ", ".join(f"{a.name} ({a.fstype})" for a in results)
        if diffs:
            print(f"audit FAILED: {len(diffs)} difference(s) between source and standby")
            return 1
        print(f"audit clean: the standby equals the source on {names} "
              f"(rsync -n -c -aHAX --numeric-ids --delete -i printed nothing; "
              f"{time.monotonic() - t2:.0f}s)")
        code = 0
        return code
    finally:
        teardown(lab, keep=keep)
        log(f"rehearsal finished in {time.monotonic() - t0:.0f}s")
