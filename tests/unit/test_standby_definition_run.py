"""The standby definition a clean run leaves on the peer beside the marker (for promote):
read on the source before anything is written, written before the clean marker."""

from __future__ import annotations

import json

import pytest
from fakes import FakeHost, config, recorded, web01_facts
from lxml import etree

from toolkit import errors
from toolkit.execute import Executor
from toolkit.journal import unwrap_replace
from toolkit.marker import marker_path
from toolkit.plan import plan_backup
from toolkit.report import DomainReport
from toolkit.runners import CommandResult
from toolkit.standby_xml import definition_path

RUN = "20260101T000000Z-abcd"


def _run(tmp_path, src: FakeHost, peer: FakeHost):
    cfg = config(tmp_path)
    plan = plan_backup(web01_facts(), cfg, RUN)
    report = DomainReport("web01")
    Executor(plan, cfg, src, peer, report).run()
    return cfg, plan, report


def test_a_clean_run_writes_the_definition_with_each_disk_on_its_standby_lv(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg, plan, report = _run(tmp_path, src, peer)
    text = peer.files[definition_path(cfg.defaults.state_dir, "web01")]
    dom = etree.fromstring(text.encode())
    disks = {d.find("target").get("dev"): d for d in dom.iterfind("devices/disk")}
    assert (disks["xvda"].get("type"), disks["xvda"].find("source").get("dev")) == (
        "block", "/dev/vg_b/web01")
    # The disks the backup leaves out keep the source's paths (the log names them).
    assert disks["xvdb"].find("source").get("dev") == "/dev/vg0/web01-data"
    assert dom.findtext("name") == "web01"
    # Read with --inactive on the source: the definition the domain boots from next.
    assert [c for c in src.calls if c[0] == "virsh"] == [
        ("virsh", "-c", cfg.hypervisor_uri, "dumpxml", "--inactive", "--", "web01")]
    # Written before the marker says clean, in one atomic command.
    order = [p for p in map(unwrap_replace, peer.calls) if p]
    assert order[-2:] == [definition_path(cfg.defaults.state_dir, "web01"),
                          marker_path(cfg, "web01")]
    assert "definition" in report.phases
    assert [c for c in src.calls if "rsync" in c]  # what the refusals below look for
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_definition_that_cannot_be_read_stops_the_run_before_the_standby_is_touched(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg = config(tmp_path)
    marker = marker_path(cfg, "web01")
    before = json.dumps({"state": "clean", "last_success": 1.0, "last_success_run_id": "x"})
    peer.files[marker] = before
    src.definitions["web01"] = "<domain><name>web01</name><devices><disk"  # cut short
    plan = plan_backup(web01_facts(), cfg, RUN)
    with pytest.raises(errors.ParseError):
        Executor(plan, cfg, src, peer, DomainReport("web01")).run()
    assert peer.files[marker] == before  # never marked dirty
    assert not [c for c in peer.calls if "rsync" in c or c[:1] == ("dd",)]
    assert [c for c in src.calls if "rsync" in c] == []  # no copy (it runs under setpriv)
    assert definition_path(cfg.defaults.state_dir, "web01") not in peer.files
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_failed_virsh_read_is_the_command_that_failed(tmp_path):
    def refuse(argv):
        if argv[0] == "virsh":
            return CommandResult("dom0-a", argv, 1, "", "error: failed to connect\n", 0.0)
        return None
    src, peer = FakeHost("dom0-a", fail=refuse), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    with pytest.raises(errors.CommandFailed, match="dumpxml --inactive"):
        _run(tmp_path, src, peer)
    assert marker_path(config(tmp_path), "web01") not in peer.files


def test_a_disk_only_the_running_domain_has_is_logged_and_the_run_goes_on(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    xml = recorded("virsh/dumpxml-web01")["stdout"]
    start, end = xml.index("<disk"), xml.index("</disk>") + len("</disk>")
    src.definitions["web01"] = xml[:start] + xml[end:]  # xvda hot-plugged: live only
    cfg = config(tmp_path)
    plan = plan_backup(web01_facts(), cfg, RUN)
    lines: list[str] = []
    Executor(plan, cfg, src, peer, DomainReport("web01"), log=lines.append).run()
    assert '"state": "clean"' in peer.files[marker_path(cfg, "web01")]
    assert [m for m in lines if m.startswith("standby definition: disk xvda")] == [
        "standby definition: disk xvda: attached to the running domain only, not in its "
        "definition; add it after promoting (/dev/vg_b/web01)"]


def test_verify_against_source_reads_and_writes_no_definition(tmp_path):
    plan = plan_backup(web01_facts(), config(tmp_path), RUN, compare=True)
    assert not [s for s in plan.steps if s.action in ("defread", "defwrite")]
