"""R20 and R21 in the lab: hostile guest LVM names, and recover beside a domain whose name
extends another's.

- lvm01's guest LVM metadata (guest data, read raw from its disk) is edited to name an LV
  ``../../../../etc/cron.d/x``: the run is refused before anything is created, and nothing
  on either host changes outside the tool's own directories.
- web01.prod's name extends web01's: ``recover --domu web01`` run while web01.prod's
  backup is paused mid-copy selects none of its objects; the live run completes and its
  standby audits clean.
"""

from __future__ import annotations

import pytest

from toolkit.lab.audit import fingerprint
from toolkit.lab.rehearse import audit, prepare_layout, run_backup, start_backup, wait_until_dirty

pytestmark = [pytest.mark.e2e, pytest.mark.own_disks]

FAILPOINT = "DOMU_BACKUP_FAILPOINT"
HOSTILE = "../../../../etc/cron.d/x"
P2_START = 133120 * 512  # lvm01's p2 (the guest PV), from its recipe

# Runs inside dom0-a: renames the guest LV "var" in the PV's current metadata text (the
# text grows; its size in the metadata area header follows), as a hostile guest could.
RENAME = r"""
import struct, sys
from toolkit.facts.guestlvm import HEAD_BYTES, parse_pv_header
dev, start, old, new = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4].encode()
with open(dev, "r+b") as f:
    f.seek(start)
    head = f.read(1 << 20)
    pv = parse_pv_header(head[:HEAD_BYTES])
    at = pv.mda_offset
    offset, size = struct.unpack_from("<QQ", head, at + 40)
    text = head[at + offset:at + offset + size].rstrip(b"\0")
    needle = b"\n" + old + b" {"
    assert text.count(needle) == 1, text
    text = text.replace(needle, b"\n" + new + b" {") + b"\0"
    assert offset + len(text) <= pv.mda_size
    f.seek(start + at + offset)
    f.write(text)
    f.seek(start + at + 48)
    f.write(struct.pack("<Q", len(text)))
    f.flush()
"""


def host_state(runner) -> dict[str, list[str]]:
    """What a run could change on a host outside its journals, locks and reports."""
    def lines(argv):
        return sorted(runner.run(argv, check=False, timeout=120).stdout.split("\n"))

    return {
        "mounts": lines(["findmnt", "-rn", "-o", "TARGET,SOURCE"]),
        "dm": lines(["dmsetup", "info", "-c", "--noheadings", "-o", "name"]),
        "lvs": lines(["lvs", "--noheadings", "-o", "vg_name,lv_name"]),
        "dirs": lines(["find", "/run/domu-backup", "/etc/cron.d", "/etc/lvm", "-xdev"]),
    }


def test_guest_lv_named_to_climb_out_is_refused_before_anything_is_created(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    prepare_layout(fresh, "lvm01")
    a.run(["python3", "-c", RENAME, "/dev/vg_a/lvm01", str(P2_START), "var", HOSTILE],
          timeout=120)
    before = {"a": host_state(a), "b": host_state(b)}
    standby = fingerprint(b, "/dev/vg_b/lvm01")
    res = run_backup(fresh, "lvm01")
    assert res.exit_code == 22, res.stdout + res.stderr
    said = res.stdout + res.stderr
    assert f"LV name '{HOSTILE}' is not a valid LVM name" in said, said
    assert "Traceback" not in res.stderr
    assert {"a": host_state(a), "b": host_state(b)} == before
    assert fingerprint(b, "/dev/vg_b/lvm01") == standby
    for r in (a, b):
        assert r.run(["test", "-e", "/etc/cron.d/x"], check=False).exit_code != 0


def _ours(runner) -> dict[str, list[str]]:
    state = host_state(runner)
    return {"mounts": [m for m in state["mounts"] if "/domu-backup/" in m],
            "dm": [d for d in state["dm"] if "domubk" in d],
            "lvs": [v for v in state["lvs"] if "domubk" in v]}


def test_recover_of_web01_never_touches_a_live_run_of_web01_prod(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    prepare_layout(fresh, "web01.prod")
    run = start_backup(fresh, "web01.prod", env={FAILPOINT: "before:rsync@1:sleep=30"})
    assert wait_until_dirty(fresh, "web01.prod", timeout=600)
    live = {"a": _ours(a), "b": _ours(b)}
    assert live["a"]["mounts"] and live["b"]["mounts"] and live["a"]["lvs"]  # mid-copy
    rec = a.run(["domu-backup", "recover", "--domu", "web01"], check=False, timeout=600)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert "web01.prod" not in rec.stdout + rec.stderr  # nothing of it was selected
    assert {"a": _ours(a), "b": _ours(b)} == live
    assert run.wait(timeout=1200) == 0
    audited = audit(fresh, "web01.prod")
    assert [x for x in audited if x.name != "boot area"], "the audit compared no filesystem"
    assert {x.name: x.differences for x in audited if x.differences} == {}
