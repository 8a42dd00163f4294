"""The bench's run in the lab: the bench guests, each workload and method measured, the outputs."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...errors import ToolkitError
from ...log import bench as log
from ...rsync import ssh_argv
from ...runners import Runner
from .figures import (
    CipherRate,
    GuestCost,
    Measurement,
    PointCost,
    _mib,
    bench_document,
    cipher_argv,
    measurement,
    overhead_ratios,
    render_table,
    write_chart,
)
from .meters import (
    MeterResult,
    bare_rsync_argv,
    block_copy_argv,
    cgroup_cpu_argv,
    delta_argv,
    parallel_rsync_argv,
    parse_dd,
    parse_meter,
    parse_pv_names,
    program_argv,
)
from .plain_script import SOURCE_OPTIONS, PlainDisk, PlainFilesystem, plain_script_argv
from .ship import bench_program, run_program
from .workloads import (
    BENCH_DIR,
    CGROUP_CPU_FILES,
    CHURN_PERCENT,
    CHURN_SEED,
    CIPHERS,
    CONFIG_PATH,
    EXTRA_PV_DIR,
    FILE_SIZES,
    FILES,
    FILES_DIR,
    FILES_PER_DIR,
    IMAGES,
    METER_POLL,
    METER_TIMEOUT,
    METHODS,
    MIB,
    MOUNT_ROOT,
    NODE_PATH,
    OVERHEAD_TARGET,
    PARALLEL_CONFIG_PATH,
    PARALLEL_JOBS,
    PEER_ADDRESS,
    PEER_HOST,
    PEER_VG,
    POINT_POOL,
    POINT_VARIANTS,
    POINTS_LV,
    POINTS_POOL,
    POINTS_THIN,
    PROGRAM_PATH,
    SCRATCH_LV,
    SNAPSHOT_SIZE,
    SNAPSHOT_WATCH,
    SOURCE_HOST,
    SOURCE_VG,
    THIN_CONFIG_PATH,
    TOOLKIT_METHODS,
    WORKDIR,
    WORKLOAD_DOMAIN,
    BenchDisk,
    Scale,
    WorkloadRun,
    bench_command,
    bench_config,
    bench_disks,
    extra_pv_size,
    files_methods,
    get_scale,
    load_bench_domain,
    method_targets,
    node_xml,
    peer_lvs,
    plan_methods,
    plan_workloads,
    space_needed,
)


class Bench:
    """The bench guests in a running sandbox, and the measurements taken on them."""

    def __init__(self, lab: Any, checkout: Path, scale: Scale,
                 workloads: Sequence[WorkloadRun], methods: Sequence[str] = METHODS) -> None:
        from ..rehearse import SSH

        self.lab = lab
        self.checkout = checkout
        self.scale = scale
        self.workloads = workloads
        self.methods = tuple(methods)
        self.ssh = ssh_argv(SSH)
        self.ssh_key, self.known_hosts = SSH.key, SSH.known_hosts
        self.src: Runner = lab.runner(SOURCE_HOST)
        self.peer: Runner = lab.runner(PEER_HOST)
        names = {WORKLOAD_DOMAIN[w.name] for w in workloads if w.name in WORKLOAD_DOMAIN}
        self.domains = {n: load_bench_domain(checkout, n, scale) for n in sorted(names)}
        self.disks = {n: bench_disks(d) for n, d in self.domains.items()}
        self.data_bytes: dict[str, int] = {}
        self.devices: dict[str, list[str]] = {}
        self.results: list[Measurement] = []
        self.guest: GuestCost | None = None
        self.ciphers: list[CipherRate] = []
        self.points: PointCost | None = None

    @property
    def all_disks(self) -> list[BenchDisk]:
        """Every disk of every bench guest."""
        return [d for disks in self.disks.values() for d in disks]

    # -- setup ---------------------------------------------------------------

    def setup(self) -> None:
        """Make both hosts ready for the measurements.

        The bench program on each, room in both VGs, every method's LVs with the built images
        written to them (the large files added for the full workload), the configs; then each
        guest's bytes of file data and the PVs whose disk counters are read.
        """
        for host in (SOURCE_HOST, PEER_HOST):
            self.lab.runner(host).run(["mkdir", "-p", BENCH_DIR], timeout=30)
            self.lab.sandbox.put_file(host, PROGRAM_PATH, bench_program().encode(), 0o755)
        guest = any(w.name == "guest" for w in self.workloads)
        need = space_needed(self.all_disks, self.scale, guest=guest,
                            points=any(w.name == "points" for w in self.workloads),
                            pointchurn=any(w.name == "pointchurn" for w in self.workloads))
        for runner, vg in ((self.src, SOURCE_VG), (self.peer, PEER_VG)):
            self._make_room(runner, vg, need[vg])
        for d in self.all_disks:
            self._lvcreate(self.src, SOURCE_VG, d.lv_name, d.size)
            for lv in peer_lvs(d):  # each method's target (the files guest: its methods')
                self._lvcreate(self.peer, PEER_VG, lv.rsplit("/", 1)[-1], d.size)
        if guest:
            self._lvcreate(self.src, SOURCE_VG, SCRATCH_LV, self.scale.scratch_mib * MIB)
        self._build_images()
        for name, domain in self.domains.items():
            if name == WORKLOAD_DOMAIN["full"]:
                self._add_large_files(domain)
            self.data_bytes[name] = self._scan(name)
            log(f"{name}: {self.data_bytes[name] / MIB:.1f} MiB of file data on "
                f"{len(self.disks[name])} disk(s)")
        self._write_config()
        for runner, vg in ((self.src, SOURCE_VG), (self.peer, PEER_VG)):
            res = runner.run(["pvs", "--noheadings", "-o", "pv_name", "-S", f"vg_name={vg}"],
                             timeout=60)
            self.devices[vg] = parse_pv_names(res.stdout)
        log(f"disk counters: {SOURCE_HOST} {self.devices[SOURCE_VG]}, "
            f"{PEER_HOST} {self.devices[PEER_VG]}")

    def _make_room(self, runner: Runner, vg: str, need: int) -> None:
        from ...facts.lvm import parse_vgs, vgs_argv

        free = parse_vgs(runner.run(vgs_argv(vg), timeout=60).stdout)[0].free_bytes
        size = extra_pv_size(need, free)
        log(f"{vg}: the bench needs {need / MIB:.0f} MiB, {free / MIB:.0f} MiB free"
            + (f": adding a {size / MIB:.0f} MiB PV" if size else ""))
        if not size:
            return
        path = f"{EXTRA_PV_DIR}/{runner.host}.pv"
        runner.run(["mkdir", "-p", EXTRA_PV_DIR], timeout=30)
        runner.run(["truncate", "-s", str(size), path], timeout=30)
        loop = ""
        for attempt in range(5):
            # Both containers share the kernel's loop devices; a race loses, then retries.
            res = runner.run(["losetup", "--find", "--show", path], check=False, timeout=60)
            if res.exit_code == 0:
                loop = res.stdout.strip()
                break
            time.sleep(0.5 * (attempt + 1))
        if not loop:
            raise ToolkitError(f"losetup could not attach {path}", host=runner.host)
        runner.run(["lvm", "lvmdevices", "--adddev", loop], timeout=60)
        runner.run(["pvcreate", "-y", loop], timeout=60)
        runner.run(["vgextend", vg, loop], timeout=60)

    def _lvcreate(self, runner: Runner, vg: str, name: str, size: int) -> None:
        log(f"lvcreate {vg}/{name} ({size / MIB:.0f} MiB) on {runner.host}")
        runner.run(["lvcreate", "-y", "-L", f"{size // MIB}m", "-n", name, vg],
                   timeout=120)

    def _build_images(self) -> None:
        from ..guests import build_disk_image

        for name, domain in self.domains.items():
            for disk, bd in zip(domain.disks, self.disks[name], strict=True):
                for runner, image, lvs, standby in (
                        (self.src, bd.source_image, (bd.source_lv,), False),
                        (self.peer, bd.standby_image, self._standby_targets(bd), True)):
                    t0 = time.monotonic()
                    runner.run(["mkdir", "-p", IMAGES, WORKDIR], timeout=30)
                    build_disk_image(runner, disk, image, workdir=WORKDIR, standby=standby,
                                     scale=self.scale.tree)
                    for lv in lvs:
                        runner.run(["dd", f"if={image}", f"of={lv}", "bs=4M", "conv=fsync",
                                    "status=none"], timeout=3600)
                    log(f"{bd.lv_name}: {'standby' if standby else 'source'} image built and "
                        f"written to {', '.join(lvs)} ({time.monotonic() - t0:.0f}s)")
                if {"block-delta", "block-copy"} & set(self.methods) \
                        and bd.block_lv in peer_lvs(bd):
                    self._zero(self.peer, bd.block_lv, bd.size)

    def _standby_targets(self, bd: BenchDisk) -> tuple[str, ...]:
        """The peer LVs that start as the built standby image: one per file-level method
        chosen, where the bench made it (see peer_lvs)."""
        made = peer_lvs(bd)
        return tuple(lv for m, lv in method_targets(bd).items()
                     if m in self.methods and not m.startswith("block-") and lv in made)

    def _zero(self, runner: Runner, lv: str, size: int) -> None:
        # On a loop-backed VG this punches holes; dd is the slow way round.
        res = runner.run(["blkdiscard", "--zeroout", "--force", lv], check=False, timeout=600)
        if res.exit_code != 0:
            runner.run(["dd", "if=/dev/zero", f"of={lv}", "bs=4M", f"count={size // (4 * MIB)}",
                        "conv=fsync", "status=none"], timeout=3600)

    def _mounted(self, stack: ExitStack, runner: Runner, disks: Iterable[tuple[str, str]],
                 tag: str, *, readonly: bool) -> dict[str, str]:
        """Mount the filesystems of each (device, label); ``label/number`` -> mount point."""
        from ..audit import mounted

        out: dict[str, str] = {}
        for device, label in disks:
            where = f"{MOUNT_ROOT}/{label}-{tag}"
            found = stack.enter_context(mounted(runner, device, where, tag, readonly=readonly))
            out.update({f"{label}/{n}": mnt for n, (mnt, _type) in found.items()})
        return out

    def _source_trees(self, stack: ExitStack, name: str, *, readonly: bool) -> dict[str, str]:
        return self._mounted(stack, self.src, [(d.source_lv, d.device) for d in self.disks[name]],
                             "bs" if readonly else "bw", readonly=readonly)

    def _add_large_files(self, domain: Any) -> None:
        root_disk = next(d for d in domain.disks if d.root is not None)
        number = root_disk.root.number
        files = [[f"data/large/large-{i:02d}.bin", self.scale.large_file_mib * MIB]
                 for i in range(self.scale.large_files)]
        with ExitStack() as stack:
            trees = self._source_trees(stack, domain.name, readonly=False)
            out = run_program(self.src, {"op": "large", "root": trees[f"{root_disk.device}/"
                                                                      f"{number}"],
                                         "files": files, "seed": root_disk.seed,
                                         "epoch": root_disk.epoch}, timeout=3600)
        log(f"{domain.name}: {len(files)} large file(s) written, {out['written'] / MIB:.0f} MiB")

    def add_files(self, name: str, count: int) -> int:
        """Add small files under FILES_DIR of the guest's root filesystem until it holds
        ``count`` (seeded: see the program's files op); the bytes written."""
        root_disk = next(d for d in self.domains[name].disks if d.root is not None)
        t0 = time.monotonic()
        with ExitStack() as stack:
            trees = self._source_trees(stack, name, readonly=False)
            root = trees[f"{root_disk.device}/{root_disk.root.number}"]
            out = run_program(self.src, {"op": "files", "root": root, "dir": FILES_DIR,
                                         "count": count, "per_dir": FILES_PER_DIR,
                                         "sizes": list(FILE_SIZES), "seed": root_disk.seed,
                                         "epoch": root_disk.epoch}, timeout=METER_TIMEOUT)
        if out["files"] != count:
            raise ToolkitError(f"{FILES} {count}: /{FILES_DIR} of {name} holds {out['files']} "
                               "files", host=SOURCE_HOST)
        log(f"{FILES} {count}: {out['written']} file(s) added to /{FILES_DIR} of {name}, "
            f"{out['bytes'] / MIB:.1f} MiB ({time.monotonic() - t0:.0f}s)")
        self.data_bytes[name] += out["bytes"]
        return int(out["bytes"])

    def _scan(self, name: str) -> int:
        with ExitStack() as stack:
            trees = self._source_trees(stack, name, readonly=True)
            out = run_program(self.src, {"op": "scan", "roots": sorted(trees.values())},
                              timeout=1800)
        return int(out["bytes"])

    def _write_config(self) -> None:
        sandbox = self.lab.sandbox
        configs = {CONFIG_PATH: (1, False), PARALLEL_CONFIG_PATH: (PARALLEL_JOBS, False),
                   THIN_CONFIG_PATH: (1, True)}
        for host, vg, running in ((SOURCE_HOST, SOURCE_VG, True), (PEER_HOST, PEER_VG, False)):
            sandbox.put_file(host, NODE_PATH, node_xml(self.disks, vg, running=running).encode(),
                             0o644)
            for path, (jobs, thin) in configs.items():
                text = bench_config(self.disks, key=self.ssh_key, known_hosts=self.known_hosts,
                                    copy_jobs=jobs, thin=thin)
                sandbox.put_file(host, path, text.encode(), 0o600)
        for path in configs:
            self.src.run(["domu-backup", "check-config", "--config", path], timeout=120)

    # -- workloads -----------------------------------------------------------

    def run_workload(self, workload: str) -> None:
        """Run one workload: every method measured (after the churn, for ``churn``); ``guest``
        and ``cipher`` take their own measurements instead."""
        if workload == "guest":
            self.guest = self.guest_cost()
            return
        if workload == "cipher":
            self.ciphers = self.cipher_rates()
            return
        if workload == "points":
            self.points = self.point_cost()
            return
        if workload == "pointchurn":
            self.results += self.point_churn(WORKLOAD_DOMAIN[workload])
            return
        if workload == FILES:
            self.results += self.file_counts(WORKLOAD_DOMAIN[workload])
            return
        name = WORKLOAD_DOMAIN[workload]
        changed = self.data_bytes[name]
        if workload == "nochange":
            changed = 0
        elif workload == "churn":
            changed = self.churn(name)
        for method in self.methods:
            self.results.append(self.measure(workload, method, name, changed))

    def file_counts(self, name: str) -> list[Measurement]:
        """At each of the scale's file counts: the files added, a first sync of each method
        onto its own target (timed and logged, not kept), then each method's no-change run
        measured. Only FILES_METHODS take part."""
        methods, skipped = files_methods(self.methods)
        for method in skipped:
            log(f"{FILES}: {method} sits this workload out (only {', '.join(methods) or 'none'}"
                " of the chosen methods take part)")
        out: list[Measurement] = []
        if not methods:
            return out
        for count in self.scale.file_counts:
            added = self.add_files(name, count)
            for method in methods:
                first = self.measure(f"{FILES} {count}, first sync", method, name, added)
                log(f"{FILES} {count}: {method}'s first sync took {first.wall:.1f}s (not in "
                    "the table)")
            for method in methods:
                out.append(self.measure(FILES, method, name, 0, files=count))
        return out

    def churn(self, name: str) -> int:
        """Change about 1% of each filesystem of the guest; the bytes written."""
        total = deleted = 0
        with ExitStack() as stack:
            trees = self._source_trees(stack, name, readonly=False)
            for label, root in sorted(trees.items()):
                out = run_program(self.src, {"op": "churn", "root": root, "seed": CHURN_SEED,
                                             "percent": CHURN_PERCENT,
                                             "epoch": int(time.time())}, timeout=1800)
                written = out["appended"] + out["modified_bytes"] + out["added_bytes"]
                log(f"churn {name} {label}: {out['modified']} files rewritten, {out['added']} "
                    f"added, {out['deleted']} deleted, {out['appended'] / MIB:.1f} MiB appended "
                    f"to {out['appended_file']}: {written / MIB:.1f} MiB written of "
                    f"{out['data_bytes'] / MIB:.1f} MiB")
                total += written
                deleted += out["deleted_bytes"]
        self.data_bytes[name] += total - deleted
        return total

    def steps_for(self, method: str, name: str, stack: ExitStack,
                  config: str | None = None) -> list[list[str]]:
        """The commands one method runs on dom0-a (mounting, for the floor, beforehand);
        ``config`` replaces a toolkit method's own."""
        disks = self.disks[name]
        peer_ssh = [*self.ssh, PEER_ADDRESS]
        if method in TOOLKIT_METHODS:
            config = config or (CONFIG_PATH if method == "toolkit" else PARALLEL_CONFIG_PATH)
            return [["domu-backup", "backup", "--domu", name, "--config", config, "--json"]]
        if method == "plain-script":
            return [self.plain_argv(name)]
        if method in ("bare-rsync", "bare-parallel"):
            # The origin read-only here, the method's own target of the same layout there.
            src = self._source_trees(stack, name, readonly=True)
            parallel = method == "bare-parallel"
            dst = self._mounted(stack, self.peer,
                                [(d.par_lv if parallel else d.bare_lv, d.device) for d in disks],
                                "bp" if parallel else "bt", readonly=False)
            missing = sorted(set(src) ^ set(dst))
            if missing:
                raise ToolkitError(f"{method}: filesystems {missing} are not on both sides")
            pairs = [(src[k], dst[k]) for k in sorted(src)]
            if not parallel:
                steps = [bare_rsync_argv(a, b, self.ssh) for a, b in pairs]
                return [*steps, [*peer_ssh, "sync"]]
            return [parallel_rsync_argv(pairs, self.ssh), [*peer_ssh, "sync"]]
        if method == "block-delta":
            # The device nodes themselves, on both sides: rsync skips a source symlink
            # (/dev/VG/LV) as a non-regular file, and would replace a target one by a file.
            return [delta_argv(self.src.run(["readlink", "-e", d.source_lv],
                                            timeout=60).stdout.strip(),
                               self.peer.run(["readlink", "-e", d.block_lv],
                                             timeout=60).stdout.strip(), self.ssh)
                    for d in disks]
        return [block_copy_argv(d.source_lv, d.block_lv, peer_ssh) for d in disks]

    def plain_argv(self, name: str) -> list[str]:
        """The plain script of one guest: its disks' partitions that hold a filesystem,
        onto the plain method's own standby LVs."""
        disks = []
        for disk, bd in zip(self.domains[name].disks, self.disks[name], strict=True):
            fss = tuple(PlainFilesystem(p.number, p.fs) for p in disk.partitions
                        if p.fs in SOURCE_OPTIONS)
            disks.append(PlainDisk(bd.device, SOURCE_VG, bd.lv_name, PEER_VG,
                                   bd.plain_lv.rsplit("/", 1)[-1], fss))
        return plain_script_argv(uri=f"test://{NODE_PATH}", domain=name, disks=disks,
                                 snapshot_size=SNAPSHOT_SIZE, ssh=self.ssh,
                                 peer_address=PEER_ADDRESS)

    def drop_caches(self) -> bool:
        """Flush and drop the page cache (of both containers: one kernel); False if that failed."""
        # One kernel for both containers: this drops dom0-b's page cache too.
        res = self.src.run(["sh", "-c", "sync && echo 3 > /proc/sys/vm/drop_caches"],
                           check=False, timeout=300)
        return res.exit_code == 0

    def peer_cpu(self) -> str | None:
        """dom0-b's cgroup CPU counter as text (None: not readable)."""
        res = self.peer.run(cgroup_cpu_argv(), check=False, timeout=60)
        return res.stdout if res.exit_code == 0 and res.stdout.strip() else None

    def meter(self, steps: Sequence[Sequence[str]], *, watch: str | None) -> MeterResult:
        """The meter's result of ``steps`` run one after another on dom0-a.

        With ``watch`` (a snapshot LV name prefix) it also polls for the run's snapshot
        (COW) devices, to time how long each existed.
        """
        spec = {"op": "meter", "steps": [list(s) for s in steps], "poll": METER_POLL,
                "devices": self.devices[SOURCE_VG] + self.devices[PEER_VG],
                "cgroup_cpu": list(CGROUP_CPU_FILES),
                "watch_dm": [f"{SOURCE_VG}-{watch}", "-cow"] if watch else None}
        res = self.src.run(program_argv(spec), timeout=METER_TIMEOUT)
        return parse_meter(res.stdout)

    def measure(self, workload: str, method: str, name: str, changed: int,
                config: str | None = None, files: int | None = None) -> Measurement:
        """One method on one workload (at ``files`` files, for the files workload), measured
        with caches dropped first.

        ToolkitError when a command failed, or when rsync skipped a device instead of copying it.
        """
        label = workload if files is None else f"{workload} {files}"
        log(f"{label}/{method}: preparing")
        with ExitStack() as stack:
            steps = self.steps_for(method, name, stack, config)
            dropped = self.drop_caches()
            cpu0 = self.peer_cpu()
            log(f"{label}/{method}: running {len(steps)} command(s): "
                + "; ".join(shlex.join(s)[:100] for s in steps))
            meter = self.meter(steps, watch=SNAPSHOT_WATCH.get(method))
            cpu1 = self.peer_cpu()
        skipped = [st for st in meter.steps if "skipping non-regular file" in st.stdout + st.stderr]
        if skipped:
            raise ToolkitError(f"{label}/{method}: rsync skipped the device instead of "
                               f"copying it: {skipped[0].stderr.strip()[-300:]}", host=SOURCE_HOST)
        if meter.exit_code != 0:
            step = meter.steps[-1]
            raise ToolkitError(f"{label}/{method}: `{step.argv0}` exited {step.exit_code}: "
                               f"{step.stderr.strip()[-2000:]}", host=SOURCE_HOST)
        m = measurement(workload, method, name, meter, source_devices=self.devices[SOURCE_VG],
                        peer_devices=self.devices[PEER_VG], peer_cpu=(cpu0, cpu1),
                        changed_bytes=changed, caches_dropped=dropped, files=files)
        log(f"{label}/{method}: {m.wall:.1f}s wall, {m.cpu_seconds:.1f}s CPU, "
            f"{_mib(m.wire_bytes)} MiB on the wire"
            + (", phases " + ", ".join(f"{k} {v:.1f}s" for k, v in m.phases.items())))
        return m

    def guest_cost(self) -> GuestCost:
        """Origin write throughput without a snapshot, with one, and without again."""
        lv = f"{SOURCE_VG}/{SCRATCH_LV}"
        count = self.scale.scratch_mib // 2
        dd = ["dd", "if=/dev/zero", f"of=/dev/{lv}", "bs=1M", f"count={count}", "oflag=direct",
              "conv=fsync"]

        def write(what: str) -> float:
            self.drop_caches()
            res = self.src.run(dd, timeout=3600)
            rate = parse_dd(res.stderr).mib_per_s
            log(f"guest: {count} MiB written to {lv} {what}: {rate:.1f} MiB/s")
            return rate

        write("to allocate the loop file's blocks (not counted)")
        first = write("without a snapshot")
        snap = f"{SCRATCH_LV}_snap"
        self.src.run(["lvcreate", "-y", "-s", "-L", f"{self.scale.scratch_mib}m", "-n", snap,
                      lv], timeout=120)
        try:
            during = write("while a snapshot exists")
        finally:
            self.src.run(["lvremove", "-y", f"{SOURCE_VG}/{snap}"], timeout=120)
        second = write("without a snapshot, again")
        return GuestCost(count, (round(first, 1), round(second, 1)), round(during, 1))

    def point_cost(self) -> PointCost:
        """What restore points cost the standby's writes: the same dd to a thick LV with 0,
        1 and 2 classic snapshots, and to a thin LV with 0 and 1 thin snapshot, side by side
        (each LV written once first, uncounted, so its blocks are allocated)."""
        size = self.scale.scratch_mib
        count = size // 2
        vg = SOURCE_VG
        rates: list[tuple[str, float]] = []

        def write(lv: str, what: str) -> float:
            self.drop_caches()
            res = self.src.run(["dd", "if=/dev/zero", f"of=/dev/{vg}/{lv}", "bs=1M",
                                f"count={count}", "oflag=direct", "conv=fsync"], timeout=3600)
            rate = parse_dd(res.stderr).mib_per_s
            log(f"points: {count} MiB written to {vg}/{lv}, {what}: {rate:.1f} MiB/s")
            return rate

        made: list[str] = []  # removed newest first, whatever happens
        try:
            self._lvcreate(self.src, vg, POINTS_LV, size * MIB)
            made.append(POINTS_LV)
            write(POINTS_LV, "to allocate the loop file's blocks (not counted)")
            rates.append(("thick LV, no point", write(POINTS_LV, "no point")))
            for n in (1, 2):  # fresh points each time: every one copies each first write
                snaps = [f"{POINTS_LV}_p{n}{k}" for k in range(n)]
                for snap in snaps:
                    self.src.run(["lvcreate", "-y", "-s", "-L", f"{size}m", "-n", snap,
                                  f"{vg}/{POINTS_LV}"], timeout=120)
                    made.append(snap)
                label = f"{n} classic point" + ("s" if n > 1 else "")
                rates.append((f"thick LV, {label}", write(POINTS_LV, label)))
                for snap in reversed(snaps):
                    self.src.run(["lvremove", "-y", f"{vg}/{snap}"], timeout=300)
                    made.remove(snap)
            self.src.run(["lvcreate", "-y", "--type", "thin-pool", "-L", f"{2 * size}m", "-n",
                          POINTS_POOL, vg], timeout=300)
            made.append(POINTS_POOL)
            self.src.run(["lvcreate", "-y", "--type", "thin", "--virtualsize", f"{size}m",
                          "--thinpool", f"{vg}/{POINTS_POOL}", "-n", POINTS_THIN, vg],
                         timeout=120)
            made.append(POINTS_THIN)
            write(POINTS_THIN, "to allocate the pool's blocks (not counted)")
            rates.append(("thin LV, no point", write(POINTS_THIN, "no point")))
            self.src.run(["lvcreate", "-y", "-s", "-n", f"{POINTS_THIN}_p1",
                          f"{vg}/{POINTS_THIN}"], timeout=120)
            made.append(f"{POINTS_THIN}_p1")
            rates.append(("thin LV, 1 thin point", write(POINTS_THIN, "1 thin point")))
        finally:
            for lv in reversed(made):
                self.src.run(["lvremove", "-y", f"{vg}/{lv}"], check=False, timeout=300)
        return PointCost(count, tuple(rates))

    def point_churn(self, name: str) -> list[Measurement]:
        """The toolkit's churn run with restore points on its standby: none, 1 and 3 classic
        points, and a thin standby with a thin point, each after a churn of its own (the
        points taken just before, as a run would have left them)."""
        disks = self.disks[name]
        out: list[Measurement] = []
        made: list[str] = []  # every LV made here, removed newest first
        try:
            for what, count, thin in POINT_VARIANTS:
                if thin and not any(lv.endswith("_thin") for lv in made):
                    made += self._thin_standbys(disks)
                changed = self.churn(name)
                points: list[str] = []
                for d in disks:
                    origin = (d.thin_lv if thin else d.standby_lv).removeprefix("/dev/")
                    for k in range(count):
                        lv = f"{d.lv_name}_pt{k}"
                        self.peer.run(["lvcreate", "-y", "-s", "-n", lv,
                                       *([] if thin else ["-l", "20%ORIGIN"]), origin],
                                      timeout=300)
                        points.append(f"{PEER_VG}/{lv}")
                made += points
                m = self.measure(f"pointchurn, {what}", "toolkit", name, changed,
                                 THIN_CONFIG_PATH if thin else None)
                out.append(m)
                for lv in reversed(points):
                    self.peer.run(["lvremove", "-y", lv], timeout=300)
                    made.remove(lv)
        finally:
            for lv in reversed(made):
                self.peer.run(["lvremove", "-y", lv], check=False, timeout=300)
        return out

    def _thin_standbys(self, disks: Sequence[BenchDisk]) -> list[str]:
        """A thin pool and, in it, a thin copy of each standby (its data only: the copy
        skips the zero blocks); the LVs made, in order."""
        total = sum(d.size for d in disks)
        self.peer.run(["lvcreate", "-y", "--type", "thin-pool", "-L",
                       f"{(total + total // 4) // MIB}m", "-n", POINT_POOL, PEER_VG],
                      timeout=300)
        made = [f"{PEER_VG}/{POINT_POOL}"]
        for d in disks:
            self.peer.run(["lvcreate", "-y", "--type", "thin", "--virtualsize", f"{d.size}b",
                           "--thinpool", f"{PEER_VG}/{POINT_POOL}", "-n",
                           d.thin_lv.rsplit("/", 1)[1], PEER_VG], timeout=300)
            made.append(d.thin_lv.removeprefix("/dev/"))
            self.peer.run(["dd", f"if={d.standby_lv}", f"of={d.thin_lv}", "bs=4M",
                           "conv=sparse,fsync", "status=none"], timeout=3600)
            log(f"pointchurn: {d.standby_lv} copied to the thin {d.thin_lv}")
        return made

    def cipher_rates(self) -> list[CipherRate]:
        """Each cipher of CIPHERS, one after another, on the same amount of zeroes."""
        mib = self.scale.scratch_mib
        out = []
        for cipher in CIPHERS:
            meter = self.meter([cipher_argv(self.ssh, cipher, mib)], watch=None)
            if meter.exit_code != 0:
                log(f"cipher {cipher}: ssh exited {meter.exit_code} (not offered?): "
                    f"{meter.steps[-1].stderr.strip()[-300:] if meter.steps else ''}")
                continue
            rate = CipherRate(cipher, mib, round(meter.wall, 3),
                              round(meter.user + meter.system, 3))
            log(f"cipher {cipher}: {rate.mib_per_s:.1f} MiB/s")
            out.append(rate)
        return out

    def environment(self) -> dict[str, str]:
        """What the figures were measured on: kernel, rsync version, lab engine, CPU count."""
        def first_line(r: Runner, argv: list[str]) -> str:
            res = r.run(argv, check=False, timeout=60)
            return (res.stdout.strip().splitlines() or [""])[0]

        return {"kernel": first_line(self.src, ["uname", "-r"]),
                "rsync": first_line(self.src, ["rsync", "--version"]),
                "engine": str(getattr(self.lab.engine, "kind", "")),
                "cpus": first_line(self.src, ["nproc"])}


def default_out_dir(checkout: Path) -> Path:
    """``reports/bench/<UTC time>`` in the checkout: where a run's outputs go by default."""
    return checkout / "reports" / "bench" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def write_outputs(out_dir: Path, doc: Mapping[str, Any], results: Sequence[Measurement],
                  table: str, title: str) -> list[Path]:
    """bench.json, table.txt and (with matplotlib) bench.png; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "bench.json", out_dir / "table.txt"]
    written[0].write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    written[1].write_text(table, encoding="utf-8")
    if results and any(m.phases for m in results):
        if write_chart(out_dir / "bench.png", results, title):
            written.append(out_dir / "bench.png")
        else:
            log("no chart: matplotlib is not installed (pip install '.[bench]')")
    return written


def bench(checkout: Path, *, scale: str = "small", workloads: str = "", engine: str = "auto",
          keep: bool = False, out_dir: Path | None = None, methods: str = "") -> int:
    """``invoke bench``: bring up the lab, run the workloads, write the report; exit code."""
    from ..rehearse import sandbox_ready, teardown

    sc = get_scale(scale)
    plan = plan_workloads(workloads)
    chosen = plan_methods(methods)
    out = out_dir or default_out_dir(checkout)
    meta: dict[str, Any] = {"command": bench_command(scale, plan, chosen), "scale": asdict(sc),
                            "workloads": [asdict(w) for w in plan],
                            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "methods": list(chosen),
                            "overhead_target": OVERHEAD_TARGET}
    log(f"{meta['command']}: workloads {', '.join(w.name for w in plan)}; output in {out}")
    t0 = time.monotonic()
    lab = sandbox_ready(engine, checkout)
    b: Bench | None = None
    error: str | None = None
    try:
        b = Bench(lab, checkout, sc, plan, chosen)
        t1 = time.monotonic()
        b.setup()
        log(f"bench guests ready ({time.monotonic() - t1:.0f}s)")
        meta["environment"] = b.environment()
        meta["data_bytes"] = dict(b.data_bytes)
        for w in plan:
            t2 = time.monotonic()
            log(f"workload {w.name}" + ("" if w.requested else " (needed by a later one)"))
            b.run_workload(w.name)
            log(f"workload {w.name} done ({time.monotonic() - t2:.0f}s)")
        return 0
    except ToolkitError as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {error}")
        if not keep:
            log("run again with --keep to inspect the sandbox (docker exec -it dom0-a bash)")
        return exc.exit_code or 1
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {error}")
        raise
    finally:
        try:
            results = b.results if b is not None else []
            guest = b.guest if b is not None else None
            ciphers = b.ciphers if b is not None else []
            points = b.points if b is not None else None
            meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            meta["duration"] = round(time.monotonic() - t0, 1)
            table = render_table(results, overhead_ratios(results), guest, ciphers, points)
            doc = bench_document(meta, results, guest, error, ciphers, points)
            paths = write_outputs(out, doc, results, table, f"{meta['command']}")
            print(table, end="")
            log("written: " + ", ".join(str(p) for p in paths))
        finally:
            teardown(lab, keep=keep)
            log(f"bench finished in {time.monotonic() - t0:.0f}s")
