"""Local directories and files the tool writes as root (R22) and the files it trusts (R14):
nothing another user planted is followed, written or truncated. Ownership by another
user is shown through an injected stat, so every test also passes as a non-root user."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from fakes import owned_by, with_uid

from toolkit import errors, safefs
from toolkit.report import DomainReport, RunReport, write_report
from toolkit.safefs import FsView

FOREIGN_UID = 4242


def owner() -> str:
    """Who the suggested chown gives a file to: root, or the uid the tests run as."""
    return "root" if os.geteuid() == 0 else str(os.geteuid())


def all_root() -> FsView:
    return FsView(lstat=lambda p: with_uid(os.lstat(p), 0),
                  fstat=lambda fd: with_uid(os.fstat(fd), 0))


def _dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir()
    path.chmod(mode)
    return path


def _file(path: Path, text: str = "x\n", mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def insecure(call, *args, **kwargs) -> str:
    with pytest.raises(errors.InsecureFile) as caught:
        call(*args, **kwargs)
    assert caught.value.exit_code == 6
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- directories -------------------------------------------------------------------


def test_a_private_directory_passes(tmp_path: Path) -> None:
    safefs.check_dir(str(_dir(tmp_path / "d")), "the lock directory")
    safefs.check_dir(str(_dir(tmp_path / "e", 0o700)), "the lock directory")


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o1777])
def test_a_group_or_world_writable_directory_is_refused(tmp_path: Path, mode: int) -> None:
    d = _dir(tmp_path / "d", mode)
    message = insecure(safefs.check_dir, str(d), "the report directory")
    assert message.startswith(f"{d}: the report directory has mode {mode:04o}")
    assert f"chmod go-w {d}" in message


def test_a_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = _dir(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    message = insecure(safefs.check_dir, str(tmp_path / "link"), "the lock directory")
    assert "symbolic link" in message and "mkdir" in message


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    assert "not a directory" in insecure(safefs.check_dir, str(_file(tmp_path / "f")), "x")


def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    d = _dir(tmp_path / "d")
    message = insecure(safefs.check_dir, str(d), "the lock directory",
                       view=owned_by(FOREIGN_UID, d))
    assert f"owned by uid {FOREIGN_UID}" in message and f"chown {owner()} {d}" in message


def test_not_root_the_effective_uid_may_own_it(tmp_path: Path) -> None:
    me = os.geteuid() or 1000
    d = _dir(tmp_path / "d")
    safefs.check_dir(str(d), "x", view=owned_by(me, d, euid=me))
    message = insecure(safefs.check_dir, str(d), "x", view=owned_by(me, d, euid=me + 1))
    assert f"owned by uid {me}" in message and f"chown {me + 1} " in message


def test_parents_like_openssh_root_or_us_and_not_writable_unless_root_sticky(
        tmp_path: Path) -> None:
    open_parent = _dir(tmp_path / "open", 0o777)
    d = _dir(open_parent / "d")
    message = insecure(safefs.check_dir, str(d), "the lock directory")
    assert message.startswith(f"{open_parent}: ") and "0777" in message

    sticky = _dir(tmp_path / "sticky", 0o1777)
    inside = _dir(sticky / "d")
    safefs.check_dir(str(inside), "the lock directory", view=all_root())
    message = insecure(safefs.check_dir, str(inside), "the lock directory",
                       view=owned_by(FOREIGN_UID, sticky))
    assert message.startswith(f"{sticky}: ") and f"uid {FOREIGN_UID}" in message

    theirs = _dir(tmp_path / "theirs")
    below = _dir(theirs / "d")
    message = insecure(safefs.check_dir, str(below), "x", view=owned_by(FOREIGN_UID, theirs))
    assert message.startswith(f"{theirs}: ")


def test_a_symlinked_parent_is_followed_and_its_target_checked(tmp_path: Path) -> None:
    good = _dir(tmp_path / "good")
    _dir(good / "d")
    (tmp_path / "alias").symlink_to(good)
    safefs.check_dir(str(tmp_path / "alias" / "d"), "x")

    bad = _dir(tmp_path / "bad", 0o777)
    _dir(bad / "d")
    (tmp_path / "alias2").symlink_to(bad)
    assert insecure(safefs.check_dir, str(tmp_path / "alias2" / "d"),
                    "x").startswith(f"{bad}: ")
    link = tmp_path / "alias"
    assert "symbolic link owned by uid" in insecure(
        safefs.check_dir, str(link / "d"), "x", view=owned_by(FOREIGN_UID, link))


def test_ensure_dir_makes_missing_directories_then_checks(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "reports"
    safefs.ensure_dir(str(target), "the report directory", mode=0o750)
    assert stat.S_IMODE(target.stat().st_mode) & 0o027 == 0
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) & 0o022 == 0
    (tmp_path / "x").mkdir(mode=0o777)
    (tmp_path / "x").chmod(0o777)
    assert "0777" in insecure(safefs.ensure_dir, str(tmp_path / "x"), "x")
    assert "0777" in insecure(safefs.ensure_dir, str(tmp_path / "x" / "new"), "x")
    assert not (tmp_path / "x" / "new").exists()  # never made below an unsafe parent


def test_relative_or_unnormalized_paths_are_refused() -> None:
    for bad in ("run/lock", "/run/../tmp", "/run/lock/"):
        insecure(safefs.check_dir, bad, "the lock directory")


# --- files in a checked directory ---------------------------------------------------


def _open(d: Path, name: str, **kwargs) -> tuple[int, bool]:
    view = kwargs.pop("view", safefs.REAL)
    fd_dir = safefs.open_dir(str(d), "the directory", view=view)
    try:
        return safefs.open_file(fd_dir, str(d), name, "the file", os.O_RDWR, view=view,
                                **kwargs)
    finally:
        os.close(fd_dir)


def test_open_file_creates_or_opens_our_own_file(tmp_path: Path) -> None:
    d = _dir(tmp_path / "d")
    fd, created = _open(d, "f", create=True)
    os.close(fd)
    assert created and stat.S_IMODE((d / "f").stat().st_mode) == 0o600
    fd, created = _open(d, "f", create=True)
    os.close(fd)
    assert created is False
    with pytest.raises(FileNotFoundError):
        _open(d, "missing")


def test_open_file_refuses_what_it_must_not_write(tmp_path: Path) -> None:
    d = _dir(tmp_path / "d")
    victim = _file(tmp_path / "victim", "precious\n", 0o644)
    (d / "sym").symlink_to(victim)
    os.link(victim, d / "hard")
    os.mkfifo(d / "fifo", 0o600)
    _file(d / "gw", mode=0o660)
    _file(d / "theirs")
    # each refusal names the file, says what is wrong with it, and what to do
    for name, problem in (
            ("sym", "is a symbolic link, which the tool never follows"),
            ("hard", "has 2 hard links, so writing it would change another file"),
            ("fifo", "is a FIFO, not a regular file"),
            ("gw", "has mode 0660, which is group- or world-writable")):
        assert insecure(_open, d, name, create=True) == (
            f"{d}/{name}: the file {problem}; remove it (rm {d}/{name})")
    assert insecure(_open, d, "theirs", create=True,
                    view=owned_by(FOREIGN_UID, d / "theirs")) == (
        f"{d}/theirs: the file is owned by uid {FOREIGN_UID}, not by root; remove it "
        f"(rm {d}/theirs)")
    (d / "dangling").symlink_to(tmp_path / "made-by-root")
    insecure(_open, d, "dangling", create=True)
    assert not (tmp_path / "made-by-root").exists()
    assert victim.read_text() == "precious\n"
    for bad in ("../x", "a/b", "", ".", ".."):
        insecure(_open, d, bad, create=True)
    with pytest.raises(ValueError, match="^open_file never truncates; ftruncate after the "
                       "checks$"):
        fd_dir = safefs.open_dir(str(d), "d")
        try:
            safefs.open_file(fd_dir, str(d), "f", "f", os.O_RDWR | os.O_TRUNC, create=True)
        finally:
            os.close(fd_dir)


def test_write_atomic_replaces_a_planted_symlink_instead_of_following_it(
        tmp_path: Path) -> None:
    d = _dir(tmp_path / "d")
    victim = _file(tmp_path / "victim", "precious\n", 0o644)
    (d / "last.json").symlink_to(victim)
    fd_dir = safefs.open_dir(str(d), "d")
    try:
        safefs.write_atomic(fd_dir, str(d), "last.json", b"{}\n", "the report")
    finally:
        os.close(fd_dir)
    assert victim.read_text() == "precious\n"
    assert not (d / "last.json").is_symlink() and (d / "last.json").read_text() == "{}\n"
    assert sorted(p.name for p in d.iterdir()) == ["last.json"]


# --- the report directory ------------------------------------------------------------


def _report(outcome: str = "success") -> RunReport:
    return RunReport("dom0-a", domains=[DomainReport("web01", run_id="R1", outcome=outcome)])


def test_write_report_makes_its_directory_private_and_appends_history(tmp_path: Path) -> None:
    reports = tmp_path / "var" / "reports"
    assert write_report(_report(), str(reports)) == reports / "last.json"
    write_report(_report("failed"), str(reports))
    assert stat.S_IMODE(reports.stat().st_mode) & 0o027 == 0
    assert sorted(p.name for p in reports.iterdir()) == ["history.jsonl", "last.json",
                                                         "web01.json"]
    lines = (reports / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["outcome"] for line in lines] == ["success", "failed"]
    for name in ("last.json", "web01.json", "history.jsonl"):
        assert stat.S_IMODE((reports / name).stat().st_mode) & 0o022 == 0


def test_write_report_never_writes_through_planted_symlinks(tmp_path: Path) -> None:
    reports = _dir(tmp_path / "reports", 0o750)
    victim = _file(tmp_path / "victim", "precious\n", 0o644)
    (reports / "last.json").symlink_to(victim)
    (reports / "web01.json").symlink_to(victim)
    (reports / "history.jsonl").symlink_to(victim)
    message = insecure(write_report, _report(), str(reports))
    assert str(reports / "history.jsonl") in message and "symbolic link" in message
    assert victim.read_text() == "precious\n"
    assert not (reports / "last.json").is_symlink()  # replaced, not followed


def test_write_report_refuses_a_hard_linked_history(tmp_path: Path) -> None:
    reports = _dir(tmp_path / "reports", 0o750)
    victim = _file(tmp_path / "victim", "precious\n", 0o644)
    os.link(victim, reports / "history.jsonl")
    assert "hard links" in insecure(write_report, _report(), str(reports))
    assert victim.read_text() == "precious\n"


def test_write_report_refuses_an_open_or_symlinked_or_foreign_directory(
        tmp_path: Path) -> None:
    open_dir = _dir(tmp_path / "open", 0o777)
    assert "0777" in insecure(write_report, _report(), str(open_dir))
    assert list(open_dir.iterdir()) == []
    (tmp_path / "link").symlink_to(_dir(tmp_path / "real"))
    assert "symbolic link" in insecure(write_report, _report(), str(tmp_path / "link"))
    assert list((tmp_path / "real").iterdir()) == []
    theirs = _dir(tmp_path / "theirs")
    assert f"uid {FOREIGN_UID}" in insecure(write_report, _report(), str(theirs),
                                            view=owned_by(FOREIGN_UID, theirs))


# --- files the tool trusts: config, key, known_hosts ---------------------------------


def test_trusted_file_checks(tmp_path: Path) -> None:
    d = _dir(tmp_path / "etc")
    key = _file(d / "id_ed25519", "key", 0o600)
    safefs.check_trusted_file(str(key), "the SSH key", secret=True)
    key.chmod(0o644)
    message = insecure(safefs.check_trusted_file, str(key), "the SSH key", secret=True)
    assert "0644" in message and f"chmod 600 {key}" in message
    hosts = _file(d / "known_hosts", "h", 0o644)
    safefs.check_trusted_file(str(hosts), "known_hosts")
    hosts.chmod(0o664)
    assert f"chmod go-w {hosts}" in insecure(safefs.check_trusted_file, str(hosts), "x")
    hosts.chmod(0o644)
    assert f"chown {owner()} {hosts}" in insecure(safefs.check_trusted_file, str(hosts), "x",
                                             view=owned_by(FOREIGN_UID, hosts))
    d.chmod(0o775)
    assert insecure(safefs.check_trusted_file, str(hosts), "x").startswith(f"{d}: ")
    d.chmod(0o755)
    with pytest.raises(FileNotFoundError):
        safefs.check_trusted_file(str(d / "missing"), "x")
    assert "not a regular file" in insecure(safefs.check_trusted_file, str(d), "x")


def test_a_trusted_file_reached_through_a_symlink_is_checked_at_its_target(
        tmp_path: Path) -> None:
    d = _dir(tmp_path / "etc")
    real = _file(d / "backup.toml", "", 0o644)
    (d / "link.toml").symlink_to(real)
    safefs.check_trusted_file(str(d / "link.toml"), "the config file")
    real.chmod(0o666)
    assert insecure(safefs.check_trusted_file, str(d / "link.toml"),
                    "the config file").startswith(f"{real}: ")


def test_a_trusted_file_reached_through_a_symlink_loop_is_refused_as_a_symbolic_link(
        tmp_path: Path) -> None:
    d = _dir(tmp_path / "etc")
    (d / "a.toml").symlink_to(d / "b.toml")
    (d / "b.toml").symlink_to(d / "a.toml")
    message = insecure(safefs.check_trusted_file, str(d / "a.toml"), "the config file")
    assert message.startswith(f"{d}/")
    assert message.endswith(": the config file is a symbolic link, not a regular file; fix the "
                            "path in the config"), message


def _racing_open(monkeypatch, removals: int) -> list[str]:
    """os.open where the file exists for O_EXCL, then is gone for the plain open, the first
    ``removals`` times (another process removing it in between): the calls, in order."""
    real, calls = os.open, []

    def racing(path, flags, *args, **kwargs):
        if kwargs.get("dir_fd") is None:
            return real(path, flags, *args, **kwargs)
        kind = "excl" if flags & os.O_EXCL else "plain"
        calls.append(kind)
        if kind == "plain":
            raise FileNotFoundError(path)  # only reached after the O_EXCL open found it
        if calls.count("excl") <= removals:
            raise FileExistsError(path)
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(safefs.os, "open", racing)
    return calls


def test_a_file_removed_between_the_two_opens_is_opened_on_the_next_try(tmp_path, monkeypatch):
    d = _dir(tmp_path / "d")
    calls = _racing_open(monkeypatch, removals=2)
    fd, created = _open(d, "f", create=True)
    os.close(fd)
    assert created is True and calls == ["excl", "plain", "excl", "plain", "excl"]


def test_a_file_that_keeps_disappearing_is_refused_after_five_tries(tmp_path, monkeypatch):
    d = _dir(tmp_path / "d")
    calls = _racing_open(monkeypatch, removals=99)
    assert insecure(_open, d, "f", create=True) == (
        f"{d}/f: the file keeps disappearing while it is opened; find out who removes it")
    assert calls == ["excl", "plain"] * 5


def test_a_fifo_without_a_reader_opened_for_writing_is_refused_not_waited_on(tmp_path):
    # O_WRONLY on a FIFO nobody reads would block; O_NONBLOCK makes it ENXIO, which is
    # refused as what it is: not a file of the tool's.
    d = _dir(tmp_path / "d")
    os.mkfifo(d / "fifo", 0o600)
    fd_dir = safefs.open_dir(str(d), "the directory")
    try:
        message = insecure(safefs.open_file, fd_dir, str(d), "fifo", "the file", os.O_WRONLY)
    finally:
        os.close(fd_dir)
    assert message == f"{d}/fifo: the file is not a regular file; remove it (rm {d}/fifo)"


def test_a_missing_directory_and_its_missing_parents_are_made_0755(tmp_path):
    old = os.umask(0)  # the modes asked for, not the umask's
    try:
        safefs.ensure_dir(str(tmp_path / "a" / "b"), "the directory")
        safefs.ensure_dir(str(tmp_path / "c" / "d"), "the directory", mode=0o700)
    finally:
        os.umask(old)
    modes = {p: stat.S_IMODE((tmp_path / p).stat().st_mode) for p in ("a", "a/b", "c", "c/d")}
    assert modes == {"a": 0o755, "a/b": 0o755, "c": 0o755, "c/d": 0o700}


def test_making_or_opening_a_directory_checks_it_and_its_parents_through_the_view(tmp_path):
    # The view decides who owns what: a parent another user owns stops ensure_dir before it
    # makes anything below, and open_dir (making or not) refuses a directory they own, each
    # message naming the directory by what it is for.
    theirs = _dir(tmp_path / "theirs")
    view = owned_by(FOREIGN_UID, theirs)
    fix = view.owner_fix()
    above = (f"{theirs}: a directory above the report directory {theirs}/new is owned "
             f"by uid {FOREIGN_UID}, so that user can replace what is below it; run chown {fix} "
             f"{theirs}")
    assert insecure(safefs.ensure_dir, str(theirs / "new" / "reports"), "the report directory",
                    view=view) == above
    assert not (theirs / "new").exists()
    assert insecure(safefs.open_dir, str(theirs / "new" / "reports"), "the report directory",
                    create=True, view=view) == above
    owned = (f"{theirs}: the state directory is owned by uid {FOREIGN_UID}, not by root; run "
             f"chown {fix} {theirs} (or remove it)")
    assert insecure(safefs.open_dir, str(theirs), "the state directory", view=view) == owned
    assert insecure(safefs.ensure_dir, str(theirs), "the state directory", view=view) == owned
    assert insecure(safefs.open_dir, str(theirs), "the state directory", create=True,
                    view=view) == owned


@pytest.mark.parametrize("call", [safefs.ensure_dir, safefs.check_dir, safefs.check_parents])
@pytest.mark.parametrize("path", ["reports", "/var/lib/../reports", "//reports", "/a/b/"])
def test_a_path_that_is_not_absolute_and_normal_is_refused_naming_what_it_is_for(call, path):
    assert insecure(call, path, "the report directory") == (
        f"{path}: the report directory must be an absolute, normalized path; fix the path in "
        "the config")


def test_a_directory_swapped_while_it_is_checked_is_refused(tmp_path, monkeypatch):
    import errno

    d, other = _dir(tmp_path / "state"), _dir(tmp_path / "other")
    replaced = (f"{d}: the state directory was replaced while it was checked; find out who "
                "changes it")
    # the path seen by lstat is not the directory the open lands on
    swapped = safefs.FsView(lstat=lambda p: os.lstat(other if p == str(d) else p),
                            fstat=os.fstat)
    assert insecure(safefs.open_dir, str(d), "the state directory", view=swapped) == replaced
    # the path became a symlink (or a file) between the check and the open
    real_open = os.open

    def swapped_open(path, flags, *args, **kwargs):
        if path == str(d) and flags & os.O_DIRECTORY:
            raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(safefs.os, "open", swapped_open)
    assert insecure(safefs.open_dir, str(d), "the state directory") == replaced


def test_the_opened_directory_itself_is_checked_not_only_its_path(tmp_path):
    # lstat of the path says root's; the directory the fd holds is someone else's
    d = _dir(tmp_path / "state")
    ino = os.lstat(d).st_ino

    def fstat(fd: int) -> os.stat_result:
        st = os.fstat(fd)
        return with_uid(st, FOREIGN_UID) if st.st_ino == ino else st

    view = safefs.FsView(lstat=os.lstat, fstat=fstat)
    assert insecure(safefs.open_dir, str(d), "the state directory", view=view) == (
        f"{d}: the state directory is owned by uid {FOREIGN_UID}, not by root; run chown "
        f"{view.owner_fix()} {d} (or remove it)")


def test_a_directory_that_is_a_symlink_and_a_name_with_a_nul_are_refused_by_name(tmp_path):
    d = _dir(tmp_path / "real")
    (tmp_path / "link").symlink_to(d)
    link = tmp_path / "link"
    assert insecure(safefs.check_dir, str(link), "the state directory") == (
        f"{link}: the state directory is a symbolic link, which the tool never follows; "
        f"replace it with a directory (rm {link} && mkdir -m 0755 {link})")
    assert insecure(safefs.check_name, "a\0b", "the marker") == (
        "'a\\x00b': the marker is not a single file name; this is a bug")


def test_every_directory_above_is_checked_not_only_the_nearest(tmp_path):
    theirs = _dir(tmp_path / "theirs")
    state = _dir(_dir(theirs / "mine") / "state")
    view = owned_by(FOREIGN_UID, theirs)
    assert insecure(safefs.check_dir, str(state), "the state directory", view=view) == (
        f"{theirs}: a directory above the state directory {state} is owned by uid "
        f"{FOREIGN_UID}, so that user can replace what is below it; run chown "
        f"{view.owner_fix()} {theirs}")
    loose = _dir(tmp_path / "loose")
    os.chmod(loose, 0o775)
    assert insecure(safefs.check_dir, str(loose), "the state directory") == (
        f"{loose}: the state directory has mode 0775, which is group- or world-writable; run "
        f"chmod go-w {loose}")
