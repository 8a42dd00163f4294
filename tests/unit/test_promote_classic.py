"""promote --at RUN_ID to a classic point: the standby kept as a classic point first, then
the point merged into it; past the first merge a failed or killed promote goes forward
(the merges finished, the standby clean at the point), never half-way."""

from __future__ import annotations

import json

import pytest
from test_promote import CLEAN, RUN, setup

from toolkit import errors
from toolkit import restore_points as rp
from toolkit.journal import JournalEntry
from toolkit.marker import marker_path
from toolkit.promote import render_promote
from toolkit.recover import _unexpected_undo, recover_journals
from toolkit.rollback import finish_merge_argv, lv_probe, merge_argv
from toolkit.settle import settle_merges

OLD, NEWER = "20261201T020000Z-0001", "20261205T020000Z-0002"
DIRTY = {**CLEAN, "state": "dirty", "run_id": "20261206T030000Z-dead"}
SIZE = 67108864  # the fake's lv_size of every LV


def point(run: str, domain: str = "web01", disk: str = "xvda") -> str:
    return rp.point_lv_name(run, domain, disk)


def classic_setup(tmp_path, *, marker=DIRTY, at=OLD, fill=("3.00", "1.00")):
    cfg, job, peer, src = setup(tmp_path, marker=marker)
    peer.lvs["vg_b/web01"]["content"] = "the standby as it was"
    for run, percent in zip((OLD, NEWER), fill, strict=True):
        peer.lvs[f"vg_b/{point(run)}"] = {"attr": "sri-a-s---", "percent": percent,
                                          "tags": rp.point_tags(run), "origin": "web01",
                                          "content": f"the guest at {run}"}
    job.at = at
    return cfg, job, peer, src


def marker_of(cfg, peer) -> dict:
    return json.loads(peer.files[marker_path(cfg, "web01")])


def journals(peer) -> list[str]:
    return [p for p in peer.files if "/journal/" in p]


def test_the_point_is_merged_into_the_standby_after_the_standby_is_kept(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    job.run(report, marker)
    standby = peer.lvs["vg_b/web01"]
    assert standby["content"] == f"the guest at {OLD}"  # the point's blocks, merged
    assert f"vg_b/{point(OLD)}" not in peer.lvs  # a merged point is gone
    kept = peer.lvs[f"vg_b/{point(RUN)}"]
    assert kept["origin"] == "web01" and kept["tags"] == rp.point_tags(RUN)
    assert kept["content"] == "the standby as it was"
    assert peer.lvs[f"vg_b/{point(NEWER)}"]["content"] == f"the guest at {NEWER}"
    after = marker_of(cfg, peer)
    assert after["state"] == "promoted" and after["promoted_at_point"] == OLD
    assert peer.domains == {"web01": "running"}
    calls = peer.calls
    marked = max(i for i, c in enumerate(calls) if c[:2] == ("sh", "-c")
                 and c[-1] == marker_path(cfg, "web01"))
    keep = next(i for i, c in enumerate(calls) if c[0] == "lvcreate")
    merge = calls.index(merge_argv("vg_b", point(OLD)))
    define = next(i for i, c in enumerate(calls) if c[:1] == ("virsh",) and c[3] == "define")
    assert marked < keep < merge < define
    # the kept point: a read-only classic snapshot of the point's size, tagged at creation
    assert calls[keep][-3:] == ("--size", f"{SIZE}b", "vg_b/web01")
    assert ("--permission", "r") == calls[keep][2:4]
    assert not journals(peer)


def test_a_dry_run_shows_the_keep_and_the_merge_and_changes_nothing(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    before = {k: dict(v) for k, v in peer.lvs.items()}
    report, _marker, _ = job.read(force=False)
    text = render_promote(report)
    assert f"--name {point(RUN)}" in text and f"--size {SIZE}b vg_b/web01" in text
    assert " ".join(merge_argv("vg_b", point(OLD))) in text
    assert "cannot be undone" in text
    assert peer.lvs == before and peer.domains == {}
    assert not any(c[0] in ("lvcreate", "lvconvert") for c in peer.calls)


@pytest.mark.parametrize(("change", "words"), [
    (lambda peer: peer.lvs[f"vg_b/{point(OLD)}"].update(origin="db01"),
     "is a snapshot of db01, not of the standby vg_b/web01"),
    # NEWER is 99% full: the blocks the merge copies into it (3% of OLD) do not fit
    (lambda peer: peer.lvs[f"vg_b/{point(NEWER)}"].update(percent="99.00"),
     f"restore point {NEWER} .* would overflow.*lvextend -L \\+"),
    # a snapshot of the standby that is no point of the tool's counts the same
    (lambda peer: peer.lvs.update({"vg_b/web01_mine": {
        "attr": "swi-a-s---", "percent": "98.50", "tags": (), "origin": "web01"}}),
     "snapshot vg_b/web01_mine has .* would overflow"),
    (lambda peer: peer.vg_free.update(vg_b=SIZE - 1),
     f"VG vg_b has {SIZE - 1} bytes free; .* needs {SIZE}"),
])
def test_a_merge_that_would_lose_something_refuses_before_any_change(tmp_path, change, words):
    cfg, job, peer, _src = classic_setup(tmp_path)
    change(peer)
    with pytest.raises(errors.PromoteRefused, match=words):
        job.read(force=False)
    assert marker_of(cfg, peer) == DIRTY
    assert not any(c[0] in ("lvcreate", "lvconvert", "sh") for c in peer.calls)


def test_an_invalid_other_point_is_not_counted_against_the_merge(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    peer.lvs[f"vg_b/{point(NEWER)}"].update(attr="sri-I-s---", percent="100.00")
    report, marker, _ = job.read(force=False)
    job.run(report, marker)
    assert peer.lvs["vg_b/web01"]["content"] == f"the guest at {OLD}"


def test_a_merge_that_fails_before_it_begins_undoes_everything(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    peer._cmd_lvconvert = lambda a, i: (5, "", "  Unable to merge: device busy\n")
    with pytest.raises(errors.PromoteRefused, match="device busy"):
        job.run(report, marker)
    assert peer.lvs["vg_b/web01"]["content"] == "the standby as it was"
    assert f"vg_b/{point(RUN)}" not in peer.lvs  # the kept point is undone
    assert peer.lvs[f"vg_b/{point(OLD)}"]["attr"] == "sri-a-s---"
    assert marker_of(cfg, peer) == DIRTY and peer.domains == {} and not journals(peer)


def _failed_define(peer):
    real = peer._cmd_virsh
    peer._cmd_virsh = lambda a, i: ((1, "", "error: XML error\n") if a[3] == "define"
                                    else real(a, i))


def _clean_at_old(cfg, peer) -> None:
    """After a merge the promote could not finish: forward, never half-way."""
    assert peer.lvs["vg_b/web01"]["content"] == f"the guest at {OLD}"
    assert f"vg_b/{point(OLD)}" not in peer.lvs
    assert peer.lvs[f"vg_b/{point(RUN)}"]["content"] == "the standby as it was"
    after = marker_of(cfg, peer)
    assert after["state"] == "clean" and after["last_success_run_id"] == OLD
    assert after["rolled_back_by"] == RUN and after["rolled_back_to"] == OLD
    assert not [k for k in after if k.startswith("promoted_")]
    assert not [p for p in peer.files if p.endswith(".before-promote")]
    assert peer.domains == {} and not journals(peer)


def test_a_failed_define_after_the_merge_goes_forward_not_back(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    _failed_define(peer)
    with pytest.raises(errors.PromoteRefused, match=f"failed.*already rolled back to restore "
                       f"point {OLD} .*clean at that point.*restore point {RUN}"):
        job.run(report, marker)
    _clean_at_old(cfg, peer)


def test_a_merge_cut_short_is_gone_on_with_by_the_promote_itself(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    peer.merge_stalls.add(f"vg_b/{point(OLD)}")
    with pytest.raises(errors.PromoteRefused, match="did not finish"):
        job.run(report, marker)
    assert finish_merge_argv("vg_b", "web01") in peer.calls
    _clean_at_old(cfg, peer)


class Killed(BaseException):
    pass


def _killed_at(peer, job, verb: str):
    """SIGKILL at the first command ``verb``: the process gone, its undo never run."""
    real = getattr(peer, f"_cmd_{verb}")

    def cut(a, i):
        raise Killed
    setattr(peer, f"_cmd_{verb}", cut)
    job._undo = lambda *a: None
    return real


def test_recover_goes_on_with_a_merge_killed_half_way(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    peer.merge_stalls.add(f"vg_b/{point(OLD)}")
    job._undo = lambda *a: None  # killed while lvconvert waited
    with pytest.raises(errors.PromoteRefused):
        job.run(report, marker)
    assert peer.lvs[f"vg_b/{point(OLD)}"]["attr"].startswith("S")  # merging
    errs: list[str] = []
    done = recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, errs)
    assert errs == []
    assert any(f"merged vg_b/{point(OLD)}" in d for d in done)
    assert any(f"clean at restore point {OLD}" in d for d in done)
    _clean_at_old(cfg, peer)
    assert recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, []) == []


def test_recover_undoes_a_promote_killed_before_its_merge_began(tmp_path):
    cfg, job, peer, _src = classic_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    real = _killed_at(peer, job, "lvconvert")
    with pytest.raises(Killed):
        job.run(report, marker)
    peer._cmd_lvconvert = real
    assert f"vg_b/{point(RUN)}" in peer.lvs  # kept, and the merge journalled, not begun
    errs: list[str] = []
    recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, errs)
    assert errs == []
    assert f"vg_b/{point(RUN)}" not in peer.lvs
    assert peer.lvs[f"vg_b/{point(OLD)}"]["content"] == f"the guest at {OLD}"
    assert peer.lvs["vg_b/web01"]["content"] == "the standby as it was"
    assert marker_of(cfg, peer) == DIRTY and not journals(peer)
    # the killed merge is the only lvconvert: recover began none
    assert [c for c in peer.calls if c[0] == "lvconvert"] == [merge_argv("vg_b", point(OLD))]


def test_past_one_merge_every_disk_is_merged_none_left_behind(tmp_path):
    """Two disks' merges journalled, the first begun: the second is started too."""
    cfg, _job, peer, _src = classic_setup(tmp_path)
    peer.lvs["vg_b/web01b"] = {"attr": "-wi-a-----", "percent": "", "tags": (), "origin": "",
                               "content": "disk b as it was"}
    peer.lvs[f"vg_b/{point(OLD, disk='xvdb')}"] = {
        "attr": "sri-a-s---", "percent": "2.00", "tags": rp.point_tags(OLD),
        "origin": "web01b", "content": f"disk b at {OLD}"}
    peer.merge_stalls.add(f"vg_b/{point(OLD)}")
    peer.run(merge_argv("vg_b", point(OLD)), check=False)  # begun, cut short
    entries = [JournalEntry(RUN, "web01", "promote-merge", f"vg_b/{p}", finish_merge_argv(
        "vg_b", lv), lv_probe("vg_b", p), 0.0)
        for p, lv in ((point(OLD), "web01"), (point(OLD, disk="xvdb"), "web01b"))]
    settled = settle_merges(peer, entries, lambda m: None)
    assert settled.forward and settled.rest == []
    assert peer.lvs["vg_b/web01"]["content"] == f"the guest at {OLD}"
    assert peer.lvs["vg_b/web01b"]["content"] == f"disk b at {OLD}"
    assert merge_argv("vg_b", point(OLD, disk="xvdb")) in peer.calls


def test_no_merge_begun_means_nothing_goes_forward(tmp_path):
    _cfg, _job, peer, _src = classic_setup(tmp_path)
    entries = [JournalEntry(RUN, "web01", "promote-merge", "vg_b/x",
                            finish_merge_argv("vg_b", "web01"), lv_probe("vg_b", point(OLD)),
                            0.0)]
    settled = settle_merges(peer, entries, lambda m: None)
    assert not settled.forward and settled.rest == [] and settled.done == []
    assert not any(c[0] == "lvconvert" for c in peer.calls)


@pytest.mark.parametrize(("undo", "exists"), [
    (("lvconvert", "--merge", "vg_b/web01"), lv_probe("vg_b", point(OLD))),
    (("lvconvert", "--startpoll", "vg_b/web01", "x"), lv_probe("vg_b", point(OLD))),
    (("lvconvert", "--startpoll", "vg_b/-web01"), lv_probe("vg_b", point(OLD))),
    # the probe must be a point of this domain, in the standby's VG
    (finish_merge_argv("vg_b", "web01"), lv_probe("vg_b", point(OLD, domain="db01"))),
    (finish_merge_argv("vg_b", "web01"), lv_probe("vg_a", point(OLD))),
    (finish_merge_argv("vg_b", "web01"), lv_probe("vg_b", "web01")),
    (finish_merge_argv("vg_b", "web01"), ()),
])
def test_recover_runs_no_lvconvert_but_the_finish_of_a_merge(undo, exists):
    assert _unexpected_undo(undo, exists, domain="web01") != ""


def test_the_finish_of_a_merge_passes():
    assert _unexpected_undo(finish_merge_argv("vg_b", "web01"), lv_probe("vg_b", point(OLD)),
                            domain="web01") == ""
