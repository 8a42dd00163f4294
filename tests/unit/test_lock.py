"""The domain lock (R15, R22): one run per domain, and a lock directory nobody else can
use to make root write, truncate or follow anything. Every test also passes as a
non-root user: ownership by someone else is shown through an injected stat."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from fakes import owned_by, with_uid

from toolkit import errors
from toolkit.lock import domain_lock, lock_is_held
from toolkit.safefs import FsView

FOREIGN_UID = 4242


def owned_by_another_user(*paths: Path) -> FsView:
    """A view in which the given files or directories belong to uid 4242."""
    return owned_by(FOREIGN_UID, *paths)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_text("precious\n")
    v.chmod(0o644)
    return v


def test_lock_is_taken_once_and_holds_the_pid(lock_dir: Path) -> None:
    with domain_lock(str(lock_dir), "web01") as path:
        assert path == str(lock_dir / "web01.lock")
        assert Path(path).read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert lock_is_held(str(lock_dir), "web01")
        with pytest.raises(errors.LockBusy, match=f"pid {os.getpid()}"):
            with domain_lock(str(lock_dir), "web01"):
                pass
    assert not lock_is_held(str(lock_dir), "web01")
    assert not lock_is_held(str(lock_dir / "missing"), "web01")


def test_an_old_lock_file_of_ours_gets_exactly_the_new_pid(lock_dir: Path) -> None:
    (lock_dir / "web01.lock").write_text("123456789012345\n")
    (lock_dir / "web01.lock").chmod(0o600)
    with domain_lock(str(lock_dir), "web01") as path:
        assert Path(path).read_text() == f"{os.getpid()}\n"


def test_a_missing_lock_dir_is_made_0755_with_its_parents(tmp_path: Path) -> None:
    lock_dir = tmp_path / "run" / "lock" / "domu-backup"
    with domain_lock(str(lock_dir), "web01"):
        pass
    assert stat.S_IMODE(lock_dir.stat().st_mode) & 0o022 == 0
    assert lock_dir.is_dir() and not lock_dir.is_symlink()


def test_lock_file_symlinked_to_a_victim_is_refused_and_the_victim_is_unchanged(
        lock_dir: Path, victim: Path) -> None:
    (lock_dir / "web01.lock").symlink_to(victim)
    with pytest.raises(errors.InsecureFile) as caught:
        with domain_lock(str(lock_dir), "web01"):
            pytest.fail("the lock was taken through a symlink")
    message = str(caught.value)
    assert str(lock_dir / "web01.lock") in message and "symbolic link" in message
    assert "rm " in message and "\n" not in message
    assert caught.value.exit_code == 6
    assert victim.read_text() == "precious\n"
    with pytest.raises(errors.InsecureFile):
        lock_is_held(str(lock_dir), "web01")


def test_a_dangling_symlink_is_not_followed_to_create_a_file(lock_dir: Path,
                                                             tmp_path: Path) -> None:
    (lock_dir / "web01.lock").symlink_to(tmp_path / "created-by-root")
    with pytest.raises(errors.InsecureFile, match="symbolic link"):
        with domain_lock(str(lock_dir), "web01"):
            pass
    assert not (tmp_path / "created-by-root").exists()


def test_hard_linked_lock_file_is_refused_and_the_victim_is_unchanged(
        lock_dir: Path, victim: Path) -> None:
    os.link(victim, lock_dir / "web01.lock")
    with pytest.raises(errors.InsecureFile, match="2 hard links"):
        with domain_lock(str(lock_dir), "web01"):
            pass
    assert victim.read_text() == "precious\n"


def test_world_writable_lock_dir_is_refused(lock_dir: Path) -> None:
    lock_dir.chmod(0o777)
    with pytest.raises(errors.InsecureFile) as caught:
        with domain_lock(str(lock_dir), "web01"):
            pass
    message = str(caught.value)
    assert str(lock_dir) in message and "0777" in message and f"chmod go-w {lock_dir}" in message
    assert list(lock_dir.iterdir()) == []


def test_lock_dir_that_is_a_symlink_is_refused(tmp_path: Path, lock_dir: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(lock_dir)
    with pytest.raises(errors.InsecureFile, match="symbolic link"):
        with domain_lock(str(link), "web01"):
            pass
    assert list(lock_dir.iterdir()) == []


def test_lock_dir_under_a_world_writable_non_sticky_parent_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "shared"
    parent.mkdir()
    parent.chmod(0o777)
    (parent / "lock").mkdir(mode=0o755)
    with pytest.raises(errors.InsecureFile, match=f"{parent}: .*0777"):
        with domain_lock(str(parent / "lock"), "web01"):
            pass


def test_lock_dir_under_a_sticky_parent_is_accepted_only_if_root_owns_it(
        tmp_path: Path) -> None:
    parent = tmp_path / "sticky"
    parent.mkdir()
    parent.chmod(0o1777)
    as_root = FsView(lstat=lambda p: with_uid(os.lstat(p), 0),
                     fstat=lambda fd: with_uid(os.fstat(fd), 0))
    with domain_lock(str(parent / "lock"), "web01", view=as_root):
        pass
    with pytest.raises(errors.InsecureFile, match=f"{parent}: .*uid {FOREIGN_UID}"):
        with domain_lock(str(parent / "lock"), "web01",
                         view=owned_by_another_user(parent)):
            pass


def test_lock_dir_owned_by_another_user_is_refused(lock_dir: Path) -> None:
    with pytest.raises(errors.InsecureFile) as caught:
        with domain_lock(str(lock_dir), "web01", view=owned_by_another_user(lock_dir)):
            pass
    assert f"owned by uid {FOREIGN_UID}" in str(caught.value)
    assert "chown " in str(caught.value) and str(lock_dir) in str(caught.value)


def test_lock_file_owned_by_another_user_is_left_alone(lock_dir: Path) -> None:
    lock = lock_dir / "web01.lock"
    lock.write_text("theirs\n")
    lock.chmod(0o600)
    with pytest.raises(errors.InsecureFile, match=f"owned by uid {FOREIGN_UID}"):
        with domain_lock(str(lock_dir), "web01", view=owned_by_another_user(lock)):
            pass
    assert lock.read_text() == "theirs\n"


def test_not_running_as_root_our_own_directories_are_trusted(lock_dir: Path) -> None:
    me = os.geteuid() or 1000
    with domain_lock(str(lock_dir), "web01", view=owned_by(me, lock_dir, euid=me)):
        pass
    with pytest.raises(errors.InsecureFile, match=f"owned by uid {me}"):
        with domain_lock(str(lock_dir), "web01", view=owned_by(me, lock_dir, euid=me + 1)):
            pass


def test_a_fifo_in_place_of_the_lock_file_is_refused_without_blocking(lock_dir: Path) -> None:
    os.mkfifo(lock_dir / "web01.lock", 0o600)
    with pytest.raises(errors.InsecureFile, match="FIFO|not a regular file"):
        with domain_lock(str(lock_dir), "web01"):
            pass
    with pytest.raises(errors.InsecureFile):
        lock_is_held(str(lock_dir), "web01")


def test_a_domain_name_is_one_file_name(lock_dir: Path) -> None:
    for bad in ("../web01", "a/b", ""):
        with pytest.raises(errors.InsecureFile):
            with domain_lock(str(lock_dir), bad):
                pass
    assert list(lock_dir.iterdir()) == []


def test_the_executor_and_the_command_line_use_this_lock() -> None:
    import toolkit.app
    import toolkit.execute
    import toolkit.lock

    assert toolkit.execute.domain_lock is toolkit.lock.domain_lock
    assert toolkit.app.domain_lock is toolkit.lock.domain_lock


def test_a_busy_lock_whose_holder_cannot_be_read_names_no_pid(lock_dir: Path,
                                                             monkeypatch) -> None:
    def unreadable(fd, length, offset):
        raise OSError(errno.EIO, "Input/output error")

    with domain_lock(str(lock_dir), "web01"):
        monkeypatch.setattr(os, "pread", unreadable)
        with pytest.raises(errors.LockBusy) as raised:
            with domain_lock(str(lock_dir), "web01"):
                pass
        monkeypatch.undo()
    assert str(raised.value) == (f"domain web01 is being backed up by another run; "
                                 f"lock {lock_dir}/web01.lock")


def test_is_held_reads_the_kernels_table_and_never_takes_the_lock(lock_dir: Path,
                                                                   monkeypatch) -> None:
    """A probe that locked, even shared for a moment, would make a run starting then busy."""
    import fcntl as real_fcntl

    with domain_lock(str(lock_dir), "web01"):
        def no_flock(*_a, **_k):
            raise AssertionError("lock_is_held took a lock")

        monkeypatch.setattr(real_fcntl, "flock", no_flock)
        assert lock_is_held(str(lock_dir), "web01")
        monkeypatch.undo()
    assert not lock_is_held(str(lock_dir), "web01")


def test_a_table_that_cannot_be_read_says_not_held(lock_dir: Path, tmp_path: Path) -> None:
    with domain_lock(str(lock_dir), "web01"):
        assert not lock_is_held(str(lock_dir), "web01", locks=str(tmp_path / "missing"))


@pytest.mark.parametrize(("line", "held"), [
    ("1: FLOCK  ADVISORY  WRITE 1234 fe:01:5678 0 EOF", True),
    ("1: FLOCK  ADVISORY  READ  1234 fe:01:5678 0 EOF", True),
    ("1: -> FLOCK  ADVISORY  WRITE 99 fe:01:5678 0 EOF", False),  # waiting, not holding
    ("1: POSIX  ADVISORY  WRITE 1234 fe:01:5678 0 EOF", False),
    ("1: FLOCK  ADVISORY  WRITE 1234 fe:01:56789 0 EOF", False),
    ("1: FLOCK  ADVISORY  WRITE 1234 fe:02:5678 0 EOF", False),
    ("garbage", False),
])
def test_the_kernels_lock_table_is_read_by_device_and_inode(line: str, held: bool) -> None:
    from toolkit.lock import flock_held

    assert flock_held(line + "\n", os.makedev(0xFE, 1), 5678) is held
