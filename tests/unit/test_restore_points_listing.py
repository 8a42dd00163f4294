"""``restore-points``: each domain's restore points on its peer, read from one ``lvs`` of the
points' tag per peer; the listing (``status.domain_points``, ``render_points``,
``points_json``) and the command through the command line, on recorded-style answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_restore_points import R1, R2, R3, _lvs, _row

from toolkit import app, errors
from toolkit import restore_points as rp
from toolkit.facts.lvm import lvs_argv
from toolkit.runners import CommandResult
from toolkit.status import domain_points, points_json, render_points

MIB = 1 << 20


def point_row(run: str, disk: str = "xvda", domain: str = "web01", *, size: int = 4 * MIB,
              vg: str = "vg_b", **fields) -> dict:
    """One point LV as the peer's lvs reports it (``_row``'s keywords), tagged as a point."""
    fields.setdefault("tags", ",".join(rp.point_tags(run)))
    name = rp.point_lv_name(run, domain, disk)
    row = _row(name, **fields)
    row.update(vg_name=vg, lv_size=str(size), lv_path=f"/dev/{vg}/{name}")
    return row


def thin_row(run: str, disk: str = "xvda", domain: str = "web01", **kw) -> dict:
    return point_row(run, disk, domain, attr="Vri---tz-k", pool="pool0", percent="", **kw)


def overflowed_row(run: str, disk: str = "xvda", domain: str = "web01", **kw) -> dict:
    return point_row(run, disk, domain, attr="sri-I-s---", percent="100.00", invalid="1", **kw)


def report(*rows: dict) -> str:
    return json.dumps({"report": [{"lv": list(rows)}]})


# -- domain_points -----------------------------------------------------------------------------

def test_a_domains_points_are_grouped_by_run_newest_first():
    lvs = _lvs(point_row(R1), point_row(R3, "xvdb"), point_row(R2), point_row(R3))
    points = domain_points(lvs, "web01")
    assert [p.run_id for p in points] == [R3, R2, R1]
    assert [v.disk for v in points[0].volumes] == ["xvda", "xvdb"]


def test_a_point_lacking_a_disk_another_point_has_is_partial():
    lvs = _lvs(point_row(R1), point_row(R2), point_row(R2, "xvdb"))
    by_run = {p.run_id: p for p in domain_points(lvs, "web01")}
    assert by_run[R1].missing == ("xvdb",) and not by_run[R1].whole
    assert by_run[R2].whole


def test_only_this_domains_tagged_points_count():
    lvs = _lvs(point_row(R1),
               point_row(R2, domain="web01-old"),  # a domain whose name extends web01's
               point_row(R2, domain="web"),  # one whose name web01's extends
               point_row(R3, tags="other"),  # web01's name, not tagged a point
               _row(f"domubk-{R3}-web01-xvda", tags="domubk"))  # a run's own snapshot
    assert [p.run_id for p in domain_points(lvs, "web01")] == [R1]
    assert [p.run_id for p in domain_points(lvs, "web01-old")] == [R2]
    assert [p.run_id for p in domain_points(lvs, "web")] == [R2]
    assert domain_points(lvs, "db01") == []


def test_another_domains_disks_never_make_a_point_partial():
    lvs = _lvs(point_row(R1), point_row(R2, "xvdb", domain="web01-old"))
    (point,) = domain_points(lvs, "web01")
    assert point.whole and point.missing == ()


# -- render_points -----------------------------------------------------------------------------

def rendered(*rows: dict, domain: str = "web01", peer: str = "dom0-b") -> list[str]:
    return render_points([(domain, peer, domain_points(_lvs(*rows), domain))]).splitlines()


def test_each_point_shows_its_run_utc_time_kind_size_fill_and_state():
    head, line = rendered(point_row(R1, size=3 * MIB, percent="7.50"))
    assert head == "web01 (on dom0-b): 1 restore point"
    assert line.split() == [R1, "2026-12-01", "02:00:00", "UTC", "classic", "3.0", "MiB",
                            "fill", "7.5%", "valid"]
    assert line.startswith(f"  {R1}  2026-12-01 02:00:00 UTC  classic ")


@pytest.fixture
def far_east(monkeypatch):
    """This host's local time is UTC+9 (the listing must not use it)."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_time_is_utc_whatever_this_hosts_zone(far_east):
    _head, line = rendered(point_row(R1))
    assert "2026-12-01 02:00:00 UTC" in line and "11:00:00" not in line
    (point,) = points_json(domain_points(_lvs(point_row(R1)), "web01"), "dom0-b")
    assert point["taken"] == "2026-12-01T02:00:00+00:00"


def test_a_points_size_is_all_its_lvs_and_its_fill_the_fullest():
    _head, line = rendered(point_row(R1, size=1 * MIB, percent="12.25"),
                           point_row(R1, "xvdb", size=2 * MIB, percent="40.00"))
    assert "3.0 MiB" in line and "fill 40.0%" in line and "12" not in line.split("fill")[1]


def test_a_thin_point_has_no_fill():
    _head, line = rendered(thin_row(R1, size=5 * MIB))
    assert " thin " in line and "5.0 MiB" in line and "fill -" in line
    assert line.endswith("valid")


def test_an_overflowed_point_is_invalid_and_a_partial_one_says_which_disk_it_lacks():
    lines = rendered(point_row(R2), overflowed_row(R2, "xvdb"), point_row(R1))
    assert lines[0] == "web01 (on dom0-b): 2 restore points"
    assert R2 in lines[1] and lines[1].endswith("INVALID (overflowed)")
    assert "fill 100.0%" in lines[1]
    assert R1 in lines[2] and lines[2].endswith("valid, partial: no LV for xvdb")


def test_an_invalid_partial_point_says_both():
    lines = rendered(overflowed_row(R1), point_row(R2), point_row(R2, "xvdb"))
    assert lines[2].endswith("INVALID (overflowed), partial: no LV for xvdb")


def test_a_mixed_point_says_mixed():
    _head, line = rendered(thin_row(R1), point_row(R1, "xvdb"))
    assert " mixed " in line


def test_every_domain_gets_its_heading_and_count_even_without_points():
    text = render_points([("web01", "dom0-b", domain_points(_lvs(point_row(R1)), "web01")),
                          ("db01", "dom0-a", [])])
    lines = text.splitlines()
    assert lines[0] == "web01 (on dom0-b): 1 restore point"
    assert lines[2] == "db01 (on dom0-a): 0 restore points"
    assert len(lines) == 3
    assert render_points([]) == ""


# -- points_json -------------------------------------------------------------------------------

def test_the_json_has_every_point_with_its_volumes():
    points = domain_points(_lvs(point_row(R2, size=2 * MIB, percent="3.00"),
                                thin_row(R2, "xvdb", size=8 * MIB), point_row(R1)), "web01")
    newest, older = points_json(points, "dom0-b")
    assert newest == {
        "domain": "web01", "run_id": R2, "taken": "2026-12-02T02:00:00+00:00",
        "peer": "dom0-b", "kind": "mixed", "valid": True, "whole": True, "missing": [],
        "volumes": [
            {"disk": "xvda", "lv": f"vg_b/{rp.point_lv_name(R2, 'web01', 'xvda')}",
             "kind": "classic", "size_bytes": 2 * MIB, "fill_percent": 3.0, "valid": True},
            {"disk": "xvdb", "lv": f"vg_b/{rp.point_lv_name(R2, 'web01', 'xvdb')}",
             "kind": "thin", "size_bytes": 8 * MIB, "fill_percent": None, "valid": True}]}
    assert (older["run_id"], older["whole"], older["missing"]) == (R1, False, ["xvdb"])
    json.dumps([newest, older])  # plain JSON types only


def test_an_overflowed_point_is_invalid_in_the_json_too():
    (point,) = points_json(domain_points(_lvs(overflowed_row(R1)), "web01"), "dom0-b")
    assert point["valid"] is False and point["volumes"][0]["valid"] is False
    assert point["volumes"][0]["fill_percent"] == 100.0


# -- the command -------------------------------------------------------------------------------

CONFIG = """
[cluster.dom0s]
dom0-a = "ssh://root@127.0.0.1:2"
dom0-b = "ssh://root@127.0.0.1:3"
dom0-c = "ssh://root@127.0.0.1:4"
[hypervisor]
uri = "test:///default"
[ssh]
key = "{tmp}/id_ed25519"
known_hosts = "{tmp}/known_hosts"
connect_timeout = 2
[defaults]
state_dir = "{tmp}/state"
lock_dir = "{tmp}/lock"
report_dir = "{tmp}/reports"
[domains.web01]
peer = "dom0-b"
[domains.db01]
peer = "dom0-c"
[domains.mail01]
peer = "dom0-b"
"""
POINTS_ARGV = tuple(lvs_argv(f"@{rp.POINT_TAG}"))


def config_file(tmp_path: Path) -> Path:
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "backup.toml"
    path.write_text(CONFIG.format(tmp=tmp_path))
    path.chmod(0o600)
    return path


class Peer:
    """A peer that answers the points' lvs with ``stdout`` (or fails), and keeps its calls."""

    def __init__(self, host: str, stdout: str = report(), exit_code: int = 0,
                 stderr: str = "") -> None:
        self.host, self.stdout, self.exit_code, self.stderr = host, stdout, exit_code, stderr
        self.calls: list[tuple[tuple[str, ...], float | None]] = []
        self.closed = False

    def run(self, argv, *, check=True, timeout=None, input=None, ok_codes=(0,), env=None):
        self.calls.append((tuple(argv), timeout))
        if tuple(argv) != POINTS_ARGV:
            raise AssertionError(f"{self.host}: unexpected command {argv}")
        result = CommandResult(self.host, tuple(argv), self.exit_code, self.stdout, self.stderr,
                               0.0)
        if check and result.exit_code not in tuple(ok_codes):
            raise errors.CommandFailed(result)
        return result

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr("toolkit.config.check_root", lambda: None)
    monkeypatch.delenv("DOMU_BACKUP_NODE", raising=False)


@pytest.fixture
def peers(monkeypatch):
    """The peers the command reaches over SSH, by name, each made on first use; and no
    local lvs unless a test sets one."""
    made: dict[str, list[Peer]] = {}
    answers: dict[str, Peer] = {}

    def peer_runner(config, name):
        peer = answers.get(name) or Peer(name)
        made.setdefault(name, []).append(peer)
        return peer

    def no_local(*a, **k):
        raise AssertionError("the local host is no peer here")

    monkeypatch.setattr(app, "peer_runner", peer_runner)
    monkeypatch.setattr("toolkit.runners.LocalRunner", no_local)
    return answers, made


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from toolkit import cli as program

    code = program.finish(program.run(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_listing_reads_one_lvs_per_peer_and_lists_each_domain_in_config_order(
        tmp_path, capsys, as_root, peers):
    answers, made = peers
    answers["dom0-b"] = Peer("dom0-b", report(point_row(R1), point_row(R2),
                                              point_row(R3, domain="mail01")))
    answers["dom0-c"] = Peer("dom0-c", report(point_row(R3, domain="db01", vg="vg_c")))
    code, out, err = cli(capsys, "restore-points", "--node", "dom0-a",
                         "--config", str(config_file(tmp_path)))
    assert code == 0, err
    assert {name: len(runners) for name, runners in made.items()} == {"dom0-b": 1, "dom0-c": 1}
    for peer in answers.values():
        assert peer.calls == [(POINTS_ARGV, 120)] and peer.closed
    lines = out.splitlines()
    heads = [line for line in lines if not line.startswith("  ")]
    assert heads == ["web01 (on dom0-b): 2 restore points", "db01 (on dom0-c): 1 restore point",
                     "mail01 (on dom0-b): 1 restore point"]
    assert lines[1].startswith(f"  {R2}  2026-12-02 02:00:00 UTC  classic")
    assert lines[2].startswith(f"  {R1}  ")
    assert lines[4].startswith(f"  {R3}  ") and lines[6].startswith(f"  {R3}  ")


def test_one_domain_reads_only_its_own_peer(tmp_path, capsys, as_root, peers):
    answers, made = peers
    answers["dom0-c"] = Peer("dom0-c", report(point_row(R1, domain="db01"),
                                              point_row(R2, domain="web01")))
    code, out, _err = cli(capsys, "restore-points", "--domu", "db01", "--node", "dom0-a",
                          "--config", str(config_file(tmp_path)))
    assert code == 0
    assert list(made) == ["dom0-c"]
    assert len(out.splitlines()) == 2
    assert out.splitlines()[0] == "db01 (on dom0-c): 1 restore point"
    assert R1 in out and R2 not in out


def test_on_the_peer_itself_the_listing_reads_its_own_lvm(tmp_path, capsys, monkeypatch,
                                                        as_root, peers):
    answers, made = peers
    local = Peer("local", report(point_row(R1), thin_row(R2)))
    monkeypatch.setattr("toolkit.runners.LocalRunner", lambda *a, **k: local)
    answers["dom0-c"] = Peer("dom0-c", report(point_row(R3, domain="db01")))
    code, out, err = cli(capsys, "restore-points", "--node", "dom0-b",
                         "--config", str(config_file(tmp_path)))
    assert code == 0, err
    assert list(made) == ["dom0-c"]  # dom0-b's points are read here, with no SSH
    assert local.calls == [(POINTS_ARGV, 120)] and local.closed
    assert "web01 (on dom0-b): 2 restore points" in out
    assert "mail01 (on dom0-b): 0 restore points" in out
    assert "db01 (on dom0-c): 1 restore point" in out


def test_json_lists_every_point_of_every_domain_flat(tmp_path, capsys, as_root, peers):
    answers, _made = peers
    answers["dom0-b"] = Peer("dom0-b", report(point_row(R1), overflowed_row(R2),
                                              point_row(R3, domain="mail01")))
    code, out, err = cli(capsys, "restore-points", "--json", "--node", "dom0-a",
                         "--config", str(config_file(tmp_path)))
    assert code == 0, err
    data = json.loads(out)
    assert [(p["domain"], p["run_id"], p["peer"], p["valid"]) for p in data] == [
        ("web01", R2, "dom0-b", False), ("web01", R1, "dom0-b", True),
        ("mail01", R3, "dom0-b", True)]
    assert data[1]["volumes"][0]["lv"] == f"vg_b/{rp.point_lv_name(R1, 'web01', 'xvda')}"


def test_json_with_no_points_is_an_empty_list(tmp_path, capsys, as_root, peers):
    code, out, _err = cli(capsys, "restore-points", "--json", "--node", "dom0-a",
                          "--config", str(config_file(tmp_path)))
    assert code == 0 and json.loads(out) == []


def test_a_failing_lvs_on_the_peer_is_one_line_and_its_exit_code(tmp_path, capsys, as_root,
                                                                 peers):
    answers, made = peers
    answers["dom0-b"] = Peer("dom0-b", "", 5, "  Volume group vg_b has no PVs\n")
    code, out, err = cli(capsys, "restore-points", "--node", "dom0-a",
                         "--config", str(config_file(tmp_path)))
    assert code == errors.CommandFailed.exit_code
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "dom0-b" in err and out == ""
    assert made["dom0-b"][0].closed  # closed after a failure too


def test_an_unreadable_lvs_report_is_a_parse_error(tmp_path, capsys, as_root, peers):
    answers, _made = peers
    answers["dom0-b"] = Peer("dom0-b", "not json")
    code, _out, err = cli(capsys, "restore-points", "--node", "dom0-a",
                          "--config", str(config_file(tmp_path)))
    assert code == errors.ParseError.exit_code
    assert len(err.splitlines()) == 1 and "not JSON" in err


def test_an_unknown_domain_is_refused_before_any_peer_is_asked(tmp_path, capsys, as_root,
                                                               peers):
    _answers, made = peers
    code, _out, err = cli(capsys, "restore-points", "--domu", "nosuch", "--node", "dom0-a",
                          "--config", str(config_file(tmp_path)))
    assert code == errors.DomainUnknown.exit_code
    assert "nosuch" in err and made == {}


def test_a_host_outside_the_cluster_is_refused(tmp_path, capsys, as_root, peers):
    _answers, made = peers
    code, _out, err = cli(capsys, "restore-points", "--node", "elsewhere",
                          "--config", str(config_file(tmp_path)))
    assert code == errors.HostNotInCluster.exit_code and made == {}


def test_the_listing_needs_root(tmp_path, capsys, monkeypatch, peers):
    import os

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    _answers, made = peers
    code, _out, err = cli(capsys, "restore-points", "--node", "dom0-a",
                          "--config", str(config_file(tmp_path)))
    assert code == errors.NotRoot.exit_code and made == {}
