"""The benchmark (``invoke bench``): what the toolkit costs over a bare rsync and a block copy.

Runs in the rehearsal lab on the bench's own guests (``fixtures/guests/bench01.toml``, one
dos disk with ext4 root and /var; ``bench02.toml``, two disks; ``bench03.toml``, one disk,
one ext4 filesystem for many small files), whose LVs, libvirt test driver node and config
section (``/etc/domu-backup/bench.toml``) are made at bench time: the sandbox's own guests
and files are left alone. Workloads, on the same guest data:

- ``full``: first sync onto blank targets; ``nochange``: a second run, nothing changed;
  ``churn``: about 1% of the data changed (files rewritten, added, deleted, the largest
  file appended to); ``twodisk``: a first sync of the two-disk guest (copied one after
  another or side by side?); ``guest``: what a snapshot costs the running guest (origin
  write throughput with and without one, on a scratch LV); ``points`` and ``pointchurn``:
  what restore points cost the standby's writes, and a churn run of the toolkit;
  ``files``: how a no-change run grows with the number of files, on bench03: at each of
  the scale's file counts (``Scale.file_counts``) small files are added until its root
  holds that many, each method makes a first sync (timed and logged only), then its
  no-change run is measured; only ``toolkit``, ``plain-script`` and ``bare-rsync`` take
  part, and the table gives, per count, the toolkit's time over the plain script's and
  each method's growth per 100k files.

Methods, side by side in each workload (in this order):

- ``toolkit``: ``domu-backup backup --domu NAME`` inside dom0-a, its time split by phase
  from its own JSON report;
- ``toolkit-parallel``: the same with ``copy_jobs = 2`` (the domain's filesystems copied
  side by side), onto its own standby LVs, from its own config (``bench-parallel.toml``);
- ``bare-rsync``: the toolkit's rsync options between the same trees, already mounted
  (the origin read-only on dom0-a, a target of the same layout on dom0-b): the floor;
- ``bare-parallel``: the same rsyncs, one per filesystem, all at once (onto a third target
  of the same layout): would copying a domain's filesystems side by side pay?
- ``block-delta``: rsync of the disk device itself (``--copy-devices --write-devices
  --inplace``, every block compared), onto a block target holding the previous copy;
- ``block-copy``: ``dd | ssh dd`` of the whole disk, onto that same block target (after
  the delta, which needs the previous copy there).

Every measured command runs under a meter (a stdlib Python program run inside dom0-a)
that takes counters before and after: CPU time of its process tree, disk bytes of each
side's loop PVs (``/sys/block``: the kernel, hence sysfs, is shared by both containers),
bytes on dom0-a's network interfaces, and each container's cgroup CPU; while the command
runs it samples the first process's peak RSS and which snapshot device-mapper devices
exist. Caches are dropped before each method. Results go to
``reports/bench/<timestamp>/`` as ``bench.json``, ``bench.png`` (per-phase times, with
matplotlib) and ``table.txt``.
"""


from __future__ import annotations

from .figures import (
    CipherRate,
    FilesRow,
    GuestCost,
    Measurement,
    PointCost,
    Ratio,
    Side,
    bench_document,
    chart_series,
    cipher_argv,
    copy_overlap,
    cpu_delta,
    files_growth,
    files_rows,
    files_section,
    growth_per_files,
    io_delta,
    measurement,
    net_delta,
    overhead_ratios,
    render_table,
    snapshot_lifetimes,
    snapshot_window,
    toolkit_phases,
    write_chart,
)
from .meters import (
    BlockStat,
    Counters,
    DdResult,
    MeterResult,
    StepResult,
    ToolkitRun,
    bare_rsync_argv,
    block_copy_argv,
    cgroup_cpu_argv,
    delta_argv,
    parallel_rsync_argv,
    parse_block_stat,
    parse_cgroup_cpu,
    parse_dd,
    parse_meter,
    parse_net_dev,
    parse_proc_io,
    parse_pv_names,
    parse_toolkit_report,
    program_argv,
    snapshot_lives_from_steps,
    step_totals,
)
from .runs import Bench, bench, write_outputs
from .ship import bench_program, run_program

# Its parts: workloads (scales, workloads, methods, the bench guests), meters (parsers of
# the counters, argv of the measured commands), figures (deltas, ratios, table, chart),
# ship (node_program.py, run inside the fake Dom0s) and runs (the run in the lab).
from .workloads import (
    BENCH_DIR,
    CGROUP_CPU_FILES,
    EXTRA_PV_DIR,
    METHODS,
    MIB,
    MOUNT_ROOT,
    PARALLEL_SEPARATOR,
    REPORT_DIR,
    SCALES,
    BenchDisk,
    Scale,
    WorkloadRun,
    bench_command,
    bench_config,
    bench_disks,
    extra_pv_size,
    files_disk_size,
    files_methods,
    get_scale,
    load_bench_domain,
    method_targets,
    node_xml,
    peer_lvs,
    plan_methods,
    plan_workloads,
    scaled_recipe_data,
    space_needed,
)

__all__ = [
    "snapshot_lives_from_steps",
    "step_totals",
    "BENCH_DIR",
    "Bench",
    "BenchDisk",
    "BlockStat",
    "CGROUP_CPU_FILES",
    "CipherRate",
    "Counters",
    "DdResult",
    "EXTRA_PV_DIR",
    "FilesRow",
    "GuestCost",
    "PointCost",
    "METHODS",
    "MIB",
    "MOUNT_ROOT",
    "Measurement",
    "MeterResult",
    "PARALLEL_SEPARATOR",
    "REPORT_DIR",
    "Ratio",
    "SCALES",
    "Scale",
    "Side",
    "StepResult",
    "ToolkitRun",
    "WorkloadRun",
    "bare_rsync_argv",
    "bench",
    "bench_command",
    "bench_config",
    "bench_disks",
    "bench_document",
    "bench_program",
    "block_copy_argv",
    "cgroup_cpu_argv",
    "chart_series",
    "cipher_argv",
    "copy_overlap",
    "cpu_delta",
    "delta_argv",
    "extra_pv_size",
    "files_disk_size",
    "files_growth",
    "files_methods",
    "files_rows",
    "files_section",
    "get_scale",
    "growth_per_files",
    "io_delta",
    "load_bench_domain",
    "measurement",
    "method_targets",
    "net_delta",
    "node_xml",
    "overhead_ratios",
    "parallel_rsync_argv",
    "parse_block_stat",
    "parse_cgroup_cpu",
    "parse_dd",
    "parse_meter",
    "parse_net_dev",
    "parse_proc_io",
    "parse_pv_names",
    "parse_toolkit_report",
    "peer_lvs",
    "plan_methods",
    "plan_workloads",
    "program_argv",
    "render_table",
    "run_program",
    "scaled_recipe_data",
    "snapshot_lifetimes",
    "snapshot_window",
    "space_needed",
    "toolkit_phases",
    "write_chart",
    "write_outputs",
]
