"""The bench's plain-script method: the flow it runs, in order, its teardown on a failure,
and the phases and rsync outputs read back (the commands are shims that record their argv)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from test_bench import _meter

from toolkit.lab.bench.figures import (
    Measurement,
    Side,
    measurement,
    overhead_ratios,
    render_table,
    snapshot_lives,
)
from toolkit.lab.bench.meters import StepResult
from toolkit.lab.bench.plain_script import (
    RSYNC_SEPARATOR,
    PlainDisk,
    PlainFilesystem,
    dm_name,
    plain_phases,
    plain_script,
    plain_script_argv,
    rsync_outputs,
)

SSH = ["ssh", "-i", "/etc/domu-backup/id_ed25519", "-o", "BatchMode=yes"]
DISK = PlainDisk("xvda", "vg_a", "bench01_xvda", "vg_b", "bench01_xvda_plain",
                 (PlainFilesystem(1, "ext4"), PlainFilesystem(2, "ext4")))
MIB = 1024 * 1024
SHIMS = ("virsh", "lvcreate", "lvremove", "kpartx", "dmsetup", "mount", "umount", "mkdir",
         "rm", "rsync")


def script(disks=(DISK,)) -> str:
    return plain_script(uri="test:///x", domain="bench01", disks=list(disks),
                        snapshot_size="20%ORIGIN", ssh=SSH, peer_address="root@dom0-b")


def run(tmp_path: Path, text: str, *, fail: str = "", state: str = "running"):
    """The script with every command it runs replaced by a shim that logs its argv (ssh
    runs its here-document with the same shims, logged as on the peer)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "log"
    for name in SHIMS:
        body = f'echo "${{WHERE:-here}} {name} $*" >> {shlex.quote(str(log))}\n'
        if name == "virsh":
            body += f'case "$*" in *domstate*) echo {state};; esac\n'
        if name == "rsync":
            body += ('echo "Number of files: 3"; echo "Total bytes sent: 120"; '
                     'echo "Total bytes received: 30"\n')
        body += f'[ "$FAIL" = "{name}" ] && exit 23\nexit 0\n'
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "ssh").write_text(
        f'#!/bin/bash\necho "here ssh $*" >> {shlex.quote(str(log))}\n'
        'WHERE=peer exec bash -s\n')
    (bin_dir / "ssh").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAIL": fail}
    res = subprocess.run(plain_script_argv(uri="test:///x", domain="bench01", disks=[DISK],
                                           snapshot_size="20%ORIGIN", ssh=SSH,
                                           peer_address="root@dom0-b")
                         if text is None else ["bash", "-c", text, "plain-script"],
                         capture_output=True, text=True, env=env, timeout=60)
    lines = log.read_text().splitlines() if log.exists() else []
    return res, lines


def commands(lines: list[str]) -> list[str]:
    """Each logged command as `where program first-argument`."""
    out = []
    for line in lines:
        where, prog, *args = line.split()
        # rsync: its source (the -e value is a word of its own too)
        first = args[-2] if prog == "rsync" else next(
            (a for a in args if not a.startswith("-")), "")
        out.append(f"{where} {prog} {first}".strip())
    return out


def test_the_flow_snapshots_maps_mounts_both_hosts_copies_each_filesystem_then_tears_down(
        tmp_path):
    res, lines = run(tmp_path, None)
    assert res.returncode == 0, res.stderr
    flow = commands(lines)
    # what an operator's script does, in order; the peer through one ssh each way
    assert flow[:2] == ["here virsh test:///x", "here virsh test:///x"]
    assert "domstate" in lines[0] and "dumpxml" in lines[1]
    order = [c for c in flow if not c.startswith(("here mkdir", "peer mkdir", "here dmsetup",
                                                  "peer dmsetup", "here rm", "peer rm"))]
    assert order[2:] == [
        "here lvcreate 20%ORIGIN",
        "here kpartx p",
        "here mount ro,noload", "here mount ro,noload",
        "here ssh /etc/domu-backup/id_ed25519",
        "peer kpartx p", "peer mount rw", "peer mount rw",
        "here rsync /run/domubk-bench-plain/src/xvda1/",
        "here rsync /run/domubk-bench-plain/src/xvda2/",
        "here ssh /etc/domu-backup/id_ed25519",
        "peer umount /run/domubk-bench-plain/dst/xvda1",
        "peer umount /run/domubk-bench-plain/dst/xvda2",
        "peer kpartx p",
        "here umount /run/domubk-bench-plain/src/xvda1",
        "here umount /run/domubk-bench-plain/src/xvda2",
        "here kpartx p", "here lvremove vg_a/plainsnap-bench01_xvda"]
    assert sum("ssh" in c for c in flow) == 2
    snap = next(line for line in lines if " lvcreate " in line)
    assert snap.endswith("-n plainsnap-bench01_xvda vg_a/bench01_xvda")
    mount = [line for line in lines if line.startswith("here mount")]
    assert mount[0].endswith(
        "/dev/mapper/vg_a-plainsnap--bench01_xvdap1 /run/domubk-bench-plain/src/xvda1")
    peer_mount = [line for line in lines if line.startswith("peer mount")]
    assert peer_mount[1].endswith(
        "/dev/mapper/vg_b-bench01_xvda_plainp2 /run/domubk-bench-plain/dst/xvda2")
    copy = next(line for line in lines if " rsync " in line)
    assert "-aHAXSx --numeric-ids --delete --delete-delay --stats" in copy
    assert copy.endswith("root@dom0-b:/run/domubk-bench-plain/dst/xvda1/")
    # what the bench reads back: one --stats output per filesystem, every phase timed
    assert len(rsync_outputs(res.stdout)) == 2
    phases = plain_phases(res.stdout, wall=60.0)
    assert list(phases) == ["preflight", "snapshot", "map", "mount", "peer", "rsync",
                            "teardown", "other"]
    assert all(v >= 0 for v in phases.values())


@pytest.mark.parametrize("fail", ["rsync", "mount", "kpartx"])
def test_a_failed_step_still_tears_down_both_hosts_and_exits_with_an_error(tmp_path, fail):
    res, lines = run(tmp_path, None, fail=fail)
    assert res.returncode != 0
    flow = commands(lines)
    failed_at = next(i for i, c in enumerate(flow) if c.split()[1] == fail)
    after = flow[failed_at + 1:]
    # nothing more is copied; the teardown of both hosts runs, the snapshot goes
    assert not any(c.startswith("here rsync") for c in after)
    assert any(c.startswith("peer kpartx") for c in after)
    assert "here lvremove vg_a/plainsnap-bench01_xvda" in after


def test_a_domain_that_does_not_run_here_makes_nothing(tmp_path):
    res, lines = run(tmp_path, None, state="shut off")
    assert res.returncode == 2 and "not running here" in res.stderr
    assert [c for c in commands(lines) if "virsh" not in c] == []


def test_names_that_are_not_lvm_names_are_refused():
    with pytest.raises(ValueError, match="not an LVM or device name"):
        script([PlainDisk("xvda", "vg_a", "x; rm -rf /", "vg_b", "y", ())])
    with pytest.raises(ValueError, match="no mount options"):
        script([PlainDisk("xvda", "vg_a", "x", "vg_b", "y", (PlainFilesystem(1, "ntfs"),))])


def test_dm_names_double_each_hyphen_and_phases_sum_to_the_wall():
    assert dm_name("vg-a", "plainsnap-x_y") == "vg--a-plainsnap--x_y"
    out = "plain-phase preflight 10.0\nplain-phase snapshot 10.5\nplain-phase end 12.0\n"
    assert plain_phases(out, wall=2.25) == {"preflight": 0.5, "snapshot": 1.5, "other": 0.25}


def _m(workload: str, method: str, wall: float, lives: dict[str, float]) -> Measurement:
    return Measurement(workload, method, "bench01", 0, wall, {"rsync": wall}, 1.0, 1.0,
                       Side(MIB, 0, None), Side(0, MIB, None), 10 * MIB, 100 * MIB,
                       100 * MIB, 0, 50 * MIB, 40960, 50000, snapshot_seconds=lives)


def test_toolkit_over_plain_script_with_its_targets_and_the_snapshots_lives_side_by_side():
    results = [_m("full", "toolkit", 51.0, {"vg_a-domubk--r--x-cow": 40.0, "x (report)": 1}),
               _m("full", "plain-script", 50.0, {"vg_a-plainsnap--x-cow": 39.5}),
               _m("nochange", "toolkit", 12.0, {"a-cow": 10.0}),
               _m("nochange", "plain-script", 10.0, {"b-cow": 8.0}),
               _m("nochange", "bare-rsync", 2.0, {})]
    plain = {r.workload: r for r in overhead_ratios(results) if r.against == "plain-script"}
    assert plain["full"].value == 1.02 and plain["full"].target == 1.02 and plain["full"].met
    assert plain["nochange"].value == 1.2 and plain["nochange"].met is False
    assert snapshot_lives(results) == [("full", 40.0, 39.5), ("nochange", 10.0, 8.0)]
    table = render_table(results, overhead_ratios(results))
    assert "toolkit/plain-script nochange: 1.20 (target <= 1.10: MISSED)" in table
    assert "toolkit/bare-rsync nochange: 6.00" in table
    assert "snapshot lifetime full: toolkit 40.0s, plain-script 39.5s" in table


def test_a_plain_script_run_gives_its_phases_and_the_bytes_its_rsyncs_sent():
    out = ("plain-phase preflight 100.0\nplain-phase snapshot 100.5\nplain-phase rsync 101.0\n"
           "Number of files: 3\nTotal bytes sent: 1,000\nTotal bytes received: 10\n"
           f"{RSYNC_SEPARATOR}\nNumber of files: 2\nTotal bytes sent: 500\n"
           "Total bytes received: 5\nplain-phase teardown 104.0\nplain-phase end 105.0\n")
    meter = _meter([StepResult("bash", 0, 5.5, 1000, out, "")])
    m = measurement("nochange", "plain-script", "bench01", meter, source_devices=[],
                    peer_devices=[], peer_cpu=(None, None), changed_bytes=0,
                    caches_dropped=True)
    assert m.phases == {"preflight": 0.5, "snapshot": 0.5, "rsync": 3.0, "teardown": 1.0,
                        "other": 0.5}
    assert m.rsync_sent == 1500 and m.rsync_received == 15
