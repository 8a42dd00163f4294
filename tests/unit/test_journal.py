"""The journal: written before each side effect, read back by recover; torn writes tolerated."""

from __future__ import annotations

import itertools

import pytest
from fakes import FakeHost, refuse_unknown_options

from toolkit.errors import CommandFailed, ParseError
from toolkit.journal import (
    JOURNAL_FAILED_EXIT,
    JOURNAL_FAILED_MESSAGE,
    Journal,
    JournalEntry,
    journalled_argv,
    list_journals,
    parse_journal,
    replace_file_argv,
    unwrap_journalled,
    unwrap_replace,
)
from toolkit.runners import CommandResult, LocalRunner


def test_entries_round_trip_through_a_real_file(tmp_path):
    j = Journal(LocalRunner(), str(tmp_path), "web01", "20260101T000000Z-0001")
    j.record("snapshot", "/dev/vg/s", ("lvremove", "-f", "vg/s"), ("lvs", "vg/s"))
    j.record("mount", "/run/x", ("umount", "/run/x"), ("mountpoint", "-q", "/run/x"))
    files = list_journals(LocalRunner(), str(tmp_path), "web01")
    assert files == [str(tmp_path / "journal" / "web01.20260101T000000Z-0001.jsonl")]
    entries = parse_journal(open(files[0]).read())
    assert [e.action for e in entries] == ["snapshot", "mount"]
    assert entries[0].undo == ("lvremove", "-f", "vg/s")
    assert entries[1].exists == ("mountpoint", "-q", "/run/x")
    j.remove()
    assert list_journals(LocalRunner(), str(tmp_path), "web01") == []


def test_no_journal_dir_means_no_journals(tmp_path):
    assert list_journals(LocalRunner(), str(tmp_path / "missing"), None) == []


def test_a_domain_lists_its_own_journals_and_never_one_of_a_name_that_extends_it(tmp_path):
    run = "20260101T000000Z-0001"
    for domain in ("web01", "web01.prod", "web01-2", "db01"):
        Journal(LocalRunner(), str(tmp_path), domain, run).record(
            "mount", "/run/x", ("umount", "/run/x"), ("mountpoint", "-q", "/run/x"))
    journals = tmp_path / "journal"
    (journals / "web01.notes.jsonl").write_text("")  # not a run's journal
    assert list_journals(LocalRunner(), str(tmp_path), "web01") == [
        str(journals / f"web01.{run}.jsonl")]
    assert list_journals(LocalRunner(), str(tmp_path), "web01.prod") == [
        str(journals / f"web01.prod.{run}.jsonl")]
    assert len(list_journals(LocalRunner(), str(tmp_path), None)) == 4


def test_a_journal_directory_that_cannot_be_read_is_an_error_not_an_empty_list():
    from toolkit.runners import CommandResult

    class Unreadable:
        host = "dom0-a"

        def run(self, argv, *, check=True, **kw):
            res = CommandResult("dom0-a", tuple(argv), 1, "",
                                f"find: '{argv[1]}': Permission denied\n", 0.0)
            if check:
                raise CommandFailed(res)
            return res

    with pytest.raises(CommandFailed, match="Permission denied"):
        list_journals(Unreadable(), "/var/lib/domu-backup", "web01")


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


def test_run_recorded_writes_the_entry_before_the_command_starts(tmp_path):
    j = Journal(LocalRunner(), str(tmp_path / "state"), "web01", "RUN2")
    seen = tmp_path / "seen"
    # The command copies the journal as it finds it: the entry must already be there.
    res = j.run_recorded("mount", "/run/x", ("umount", "/run/x"), ("findmnt", "/run/x"),
                         ["cp", j.path, str(seen)], timeout=30)
    assert res.exit_code == 0 and res.argv == ("cp", j.path, str(seen))
    (entry,) = parse_journal(seen.read_text())
    assert (entry.action, entry.resource, entry.undo) == ("mount", "/run/x", ("umount", "/run/x"))
    assert (entry.run_id, entry.domain) == ("RUN2", "web01")  # recover finds it by both
    assert oct((tmp_path / "state" / "journal").stat().st_mode & 0o777) == "0o700"
    # a second entry is appended, and the command's own exit code comes back as is
    res = j.run_recorded("map", "/dev/x", ("kpartx", "-d", "/dev/x"), (), ["sh", "-c", "exit 5"],
                         timeout=30)
    assert res.exit_code == 5 and res.argv == ("sh", "-c", "exit 5")
    assert [e.action for e in parse_journal(open(j.path).read())] == ["mount", "map"]
    j.remove()
    assert list_journals(LocalRunner(), str(tmp_path / "state"), "web01") == []


def test_a_journal_that_cannot_be_written_means_the_command_never_runs(tmp_path):
    (tmp_path / "state").write_text("a file where the state directory should be")
    j = Journal(LocalRunner(), str(tmp_path / "state"), "web01", "RUN3")
    ran = tmp_path / "ran"
    with pytest.raises(CommandFailed) as info:
        j.run_recorded("snapshot", "/dev/vg/s", ("lvremove", "vg/s"), (), ["touch", str(ran)],
                       timeout=30)
    assert info.value.result.exit_code == JOURNAL_FAILED_EXIT
    assert JOURNAL_FAILED_MESSAGE in info.value.result.stderr
    assert not ran.exists()


def test_a_command_of_its_own_that_exits_125_or_prints_the_message_is_not_a_journal_failure(
        tmp_path):
    # Only both together (the wrapper's exit code and its message) say the entry was not
    # written; a command may exit 125 or print anything on its own, and its result is its.
    j = Journal(LocalRunner(), str(tmp_path / "state"), "web01", "RUN5")
    res = j.run_recorded("map", "/dev/x", ("kpartx", "-d", "/dev/x"), (),
                         ["sh", "-c", f"exit {JOURNAL_FAILED_EXIT}"], timeout=30)
    assert res.exit_code == JOURNAL_FAILED_EXIT and res.argv[0] == "sh"
    res = j.run_recorded("map", "/dev/y", ("kpartx", "-d", "/dev/y"), (),
                         ["sh", "-c", 'echo "$0" >&2; exit 3', JOURNAL_FAILED_MESSAGE],
                         timeout=30)
    assert res.exit_code == 3 and JOURNAL_FAILED_MESSAGE in res.stderr
    assert [e.resource for e in parse_journal(open(j.path).read())] == ["/dev/x", "/dev/y"]


def test_odd_paths_and_arguments_pass_through_the_wrapper_untouched(tmp_path):
    odd = tmp_path / "st ate;$(touch pwned)'\""
    j = Journal(LocalRunner(), str(odd), "web01", "RUN4")
    res = j.run_recorded("mkdir", "x", ("rmdir", "x"), (),
                         ["printf", "%s|", "a b", "$(id)", "'q'", "*"], timeout=30)
    assert res.stdout == "a b|$(id)|'q'|*|"
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.glob("pwned*"))
    assert unwrap_journalled(journalled_argv(j.path, ["ls"])) == (j.path, ["ls"])
    assert unwrap_journalled(["sh", "-c", "ls", "sh", "x", "y"]) is None


def test_replace_file_writes_atomically_makes_its_directory_and_keeps_the_old_on_failure(
        tmp_path):
    runner = LocalRunner()
    odd = tmp_path / "stand by;$(touch pwned)" / "web01.json"
    res = runner.run(replace_file_argv(str(odd)), input='{"state": "dirty"}\n', timeout=30)
    assert res.exit_code == 0 and odd.read_text() == '{"state": "dirty"}\n'
    assert oct(odd.parent.stat().st_mode & 0o777) == "0o700"
    assert not (tmp_path / "pwned").exists() and not odd.with_name("web01.json.tmp").exists()
    runner.run(replace_file_argv(str(odd)), input='{"state": "clean"}\n', timeout=30)
    assert odd.read_text() == '{"state": "clean"}\n'
    # The temp file cannot be written (a directory is in its way): the command fails
    # and the file keeps its old content.
    odd.with_name("web01.json.tmp").mkdir()
    res = runner.run(replace_file_argv(str(odd)), input="new", check=False, timeout=30)
    assert res.exit_code != 0 and odd.read_text() == '{"state": "clean"}\n'
    assert unwrap_replace(replace_file_argv(str(odd))) == str(odd)
    assert unwrap_replace(journalled_argv(str(odd), ["ls"])) is None



def test_a_journal_line_with_a_corrupt_time_is_corruption_not_an_entry():
    entry = JournalEntry("R", "d", "mount", "/m", ("umount", "/m"), (), 1.5)
    assert parse_journal(entry.to_line()) == [entry]  # when it was written comes back too
    bad = entry.to_line().replace('"ts": 1.5', '"ts": "soon"')
    assert bad != entry.to_line()
    # not the last line, so not a torn write: recover must not trust (and undo) it
    with pytest.raises(ParseError, match="line 1 is not a journal entry"):
        parse_journal(bad + entry.to_line())


def test_an_unreadable_journal_directory_is_reported_in_finds_own_words_within_a_bound():
    state = "/var/lib/domu-backup"
    journals = f"{state}/journal"

    def unreadable(argv):
        # find fails as a real one would, once its arguments are valid: one complaint per
        # starting point (the journal directory unreadable, any other one missing)
        if argv[0] != "find" or refuse_unknown_options(argv) is not None:
            return None
        starts = list(itertools.takewhile(lambda w: not w.startswith("-"), argv[1:]))
        said = "".join(f"find: '{p}': Permission denied\n" if p == journals
                       else f"find: '{p}': No such file or directory\n" for p in starts)
        return CommandResult("dom0-a", argv, 1, "", said, 0.0)

    host = FakeHost("dom0-a", fail=unreadable)
    with pytest.raises(CommandFailed) as raised:
        list_journals(host, state, "web01")
    assert raised.value.result.argv[:2] == ("find", journals)
    assert raised.value.result.stderr == f"find: '{journals}': Permission denied\n"
    # each look is bounded like a probe: a hung state directory never holds recover for ever
    assert host.timeouts and all(t is not None and t <= 120 for _, t in host.timeouts)


def test_journal_writes_and_the_journals_removal_are_bounded_like_a_probe():
    host = FakeHost("dom0-b")
    j = Journal(host, "/var/lib/domu-backup", "web01", "20260101T000000Z-0001")
    j.record("snapshot", "/dev/vg/s", ("lvremove", "-f", "vg/s"), ("lvs", "vg/s"))
    j.record("mount", "/run/x", ("umount", "/run/x"), ("mountpoint", "-q", "/run/x"))
    assert [e.action for e in parse_journal(host.files[j.path])] == ["snapshot", "mount"]
    j.remove()
    assert j.path not in host.files
    assert [argv[0] for argv, _ in host.timeouts] == ["mkdir", "dd", "dd", "rm"]
    assert all(t is not None and t <= 120 for _, t in host.timeouts), host.timeouts


def test_an_entry_is_one_line_of_json_with_its_keys_in_a_fixed_order():
    entry = JournalEntry("R", "web01", "mount", "/run/x", ("umount", "/run/x"),
                         ("findmnt", "/run/x"), 1.5)
    assert entry.to_line() == (
        '{"action": "mount", "domain": "web01", "exists": ["findmnt", "/run/x"], '
        '"resource": "/run/x", "run_id": "R", "ts": 1.5, "undo": ["umount", "/run/x"]}\n')


def test_the_wrapper_without_a_command_is_not_a_journalled_command():
    (path, inner) = unwrap_journalled(journalled_argv("/var/lib/j/web01.R.jsonl", ["ls"]))
    assert (path, inner) == ("/var/lib/j/web01.R.jsonl", ["ls"])
    bare = journalled_argv("/var/lib/j/web01.R.jsonl", ["ls"])[:5]
    assert unwrap_journalled(bare) is None
