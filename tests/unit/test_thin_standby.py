"""``init-standby --thin VG/POOL``: the pool's grammar, the standby's VG and LV, which thin
LVs are created and which standbys are refused, and the whole read-then-create on two
recorded-answer hosts (``toolkit.replay.ReplayRunner``: an unexpected command is an error).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import CONFIG_TEXT, recorded

from toolkit import errors
from toolkit.config import parse_config
from toolkit.facts.lvm import LogicalVolume, ThinPool, lvs_argv, pools_argv
from toolkit.facts.virsh import domstate_argv, dumpxml_argv
from toolkit.plan_records import PEER
from toolkit.replay import ReplayRunner
from toolkit.thin_standby import (
    ThinDisk,
    create_thin_standbys,
    parse_pool,
    standby_vg_lv,
    thin_steps,
)

POOL = ThinPool("vg_b", "pool0", 12.5, 3.0)
GIB = 1 << 30


# -- parse_pool -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("vg_b/pool0", ("vg_b", "pool0")),
    ("vg-b/thin.pool+1", ("vg-b", "thin.pool+1")),
    ("_v/_p", ("_v", "_p")),
    (".vg/p-", (".vg", "p-")),
])
def test_a_pool_is_vg_slash_pool(text, expected):
    assert parse_pool(text) == expected


@pytest.mark.parametrize("text", [
    "", "vg", "vg/", "/pool", "vg/pool/x", "-vg/pool", "vg/-pool", "vg /pool", "vg/po ol",
    "vg/pool ", " vg/pool", "vg/pool\n", "vg\n/pool", "vg/po\tol", "vg/po\x00ol", "vg/po\x7fol",
    "vg//pool", "/dev/vg/pool", "vg/pööl", "vg/po:ol", "vg/po$ol",
])
def test_anything_else_is_a_usage_error_naming_the_option(text):
    with pytest.raises(errors.UsageError) as info:
        parse_pool(text)
    assert info.value.exit_code == 4
    assert "--thin" in str(info.value) and "VG/POOL" in str(info.value)


def test_none_is_a_usage_error_too():
    with pytest.raises(errors.UsageError):
        parse_pool(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["vg/..", "../pool", "vg/.", "./pool", "vg/" + "p" * 128])
def test_dot_names_and_over_long_names_are_usage_errors(text):
    with pytest.raises(errors.UsageError):
        parse_pool(text)


@pytest.mark.parametrize("text", ["vg/..", "../pool", "vg/.", "vg/" + "p" * 128,
                                  "v" * 64 + "/" + "p" * 63])
def test_dot_names_and_over_long_names_are_refused_all_the_same(text):
    with pytest.raises(errors.ToolkitError) as info:
        parse_pool(text)
    assert "--thin" in str(info.value)


# -- standby_vg_lv ----------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "expected"), [
    ("/dev/vg_b/web01", ("vg_b", "web01")),
    ("/dev/vg-b/web01-data", ("vg-b", "web01-data")),
])
def test_a_dev_vg_lv_path_names_its_vg_and_lv(path, expected):
    assert standby_vg_lv(path) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/dev/mapper/vg_b-web01", ("vg_b", "web01")),
    ("/dev/mapper/vg--b-web01--data", ("vg-b", "web01-data")),
    ("/dev/mapper/vg_b-web01----x", ("vg_b", "web01--x")),
])
def test_a_mapper_path_undoubles_the_dashes_of_vg_and_lv(path, expected):
    assert standby_vg_lv(path) == expected


def test_a_dev_vg_lv_path_keeps_a_double_dash_in_its_names():
    assert standby_vg_lv("/dev/vg_b/web01--old") == ("vg_b", "web01--old")


@pytest.mark.parametrize("path", [
    "", "vg_b/web01", "/dev/vg_b", "/dev/vg_b/", "/dev/vg_b/web01/x", "/dev//web01",
    "/dev/mapper/-vg_b", "/srv/vg_b/web01",
])
def test_other_paths_are_refused(path):
    with pytest.raises((errors.StandbyInvalid, errors.UnsafeName)):
        standby_vg_lv(path)


@pytest.mark.parametrize("path", ["/dev/mapper/vgweb01", "/dev/mapper/vg-b-web01",
                                  "/dev/mapper/vg_b-web01-"])
def test_a_mapper_name_that_is_no_vg_lv_pair_is_refused(path):
    with pytest.raises((errors.StandbyInvalid, errors.UnsafeName)):
        standby_vg_lv(path)


@pytest.mark.parametrize("path", ["/dev/vg_b/..", "/dev/vg_b/-web01", "/dev/vg b/web01",
                                  "/dev/vg_b/web\n01"])
def test_names_lvm_would_not_take_are_refused(path):
    with pytest.raises(errors.ToolkitError):
        standby_vg_lv(path)


# -- thin_steps -------------------------------------------------------------------------------

def lv(vg: str, name: str, size: int = GIB, *, pool: str = "",
       attr: str = "-wi-a-----") -> LogicalVolume:
    return LogicalVolume(vg=vg, name=name, path=f"/dev/{vg}/{name}", size_bytes=size,
                         attr=attr, origin="", pool=pool, snap_percent=None, tags=(),
                         dm_path=f"/dev/mapper/{vg}-{name}")


def disk(target: str = "xvda", standby_path: str = "/dev/vg_b/web01",
         standby: LogicalVolume | None = None, size: int = GIB) -> ThinDisk:
    return ThinDisk(target, lv("vg_a", f"web01-{target}", size), standby_path, standby)


def test_a_missing_standby_is_one_lvcreate_of_a_thin_lv_the_source_size():
    size = 5 * GIB + 4096 * 3
    steps, refusals = thin_steps([disk(size=size)], POOL)
    assert refusals == ()
    (step,) = steps
    assert step.role == PEER and step.action == "create"
    assert step.argv == ("lvcreate", "--type", "thin", "--virtualsize", f"{size}b",
                         "--thinpool", "vg_b/pool0", "--name", "web01", "vg_b")
    assert step.resource == "/dev/vg_b/web01"
    assert "xvda" in step.note and "vg_b/pool0" in step.note and str(size) in step.note
    assert step.undo == ()  # an LV that will hold data is never undone


def test_an_existing_thin_lv_of_that_pool_is_kept_as_it_is():
    standby = lv("vg_b", "web01", pool="pool0", attr="Vwi-a-tz--")
    assert thin_steps([disk(standby=standby)], POOL) == ((), ())


@pytest.mark.parametrize(("standby", "kind"), [
    (lv("vg_b", "web01"), "a thick LV"),
    (lv("vg_b", "web01", pool="pool1", attr="Vwi-a-tz--"), "a thin LV of vg_b/pool1"),
])
def test_an_existing_thick_lv_or_one_of_another_pool_is_refused_never_removed(standby, kind):
    steps, (refusal,) = thin_steps([disk(standby=standby)], POOL)
    assert steps == ()
    assert refusal.startswith(f"disk xvda: standby /dev/vg_b/web01 exists as {kind}, "
                              "not in vg_b/pool0")
    assert "never removed" in refusal


def test_a_thin_lv_of_a_pool_of_the_same_name_in_another_vg_is_refused():
    standby = lv("vg_c", "web01", pool="pool0", attr="Vwi-a-tz--")
    steps, (refusal,) = thin_steps([disk(standby_path="/dev/vg_c/web01", standby=standby)],
                                   POOL)
    assert steps == ()
    assert "a thin LV of vg_c/pool0, not in vg_b/pool0" in refusal


def test_a_missing_standby_in_another_vg_than_the_pool_is_refused():
    steps, (refusal,) = thin_steps([disk(standby_path="/dev/vg_c/web01")], POOL)
    assert steps == ()
    assert refusal.startswith("disk xvda: standby /dev/vg_c/web01 is in VG vg_c")
    assert "vg_b/pool0" in refusal


def test_each_disk_is_judged_on_its_own():
    disks = [disk("xvda", standby=lv("vg_b", "web01", pool="pool0", attr="Vwi-a-tz--")),
             disk("xvdb", "/dev/vg_b/web01-b", size=2 * GIB),
             disk("xvdc", "/dev/vg_b/web01-c", standby=lv("vg_b", "web01-c")),
             disk("xvdd", "/dev/vg_b/web01-d", size=3 * GIB)]
    steps, refusals = thin_steps(disks, POOL)
    assert [(s.argv[-2], s.argv[4]) for s in steps] == [("web01-b", f"{2 * GIB}b"),
                                                         ("web01-d", f"{3 * GIB}b")]
    assert [r.split(":")[0] for r in refusals] == ["disk xvdc"]


def test_a_pool_in_a_vg_with_dashes_takes_the_lv_of_a_dev_path():
    pool = ThinPool("vg-b", "thin-pool", 0.0, 0.0)
    (step,), _ = thin_steps([disk(standby_path="/dev/vg-b/web01-data")], pool)
    assert step.argv[-5:] == ("--thinpool", "vg-b/thin-pool", "--name", "web01-data", "vg-b")


def test_a_missing_standby_given_as_a_mapper_path_is_created_in_the_pool():
    pool = ThinPool("vg-b", "pool0", 0.0, 0.0)
    steps, refusals = thin_steps([disk(standby_path="/dev/mapper/vg--b-web01--data")], pool)
    assert refusals == ()
    assert steps[0].argv[-3:] == ("--name", "web01-data", "vg-b")


# -- create_thin_standbys on two recorded-answer hosts ----------------------------------------

URI = "test:///etc/domu-backup/node.xml"
TWO_DISKS = """
[domains.web01.disks.xvdb]
standby_lv = "/dev/vg_b/web01-data"
"""
XML = """<domain type='xen'>
  <name>web01</name>
  <devices>
    <disk type='block' device='disk'>
      <source dev='/dev/vg_a/web01'/>
      <target dev='xvda' bus='xen'/>
    </disk>
    {more}
    <disk type='file' device='disk'>
      <source file='/var/lib/xen/images/web01-swap.img'/>
      <target dev='xvdc' bus='xen'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
  </devices>
</domain>
"""
XVDB = """<disk type='block' device='disk'>
      <source dev='/dev/vg_a/web01-data'/>
      <target dev='xvdb' bus='xen'/>
    </disk>"""
MISSING_LV = recorded("lvm/lvs-missing-lv")


def cfg_of(tmp_path: Path, extra: str = ""):
    text = CONFIG_TEXT.format(state=tmp_path / "state", lock=tmp_path / "lock") + extra
    return parse_config(text, tmp_path / "backup.toml")


def answer(argv, stdout: str = "", exit_code: int = 0, stderr: str = "") -> dict:
    return {"argv": list(argv), "exit_code": exit_code, "stdout": stdout, "stderr": stderr}


def lvs_report(*rows: dict) -> str:
    return json.dumps({"report": [{"lv": list(rows)}]})


def lv_row(path: str, size: int = GIB, *, pool: str = "", attr: str = "-wi-a-----") -> dict:
    vg, name = path.removeprefix("/dev/").split("/")
    return {"vg_name": vg, "lv_name": name, "lv_path": path,
            "lv_dm_path": f"/dev/mapper/{vg}-{name.replace('-', '--')}", "lv_size": str(size),
            "lv_attr": attr, "origin": "", "pool_lv": pool, "snap_percent": "",
            "lv_tags": "", "lv_snapshot_invalid": "0"}


def lv_answer(path: str, **row) -> dict:
    return answer(lvs_argv(path), lvs_report(lv_row(path, **row)))


def missing_lv(path: str) -> dict:
    return answer(lvs_argv(path), MISSING_LV["stdout"], 5,
                  MISSING_LV["stderr"].replace("vg-test/nosuch", path))


def pool_answer(vg: str = "vg_b", name: str = "pool0", attr: str = "twi-aotz--") -> dict:
    row = {"vg_name": vg, "lv_name": name, "lv_attr": attr, "data_percent": "10.00",
           "metadata_percent": "2.00"}
    return answer(pools_argv(f"{vg}/{name}"), lvs_report(row))


def source_host(*, xvdb: bool = False, sizes=(GIB, 2 * GIB), more=()) -> ReplayRunner:
    return ReplayRunner("dom0-a", [
        answer(domstate_argv(URI, "web01"), recorded("virsh/domstate-running")["stdout"]),
        answer(dumpxml_argv(URI, "web01"), XML.format(more=XVDB if xvdb else "")),
        lv_answer("/dev/vg_a/web01", size=sizes[0]),
        lv_answer("/dev/vg_a/web01-data", size=sizes[1]),
        *more])


def lvcreate(size: int, name: str, vg: str = "vg_b", pool: str = "vg_b/pool0") -> list[str]:
    return ["lvcreate", "--type", "thin", "--virtualsize", f"{size}b", "--thinpool", pool,
            "--name", name, vg]


def peer_host(*records: dict) -> ReplayRunner:
    return ReplayRunner("dom0-b", records)


def creates(host: ReplayRunner) -> list[tuple[str, ...]]:
    return [c for c in host.calls if c[0] == "lvcreate"]


def run_thin(tmp_path, peer, *, thin="vg_b/pool0", dry_run=False, extra="", **source):
    said: list[str] = []
    result = create_thin_standbys(cfg_of(tmp_path, extra), "web01", source_host(**source), peer,
                                  "dom0-a", thin, dry_run=dry_run, log=said.append)
    return result, said


def test_a_dry_run_prints_the_lvcreate_and_creates_nothing(tmp_path):
    size = 3 * GIB + 512
    peer = peer_host(missing_lv("/dev/vg_b/web01"), pool_answer(),
                     answer(lvcreate(size, "web01"), "  Logical volume created.\n"))
    missing, said = run_thin(tmp_path, peer, dry_run=True, sizes=(size, GIB))
    assert missing is True
    assert creates(peer) == []
    assert said[0] == f"thin 1. [dom0-b] {' '.join(lvcreate(size, 'web01'))}"
    assert "vg_b/pool0" in said[1] and said[1].lstrip().startswith("#")
    assert not any(line.startswith("created") for line in said)


def test_a_run_creates_each_missing_standby_in_the_pool_the_source_size(tmp_path, monkeypatch):
    timeouts: list[float | None] = []
    real = ReplayRunner.run

    def run(self, argv, **kw):
        if argv[0] == "lvcreate":
            timeouts.append(kw.get("timeout"))
        return real(self, argv, **kw)

    monkeypatch.setattr(ReplayRunner, "run", run)
    peer = peer_host(missing_lv("/dev/vg_b/web01"), missing_lv("/dev/vg_b/web01-data"),
                     pool_answer(),
                     answer(lvcreate(GIB, "web01"), "  Logical volume created.\n"),
                     answer(lvcreate(2 * GIB, "web01-data"), "  Logical volume created.\n"))
    missing, said = run_thin(tmp_path, peer, extra=TWO_DISKS, xvdb=True)
    assert missing is False
    assert creates(peer) == [tuple(lvcreate(GIB, "web01")), tuple(lvcreate(2 * GIB, "web01-data"))]
    assert timeouts == [cfg_of(tmp_path).ssh.command_timeout] * 2
    assert [line for line in said if line.startswith("created")] == [
        "created /dev/vg_b/web01 on dom0-b", "created /dev/vg_b/web01-data on dom0-b"]
    # the file disk and the cdrom are no LVs: never looked up
    assert not any("swap" in " ".join(c) for c in peer.calls)


def test_a_standby_already_thin_in_the_pool_needs_nothing(tmp_path):
    peer = peer_host(lv_answer("/dev/vg_b/web01", pool="pool0", attr="Vwi-a-tz--"),
                     pool_answer())
    for dry_run in (True, False):
        missing, said = run_thin(tmp_path, peer, dry_run=dry_run)
        assert missing is False and said == []
    assert creates(peer) == []


def test_a_thick_standby_is_refused_and_nothing_is_created_even_for_another_disk(tmp_path):
    peer = peer_host(lv_answer("/dev/vg_b/web01"), missing_lv("/dev/vg_b/web01-data"),
                     pool_answer(), answer(lvcreate(2 * GIB, "web01-data")))
    with pytest.raises(errors.StandbyInvalid) as info:
        run_thin(tmp_path, peer, extra=TWO_DISKS, xvdb=True)
    message = str(info.value)
    assert info.value.host == "dom0-b"
    assert "disk xvda" in message and "/dev/vg_b/web01 exists as a thick LV" in message
    assert "never removed" in message
    assert creates(peer) == []


def test_a_standby_outside_the_pools_vg_is_refused(tmp_path):
    # xvdb's standby defaults to its source's path, in vg_a
    peer = peer_host(missing_lv("/dev/vg_b/web01"), missing_lv("/dev/vg_a/web01-data"),
                     pool_answer(), answer(lvcreate(GIB, "web01")))
    with pytest.raises(errors.StandbyInvalid) as info:
        run_thin(tmp_path, peer, xvdb=True)
    assert "disk xvdb" in str(info.value) and "is in VG vg_a" in str(info.value)
    assert "disk xvda" not in str(info.value)
    assert creates(peer) == []


def test_a_missing_pool_says_how_to_make_one_and_nothing_is_created(tmp_path):
    gone = MISSING_LV["stderr"].replace("vg-test/nosuch", "vg_b/pool0")
    peer = peer_host(missing_lv("/dev/vg_b/web01"),
                     answer(pools_argv("vg_b/pool0"), MISSING_LV["stdout"], 5, gone),
                     answer(lvcreate(GIB, "web01")))
    for dry_run in (True, False):
        with pytest.raises(errors.StandbyInvalid) as info:
            run_thin(tmp_path, peer, dry_run=dry_run)
        message = str(info.value)
        assert "thin pool vg_b/pool0 does not exist on dom0-b" in message
        assert "lvcreate --type thin-pool -L SIZE -n pool0 vg_b" in message
        assert info.value.exit_code == 16 and info.value.host == "dom0-b"
    assert creates(peer) == []


def test_a_missing_vg_of_the_pool_is_a_missing_pool_too(tmp_path):
    peer = peer_host(missing_lv("/dev/vg_b/web01"),
                     answer(pools_argv("vg_b/pool0"), "", 5,
                            '  Volume group "vg_b" not found\n'))
    with pytest.raises(errors.StandbyInvalid, match="lvcreate --type thin-pool"):
        run_thin(tmp_path, peer)


def test_a_pool_that_is_no_thin_pool_is_refused(tmp_path):
    peer = peer_host(missing_lv("/dev/vg_b/web01"), pool_answer(attr="-wi-a-----"),
                     answer(lvcreate(GIB, "web01")))
    with pytest.raises(errors.ToolkitError, match="not a thin pool"):
        run_thin(tmp_path, peer)
    assert creates(peer) == []


def test_a_bad_pool_is_refused_before_any_host_is_asked(tmp_path):
    src, peer = source_host(), peer_host()
    with pytest.raises(errors.UsageError):
        create_thin_standbys(cfg_of(tmp_path), "web01", src, peer, "dom0-a", "vg_b",
                             dry_run=True, log=lambda m: None)
    assert src.calls == [] and peer.calls == []


def test_a_source_disk_that_is_no_lv_is_refused(tmp_path):
    src = source_host(more=())
    src._answers[tuple(lvs_argv("/dev/vg_a/web01"))] = missing_lv("/dev/vg_a/web01")
    peer = peer_host(pool_answer())
    with pytest.raises(errors.StandbyInvalid, match="not an LVM logical volume") as info:
        create_thin_standbys(cfg_of(tmp_path), "web01", src, peer, "dom0-a", "vg_b/pool0",
                             dry_run=True, log=lambda m: None)
    assert info.value.host == "dom0-a" and "/dev/vg_a/web01" in str(info.value)
    assert creates(peer) == []


def test_a_domain_not_running_here_is_refused_before_its_disks_are_read(tmp_path):
    src = ReplayRunner("dom0-a", [answer(domstate_argv(URI, "web01"),
                                         recorded("virsh/domstate-shut-off")["stdout"])])
    with pytest.raises(errors.NotRunningHere):
        create_thin_standbys(cfg_of(tmp_path), "web01", src, peer_host(), "dom0-a",
                             "vg_b/pool0", dry_run=True, log=lambda m: None)
    assert src.calls == [tuple(domstate_argv(URI, "web01"))]
