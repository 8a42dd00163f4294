"""Snapshot rows recorded in the lab: fresh, half full, and overflowed (R3)."""

from __future__ import annotations

import pytest
from fakes import recorded

from toolkit.facts.lvm import parse_lvs


def snapshot(name: str):
    rec = recorded(f"lvm/lvs-snapshot-lab-{name}")
    (lv,) = parse_lvs(rec["stdout"])
    return lv


@pytest.mark.parametrize(("name", "invalid"), [("fresh", False), ("half", False),
                                               ("invalid", True)])
def test_recorded_snapshot_states(name, invalid):
    lv = snapshot(name)
    assert lv.is_snapshot and lv.origin == "web01" and lv.size_bytes == 4 << 20
    assert lv.snapshot_invalid is invalid


def test_fill_grows_until_overflow():
    assert snapshot("fresh").snap_percent < snapshot("half").snap_percent
    assert snapshot("invalid").snap_percent == 100.0
