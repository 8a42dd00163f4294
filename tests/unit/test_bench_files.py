"""The bench's files workload: how a no-change run grows with the number of files.

Its plan and command line, bench03's recipe and disk size (an inode for every file at
mkfs.ext4's default ratio: checked with this host's mkfs where it has one), its LVs and
room, the program's files op (run here on a temporary directory), the order of its runs
(with the measurements themselves stubbed), and the table's section and bench.json's
figures from recorded wall times. The runs themselves need the lab.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_bench import _m, _meter

from toolkit.lab import bench as b
from toolkit.lab.bench import (
    MIB,
    BenchDisk,
    FilesRow,
    StepResult,
    bench_command,
    bench_document,
    chart_series,
    files_disk_size,
    files_growth,
    files_methods,
    files_rows,
    files_section,
    growth_per_files,
    load_bench_domain,
    measurement,
    overhead_ratios,
    peer_lvs,
    plan_methods,
    plan_workloads,
    render_table,
    space_needed,
)
from toolkit.lab.bench.workloads import FILE_SIZES, FILES_DIR, FILES_PER_DIR
from toolkit.lab.guests import load_domain, plan_layout, stage_tree
from toolkit.runners import LocalRunner

ROOT = Path(__file__).resolve().parents[2]
GUESTS = ROOT / "fixtures" / "guests"
RUNNER = LocalRunner()

# No-change wall times (s) per file count, as a run of the small scale would record them.
RECORDED = {5_000: {"toolkit": 9.8, "plain-script": 8.1, "bare-rsync": 3.2},
            20_000: {"toolkit": 14.3, "plain-script": 11.9, "bare-rsync": 6.0},
            50_000: {"toolkit": 24.1, "plain-script": 20.6, "bare-rsync": 12.5}}


def _files_results(walls: dict[int, dict[str, float]] = RECORDED) -> list[Any]:
    return [replace(_m("files", method, wall), files=count, domain="bench03", changed_bytes=0)
            for count, by_method in walls.items() for method, wall in by_method.items()]


# -- plan, methods, command line ---------------------------------------------------------------

def test_the_files_workload_runs_alone_and_its_command_line_says_so() -> None:
    plan = plan_workloads("files")
    assert [(w.name, w.requested) for w in plan] == [("files", True)]  # needs no earlier one
    chosen = plan_methods("toolkit,plain-script")
    assert chosen == ("toolkit", "plain-script")
    assert bench_command("small", plan, chosen) == (
        "invoke bench --scale small --workloads files --methods toolkit,plain-script")
    assert [w.name for w in plan_workloads("files,nochange")] == ["full", "nochange", "files"]


def test_only_the_toolkit_the_plain_script_and_the_bare_rsync_take_part() -> None:
    assert files_methods(b.METHODS) == (
        ("toolkit", "plain-script", "bare-rsync"),
        ("toolkit-parallel", "bare-parallel", "block-delta", "block-copy"))
    assert files_methods(plan_methods("block-copy,plain-script")) == (("plain-script",),
                                                                      ("block-copy",))
    assert files_methods(()) == ((), ())


# -- bench03: recipe, disk size, inodes -------------------------------------------------------

def test_the_disk_is_sized_for_an_inode_a_file_at_mkfs_default_ratio() -> None:
    # recorded: 50 000 files (small) and 300 000 (large)
    assert files_disk_size(50_000) == 960 * MIB
    assert files_disk_size(300_000) == 5312 * MIB
    assert files_disk_size(0) == 640 * MIB  # never in mke2fs's "small" type (< 512 MiB)
    for count in (1, 999, 1000, 1001, 20_000, 123_457, 1_000_000):
        size = files_disk_size(count)
        assert size % (64 * MIB) == 0
        fs = size - MIB  # the one partition, from 1 MiB on
        assert fs // 16384 >= count + -(-count // FILES_PER_DIR) + 1024
        assert files_disk_size(count + 100_000) > size
    with pytest.raises(ValueError):
        files_disk_size(-1)


@pytest.mark.parametrize("scale", list(b.SCALES))
def test_bench03_is_one_ext4_root_sized_from_the_largest_count(scale: str) -> None:
    sc = b.SCALES[scale]
    assert sc.file_counts == tuple(sorted(sc.file_counts)) and len(sc.file_counts) >= 2
    domain = load_bench_domain(ROOT, "bench03", sc)
    (disk,) = domain.disks
    assert disk.size == files_disk_size(max(sc.file_counts))
    assert disk.size % (4 * MIB) == 0  # LVs are made in whole 4 MiB extents
    (part,) = disk.partitions
    assert (part.fs, part.mount, part.content) == ("ext4", "/", "minimal")
    assert disk.root is part
    (extent,) = plan_layout(disk)
    assert extent.size >= 512 * MIB


def test_the_recipes_own_size_is_the_small_scales() -> None:
    plain = load_domain(GUESTS / "bench03.toml")
    small = load_bench_domain(ROOT, "bench03", b.SCALES["small"])
    assert plain.disks[0].size == small.disks[0].size == 960 * MIB


def test_bench03s_tree_is_the_same_few_files_at_every_tree_scale(tmp_path: Path) -> None:
    disk = load_domain(GUESTS / "bench03.toml").disks[0]
    counts = {stage_tree(RUNNER, disk, 1, str(tmp_path / str(sc.tree)), scale=sc.tree,
                         as_user=True)[0].files for sc in b.SCALES.values()}
    assert len(counts) == 1 and counts.pop() < 10  # the counted files are the bench's own


@pytest.mark.skipif(not (shutil.which("mkfs.ext4") and shutil.which("dumpe2fs")),
                    reason="needs e2fsprogs (mkfs.ext4, dumpe2fs)")
@pytest.mark.parametrize("scale", list(b.SCALES))
def test_mkfs_gives_bench03_an_inode_and_a_block_for_every_file(scale: str,
                                                                 tmp_path: Path) -> None:
    # As the image build makes an empty or minimal ext4 (no -N): a sparse file of the
    # partition's size, this host's mke2fs.conf (Debian's, as in the fake Dom0s).
    sc = b.SCALES[scale]
    count = max(sc.file_counts)
    (extent,) = plan_layout(load_bench_domain(ROOT, "bench03", sc).disks[0])
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(extent.size)
    RUNNER.run(["mkfs.ext4", "-F", "-q", str(image)], timeout=120)
    header = RUNNER.run(["dumpe2fs", "-h", str(image)], timeout=60).stdout
    fields = dict(line.split(":", 1) for line in header.splitlines() if ":" in line)
    dirs = -(-count // FILES_PER_DIR)
    assert int(fields["Free inodes"]) >= count + dirs + 100
    assert int(fields["Block size"]) == 4096  # a file of FILE_SIZES takes one block
    assert int(fields["Free blocks"]) >= count + 8 * dirs + 1000


# -- its LVs and room -------------------------------------------------------------------------

def test_bench03_gets_only_its_methods_targets_and_the_room_for_them() -> None:
    one = BenchDisk("bench01", "xvda", 512 * MIB)
    many = BenchDisk("bench03", "xvda", 960 * MIB)
    assert peer_lvs(many) == ("/dev/vg_b/bench03_xvda", "/dev/vg_b/bench03_xvda_plain",
                              "/dev/vg_b/bench03_xvda_bare")
    assert peer_lvs(one) == (one.standby_lv, one.standby_parallel_lv, one.plain_lv, one.bare_lv,
                             one.par_lv, one.block_lv)
    sc = b.SCALES["small"]
    alone = space_needed([one], sc, guest=False)
    both = space_needed([one, many], sc, guest=False)
    assert both["vg_b"] - alone["vg_b"] == 3 * 960 * MIB
    # its LV, and its snapshots now the largest domain's (20%), 8 MiB more for rounding
    assert both["vg_a"] - alone["vg_a"] == 960 * MIB + int(960 * MIB * 0.2) \
        - int(512 * MIB * 0.2) + 8 * MIB
    assert both["vg_b"] == 6 * 512 * MIB + 3 * 960 * MIB + 64 * MIB


def test_bench03s_standby_image_goes_to_its_methods_targets_only() -> None:
    bench = object.__new__(b.Bench)
    bench.methods = b.METHODS
    many = BenchDisk("bench03", "xvda", 960 * MIB)
    assert bench._standby_targets(many) == (many.standby_lv, many.plain_lv, many.bare_lv)
    bench.methods = plan_methods("toolkit,toolkit-parallel")
    assert bench._standby_targets(many) == (many.standby_lv,)


def test_the_bench_takes_bench03_for_the_files_workload_only() -> None:
    lab = type("Lab", (), {"runner": lambda self, host: host})()
    bench = b.Bench(lab, ROOT, b.SCALES["small"], plan_workloads("files"))
    assert list(bench.domains) == ["bench03"]
    assert [d.lv_name for d in bench.all_disks] == ["bench03_xvda"]
    bench = b.Bench(lab, ROOT, b.SCALES["small"], plan_workloads("churn"))
    assert list(bench.domains) == ["bench01"]


# -- the program's files op -------------------------------------------------------------------

@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("prog") / "bench_program.py"
    path.write_text(b.bench_program())
    return str(path)


def _files(program: str, root: Path, count: int, seed: int = 103) -> dict:
    spec = {"op": "files", "root": str(root), "dir": FILES_DIR, "count": count,
            "per_dir": FILES_PER_DIR, "sizes": list(FILE_SIZES), "seed": seed,
            "epoch": 1700000000}
    return b.run_program(RUNNER, spec, timeout=300, program=program)


def _digest(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_are_added_until_the_directory_holds_the_count(tmp_path: Path,
                                                              program: str) -> None:
    root = tmp_path / "a"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("bench03\n")
    out = _files(program, root, 2500)
    top = root / FILES_DIR
    assert sorted(p.name for p in top.iterdir()) == ["d00000", "d00001", "d00002"]
    assert [len(list((top / d).iterdir())) for d in ("d00000", "d00001", "d00002")] == \
        [1000, 1000, 500]
    files = _digest(top)
    assert out == {"written": 2500, "bytes": sum(size for size, _ in files.values()),
                   "files": 2500}
    assert all(FILE_SIZES[0] <= size <= FILE_SIZES[1] for size, _ in files.values())
    assert len({size for size, _ in files.values()}) > 100  # sizes spread over the range
    assert (top / "d00001" / "f0001234.dat").stat().st_mtime == 1700000000
    assert (root / "etc" / "hostname").read_text() == "bench03\n"

    more = _files(program, root, 3200)  # adds the next 700, leaves the first alone
    assert (more["written"], more["files"]) == (700, 3200)
    after = _digest(top)
    assert {k: after[k] for k in files} == files
    assert more["bytes"] == sum(after[k][0] for k in set(after) - set(files))
    assert _files(program, root, 3200) == {"written": 0, "bytes": 0, "files": 3200}


def test_the_same_count_and_seed_give_the_same_files(tmp_path: Path, program: str) -> None:
    _files(program, tmp_path / "steps", 1200)
    _files(program, tmp_path / "steps", 2100)
    _files(program, tmp_path / "once", 2100)
    _files(program, tmp_path / "other", 2100, seed=104)
    steps, once = _digest(tmp_path / "steps"), _digest(tmp_path / "once")
    assert steps == once and len(once) == 2100
    assert _digest(tmp_path / "other") != once


# -- the runs, in order (measurements stubbed) --------------------------------------------------

class _Recorder(b.Bench):
    """A Bench whose lab work is recorded, not done."""

    def __init__(self, methods: tuple[str, ...]) -> None:  # no lab: see Bench.__init__
        self.methods = methods
        self.scale = replace(b.SCALES["small"], file_counts=(100, 300))
        self.calls: list[tuple] = []

    def add_files(self, name: str, count: int) -> int:
        self.calls.append(("add", name, count))
        return count * 1000

    def measure(self, workload: str, method: str, name: str, changed: int,
                config: str | None = None, files: int | None = None):  # type: ignore[override]
        self.calls.append(("measure", workload, method, changed, files))
        return replace(_m(workload, method, 1.0), files=files, changed_bytes=changed)


def test_each_count_adds_files_syncs_then_measures_the_no_change_runs(
        capsys: pytest.CaptureFixture[str]) -> None:
    bench = _Recorder(b.METHODS)
    results = bench.file_counts("bench03")
    assert bench.calls == [
        ("add", "bench03", 100),
        ("measure", "files 100, first sync", "toolkit", 100000, None),
        ("measure", "files 100, first sync", "plain-script", 100000, None),
        ("measure", "files 100, first sync", "bare-rsync", 100000, None),
        ("measure", "files", "toolkit", 0, 100),
        ("measure", "files", "plain-script", 0, 100),
        ("measure", "files", "bare-rsync", 0, 100),
        ("add", "bench03", 300),
        ("measure", "files 300, first sync", "toolkit", 300000, None),
        ("measure", "files 300, first sync", "plain-script", 300000, None),
        ("measure", "files 300, first sync", "bare-rsync", 300000, None),
        ("measure", "files", "toolkit", 0, 300),
        ("measure", "files", "plain-script", 0, 300),
        ("measure", "files", "bare-rsync", 0, 300)]
    assert [(m.case, m.method) for m in results] == [
        ("files 100", "toolkit"), ("files 100", "plain-script"), ("files 100", "bare-rsync"),
        ("files 300", "toolkit"), ("files 300", "plain-script"), ("files 300", "bare-rsync")]
    err = capsys.readouterr().err
    for method in ("toolkit-parallel", "bare-parallel", "block-delta", "block-copy"):
        assert f"files: {method} sits this workload out" in err


def test_without_any_of_its_methods_the_workload_measures_nothing() -> None:
    bench = _Recorder(("block-copy",))
    assert bench.file_counts("bench03") == [] and bench.calls == []


def test_run_workload_sends_files_to_its_own_runs() -> None:
    bench = _Recorder(("toolkit", "plain-script"))
    bench.results = []
    bench.run_workload("files")
    assert [(m.case, m.method) for m in bench.results] == [
        ("files 100", "toolkit"), ("files 100", "plain-script"), ("files 300", "toolkit"),
        ("files 300", "plain-script")]


# -- figures: the count on each measurement, the section, the slope -----------------------------

def test_the_count_reaches_the_measurement_and_bench_json() -> None:
    step = StepResult("bash", 0, 12.5, 3000, "", "")
    m = measurement("files", "plain-script", "bench03", _meter([step]), source_devices=[],
                    peer_devices=[], peer_cpu=(None, None), changed_bytes=0,
                    caches_dropped=True, files=20_000)
    assert (m.files, m.case) == (20_000, "files 20000")
    assert m.to_dict()["files"] == 20_000
    other = measurement("nochange", "plain-script", "bench01", _meter([step]),
                        source_devices=[], peer_devices=[], peer_cpu=(None, None),
                        changed_bytes=0, caches_dropped=True)
    assert (other.files, other.case) == (None, "nochange")
    doc = json.loads(json.dumps(bench_document({}, _files_results(), None)))
    assert [(r["workload"], r["files"], r["method"]) for r in doc["results"][:2]] == [
        ("files", 5000, "toolkit"), ("files", 5000, "plain-script")]


def test_growth_is_the_slope_from_the_fewest_to_the_most_files() -> None:
    # (24.1 - 9.8) s over 45 000 files: 31.778 s per 100k
    assert growth_per_files([(20_000, 14.3), (50_000, 24.1), (5_000, 9.8)]) == 31.778
    assert growth_per_files([(5_000, 8.1), (50_000, 20.6)]) == 27.778
    assert growth_per_files([(20_000, 6.0), (300_000, 90.0)], per=1000) == 0.3
    assert growth_per_files([(100_000, 30.0), (300_000, 20.0)]) == -5.0  # a run got faster
    assert growth_per_files([(5_000, 9.8)]) is None
    assert growth_per_files([(5_000, 9.8), (5_000, 9.9)]) is None
    assert growth_per_files([]) is None


def test_rows_per_count_with_the_toolkit_over_the_plain_script() -> None:
    results = [_m("nochange", "toolkit", 3.0), *_files_results(),
               replace(_m("files", "toolkit", 99.0), files=80_000, exit_code=1)]
    rows = files_rows(list(reversed(results)))
    assert [r.files for r in rows] == [5_000, 20_000, 50_000]  # fewest first, failures out
    assert rows[0].walls == {"toolkit": 9.8, "plain-script": 8.1, "bare-rsync": 3.2}
    assert [r.toolkit_over_plain for r in rows] == [1.21, 1.202, 1.17]
    assert files_growth(rows) == {"toolkit": 31.778, "plain-script": 27.778,
                                  "bare-rsync": 20.667}
    assert FilesRow(5_000, {"toolkit": 9.8}).toolkit_over_plain is None
    assert FilesRow(5_000, {"toolkit": 9.8, "plain-script": 0.0}).toolkit_over_plain is None


def test_the_table_gets_a_files_section() -> None:
    results = _files_results()
    lines = files_section(results)
    assert lines[1] == "no-change run by number of files (workload files):"
    assert lines[2].split() == ["files", "toolkit", "s", "plain-script", "s", "bare-rsync", "s",
                                "toolkit/plain"]
    assert [line.split() for line in lines[4:7]] == [
        ["5000", "9.8", "8.1", "3.2", "1.21"], ["20000", "14.3", "11.9", "6.0", "1.20"],
        ["50000", "24.1", "20.6", "12.5", "1.17"]]
    assert lines[7] == ("growth per 100k files: toolkit 31.78s, plain-script 27.78s, "
                        "bare-rsync 20.67s")
    text = render_table(results, overhead_ratios(results))
    assert "\n".join(lines) in text
    assert "toolkit/plain-script files 20000: 1.20" in text
    assert "toolkit/bare-rsync files 50000: 1.93" in text
    table = [line.split() for line in text.splitlines()[2:11]]
    assert [row[:4] for row in table[:3]] == [["files", "5000", "toolkit", "9.8"],
                                              ["files", "5000", "plain-script", "8.1"],
                                              ["files", "5000", "bare-rsync", "3.2"]]
    assert table[6][-1] == "1.93"  # x bare: against the same count's bare rsync
    assert files_section([_m("nochange", "toolkit", 3.0)]) == []


def test_the_section_leaves_out_a_method_that_did_not_run() -> None:
    walls = {n: {k: v for k, v in w.items() if k != "bare-rsync"} for n, w in RECORDED.items()}
    lines = files_section(_files_results(walls))
    assert lines[2].split() == ["files", "toolkit", "s", "plain-script", "s", "toolkit/plain"]
    assert lines[-1] == "growth per 100k files: toolkit 31.78s, plain-script 27.78s"


def test_bench_json_has_the_rows_and_the_growth() -> None:
    doc = bench_document({}, _files_results(), None)
    assert doc["files"]["rows"][1] == {
        "files": 20_000, "walls": {"toolkit": 14.3, "plain-script": 11.9, "bare-rsync": 6.0},
        "toolkit_over_plain": 1.202}
    assert doc["files"]["growth_per_files"] == 100_000
    assert doc["files"]["growth_seconds"] == {"toolkit": 31.778, "plain-script": 27.778,
                                              "bare-rsync": 20.667}
    assert {r["workload"] for r in doc["ratios"]} == {"files 5000", "files 20000",
                                                      "files 50000"}
    assert set(doc["guest_cost"]["snapshot_seconds"]) == {"files 5000", "files 20000",
                                                          "files 50000"}
    assert bench_document({}, [_m("full", "toolkit", 1.0)], None)["files"] is None


def test_the_chart_tells_the_counts_apart() -> None:
    labels, _phases, _values = chart_series(_files_results()[:4])
    assert labels == ["files 5000 / toolkit", "files 5000 / plain-script",
                      "files 5000 / bare-rsync", "files 20000 / toolkit"]


def test_measurements_without_a_count_keep_their_workload_as_case() -> None:
    m = _m("churn", "toolkit", 5.0)
    assert m.files is None and m.case == "churn"
    assert [r.workload for r in overhead_ratios([m, _m("churn", "bare-rsync", 4.0)])] == \
        ["churn"]
