"""The plan's last part: the restore point a clean run takes on the peer, and the prune.

``point_steps`` on facts built like the plan tests' (``fakes``), with the peer's point LVs
as its ``lvs`` reports them; then ``plan_backup`` and the printed plan that carry them.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import RUN_ID, config, disk_facts, web01_facts
from test_restore_points import _lvs, _row

from toolkit import restore_points as rp
from toolkit.config import Config, RestorePoints, SnapshotSize
from toolkit.facts.lvm import LogicalVolume
from toolkit.facts.records import BackupFacts
from toolkit.plan import PEER, plan_backup, render_plan
from toolkit.plan_points import point_steps

NEW = RUN_ID  # 2026-01-01 00:00 UTC, a Thursday of ISO week 2026-W01
# Older runs, newest first: two on 31 December, one each on the 30th and the 29th (all in
# the new run's ISO week), and one on 20 December (ISO week 2025-W51).
DEC31_LATE = "20251231T230000Z-0a0a"
DEC31_EARLY = "20251231T020000Z-0b0b"
DEC30 = "20251230T020000Z-0c0c"
DEC29 = "20251229T020000Z-0d0d"
DEC20 = "20251220T020000Z-0e0e"
LATER = "20260102T000000Z-0f0f"  # a point newer than the run (another Dom0's clock ahead)


# -- what the tests build -------------------------------------------------------------------

def point_lvs(*runs: str, domain: str = "web01", disks: tuple[str, ...] = ("xvda",),
              **row) -> tuple[LogicalVolume, ...]:
    """The LVs of restore points of ``domain`` (one per disk and run) as the peer's lvs
    reports them: classic, valid, tagged as the tool's points unless ``row`` says
    otherwise (``test_restore_points._row``'s keywords)."""
    row.setdefault("tags", None)
    rows = []
    for run in runs:
        for disk in disks:
            fields = dict(row)
            if fields["tags"] is None:
                fields["tags"] = ",".join(rp.point_tags(run))
            rows.append(_row(rp.point_lv_name(run, domain, disk), **fields))
    return tuple(_lvs(*rows))


def two_disk_facts(*, points: tuple[LogicalVolume, ...] = ()) -> BackupFacts:
    """web01 with a second disk, xvdb (a whole-disk ext4), its standby vg_b/web01-b."""
    facts = web01_facts()
    xvdb = disk_facts("notable-ext4", "xvdb", "vg_a", "vg_b", "web01-b", size=256 << 20)
    return replace(facts, disks=(*facts.disks, xvdb), points=points)


def thin(facts: BackupFacts, target: str, pool: str = "pool0") -> BackupFacts:
    """``facts`` with the standby of disk ``target`` a thin LV in ``pool``."""
    return replace(facts, disks=tuple(
        replace(d, standby_lv=replace(d.standby_lv, pool=pool, attr="Vwi-a-tz--"))
        if d.disk.target == target else d for d in facts.disks))


def keeping(tmp_path: Path, *, domain: RestorePoints | None = None, **keep) -> Config:
    """The test config with ``keep`` as [defaults.restore_points], and ``domain`` as
    web01's own [domains.web01.restore_points] when given."""
    cfg = config(tmp_path)
    cfg = replace(cfg, defaults=replace(cfg.defaults, restore_points=RestorePoints(**keep)))
    if domain is not None:
        cfg = replace(cfg, domains={**cfg.domains, "web01": replace(
            cfg.domains["web01"], restore_points=domain)})
    return cfg


def web01_with(*points: LogicalVolume) -> BackupFacts:
    return replace(web01_facts(), points=points)


def pruned(steps) -> list[str]:
    """The LVs the prune steps remove, "vg/lv", in plan order."""
    return [s.argv[-1] for s in steps if s.action == "prune"]


def name(run: str, disk: str = "xvda", domain: str = "web01") -> str:
    return f"vg_b/{rp.point_lv_name(run, domain, disk)}"


# -- the point ------------------------------------------------------------------------------

def test_a_classic_standby_gets_a_classic_snapshot_of_the_configured_size(tmp_path):
    steps, kept = point_steps(web01_facts(), keeping(tmp_path, keep_last=2), NEW)
    (step,) = steps
    point = rp.point_lv_name(NEW, "web01", "xvda")
    assert step.role == PEER and step.action == "point"
    assert step.argv == (
        "lvcreate", "--snapshot", "--permission", "r", "--name", point,
        "--addtag", "domubk_rp", "--addtag", f"domubk_rp_{NEW}",
        "-l", "20%ORIGIN", "vg_b/web01")
    assert "classic snapshot of 20%ORIGIN" in step.note and "/dev/vg_b/web01" in step.note
    assert kept == (NEW,)


def test_an_absolute_point_size_is_passed_as_lvcreate_takes_it(tmp_path):
    cfg = keeping(tmp_path, keep_daily=1, size=SnapshotSize(absolute="2G"))
    (step,) = point_steps(web01_facts(), cfg, NEW)[0]
    assert step.argv[-3:] == ("-L", "2G", "vg_b/web01")
    assert "-l" not in step.argv


def test_a_thin_standby_gets_a_thin_snapshot_without_a_size(tmp_path):
    cfg = keeping(tmp_path, keep_last=1, size=SnapshotSize(absolute="2G"))
    (step,) = point_steps(thin(web01_facts(), "xvda"), cfg, NEW)[0]
    assert step.argv == rp.create_argv(rp.point_lv_name(NEW, "web01", "xvda"), "vg_b", "web01",
                                       NEW, thin=True)
    assert not {"-L", "-l", "2G", "20%ORIGIN"} & set(step.argv)
    assert step.argv[-1] == "vg_b/web01"
    assert "thin snapshot" in step.note


def test_each_disk_gets_its_own_point_lv_thin_or_classic_as_its_standby_is(tmp_path):
    facts = thin(two_disk_facts(), "xvda")
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=3), NEW)
    assert [s.action for s in steps] == ["point", "point"]
    xvda, xvdb = steps
    assert xvda.argv[xvda.argv.index("--name") + 1] == rp.point_lv_name(NEW, "web01", "xvda")
    assert xvdb.argv[xvdb.argv.index("--name") + 1] == rp.point_lv_name(NEW, "web01", "xvdb")
    assert xvda.argv[-1] == "vg_b/web01" and "-l" not in xvda.argv
    assert xvdb.argv[-3:] == ("-l", "20%ORIGIN", "vg_b/web01-b")
    assert kept == (NEW,)  # one point, of both disks


def test_every_point_lv_is_journalled_with_the_undo_and_probe_of_exactly_itself(tmp_path):
    steps, _ = point_steps(two_disk_facts(), keeping(tmp_path, keep_last=1), NEW)
    for step, disk in zip(steps, ("xvda", "xvdb"), strict=True):
        full = name(NEW, disk)
        assert step.undo == ("lvremove", "--yes", "--", full)
        assert step.exists == ("lvs", "--noheadings", "-o", "lv_name", full)
        assert step.resource == f"/dev/{full}"
        # never the standby itself
        assert "vg_b/web01" not in step.undo and "vg_b/web01-b" not in step.undo


# -- retention off ---------------------------------------------------------------------------

def test_with_every_keep_rule_0_nothing_is_taken_and_nothing_removed(tmp_path):
    broken = point_lvs(DEC30, attr="sri-I-s---", percent="100.00", invalid="1")
    facts = web01_with(*point_lvs(DEC31_LATE, DEC31_EARLY), *broken)
    for cfg in (config(tmp_path), keeping(tmp_path, size=SnapshotSize(absolute="1G"))):
        assert point_steps(facts, cfg, NEW) == ((), ())
        plan = plan_backup(facts, cfg, NEW)
        assert plan.after == () and plan.points_kept == ()


def test_a_domains_own_table_decides_over_the_defaults(tmp_path):
    on_here = keeping(tmp_path, domain=RestorePoints(keep_last=1))
    assert [s.action for s in point_steps(web01_facts(), on_here, NEW)[0]] == ["point"]
    off_here = keeping(tmp_path, keep_last=5, domain=RestorePoints())
    assert point_steps(web01_with(*point_lvs(DEC31_LATE)), off_here, NEW) == ((), ())


# -- the prune -------------------------------------------------------------------------------

def test_points_retention_does_not_keep_are_pruned_after_the_point_never_the_new_one(tmp_path):
    facts = web01_with(*point_lvs(DEC29, DEC31_LATE, DEC30))  # lvs order is no order
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=2), NEW)
    assert [s.action for s in steps] == ["point", "prune", "prune"]
    assert pruned(steps) == [name(DEC30), name(DEC29)]  # newest first
    for step in steps[1:]:
        assert step.role == PEER
        assert step.argv == ("lvremove", "--yes", "--", step.resource.removeprefix("/dev/"))
        assert "not kept by keep_last = 2" in step.note
    assert kept == (NEW, DEC31_LATE)
    assert name(NEW) not in pruned(steps)


def test_the_new_point_counts_towards_keep_last(tmp_path):
    facts = web01_with(*point_lvs(DEC31_LATE, DEC30))
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=1), NEW)
    assert pruned(steps) == [name(DEC31_LATE), name(DEC30)]
    assert kept == (NEW,)


def test_daily_and_weekly_rules_keep_the_newest_point_of_each_period(tmp_path):
    facts = web01_with(*point_lvs(DEC20, DEC29, DEC30, DEC31_EARLY, DEC31_LATE))
    steps, kept = point_steps(facts, keeping(tmp_path, keep_daily=2, keep_weekly=2), NEW)
    # days: 1 January (the new point), 31 December (its latest point); weeks: 2026-W01 is
    # covered by those, the next week with a point is 2025-W51
    assert kept == (NEW, DEC31_LATE, DEC20)
    assert pruned(steps) == [name(DEC31_EARLY), name(DEC30), name(DEC29)]
    assert all("not kept by keep_daily = 2, keep_weekly = 2" in s.note
               for s in steps if s.action == "prune")


def test_the_new_point_is_never_pruned_even_when_an_older_run_looks_newer(tmp_path):
    facts = web01_with(*point_lvs(LATER))
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=1), NEW)
    assert [s.action for s in steps] == ["point"]
    assert set(kept) == {NEW, LATER}


def test_an_invalid_point_is_pruned_even_when_the_rules_would_keep_it(tmp_path):
    overflowed = point_lvs(DEC31_LATE, attr="sri-I-s---", percent="100.00", invalid="1")
    facts = web01_with(*overflowed, *point_lvs(DEC30))
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=10), NEW)
    assert pruned(steps) == [name(DEC31_LATE)]
    (prune,) = [s for s in steps if s.action == "prune"]
    assert "invalid" in prune.note
    assert kept == (NEW, DEC30)


def test_every_lv_of_a_pruned_point_goes_and_a_point_missing_a_new_disk_is_kept(tmp_path):
    both = point_lvs(DEC30, disks=("xvda", "xvdb"))
    only_xvda = point_lvs(DEC31_LATE)  # taken before xvdb was added: still a valid point
    steps, kept = point_steps(two_disk_facts(points=(*both, *only_xvda)),
                              keeping(tmp_path, keep_last=2), NEW)
    assert pruned(steps) == [name(DEC30, "xvda"), name(DEC30, "xvdb")]
    assert kept == (NEW, DEC31_LATE)


def test_thin_points_are_pruned_by_their_full_name_too(tmp_path):
    old = point_lvs(DEC30, attr="Vri---tz-k", pool="pool0", percent="")
    steps, _ = point_steps(thin(web01_with(*old), "xvda"), keeping(tmp_path, keep_last=1), NEW)
    assert pruned(steps) == [name(DEC30)]


def test_other_domains_points_and_untagged_lvs_are_never_pruned(tmp_path):
    facts = web01_with(
        *point_lvs(DEC30, domain="web01-old"),  # another domain whose name extends web01's
        *point_lvs(DEC29, domain="web"),  # one whose name web01's extends
        *point_lvs(DEC31_EARLY, tags="other"),  # web01's name, but not tagged as a point
        *point_lvs(DEC31_LATE, tags=""),
        *_lvs(_row(f"domubk-{DEC20}-web01-xvda", tags="domubk")),  # a run's own snapshot
    )
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=1), NEW)
    assert [s.action for s in steps] == ["point"]
    assert kept == (NEW,)


def test_no_disk_no_point(tmp_path):
    facts = replace(web01_with(*point_lvs(DEC30)), disks=())
    assert point_steps(facts, keeping(tmp_path, keep_last=1), NEW) == ((), ())


# -- plan_backup and the printed plan --------------------------------------------------------

def test_plan_backup_puts_the_point_after_the_run_and_leaves_the_run_as_it_was(tmp_path):
    facts = web01_with(*point_lvs(DEC31_LATE, DEC30))
    cfg = keeping(tmp_path, keep_last=2)
    plan = plan_backup(facts, cfg, NEW)
    steps, kept = point_steps(facts, cfg, NEW)
    assert plan.after == steps and plan.points_kept == kept == (NEW, DEC31_LATE)
    assert [s.action for s in plan.after] == ["point", "prune"]
    assert plan.steps == plan_backup(facts, config(tmp_path), NEW).steps
    assert not {"point", "prune"} & {s.action for s in plan.steps}
    assert plan.steps[-1].action == "marker"
    data = json.loads(plan.to_json())
    assert [s["action"] for s in data["after"]] == ["point", "prune"]
    assert data["points_kept"] == [NEW, DEC31_LATE]


def test_the_printed_plan_shows_the_point_and_the_prune_after_the_run_numbered_on(tmp_path):
    plan = plan_backup(web01_with(*point_lvs(DEC30)), keeping(tmp_path, keep_last=1), NEW)
    lines = render_plan(plan).splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("After a clean run"))
    last = len(plan.steps)
    marker_line = next(i for i, line in enumerate(lines)
                       if line.startswith(f"{last:>3}. [dom0-b] marker"))
    assert marker_line < head
    after = lines[head + 1:]
    point = rp.point_lv_name(NEW, "web01", "xvda")
    assert after[0].startswith(f"{last + 1:>3}. [dom0-b] point    lvcreate --snapshot")
    assert f"--name {point}" in after[0]
    assert f"undo: lvremove --yes -- vg_b/{point}" in "\n".join(after)
    prune = next(line for line in after if line.startswith(f"{last + 2:>3}. "))
    assert prune == f"{last + 2:>3}. [dom0-b] prune    lvremove --yes -- {name(DEC30)}"
    assert lines[-1].startswith("Each step with an undo is written")


def test_a_plan_without_points_prints_no_after_part(tmp_path):
    text = render_plan(plan_backup(web01_with(*point_lvs(DEC30)), config(tmp_path), NEW))
    assert "After a clean run" not in text and "lvremove --yes --" not in text


@pytest.mark.parametrize("keep", [{"keep_last": 1}, {"keep_daily": 1}, {"keep_weekly": 1}])
def test_any_one_keep_rule_turns_points_on(tmp_path, keep):
    plan = plan_backup(web01_facts(), keeping(tmp_path, **keep), NEW)
    assert [s.action for s in plan.after] == ["point"]


def test_points_kept_is_newest_first_even_when_an_old_run_is_later_than_the_new_one(tmp_path):
    same_after = "20260101T000000Z-ffff"  # the new run's second, a greater run id
    same_before = "20260101T000000Z-0000"  # the new run's second, a smaller run id
    facts = web01_with(*point_lvs(DEC30, same_before, LATER, DEC31_LATE, same_after))
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=10), NEW)
    assert kept == (LATER, same_after, NEW, same_before, DEC31_LATE, DEC30)
    assert pruned(steps) == []
    assert plan_backup(facts, keeping(tmp_path, keep_last=10), NEW).points_kept == kept


def test_with_keep_last_1_a_later_point_stays_first_and_the_new_one_second(tmp_path):
    facts = web01_with(*point_lvs(DEC31_LATE, LATER))
    steps, kept = point_steps(facts, keeping(tmp_path, keep_last=1), NEW)
    assert kept == (LATER, NEW)  # the rules keep LATER; the new point is never pruned
    assert pruned(steps) == [name(DEC31_LATE)]


def test_a_cached_standby_has_a_pool_but_is_no_thin_lv_its_points_are_classic(tmp_path):
    """lvs names a pool for cache (and VDO) LVs too: only a thin volume (attr "V") takes
    thin snapshots."""
    cfg = keeping(tmp_path, keep_last=1)
    cached = replace(web01_facts(), disks=tuple(
        replace(d, standby_lv=replace(d.standby_lv, pool="cpool", attr="Cwi-a-C---"))
        for d in web01_facts().disks))
    (step,) = point_steps(cached, cfg, NEW)[0]
    assert "-l" in step.argv and "20%ORIGIN" in step.argv
    assert "classic snapshot" in step.note
