"""R25, the backup's half: a standby whose marker says ``promoted`` is never written. The
backup refuses in preflight, before anything is made on either host, with its own code;
and if promote marked it after preflight looked, the dirty marker's read refuses it."""

from __future__ import annotations

import json

import pytest
from fakes import FakeHost, config, web01_facts
from test_preflight import patch, records, run_gather

from toolkit import errors
from toolkit.execute import Executor
from toolkit.marker import marker_path, new_marker, read_peer_marker
from toolkit.plan import plan_backup
from toolkit.report import DomainReport

RUN = "20260101T000000Z-abcd"
PROMOTED = {"domain": "web01", "state": "promoted", "run_id": "20261204T020000Z-1a2b",
            "source_host": "dom0-a", "promoted_at": 1796349612.5,
            "promoted_from": "the standby (run 20261204T020000Z-1a2b)"}


def test_preflight_refuses_a_promoted_standby_with_its_own_code_and_says_what_to_do():
    recs = patch(records(), "peer", "cat", stdout=json.dumps(PROMOTED))
    with pytest.raises(errors.StandbyPromoted) as exc:
        run_gather(recs)
    assert exc.value.exit_code == 24 and exc.value.host == "dom0-b"
    text = str(exc.value)
    assert "standby of web01 on dom0-b was promoted at 2026-12-04 " in text
    assert "Nothing was changed" in text and "When the source Dom0 dies" in text


@pytest.mark.parametrize("marker", [None, "dirty", "clean"])
def test_a_missing_clean_or_dirty_marker_lets_the_backup_through(marker):
    recs = records()
    if marker is None:
        recs = patch(recs, "peer", "cat", exit_code=1, stdout="",
                     stderr="cat: /var/lib/domu-backup/standby/web01.json: No such file\n")
    else:
        recs = patch(recs, "peer", "cat", stdout=json.dumps({**PROMOTED, "state": marker}))
    _, pre, _ = run_gather(recs)
    assert [d.disk.target for d in pre.facts.disks] == ["xvda"]


def test_promoted_after_preflight_the_run_writes_nothing_to_the_standby(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg = config(tmp_path)
    peer.files[marker_path(cfg, "web01")] = json.dumps(PROMOTED)
    plan = plan_backup(web01_facts(), cfg, RUN)
    with pytest.raises(errors.StandbyPromoted):
        Executor(plan, cfg, src, peer, DomainReport("web01")).run()
    assert json.loads(peer.files[marker_path(cfg, "web01")]) == PROMOTED
    assert [c for c in src.calls if "rsync" in c] == []  # no copy (it runs under setpriv)
    assert not [w for w in peer.boot_writes]
    assert src.leftovers() == [] and peer.leftovers() == []


def test_status_reads_a_promoted_marker_as_a_marker():
    class Peer(FakeHost):
        pass
    peer = Peer("dom0-b")
    peer.files["/m.json"] = json.dumps(PROMOTED)
    assert read_peer_marker(peer, "/m.json")["state"] == "promoted"


def test_a_backup_never_writes_the_promoted_state_itself():
    # Only promote makes a marker promoted; a run's marker is clean or dirty.
    assert new_marker("web01", "dirty", RUN, "dom0-a", PROMOTED)["state"] == "dirty"
