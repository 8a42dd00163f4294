"""The restore point taken after a clean run, on fake Dom0s: when it is taken, how a failed
one is undone, and the prune after it.

The executor runs the plan's ``after`` part only when the body succeeded, teardown left
nothing and no signal is pending; the point LVs are journalled on the peer and removed
again (journal too) when any of them fails, and the old points go only once the new one is
whole.
"""

from __future__ import annotations

import json
import signal

import pytest
from fakes import BASE_DEVICES, RUN_ID, FakeHost, web01_hosts, web01_run
from test_guard_executor import SignalInTeardown
from test_plan_is_what_runs import _planned, _unplanned
from test_plan_points import (
    DEC29,
    DEC30,
    DEC31_LATE,
    LATER,
    point_lvs,
    two_disk_facts,
    web01_with,
)

from toolkit import errors, signals
from toolkit import restore_points as rp
from toolkit.config import RestorePoints
from toolkit.journal import journal_path, unwrap_journalled
from toolkit.lock import domain_lock
from toolkit.report import RunReport, summary
from toolkit.runners import CommandResult

NEW = RUN_ID
TWO_DISK_DEVICES = (*BASE_DEVICES, "/dev/vg_a/web01-b", "/dev/vg_b/web01-b")


def point_of(run: str, disk: str = "xvda") -> str:
    """The "vg/lv" of a point's LV on the peer."""
    return f"vg_b/{rp.point_lv_name(run, 'web01', disk)}"


def plant(peer: FakeHost, lvs) -> None:
    """Old restore points on the peer, as earlier runs left them."""
    for lv in lvs:
        peer.lvs[f"{lv.vg}/{lv.name}"] = {"attr": lv.attr, "percent": "1.00", "tags": lv.tags,
                                          "origin": lv.origin}


def points_on(host: FakeHost) -> list[str]:
    """The restore point LVs ("vg/lv") on ``host``, sorted."""
    return sorted(k for k in host.lvs if rp.parse_point_lv(k.split("/")[1]) is not None)


def is_point_create(argv) -> bool:
    return argv[0] == "lvcreate" and rp.parse_point_lv(argv[argv.index("--name") + 1]) is not None


def refuse(test, code: int = 5, stderr: str = "  Insufficient free space\n"):
    """A fail hook: ``test(argv)`` true -> that command fails with ``code``."""
    def fail(argv):
        if test(argv):
            return CommandResult("dom0-b", tuple(argv), code, "", stderr, 0.0)
        return None
    return fail


def lvcreate_of(disk: str):
    return lambda a: is_point_create(a) and a[a.index("--name") + 1].endswith(f"-{disk}")


def lvremove_of(*full: str):
    return lambda a: a[0] == "lvremove" and a[-1] in full


def journal_of(run) -> str:
    return journal_path(run.cfg.defaults.state_dir, "web01", NEW)


def keep(**rules) -> dict:
    return {"restore_points": RestorePoints(**rules)}


# -- taken after a clean run -----------------------------------------------------------------

def test_a_clean_run_takes_its_point_on_the_peer_after_teardown_under_the_lock(tmp_path):
    order: list[tuple[str, tuple[str, ...]]] = []
    lock_seen: list[str] = []

    def log(host):
        def hook(argv):
            order.append((host, tuple(argv)))
            if host == "peer" and is_point_create(argv):
                try:
                    with domain_lock(str(tmp_path / "lock"), "web01"):
                        lock_seen.append("free")
                except errors.LockBusy:
                    lock_seen.append("held")
            return None
        return hook

    src, peer = web01_hosts(src_fail=log("source"), peer_fail=log("peer"))
    run = web01_run(tmp_path, src, peer, **keep(keep_last=2))
    run.ex.run()

    assert points_on(peer) == [point_of(NEW)]
    made = peer.lvs[point_of(NEW)]
    assert made["origin"] == "web01" and made["tags"] == rp.point_tags(NEW)
    assert src.leftovers() == [] and points_on(src) == []
    # after every undo on both hosts: the source's snapshot gone, the standby unmounted
    at = order.index(("peer", run.plan.after[0].argv))
    assert max(i for i, (h, a) in enumerate(order) if a[0] in ("umount", "lvremove")
               or a[:2] == ("kpartx", "-d")) < at
    assert any(h == "source" and a[0] == "lvremove" for h, a in order[:at])
    assert lock_seen == ["held"]
    with domain_lock(str(tmp_path / "lock"), "web01"):
        pass  # and released once the run is over


def test_the_point_is_journalled_on_the_peer_and_the_journal_removed_once_it_is_whole(tmp_path):
    src, peer = web01_hosts()
    run = web01_run(tmp_path, src, peer, **keep(keep_last=1))
    run.ex.run()
    wrapped = [unwrap_journalled(c) for c in peer.calls]
    point = [w for w in wrapped if w is not None and is_point_create(w[1])]
    assert [(path, tuple(inner)) for path, inner in point] == [
        (journal_of(run), run.plan.after[0].argv)]
    creates = peer.calls.index(tuple(run.plan.after[0].argv))
    assert ("rm", "-f", journal_of(run)) in peer.calls[creates:]
    assert journal_of(run) not in peer.files


def test_the_report_says_which_point_was_taken_how_many_are_kept_and_what_went(tmp_path):
    src, peer = web01_hosts()
    old = point_lvs(DEC31_LATE, DEC30, DEC29)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=web01_with(*old), **keep(keep_last=2))
    run.ex.run()
    assert points_on(peer) == sorted([point_of(NEW), point_of(DEC31_LATE)])
    report = run.report
    assert (report.restore_point, report.newest_point) == (NEW, NEW)
    assert report.restore_points == 2
    assert report.points_pruned == [DEC30, DEC29]
    assert "points" in report.phases
    assert [(s.role, s.action, s.resource) for s in report.steps
            if s.action in ("point", "prune")] == [
        ("peer", "point", f"/dev/{point_of(NEW)}"), ("peer", "prune", f"/dev/{point_of(DEC30)}"),
        ("peer", "prune", f"/dev/{point_of(DEC29)}")]
    report.peer_host = "dom0-b"
    text = summary(RunReport("dom0-a", domains=[report]))
    assert f"restore point {NEW} taken on dom0-b (2 kept, removed {DEC30}, {DEC29})" in text
    saved = json.loads(RunReport("dom0-a", domains=[report]).to_json())["domains"][0]
    assert (saved["restore_point"], saved["restore_points"], saved["points_pruned"]) == (
        NEW, 2, [DEC30, DEC29])


def test_prunes_run_only_after_the_point_is_made_and_are_not_journalled(tmp_path):
    src, peer = web01_hosts()
    old = point_lvs(DEC30)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=web01_with(*old), **keep(keep_last=1))
    run.ex.run()
    create = peer.calls.index(tuple(run.plan.after[0].argv))
    remove = peer.calls.index(("lvremove", "--yes", "--", point_of(DEC30)))
    assert create < remove
    assert not any(w is not None and w[1][0] == "lvremove"
                   for w in map(unwrap_journalled, peer.calls))


def test_every_command_of_the_after_part_is_in_the_plan_and_bounded(tmp_path):
    src, peer = web01_hosts()
    old = point_lvs(DEC30)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=web01_with(*old), ssh={"command_timeout": 77.0},
                    **keep(keep_last=1))
    run.ex.run()
    planned = _planned(run.plan.steps) | _planned(run.ex.plan.steps) | _planned(run.plan.after)
    assert _unplanned(peer, planned, run.cfg.defaults.state_dir) == []
    after = {tuple(s.argv) for s in run.plan.after}
    bounds = [t for a, t in peer.timeouts
              if a in after or (unwrap_journalled(a) or ("", ()))[1] in map(list, after)]
    assert bounds == [77.0, 77.0, 77.0]  # the journalled lvcreate, its lvcreate, the prune


def test_a_run_without_points_takes_none(tmp_path):
    src, peer = web01_hosts()
    run = web01_run(tmp_path, src, peer)
    run.ex.run()
    assert not any(c[0] == "lvcreate" for c in peer.calls)
    assert "points" not in run.report.phases and run.report.restore_point == ""


# -- not taken -------------------------------------------------------------------------------

def test_no_point_when_the_copy_failed(tmp_path):
    src, peer = web01_hosts()
    src.rsync_result = (12, "", "rsync error: error in rsync protocol data stream (code 12)")
    old = point_lvs(DEC30)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=web01_with(*old), **keep(keep_last=1))
    with pytest.raises(errors.ToolkitError) as info:
        run.ex.run()
    assert not isinstance(info.value, errors.RestorePointFailed)
    assert not any(is_point_create(c) for c in peer.calls)
    assert points_on(peer) == [point_of(DEC30)]  # nor is any old point removed
    assert run.report.restore_point == "" and "points" not in run.report.phases


@pytest.mark.parametrize("side", ["source", "peer"])
def test_no_point_when_teardown_left_something_behind(tmp_path, monkeypatch, side):
    monkeypatch.setattr("time.sleep", lambda s: None)
    stuck = refuse(lambda a: a[0] == "umount", 32, "umount: target is busy.\n")
    src, peer = web01_hosts(**{f"{'src' if side == 'source' else 'peer'}_fail": stuck})
    run = web01_run(tmp_path, src, peer, **keep(keep_last=1))
    with pytest.raises(errors.TeardownIncomplete):
        run.ex.run()
    assert run.report.teardown_errors
    assert not any(is_point_create(c) for c in peer.calls)
    assert run.report.restore_point == ""


def test_no_point_when_a_signal_came_during_teardown(tmp_path):
    src, peer = SignalInTeardown("dom0-a", signal.SIGTERM), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    run = web01_run(tmp_path, src, peer, **keep(keep_last=1))
    with signals.signals_raise(), pytest.raises(errors.Interrupted) as info:
        run.ex.run()
    assert src.sent and info.value.exit_code == 128 + signal.SIGTERM
    assert run.report.teardown_errors == []
    assert not any(is_point_create(c) for c in peer.calls)
    assert run.report.restore_point == ""


# -- a point that fails ----------------------------------------------------------------------

def two_disk_run(tmp_path, peer_fail, *, old=(), **rules):
    src = FakeHost("dom0-a", devices=TWO_DISK_DEVICES)
    src.fstab_on = "xvda1"
    peer = FakeHost("dom0-b", devices=TWO_DISK_DEVICES, fail=peer_fail)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=two_disk_facts(points=tuple(old)),
                    **keep(**rules))
    return src, peer, run


def test_a_failed_lvcreate_of_the_second_disk_removes_the_first_and_the_journal(tmp_path):
    old = point_lvs(DEC30, DEC29, disks=("xvda", "xvdb"))
    src, peer, run = two_disk_run(tmp_path, refuse(lvcreate_of("xvdb")), old=old, keep_last=1)
    assert [s.action for s in run.plan.after] == ["point", "point", "prune", "prune", "prune",
                                                  "prune"]
    with pytest.raises(errors.RestorePointFailed) as info:
        run.ex.run()
    assert info.value.exit_code == 45 and info.value.host == "dom0-b"
    message = str(info.value)
    assert f"restore point {NEW}" in message and "exited 5: Insufficient free space" in message
    assert "vg_b/web01-b" in message and "older points are kept" in message
    # the first disk's point LV was made, then removed by its own undo
    assert ("lvremove", "--yes", "--", point_of(NEW, "xvda")) in peer.calls
    assert points_on(peer) == sorted(f"vg_b/{lv.name}" for lv in old)  # the old ones stay
    assert not any(c[0] == "lvremove" and c[-1] in {f"vg_b/{lv.name}" for lv in old}
                   for c in peer.calls)
    assert journal_of(run) not in peer.files
    assert src.leftovers() == []
    assert sorted(peer.leftovers()) == [f"lv {p}" for p in points_on(peer)]
    assert run.report.teardown_errors == []
    assert (run.report.restore_point, run.report.points_pruned) == ("", [])
    with domain_lock(str(tmp_path / "lock"), "web01"):
        pass  # the lock is released after a failed point too


def test_a_failed_first_lvcreate_leaves_nothing_and_never_tries_the_second(tmp_path):
    src, peer, run = two_disk_run(tmp_path, refuse(lvcreate_of("xvda")), keep_last=1)
    with pytest.raises(errors.RestorePointFailed):
        run.ex.run()
    assert [c for c in peer.calls if is_point_create(c)] == [run.plan.after[0].argv]
    assert points_on(peer) == [] and journal_of(run) not in peer.files


def test_a_point_lv_that_cannot_be_removed_keeps_the_journal_and_is_reported(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    first = point_of(NEW, "xvda")

    def fail(argv):
        if lvcreate_of("xvdb")(argv):
            return CommandResult("dom0-b", tuple(argv), 5, "", "  no space\n", 0.0)
        if lvremove_of(first)(argv):
            return CommandResult("dom0-b", tuple(argv), 5, "", "  Logical volume in use\n", 0.0)
        return None

    src, peer, run = two_disk_run(tmp_path, fail, keep_last=1)
    with pytest.raises(errors.RestorePointFailed):
        run.ex.run()
    assert points_on(peer) == [first]
    assert journal_of(run) in peer.files  # for recover: it names the LV left behind
    entries = [json.loads(line) for line in peer.files[journal_of(run)].splitlines()]
    assert [e["resource"] for e in entries] == [f"/dev/{first}", f"/dev/{point_of(NEW, 'xvdb')}"]
    assert any(first in e for e in run.report.teardown_errors)


def test_a_signal_while_the_point_is_taken_removes_what_was_made_of_it(tmp_path):
    def interrupt(argv):
        if lvcreate_of("xvdb")(argv):
            raise errors.Interrupted(signal.SIGINT)
        return None

    src, peer, run = two_disk_run(tmp_path, interrupt, keep_last=1)
    with pytest.raises(errors.Interrupted):
        run.ex.run()
    assert ("lvremove", "--yes", "--", point_of(NEW, "xvda")) in peer.calls
    assert points_on(peer) == [] and journal_of(run) not in peer.files
    assert run.report.restore_point == ""


# -- a prune that fails ----------------------------------------------------------------------

def test_a_failed_prune_keeps_the_new_point_prunes_the_rest_and_fails_45(tmp_path):
    src, peer = web01_hosts(peer_fail=refuse(lvremove_of(point_of(DEC30)), 5,
                                             "  Logical volume vg_b/x in use.\n"))
    old = point_lvs(DEC31_LATE, DEC30, DEC29)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=web01_with(*old), **keep(keep_last=2))
    with pytest.raises(errors.RestorePointFailed) as info:
        run.ex.run()
    assert info.value.exit_code == 45
    message = str(info.value)
    assert message.startswith(f"[dom0-b] restore point {NEW} taken, but pruning failed "
                              "(those points are kept): ")
    assert f"lvremove --yes -- {point_of(DEC30)}` exited 5" in message
    assert point_of(DEC29) not in message
    # the one that failed stays, the next was still removed, the new point is untouched
    assert points_on(peer) == sorted([point_of(NEW), point_of(DEC31_LATE), point_of(DEC30)])
    assert run.report.restore_point == NEW
    assert run.report.points_pruned == [DEC29]
    assert run.report.restore_points == 3
    assert journal_of(run) not in peer.files


def test_a_point_whose_lv_cannot_be_removed_is_neither_pruned_nor_counted_twice(tmp_path):
    old = point_lvs(DEC30, DEC29, disks=("xvda", "xvdb"))
    stuck = lvremove_of(point_of(DEC30, "xvdb"))
    src, peer, run = two_disk_run(tmp_path, refuse(stuck, 5, "  Logical volume in use.\n"),
                                  old=old, keep_last=1)
    with pytest.raises(errors.RestorePointFailed) as info:
        run.ex.run()
    assert info.value.exit_code == 45
    assert f"{point_of(DEC30, 'xvdb')}` exited 5" in str(info.value)
    # its other LV still went, as did every LV of the next point
    assert points_on(peer) == sorted([point_of(NEW, "xvda"), point_of(NEW, "xvdb"),
                                      point_of(DEC30, "xvdb")])
    assert run.report.restore_point == NEW
    assert run.report.points_pruned == [DEC29]  # DEC30 half-removed: not pruned
    assert run.report.restore_points == 2  # the new point and DEC30, each once


def test_a_point_none_of_whose_lvs_can_be_removed_counts_once(tmp_path):
    old = point_lvs(DEC30, DEC29, disks=("xvda", "xvdb"))
    stuck = lvremove_of(point_of(DEC30, "xvda"), point_of(DEC30, "xvdb"))
    src, peer, run = two_disk_run(tmp_path, refuse(stuck), old=old, keep_last=1)
    with pytest.raises(errors.RestorePointFailed) as info:
        run.ex.run()
    message = str(info.value)
    assert f"{point_of(DEC30, 'xvda')}` exited 5" in message
    assert f"{point_of(DEC30, 'xvdb')}` exited 5" in message
    assert point_of(DEC30, "xvda") in points_on(peer) and point_of(DEC30, "xvdb") in points_on(peer)
    assert run.report.points_pruned == [DEC29]
    assert run.report.restore_points == 2  # not 3: one point, however many LVs stayed


def test_two_points_each_with_an_lv_left_count_twice_and_neither_is_pruned(tmp_path):
    old = point_lvs(DEC31_LATE, DEC30, DEC29, disks=("xvda", "xvdb"))
    stuck = lvremove_of(point_of(DEC30, "xvda"), point_of(DEC29, "xvdb"))
    src, peer, run = two_disk_run(tmp_path, refuse(stuck), old=old, keep_last=2)
    with pytest.raises(errors.RestorePointFailed):
        run.ex.run()
    assert run.report.points_pruned == []
    assert run.report.restore_points == 4  # NEW and DEC31_LATE kept, DEC30 and DEC29 left
    assert point_of(DEC31_LATE, "xvda") in points_on(peer)


def refuse_point_journal(peer: FakeHost, disk: str):
    """A fail hook for ``peer``: the journal entry of the point LV of ``disk`` cannot be
    written (as a full or read-only state disk answers); every other journal write works."""
    def fail(argv):
        if len(argv) == 2 and argv[0] == "dd" and argv[1].startswith("of="):
            wrapped = unwrap_journalled(peer.calls[-1])
            if wrapped is not None and lvcreate_of(disk)(wrapped[1]):
                return CommandResult("dom0-b", tuple(argv), 1, "", "dd: No space left\n", 0.0)
        return None
    return fail


@pytest.mark.parametrize("disk", ["xvda", "xvdb"])
def test_a_point_whose_journal_cannot_be_written_fails_45_not_50(tmp_path, disk):
    old = point_lvs(DEC30, disks=("xvda", "xvdb"))
    src, peer, run = two_disk_run(tmp_path, None, old=old, keep_last=1)
    peer.fail = refuse_point_journal(peer, disk)
    with pytest.raises(errors.ToolkitError) as info:
        run.ex.run()
    assert type(info.value) is errors.RestorePointFailed
    assert info.value.exit_code == 45 and info.value.host == "dom0-b"
    assert isinstance(info.value.__cause__, errors.CommandFailed)
    message = str(info.value)
    assert f"restore point {NEW}" in message and "older points are kept" in message
    # the command behind the refused entry never ran; what was made of the point is gone
    assert not any(lvcreate_of(disk)(c) for c in peer.calls)
    assert points_on(peer) == sorted(f"vg_b/{lv.name}" for lv in old)
    assert not any(c[0] == "lvremove" and c[-1] in {f"vg_b/{lv.name}" for lv in old}
                   for c in peer.calls)
    assert journal_of(run) not in peer.files
    assert (run.report.restore_point, run.report.points_pruned) == ("", [])
    assert run.report.teardown_errors == []
    with domain_lock(str(tmp_path / "lock"), "web01"):
        pass


def test_a_refused_journal_of_the_second_disk_removes_the_first_disks_point_lv(tmp_path):
    src, peer, run = two_disk_run(tmp_path, None, keep_last=1)
    peer.fail = refuse_point_journal(peer, "xvdb")
    with pytest.raises(errors.RestorePointFailed):
        run.ex.run()
    assert tuple(run.plan.after[0].argv) in peer.calls  # xvda's point was made...
    assert ("lvremove", "--yes", "--", point_of(NEW, "xvda")) in peer.calls  # ...and undone
    assert points_on(peer) == [] and peer.leftovers() == []


def test_a_newer_point_from_a_clock_ahead_is_the_newest_and_the_run_still_takes_its_own(
        tmp_path):
    src, peer = web01_hosts()
    old = point_lvs(LATER, DEC30)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=web01_with(*old), **keep(keep_last=1))
    run.ex.run()
    assert points_on(peer) == sorted([point_of(NEW), point_of(LATER)])
    assert run.report.restore_point == NEW
    assert run.report.newest_point == LATER
    assert run.report.restore_points == 2
    assert run.report.points_pruned == [DEC30]
