"""Preflight's refusals, each with the one line an operator reads (R27), on the lab's recording.

Each test fails when its check is taken out or says something else: a domain with no disk
to copy, a source disk that is itself a snapshot, a standby that cannot be read, too
little room for the snapshots, programs missing or `which` itself failing, the domain
running on the peer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_preflight import CONFIG, patch, records, run_gather

from toolkit import errors
from toolkit.preflight import PEER_BINARIES, connect_peer
from toolkit.replay import ReplayRunner

SOURCE_LV_BYTES = 268435456  # web01's LV in the recording


def _vg_free(recs: list[dict], free: str | None) -> list[dict]:
    """The source's vgs answer with vg_free set (or the VG left out of the report)."""
    out = [dict(r) for r in recs]
    for r in out:
        if r["argv"][0] == "vgs":
            if free is None:
                data = json.loads(r["stdout"])
                data["report"][0]["vg"] = []
                r["stdout"] = json.dumps(data)
            else:
                r["stdout"] = re.sub(r'"vg_free":"\d+"', f'"vg_free":"{free}"', r["stdout"])
    return out


def _config(tmp_path: Path, snapshot_size: str) -> Path:
    text = CONFIG.read_text()
    assert text.count('snapshot_size = "64M"') == 1
    path = tmp_path / "backup.toml"
    path.write_text(text.replace('snapshot_size = "64M"', f'snapshot_size = "{snapshot_size}"'))
    return path


# -- room for the snapshots -----------------------------------------------------------

@pytest.mark.parametrize(("size", "need"), [
    ("10%ORIGIN", SOURCE_LV_BYTES * 10 // 100),  # 26843545.6 rounded down
    ("33%ORIGIN", SOURCE_LV_BYTES * 33 // 100),
    ("64M", 64 << 20),
])
def test_the_snapshot_fits_exactly_the_room_left_and_not_a_byte_less(tmp_path, size, need):
    cfg_path = _config(tmp_path, size)
    _, pre, _ = run_gather(_vg_free(records(), str(need)), config_path=cfg_path)
    assert [d.disk.target for d in pre.facts.disks] == ["xvda"]
    with pytest.raises(errors.NoSnapshotSpace) as info:
        run_gather(_vg_free(records(), str(need - 1)), config_path=cfg_path)
    assert str(info.value).endswith(
        f"volume group vg_a has {need - 1} bytes free, the snapshots need {need}; lower "
        "snapshot_size or free space")
    assert info.value.host == "dom0-a"


def test_a_volume_group_vgs_does_not_report_has_no_room(tmp_path):
    with pytest.raises(errors.NoSnapshotSpace, match="vg_a has 0 bytes free, the snapshots "
                                                     f"need {64 << 20}"):
        run_gather(_vg_free(records(), None))


# -- the disks ---------------------------------------------------------------------------

def test_a_source_disk_that_is_itself_a_snapshot_is_refused():
    recs = [dict(r) for r in records()]
    for r in recs:
        if r["role"] == "source" and r["argv"][0] == "lvs":
            r["stdout"] = re.sub(r'"lv_attr":"[^"]*"', '"lv_attr":"swi-aos---"', r["stdout"])
            r["stdout"] = re.sub(r'"origin":"[^"]*"', '"origin":"web01-base"', r["stdout"])
    with pytest.raises(errors.TargetInvalid) as info:
        run_gather(recs)
    assert str(info.value).endswith("disk xvda: /dev/vg_a/web01 is itself a snapshot")
    assert info.value.host == "dom0-a"


def test_a_domain_without_a_block_device_disk_is_refused_listing_its_disks():
    recs = [dict(r) for r in records()]
    for r in recs:
        if "dumpxml" in r["argv"]:
            r["stdout"] = r["stdout"].replace("type='block'", "type='network'", 1)
    with pytest.raises(errors.DomainUnknown) as info:
        run_gather(recs)
    message = str(info.value)
    assert re.search(r"domain web01 has no block-device disk to back up \(xvda: [^,)]+\)$",
                     message), message
    assert info.value.host == "dom0-a"


def test_a_standby_that_cannot_be_read_is_that_error_not_a_missing_standby():
    recs = patch(records(), "peer", "lvs", exit_code=3, stdout="",
                 stderr="  Internal error: the metadata area is damaged\n")
    with pytest.raises(errors.CommandFailed, match="metadata area is damaged") as info:
        run_gather(recs)
    assert not isinstance(info.value, errors.TargetInvalid)
    assert info.value.host == "dom0-b"


def test_the_domain_running_on_the_peer_is_refused_in_one_line():
    recs = patch(records(), "peer", "virsh", stdout="paused\n\n")
    with pytest.raises(errors.DomainRunningOnPeer) as info:
        run_gather(recs)
    assert str(info.value).endswith(
        "domain web01 is paused on dom0-b: its standby disks are in use there; refusing to "
        "touch them")
    assert info.value.host == "dom0-b"


# -- the programs ----------------------------------------------------------------------

def test_missing_programs_are_listed_with_the_packages_to_install():
    recs = patch(records(), "source", "which", exit_code=1,
                 stdout="/usr/bin/virsh\n/usr/sbin/lvs\n")
    with pytest.raises(errors.MissingBinary) as info:
        run_gather(recs)
    message = str(info.value)
    assert "missing programs: vgs, lvcreate, lvremove, kpartx, dmsetup, blkid, sfdisk, " \
           "findmnt, mount, umount, rsync, ssh, setpriv (install them, e.g. lvm2, kpartx, " \
           "rsync, openssh-client, util-linux, libvirt-clients)" in message
    assert info.value.host == "dom0-a"


def test_a_which_that_fails_is_not_read_as_programs_missing():
    stderr = "which: " + "x" * 300 + " the end\n"
    recs = patch(records(), "source", "which", exit_code=2, stdout="", stderr=stderr)
    with pytest.raises(errors.MissingBinary) as info:
        run_gather(recs)
    message = str(info.value)
    assert "cannot look up programs: `which` exited 2: " in message
    assert message.endswith(": " + stderr.strip()[-200:])
    assert "missing programs" not in message and info.value.host == "dom0-a"


def test_connecting_to_the_peer_checks_its_programs_first():
    recs = [r for r in records() if r["role"] == "peer"]
    peer = ReplayRunner("dom0-b", recs)
    made: list[str] = []

    def factory(name: str) -> ReplayRunner:
        made.append(name)
        return peer

    assert connect_peer(factory, "dom0-b") is peer
    assert made == ["dom0-b"] and peer.calls[0] == ("which", *PEER_BINARIES)
    lacking = ReplayRunner("dom0-b", patch(recs, "peer", "which", exit_code=1, stdout=""))
    with pytest.raises(errors.MissingBinary, match="missing programs: virsh, lvs") as info:
        connect_peer(lambda name: lacking, "dom0-b")
    assert info.value.host == "dom0-b"
