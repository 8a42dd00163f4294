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


def test_a_blank_line_inside_a_journal_does_not_hide_the_entries_after_it():
    from toolkit.journal import JournalEntry

    first = JournalEntry(RUN, "web01", "snapshot", "/dev/vg/s", ("lvremove", "vg/s"), (), 1.0)
    second = JournalEntry(RUN, "web01", "mount", "/m", ("umount", "/m"), (), 2.0)
    text = first.to_line() + "\n   \n" + second.to_line()
    assert [e.action for e in parse_journal(text)] == ["snapshot", "mount"]


def test_a_damaged_entry_names_the_journal_and_the_line():
    import pytest

    from toolkit.errors import ParseError
    from toolkit.journal import JournalEntry

    good = JournalEntry(RUN, "web01", "mount", "/m", ("umount", "/m"), (), 1.0).to_line()
    with pytest.raises(ParseError, match=r"^/s/journal/web01\.x\.jsonl: line 1 is not a "):
        parse_journal("{broken\n" + good, "/s/journal/web01.x.jsonl")
    with pytest.raises(ParseError, match=r"^journal: line 1 is not a journal entry"):
        parse_journal("{broken\n" + good)
