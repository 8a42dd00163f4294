"""Plan golden files: the two-host plan for recorded disk layouts, and layout checks."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from fakes import ROOT, BackupFacts, config, disk_facts, web01_facts

from toolkit import errors
from toolkit.facts.virsh import DomainDisk
from toolkit.plan import SOURCE, compare_layouts, plan_backup, render_plan

GOLDEN = ROOT / "fixtures" / "golden"
RUN = "20260101T000000Z-0000"


def facts_for(case: str) -> BackupFacts:
    if case == "msdos":
        return web01_facts()
    disks = {
        "gpt": (disk_facts("gpt", "xvda", "vg_a", "vg_b", "web01"),),
        "whole-disk": (disk_facts("notable-ext4", "xvda", "vg_a", "vg_b", "web01"),),
        "multi-disk": (disk_facts("msdos", "xvda", "vg_a", "vg_b", "web01"),
                       disk_facts("notable-ext4", "xvdb", "vg_a", "vg_b", "web01-srv")),
    }[case]
    skipped = (DomainDisk("hdc", "/srv/iso/debian.iso", "file", "cdrom", "ide", True, False,
                          "cdrom"),) if case == "multi-disk" else ()
    return BackupFacts("web01", "dom0-a", "dom0-b", "root@dom0-b", 22, disks, skipped)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing (run with UPDATE_GOLDEN=1)"
    assert text == path.read_text()


@pytest.mark.parametrize("case", ["msdos", "gpt", "whole-disk", "multi-disk"])
def test_plan_matches_golden_file(tmp_path, case):
    plan = plan_backup(facts_for(case), config(Path("/var/tmp/x")), RUN)
    check_golden(f"plan-{case}.txt", render_plan(plan))
    check_golden(f"plan-{case}.json", plan.to_json() + "\n")


def test_plan_snapshots_are_read_only_tagged_and_owned(tmp_path):
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    (snap,) = [s for s in plan.steps if s.action == "snapshot"]
    assert snap.argv[:4] == ("lvcreate", "--snapshot", "--permission", "r")
    assert "domubk" in snap.argv and f"domubk_run_{RUN}" in snap.argv
    assert plan.snapshots[0].name == f"domubk-{RUN}-web01-xvda"
    assert snap.undo == ("lvremove", "--force", "--yes", f"vg_a/domubk-{RUN}-web01-xvda")


def test_same_kpartx_delimiter_for_map_and_unmap(tmp_path):
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    for step in (s for s in plan.steps if s.action == "map"):
        assert step.argv[1] == "-a" and step.undo[1] == "-d"
        assert step.argv[step.argv.index("-p") + 1] == step.undo[step.undo.index("-p") + 1] == "p"


def test_source_mounts_are_read_only_with_explicit_type(tmp_path):
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    mounts = [s for s in plan.steps if s.action == "mount" and s.role == SOURCE]
    assert mounts
    for m in mounts:
        opts = m.argv[m.argv.index("-o") + 1].split(",")
        assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts)
        fstype = m.argv[m.argv.index("-t") + 1]
        assert fstype in ("ext4", "vfat")
        if fstype == "ext4":
            assert "noload" in opts


def test_mount_paths_come_from_device_names_not_guest_data(tmp_path):
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    for f in plan.filesystems:
        assert f.source_mount == f"/run/domu-backup/src/web01.{RUN}/{f.name}"
        assert f.standby_mount == f"/run/domu-backup/dst/web01.{RUN}/{f.name}"


def test_skipped_filesystems_are_listed_with_reasons(tmp_path):
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    text = "\n".join(plan.skipped)
    assert "xvda2: swap" in text
    assert "xvda3: extended partition container" in text
    assert "xvda7: guest LVM" in text


def test_standby_with_other_uuid_is_a_layout_mismatch(tmp_path):
    facts = web01_facts()
    disk = facts.disks[0]
    changed = tuple(
        dataclasses.replace(f, probe=dataclasses.replace(f.probe, uuid="0000"))
        if f.name == "xvda1" else f for f in disk.standby_filesystems)
    bad = dataclasses.replace(facts, disks=(dataclasses.replace(disk,
                                                                standby_filesystems=changed),))
    assert any("xvda1: UUID" in d for d in compare_layouts(bad.disks[0]))
    with pytest.raises(errors.LayoutMismatch, match="init-standby"):
        plan_backup(bad, config(tmp_path), RUN)


def test_standby_with_other_partition_table_is_a_layout_mismatch(tmp_path):
    facts = web01_facts()
    gpt = disk_facts("gpt", "xvda", "vg_a", "vg_b", "web01")
    disk = dataclasses.replace(facts.disks[0], standby_table=gpt.table,
                               standby_filesystems=gpt.filesystems)
    diffs = compare_layouts(disk)
    assert diffs == ["partition table dos on source, gpt on standby"]


@pytest.mark.parametrize("seconds, expected", [(0.5, 1), (10.0, 10), (2.2, 3)])
def test_rsyncs_ssh_connect_timeout_is_rounded_up_never_to_zero(tmp_path, seconds, expected):
    """ssh takes whole seconds: a configured 0.5 s must not become ConnectTimeout=0."""
    from toolkit.plan import transfer_argv

    cfg = config(tmp_path)
    cfg = dataclasses.replace(cfg, ssh=dataclasses.replace(cfg.ssh, connect_timeout=seconds))
    p = plan_backup(web01_facts(), cfg, run_id="20260101T000000Z-abcd")
    fs_plan = p.filesystems[0]
    argv = transfer_argv(cfg, "web01", fs_plan, "root@10.0.0.2", 22, "/")
    rsh = argv[argv.index("-e") + 1] if "-e" in argv else next(a for a in argv
                                                               if "ConnectTimeout" in a)
    assert f"ConnectTimeout={expected}" in rsh


def test_the_copy_takes_the_default_excludes_and_the_domains_each_once(tmp_path):
    """The plan's rsync argv comes from the config's effective excludes: the defaults
    first, then the domain's, a pattern both name only once."""
    cfg = config(tmp_path)
    d = dataclasses.replace(cfg.defaults, excludes=("*.swp", "*.tmp"))
    web01 = dataclasses.replace(cfg.domains["web01"], excludes=("*.tmp", "core"))
    cfg = dataclasses.replace(cfg, defaults=d, domains={"web01": web01})
    plan = plan_backup(web01_facts(), cfg, "20260101T000000Z-0000")
    (rsync,) = [s.argv for s in plan.steps if s.action == "rsync" and s.fs == "xvda1"]
    assert [a for a in rsync if a.startswith("--exclude=")] == [
        "--exclude=*.swp", "--exclude=*.tmp", "--exclude=core"]
