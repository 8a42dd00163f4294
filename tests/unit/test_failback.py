"""failback: the way back after a promote. Its checks (the standby promoted, the guest shut
down here, the original source not running it and still defining its disks), the config of
the copy back, and the roles returned afterwards."""

from __future__ import annotations

import json

import pytest
from fakes import config
from test_promote import CLEAN, SOURCE_XML, VirshHost

from toolkit import errors
from toolkit.failback import check_failback, render_failback, return_roles, reversed_config
from toolkit.marker import marker_path
from toolkit.standby_xml import definition_path

PROMOTED = {**CLEAN, "state": "promoted", "promoted_at": 2.0}


def setup(tmp_path, *, marker=PROMOTED, here="shut off", there="shut off", source_xml=True):
    cfg = config(tmp_path)
    peer, source = VirshHost("dom0-b"), VirshHost("dom0-a")
    peer.files[marker_path(cfg, "web01")] = json.dumps(marker)
    if here:
        peer.domains["web01"] = here
    if there:
        source.domains["web01"] = there
    if source_xml:
        source.definitions["web01"] = SOURCE_XML
    return cfg, peer, source


def check(cfg, peer, source):
    return check_failback(cfg, "web01", peer, "dom0-b", lambda name: source)


def test_a_promoted_standby_shut_down_here_goes_back_onto_the_sources_own_lvs(tmp_path):
    cfg, peer, source = setup(tmp_path)
    report, marker, runner = check(cfg, peer, source)
    assert (report.back_to, report.disks, runner) == ("dom0-a", {"xvda": "/dev/vg_a/web01"},
                                                      source)
    assert marker["state"] == "promoted"
    # Read with --inactive on the original source: the definition it boots from.
    assert [c for c in source.calls if c[3:5] == ("dumpxml", "--inactive")]


@pytest.mark.parametrize(("kw", "words"), [
    ({"marker": CLEAN}, "is clean, not promoted: there is nothing to fail back"),
    ({"here": "running"}, "is running here; shut it down first"),
    ({"here": None}, "is not defined here"),
    ({"there": "running"}, "is running on dom0-a: the copy back would overwrite"),
    ({"there": None}, "dom0-a has no definition of web01 to copy back to"),
])
def test_each_check_refuses_before_anything_is_copied(tmp_path, kw, words):
    cfg, peer, source = setup(tmp_path, **kw)
    with pytest.raises(errors.PromoteRefused, match=words):
        check(cfg, peer, source)
    assert not [c for c in peer.calls + source.calls if c[0] in ("rsync", "lvcreate")]


def test_the_copy_back_has_the_source_as_its_peer_and_no_restore_points(tmp_path):
    cfg = config(tmp_path)
    rev = reversed_config(cfg, "web01", "dom0-a", {"xvda": "/dev/vg_a/web01"})
    dom = rev.domain("web01")
    assert dom.peer == "dom0-a" and dom.disks["xvda"].standby_lv == "/dev/vg_a/web01"
    assert not dom.effective_restore_points(rev.defaults).retention.enabled
    assert cfg.domain("web01").peer == "dom0-b"  # the config itself is unchanged
    assert rev.domains.keys() == cfg.domains.keys()


def test_the_roles_return_the_standby_clean_the_guest_on_its_source(tmp_path):
    cfg, peer, source = setup(tmp_path)
    report, marker, _ = check(cfg, peer, source)
    source.files[marker_path(cfg, "web01")] = "{}"  # the copy back's own records there
    source.files[definition_path(cfg.defaults.state_dir, "web01")] = "<domain/>"
    return_roles(cfg, report, marker, peer, source, start=True, run_id="20261207T130000Z-0001")
    after = json.loads(peer.files[marker_path(cfg, "web01")])
    assert (after["state"], after["last_success_run_id"], after["source_host"]) == (
        "clean", "20261207T130000Z-0001", "dom0-a")
    assert after["standby"] == CLEAN["standby"]
    assert peer.domains == {} and source.domains == {"web01": "running"}
    assert marker_path(cfg, "web01") not in source.files
    assert definition_path(cfg.defaults.state_dir, "web01") not in source.files
    assert "runs on dom0-a again" in render_failback(report)


def test_no_start_leaves_the_guest_shut_off_on_its_source(tmp_path):
    cfg, peer, source = setup(tmp_path)
    report, marker, _ = check(cfg, peer, source)
    return_roles(cfg, report, marker, peer, source, start=False, run_id="R")
    assert source.domains == {"web01": "shut off"} and not report.started and report.done
