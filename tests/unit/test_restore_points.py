"""Restore point names, how the peer's lvs is read back into points, and which go."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from fakes import recorded
from hypothesis import given
from hypothesis import strategies as st

from toolkit import errors
from toolkit import restore_points as rp
from toolkit.facts.lvm import parse_lvs
from toolkit.owned import parse_owned
from toolkit.retention import Retention

R1, R2, R3 = "20261201T020000Z-0a1b", "20261202T020000Z-1c2d", "20261203T020000Z-3e4f"


def _row(name: str, *, tags: str = "domubk_rp", attr: str = "sri-a-s---",
         percent: str = "1.25", invalid: str = "0", pool: str = "",
         origin: str = "web01") -> dict:
    """An lvs row shaped like the recorded one of a lab snapshot, for another LV."""
    out = json.loads(recorded("lvm/lvs-snapshot-lab-half")["stdout"])
    row = out["report"][0]["lv"][0]
    row.update(vg_name="vg_b", lv_name=name, lv_path=f"/dev/vg_b/{name}",
               lv_dm_path=f"/dev/mapper/vg_b-{name.replace('-', '--')}", lv_attr=attr,
               origin=origin, pool_lv=pool, snap_percent=percent, lv_tags=tags,
               lv_snapshot_invalid=invalid)
    return row


def _lvs(*rows: dict):
    return parse_lvs(json.dumps({"report": [{"lv": list(rows)}]}))


def test_a_point_lv_name_holds_the_run_the_domain_and_the_disk():
    name = rp.point_lv_name(R1, "web01", "xvda")
    assert name == f"domubk-rp-{R1}-web01-xvda"
    assert rp.parse_point_lv(name) == (R1, "web01", "xvda")
    assert rp.parse_point_lv(name, "web01") == (R1, "web01", "xvda")
    assert rp.point_tags(R1) == ("domubk_rp", f"domubk_rp_{R1}")


def test_a_points_name_is_never_a_leftover_recover_would_sweep():
    assert parse_owned(rp.point_lv_name(R1, "web01", "xvda"), None, "p") is None


@pytest.mark.parametrize("name", [
    f"domubk-rp-{R1}-web01-xvda-extra", f"domubk-rp-{R1}-web01", f"domubk-{R1}-web01-xvda",
    "domubk-rp-20261301T020000Z-0a1b-web01-xvda/../x", f"domubk-rp-{R1}-web01-xvda\n",
    f"x-domubk-rp-{R1}-web01-xvda", f"domubk-rp-{R1}--web01-xvda",
])
def test_other_names_are_no_points(name):
    assert rp.parse_point_lv(name) is None


def test_the_points_of_web_never_include_those_of_web_01():
    other = rp.point_lv_name(R1, "web-01", "xvda")
    assert rp.parse_point_lv(other, "web") is None
    assert rp.parse_point_lv(other, "web-01") == (R1, "web-01", "xvda")


def test_a_name_outside_the_grammar_is_refused_when_made():
    with pytest.raises(ValueError):
        rp.point_lv_name(R1, "web01", "../xvda")
    with pytest.raises(ValueError):
        rp.point_lv_name("yesterday", "web01", "xvda")


@given(st.from_regex(r"[A-Za-z0-9_+][A-Za-z0-9_+.-]{0,20}", fullmatch=True),
       st.from_regex(r"(xvd|vd|sd)[a-z]{1,2}", fullmatch=True))
def test_every_domain_and_disk_the_config_accepts_round_trips(domain, disk):
    assert rp.parse_point_lv(rp.point_lv_name(R2, domain, disk), domain) == (R2, domain, disk)


def test_points_are_read_from_lvs_grouped_by_run_newest_first():
    lvs = _lvs(_row(rp.point_lv_name(R1, "web01", "xvda")),
               _row(rp.point_lv_name(R1, "web01", "xvdb"), origin="web01-b"),
               _row(rp.point_lv_name(R2, "web01", "xvda")),
               _row(rp.point_lv_name(R2, "web01", "xvdb"), origin="web01-b"),
               _row(rp.point_lv_name(R3, "web-01", "xvda")),  # another domain
               _row(f"domubk-{R3}-web01-xvda", tags="domubk"),  # a run's snapshot
               _row(rp.point_lv_name(R3, "web01", "xvda"), tags="other"))  # not tagged ours
    points = rp.points_from_lvs(lvs, "web01", ["xvda", "xvdb"])
    assert [p.run_id for p in points] == [R2, R1]
    assert points[0].taken == datetime(2026, 12, 2, 2, 0, tzinfo=UTC)
    assert [v.disk for v in points[0].volumes] == ["xvda", "xvdb"]
    assert all(p.valid and p.kind == "classic" for p in points)
    assert points[0].volumes[0].fill_percent == 1.25


def test_a_point_with_an_overflowed_lv_is_not_valid_one_missing_a_disk_is_not_whole():
    lvs = _lvs(_row(rp.point_lv_name(R1, "web01", "xvda")),
               _row(rp.point_lv_name(R2, "web01", "xvda"), attr="sri-a-s---"),
               _row(rp.point_lv_name(R2, "web01", "xvdb"), attr="sri-I-s---",
                    percent="100.00", invalid="1"))
    by_run = {p.run_id: p for p in rp.points_from_lvs(lvs, "web01", ["xvda", "xvdb"])}
    # A disk added after R1: its point is still a valid point of the disks it had.
    assert by_run[R1].missing == ("xvdb",) and by_run[R1].valid and not by_run[R1].whole
    assert by_run[R2].whole and not by_run[R2].valid
    assert [v.valid for v in by_run[R2].volumes] == [True, False]


def test_a_thin_point_has_no_fill_and_says_thin():
    lvs = _lvs(_row(rp.point_lv_name(R1, "web01", "xvda"), attr="Vri---tz-k",
                    pool="pool0", percent=""))
    (point,) = rp.points_from_lvs(lvs, "web01", ["xvda"])
    assert point.kind == "thin" and point.valid
    assert point.volumes[0].fill_percent is None


def test_prune_drops_what_retention_does_not_keep_and_every_invalid_point():
    lvs = _lvs(*(_row(rp.point_lv_name(r, "web01", "xvda")) for r in (R1, R2, R3)))
    points = rp.points_from_lvs(lvs, "web01", ["xvda"])
    assert [p.run_id for p in rp.to_prune(points, Retention(keep_last=2))] == [R1]
    assert rp.to_prune(points, Retention()) == []  # restore points off: nothing removed
    overflowed = replace(points[0].volumes[0], valid=False)
    broken = [replace(points[0], volumes=(overflowed,)), *points[1:]]
    assert [p.run_id for p in rp.to_prune(broken, Retention(keep_last=2))] == [R3]
    # A point that lacks a disk added later is kept by the rules like any other.
    partial = [replace(points[0], missing=("xvdb",)), *points[1:]]
    assert [p.run_id for p in rp.to_prune(partial, Retention(keep_last=2))] == [R1]


def test_create_and_remove_commands():
    name = rp.point_lv_name(R1, "web01", "xvda")
    assert rp.create_argv(name, "vg_b", "web01", R1, thin=False, size=("-L", "1G")) == (
        "lvcreate", "--snapshot", "--permission", "r", "--name", name,
        "--addtag", "domubk_rp", "--addtag", f"domubk_rp_{R1}", "-L", "1G", "vg_b/web01")
    assert rp.create_argv(name, "vg_b", "web01", R1, thin=True)[-1] == "vg_b/web01"
    assert "-L" not in rp.create_argv(name, "vg_b", "web01", R1, thin=True)
    with pytest.raises(ValueError):
        rp.create_argv(name, "vg_b", "web01", R1, thin=False)
    with pytest.raises(ValueError):
        rp.create_argv("web01", "vg_b", "web01", R1, thin=True)  # not a point's name
    with pytest.raises(errors.UnsafeName):
        rp.create_argv(name, "vg_b", "../web01", R1, thin=True)
    with pytest.raises(errors.UnsafeName):
        rp.create_argv(name, "-vg", "web01", R1, thin=True)
    (point,) = rp.points_from_lvs(_lvs(_row(name)), "web01", ["xvda"])
    assert rp.remove_argv(point.volumes[0]) == ("lvremove", "--yes", "--", f"vg_b/{name}")
    with pytest.raises(ValueError):
        rp.remove_argv(replace(point.volumes[0], lv="web01"))


def test_the_longest_domain_keeps_a_points_names_within_lvms_limits():
    """The config's domain limit covers a point too, in a 32-character VG: its LV name,
    its device-mapper name, a classic point's -cow device, and the -real one it gets when
    a throwaway snapshot is taken of it (verify)."""
    from toolkit.config import DOMAIN_NAME_MAX
    from toolkit.facts.lvm import dm_name

    vg, disk = "v" * 32, "xvdaaaaa"
    for domain in ("d" * DOMAIN_NAME_MAX, "d-" * (DOMAIN_NAME_MAX // 4) + "d",
                   "-".join(["d"] * ((DOMAIN_NAME_MAX + 2) // 3))):
        name = rp.point_lv_name(R1, domain, disk)
        mapped = dm_name(vg, name)
        for shown in (name, mapped, mapped + "-cow", mapped + "-real"):
            assert len(shown.encode()) <= 127, (domain, shown, len(shown))
        assert all(len(tag) <= 128 for tag in rp.point_tags(R1))


def test_the_longest_domain_keeps_verifys_names_within_lvms_limits():
    """verify's throwaway snapshot and the partition maps of it, or of a classic point read
    as it is, with the longest kpartx delimiter and partition 128, in a 32-character VG."""
    from toolkit.config import DOMAIN_NAME_MAX
    from toolkit.facts.lvm import dm_name
    from toolkit.plan import mapped_partition
    from toolkit.verify import VERIFY

    vg, disk = "v" * 32, "xvdaaaaa"
    for domain in ("d" * DOMAIN_NAME_MAX, "d-" * (DOMAIN_NAME_MAX // 4) + "d",
                   "-".join(["d"] * ((DOMAIN_NAME_MAX + 2) // 3))):
        snapshot = f"{VERIFY}-{R1}-{domain}-{disk}"
        for lv in (snapshot, rp.point_lv_name(R1, domain, disk)):
            mapped = dm_name(vg, lv)
            part = mapped_partition(mapped, "-part", 128).removeprefix("/dev/mapper/")
            for shown in (lv, mapped, mapped + "-cow", part):
                assert len(shown.encode()) <= 127, (domain, shown, len(shown))
