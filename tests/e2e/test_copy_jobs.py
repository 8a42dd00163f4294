"""Copying a domain's filesystems side by side (``defaults.copy_jobs = 2``) in the lab."""

from __future__ import annotations

import json

import pytest

from toolkit.lab.rehearse import audit, leftovers, run_backup, standby_marker

pytestmark = pytest.mark.e2e

CONFIG = "/etc/domu-backup/backup.toml"
PARALLEL = "/etc/domu-backup/parallel.toml"


def parallel_config(lab) -> None:
    """The sandbox's config with copy_jobs = 2, beside it (mode 0600, as the tool demands)."""
    r = lab.runner("dom0-a")
    text = r.run(["cat", CONFIG]).stdout
    assert "[defaults]\n" in text
    r.run(["dd", f"of={PARALLEL}", "status=none"],
          input=text.replace("[defaults]\n", "[defaults]\ncopy_jobs = 2\n", 1))
    r.run(["chmod", "0600", PARALLEL])


def test_side_by_side_copies_overlap_converge_and_stop_cleanly_on_a_signal(fresh):
    lab = fresh
    parallel_config(lab)
    # A SIGTERM as the second copy starts: the first is running then, and must be
    # stopped before teardown unmounts its trees (R16); nothing is left (R1).
    res = run_backup(lab, "web01", "--config", PARALLEL,
                     env={"DOMU_BACKUP_FAILPOINT": "before:rsync@2:sigterm"})
    assert res.exit_code == 143, res.stdout + res.stderr
    assert leftovers(lab) == {"dom0-a": [], "dom0-b": []}
    again = lab.runner("dom0-a").run(["domu-backup", "recover"], check=False, timeout=600)
    assert again.exit_code == 0 and again.stdout.strip() == "nothing to recover"
    assert standby_marker(lab, "web01")["state"] == "dirty"

    # Then a whole run side by side: both copies overlap in time, and the standby converges.
    ok = run_backup(lab, "web01", "--config", PARALLEL, "--json")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    dom = json.loads(ok.stdout)["domains"][0]
    outcomes = {f["name"]: f["outcome"] for f in dom["filesystems"]}
    assert outcomes["xvda1"] == outcomes["xvda2"] == "copied"
    spans = sorted((s["started"], s["started"] + s["seconds"]) for s in dom["steps"]
                   if s["action"] == "rsync")
    assert len(spans) == 2 and spans[1][0] < spans[0][1]  # the second began before the first ended
    m = standby_marker(lab, "web01")
    assert m["state"] == "clean" and m["last_success_run_id"] == m["run_id"]
    diffs = {a.name: a.differences for a in audit(lab, "web01") if a.differences}
    assert diffs == {}
