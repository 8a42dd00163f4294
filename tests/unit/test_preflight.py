"""Preflight and plan on facts recorded in the lab (a replay runner answers the commands)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from fakes import RECORDED, recorded
from test_plan import check_golden

from toolkit import errors
from toolkit.config import load_config
from toolkit.facts.fsparams import read_argv
from toolkit.plan import plan_backup, render_plan
from toolkit.preflight import gather, local_node_name
from toolkit.replay import ReplayRunner
from toolkit.runners import DEFAULT_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
RECORDING = ROOT / "fixtures" / "replay" / "web01-on-dom0-a.json"
CONFIG = ROOT / "fixtures" / "sandbox" / "backup.toml"
RUN = "20260101T000000Z-0000"


def records() -> list[dict]:
    return json.loads(RECORDING.read_text())


def patch(recs: list[dict], role: str, argv0: str, **changes) -> list[dict]:
    """Change the first recorded result of `argv0` on one host."""
    out = [dict(r) for r in recs]
    for r in out:
        if r["role"] == role and r["argv"][0] == argv0:
            r.update(changes)
            break
    else:
        raise AssertionError(f"no {argv0} recorded on {role}")
    return out


def run_gather(recs: list[dict], domain: str = "web01", node: str = "dom0-a",
               config_path: Path = CONFIG):
    cfg = load_config(config_path, check_permissions=False)
    source = ReplayRunner("dom0-a", [r for r in recs if r["role"] == "source"])
    peer = ReplayRunner("dom0-b", [r for r in recs if r["role"] == "peer"])
    peers_made: list[str] = []

    def peer_factory(name: str) -> ReplayRunner:
        peers_made.append(name)
        return peer

    pre, _ = gather(cfg, domain, source, peer_factory, local_node_name(cfg, node))
    return cfg, pre, peers_made


def test_recorded_lab_facts_give_the_expected_plan():
    cfg, pre, peers = run_gather(records())
    assert peers == ["dom0-b"]
    (disk,) = pre.facts.disks
    assert disk.table.label == "dos"
    assert [(f.name, f.probe.type) for f in disk.filesystems] == [
        ("xvda1", "ext4"), ("xvda2", "ext4"), ("xvda3", "swap")]
    assert disk.standby_lv.path == "/dev/vg_b/web01"
    plan = plan_backup(pre.facts, cfg, RUN)
    check_golden("plan-lab-web01.txt", render_plan(plan))


@pytest.mark.parametrize(("role", "argv0", "changes", "error", "words"), [
    ("source", "virsh", {"stdout": "shut off\n\n"}, errors.NotRunningHere, "shut off here"),
    ("peer", "virsh", {"stdout": "running\n\n"}, errors.DomainRunningOnPeer, "running on dom0-b"),
    ("source", "which", {"stdout": "/usr/bin/virsh\n", "exit_code": 1}, errors.MissingBinary,
     "rsync"),
    ("peer", "which", {"stdout": "", "exit_code": 1}, errors.MissingBinary, "kpartx"),
])
def test_each_failed_check_names_host_and_fix(role, argv0, changes, error, words):
    with pytest.raises(error) as info:
        run_gather(patch(records(), role, argv0, **changes))
    assert words in str(info.value)
    assert info.value.host in ("dom0-a", "dom0-b")


def _lvs(recs: list[dict], role: str, **fields) -> list[dict]:
    out = [dict(r) for r in recs]
    for r in out:
        if r["role"] == role and r["argv"][0] == "lvs":
            data = json.loads(r["stdout"])
            data["report"][0]["lv"][0].update(fields)
            r["stdout"] = json.dumps(data)
            return out
    raise AssertionError("no lvs")


LSBLK = ["lsblk", "--noheadings", "--list", "--output", "NAME,TYPE,MOUNTPOINT", "--",
         "/dev/vg_b/web01"]


@pytest.mark.parametrize(("listing", "said"), [
    ("vg_b-web01 lvm\nmyalias dm\nmyaliasp1 part /mnt/x\n",
     "held by myalias (dm), myaliasp1 (part, mounted at /mnt/x)"),
    ("vg_b-web01 lvm\n", "held by a process or a guest, not a device (find it with `fuser"),
])
def test_standby_lv_in_use_is_refused_naming_its_holder_and_what_to_do(listing, said):
    recs = _lvs(records(), "peer", lv_attr="-wi-ao----")
    recs.append({"role": "peer", "argv": LSBLK, "exit_code": 0, "stdout": listing,
                 "stderr": ""})
    with pytest.raises(errors.StandbyInvalid) as raised:
        run_gather(recs)
    message = str(raised.value)
    assert "is open (in use) on dom0-b, not by this tool" in message
    assert said in message and "domu-backup recover" in message


def test_smaller_standby_lv_is_refused():
    with pytest.raises(errors.StandbyInvalid, match="smaller"):
        run_gather(_lvs(records(), "peer", lv_size="1048576"))


def test_missing_standby_lv_is_refused():
    recs = patch(records(), "peer", "lvs", exit_code=5, stdout="",
                 stderr='  Failed to find logical volume "vg_b/web01"\n')
    with pytest.raises(errors.StandbyInvalid, match="does not exist"):
        run_gather(recs)


def test_no_room_for_the_snapshot():
    recs = [dict(r) for r in records()]
    for r in recs:
        if r["argv"][0] == "vgs":
            r["stdout"] = re.sub(r'"vg_free":"\d+"', '"vg_free":"1048576"', r["stdout"])
    with pytest.raises(errors.NoSnapshotSpace, match="vg_a"):
        run_gather(recs)


def test_domain_not_running_here_never_contacts_the_peer():
    recs = patch(records(), "source", "virsh", stdout="shut off\n\n")
    with pytest.raises(errors.NotRunningHere):
        run_gather(recs)
    assert errors.NotRunningHere.exit_code == 0


def test_host_outside_the_cluster_is_refused():
    cfg = load_config(CONFIG, check_permissions=False)
    with pytest.raises(errors.HostNotInCluster, match="dom0-c"):
        local_node_name(cfg, "dom0-c")


def test_unrecorded_command_is_an_error_not_a_guess():
    with pytest.raises(KeyError):
        ReplayRunner("x", []).run(["lvs"])


class _Watched(ReplayRunner):
    """A replay runner that calls ``before(argv)`` ahead of each command."""

    def __init__(self, host, recs, before):
        super().__init__(host, recs)
        self.before = before

    def run(self, argv, **kw):
        self.before(tuple(argv))
        return super().run(argv, **kw)


def test_the_peers_reads_run_beside_the_sources():
    import threading

    recs = records()
    peer_started = threading.Event()
    waited: list[bool] = []

    def hold_dumpxml(argv):
        # Run one after the other (the peer only after the source's reads), the
        # source's dumpxml would wait here in vain for the peer's first command.
        if "dumpxml" in argv:
            waited.append(peer_started.wait(5))

    source = _Watched("dom0-a", [r for r in recs if r["role"] == "source"], hold_dumpxml)
    peer = _Watched("dom0-b", [r for r in recs if r["role"] == "peer"],
                    lambda argv: peer_started.set())
    cfg = load_config(CONFIG, check_permissions=False)
    pre, got = gather(cfg, "web01", source, lambda name: peer, local_node_name(cfg, "dom0-a"))
    assert waited == [True]
    assert got is peer and pre.facts.disks[0].standby_lv.path == "/dev/vg_b/web01"


def test_the_peers_domain_state_and_standby_reads_run_side_by_side():
    import threading

    recs = records()
    lvs_started = threading.Event()
    waited: list[bool] = []

    def on_peer(argv):
        if argv[0] == "lvs":
            lvs_started.set()
        if "domstate" in argv:
            # One after the other, the standby's lvs would only start after this.
            waited.append(lvs_started.wait(5))

    source = ReplayRunner("dom0-a", [r for r in recs if r["role"] == "source"])
    peer = _Watched("dom0-b", [r for r in recs if r["role"] == "peer"], on_peer)
    cfg = load_config(CONFIG, check_permissions=False)
    pre, _ = gather(cfg, "web01", source, lambda name: peer, local_node_name(cfg, "dom0-a"))
    assert waited == [True] and pre.peer_state == "shut off"
    assert pre.facts.disks[0].standby_lv.path == "/dev/vg_b/web01"
    # the programs were checked (and the connection made) before anything else
    assert peer.calls[0][0] == "which"


def test_a_source_error_wins_over_a_peer_error_and_the_peer_thread_has_ended():
    import threading

    recs = patch(records(), "peer", "which", stdout="", exit_code=1)
    recs = patch(recs, "source", "lvs", exit_code=5, stdout="",
                 stderr='  Failed to find logical volume "vg_a/web01"\n')
    with pytest.raises(errors.StandbyInvalid, match="not an LVM logical volume") as info:
        run_gather(recs)
    assert info.value.host == "dom0-a"
    assert not [t for t in threading.enumerate() if t.name.startswith("preflight-peer")]


def test_a_peer_that_cannot_be_reached_is_reported_from_the_peer_thread():
    cfg = load_config(CONFIG, check_permissions=False)
    source = ReplayRunner("dom0-a", [r for r in records() if r["role"] == "source"])

    def unreachable(name):
        raise errors.ConnectionLost("ssh root@dom0-b:22: connection refused", host=name)

    with pytest.raises(errors.ConnectionLost, match="connection refused") as info:
        gather(cfg, "web01", source, unreachable, local_node_name(cfg, "dom0-a"))
    assert info.value.host == "dom0-b"


# -- disks as operators declare them ------------------------------------------------------
# The lab's web01 recording, answered for a domain whose XML was recorded from libvirt's
# test driver (fixtures/recorded/virsh/node-disks.xml), plus what its other disks answer.

LVS = records()[3]
assert LVS["role"] == "source" and LVS["argv"][0] == "lvs"


def as_domain(domain: str, *extra: dict) -> list[dict]:
    out = []
    for r in records():
        r = dict(r)
        if r["argv"][0] == "virsh":
            r["argv"] = [*r["argv"][:-1], domain]
            if "dumpxml" in r["argv"]:
                r["stdout"] = recorded(f"virsh/dumpxml-{domain}")["stdout"]
        elif r["argv"][0] == "cat":  # the standby's marker
            r["argv"] = [*r["argv"][:-1], r["argv"][-1].replace("web01", domain)]
        out.append(r)
    return out + list(extra)


def config_with(tmp_path: Path, domain: str, disk: str) -> Path:
    """The sandbox config with ``domain`` in web01's place: its ``disk`` onto web01's standby."""
    text = CONFIG.read_text()
    for old, new in (("[domains.web01]", f"[domains.{domain}]"),
                     ("[domains.web01.disks.xvda]", f"[domains.{domain}.disks.{disk}]")):
        assert text.count(old) == 1
        text = text.replace(old, new)
    path = tmp_path / "backup.toml"
    path.write_text(text)
    return path


def answer(role: str, argv: list[str], stdout: str = "", stderr: str = "",
           exit_code: int = 0) -> dict:
    return {"role": role, "argv": argv, "exit_code": exit_code, "stdout": stdout,
            "stderr": stderr}


def lvs_of(role: str, path: str, stdout: str = LVS["stdout"], **kw) -> dict:
    return answer(role, [*LVS["argv"][:-1], path], stdout, **kw)


def test_an_lv_declared_as_a_file_is_resolved_with_lvs_and_backed_up(tmp_path):
    cfg = config_with(tmp_path, "qdisk02", "xvda")
    # lvs names the same LV whichever of its names it is given (/dev/mapper/VG-LV here)
    recs = as_domain("qdisk02", lvs_of("source", "/dev/mapper/vg_a-web01"))
    _, pre, _ = run_gather(recs, "qdisk02", config_path=cfg)
    (disk,) = pre.facts.disks
    assert disk.disk.disk_type == "file" and disk.disk.source == "/dev/mapper/vg_a-web01"
    assert disk.source_lv.path == "/dev/vg_a/web01" and disk.standby_lv.path == "/dev/vg_b/web01"
    assert [(d.target, d.skip_reason, d.warning) for d in pre.facts.skipped_disks] == [
        ("xvdc", "file-backed", True), ("hdc", "cdrom", False)]


SWAP_LV = "/dev/vg_a/pv01-swap"


def pv01_records(peer_lvs: dict) -> list[dict]:
    """pv01: xvda1 is a swap LV of its own (blkid recorded on a swap partition), xvda2 web01."""
    no_table = recorded("sfdisk/notable-ext4")
    swap = recorded("blkid/msdos-p2")
    return as_domain(
        "pv01",
        lvs_of("source", SWAP_LV, LVS["stdout"].replace('"web01"', '"pv01-swap"')
               .replace("/web01", "/pv01-swap").replace("vg_a-web01", "vg_a-pv01--swap")
               .replace('"268435456"', '"67108864"')),
        answer("source", ["sfdisk", "--json", SWAP_LV], exit_code=1,
               stderr=no_table["stderr"].replace(no_table["argv"][-1], SWAP_LV)),
        answer("source", ["blkid", "-p", "-o", "export", "--", SWAP_LV],
               swap["stdout"].replace(swap["argv"][-1], SWAP_LV)),
        peer_lvs,
    )


@pytest.mark.parametrize("peer_lvs", [
    # the peer has no such LV (its VG is vg_b): the usual case
    lvs_of("peer", SWAP_LV, "", exit_code=5,
           stderr='  Volume group "vg_a" not found\n  Cannot process volume group vg_a\n'),
    # whatever reading it there fails with, the swap disk never needs it
    lvs_of("peer", SWAP_LV, "", exit_code=3, stderr="  Internal error: oops\n"),
], ids=["missing", "unreadable"])
def test_a_swap_only_disk_is_skipped_without_a_snapshot_or_a_standby(tmp_path, peer_lvs):
    cfg_path = config_with(tmp_path, "pv01", "xvda2")
    recs = pv01_records(peer_lvs)
    # exactly room for one 64M snapshot: the swap disk's must not be counted
    for r in recs:
        if r["argv"][0] == "vgs":
            r["stdout"] = re.sub(r'"vg_free":"\d+"', '"vg_free":"67108864"', r["stdout"])
    cfg, pre, _ = run_gather(recs, "pv01", config_path=cfg_path)
    assert [d.disk.target for d in pre.facts.disks] == ["xvda2"]
    (swap,) = pre.facts.skipped_disks
    assert swap.target == "xvda1" and swap.skip_reason.startswith("holds only swap")
    assert not swap.warning
    plan = plan_backup(pre.facts, cfg, RUN)
    assert [s.origin for s in plan.snapshots] == ["vg_a/web01"]
    assert "disk xvda1: holds only swap: nothing to copy, no snapshot, and no standby LV " \
           "needed" in plan.skipped


def test_a_swap_only_disk_is_listed_beside_the_disks_the_xml_already_skips(tmp_path):
    recs = pv01_records(lvs_of("peer", SWAP_LV, "", exit_code=5,
                               stderr='  Volume group "vg_a" not found\n'))
    cdrom = ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
             "<target dev='hdc' bus='ide'/><readonly/></disk>")
    for r in recs:
        if "dumpxml" in r["argv"]:
            assert "</devices>" in r["stdout"]
            r["stdout"] = r["stdout"].replace("</devices>", cdrom + "</devices>")
    _, pre, _ = run_gather(recs, "pv01", config_path=config_with(tmp_path, "pv01", "xvda2"))
    assert [d.disk.target for d in pre.facts.disks] == ["xvda2"]
    assert [(d.target, d.skip_reason.split(":")[0]) for d in pre.facts.skipped_disks] == [
        ("xvda1", "holds only swap"), ("hdc", "cdrom")]


def test_a_data_disk_still_demands_its_standby(tmp_path):
    """Only swap is spared: the same disk holding a filesystem needs its standby."""
    recs = pv01_records(lvs_of("peer", SWAP_LV, "", exit_code=5,
                               stderr='  Volume group "vg_a" not found\n'))
    ext4 = recorded("blkid/notable-ext4")
    for r in recs:
        if r["argv"][:2] == ["blkid", "-p"] and r["argv"][-1] == SWAP_LV:
            r["stdout"] = ext4["stdout"].replace(ext4["argv"][-1], SWAP_LV)
    head = (RECORDED / "fsparams" / "ext4-new.head.bin").read_bytes()  # its superblock read
    recs.append(answer("source", read_argv(SWAP_LV, 0), head.decode("utf-8", "surrogateescape")))
    with pytest.raises(errors.StandbyInvalid, match="pv01-swap for disk xvda1 does not exist"):
        run_gather(recs, "pv01", config_path=config_with(tmp_path, "pv01", "xvda2"))


def test_a_bad_disk_target_refuses_the_domain_naming_it():
    recs = records()
    for r in recs:
        if "dumpxml" in r["argv"]:
            r["stdout"] = r["stdout"].replace("dev='xvda'", "dev='xvda/../../etc'")
    with pytest.raises(errors.UnsafeName, match="domain 'web01': disk target 'xvda/../../etc'"):
        run_gather(recs)


def test_a_domain_with_no_disk_to_back_up_is_refused_with_each_disks_reason():
    image = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
             "<source file='/var/lib/xen/images/web01-data.img'/>"
             "<target dev='xvdc' bus='xen'/></disk>")
    cdrom = ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>"
             "<target dev='hdc' bus='ide'/><readonly/></disk>")
    recs = records()
    for r in recs:
        if "dumpxml" in r["argv"]:
            r["stdout"], n = re.subn(r"<disk type='block'.*?</disk>", image + cdrom, r["stdout"],
                                     flags=re.S)
            assert n == 1
    with pytest.raises(errors.DomainUnknown) as raised:
        run_gather(recs)
    assert str(raised.value) == ("[dom0-a] domain web01 has no block-device disk to back up "
                                 "(xvdc: file-backed, hdc: cdrom)")


def test_swap_in_a_logical_partition_makes_a_disk_swap_only_but_a_filesystem_beside_it_not():
    from toolkit.facts.blkid import FilesystemProbe
    from toolkit.facts.partitions import Partition, PartitionTable
    from toolkit.facts.records import FsFacts
    from toolkit.preflight import swap_only

    nothing = FilesystemProbe(None, None, None, None, None, None)
    swap = FilesystemProbe("swap", "0f1e2d3c-0000-4000-8000-000000000001", None, "other", None,
                           "1")
    extended = Partition(1, 2048, 204800, "5", None, None, False, True)
    logical = Partition(5, 4096, 102400, "82", None, None, False, False)
    table = PartitionTable("dos", "0x1234abcd", 512, (extended, logical))
    layout = (table, (FsFacts("xvda1", extended, nothing), FsFacts("xvda5", logical, swap)))
    assert swap_only(layout)  # the extended container holds nothing of its own
    ext4 = dataclasses.replace(swap, type="ext4", usage="filesystem")
    assert not swap_only((table, (*layout[1], FsFacts("xvda6", logical, ext4))))


class _Bounded(ReplayRunner):
    """A replay runner that keeps each command's time bound (a runner's default: 600 s)."""

    def __init__(self, host, recs):
        super().__init__(host, recs)
        self.bounds: list[tuple[tuple[str, ...], float | None]] = []

    def run(self, argv, **kw):
        self.bounds.append((tuple(argv), kw.get("timeout", DEFAULT_TIMEOUT)))
        return super().run(argv, **kw)


def test_every_preflight_read_on_either_host_is_bounded_like_a_probe():
    recs = records()
    source = _Bounded("dom0-a", [r for r in recs if r["role"] == "source"])
    peer = _Bounded("dom0-b", [r for r in recs if r["role"] == "peer"])
    cfg = load_config(CONFIG, check_permissions=False)
    gather(cfg, "web01", source, lambda name: peer, local_node_name(cfg, "dom0-a"))
    for host in (source, peer):
        assert {argv[0] for argv, _ in host.bounds} >= {"which", "virsh", "lvs"}
        # a hung probe holds the domain's lock no longer than the inventory's probes may
        assert all(t is not None and t <= 120 for _, t in host.bounds), host.bounds
    assert any("dumpxml" in argv for argv, _ in source.bounds)
    assert any(argv[0] == "vgs" for argv, _ in source.bounds)


def test_a_hypervisor_that_cannot_answer_is_reported_in_virshs_words_within_a_bound():
    said = "error: failed to connect to the hypervisor\nerror: Connection refused\n"
    recs = patch(records(), "source", "virsh", exit_code=1, stdout="", stderr=said)
    source = _Bounded("dom0-a", [r for r in recs if r["role"] == "source"])
    cfg = load_config(CONFIG, check_permissions=False)
    with pytest.raises(errors.CommandFailed) as raised:
        gather(cfg, "web01", source, lambda name: pytest.fail("the peer was contacted"),
               local_node_name(cfg, "dom0-a"))
    assert raised.value.result.stderr == said and "domstate" in raised.value.result.argv
    assert [argv[3] for argv, _ in source.bounds] == ["domstate", "domstate"]
    assert all(t is not None and t <= 120 for _, t in source.bounds), source.bounds


@pytest.mark.parametrize(("text", "size"), [
    ("64M", 64 << 20), (" 2G ", 2 << 30), ("512KiB", 512 << 10), ("1t", 1 << 40), ("4096", 4096),
    ("64mb", 64 << 20)])
def test_one_size_reader_for_the_config_preflight_and_the_lab(text, size):
    from toolkit.config import SnapshotSize
    from toolkit.sizes import size_bytes

    assert size_bytes(text) == size
    if text.strip()[-1] in "MGT":
        assert SnapshotSize(absolute=text.strip()).bytes() == size


@pytest.mark.parametrize("text", ["2 parsecs", "1.5g", "0M", "-5M", "", "M", "12X", "64MiBs"])
def test_a_size_lvm_would_not_read_is_refused_quoting_it(text):
    from toolkit.sizes import size_bytes

    with pytest.raises(ValueError, match=r"is not a size such as 256M$") as info:
        size_bytes(text)
    assert repr(text) in str(info.value)
