"""The benchmark's pure parts: parsers of recorded counters, figures, table, chart, recipes.

The bench program (meter, delta copy, churn, scan, large files) also runs here, on files
and directories of this host through LocalRunner, with no ssh in between. What needs the
lab (LVM, kpartx, the toolkit's run, ssh between the fake Dom0s) is not tested here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from toolkit.config import parse_config
from toolkit.errors import ConfigError, ParseError, UsageError
from toolkit.facts.virsh import parse_domain_disks
from toolkit.lab import bench as b
from toolkit.lab.bench import (
    MIB,
    BenchDisk,
    BlockStat,
    Counters,
    GuestCost,
    Measurement,
    MeterResult,
    PointCost,
    Ratio,
    Side,
    StepResult,
    bench_command,
    bench_config,
    bench_disks,
    bench_document,
    block_copy_argv,
    chart_series,
    copy_overlap,
    delta_argv,
    extra_pv_size,
    load_bench_domain,
    measurement,
    node_xml,
    overhead_ratios,
    parse_block_stat,
    parse_cgroup_cpu,
    parse_dd,
    parse_meter,
    parse_net_dev,
    parse_proc_io,
    parse_pv_names,
    parse_toolkit_report,
    plan_workloads,
    render_table,
    scaled_recipe_data,
    snapshot_window,
    space_needed,
    toolkit_phases,
    write_chart,
    write_outputs,
)
from toolkit.lab.guests import (
    load_domain,
    plan_layout,
    render_fstab,
    stage_tree,
)
from toolkit.report import DomainReport, FilesystemReport, RunReport, SnapshotReport
from toolkit.rsync import BASE_ARGS, parse_stats
from toolkit.runners import LocalRunner

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "fixtures" / "guests"
STATS_FIRST = (ROOT / "fixtures" / "recorded" / "rsync" / "stats-first.txt").read_text()
RUNNER = LocalRunner()
SSH = ["ssh", "-i", "/etc/domu-backup/id_ed25519", "-o", "BatchMode=yes"]

# -- recorded outputs (Debian 12 cloud kernel 6.1 and this project's machines) ------------

PROC_IO = """\
rchar: 6976
wchar: 0
syscr: 10
syscw: 0
read_bytes: 0
write_bytes: 0
cancelled_write_bytes: 0
"""
PROC_IO_AFTER = """\
rchar: 275103522
wchar: 268437873
syscr: 67211
syscw: 4205
read_bytes: 268439552
write_bytes: 268435456
cancelled_write_bytes: 4096
"""
# /sys/block/loopN/stat on 6.x: 17 fields (reads, merges, sectors, ticks, writes, ...).
LOOP_STAT = ("   18710      704  1076186     1207     3529    13401  2126520     1693        0     "
             "1848     3529       56        0  6815792        3      502      625\n")
LOOP_STAT_AFTER = ("   19734      704  1338330     1391     4553    13401  2388664     2051      "
                   "  0     2008     3889       56        0  6815792        3      502      625\n")
# Kernels before 4.18 print 11 fields.
OLD_STAT = "     394      120    11850      640      222       89     2480      396        0  " \
           "    780     1036\n"
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1200      12    0    0    0     0          0         0     1200      12    0    0    0     0       0          0
  eth0: 1095344115   33318    0    0    0     0          0         0  1981908   25814    0    0    0     0       0          0
"""  # noqa: E501
NET_DEV_AFTER = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    9999      99    0    0    0     0          0         0     9999      99    0    0    0     0       0          0
  eth0: 1095844115   35318    0    0    0     0          0         0 270417364   61814    0    0    0     0       0          0
"""  # noqa: E501
CPU_STAT_V2 = """\
usage_usec 8123456
user_usec 5123456
system_usec 3000000
nr_periods 0
nr_throttled 0
throttled_usec 0
nr_bursts 0
burst_usec 0
"""
CPU_STAT_V2_AFTER = CPU_STAT_V2.replace("usage_usec 8123456", "usage_usec 20623456")
CPUACCT_V1 = "12792098114347\n"
DD_DIRECT = ("128+0 records in\n128+0 records out\n"
             "134217728 bytes (134 MB, 128 MiB) copied, 1.28017 s, 105 MB/s\n")
DD_TINY = "0+0 records in\n0+0 records out\n0 bytes copied, 1.7909e-05 s, 0.0 kB/s\n"
PVS = "  /dev/loop3\n  /dev/loop7\n"


def _toolkit_report(*, phases: dict[str, float], filesystems: list[FilesystemReport],
                    exit_code: int = 0) -> str:
    """A ``backup --json`` report made with the engine's own dataclasses (same schema)."""
    dom = DomainReport(domain="bench01", run_id="20260101T000000Z-abcd", source_host="dom0-a",
                       peer_host="dom0-b", outcome="success" if not exit_code else "failed",
                       exit_code=exit_code, phases=phases, filesystems=filesystems,
                       snapshots=[SnapshotReport("domubk-x-bench01-xvda", "vg_a/bench01_xvda",
                                                 size_bytes=104857600, fill_percent=0.4)])
    return RunReport(host="dom0-a", exit_code=exit_code, domains=[dom]).to_json()


PHASES = {"preflight": 1.2, "snapshot": 0.8, "map": 0.3, "mount": 0.5, "peer": 1.1,
          "guards": 0.4, "marker": 0.2, "rsync": 20.0, "teardown": 1.5}
TWO_FS = [FilesystemReport("xvda1", "/", "ext4", "copied", bytes_sent=150 * MIB,
                           bytes_received=20000, duration=14.0),
          FilesystemReport("xvda2", "/var", "ext4", "copied", bytes_sent=50 * MIB,
                           bytes_received=8000, duration=6.0)]


def _meter(steps: list[StepResult], *, wall: float = 27.0,
           seen: dict[str, tuple[float, float]] | None = None) -> MeterResult:
    before = Counters(PROC_IO, NET_DEV, CPU_STAT_V2, {"loop3": LOOP_STAT, "loop7": OLD_STAT})
    after = Counters(PROC_IO_AFTER, NET_DEV_AFTER, CPU_STAT_V2_AFTER,
                     {"loop3": LOOP_STAT_AFTER, "loop7": OLD_STAT})
    return MeterResult(0, wall, tuple(steps), 3.5, 2.25, 48000, seen or {}, before, after)


# -- parsers ---------------------------------------------------------------------------------

def test_proc_io_reads_every_counter() -> None:
    io = parse_proc_io(PROC_IO_AFTER)
    assert io["read_bytes"] == 268439552 and io["write_bytes"] == 268435456
    assert io["cancelled_write_bytes"] == 4096
    with pytest.raises(ParseError):
        parse_proc_io("read_bytes: lots\n")


@pytest.mark.parametrize(("text", "read", "written"), [
    (LOOP_STAT, 1076186 * 512, 2126520 * 512),
    (OLD_STAT, 11850 * 512, 2480 * 512),
])
def test_block_stat_reads_sectors_of_17_and_11_field_kernels(text: str, read: int,
                                                             written: int) -> None:
    assert parse_block_stat(text) == BlockStat(read, written)


@pytest.mark.parametrize("bad", ["", "1 2 3", "a b c d e f g h i j k"])
def test_block_stat_refuses_what_is_not_one(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_block_stat(bad)


@given(st.lists(st.integers(0, 2**63), min_size=11, max_size=17))
def test_block_stat_fields_3_and_7_are_sectors(fields: list[int]) -> None:
    stat_ = parse_block_stat(" ".join(f"{n:>8}" for n in fields) + "\n")
    assert stat_ == BlockStat(fields[2] * 512, fields[6] * 512)


def test_net_dev_reads_received_and_sent_bytes_per_interface() -> None:
    assert parse_net_dev(NET_DEV) == {"lo": (1200, 1200), "eth0": (1095344115, 1981908)}


_IFACE = st.text("abcdefghijklmnopqrstuvwxyz0123456789_.-@", min_size=1, max_size=15)


@given(st.dictionaries(_IFACE, st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
                       max_size=6))
def test_net_dev_round_trip(counters: dict[str, tuple[int, int]]) -> None:
    lines = NET_DEV.splitlines()[:2]
    for name, (rx, tx) in counters.items():
        lines.append(f"{name:>6}: {rx} 10 0 0 0 0 0 0 {tx} 12 0 0 0 0 0 0")
    assert parse_net_dev("\n".join(lines) + "\n") == counters


@pytest.mark.parametrize(("text", "seconds"), [
    (CPU_STAT_V2, 8.123456), (CPUACCT_V1, 12792.098114347),
])
def test_cgroup_cpu_reads_v2_cpu_stat_and_v1_cpuacct(text: str, seconds: float) -> None:
    assert parse_cgroup_cpu(text) == pytest.approx(seconds)


def test_cgroup_cpu_is_read_from_the_first_file_there(tmp_path: Path) -> None:
    v1 = tmp_path / "cpuacct.usage"
    v1.write_text(CPUACCT_V1)
    argv = b.cgroup_cpu_argv([str(tmp_path / "cpu.stat"), str(v1), str(v1)])
    assert parse_cgroup_cpu(RUNNER.run(argv).stdout) == pytest.approx(12792.098114347)
    assert RUNNER.run(b.cgroup_cpu_argv([str(tmp_path / "none")])).stdout == ""


def test_cgroup_cpu_refuses_anything_else() -> None:
    with pytest.raises(ParseError):
        parse_cgroup_cpu("nr_periods 0\n")


@pytest.mark.parametrize(("text", "nbytes", "seconds"), [
    (DD_DIRECT, 134217728, 1.28017),
    (DD_TINY, 0, 1.7909e-05),
    ("67108864 bytes (67 MB, 64 MiB) copied, 0.0483069 s, 1.4 GB/s\n", 67108864, 0.0483069),
])
def test_dd_closing_line(text: str, nbytes: int, seconds: float) -> None:
    res = parse_dd(text)
    assert (res.bytes, res.seconds) == (nbytes, pytest.approx(seconds))


def test_dd_rate_in_mib_per_second() -> None:
    assert parse_dd(DD_DIRECT).mib_per_s == pytest.approx(128 / 1.28017)


@given(st.integers(0, 2**50), st.floats(1e-6, 1e5, allow_nan=False))
def test_dd_any_size_and_time(nbytes: int, seconds: float) -> None:
    text = f"1+0 records in\n1+0 records out\n{nbytes} bytes (x) copied, {seconds:g} s, 1 MB/s\n"
    res = parse_dd(text)
    assert res.bytes == nbytes and res.seconds == pytest.approx(float(f"{seconds:g}"))


def test_dd_without_its_closing_line_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_dd("dd: failed to open '/dev/vg_a/x': No such file or directory\n")


def test_pv_names_are_kernel_names() -> None:
    assert parse_pv_names(PVS) == ["loop3", "loop7"]
    with pytest.raises(ParseError):
        parse_pv_names("  [unknown]\n")


def test_toolkit_report_gives_phases_copies_and_fill() -> None:
    run = parse_toolkit_report(_toolkit_report(phases=PHASES, filesystems=TWO_FS))
    assert run.exit_code == 0 and run.outcome == "success"
    assert run.phases == PHASES
    assert [(f.name, f.duration, f.bytes_sent) for f in run.filesystems] == [
        ("xvda1", 14.0, 150 * MIB), ("xvda2", 6.0, 50 * MIB)]
    assert run.snapshot_fill == 0.4


@pytest.mark.parametrize("bad", ["", "error: domain bench01 is not defined", "{}", "[1]"])
def test_toolkit_output_without_a_report_is_a_parse_error(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_toolkit_report(bad)


def test_meter_result_round_trip_and_garbage() -> None:
    raw = {"exit_code": 0, "wall": 2.5, "user": 1.0, "system": 0.5, "maxrss_kib": 9000,
           "steps": [{"argv0": "rsync", "exit_code": 0, "wall": 2.4, "hwm_kib": 7000,
                      "stdout": STATS_FIRST, "stderr": ""}],
           "dm_seen": {"vg_a-domubk--x-cow": [10.0, 12.5]},
           "before": {"proc_io": PROC_IO, "net_dev": NET_DEV, "cgroup_cpu": None,
                      "block": {"loop3": LOOP_STAT}},
           "after": {"proc_io": PROC_IO_AFTER, "net_dev": NET_DEV_AFTER, "cgroup_cpu": None,
                     "block": {"loop3": None}}}
    res = parse_meter("noise\n" + json.dumps(raw) + "\n")
    assert res.steps[0].argv0 == "rsync" and res.steps[0].hwm_kib == 7000
    assert res.dm_seen == {"vg_a-domubk--x-cow": (10.0, 12.5)}
    assert res.after.block == {"loop3": None}
    with pytest.raises(ParseError):
        parse_meter("Traceback (most recent call last):\n")


# -- figures -----------------------------------------------------------------------------------

def test_toolkit_phases_keep_run_order_and_add_the_rest_as_other() -> None:
    run = parse_toolkit_report(_toolkit_report(phases={"rsync": 20.0, "preflight": 1.0,
                                                       "future": 0.5, "recover": 0.5},
                                               filesystems=[]))
    phases = toolkit_phases(run, wall=25.0)
    assert list(phases) == ["preflight", "recover", "rsync", "future", "other"]
    assert phases["other"] == 3.0
    assert toolkit_phases(run, wall=1.0)["other"] == 0.0


def test_snapshot_window_is_everything_after_preflight_and_the_recover_check() -> None:
    phases = {"preflight": 1.2, "recover": 0.7, **PHASES, "other": 2.0}
    assert snapshot_window(phases) == pytest.approx(sum(PHASES.values()) - 1.2)


@pytest.mark.parametrize(("phase", "durations", "mode"), [
    (20.0, [14.0, 6.0], "sequential"),
    (14.5, [14.0, 13.0], "parallel"),
    (9.0, [9.0], "single"),
])
def test_copy_overlap_tells_sequential_from_parallel(phase: float, durations: list[float],
                                                     mode: str) -> None:
    assert copy_overlap(phase, durations).mode == mode


def test_toolkit_measurement_from_meter_and_report() -> None:
    step = StepResult("domu-backup", 0, 26.5, 61440,
                      _toolkit_report(phases=PHASES, filesystems=TWO_FS), "")
    seen = {"vg_a-domubk--20260101T000000Z--abcd--bench01--xvda-cow": (100.0, 124.75)}
    m = measurement("full", "toolkit", "bench01", _meter([step], seen=seen),
                    source_devices=["loop3"], peer_devices=["loop7"],
                    peer_cpu=(CPUACCT_V1, "12800098114347\n"), changed_bytes=200 * MIB,
                    caches_dropped=True)
    assert m.phases["rsync"] == 20.0 and m.phases["other"] == pytest.approx(0.5)
    assert m.rsync_sent == 200 * MIB and m.rsync_received == 28000
    assert m.wire_received == 500000 and m.wire_sent == 270417364 - 1981908
    assert m.wire_per_changed == pytest.approx((500000 + 268435456) / (200 * MIB), abs=1e-3)
    assert m.source == Side((1338330 - 1076186) * 512, (2388664 - 2126520) * 512, 12.5)
    assert m.peer == Side(0, 0, pytest.approx(8.0))
    assert m.cpu_seconds == pytest.approx(20.5)
    assert m.peak_rss_kib == 61440 and m.tree_maxrss_kib == 48000
    assert m.snapshot_seconds == {next(iter(seen)): 24.75}
    assert m.tree_io == (268439552, 268435456)
    assert m.notes and "sequentially" in m.notes[0]
    json.dumps(m.to_dict())


def test_bare_rsync_measurement_sums_rsync_stats_and_splits_the_flush() -> None:
    steps = [StepResult("rsync", 0, 10.0, 3000, STATS_FIRST, ""),
             StepResult("rsync", 0, 5.0, 3000, STATS_FIRST, ""),
             StepResult("ssh", 0, 0.5, 2000, "", "")]
    m = measurement("churn", "bare-rsync", "bench01", _meter(steps, wall=15.6),
                    source_devices=["loop3"], peer_devices=["loop7"], peer_cpu=(None, None),
                    changed_bytes=0, caches_dropped=False)
    assert m.phases == {"rsync": 15.0, "flush": 0.5}
    assert m.rsync_sent == 2 * 1278269 and m.rsync_received == 2 * 976
    assert m.peer.cpu_seconds is None and m.cpu_seconds == pytest.approx(5.75)
    assert m.wire_per_changed is None


def test_block_methods_have_one_phase_and_unreadable_counters_give_none() -> None:
    meter = _meter([StepResult("bash", 0, 30.0, 1000, "", "")])
    meter = replace(meter, after=replace(meter.after, net_dev=None, block={"loop3": None}))
    m = measurement("full", "block-copy", "bench01", meter, source_devices=["loop3"],
                    peer_devices=[], peer_cpu=(None, None), changed_bytes=1, caches_dropped=True)
    assert m.phases == {"copy": 30.0}
    assert m.wire_bytes is None and m.source.read_bytes is None
    assert m.peer.read_bytes == 0  # no device on that side: nothing counted


def _m(workload: str, method: str, wall: float, code: int = 0) -> Measurement:
    return Measurement(workload, method, "bench01", code, wall, {"rsync": wall}, 1.0, 1.0,
                       Side(MIB, 0, None), Side(0, MIB, None), 10 * MIB, 100 * MIB,
                       100 * MIB, 0, 50 * MIB, 40960, 50000)


def test_ratios_per_workload_with_the_target_on_full_and_churn() -> None:
    results = [_m("full", "toolkit", 11.0), _m("full", "bare-rsync", 10.0),
               _m("nochange", "toolkit", 3.0), _m("nochange", "bare-rsync", 1.0),
               _m("churn", "toolkit", 5.0), _m("churn", "bare-rsync", 4.0),
               _m("twodisk", "toolkit", 9.0, code=40), _m("twodisk", "bare-rsync", 8.0)]
    ratios = {r.workload: r for r in overhead_ratios(results)}
    assert set(ratios) == {"full", "nochange", "churn"}
    assert ratios["full"].value == 1.1 and ratios["full"].met is True
    assert ratios["nochange"].target is None and ratios["nochange"].met is None
    assert ratios["churn"].met is False
    assert Ratio("x", 1.0, 0.0, 1.1).value is None


def test_point_cost_ratios_are_against_the_first_rate_of_each_kind_of_lv() -> None:
    cost = PointCost(128, (("thick LV, no point", 100.0), ("thick LV, 1 classic point", 40.0),
                           ("thick LV, 2 classic points", 25.0), ("thin LV, no point", 80.0),
                           ("thin LV, 1 thin point", 60.0)))
    assert cost.ratios() == [("thick LV, no point", 1.0), ("thick LV, 1 classic point", 0.4),
                             ("thick LV, 2 classic points", 0.25), ("thin LV, no point", 1.0),
                             ("thin LV, 1 thin point", 0.75)]
    text = render_table([], (), None, (), cost)
    assert "standby writes (128 MiB, oflag=direct), thick LV, 2 classic points: 25.0 MiB/s " \
           "(x0.25)" in text
    doc = bench_document({}, [], None, None, (), cost)
    assert doc["restore_point_cost"]["rates"][4] == {"what": "thin LV, 1 thin point",
                                                     "mib_s": 60.0, "ratio": 0.75}
    assert bench_document({}, [], None)["restore_point_cost"] is None


def test_space_for_the_points_workload() -> None:
    from toolkit.lab.bench.workloads import SCALES

    scale = SCALES["small"]
    without = space_needed([], scale, guest=False)
    with_points = space_needed([], scale, guest=False, points=True)
    assert with_points["vg_a"] - without["vg_a"] >= 5 * scale.scratch_mib * MIB


def test_guest_cost_slowdown_against_the_mean_without() -> None:
    assert GuestCost(128, (100.0, 80.0), 45.0).slowdown == 0.5
    assert GuestCost(128, (), 45.0).slowdown is None


def test_table_has_a_row_per_measurement_and_the_verdicts() -> None:
    results = [_m("full", "toolkit", 11.0), _m("full", "bare-rsync", 10.0),
               _m("full", "block-copy", 20.0, code=255)]
    text = render_table(results, overhead_ratios(results), GuestCost(128, (100.0, 90.0), 30.0))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["workload", "method", "wall"]
    assert lines[2].split()[:3] == ["full", "toolkit", "11.0"]
    assert lines[2].split()[-1] == "1.10"
    assert "block-copy (exit 255)" in text
    assert "toolkit/bare-rsync full: 1.10 (target <= 1.10: met)" in text
    assert "x0.32" in text


def test_chart_series_stacks_toolkit_phases_first() -> None:
    t = replace(_m("full", "toolkit", 5.0), phases={"rsync": 4.0, "preflight": 1.0})
    f = replace(_m("full", "bare-rsync", 4.5), phases={"rsync": 4.0, "flush": 0.5})
    labels, phases, values = chart_series([t, f])
    assert labels == ["full / toolkit", "full / bare-rsync"]
    assert phases == ["preflight", "rsync", "flush"]
    assert values == [[1.0, 0.0], [4.0, 4.0], [0.0, 0.5]]


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    assert write_chart(path, [_m("full", "toolkit", 5.0), _m("full", "bare-rsync", 4.0)], "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outputs_are_json_table_and_chart(tmp_path: Path) -> None:
    results = [_m("full", "toolkit", 11.0), _m("full", "bare-rsync", 10.0)]
    doc = bench_document({"command": "invoke bench --scale small"}, results, None)
    written = write_outputs(tmp_path / "out", doc, results, render_table(results), "t")
    names = {p.name for p in written}
    assert {"bench.json", "table.txt"} <= names
    loaded = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert loaded["ratios"][0] == {"workload": "full", "method": "toolkit", "toolkit_wall": 11.0,
                                   "bare_wall": 10.0, "ratio": 1.1, "target": 1.1, "met": True}
    assert loaded["results"][0]["wire_bytes"] == 110 * MIB
    assert loaded["guest_cost"]["snapshot_seconds"]["full"]["from_phases"] == 11.0


# -- workloads, recipes, sizes ---------------------------------------------------------------

def test_workloads_default_to_all_in_order() -> None:
    plan = plan_workloads("")
    # the README's workloads, written out: not read back from the table plan_workloads uses
    assert [w.name for w in plan] == ["full", "nochange", "churn", "twodisk", "guest", "cipher",
                                      "points", "pointchurn", "files"]
    assert all(w.requested for w in plan)
    assert bench_command("small", plan) == "invoke bench --scale small"


def test_a_workload_brings_the_one_it_needs_first() -> None:
    plan = plan_workloads(" churn , guest")
    assert [(w.name, w.requested) for w in plan] == [("full", False), ("churn", True),
                                                     ("guest", True)]
    assert bench_command("large", plan) == "invoke bench --scale large --workloads churn,guest"


def test_methods_default_to_all_and_a_subset_keeps_their_order() -> None:
    assert b.plan_methods("") == ("toolkit", "toolkit-parallel", "plain-script", "bare-rsync",
                                  "bare-parallel", "block-delta", "block-copy")
    chosen = b.plan_methods("bare-rsync, toolkit")
    assert chosen == ("toolkit", "bare-rsync")
    plan = plan_workloads("full")
    assert bench_command("large", plan, chosen) == (
        "invoke bench --scale large --workloads full --methods toolkit,bare-rsync")
    with pytest.raises(UsageError, match="rsync-fast"):
        b.plan_methods("toolkit,rsync-fast")


def test_only_the_chosen_methods_targets_are_written(tmp_path: Path) -> None:
    bench = object.__new__(b.Bench)
    disk = BenchDisk("bench01", "xvda", 512 * MIB)
    bench.methods = b.plan_methods("toolkit,bare-parallel,block-copy")
    assert bench._standby_targets(disk) == ("/dev/vg_b/bench01_xvda", "/dev/vg_b/bench01_xvda_par")
    bench.methods = b.METHODS
    assert bench._standby_targets(disk) == (disk.standby_lv, disk.standby_parallel_lv,
                                            disk.plain_lv, disk.bare_lv, disk.par_lv)


def test_unknown_workload_or_scale_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="fast"):
        plan_workloads("full,fast")
    with pytest.raises(UsageError):
        b.get_scale("huge")


def test_bench_recipes_load_and_validate() -> None:
    one = load_domain(GUESTS / "bench01.toml")
    assert [d.device for d in one.disks] == ["xvda"]
    disk = one.disks[0]
    assert disk.table == "dos" and [p.mount for p in disk.partitions] == ["/", "/var"]
    assert [p.fs for p in disk.partitions] == ["ext4", "ext4"]
    assert "UUID=5eedbe01-0000-4000-8000-000000000002\t/var" in render_fstab(disk)
    two = load_domain(GUESTS / "bench02.toml")
    assert [d.device for d in two.disks] == ["xvda", "xvdb"]
    assert [p.mount for d in two.disks for p in d.partitions] == ["/", "/srv"]


@pytest.mark.parametrize("scale", list(b.SCALES))
def test_scaled_recipes_multiply_every_size_and_still_validate(scale: str) -> None:
    sc = b.SCALES[scale]
    for name in ("bench01", "bench02"):
        plain = load_domain(GUESTS / f"{name}.toml")
        scaled = load_bench_domain(ROOT, name, sc)
        for d0, d1 in zip(plain.disks, scaled.disks, strict=True):
            assert d1.size == d0.size * sc.disk_factor
            fixed = [e.size for e in plan_layout(d0)][:-1]
            assert [e.size for e in plan_layout(d1)][:-1] == [s * sc.disk_factor for s in fixed]
            # the LVs are made in whole MiB and 4 MiB extents
            assert d1.size % (4 * MIB) == 0


def test_scaling_leaves_the_recipe_data_alone() -> None:
    data = {"size": "512M", "partitions": [{"size": "384M"}, {"fs": "ext4"}]}
    out = scaled_recipe_data(data, 4)
    assert out == {"size": "2048M", "partitions": [{"size": "1536M"}, {"fs": "ext4"}]}
    assert data["size"] == "512M"


def test_bench01_trees_fit_their_partitions_at_both_scales(tmp_path: Path) -> None:
    # The build refuses a tree that does not fit; estimate as it does, from one staged tree.
    one = load_domain(GUESTS / "bench01.toml").disks[0]
    summary, _ = stage_tree(RUNNER, one, 2, str(tmp_path / "var"), scale=1, as_user=True)
    per_unit = summary.allocated_bytes
    for sc in b.SCALES.values():
        var = plan_layout(load_bench_domain(ROOT, "bench01", sc).disks[0])[1].size
        need = per_unit * sc.tree + summary.entries * sc.tree * 256 + var // 10 + 4 * MIB
        assert need < var, f"{sc.name}: /var tree needs ~{need // MIB} MiB of {var // MIB}"
        root = plan_layout(load_bench_domain(ROOT, "bench01", sc).disks[0])[0].size
        assert need + sc.large_files * sc.large_file_mib * MIB < root * 0.8


def test_bench01_stages_at_the_small_scale_with_a_few_thousand_files(tmp_path: Path) -> None:
    # The image build itself (sfdisk, mkfs, as root) is proven in the lab
    # (tests/e2e/test_guest_images.py); here its layout and the trees it would hold.
    sc = b.SCALES["small"]
    disk = load_bench_domain(ROOT, "bench01", sc).disks[0]
    layout = plan_layout(disk)
    parts = [disk.partition(e.number) for e in layout]
    assert [(p.fs, p.mount) for p in parts] == [("ext4", "/"), ("ext4", "/var")]
    trees = [stage_tree(RUNNER, disk, p.number, str(tmp_path / str(p.number)), scale=sc.tree,
                        as_user=True)[0] for p in parts]
    assert 3000 < sum(t.files for t in trees) < 10000
    # The large files go into root later: they must fit beside its tree.
    assert trees[0].allocated_bytes + sc.large_files * sc.large_file_mib * MIB < \
        layout[0].size * 0.8


def test_disks_and_their_lvs() -> None:
    disks = bench_disks(load_bench_domain(ROOT, "bench02", b.SCALES["small"]))
    assert [d.lv_name for d in disks] == ["bench02_xvda", "bench02_xvdb"]
    d = disks[1]
    assert (d.source_lv, d.standby_lv, d.bare_lv, d.block_lv) == (
        "/dev/vg_a/bench02_xvdb", "/dev/vg_b/bench02_xvdb", "/dev/vg_b/bench02_xvdb_bare",
        "/dev/vg_b/bench02_xvdb_blk")
    # No name the toolkit's recover sweep could take for its own.
    assert all("domubk" not in x for x in (d.source_lv, d.bare_lv, b.MOUNT_ROOT, b.BENCH_DIR))


def test_space_needed_and_the_extra_pv() -> None:
    disks = [BenchDisk("bench01", "xvda", 512 * MIB), BenchDisk("bench02", "xvda", 256 * MIB),
             BenchDisk("bench02", "xvdb", 256 * MIB)]
    sc = b.SCALES["small"]
    need = space_needed(disks, sc, guest=True)
    # The largest domain's snapshots (20% of 512 MiB) plus 8 MiB each for rounding.
    assert need["vg_a"] == 1024 * MIB + int(512 * MIB * 0.2) + 24 * MIB + 64 * MIB + 512 * MIB
    # the standby, toolkit-parallel's, plain-script's, bare-rsync's, bare-parallel's and the
    # block targets
    assert need["vg_b"] == 6 * 1024 * MIB + 64 * MIB
    assert space_needed(disks, sc, guest=False)["vg_a"] == need["vg_a"] - 512 * MIB
    assert extra_pv_size(need["vg_b"], 7168 * MIB) == 0
    size = extra_pv_size(need["vg_b"], 1700 * MIB)
    assert size % (256 * MIB) == 0 and size >= need["vg_b"] - 1700 * MIB + 64 * MIB


def test_extra_pv_is_swept_by_sandbox_down() -> None:
    from toolkit.lab.sandbox import LoopDevice, is_sandbox_pv

    for host in ("dom0-a", "dom0-b"):
        assert is_sandbox_pv(LoopDevice("/dev/loop9", f"{b.EXTRA_PV_DIR}/{host}.pv"))


def test_config_is_valid_and_names_every_standby(tmp_path: Path) -> None:
    domains = {n: bench_disks(load_bench_domain(ROOT, n, b.SCALES["small"]))
               for n in ("bench01", "bench02")}
    text = bench_config(domains, key="/etc/domu-backup/id_ed25519",
                        known_hosts="/etc/domu-backup/known_hosts")
    cfg = parse_config(text, tmp_path / "bench.toml")
    assert cfg.hypervisor_uri == "test:///etc/domu-backup/bench-node.xml"
    assert set(cfg.domains) == {"bench01", "bench02"}
    assert cfg.domain("bench02").peer == "dom0-b"
    assert {k: v.standby_lv for k, v in cfg.domain("bench02").disks.items()} == {
        "xvda": "/dev/vg_b/bench02_xvda", "xvdb": "/dev/vg_b/bench02_xvdb"}
    assert cfg.defaults.report_dir == b.REPORT_DIR
    assert cfg.defaults.copy_jobs == 1
    with pytest.raises(ConfigError):
        parse_config(text + "[domains.bench01.oops]\n", tmp_path / "bench.toml")
    # toolkit-parallel's config: the same guests, copied side by side onto their own LVs
    par = parse_config(bench_config(domains, key="/etc/domu-backup/id_ed25519",
                                    known_hosts="/etc/domu-backup/known_hosts", copy_jobs=2),
                       tmp_path / "bench-parallel.toml")
    assert par.defaults.copy_jobs == 2
    assert {k: v.standby_lv for k, v in par.domain("bench02").disks.items()} == {
        "xvda": "/dev/vg_b/bench02_xvda_tkp", "xvdb": "/dev/vg_b/bench02_xvdb_tkp"}


@pytest.mark.parametrize(("vg", "running", "state"), [("vg_a", True, "1"), ("vg_b", False, "5")])
def test_node_xml_declares_each_guest_with_its_disks(vg: str, running: bool, state: str) -> None:
    domains = {n: bench_disks(load_bench_domain(ROOT, n, b.SCALES["small"]))
               for n in ("bench01", "bench02")}
    node = etree.fromstring(node_xml(domains, vg, running=running).encode())
    ns = {"test": "http://libvirt.org/schemas/domain/test/1.0"}
    found = {}
    for dom in node.findall("domain"):
        assert dom.findtext("test:runstate", namespaces=ns) == state
        disks = parse_domain_disks(etree.tostring(dom).decode())
        found[dom.findtext("name")] = [(d.target, d.source, d.skip_reason) for d in disks]
    assert found == {
        "bench01": [("xvda", f"/dev/{vg}/bench01_xvda", None)],
        "bench02": [("xvda", f"/dev/{vg}/bench02_xvda", None),
                    ("xvdb", f"/dev/{vg}/bench02_xvdb", None)]}


# -- argv of the measured commands ------------------------------------------------------------

def test_bare_rsync_is_the_toolkits_rsync_options_and_nothing_else() -> None:
    argv = b.bare_rsync_argv("/run/domu-bench/xvda-bs/1", "/run/domu-bench/xvda-bt/1/", SSH)
    assert argv[:len(BASE_ARGS) + 1] == ["rsync", *BASE_ARGS]
    assert "--stats" in argv and "--info=progress2" not in argv
    assert argv[argv.index("-e") + 1] == shlex.join(SSH)
    assert argv[-3:] == ["--", "/run/domu-bench/xvda-bs/1/",
                         "root@dom0-b:/run/domu-bench/xvda-bt/1/"]


def test_block_commands_read_the_device_and_write_the_peers_in_place() -> None:
    argv = delta_argv("/dev/vg_a/x", "/dev/mapper/vg_b-x", SSH)
    assert argv[0] == "rsync" and argv[argv.index("-e") + 1] == shlex.join(SSH)
    assert {"--copy-devices", "--write-devices", "--inplace", "--no-whole-file", "-I",
            "--stats"} <= set(argv)
    assert argv[-3:] == ["--", "/dev/vg_a/x", "root@dom0-b:/dev/mapper/vg_b-x"]
    copy_argv = block_copy_argv("/dev/vg_a/x", "/dev/vg_b/x", [*SSH, "root@dom0-b"])
    assert copy_argv[:2] == ["bash", "-c"] and copy_argv[2].startswith("set -o pipefail; dd ")


# -- the bench program, run on this host -------------------------------------------------------

@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("prog") / "bench_program.py"
    path.write_text(b.bench_program())
    return str(path)


def _run(program: str, spec: dict) -> dict:
    return b.run_program(RUNNER, spec, timeout=300, program=program)


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def test_block_copy_pipeline_copies_the_whole_device(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.img", tmp_path / "dst.img"
    _write(src, os.urandom(5 * MIB + 512))
    _write(dst, b"")
    RUNNER.run(block_copy_argv(str(src), str(dst), []), timeout=300)
    assert dst.read_bytes() == src.read_bytes()
    bad = block_copy_argv(str(tmp_path / "missing"), str(dst), [])
    assert RUNNER.run(bad, check=False, timeout=300).exit_code != 0  # pipefail


def test_meter_times_steps_and_takes_counters(tmp_path: Path, program: str) -> None:
    devices = [d for d in ("loop0", "vda", "sda") if Path(f"/sys/block/{d}/stat").exists()]
    out = tmp_path / "out.bin"
    spec = {"op": "meter", "poll": 0.05, "devices": devices, "cgroup_cpu": b.CGROUP_CPU_FILES,
            "watch_dm": None,
            # the allocation is held a second: peak memory is sampled every 50 ms
            "steps": [["python3", "-c",
                       "import time; x = b'x' * (64 << 20); time.sleep(1); print('hello')"],
                      ["sh", "-c", f"head -c 3000000 /dev/zero > {out} && sync {out}"],
                      ["sh", "-c", "echo oops >&2; exit 3"], ["true"]]}
    res = parse_meter(RUNNER.run(b.program_argv(spec, program), timeout=300).stdout)
    assert res.exit_code == 3 and len(res.steps) == 3  # stops at the failing step
    assert res.steps[0].stdout == "hello\n" and res.steps[0].argv0 == "python3"
    assert res.steps[0].hwm_kib > 60 * 1024
    assert res.maxrss_kib >= 60 * 1024
    assert res.steps[2].stderr == "oops\n"
    assert res.wall >= sum(s.wall for s in res.steps) and res.user + res.system > 0
    delta = b.io_delta(res.before.proc_io, res.after.proc_io)
    if delta is not None:  # /proc/self/io needs task I/O accounting in the kernel
        assert delta[1] >= 3000000  # the shell's writes count for the meter once reaped
    for dev in devices:
        assert res.before.block[dev] is not None and res.after.block[dev] is not None
    assert b.net_delta(res.before.net_dev, res.after.net_dev) is not None
    if res.before.cgroup_cpu is not None:
        assert b.cpu_delta(res.before.cgroup_cpu, res.after.cgroup_cpu) > 0


def test_meter_watches_device_mapper_names(tmp_path: Path, program: str) -> None:
    # No snapshot here: the watch finds nothing, and says so with an empty mapping.
    spec = {"op": "meter", "poll": 0.05, "devices": [], "watch_dm": ["vg_a-domubk-", "-cow"],
            "steps": [["sleep", "0.2"]]}
    res = parse_meter(RUNNER.run(b.program_argv(spec, program), timeout=300).stdout)
    assert res.exit_code == 0 and res.dm_seen == {}
    assert b.snapshot_lifetimes({"x-cow": (1.0, 3.5)}) == {"x-cow": 2.5}


def _tree(tmp_path: Path, name: str) -> Path:
    recipe = load_domain(GUESTS / "bench01.toml").disks[0]
    root = tmp_path / name
    stage_tree(RUNNER, recipe, 1, str(root), scale=1, as_user=True)  # no root needed
    return root


def _digest(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = (p.stat().st_size,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_large_files_and_scan(tmp_path: Path, program: str) -> None:
    root = _tree(tmp_path, "root")
    before = _run(program, {"op": "scan", "roots": [str(root)]})
    files = [["data/large/large-00.bin", 3 * MIB], ["data/large/large-01.bin", MIB + 1]]
    out = _run(program, {"op": "large", "root": str(root), "files": files, "seed": 101,
                         "epoch": 1700000000})
    assert out["written"] == 4 * MIB + 1
    after = _run(program, {"op": "scan", "roots": [str(root)]})
    assert after["files"] == before["files"] + 2
    assert after["bytes"] == before["bytes"] + 4 * MIB + 1
    big = root / "data" / "large" / "large-00.bin"
    assert big.stat().st_mtime == 1700000000
    first = hashlib.sha256(big.read_bytes()).hexdigest()
    _run(program, {"op": "large", "root": str(root), "files": files[:1], "seed": 101,
                   "epoch": 1700000000})
    assert hashlib.sha256(big.read_bytes()).hexdigest() == first  # deterministic


def test_churn_changes_about_one_percent_as_it_reports(tmp_path: Path, program: str) -> None:
    root = _tree(tmp_path, "root")
    _run(program, {"op": "large", "root": str(root), "seed": 1, "epoch": 1700000000,
                   "files": [["data/large/large-00.bin", 8 * MIB]]})
    before = _digest(root)
    spec = {"op": "churn", "root": str(root), "seed": 7, "percent": 1.0, "epoch": 1800000000}
    out = _run(program, spec)
    after = _digest(root)

    assert out["appended_file"] == "data/large/large-00.bin"
    assert after[out["appended_file"]][0] == 8 * MIB + out["appended"]
    added = set(after) - set(before)
    deleted = set(before) - set(after)
    changed = {p for p in set(before) & set(after) if before[p] != after[p]}
    assert len(added) == out["added"] and all(p.startswith("bench-churn-7/") for p in added)
    assert sum(after[p][0] for p in added) == out["added_bytes"]
    assert len(deleted) == out["deleted"] and sum(before[p][0] for p in deleted) == \
        out["deleted_bytes"]
    assert changed == {out["appended_file"]} | {p for p in changed if p != out["appended_file"]}
    assert len(changed) == out["modified"] + 1
    assert all(after[p][0] == before[p][0] for p in changed - {out["appended_file"]})
    assert not any(p.startswith("etc/") for p in added | deleted | changed)
    written = out["appended"] + out["modified_bytes"] + out["added_bytes"]
    assert 0.005 * out["data_bytes"] <= written + out["deleted_bytes"] <= 0.015 * out["data_bytes"]
    for p in changed | added:
        assert (root / p).stat().st_mtime == 1800000000


def test_churn_is_deterministic_for_a_tree_and_seed(tmp_path: Path, program: str) -> None:
    trees = [_tree(tmp_path, n) for n in ("a", "b")]
    outs = [_run(program, {"op": "churn", "root": str(t), "seed": 3, "percent": 1.0,
                           "epoch": 1800000000}) for t in trees]
    assert outs[0] == outs[1]
    assert _digest(trees[0]) == _digest(trees[1])


def test_churn_leaves_hard_links_and_special_files_alone(tmp_path: Path, program: str) -> None:
    root = _tree(tmp_path, "root")
    links = [root / "links" / "hard-1", root / "links" / "hard-2", root / "data" / "hard-3"]
    inode = links[0].stat().st_ino
    _run(program, {"op": "churn", "root": str(root), "seed": 5, "percent": 5.0,
                   "epoch": 1800000000})
    assert all(p.stat().st_ino == inode for p in links)
    assert stat.S_ISFIFO((root / "special" / "fifo").lstat().st_mode)


def test_the_program_is_stdlib_only() -> None:
    text = b.bench_program()
    compile(text, "bench_program", "exec")
    imports = [ln for ln in text.splitlines() if ln.startswith(("import ", "from "))]
    assert imports == [f"import {m}" for m in ("json", "os", "random", "resource", "stat",
                                               "subprocess", "sys", "tempfile", "time")]
    assert "toolkit" not in text.replace("toolkit.lab.bench", "")


def test_snapshot_life_is_read_from_the_reports_step_timings():
    from toolkit.lab.bench import snapshot_lives_from_steps

    steps = [
        {"action": "lock", "resource": "/run/lock/x", "started": 0.0, "seconds": 0.0},
        {"action": "snapshot", "resource": "/dev/vg_a/domubk-R-web01-xvda", "started": 1.5,
         "seconds": 0.8},
        {"action": "rsync", "resource": "xvda1", "started": 4.0, "seconds": 20.0},
        {"action": "undo snapshot", "resource": "/dev/vg_a/domubk-R-web01-xvda", "started": 30.0,
         "seconds": 1.25},
    ]
    assert snapshot_lives_from_steps(steps) == {"domubk-R-web01-xvda": 29.75}
    assert snapshot_lives_from_steps(steps[:3]) == {}  # never removed: no figure


def test_cipher_rates_are_ssh_with_each_cipher_and_rendered_against_the_default() -> None:
    argv = b.cipher_argv(SSH, "aes128-gcm@openssh.com", 8)
    assert argv[:2] == ["bash", "-c"]
    producer, client = argv[2].removeprefix("set -o pipefail; ").split(" | ")
    assert producer == f"head -c {8 * MIB} /dev/zero"
    words = shlex.split(client)
    assert words[:3] == [SSH[0], "-c", "aes128-gcm@openssh.com"]
    assert words[3:-2] == SSH[1:] and words[-2:] == ["root@dom0-b", "cat > /dev/null"]
    rates = [b.CipherRate("chacha20-poly1305@openssh.com", 64, 8.0, 9.0),
             b.CipherRate("aes128-gcm@openssh.com", 64, 4.0, 5.0)]
    assert [r.mib_per_s for r in rates] == [8.0, 16.0]
    table = b.render_table([], (), None, rates)
    assert "ssh cipher aes128-gcm@openssh.com: 16.0 MiB/s" in table
    assert "x2.00 of chacha20-poly1305@openssh.com" in table
    doc = b.bench_document({}, [], None, None, rates)
    assert doc["ciphers"][1]["mib_per_s"] == 16.0


def test_step_totals_sum_each_role_and_action_in_first_seen_order():
    from toolkit.lab.bench import step_totals

    steps = [
        {"role": "source", "action": "mount", "resource": "xvda1", "seconds": 0.5},
        {"role": "peer", "action": "mount", "resource": "xvda1", "seconds": 0.75},
        {"role": "source", "action": "mount", "resource": "xvda2", "seconds": 0.25},
        {"role": "source", "action": "undo mount", "resource": "xvda2", "seconds": 2.0},
    ]
    totals = step_totals(steps)
    assert totals == {"source mount": 0.75, "peer mount": 0.75, "source undo mount": 2.0}
    assert list(totals) == ["source mount", "peer mount", "source undo mount"]


def test_toolkit_steps_reach_the_measurement_and_the_table():
    dom = DomainReport(domain="bench01", run_id="R", source_host="dom0-a", peer_host="dom0-b",
                       outcome="success", phases=dict(PHASES), filesystems=list(TWO_FS))
    dom.add_step("source", "snapshot", "/dev/vg_a/s", dom.started + 1.0, 1.5)
    dom.add_step("source", "undo snapshot", "/dev/vg_a/s", dom.started + 20.0, 2.5)
    text = RunReport(host="dom0-a", domains=[dom]).to_json()
    m = b.measurement("full", "toolkit", "bench01",
                      _meter([StepResult("domu-backup", 0, 27.0, 40000, text, "")]),
                      source_devices=["loop3"], peer_devices=["loop7"], peer_cpu=(None, None),
                      changed_bytes=MIB, caches_dropped=True)
    assert m.steps == {"source snapshot": 1.5, "source undo snapshot": 2.5}
    assert "full toolkit steps: source snapshot 1.5s, source undo snapshot 2.5s" in (
        b.render_table([m]))
    assert json.loads(json.dumps(m.to_dict()))["steps"]["source undo snapshot"] == 2.5


def _fake_rsync(tmp_path: Path) -> dict[str, str]:
    """A PATH whose rsync waits for its sibling to start, then prints stats (23 on .../fail/)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "started"
    started.mkdir()
    script = bin_dir / "rsync"
    script.write_text(f"""#!/bin/bash
touch {started}/$$
for i in $(seq 50); do [ "$(ls {started} | wc -l)" -ge 2 ] && break; sleep 0.1; done
[ "$(ls {started} | wc -l)" -ge 2 ] || {{ echo "ran alone" >&2; exit 99; }}
src="${{@: -2:1}}"
echo "Total bytes sent: ${{#src}}00"
echo "Total bytes received: 7"
case "$src" in */fail/*) exit 23;; esac
exit 0
""")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_parallel_rsyncs_run_at_once_and_their_outputs_come_back_apart(tmp_path):
    import subprocess

    env = _fake_rsync(tmp_path)
    argv = b.parallel_rsync_argv([("/run/a/xvda1", "/run/b/xvda1"), ("/run/a/xvda2x", "/b/2")],
                                 ["ssh", "-i", "k"])
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    parts = res.stdout.split(b.PARALLEL_SEPARATOR)
    assert [parse_stats(p).bytes_sent for p in parts] == [1300, 1400]  # 100 x len(source/)
    steps = [StepResult("bash", 0, 5.0, 3000, res.stdout, ""), StepResult("ssh", 0, 0.5, 0, "", "")]
    m = measurement("full", "bare-parallel", "bench01", _meter(steps, wall=5.5),
                    source_devices=["loop3"], peer_devices=["loop7"], peer_cpu=(None, None),
                    changed_bytes=MIB, caches_dropped=True)
    assert (m.rsync_sent, m.rsync_received) == (2700, 14)
    assert m.phases == {"rsync": 5.0, "flush": 0.5}


def test_parallel_rsyncs_fail_with_the_failing_ones_code(tmp_path):
    import subprocess

    env = _fake_rsync(tmp_path)
    argv = b.parallel_rsync_argv([("/run/a/1", "/b/1"), ("/run/fail/2", "/b/2")], ["ssh"])
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 23
    assert res.stdout.count("Total bytes sent") == 2


def test_step_totals_read_a_report_saved_when_steps_named_their_role_host():
    from toolkit.lab.bench import step_totals

    old = [{"host": "peer", "action": "mount", "resource": "xvda1", "seconds": 0.5}]
    assert step_totals(old) == {"peer mount": 0.5}


def test_pointchurn_runs_are_compared_with_the_run_without_a_point() -> None:
    from toolkit.lab.bench.figures import point_churn_ratios

    results = [_m("pointchurn, no point", "toolkit", 20.0),
               _m("pointchurn, 1 classic point", "toolkit", 30.0),
               _m("pointchurn, 3 classic points", "toolkit", 50.0),
               _m("pointchurn, thin standby, 1 thin point", "toolkit", 22.0),
               _m("pointchurn, 3 classic points", "bare-rsync", 9.0),  # not the toolkit's
               _m("churn", "toolkit", 19.0)]
    assert point_churn_ratios(results) == [
        ("pointchurn, no point", 20.0, 1.0), ("pointchurn, 1 classic point", 30.0, 1.5),
        ("pointchurn, 3 classic points", 50.0, 2.5),
        ("pointchurn, thin standby, 1 thin point", 22.0, 1.1)]
    text = render_table(results)
    assert "toolkit churn run with 3 classic points on the standby: 50.0s (x2.50 of no " \
           "point)" in text
    assert bench_document({}, results, None)["point_churn"][1] == {
        "what": "pointchurn, 1 classic point", "toolkit_wall": 30.0, "ratio": 1.5}
    failed = [_m("pointchurn, no point", "toolkit", 20.0, code=1), results[1]]
    assert point_churn_ratios(failed) == [("pointchurn, 1 classic point", 30.0, None)]


def test_the_thin_config_points_every_disk_at_its_thin_standby() -> None:
    from toolkit.lab.bench.workloads import BenchDisk, bench_config

    disks = {"bench01": [BenchDisk("bench01", "xvda", 1 << 30)]}
    text = bench_config(disks, key="/k", known_hosts="/h", thin=True)
    assert 'standby_lv = "/dev/vg_b/bench01_xvda_thin"' in text
    plain = bench_config(disks, key="/k", known_hosts="/h")
    assert 'standby_lv = "/dev/vg_b/bench01_xvda"' in plain
    from toolkit.lab.bench.workloads import SCALES

    need = space_needed(disks["bench01"], SCALES["small"], guest=False, pointchurn=True)
    assert need["vg_b"] - space_needed(disks["bench01"], SCALES["small"],
                                       guest=False)["vg_b"] >= 3 << 30
