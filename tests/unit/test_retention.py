"""Restore point retention: which points keep-last, keep-daily and keep-weekly keep, and
the properties an operator relies on (nothing lost twice, nothing kept by accident)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.retention import PointTime, Retention, run_id_time, select


def at(text: str) -> datetime:
    """A UTC time from ``YYYY-MM-DD HH:MM``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def points(*times: str) -> list[PointTime]:
    """One point per time, named by its time (so names sort as times do)."""
    return [PointTime(t.replace(" ", "T"), at(t)) for t in times]


def names(ps: list[PointTime]) -> list[str]:
    return [p.name for p in ps]


# -- concrete cases -------------------------------------------------------------------


def test_keep_last_keeps_the_newest_and_both_lists_are_newest_first():
    ps = points("2027-01-01 10:00", "2027-01-03 10:00", "2027-01-02 10:00", "2027-01-04 10:00")
    keep, remove = select(ps, Retention(keep_last=2))
    assert names(keep) == ["2027-01-04T10:00", "2027-01-03T10:00"]
    assert names(remove) == ["2027-01-02T10:00", "2027-01-01T10:00"]


def test_keep_last_larger_than_the_points_keeps_them_all():
    ps = points("2027-01-01 10:00", "2027-01-02 10:00")
    assert select(ps, Retention(keep_last=5)) == (sorted(ps, key=lambda p: p.taken,
                                                         reverse=True), [])


def test_keep_daily_keeps_the_newest_point_of_each_day():
    ps = points("2027-01-03 23:59", "2027-01-03 00:00", "2027-01-03 12:00",
                "2027-01-02 08:00", "2027-01-02 09:00",
                "2027-01-01 06:00", "2027-01-01 07:00")
    keep, remove = select(ps, Retention(keep_daily=2))
    assert names(keep) == ["2027-01-03T23:59", "2027-01-02T09:00"]
    assert names(remove) == ["2027-01-03T12:00", "2027-01-03T00:00", "2027-01-02T08:00",
                             "2027-01-01T07:00", "2027-01-01T06:00"]


def test_days_are_utc_days_whatever_offset_the_time_carries():
    plus_two = timezone(timedelta(hours=2))
    # 01:00 on the 2nd at +02:00 is 23:00 UTC on the 1st: the same UTC day as the other.
    ps = [PointTime("a", datetime(2027, 1, 2, 1, 0, tzinfo=plus_two)),
          PointTime("b", at("2027-01-01 22:00"))]
    keep, remove = select(ps, Retention(keep_daily=2))
    assert names(keep) == ["a"] and names(remove) == ["b"]


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary():
    # ISO 2026-W53 runs from Monday 2026-12-28 to Sunday 2027-01-03.
    ps = points("2027-01-04 10:00",  # 2027-W01 (Monday)
                "2027-01-03 10:00",  # 2026-W53 (Sunday)
                "2027-01-01 10:00",  # 2026-W53
                "2026-12-31 10:00",  # 2026-W53
                "2026-12-27 10:00",  # 2026-W52 (Sunday)
                "2026-12-21 10:00")  # 2026-W52 (Monday)
    keep, remove = select(ps, Retention(keep_weekly=3))
    assert names(keep) == ["2027-01-04T10:00", "2027-01-03T10:00", "2026-12-27T10:00"]
    assert names(remove) == ["2027-01-01T10:00", "2026-12-31T10:00", "2026-12-21T10:00"]


def test_a_day_keep_last_covers_is_not_counted_again_by_keep_daily():
    ps = points("2027-01-03 12:00", "2027-01-03 08:00", "2027-01-02 10:00", "2027-01-01 10:00")
    keep, remove = select(ps, Retention(keep_last=1, keep_daily=2))
    # The 3rd is covered by keep_last, so the two daily points go to the 2nd and the 1st.
    assert names(keep) == ["2027-01-03T12:00", "2027-01-02T10:00", "2027-01-01T10:00"]
    assert names(remove) == ["2027-01-03T08:00"]


def test_a_week_the_daily_points_cover_is_not_counted_again_by_keep_weekly():
    ps = points("2027-01-13 10:00",  # W02, kept daily
                "2027-01-12 10:00",  # W02, covered
                "2027-01-08 10:00",  # W01
                "2027-01-05 10:00",  # W01
                "2026-12-30 10:00",  # 2026-W53
                "2026-12-22 10:00")  # 2026-W52
    keep, remove = select(ps, Retention(keep_daily=1, keep_weekly=2))
    assert names(keep) == ["2027-01-13T10:00", "2027-01-08T10:00", "2026-12-30T10:00"]
    assert names(remove) == ["2027-01-12T10:00", "2027-01-05T10:00", "2026-12-22T10:00"]


def test_all_three_rules_together():
    ps = points("2027-01-20 18:00", "2027-01-20 06:00",  # last 2
                "2027-01-19 18:00", "2027-01-19 06:00",  # daily
                "2027-01-18 18:00",                      # daily
                "2027-01-14 12:00", "2027-01-11 12:00",  # W02: weekly keeps the 14th
                "2027-01-07 12:00",                      # W01: weekly
                "2026-12-30 12:00")                      # W53: beyond keep_weekly=2
    keep, remove = select(ps, Retention(keep_last=2, keep_daily=2, keep_weekly=2))
    assert names(keep) == ["2027-01-20T18:00", "2027-01-20T06:00", "2027-01-19T18:00",
                           "2027-01-18T18:00", "2027-01-14T12:00", "2027-01-07T12:00"]
    assert names(remove) == ["2027-01-19T06:00", "2027-01-11T12:00", "2026-12-30T12:00"]


def test_equal_times_are_ordered_by_name_so_the_choice_is_deterministic():
    t = at("2027-01-01 10:00")
    ps = [PointTime("a", t), PointTime("c", t), PointTime("b", t)]
    keep, remove = select(ps, Retention(keep_last=1))
    assert names(keep) == ["c"] and names(remove) == ["b", "a"]
    assert select(list(reversed(ps)), Retention(keep_daily=1)) == (keep, remove)


def test_no_rule_enabled_keeps_every_point():
    ps = points("2027-01-01 10:00", "2027-01-02 10:00", "2026-03-01 10:00")
    assert not Retention().enabled
    keep, remove = select(ps, Retention())
    assert names(keep) == ["2027-01-02T10:00", "2027-01-01T10:00", "2026-03-01T10:00"]
    assert remove == []


def test_no_points_give_two_empty_lists():
    assert select([], Retention(keep_last=3)) == ([], [])
    assert select([], Retention()) == ([], [])


@pytest.mark.parametrize("field", ["keep_last", "keep_daily", "keep_weekly"])
def test_enabled_by_any_one_rule_and_a_negative_count_is_rejected_by_name(field):
    assert Retention(**{field: 1}).enabled
    with pytest.raises(ValueError, match=field):
        Retention(**{field: -1})


def test_a_naive_time_is_rejected():
    with pytest.raises(ValueError, match="no timezone"):
        PointTime("p", datetime(2027, 1, 1, 10, 0))


def test_duplicate_names_are_rejected():
    ps = [PointTime("p", at("2027-01-01 10:00")), PointTime("q", at("2027-01-02 10:00")),
          PointTime("p", at("2027-01-03 10:00"))]
    with pytest.raises(ValueError, match="more than once: p$"):
        select(ps, Retention(keep_last=1))
    with pytest.raises(ValueError, match="more than once"):
        select(ps, Retention())


def test_run_id_time_reads_the_run_ids_time_in_utc():
    assert run_id_time("20261205T101010Z-ab12") == datetime(2026, 12, 5, 10, 10, 10, tzinfo=UTC)
    assert run_id_time("20240229T235959Z-0000").tzinfo is UTC


@pytest.mark.parametrize("bad", [
    "", "20261205T101010Z", "20261205T101010-ab12", "20261205T101010Z-AB12",
    "20261205T101010Z-ab1", "20261205T101010Z-ab123", "20261205 101010Z-ab12",
    "2026-12-05T10:10:10Z-ab12", " 20261205T101010Z-ab12", "20261205T101010Z-ab12\n",
    "x20261205T101010Z-ab12", "domubk-20261205T101010Z-ab12",
    "20261305T101010Z-ab12", "20261232T101010Z-ab12", "20230229T101010Z-ab12",
    "20261205T246010Z-ab12", "20261205T106010Z-ab12", "00001205T101010Z-ab12",
    "２０261205T101010Z-ab12",
])
def test_run_id_time_rejects_anything_else(bad):
    with pytest.raises(ValueError, match="is not a run id"):
        run_id_time(bad)


# -- properties -----------------------------------------------------------------------

START = datetime(2026, 12, 1, tzinfo=UTC)
# Times over ten weeks across a New Year, on a coarse grid so that several points share a
# day, a week or even a time.
times = st.builds(lambda d, h, m: START + timedelta(days=d, hours=h, minutes=m),
                  st.integers(0, 70), st.integers(0, 23), st.sampled_from([0, 30]))
point_lists = st.lists(times, max_size=40).map(
    lambda ts: [PointTime(f"p{i:02d}", t) for i, t in enumerate(ts)])
counts = st.integers(0, 6)
policies = st.builds(Retention, counts, counts, counts)


def newest_first(ps: list[PointTime]) -> list[PointTime]:
    return sorted(ps, key=lambda p: (p.taken, p.name), reverse=True)


@given(point_lists, policies)
def test_keep_and_remove_partition_the_points_newest_first(ps, policy):
    keep, remove = select(ps, policy)
    assert sorted(names(keep) + names(remove)) == sorted(names(ps))
    assert not set(names(keep)) & set(names(remove))
    assert keep == newest_first(keep) and remove == newest_first(remove)


@given(point_lists, policies, st.randoms(use_true_random=False))
def test_the_order_of_the_input_does_not_matter(ps, policy, rnd):
    shuffled = list(ps)
    rnd.shuffle(shuffled)
    assert select(shuffled, policy) == select(ps, policy)


@given(point_lists, policies)
def test_an_enabled_policy_keeps_at_most_the_sum_of_its_counts(ps, policy):
    keep, _ = select(ps, policy)
    if policy.enabled:
        assert len(keep) <= policy.keep_last + policy.keep_daily + policy.keep_weekly
    else:
        assert len(keep) == len(ps)


@given(point_lists.filter(bool), policies.filter(lambda p: p.enabled))
def test_the_newest_point_is_always_kept(ps, policy):
    keep, _ = select(ps, policy)
    assert keep[0] == newest_first(ps)[0]


@given(point_lists, policies)
def test_selecting_again_over_what_was_kept_removes_nothing(ps, policy):
    keep, _ = select(ps, policy)
    assert select(keep, policy) == (keep, [])


@pytest.mark.parametrize("field", ["keep_last", "keep_daily", "keep_weekly"])
@given(ps=point_lists, policy=policies, more=st.integers(1, 3))
def test_a_larger_count_never_removes_a_point_kept_before(field, ps, policy, more):
    bigger = replace(policy, **{field: getattr(policy, field) + more})
    before, _ = select(ps, policy)
    after, _ = select(ps, bigger)
    if policy.enabled:  # (from nothing enabled, which keeps everything, any count removes)
        assert set(names(before)) <= set(names(after))


@given(point_lists, counts)
def test_keep_daily_alone_keeps_the_newest_of_the_newest_days(ps, n):
    by_day: dict[object, PointTime] = {}
    for p in newest_first(ps):
        by_day.setdefault(p.taken.date(), p)
    expected = newest_first(list(by_day.values()))[:n] if n else newest_first(ps)
    assert select(ps, Retention(keep_daily=n))[0] == expected


@given(point_lists, counts)
def test_keep_weekly_alone_keeps_the_newest_of_the_newest_iso_weeks(ps, n):
    by_week: dict[object, PointTime] = {}
    for p in newest_first(ps):
        by_week.setdefault(p.taken.isocalendar()[:2], p)
    expected = newest_first(list(by_week.values()))[:n] if n else newest_first(ps)
    assert select(ps, Retention(keep_weekly=n))[0] == expected


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                    timezones=st.just(UTC)),
       st.from_regex(r"[0-9a-f]{4}", fullmatch=True))
def test_run_id_time_reads_back_any_time_a_run_id_can_hold(t, suffix):
    t = t.replace(microsecond=0)
    assert run_id_time(f"{t.year:04d}{t:%m%dT%H%M%S}Z-{suffix}") == t
