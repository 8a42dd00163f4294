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
    with pytest.raises(errors.StandbyInvalid) as info:
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
    assert not isinstance(info.value, errors.StandbyInvalid)
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


# -- where the domain runs, and which host this is -------------------------------------

def _with_peer(peer: str):
    """The sandbox config with web01's peer set to ``peer`` (past the parser's own check)."""
    import dataclasses

    from toolkit.config import load_config

    cfg = load_config(CONFIG, check_permissions=False)
    domains = dict(cfg.domains)
    domains["web01"] = dataclasses.replace(domains["web01"], peer=peer)
    return dataclasses.replace(cfg, domains=domains)


def _source(recs: list[dict]) -> ReplayRunner:
    return ReplayRunner("dom0-a", [r for r in recs if r["role"] == "source"])


@pytest.mark.parametrize(("peer", "said"), [
    ("dom0-a", "domain web01 runs here and its peer 'dom0-a' is this host; set "
               "domains.web01.peer to the other Dom0 in "),
    ("dom0-c", "domain web01: peer 'dom0-c' is not a configured Dom0"),
])
def test_a_domain_running_here_needs_another_configured_dom0_as_its_peer(peer, said):
    from toolkit.preflight import locate

    cfg = _with_peer(peer)
    with pytest.raises(errors.PeerInvalid) as info:
        locate(cfg, "web01", _source(records()), "dom0-a")
    assert said in str(info.value) and info.value.host == "dom0-a"


def test_a_domain_not_defined_here_is_said_naming_the_hypervisor():
    from toolkit.preflight import locate

    cfg = _with_peer("dom0-b")
    recs = patch(records(), "source", "virsh", exit_code=1, stdout="",
                 stderr="error: failed to get domain 'web01'\n")
    with pytest.raises(errors.DomainNotDefinedHere) as info:
        locate(cfg, "web01", _source(recs), "dom0-a")
    assert str(info.value) == (f"[dom0-a] domain web01 is not defined in "
                               f"{cfg.hypervisor_uri}")


def test_a_hypervisor_that_cannot_answer_is_its_own_error_not_a_missing_domain():
    from toolkit.preflight import locate

    cfg = _with_peer("dom0-b")
    recs = patch(records(), "source", "virsh", exit_code=1, stdout="",
                 stderr="error: failed to connect to the hypervisor\n")
    with pytest.raises(errors.CommandFailed, match="failed to connect to the hypervisor") as i:
        locate(cfg, "web01", _source(recs), "dom0-a")
    assert not isinstance(i.value, errors.DomainNotDefinedHere)
    assert i.value.result.argv[:2] == ("virsh", "-c") and i.value.result.argv[-1] == "web01"


def test_this_hosts_name_is_the_option_then_the_environment_then_the_short_hostname(
        monkeypatch):
    import socket

    from toolkit.preflight import local_node_name

    cfg = _with_peer("dom0-b")
    monkeypatch.setattr(socket, "gethostname", lambda: "dom0-b.example.org")
    monkeypatch.delenv("DOMU_BACKUP_NODE", raising=False)
    assert local_node_name(cfg) == "dom0-b"
    monkeypatch.setenv("DOMU_BACKUP_NODE", "dom0-a")
    assert local_node_name(cfg) == "dom0-a"
    assert local_node_name(cfg, "dom0-b") == "dom0-b"
    monkeypatch.setenv("DOMU_BACKUP_NODE", "dom0-x")
    with pytest.raises(errors.HostNotInCluster) as info:
        local_node_name(cfg)
    assert str(info.value) == (f"[dom0-x] this host is 'dom0-x', which is not one of the "
                               f"configured Dom0s (dom0-a, dom0-b) in {cfg.path}; fix "
                               "[cluster.dom0s] or pass --node")


def test_gather_uses_the_state_and_the_peer_connection_it_is_given():
    from toolkit.preflight import gather

    cfg = _with_peer("dom0-b")
    recs = records()
    peer = ReplayRunner("dom0-b", [r for r in recs if r["role"] == "peer"])

    def no_factory(name: str):
        raise AssertionError("connected twice")

    pre, got = gather(cfg, "web01", _source(recs), no_factory, "dom0-a", state="paused",
                      connected=peer)
    assert got is peer and pre.source_state == "paused" and pre.peer_state == "shut off"


def test_each_standby_refusal_names_the_peer_and_what_to_do():
    from test_preflight import LSBLK, _lvs

    missing = patch(records(), "peer", "lvs", exit_code=5, stdout="",
                    stderr='  Failed to find logical volume "vg_b/web01"\n')
    is_open = _lvs(records(), "peer", lv_attr="-wi-ao----") + [
        {"role": "peer", "argv": LSBLK, "exit_code": 0, "stdout": "vg_b-web01 lvm\n",
         "stderr": ""}]
    small = _lvs(records(), "peer", lv_size="1048576")
    said = {
        "missing": "standby LV /dev/vg_b/web01 for disk xvda does not exist; create it (at "
                   f"least {SOURCE_LV_BYTES} bytes) and run init-standby",
        "open": "standby LV /dev/vg_b/web01 is open (in use) on dom0-b, not by this tool: "
                "held by a process or a guest, not a device (find it with `fuser -vm "
                "/dev/vg_b/web01` or `dmsetup info`); stop that use, then run the backup "
                "again (if another Dom0's run of this domain was killed, run `domu-backup "
                "recover` there)",
        "small": "standby LV /dev/vg_b/web01 is 1048576 bytes, smaller than the source "
                 f"/dev/vg_a/web01 ({SOURCE_LV_BYTES} bytes)",
    }
    for name, recs in (("missing", missing), ("open", is_open), ("small", small)):
        with pytest.raises(errors.StandbyInvalid) as info:
            run_gather(recs)
        assert str(info.value) == f"[dom0-b] {said[name]}", name
        assert info.value.host == "dom0-b"


def test_the_room_needed_is_the_sum_of_the_snapshots_of_one_volume_group(tmp_path):
    # pv01 with its first disk holding ext4 (not swap): two disks in vg_a, two snapshots
    from fakes import RECORDED, recorded
    from test_preflight import SWAP_LV, answer, config_with, pv01_records

    from toolkit.config import load_config
    from toolkit.facts.fsparams import read_argv
    from toolkit.facts.virsh import parse_domain_disks
    from toolkit.preflight import _source_disks

    recs = pv01_records(answer("peer", ["true"]))
    ext4 = recorded("blkid/notable-ext4")
    for r in recs:
        if r["argv"][:2] == ["blkid", "-p"] and r["argv"][-1] == SWAP_LV:
            r["stdout"] = ext4["stdout"].replace(ext4["argv"][-1], SWAP_LV)
    head = (RECORDED / "fsparams" / "ext4-new.head.bin").read_bytes()
    recs.append(answer("source", read_argv(SWAP_LV, 0), head.decode("utf-8", "surrogateescape")))
    cfg = load_config(config_with(tmp_path, "pv01", "xvda2"), check_permissions=False)
    source = _source(recs)
    xml = next(r["stdout"] for r in recs if "dumpxml" in r["argv"])
    backed = [d for d in parse_domain_disks(xml, "pv01") if d.skip_reason is None]
    assert len(backed) == 2
    _disks, need, free = _source_disks(cfg, "pv01", source, "dom0-a", backed)
    assert need == {"vg_a": 2 * (64 << 20)} and set(free) == {"vg_a"}
