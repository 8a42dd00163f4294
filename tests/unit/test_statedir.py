"""R22 on both hosts: the state directory (journals, standby markers) is proven before use;
recover runs only the undo commands a run writes. And R1/R10: a run cleans its own leftovers
before it judges the standby."""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from fakes import config, web01_facts

from toolkit import app
from toolkit.errors import InsecureFile
from toolkit.journal import JournalEntry, journal_path
from toolkit.preflight import Preflight
from toolkit.recover import recover_journals
from toolkit.runners import LocalRunner
from toolkit.statedir import check_state_dir, judge_state_dir

SAFE = ("0\nR /var/lib/domu-backup\nD 41c0 0 /var/lib/domu-backup\nP 41ed 0 /var/lib\n"
        "P 41ed 0 /var\nP 41ed 0 /\nS 41c0 0 /var/lib/domu-backup/journal\n")


def test_a_root_owned_private_state_directory_passes():
    judge_state_dir(SAFE, "/var/lib/domu-backup", "dom0-b")


@pytest.mark.parametrize(("line", "said"), [
    ("D a1ff 0 /var/lib/domu-backup", "not a directory"),  # a symlink
    ("D 41c0 1000 /var/lib/domu-backup", "owned by uid 1000"),
    ("D 41ff 0 /var/lib/domu-backup", "mode 0777"),
    ("S a1ff 0 /var/lib/domu-backup/journal", "journal/ in it is not a directory"),
    ("S 41c0 1000 /var/lib/domu-backup/standby", "owned by uid 1000"),
    ("P 41ff 0 /var/lib", "not sticky"),
    ("P 41ed 1000 /var", "owned by uid 1000"),
])
def test_an_unsafe_state_directory_is_refused_naming_host_path_and_fix(line, said):
    kind, path = line.split()[0], line.split()[-1]
    text = "".join(ln + "\n" for ln in SAFE.splitlines()
                   if not (ln.startswith(kind) and ln.endswith(" " + path))) + line + "\n"
    with pytest.raises(InsecureFile, match=said) as raised:
        judge_state_dir(text, "/var/lib/domu-backup", "dom0-b")
    assert str(raised.value).startswith(f"[dom0-b] {path}: ")
    assert "run " in str(raised.value) or "replace it" in str(raised.value)


def test_only_root_or_the_user_the_check_runs_as_is_a_trusted_owner():
    as_1000 = SAFE.replace("0\n", "1000\n", 1)
    judge_state_dir(as_1000, "/var/lib/domu-backup", "dom0-a")  # root's: trusted
    judge_state_dir(as_1000.replace("D 41c0 0 ", "D 41c0 1000 "), "/var/lib/domu-backup",
                    "dom0-a")  # the checking user's own
    for owner in ("1", "1001"):
        with pytest.raises(InsecureFile, match=f"owned by uid {owner}, not by root"):
            judge_state_dir(as_1000.replace("D 41c0 0 ", f"D 41c0 {owner} "),
                            "/var/lib/domu-backup", "dom0-a")
    with pytest.raises(InsecureFile, match="owned by uid 1000"):  # not the root check's own
        judge_state_dir(SAFE.replace("D 41c0 0 ", "D 41c0 1000 "), "/var/lib/domu-backup",
                        "dom0-a")


def test_every_line_is_judged_and_a_path_with_spaces_is_named_whole():
    # the directory's own line right after the uid (no R line): still judged
    with pytest.raises(InsecureFile) as raised:
        judge_state_dir("0\nD 41ff 0 /srv/state dir/domu backup\n", "/srv/state dir/domu backup",
                        "dom0-b")
    assert str(raised.value).startswith("[dom0-b] /srv/state dir/domu backup: the state "
                                        "directory has mode 0777"), str(raised.value)
    assert "chmod go-w /srv/state dir/domu backup" in str(raised.value)


@pytest.mark.parametrize(("output", "said"), [
    ("", "state directory check printed no uid: ''"),
    ("root\nD 41c0 0 /x\n", "state directory check printed no uid: 'root"),
    ("0\nD 41cz 0 /x\n", "state directory check: bad line 'D 41cz 0 /x'"),
    ("0\nX 41c0 0 /x\n", "state directory check: bad line 'X 41c0 0 /x'"),
])
def test_output_the_check_cannot_read_is_an_error_naming_host_and_line(output, said):
    from toolkit.errors import ParseError

    with pytest.raises(ParseError) as raised:
        judge_state_dir(output, "/x", "dom0-b")
    assert str(raised.value).startswith(f"[dom0-b] {said}"), str(raised.value)


@pytest.mark.parametrize(("stderr", "said"), [
    ("mkdir: cannot create directory '/x': Read-only file system\n",
     "mkdir: cannot create directory '/x': Read-only file system"),
    ("", "exit 3"),
])
def test_a_state_directory_that_cannot_be_made_is_refused_with_the_reason(stderr, said):
    from toolkit.runners import CommandResult

    class Host:
        host = "dom0-b"

        def run(self, argv, **kw):
            assert kw.get("timeout") and kw.get("check") is False
            return CommandResult("dom0-b", tuple(argv), 3, "", stderr, 0.0)

    with pytest.raises(InsecureFile) as raised:
        check_state_dir(Host(), "/x")
    assert str(raised.value) == f"[dom0-b] state directory /x: cannot make or inspect it: {said}"


def test_a_root_owned_sticky_parent_like_tmp_is_accepted():
    judge_state_dir(SAFE.replace("P 41ed 0 /var\n", "P 43ff 0 /var\n"), "/var/lib/domu-backup",
                    "dom0-a")


def test_the_real_check_makes_the_directory_and_accepts_it(tmp_path):
    state = tmp_path / "state"
    check_state_dir(LocalRunner(), str(state))
    assert state.is_dir() and oct(state.stat().st_mode & 0o777) == "0o700"


def test_the_real_check_refuses_planted_symlinks_and_open_modes(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "journal").symlink_to("/etc")
    with pytest.raises(InsecureFile, match="journal/ in it is not a directory"):
        check_state_dir(LocalRunner(), str(state))
    (state / "journal").unlink()
    state.chmod(0o777)
    with pytest.raises(InsecureFile, match="mode 0777"):
        check_state_dir(LocalRunner(), str(state))
    state.chmod(0o700)
    link = tmp_path / "link"
    link.symlink_to(state)
    with pytest.raises(InsecureFile, match="not a directory"):
        check_state_dir(LocalRunner(), str(link))


def test_recover_never_runs_a_command_a_run_does_not_write(tmp_path):
    state = str(tmp_path / "state")
    sentinel = tmp_path / "pwned"
    path = journal_path(state, "web01", "20260101T000000Z-0001")
    os.makedirs(os.path.dirname(path), mode=0o700)
    entries = [
        JournalEntry("20260101T000000Z-0001", "web01", "mkdir", "/x",
                     ("sh", "-c", f"touch {sentinel}"), (), 1.0),
        JournalEntry("20260101T000000Z-0001", "web01", "mkdir", "/y",
                     ("rmdir", str(tmp_path / "gone")), ("sh", "-c", f"touch {sentinel}"), 2.0),
    ]
    with open(path, "w") as f:
        f.writelines(e.to_line() for e in entries)
    errors: list[str] = []
    recover_journals(LocalRunner(), state, "web01", lambda m: None, errors)
    assert not sentinel.exists()
    assert len(errors) == 2 and all("not run" in e for e in errors)
    assert os.path.exists(path)  # kept for the operator to look at


def test_a_run_cleans_its_own_leftovers_before_it_judges_the_standby(monkeypatch, tmp_path):
    order: list[str] = []
    monkeypatch.setattr(app, "domain_lock", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(app, "local_node_name", lambda cfg, node=None: "dom0-a")
    monkeypatch.setattr(app, "locate", lambda *a, **k: order.append("locate") or "running")
    monkeypatch.setattr(app, "connect_peer", lambda *a, **k: order.append("connect") or "peer")
    monkeypatch.setattr(app, "take_inventories",
                        lambda *a, **k: order.append(f"inventory proven={k.get('proven')}"))
    monkeypatch.setattr(app, "recover_domain",
                        lambda *a, **k: order.append("recover") or ["removed x"])

    def gather(*a, **k):
        order.append("gather")
        return Preflight(web01_facts(), "running", "shut off"), "peer"

    class Executor:
        def __init__(self, *a, **k):
            pass

        def run(self):
            order.append("execute")

    monkeypatch.setattr(app, "gather", gather)
    monkeypatch.setattr(app, "Executor", Executor)
    report = app.backup_domain(config(tmp_path), "web01", app.Hosts(source="source"))
    assert report.outcome == "success", report.message
    assert order == ["locate", "connect", "inventory proven=True", "recover", "gather",
                     "execute"]
    assert report.cleaned == ["removed x"]
    assert json.loads(json.dumps(report.phases))  # both phases recorded
    assert {"preflight", "recover"} <= set(report.phases)


def test_a_plain_file_in_place_of_journal_is_refused_and_never_used(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "journal").write_text("")  # root's own, 0600: only its kind is wrong
    (state / "journal").chmod(0o600)
    with pytest.raises(InsecureFile) as raised:
        check_state_dir(LocalRunner("dom0-b"), str(state))
    j = state / "journal"
    assert str(raised.value) == (
        f"[dom0-b] {j}: journal/ in it is not a directory (a symlink or another file), which "
        f"the tool never follows; replace it with a directory: rm {j} && mkdir -m 0700 {j}")


def test_a_group_writable_state_directory_is_refused_with_its_mode_and_the_fix():
    with pytest.raises(InsecureFile) as raised:
        judge_state_dir(SAFE.replace("D 41c0 0 ", "D 41f8 0 "), "/var/lib/domu-backup", "dom0-b")
    assert str(raised.value) == ("[dom0-b] /var/lib/domu-backup: the state directory has mode "
                                 "0770 (group- or world-writable); run chmod go-w "
                                 "/var/lib/domu-backup")


def test_the_check_names_its_host_and_the_state_directory_a_foreign_parent_endangers():
    from toolkit.runners import CommandResult

    class Host:
        host = "dom0-b"

        def run(self, argv, **kw):
            out = SAFE.replace("P 41ed 0 /var\n", "P 41ed 1000 /var\n")
            return CommandResult("dom0-b", tuple(argv), 0, out, "", 0.0)

    with pytest.raises(InsecureFile) as raised:
        check_state_dir(Host(), "/var/lib/domu-backup")
    assert raised.value.host == "dom0-b"
    assert str(raised.value) == ("[dom0-b] /var: a directory above the state directory "
                                 "/var/lib/domu-backup is owned by uid 1000; run chown root /var")


@pytest.mark.parametrize("unsafe", ["source", "peer"])
def test_inventories_prove_both_state_directories_first_and_an_unsafe_one_stops(
        tmp_path, unsafe):
    """R22: each host's state directory is proven before its journals are used (first in
    the command that takes its inventory); an unsafe one on either host raises once both
    looks ended, and no inventory is used."""
    from fakes import FakeHost

    from toolkit.recover import take_inventories
    from toolkit.step_batch import unwrap_reads

    class Unsafe(FakeHost):
        def _answer(self, a, input):
            if a[:2] == ("sh", "-c") and len(a) == 5 and a[3] == "domu-backup-statedir":
                return 0, f"0\nR {a[4]}\nD 41ff 0 {a[4]}\n", ""  # writable by everyone
            return super()._answer(a, input)

    hosts = {role: (Unsafe if role == unsafe else FakeHost)(f"dom0-{role}")
             for role in ("source", "peer")}
    with pytest.raises(InsecureFile, match="dom0-" + unsafe):
        take_inventories(config(tmp_path), hosts["source"], hosts["peer"], proven=True)
    for host in hosts.values():
        (batch,) = [r for r in map(unwrap_reads, host.calls) if r is not None]
        assert batch[1][0][3] == "domu-backup-statedir"  # proven first, in the same command
        assert not any(c[0] == "cat" for c in host.calls)  # no journal was read
