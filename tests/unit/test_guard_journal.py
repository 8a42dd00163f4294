"""The journal recover trusts: private, and naming the run and domain of every entry."""

from __future__ import annotations

import os
import stat

from toolkit.journal import Journal, list_journals, parse_journal
from toolkit.runners import LocalRunner

RUN = "20260101T000000Z-0001"


def test_recorded_entries_name_their_run_and_domain_in_a_private_directory(tmp_path):
    j = Journal(LocalRunner(), str(tmp_path / "state"), "web01", RUN)
    j.record("snapshot", "/dev/vg/s", ("lvremove", "-f", "vg/s"), ("lvs", "vg/s"))
    (path,) = list_journals(LocalRunner(), str(tmp_path / "state"), "web01")
    # recover runs, as root, what this file says: only root may write in its directory
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert sorted(os.listdir(tmp_path / "state")) == ["journal"]
    (entry,) = parse_journal(open(path).read(), path)
    assert (entry.run_id, entry.domain, entry.action) == (RUN, "web01", "snapshot")
