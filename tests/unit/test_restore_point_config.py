"""Restore points in the config ([defaults.restore_points], a domain's own table, merged
key by key; thin_pool_max_fill), the thin pools' fill as lvs reports it, and the preflight
check that refuses a run into a pool that is too full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import refuse_unknown_options
from test_config import BASE, CONF, config_error, parse
from test_preflight import CONFIG, _lvs, answer, records, run_gather

from toolkit import errors
from toolkit.config import Defaults, RestorePoints, SnapshotSize
from toolkit.facts.lvm import ThinPool, lvs_argv, parse_pools, pools_argv
from toolkit.plan import plan_backup
from toolkit.preflight import check_pools
from toolkit.restore_points import point_lv_name, point_tags
from toolkit.retention import Retention

WEB01 = '[domains.web01]\npeer = "dom0-b"\n'
WEB02 = '[domains.web02]\npeer = "dom0-b"\n'


def points(table: str, **keys: object) -> str:
    """A [TABLE.restore_points] table with ``keys`` (TOML values as written)."""
    return f"[{table}.restore_points]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())


# -- the config ------------------------------------------------------------------------------

def test_points_are_off_by_default_and_the_pool_limit_is_80_percent() -> None:
    config = parse(WEB01)
    assert config.defaults.restore_points == RestorePoints(0, 0, 0, SnapshotSize(
        percent_origin=20))
    assert not config.defaults.restore_points.retention.enabled
    assert config.defaults.thin_pool_max_fill == 80 == Defaults().thin_pool_max_fill
    web01 = config.domain("web01")
    assert web01.restore_points is None
    assert web01.effective_restore_points(config.defaults) is config.defaults.restore_points


def test_every_key_of_the_defaults_table_is_read() -> None:
    config = parse("[defaults]\nthin_pool_max_fill = 95\n"
                   + points("defaults", keep_last=3, keep_daily=7, keep_weekly=4, size='"2G"')
                   + WEB01)
    settings = config.defaults.restore_points
    assert settings == RestorePoints(3, 7, 4, SnapshotSize(absolute="2G"))
    assert settings.retention == Retention(3, 7, 4) and settings.retention.enabled
    assert settings.size.lvcreate_args() == ["-L", "2G"]
    assert config.defaults.thin_pool_max_fill == 95
    assert config.domain("web01").effective_restore_points(config.defaults) == settings


def test_a_domains_keys_replace_the_defaults_one_by_one() -> None:
    config = parse(points("defaults", keep_last=3, keep_weekly=2, size='"2G"')
                   + WEB01 + points("domains.web01", keep_daily=7, keep_weekly=0)
                   + WEB02)
    web01 = config.domain("web01").effective_restore_points(config.defaults)
    assert web01 == RestorePoints(keep_last=3, keep_daily=7, keep_weekly=0,
                                  size=SnapshotSize(absolute="2G"))
    web02 = config.domain("web02").effective_restore_points(config.defaults)
    assert web02 == RestorePoints(keep_last=3, keep_weekly=2, size=SnapshotSize(absolute="2G"))
    assert "domains.web01.restore_points.keep_daily" in config.given
    assert "domains.web01.restore_points.keep_last" not in config.given  # inherited, not set


def test_a_domain_table_written_before_the_defaults_still_inherits_them() -> None:
    config = parse(WEB01 + points("domains.web01", size='"10%ORIGIN"')
                   + points("defaults", keep_daily=5))
    web01 = config.domain("web01").effective_restore_points(config.defaults)
    assert web01 == RestorePoints(keep_daily=5, size=SnapshotSize(percent_origin=10))
    assert web01.size.lvcreate_args() == ["-l", "10%ORIGIN"]


def test_without_defaults_a_domains_table_fills_in_the_built_in_values() -> None:
    config = parse(WEB01 + points("domains.web01", keep_weekly=2))
    assert config.domain("web01").effective_restore_points(config.defaults) == RestorePoints(
        keep_weekly=2)


def test_a_domain_turns_points_off_by_setting_every_rule_0() -> None:
    config = parse(points("defaults", keep_last=5, keep_daily=2) + WEB01
                   + points("domains.web01", keep_last=0, keep_daily=0))
    web01 = config.domain("web01").effective_restore_points(config.defaults)
    assert not web01.retention.enabled
    assert config.defaults.restore_points.retention.enabled


@pytest.mark.parametrize(("text", "key", "expected"), [
    (points("defaults", keep_monthly=1), "defaults.restore_points.keep_monthly",
     "unknown key (expected one of keep_daily, keep_last, keep_weekly, size)"),
    (WEB01 + points("domains.web01", keep=1), "domains.web01.restore_points.keep",
     "unknown key (expected one of keep_daily, keep_last, keep_weekly, size)"),
    (points("defaults", keep_last=-1), "defaults.restore_points.keep_last",
     "expected an integer >= 0, got -1"),
    (WEB01 + points("domains.web01", keep_weekly=-2), "domains.web01.restore_points.keep_weekly",
     "expected an integer >= 0, got -2"),
    (points("defaults", keep_daily='"7"'), "defaults.restore_points.keep_daily",
     "expected an integer, got '7'"),
    (points("defaults", keep_last="true"), "defaults.restore_points.keep_last",
     "expected an integer, got True"),
    (points("defaults", keep_last=1.5), "defaults.restore_points.keep_last",
     "expected an integer, got 1.5"),
    (points("defaults", size='"2GB"'), "defaults.restore_points.size",
     "expected a size like \"2G\""),
    (points("defaults", size='"0%ORIGIN"'), "defaults.restore_points.size",
     "expected a size like \"2G\""),
    (points("defaults", size=2), "defaults.restore_points.size", "expected a size like \"2G\""),
    (WEB01 + points("domains.web01", size='"101%ORIGIN"'), "domains.web01.restore_points.size",
     "expected a size like \"2G\""),
    ("[defaults]\nrestore_points = 3\n", "defaults.restore_points", "expected a table, got 3"),
    (WEB01 + 'restore_points = "yes"\n', "domains.web01.restore_points",
     "expected a table, got 'yes'"),
    ("[defaults]\nthin_pool_max_fill = 0\n", "defaults.thin_pool_max_fill",
     "expected an integer between 1 and 100, got 0"),
    ("[defaults]\nthin_pool_max_fill = 101\n", "defaults.thin_pool_max_fill",
     "expected an integer between 1 and 100, got 101"),
    ("[defaults]\nthin_pool_max_fill = 79.5\n", "defaults.thin_pool_max_fill",
     "expected an integer, got 79.5"),
    ("[defaults]\nthin_pool_max_fill = \"80%\"\n", "defaults.thin_pool_max_fill",
     "expected an integer, got '80%'"),
])
def test_each_bad_restore_point_setting_names_the_file_and_the_dotted_key(
        text: str, key: str, expected: str) -> None:
    message = config_error(BASE + text)
    assert message.startswith(f"{CONF}: {key}: ")
    assert expected in message


def test_a_domain_may_not_set_the_pool_limit_it_is_the_peers() -> None:
    message = config_error(BASE + WEB01 + "thin_pool_max_fill = 90\n")
    assert message.startswith(f"{CONF}: domains.web01.thin_pool_max_fill: unknown key")


@pytest.mark.parametrize("fill", [1, 100])
def test_the_pool_limit_takes_1_to_100(fill: int) -> None:
    assert parse(f"[defaults]\nthin_pool_max_fill = {fill}\n").defaults.thin_pool_max_fill == fill


# -- a thin pool's fill, as lvs reports it ---------------------------------------------------

def pools_report(*rows: dict) -> str:
    """pools_argv's output: LVM's JSON report (its own spacing) with ``rows``."""
    return "  {\n      \"report\": [\n          {\n              \"lv\": [\n" + ",\n".join(
        "                  " + json.dumps(r) for r in rows) + "\n              ]\n          }\n" \
        "      ]\n  }\n"


def pool_row(vg: str = "vg_b", name: str = "pool0", attr: str = "twi-aotz--",
             data: str = "12.50", meta: str = "3.07") -> dict:
    return {"vg_name": vg, "lv_name": name, "lv_attr": attr, "data_percent": data,
            "metadata_percent": meta}


def test_pools_argv_asks_lvs_for_the_fill_of_exactly_the_named_pools() -> None:
    argv = pools_argv("vg_b/pool0", "vg_c/tp")
    assert argv == ["lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "--binary",
                    "-o", "vg_name,lv_name,lv_attr,data_percent,metadata_percent", "--",
                    "vg_b/pool0", "vg_c/tp"]
    assert refuse_unknown_options(tuple(argv)) is None  # every option and field lvs knows
    for bad in ("", "vg_b/pool0\nx", "vg\0b/pool0"):
        with pytest.raises(ValueError):
            pools_argv(bad)


def test_parse_pools_reads_each_pools_data_and_metadata_fill() -> None:
    pools = parse_pools(pools_report(pool_row(), pool_row("vg_c", "tp", data="100.00",
                                                          meta="0.00")))
    assert pools == [ThinPool("vg_b", "pool0", 12.5, 3.07), ThinPool("vg_c", "tp", 100.0, 0.0)]
    assert pools[0].full_name == "vg_b/pool0"
    assert parse_pools(pools_report()) == []


@pytest.mark.parametrize(("row", "words"), [
    (pool_row(attr="Vwi-aotz--"), "vg_b/pool0 is not a thin pool (lv_attr 'Vwi-aotz--')"),
    (pool_row(attr="-wi-ao----"), "is not a thin pool"),
    (pool_row(attr="twi-aotz"), "is not a thin pool"),
    (pool_row(vg=""), "is not a thin pool"),
    (pool_row(name=""), "is not a thin pool"),
    (pool_row(data=""), "the fill of thin pool vg_b/pool0 is unknown"),
    (pool_row(meta=""), "the fill of thin pool vg_b/pool0 is unknown"),
    (pool_row(data="12,50"), "a decimal comma"),
    (pool_row(meta="3,07"), "a decimal comma"),
    (pool_row(data="12.50%"), "is not a plain number"),
    (pool_row(data="-1"), "is not a plain number"),
    ({k: v for k, v in pool_row().items() if k != "metadata_percent"},
     "lacks field 'metadata_percent'"),
])
def test_a_row_that_is_no_thin_pool_or_whose_fill_is_unclear_is_refused(row, words) -> None:
    with pytest.raises(errors.ParseError) as info:
        parse_pools(pools_report(row))
    assert words in str(info.value)


@pytest.mark.parametrize("text", ["", "not json", '{"report": [{"vg": []}]}', "[]"])
def test_a_report_that_is_no_lv_report_is_refused(text: str) -> None:
    with pytest.raises(errors.ParseError):
        parse_pools(text)


# -- the preflight check ---------------------------------------------------------------------

def test_a_pool_filled_up_to_the_limit_is_allowed() -> None:
    check_pools((), 80, "dom0-b")
    check_pools((ThinPool("vg_b", "pool0", 80.0, 80.0), ThinPool("vg_c", "tp", 0.0, 79.99)),
                80, "dom0-b")
    check_pools((ThinPool("vg_b", "pool0", 100.0, 100.0),), 100, "dom0-b")


@pytest.mark.parametrize(("pool", "what", "shown"), [
    (ThinPool("vg_b", "pool0", 80.01, 10.0), "data", "80.01"),
    (ThinPool("vg_b", "pool0", 10.0, 81.0), "metadata", "81"),
    (ThinPool("vg_b", "pool0", 100.0, 0.0), "data", "100"),
])
def test_a_pool_fuller_than_the_limit_refuses_the_run_exit_23(pool, what, shown) -> None:
    with pytest.raises(errors.ThinPoolFull) as info:
        check_pools((ThinPool("vg_c", "ok", 1.0, 1.0), pool), 80, "dom0-b")
    exc = info.value
    assert exc.exit_code == 23 and exc.host == "dom0-b"
    message = str(exc)
    assert f"thin pool vg_b/pool0 of the standby is {shown}% full ({what})" in message
    assert "above defaults.thin_pool_max_fill = 80; nothing was written" in message
    assert "vg_c/ok" not in message


# -- preflight reads the pools and the points (recorded lab facts, a replay runner) ----------

RUN = "20260101T000000Z-0000"
OLD = "20251231T020000Z-1a1a"


def thin_standby(data: str, meta: str = "2.00") -> list[dict]:
    """The recorded run with web01's standby a thin LV in vg_b/pool0 of that fill."""
    recs = _lvs(records(), "peer", pool_lv="pool0", lv_attr="Vwi-a-tz--")
    return [*recs, answer("peer", pools_argv("vg_b/pool0"),
                          pools_report(pool_row(data=data, meta=meta)))]


def test_preflight_refuses_a_thin_standby_in_a_pool_above_the_limit() -> None:
    with pytest.raises(errors.ThinPoolFull) as info:
        run_gather(thin_standby("80.50"))
    assert info.value.host == "dom0-b" and "vg_b/pool0" in str(info.value)


def test_preflight_passes_a_pool_at_the_limit_and_keeps_its_fill() -> None:
    _, pre, _ = run_gather(thin_standby("80.00", "80.00"))
    assert pre.facts.pools == (ThinPool("vg_b", "pool0", 80.0, 80.0),)
    assert pre.facts.disks[0].standby_lv.pool == "pool0"


def test_preflight_reads_no_pool_for_a_classic_standby_and_no_points_when_off() -> None:
    _, pre, _ = run_gather(records())
    assert pre.facts.pools == () and pre.facts.points == ()


def test_preflight_reads_the_peers_points_when_the_domain_keeps_them(tmp_path: Path) -> None:
    text = CONFIG.read_text()
    assert text.count("[domains.web01]\n") == 1
    path = tmp_path / "backup.toml"
    path.write_text(text.replace("[domains.web01]\n", points("domains.web01", keep_last=1)
                                 + "\n[domains.web01]\n"))
    rows = [{"vg_name": "vg_b", "lv_name": point_lv_name(OLD, domain, "xvda"),
             "lv_path": f"/dev/vg_b/{point_lv_name(OLD, domain, 'xvda')}", "lv_dm_path": "",
             "lv_size": "67108864", "lv_attr": "swi-a-s---", "origin": origin, "pool_lv": "",
             "snap_percent": "3.00", "lv_tags": ",".join(point_tags(OLD)),
             "lv_snapshot_invalid": "0"}
            for domain, origin in (("web01", "web01"), ("web01.prod", "web01.prod"))]
    recs = [*records(), answer("peer", lvs_argv("@domubk_rp"),
                               json.dumps({"report": [{"lv": rows}]}))]
    cfg, pre, _ = run_gather(recs, config_path=path)
    assert [lv.name for lv in pre.facts.points] == [r["lv_name"] for r in rows]
    plan = plan_backup(pre.facts, cfg, RUN)
    # web01's old point goes (keep_last = 1 keeps the new one); web01.prod's is not web01's
    assert [s.argv[-1] for s in plan.after if s.action == "prune"] == [
        f"vg_b/{point_lv_name(OLD, 'web01', 'xvda')}"]
    assert plan.points_kept == (RUN,)
