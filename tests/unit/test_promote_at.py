"""promote --at RUN_ID: the standby rolled back to a thin restore point first, what it held
kept as a point of the promote's own run, each step journalled and undone exactly."""

from __future__ import annotations

import json

import pytest
from test_promote import CLEAN, RUN, setup

from toolkit import errors
from toolkit import restore_points as rp
from toolkit.marker import marker_path
from toolkit.promote import render_promote
from toolkit.recover import _unexpected_undo, recover_journals
from toolkit.rollback import lv_probe

OLD, NEWER = "20261201T020000Z-0001", "20261205T020000Z-0002"
DIRTY = {**CLEAN, "state": "dirty", "run_id": "20261206T030000Z-dead"}


def point(run: str) -> str:
    return rp.point_lv_name(run, "web01", "xvda")


def thin_setup(tmp_path, *, marker=DIRTY, at=OLD, classic=False):
    cfg, job, peer, src = setup(tmp_path, marker=marker)
    peer.base_lvs.pop("vg_b/web01")  # the standby: a thin LV of the run's own model
    peer.lvs["vg_b/web01"] = {"attr": "Vwi-a-tz--", "percent": "", "tags": (), "origin": "",
                              "pool": "pool0"}
    for run in (OLD, NEWER):
        peer.lvs[f"vg_b/{point(run)}"] = (
            {"attr": "sri-a-s---", "percent": "3.00", "tags": rp.point_tags(run),
             "origin": "web01"} if classic else
            {"attr": "Vri-a-tz--", "percent": "", "tags": rp.point_tags(run), "origin": "web01",
             "pool": "pool0"})
    job.at = at
    return cfg, job, peer, src


def test_a_dirty_standby_starts_from_the_point_and_keeps_what_it_held(tmp_path):
    cfg, job, peer, _src = thin_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    job.run(report, marker)
    # the standby's name is now a writable thin snapshot of the point of OLD
    assert peer.lvs["vg_b/web01"]["origin"] == point(OLD)
    assert peer.lvs["vg_b/web01"]["attr"].startswith("Vwi")
    # what it held is the promote's own point, tagged as one; both old points untouched
    kept = peer.lvs[f"vg_b/{point(RUN)}"]
    assert kept["origin"] == "" and kept["tags"] == rp.point_tags(RUN)
    assert {point(OLD), point(NEWER)} <= {k.split("/")[1] for k in peer.lvs}
    after = json.loads(peer.files[marker_path(cfg, "web01")])
    assert after["state"] == "promoted" and after["promoted_at_point"] == OLD
    assert f"restore point {OLD}" in after["promoted_from"] and RUN in after["promoted_from"]
    assert peer.domains == {"web01": "running"}
    # promoted first, then the rename, the snapshot, then define
    calls = peer.calls
    marked = max(i for i, c in enumerate(calls) if c[:2] == ("sh", "-c")
                 and c[-1] == marker_path(cfg, "web01"))
    renamed = calls.index(("lvrename", "vg_b", "web01", point(RUN)))
    snapped = next(i for i, c in enumerate(calls) if c[0] == "lvcreate")
    defined = next(i for i, c in enumerate(calls) if c[:1] == ("virsh",) and c[3] == "define")
    assert marked < renamed < snapped < defined
    assert not [p for p in peer.files if "/journal/" in p]
    assert f"rolled back to restore point {OLD}" in render_promote(report)


def test_a_dry_run_prints_the_rollback_and_changes_nothing(tmp_path):
    cfg, job, peer, _src = thin_setup(tmp_path)
    before = {k: dict(v) for k, v in peer.lvs.items()}
    report, _marker, _ = job.read(force=False)
    text = render_promote(report)
    assert f"lvrename vg_b web01 {point(RUN)}" in text
    assert f"--name web01 vg_b/{point(OLD)}" in text
    assert peer.lvs == before and peer.domains == {}
    assert not any(c[0] in ("lvrename", "lvcreate", "lvchange") for c in peer.calls)


@pytest.mark.parametrize(("at", "classic", "words"), [
    ("20261130T020000Z-0009", False, f"no restore point 20261130T020000Z-0009 on this host "
                                     f"\\(its points: {NEWER}, {OLD}\\)"),
    (OLD, True, "is a classic snapshot of the thin standby"),
])
def test_a_point_it_cannot_roll_back_to_refuses_and_changes_nothing(tmp_path, at, classic,
                                                                     words):
    cfg, job, peer, _src = thin_setup(tmp_path, at=at, classic=classic)
    with pytest.raises(errors.PromoteRefused, match=words):
        job.read(force=False)
    assert json.loads(peer.files[marker_path(cfg, "web01")]) == DIRTY


def test_an_invalid_point_refuses(tmp_path):
    cfg, job, peer, _src = thin_setup(tmp_path, classic=True)
    peer.lvs[f"vg_b/{point(OLD)}"]["attr"] = "sri-I-s---"
    with pytest.raises(errors.PromoteRefused, match="is not valid"):
        job.read(force=False)


def test_without_at_a_dirty_standby_still_refuses_and_names_the_way(tmp_path):
    cfg, job, peer, _src = thin_setup(tmp_path, at=None)
    with pytest.raises(errors.PromoteRefused, match="promote --at RUN_ID"):
        job.read(force=False)


def _standby_as_before(peer) -> None:
    assert peer.lvs["vg_b/web01"]["origin"] == "" and peer.lvs["vg_b/web01"]["tags"] == ()
    assert f"vg_b/{point(RUN)}" not in peer.lvs
    assert peer.lvs[f"vg_b/{point(OLD)}"]["origin"] == "web01"


def test_a_failed_define_rolls_the_standby_forward_again_at_once(tmp_path):
    cfg, job, peer, _src = thin_setup(tmp_path)
    report, marker, _ = job.read(force=False)
    real = peer._cmd_virsh
    peer._cmd_virsh = lambda a, i: ((1, "", "error: XML error\n") if a[3] == "define"
                                    else real(a, i))
    with pytest.raises(errors.PromoteRefused, match="failed"):
        job.run(report, marker)
    _standby_as_before(peer)
    assert json.loads(peer.files[marker_path(cfg, "web01")]) == DIRTY
    assert not [p for p in peer.files if "/journal/" in p]


def test_recover_undoes_a_rollback_killed_before_the_domain_ran(tmp_path):
    cfg, job, peer, _src = thin_setup(tmp_path)
    report, marker, _ = job.read(force=False)

    class Killed(BaseException):
        pass

    real = peer._cmd_virsh

    def virsh(a, i):
        if a[3] == "define":
            raise Killed
        return real(a, i)
    peer._cmd_virsh = virsh
    job._undo = lambda *a: None  # SIGKILL: no undo in the process
    with pytest.raises(Killed):
        job.run(report, marker)
    peer._cmd_virsh = real
    assert peer.lvs["vg_b/web01"]["origin"] == point(OLD)  # rolled back, then killed
    errs: list[str] = []
    done = recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, errs)
    assert errs == [] and done
    _standby_as_before(peer)
    assert json.loads(peer.files[marker_path(cfg, "web01")]) == DIRTY
    assert recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, []) == []


@pytest.mark.parametrize(("undo", "exists"), [
    # a rename of the standby itself, or to another LV than a point of the domain
    (("lvrename", "vg_b", "web01", "db01"), lv_probe("vg_b", "web01")),
    (("lvrename", "vg_b", rp.point_lv_name(RUN, "db01", "xvda"), "db01"),
     lv_probe("vg_b", rp.point_lv_name(RUN, "db01", "xvda"))),
    (("lvrename", "vg_b", point(RUN), "web01", "x"), lv_probe("vg_b", point(RUN))),
    (("lvrename", "vg_b", point(RUN), "web01"), lv_probe("vg_b", "web01")),
    # tags other than the point's own, or another change
    (("lvchange", "--deltag", "other", "--deltag", f"{rp.POINT_TAG}_{RUN}",
      f"vg_b/{point(RUN)}"), lv_probe("vg_b", point(RUN))),
    (("lvchange", "-an", "vg_b/web01"), lv_probe("vg_b", "web01")),
    (("lvchange", "--deltag", rp.POINT_TAG, "--deltag", f"{rp.POINT_TAG}_{OLD}",
      f"vg_b/{point(RUN)}"), lv_probe("vg_b", point(RUN))),
])
def test_recover_runs_no_lvrename_or_lvchange_but_a_rollbacks_own(undo, exists):
    assert _unexpected_undo(undo, exists, domain="web01") != ""


def test_a_rollbacks_own_undos_pass():
    assert _unexpected_undo(("lvrename", "vg_b", point(RUN), "web01"),
                            lv_probe("vg_b", point(RUN)), domain="web01") == ""
    assert _unexpected_undo(("lvchange", "--deltag", rp.POINT_TAG, "--deltag",
                             f"{rp.POINT_TAG}_{RUN}", f"vg_b/{point(RUN)}"),
                            lv_probe("vg_b", point(RUN)), domain="web01") == ""
