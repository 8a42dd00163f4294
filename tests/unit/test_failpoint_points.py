"""Failpoints at the restore point and the prune: the actions "point" and "prune" parse, and
the executor fires them at the n-th point LV or prune step, as the lab's fault tests ask."""

from __future__ import annotations

import pytest
from fakes import web01_hosts, web01_run
from test_plan_points import DEC29, DEC30, point_lvs, web01_with
from test_take_point import NEW, journal_of, keep, plant, point_of, points_on, two_disk_run

from toolkit import errors
from toolkit.failpoint import FAILPOINT_ACTIONS, Failpoint


@pytest.mark.parametrize(("raw", "expected"), [
    ("before:point:raise", Failpoint("before", "point", 0, "raise")),
    ("after:point@2:sigkill", Failpoint("after", "point", 2, "sigkill")),
    ("before:prune@1:sleep=3", Failpoint("before", "prune", 1, "sleep=3")),
    ("after:prune:sigterm", Failpoint("after", "prune", 0, "sigterm")),
])
def test_point_and_prune_are_failpoint_actions(raw, expected):
    assert Failpoint.parse(raw) == expected


def test_the_usage_error_lists_them_among_the_actions():
    assert {"point", "prune"} <= FAILPOINT_ACTIONS
    with pytest.raises(errors.UsageError) as info:
        Failpoint.parse("after:points:raise")
    assert "unknown action 'points'" in str(info.value)
    listed = str(info.value).split("(", 1)[1]
    assert "point," in listed and "prune," in listed


def test_the_environment_sets_a_point_failpoint_where_test_hooks_are_on(tmp_path, monkeypatch):
    hooks = tmp_path / "test-hooks"
    hooks.write_text("on\n")
    monkeypatch.setattr("toolkit.failpoint.TEST_HOOKS_FILE", str(hooks))
    monkeypatch.setenv("DOMU_BACKUP_FAILPOINT", "after:prune@2:raise")
    assert Failpoint.from_env() == Failpoint("after", "prune", 2, "raise")


@pytest.mark.parametrize(("when", "n"), [("after", 1), ("before", 2)])
def test_a_failpoint_at_a_point_lv_undoes_what_was_made_of_the_point(tmp_path, when, n):
    old = point_lvs(DEC30, disks=("xvda", "xvdb"))
    src, peer, run = two_disk_run(tmp_path, None, old=old, keep_last=1)
    said: list[str] = []
    run.ex.log = said.append
    run.ex.failpoint = Failpoint(when, "point", n, "raise")
    with pytest.raises(errors.ToolkitError, match=rf"^failpoint {when}:point raised$"):
        run.ex.run()
    assert f"failpoint {when}:point@{n}:raise" in said
    made = [c for c in peer.calls if c == tuple(run.plan.after[0].argv)]
    assert len(made) == 1  # the first disk's point LV was made...
    assert ("lvremove", "--yes", "--", point_of(NEW, "xvda")) in peer.calls  # ...and undone
    assert tuple(run.plan.after[1].argv) not in peer.calls  # the second never
    assert points_on(peer) == sorted(f"vg_b/{lv.name}" for lv in old)  # no prune ran
    assert journal_of(run) not in peer.files
    assert run.report.restore_point == ""


def test_a_failpoint_before_the_second_prune_leaves_the_new_point_and_what_was_not_pruned(
        tmp_path):
    src, peer = web01_hosts()
    old = point_lvs(DEC30, DEC29)
    plant(peer, old)
    run = web01_run(tmp_path, src, peer, facts=web01_with(*old), **keep(keep_last=1))
    run.ex.failpoint = Failpoint("before", "prune", 2, "raise")
    with pytest.raises(errors.ToolkitError, match=r"^failpoint before:prune raised$"):
        run.ex.run()
    assert ("lvremove", "--yes", "--", point_of(DEC30)) in peer.calls
    assert ("lvremove", "--yes", "--", point_of(DEC29)) not in peer.calls
    assert points_on(peer) == sorted([point_of(NEW), point_of(DEC29)])
    assert run.report.restore_point == NEW


def test_a_failpoint_of_another_action_never_fires_at_the_point(tmp_path):
    src, peer = web01_hosts()
    run = web01_run(tmp_path, src, peer, **keep(keep_last=1))
    run.ex.failpoint = Failpoint("after", "prune", 0, "raise")  # nothing to prune
    run.ex.run()
    assert points_on(peer) == [point_of(NEW)]
