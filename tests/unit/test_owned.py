"""R21: recover and the start-of-run clean-up select a domain's objects by exact name.

Recovering ``web`` must never select what a live run of ``web-01``, ``web.prod``,
``web-src`` or any other domain holds, however their names extend each other.
"""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from toolkit.facts.lvm import dm_name
from toolkit.journal import journal_path
from toolkit.owned import journal_of, parse_owned, snapshot_lv
from toolkit.plan import owned_name, volume_map_name
from toolkit.recover import owned_maps, owned_mounts, owned_snapshots

RUN = "20261205T101010Z-ab12"
SRC, DST = "/run/domu-backup/src", "/run/domu-backup/dst"

domains = st.from_regex(r"[A-Za-z0-9_+.][A-Za-z0-9_+.-]{0,20}", fullmatch=True).filter(
    lambda d: d not in (".", ".."))
extensions = st.sampled_from(["-01", ".prod", "-src", "-dst", "-xvda", "-src-xvda2.vg.lv",
                              ".20261205T101010Z-ab12", "-p1", "x", "-1"])
delimiters = st.sampled_from(["p", "-part", "_", "p."])


def everything_a_run_makes(domain: str, delimiter: str, vg: str = "vg_a"):
    """Every name one run of ``domain`` gives its objects on both hosts."""
    snap = owned_name(RUN, domain, "xvda")
    alias = owned_name(RUN, domain, "xvda")
    maps = {
        "source": [dm_name(vg, snap) + f"{delimiter}1", dm_name(vg, snap) + f"{delimiter}2",
                   volume_map_name(RUN, domain, "src", "xvda2.vg0.root"),
                   volume_map_name(RUN, domain, "src", "xvda2." + "v" * 90 + ".x")],
        "peer": [alias, alias + f"{delimiter}1",
                 volume_map_name(RUN, domain, "dst", "xvda2.vg0.root")],
    }
    mounts = {"source": [f"{SRC}/{domain}.{RUN}/xvda1", f"{SRC}/{domain}.{RUN}/xvda2.vg0.root"],
              "peer": [f"{DST}/{domain}.{RUN}/xvda1"]}
    return snap, maps, mounts, journal_path("/var/lib/domu-backup", domain, RUN)


@settings(max_examples=400, deadline=None)
@given(domain=domains, ext=extensions, delimiter=delimiters, longer_first=st.booleans())
def test_a_domain_never_selects_what_a_domain_whose_name_extends_it_made(domain, ext,
                                                                        delimiter,
                                                                        longer_first):
    other = domain + ext
    mine, theirs = (other, domain) if longer_first else (domain, other)
    snap, maps, mounts, journal = everything_a_run_makes(theirs, delimiter)
    assert owned_snapshots([("vg_a", snap)], mine) == []
    assert not snapshot_lv(snap, mine)
    for role in ("source", "peer"):
        assert owned_maps(maps[role], role, mine, ["vg_a"], delimiter) == []
        prefix = SRC if role == "source" else DST
        assert owned_mounts(mounts[role], prefix, mine) == []
    assert not journal_of(journal, mine)


@settings(max_examples=200, deadline=None)
@given(domain=domains, delimiter=delimiters)
def test_a_domain_selects_everything_its_own_run_made(domain, delimiter):
    snap, maps, mounts, journal = everything_a_run_makes(domain, delimiter)
    assume(len(snap) <= 127)
    assert owned_snapshots([("vg_a", snap)], domain) == [f"vg_a/{snap}"]
    assert sorted(owned_maps(maps["source"], "source", domain, ["vg_a"], delimiter)) == sorted(
        maps["source"])
    assert sorted(owned_maps(maps["peer"], "peer", domain, [], delimiter)) == sorted(
        maps["peer"])
    assert owned_mounts(mounts["source"], SRC, domain) == sorted(
        mounts["source"], key=lambda p: p.count("/"), reverse=True)
    assert journal_of(journal, domain)
    # and recover of every domain (no domain given) takes them too
    assert owned_snapshots([("vg_a", snap)], None) == [f"vg_a/{snap}"]
    assert journal_of(journal, None)


def test_web_does_not_take_web_01_or_web_prod_but_takes_its_own():
    lv_map = volume_map_name(RUN, "web-01", "dst", "xvda2.vg.lv")
    names = [f"domubk-{RUN}-web-01-xvda", f"domubk-{RUN}-web-01-xvdap1",
             f"domubk-{RUN}-web.prod-xvda", f"domubk-{RUN}-web-xvda", lv_map]
    assert owned_maps(names, "peer", "web", [], "p") == [f"domubk-{RUN}-web-xvda"]
    assert owned_maps(names, "peer", "web-01", [], "p") == [
        lv_map, f"domubk-{RUN}-web-01-xvdap1", f"domubk-{RUN}-web-01-xvda"]
    mounts = [f"{DST}/web-01.{RUN}/xvda1", f"{DST}/web.prod.{RUN}/xvda1",
              f"{DST}/web.{RUN}/xvda1", f"{DST}/web.{RUN}x/xvda1"]
    assert owned_mounts(mounts, DST, "web") == [f"{DST}/web.{RUN}/xvda1"]
    assert [p for p in ("web.x.jsonl", f"web-01.{RUN}.jsonl", f"web.prod.{RUN}.jsonl",
                        f"web.{RUN}.jsonl") if journal_of(posixpath.join("/j", p), "web")] == [
        f"web.{RUN}.jsonl"]


def test_partition_maps_parse_with_the_configured_delimiter_and_a_digit_ending_disk():
    assert parse_owned(f"domubk-{RUN}-whole01-xvda1p1", "whole01", "p").partition == 1
    assert parse_owned(f"domubk-{RUN}-whole01-xvda1", "whole01", "p").partition is None
    got = parse_owned(f"domubk-{RUN}-web-xvda-part3", "web", "-part")
    assert (got.disk, got.partition) == ("xvda", 3)
    assert parse_owned(f"domubk-{RUN}-web-xvda-part3", "web", "p") is None
    assert parse_owned("domubk-2026-web-xvda", "web", "p") is None  # not a run id


@pytest.mark.parametrize("prefix", [DST, "/srv/backups-X", "/mnt/dst/"])
def test_a_runs_mounts_are_found_under_its_prefix_whatever_the_prefix_ends_with(prefix):
    base = prefix.rstrip("/")
    mine = [f"{base}/web.{RUN}", f"{base}/web.{RUN}/xvda1"]
    others = [f"{base}/web-01.{RUN}/xvda1", f"{base}-old/web.{RUN}/xvda1", f"/mnt/web.{RUN}"]
    assert owned_mounts(others + mine, prefix, "web") == [f"{base}/web.{RUN}/xvda1",
                                                           f"{base}/web.{RUN}"]


def test_each_kind_of_owned_name_parses_into_all_of_its_parts():
    from toolkit.owned import OwnedName

    lv_map = volume_map_name(RUN, "web", "src", "xvda2.vg.lv")
    digest = lv_map.rsplit("-", 1)[1]
    assert parse_owned(lv_map, "web", "p") == OwnedName(RUN, "web", None, None, "src", digest)
    assert parse_owned(f"domubk-{RUN}-web-xvda", None, "p") == OwnedName(RUN, "web", "xvda")
    assert parse_owned(f"domubk-{RUN}-web-xvdap2", "web", "p") == OwnedName(
        RUN, "web", "xvda", 2)
    # a snapshot LV is named by its disk alone, never like a guest LV map
    assert snapshot_lv(f"domubk-{RUN}-web-xvda", "web")
    assert not snapshot_lv(lv_map, "web")
