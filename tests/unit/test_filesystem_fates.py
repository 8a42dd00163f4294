"""A filesystem never drops out of the backup unnoticed.

Facts are the recorded web01 disk (fakes.web01_facts: ext4 xvda1, swap xvda2, an
extended container, ext4 xvda5, vfat xvda6, a guest PV xvda7) and lvm01's guest
LVM (test_facts_guestlvm), with the source's probe of one filesystem replaced by
blkid's recorded answer for a device with no signature (fixtures/recorded/blkid/
blank.json: exit 2, nothing printed), as after its superblock was overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from fakes import CONFIG_TEXT, config, disk_facts, lv, recorded, web01_facts
from test_facts_guestlvm import LVM01_SFDISK, vg_of

from toolkit import app
from toolkit.config import parse_config
from toolkit.errors import ConfigError, FilesystemVanished
from toolkit.facts.blkid import FilesystemProbe, parse_blkid_export, probe_from_result
from toolkit.facts.partitions import parse_sfdisk
from toolkit.facts.records import BackupFacts, DiskFacts, FsFacts
from toolkit.facts.virsh import DomainDisk
from toolkit.plan import compare_layouts, filesystem_fates, plan_backup
from toolkit.preflight import Preflight
from toolkit.report import FilesystemReport, RunReport, summary
from toolkit.runners import CommandResult

RUN = "20260101T000000Z-0000"
EVERY_FS = ("xvda1", "xvda2", "xvda3", "xvda5", "xvda6", "xvda7")


def blank_probe():
    """What blkid says of a partition whose superblock is gone (recorded)."""
    rec = recorded("blkid/blank")
    return probe_from_result(CommandResult("dom0-a", tuple(rec["argv"]), rec["exit_code"],
                                           rec["stdout"], rec["stderr"], 0.0))


def source_probe(facts: BackupFacts, name: str, probe) -> BackupFacts:
    """``facts`` with the source's probe of filesystem ``name`` replaced; the standby's kept."""
    disks = []
    for disk in facts.disks:
        fss = tuple(dataclasses.replace(f, probe=probe) if f.name == name else f
                    for f in disk.filesystems)
        disks.append(dataclasses.replace(disk, filesystems=fss))
    return dataclasses.replace(facts, disks=tuple(disks))


def vanished_root() -> BackupFacts:
    return source_probe(web01_facts(), "xvda1", blank_probe())


def with_domain_keys(tmp_path: Path, keys: str):
    """The unit config (fakes.CONFIG_TEXT) with keys added to [domains.web01]."""
    text = CONFIG_TEXT.replace('excludes = ["/var/cache/*"]\n',
                               'excludes = ["/var/cache/*"]\n' + keys)
    assert text != CONFIG_TEXT
    return parse_config(text.format(state=tmp_path / "state", lock=tmp_path / "lock"),
                        tmp_path / "backup.toml")


# -- the plan ---------------------------------------------------------------------


def test_the_recorded_blank_probe_finds_no_filesystem():
    assert blank_probe().type is None


def test_a_root_filesystem_gone_from_the_source_refuses_the_run(tmp_path):
    facts = vanished_root()
    # The layout check alone sees nothing wrong: it compares what the source would copy.
    assert compare_layouts(facts.disks[0]) == []
    with pytest.raises(FilesystemVanished) as caught:
        plan_backup(facts, config(tmp_path), RUN)
    err = caught.value
    assert err.exit_code == FilesystemVanished.exit_code == 37
    text = str(err)
    assert "disk xvda: xvda1: ext4 (UUID 3f1c2b9a-5d4e-4c7b-9a8f-0e1d2c3b4a59) on the " \
           "standby, but on the source: no filesystem found" in text
    assert 'skip_filesystems = ["xvda1"] in [domains.web01]' in text
    assert err.host == "dom0-a"


def test_a_mounts_override_for_the_other_filesystems_does_not_hide_it(tmp_path):
    """The reported case: the operator named the remaining filesystem in [mounts]."""
    cfg = with_domain_keys(tmp_path, '[domains.web01.mounts]\nxvda5 = "/var"\n')
    with pytest.raises(FilesystemVanished, match="xvda1"):
        plan_backup(vanished_root(), cfg, RUN)


def test_a_filesystem_the_tool_does_not_copy_in_place_of_the_standbys_is_vanished(tmp_path):
    swap = parse_blkid_export(recorded("blkid/msdos-p2")["stdout"])
    assert swap.type == "swap"
    facts = source_probe(web01_facts(), "xvda5", swap)
    with pytest.raises(FilesystemVanished, match=r"xvda5: ext4 .* on the standby, but on the "
                                                 r"source: swap space is not copied"):
        plan_backup(facts, config(tmp_path), RUN)


def test_a_whole_disk_filesystem_gone_from_the_source_is_vanished(tmp_path):
    whole = disk_facts("notable-ext4", "xvda", "vg_a", "vg_b", "web01")
    facts = source_probe(BackupFacts("web01", "dom0-a", "dom0-b", "root@dom0-b", 22, (whole,)),
                         "xvda", blank_probe())
    with pytest.raises(FilesystemVanished, match=r"disk xvda: xvda: ext4"):
        plan_backup(facts, config(tmp_path), RUN)


def test_excluding_the_vanished_filesystem_by_name_plans_the_others(tmp_path):
    cfg = with_domain_keys(tmp_path, 'skip_filesystems = ["xvda1"]\n')
    plan = plan_backup(vanished_root(), cfg, RUN)
    assert [f.name for f in plan.filesystems] == ["xvda5", "xvda6"]
    assert not any(s.fs == "xvda1" for s in plan.steps)
    excluded = [s for s in plan.skipped if s.startswith("xvda1: ")]
    assert excluded == ["xvda1: excluded by config (skip_filesystems); ext4 (UUID "
                        "3f1c2b9a-5d4e-4c7b-9a8f-0e1d2c3b4a59) on the standby, but on the "
                        "source: no filesystem found: its standby copy is left as it is"]
    fates = {f.name: f.fate for f in plan.fates}
    assert fates == {"xvda1": "excluded", "xvda2": "skipped", "xvda3": "skipped",
                     "xvda5": "copy", "xvda6": "copy", "xvda7": "skipped"}


def test_an_excluded_healthy_filesystem_is_neither_copied_nor_compared(tmp_path):
    facts = web01_facts()
    disk = facts.disks[0]
    other_uuid = tuple(dataclasses.replace(f, probe=dataclasses.replace(f.probe, uuid="0000"))
                       if f.name == "xvda6" else f for f in disk.standby_filesystems)
    facts = dataclasses.replace(facts, disks=(dataclasses.replace(
        disk, standby_filesystems=other_uuid),))
    cfg = with_domain_keys(tmp_path, 'skip_filesystems = ["xvda6"]\n')
    plan = plan_backup(facts, cfg, RUN)
    assert [f.name for f in plan.filesystems] == ["xvda1", "xvda5"]
    assert "xvda6: excluded by config (skip_filesystems)" in plan.skipped


def test_an_excluded_name_that_is_no_filesystem_of_the_domain_is_a_config_error(tmp_path):
    cfg = with_domain_keys(tmp_path, 'skip_filesystems = ["xvda9"]\n')
    with pytest.raises(ConfigError) as caught:
        plan_backup(web01_facts(), cfg, RUN)
    assert caught.value.exit_code == 3
    assert str(caught.value).startswith(
        f"{cfg.path}: domains.web01.skip_filesystems: xvda9 is no filesystem of domain web01's "
        "disks (they hold: xvda1, xvda2, xvda3, xvda5, xvda6, xvda7)")


def test_swap_on_the_source_and_the_standby_stays_a_quiet_skip(tmp_path):
    facts = web01_facts()
    disk = facts.disks[0]
    swap = next(f for f in disk.filesystems if f.name == "xvda2")
    assert swap.probe.type == "swap"
    assert next(f for f in disk.standby_filesystems if f.name == "xvda2").probe.type == "swap"
    plan = plan_backup(facts, config(tmp_path), RUN)  # no error
    (fate,) = [f for f in plan.fates if f.name == "xvda2"]
    assert (fate.fate, fate.reason) == ("skipped",
                                        "swap space is not copied (recreated by init-standby)")
    # A partition without a filesystem on both sides is quiet too.
    blank = blank_probe()
    both = dataclasses.replace(disk, filesystems=tuple(
        dataclasses.replace(f, probe=blank) if f.name == "xvda2" else f
        for f in disk.filesystems), standby_filesystems=tuple(
        dataclasses.replace(f, probe=blank) if f.name == "xvda2" else f
        for f in disk.standby_filesystems))
    plan = plan_backup(dataclasses.replace(facts, disks=(both,)), config(tmp_path), RUN)
    assert "xvda2: no filesystem found" in plan.skipped


def lvm01_disk(*, source_pv: bool) -> BackupFacts:
    """lvm01's disk from its recorded PV (ext4 xvda1, guest PV xvda2 with LVs root and var);
    without ``source_pv`` the source's xvda2 shows no signature and so no guest LV."""
    vg = vg_of("lvm01-p2-head.bin.gz")
    table = parse_sfdisk(LVM01_SFDISK)
    p1, p2 = table.partitions
    root_probe = FilesystemProbe("ext4", "5eed0017-0000-4000-8000-000000000001", None, None,
                                 None, None)
    pv_probe = FilesystemProbe("LVM2_member", "5eed17-pv", None, "raid", None, None)
    lv_probes = {"root": FilesystemProbe("ext4", "5eed0017-0000-4000-8000-000000000002",
                                         "lvm01-root", None, None, None),
                 "var": FilesystemProbe("ext4", "5eed0017-0000-4000-8000-000000000003",
                                        "lvm01-var", None, None, None)}
    volumes = tuple(FsFacts(f"xvda2.{vg.name}.{vol.name}", p2, lv_probes[vol.name], vol)
                    for vol in vg.volumes)
    standby = (FsFacts("xvda1", p1, root_probe), FsFacts("xvda2", p2, pv_probe), *volumes)
    source = standby if source_pv else (FsFacts("xvda1", p1, root_probe),
                                        FsFacts("xvda2", p2, blank_probe()))
    disk = DomainDisk("xvda", "/dev/vg_a/lvm01", "block", "disk", "xen", False, False, None)
    size = 320 << 20
    d = DiskFacts(disk, lv("vg_a", "lvm01", size), table, source,
                  lv("vg_b", "lvm01", size, "-wi-a-----"), table, standby)
    return BackupFacts("web01", "dom0-a", "dom0-b", "root@dom0-b", 22, (d,))


def test_guest_lvs_gone_with_their_pv_are_vanished_and_excluded_by_the_partition(tmp_path):
    plan = plan_backup(lvm01_disk(source_pv=True), config(tmp_path), RUN)
    assert [f.name for f in plan.filesystems] == ["xvda1", "xvda2.vg_a.root", "xvda2.vg_a.var"]
    facts = lvm01_disk(source_pv=False)
    with pytest.raises(FilesystemVanished) as caught:
        plan_backup(facts, config(tmp_path), RUN)
    text = str(caught.value)
    assert "xvda2.vg_a.root: ext4 (UUID 5eed0017-0000-4000-8000-000000000002) on the " \
           "standby, but guest LV vg_a/root is gone from the source" in text
    assert "xvda2.vg_a.var" in text
    plan = plan_backup(facts, with_domain_keys(tmp_path, 'skip_filesystems = ["xvda2"]\n'),
                       RUN)
    assert [f.name for f in plan.filesystems] == ["xvda1"]
    assert [(f.name, f.fate) for f in plan.fates] == [
        ("xvda1", "copy"), ("xvda2", "excluded"), ("xvda2.vg_a.root", "excluded"),
        ("xvda2.vg_a.var", "excluded")]


# -- the run and its summary ------------------------------------------------------


@pytest.fixture
def stand_ins(monkeypatch):
    """backup_domain with preflight answering ``facts`` and a copy that copies every plan
    filesystem; ``made`` counts executors (one would create snapshots, maps, mounts)."""
    state: dict = {"made": 0}

    def gather(cfg, domain, source, peer_factory, local, state_=None, **kwargs):
        return Preflight(state["facts"], "running", "shut off"), object()

    class Executor:
        def __init__(self, plan, cfg, source, peer, report, **kwargs) -> None:
            state["made"] += 1
            self.plan, self.report = plan, report

        def run(self) -> None:
            for f in self.plan.filesystems:
                self.report.filesystems.append(
                    FilesystemReport(f.name, f.guest_path, f.fstype, "copied", files=3))

    monkeypatch.setattr(app, "gather", gather)
    monkeypatch.setattr(app, "local_node_name", lambda cfg, node=None: "dom0-a")
    monkeypatch.setattr(app, "domain_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(app, "take_inventories", lambda *a, **k: None)
    monkeypatch.setattr(app, "recover_domain", lambda *a, **k: [])
    monkeypatch.setattr(app, "Executor", Executor)
    monkeypatch.setattr(app, "locate", lambda *a, **k: "running")
    monkeypatch.setattr(app, "connect_peer", lambda *a, **k: object())
    monkeypatch.setattr("toolkit.recover.check_state_dir", lambda *a, **k: None)
    return state


def backup(state: dict, cfg, facts: BackupFacts) -> RunReport:
    state["facts"] = facts
    return app.backup(cfg, ["web01"], app.Hosts(source=object()), node="dom0-a")


def test_a_vanished_root_fails_the_run_before_anything_is_made(stand_ins, tmp_path):
    run = backup(stand_ins, config(tmp_path), vanished_root())
    (rep,) = run.domains
    assert stand_ins["made"] == 0  # no snapshot, no mount, no marker: the standby as it was
    assert (rep.outcome, rep.error) == ("failed", "FilesystemVanished")
    assert rep.exit_code == run.exit_code == 37
    lines = summary(run).splitlines()
    assert lines[0].startswith("web01: failed (exit 37) - ")
    assert "  VANISHED xvda1: ext4 (UUID 3f1c2b9a-5d4e-4c7b-9a8f-0e1d2c3b4a59) on the " \
           "standby, but on the source: no filesystem found" in lines
    assert "  xvda5    -            not copied (the run stopped before its copy)" in lines
    assert "  skipped xvda2: swap space is not copied (recreated by init-standby)" in lines
    assert lines[-1] == "exit code 37"


def test_a_vanished_root_excluded_in_the_config_succeeds_and_says_so(stand_ins, tmp_path):
    cfg = with_domain_keys(tmp_path, 'skip_filesystems = ["xvda1"]\n'
                                     '[domains.web01.mounts]\nxvda5 = "/var"\n')
    run = backup(stand_ins, cfg, vanished_root())
    (rep,) = run.domains
    assert (rep.outcome, rep.exit_code, rep.error, run.exit_code) == ("success", 0, "", 0)
    assert rep.message == "2 filesystem(s) copied to dom0-b"
    assert [(f.name, f.fate) for f in rep.fates if f.fate != "skipped"] == [
        ("xvda1", "excluded"), ("xvda5", "copy"), ("xvda6", "copy")]
    lines = summary(run).splitlines()
    (line,) = [x for x in lines if "xvda1" in x]
    assert line.startswith("  skipped xvda1: excluded by config (skip_filesystems); ext4 ")
    assert line.endswith("its standby copy is left as it is")
    assert lines[-1] == "exit code 0"


def test_the_summary_lists_every_filesystem_of_every_disk_once(stand_ins, tmp_path):
    cfg = with_domain_keys(tmp_path, 'skip_filesystems = ["xvda6"]\n')
    run = backup(stand_ins, cfg, web01_facts())
    lines = summary(run).splitlines()
    fs_lines = [x for x in lines if any(x.split(":")[0].split()[-1] == n or
                                        x.split()[0] == n for n in EVERY_FS)]
    named = [next(n for n in EVERY_FS if n in x.split(":")[0].split()) for x in fs_lines]
    assert sorted(named) == sorted(EVERY_FS)  # each once, copied or not
    assert any(x.startswith("  xvda1    -            copied   ") for x in lines)
    assert any(x.startswith("  xvda5    -            copied   ") for x in lines)
    assert "  skipped xvda2: swap space is not copied (recreated by init-standby)" in lines
    assert "  skipped xvda3: extended partition container" in lines
    assert "  skipped xvda6: excluded by config (skip_filesystems)" in lines
    assert any(x.startswith("  skipped xvda7: guest LVM physical volume") for x in lines)
    # The report keeps the list too (the JSON report has it).
    (rep,) = run.domains
    assert [f.name for f in rep.fates] == list(EVERY_FS)


def test_fates_of_a_healthy_guest_copy_what_can_be_copied(tmp_path):
    fates = filesystem_fates(web01_facts(), config(tmp_path))
    assert [(f.name, f.fate) for f in fates] == [
        ("xvda1", "copy"), ("xvda2", "skipped"), ("xvda3", "skipped"), ("xvda5", "copy"),
        ("xvda6", "copy"), ("xvda7", "skipped")]
