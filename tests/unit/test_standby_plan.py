"""init-standby's plan: same layout, same ids, raw boot bytes; refuses a used standby."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import config
from test_plan import facts_for

from toolkit.errors import LayoutMismatch
from toolkit.standby import mkfs_argv, plan_standby

CFG = Path("/var/tmp/x")


def test_a_standby_holding_filesystems_is_refused_without_force():
    sp = plan_standby(facts_for("msdos"), config(CFG), "R1")
    assert sp.refusals and "--force" in sp.refusals[0]
    assert "dos partition table" in sp.refusals[0]


def test_forced_plan_recreates_every_filesystem_with_same_uuid_and_label():
    sp = plan_standby(facts_for("gpt"), config(CFG), "R1", force=True)
    mkfs = [s.argv for s in sp.steps if s.action == "mkfs"]
    assert ("mkfs.xfs", "-f", "-q", "-m", "uuid=8c0f6a7e-2b1d-4e3f-9a5c-7d6e5f4a3b2c", "-L",
            "var lib", "/dev/mapper/domubk-R1-web01-xvdap4") in mkfs
    assert any(a[0] == "mkfs.vfat" and "5EC0FFEE" in a for a in mkfs)
    assert all("/dev/vg_b/" not in " ".join(a) for a in mkfs)  # only through the owned alias
    order = [s.action for s in sp.steps if s.role == "peer"]
    assert order.index("write") < order.index("table") < order.index("map") < order.index("mkfs")


def test_whole_disk_standby_gets_its_filesystem_on_the_alias():
    sp = plan_standby(facts_for("whole-disk"), config(CFG), "R1", force=True)
    (mkfs,) = [s.argv for s in sp.steps if s.action == "mkfs"]
    assert mkfs[0] == "mkfs.ext4" and mkfs[-1] == "/dev/mapper/domubk-R1-web01-xvda"
    assert not any(s.action == "table" for s in sp.steps)


def test_every_mapping_step_has_an_undo():
    sp = plan_standby(facts_for("multi-disk"), config(CFG), "R1", force=True)
    for s in sp.steps:
        if s.action in ("alias", "map", "mkdir"):
            assert s.undo and s.exists


def test_unknown_filesystem_type_is_not_guessed():
    with pytest.raises(LayoutMismatch):
        mkfs_argv("zfs_member", "/dev/x", None, None)
