"""Skipped disks and filesystems in the run's summary, and the warning exit they decide.

The skipped disks are parsed from domain XML recorded from libvirt's test driver
(fixtures/recorded/virsh/node-disks.xml); preflight, the lock and the copy are
stood in for, so what is tested is how ``backup_domain`` ends and what the
summary printed at the end of a run says.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
from fakes import config, recorded, web01_facts

from toolkit import app
from toolkit.errors import FinishedWithWarnings
from toolkit.facts.virsh import DomainDisk, parse_domain_disks
from toolkit.preflight import SWAP_ONLY, Preflight
from toolkit.report import DomainReport, FilesystemReport, RunReport, summary


def skipped_in(name: str) -> dict[str, DomainDisk]:
    xml = recorded(f"virsh/dumpxml-{name}")["stdout"]
    return {d.target: d for d in parse_domain_disks(xml) if not d.backed_up}


def swap_only_disk() -> DomainDisk:
    """pv01's xvda1 as preflight leaves it once blkid found only swap on it."""
    disk = parse_domain_disks(recorded("virsh/dumpxml-pv01")["stdout"])[0]
    return dataclasses.replace(disk, skip_reason=SWAP_ONLY, warning=False)


@pytest.fixture
def stand_ins(monkeypatch):
    """backup_domain with preflight answering ``facts`` and a copy that succeeds."""
    facts: dict = {}

    def gather(cfg, domain, source, peer_factory, local, state=None, connected=None):
        return Preflight(facts["facts"], "running", "shut off"), object()

    class Executor:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def run(self) -> None:
            pass

    monkeypatch.setattr(app, "gather", gather)
    monkeypatch.setattr(app, "local_node_name", lambda cfg, node=None: "dom0-a")
    monkeypatch.setattr(app, "domain_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(app, "take_inventories", lambda *a, **k: None)
    monkeypatch.setattr(app, "recover_domain", lambda *a, **k: [])
    monkeypatch.setattr(app, "Executor", Executor)
    monkeypatch.setattr(app, "locate", lambda *a, **k: "running")
    monkeypatch.setattr(app, "connect_peer", lambda *a, **k: object())
    monkeypatch.setattr("toolkit.recover.check_state_dir", lambda *a, **k: None)
    return facts


def run_with(state: dict, tmp_path: Path, *skipped: DomainDisk) -> RunReport:
    state["facts"] = dataclasses.replace(web01_facts(), skipped_disks=skipped)
    return app.backup(config(tmp_path), ["web01"], app.Hosts(source=object()), node="dom0-a")


def test_expected_skips_finish_cleanly_and_are_listed(stand_ins, tmp_path):
    """A cdrom, an empty drive, a floppy and a swap-only disk are no warning."""
    qdisk01, fmt01 = skipped_in("qdisk01"), skipped_in("fmt01")
    run = run_with(stand_ins, tmp_path, swap_only_disk(), qdisk01["hdc"], fmt01["fda"])
    (rep,) = run.domains
    assert (rep.outcome, rep.exit_code, rep.error, run.exit_code) == ("success", 0, "", 0)
    text = summary(run)
    assert "  skipped disk xvda1: holds only swap: nothing to copy, no snapshot, and no " \
           "standby LV needed" in text.splitlines()
    assert "  skipped disk hdc: cdrom" in text.splitlines()
    assert "  skipped disk fda: floppy" in text.splitlines()
    assert text.splitlines()[-1] == "exit code 0"


@pytest.mark.parametrize(("xml", "target", "reason"), [
    ("qdisk01", "xvdc", "file-backed"),
    ("fmt01", "vda", "driver type 'qcow2', not raw"),
    ("jobs01", "vdb", "transient"),
    ("jobs01-mirror-handwritten", "vdc", "block job in progress"),
    ("db-01", "vdd", "network"),
    ("db-01", "vdc", "readonly"),
])
def test_a_skipped_data_disk_finishes_with_warnings_naming_it(stand_ins, tmp_path, xml, target,
                                                              reason):
    disk = skipped_in(xml)[target]
    run = run_with(stand_ins, tmp_path, swap_only_disk(), disk, skipped_in("qdisk01")["hdc"])
    (rep,) = run.domains
    assert rep.outcome == "success"  # the copy itself is good: the standby is clean
    assert rep.exit_code == run.exit_code == FinishedWithWarnings.exit_code == 1
    assert rep.error == "FinishedWithWarnings"
    assert f"finished with warnings: not backed up: disk {target} ({reason}" in rep.message
    assert "xvda1" not in rep.message and "hdc" not in rep.message
    lines = summary(run).splitlines()
    assert lines[0].startswith("web01: success (exit 1) - ")
    assert any(line.startswith(f"  skipped disk {target}: {reason}") for line in lines)
    assert lines[-1] == "exit code 1"


def test_the_summary_lists_every_skipped_disk_and_filesystem_with_its_reason():
    rep = DomainReport("web01", run_id="R1", outcome="success", message="1 filesystem(s) copied",
                       skipped=["disk xvdc: file-backed", "xvda2: swap space is not copied "
                                "(recreated by init-standby)", "xvda3: extended partition "
                                "container"],
                       filesystems=[FilesystemReport("xvda1", "/", "ext4", "copied"),
                                    FilesystemReport("xvda5", None, "ext4", "skipped")])
    lines = summary(RunReport("dom0-a", exit_code=0, domains=[rep])).splitlines()
    assert "  skipped disk xvdc: file-backed" in lines
    assert "  skipped xvda2: swap space is not copied (recreated by init-standby)" in lines
    assert "  skipped xvda3: extended partition container" in lines
    assert ("  skipped xvda5: neither the guest fstab nor [mounts] names it "
            "(copy_unlisted = false)") in lines


def test_a_dry_run_lists_what_it_would_skip_and_does_not_warn(stand_ins, tmp_path):
    stand_ins["facts"] = dataclasses.replace(web01_facts(),
                                             skipped_disks=(skipped_in("qdisk01")["xvdc"],))
    rep = app.backup_domain(config(tmp_path), "web01", app.Hosts(source=object()),
                            node="dom0-a", dry_run=True)
    assert (rep.outcome, rep.exit_code) == ("dry-run", 0)
    assert "disk xvdc: file-backed" in rep.skipped
