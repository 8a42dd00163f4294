"""The journal: written before each side effect, read back by recover; torn writes tolerated."""

from __future__ import annotations

import pytest

from toolkit.errors import ParseError
from toolkit.journal import Journal, JournalEntry, list_journals, parse_journal
from toolkit.runners import LocalRunner


def test_entries_round_trip_through_a_real_file(tmp_path):
    j = Journal(LocalRunner(), str(tmp_path), "web01", "RUN1")
    j.record("snapshot", "/dev/vg/s", ("lvremove", "-f", "vg/s"), ("lvs", "vg/s"))
    j.record("mount", "/run/x", ("umount", "/run/x"), ("mountpoint", "-q", "/run/x"))
    files = list_journals(LocalRunner(), str(tmp_path), "web01")
    assert files == [str(tmp_path / "journal" / "web01.RUN1.jsonl")]
    entries = parse_journal(open(files[0]).read())
    assert [e.action for e in entries] == ["snapshot", "mount"]
    assert entries[0].undo == ("lvremove", "-f", "vg/s")
    assert entries[1].exists == ("mountpoint", "-q", "/run/x")
    j.remove()
    assert list_journals(LocalRunner(), str(tmp_path), "web01") == []


def test_no_journal_dir_means_no_journals(tmp_path):
    assert list_journals(LocalRunner(), str(tmp_path / "missing"), None) == []


def test_torn_last_line_is_ignored_but_corruption_elsewhere_is_an_error():
    good = JournalEntry("R", "d", "mount", "/m", ("umount", "/m"), (), 1.0).to_line()
    assert len(parse_journal(good + good[: len(good) // 2])) == 1
    with pytest.raises(ParseError):
        parse_journal(good[:10] + "\n" + good)


def test_names_with_odd_characters_survive(tmp_path):
    j = Journal(LocalRunner(), str(tmp_path), "web-01", "R")
    odd = "/run/x/$(touch pwned); 'q' \"d\"\nnl"
    j.record("mkdir", odd, ("rmdir", odd), ("test", "-d", odd))
    (entry,) = parse_journal(open(j.path).read())
    assert entry.resource == odd and entry.undo == ("rmdir", odd)
    assert not (tmp_path / "pwned").exists()
