"""The directory and name checks in detail: every directory above a file is checked (past a
missing one, through a symlink to its real place), each refusal says where and what to do,
the opened directory is the checked one and is not inherited, and the name rules hold at
their exact limits."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from fakes import owned_by

from toolkit import errors, safefs
from toolkit.names import check_label, check_text, path_under

FOREIGN = 4242


def _view_as(euid: int) -> safefs.FsView:
    return safefs.FsView(euid=lambda: euid)


def _refusal(call, *args, **kw) -> str:
    with pytest.raises(errors.InsecureFile) as info:
        call(*args, **kw)
    return str(info.value)


def test_a_parent_that_is_a_file_is_refused_saying_so_and_what_to_fix(tmp_path: Path):
    parent = tmp_path / "f"
    parent.write_text("")
    path = f"{parent}/lock"
    assert _refusal(safefs.check_parents, path, "the lock directory",
                    view=_view_as(os.geteuid())) == (
        f"{parent}: above the lock directory {path}, is a regular file, not a directory; "
        "fix the path in the config")


def test_a_parent_symlink_owned_by_another_user_is_refused_naming_it(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    path = f"{link}/lock"
    view = owned_by(FOREIGN, link, euid=os.geteuid())
    owner = "root" if os.geteuid() == 0 else str(os.geteuid())
    assert _refusal(safefs.check_parents, path, "the lock directory", view=view) == (
        f"{link}: a directory above the lock directory {path} is a symbolic link owned by "
        f"uid {FOREIGN}; replace it or run chown -h {owner} {link}")


def test_through_a_trusted_symlink_the_real_directorys_own_parents_are_checked(tmp_path: Path):
    """A symlink of ours may lead somewhere whose parents others can write: the directories
    above the link's target are checked too."""
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    (loose / "target").mkdir(mode=0o755)
    link = tmp_path / "link"
    link.symlink_to(loose / "target")
    path = f"{link}/lock"
    assert _refusal(safefs.check_parents, path, "the lock directory",
                    view=_view_as(os.geteuid())) == (
        f"{loose}: a directory above the lock directory {path} has mode 0777: group- or "
        f"world-writable and not a root-owned sticky directory; run chmod go-w {loose}")


def test_a_missing_parent_does_not_end_the_check_of_those_above_it(tmp_path: Path):
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o775)
    path = f"{loose}/missing/deeper/lock"
    message = _refusal(safefs.check_parents, path, "the lock directory",
                       view=_view_as(os.geteuid()))
    assert message.startswith(f"{loose}: a directory above the lock directory {path} has "
                              "mode 0775")


def test_open_dir_checks_through_the_view_it_is_given(tmp_path: Path):
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    message = _refusal(safefs.open_dir, str(d), "the state directory",
                       view=owned_by(FOREIGN, d, euid=os.geteuid()))
    assert f"the state directory is owned by uid {FOREIGN}" in message


def test_open_dir_checks_the_path_through_the_view_before_opening_it(tmp_path: Path):
    """What the view says of the path is checked before the open, even when the opened
    directory then looks right."""
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    by_path = owned_by(FOREIGN, d, euid=os.geteuid())
    view = safefs.FsView(lstat=by_path.lstat, euid=lambda: os.geteuid())
    message = _refusal(safefs.open_dir, str(d), "the state directory", view=view)
    assert f"the state directory is owned by uid {FOREIGN}" in message


def test_the_opened_directory_is_not_inherited_by_the_commands_the_tool_starts(tmp_path: Path):
    d = tmp_path / "state"
    d.mkdir(mode=0o755)
    fd = safefs.open_dir(str(d), "the state directory", view=_view_as(os.geteuid()))
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)


@pytest.mark.parametrize("fstype", [None, "", "zfs_member"])
def test_a_label_of_a_type_without_its_own_limit_may_be_255_bytes(fstype):
    assert check_label("x" * 255, fstype, "xvda1") == "x" * 255
    with pytest.raises(errors.UnsafeName) as info:
        check_label("x" * 256, fstype, "xvda1")
    assert str(info.value) == (f"xvda1: filesystem label {'x' * 40!r} is longer than "
                               f"{fstype or 'a label'} allows (255 bytes)")


def test_text_exactly_at_its_limit_is_accepted():
    assert check_text("n" * 36, "GPT partition name", limit=36) == "n" * 36
    with pytest.raises(errors.UnsafeName):
        check_text("n" * 37, "GPT partition name", limit=36)


def test_a_root_is_taken_as_written_never_trimmed_of_other_characters():
    with pytest.raises(errors.UnsafeName, match="lies outside"):
        path_under("/mnt/boX", "/mnt/bo/x", "mount point")
    assert path_under("/mnt/boX", "/mnt/boX/x", "mount point") == "/mnt/boX/x"


def test_a_root_or_path_with_a_double_leading_slash_is_not_normal():
    # POSIX keeps "//" at the start of a path as it is (normpath does too), so only an
    # explicit rule refuses it.
    for root, path in (("//run", "//run/x"), ("/run", "//run/x")):
        with pytest.raises(errors.UnsafeName, match="is not a normal absolute path"):
            path_under(root, path, "mount point")


def test_past_a_symlink_the_directories_above_the_link_itself_are_still_checked(
        tmp_path: Path):
    """The link's own parent stays to be checked after the link's target is."""
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o775)
    target = tmp_path / "target"
    target.mkdir(mode=0o755)
    (loose / "link").symlink_to(target)
    path = f"{loose}/link/lock"
    message = _refusal(safefs.check_parents, path, "the lock directory",
                       view=_view_as(os.geteuid()))
    assert message.startswith(f"{loose}: a directory above the lock directory {path} has "
                              "mode 0775")


def test_text_is_bounded_at_255_characters_unless_told_otherwise():
    assert check_text("n" * 255, "GPT partition name") == "n" * 255
    with pytest.raises(errors.UnsafeName, match="longer than 255 characters"):
        check_text("n" * 256, "GPT partition name")


def test_open_dir_makes_a_directory_only_when_asked_and_then_0755(tmp_path: Path):
    missing = tmp_path / "state"
    with pytest.raises(FileNotFoundError):
        safefs.open_dir(str(missing), "the state directory", view=_view_as(os.geteuid()))
    assert not missing.exists()
    old = os.umask(0)  # the mode asked for, not the umask's
    try:
        fd = safefs.open_dir(str(missing), "the state directory", create=True,
                             view=_view_as(os.geteuid()))
    finally:
        os.umask(old)
    os.close(fd)
    assert (missing.stat().st_mode & 0o7777) == 0o755
