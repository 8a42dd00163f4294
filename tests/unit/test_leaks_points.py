"""The lab's leak check keeps restore points: an LV named ``domubk-rp-<run>-<domain>-<disk>``
and tagged ``domubk_rp`` is kept on purpose, and so are its own dm maps (the LV's and a
classic point's -cow). Their partition maps, their mounts, and every domubk LV that is
untagged or misnamed are still leftovers (``toolkit.lab.sandbox.leaks_from``)."""

from __future__ import annotations

import pytest

from toolkit import restore_points as rp
from toolkit.facts.lvm import dm_name
from toolkit.lab.sandbox import leaks_from

RUN = "20260101T000000Z-abcd"
OLD = "20251230T020000Z-0c0c"
POINT = rp.point_lv_name(RUN, "web01", "xvda")
POINT_MAP = dm_name("vg_b", POINT)
TAGS = ",".join(rp.point_tags(RUN))


def sections(lvs: list[tuple[str, str, str]], maps: list[str], mounts: str = "") -> dict:
    """The probes' outputs of one host: ``lvs`` as (VG, LV, tags), ``maps`` by name."""
    return {
        "dm": "".join(f"{m}\t(253:{i})\n" for i, m in enumerate(maps)),
        "lvs": "".join(f"  {vg}|{lv}|{tags}\n" for vg, lv, tags in lvs),
        "mounts": "/dev/vda1 /\n" + mounts,
        "loops": "",
        "locks": "",
    }


# the standby with its classic point: LVM's own maps of both (origin, -real, point, -cow)
CLASSIC = sections([("vg_b", "web01", ""), ("vg_b", POINT, TAGS)],
                   ["vg_b-web01", "vg_b-web01-real", POINT_MAP, f"{POINT_MAP}-cow"])


@pytest.mark.parametrize("host", [None, "dom0-b", "dom0-a"])
def test_a_classic_point_its_map_and_its_cow_are_no_leak(host):
    assert leaks_from(CLASSIC, host=host) == []


def test_a_thin_point_and_its_map_are_no_leak():
    thin = rp.point_lv_name(OLD, "web01", "xvdb")
    out = sections([("vg_b", "web01-b", ""), ("vg_b", "pool0", ""),
                    ("vg_b", thin, ",".join(rp.point_tags(OLD)))],
                   ["vg_b-web01--b", "vg_b-pool0", dm_name("vg_b", thin)])
    assert leaks_from(out, host="dom0-b") == []
    assert leaks_from(out) == []


def test_several_points_of_several_domains_and_disks_are_no_leak():
    lvs, maps = [], []
    for run, domain, disk in [(RUN, "web01", "xvda"), (RUN, "web01", "xvdb"),
                              (OLD, "db01", "xvda"), (OLD, "web01.prod", "sdb")]:
        name = rp.point_lv_name(run, domain, disk)
        lvs.append(("vg_b", name, ",".join(rp.point_tags(run))))
        maps += [dm_name("vg_b", name), f"{dm_name('vg_b', name)}-cow"]
    assert leaks_from(sections(lvs, maps), host="dom0-b") == []


def test_a_point_in_a_vg_with_dashes_is_no_leak():
    out = sections([("vg-x", POINT, TAGS)], [dm_name("vg-x", POINT), dm_name("vg-x", POINT)
                                             + "-cow"])
    assert leaks_from(out) == []


@pytest.mark.parametrize("host", [None, "dom0-b"])
def test_a_points_partition_maps_are_still_leaks(host):
    out = dict(CLASSIC)
    out["dm"] += f"{POINT_MAP}p1\t(253:20)\n{POINT_MAP}p2\t(253:21)\n"
    assert leaks_from(out, host=host) == [f"dm map {POINT_MAP}p1", f"dm map {POINT_MAP}p2"]


def test_a_mounted_point_is_still_a_leak():
    out = sections([("vg_b", POINT, TAGS)], [POINT_MAP, f"{POINT_MAP}p1"],
                   mounts=f"/dev/mapper/{POINT_MAP}p1 /mnt/look\n")
    assert leaks_from(out, host="dom0-b") == [
        f"dm map {POINT_MAP}p1", f"mount /mnt/look (/dev/mapper/{POINT_MAP}p1)"]


@pytest.mark.parametrize("tags", ["", "domubk", f"domubk_rp_{RUN}", "domubk_rpx",
                                  "domubk_rp_x,other", "xdomubk_rp"])
def test_a_point_named_lv_without_the_point_tag_is_a_leak_with_its_maps(tags):
    out = sections([("vg_b", "web01", ""), ("vg_b", POINT, tags)],
                   ["vg_b-web01", "vg_b-web01-real", POINT_MAP, f"{POINT_MAP}-cow"])
    assert leaks_from(out, host="dom0-b") == [f"dm map {POINT_MAP}", f"dm map {POINT_MAP}-cow",
                                              f"LV vg_b/{POINT}"]


@pytest.mark.parametrize("name", [
    f"domubk-{RUN}-web01-xvda",  # a run's own snapshot, tagged as a point
    f"domubk-rp-{RUN}-web01",  # no disk
    f"domubk-rp-{RUN}-web01-xvda-extra",
    f"domubk-rp-{RUN}--web01-xvda",
    "domubk-rp-yesterday-web01-xvda",  # no run id
    f"x-domubk-rp-{RUN}-web01-xvda",
])
def test_a_tagged_lv_outside_the_points_grammar_is_a_leak_with_its_maps(name):
    mapped = dm_name("vg_b", name)
    out = sections([("vg_b", name, TAGS)], [mapped, f"{mapped}-cow"])
    assert leaks_from(out) == [f"dm map {mapped}", f"dm map {mapped}-cow", f"LV vg_b/{name}"]


def test_a_leftover_beside_a_point_is_reported_and_the_point_is_not():
    snap = f"domubk-{RUN}-web01-xvda"
    out = sections([("vg_a", "web01", ""), ("vg_a", snap, f"domubk,domubk-run={RUN}"),
                    ("vg_b", POINT, TAGS)],
                   ["vg_a-web01", "vg_a-web01-real", dm_name("vg_a", snap),
                    f"{dm_name('vg_a', snap)}-cow", POINT_MAP, f"{POINT_MAP}-cow"])
    leaks = leaks_from(out)
    assert leaks == [f"dm map {dm_name('vg_a', snap)}", f"dm map {dm_name('vg_a', snap)}-cow",
                     f"LV vg_a/{snap}"]
    assert not any(POINT in leak or POINT_MAP in leak for leak in leaks)


def test_a_map_of_a_point_lv_that_is_gone_is_a_leak():
    # the LV's map is kept only while the LV is there, named and tagged
    out = sections([("vg_b", "web01", "")], ["vg_b-web01", POINT_MAP, f"{POINT_MAP}-cow"])
    assert leaks_from(out, host="dom0-b") == [f"dm map {POINT_MAP}", f"dm map {POINT_MAP}-cow"]


def test_a_points_tag_does_not_cover_an_lv_of_the_same_name_in_another_vg():
    out = sections([("vg_b", POINT, TAGS), ("vg_a", POINT, "")],
                   [POINT_MAP, dm_name("vg_a", POINT)])
    assert leaks_from(out) == [f"dm map {dm_name('vg_a', POINT)}", f"LV vg_a/{POINT}"]
