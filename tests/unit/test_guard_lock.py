"""The lock's guards as the status command meets them, and what a busy lock tells the operator."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from fakes import owned_by

from toolkit import errors
from toolkit.lock import domain_lock, lock_is_held

FOREIGN_UID = 4242


def test_a_lock_directory_without_the_domains_lock_file_is_not_held(lock_dir: Path) -> None:
    (lock_dir / "db01.lock").write_text("1\n")
    assert not lock_is_held(str(lock_dir), "web01")
    assert sorted(os.listdir(lock_dir)) == ["db01.lock"]  # nothing made by looking


def test_looking_at_a_lock_refuses_an_unsafe_directory_naming_it(lock_dir: Path) -> None:
    with pytest.raises(errors.InsecureFile,
                       match=rf"{lock_dir}: the lock directory is owned by uid {FOREIGN_UID}"):
        lock_is_held(str(lock_dir), "web01", view=owned_by(FOREIGN_UID, lock_dir))


def test_looking_at_a_lock_refuses_a_lock_file_of_another_user_naming_it(lock_dir: Path) -> None:
    lock = lock_dir / "web01.lock"
    lock.write_text("theirs\n")
    lock.chmod(0o600)
    with pytest.raises(errors.InsecureFile,
                       match=rf"{lock}: the lock file is owned by uid {FOREIGN_UID}"):
        lock_is_held(str(lock_dir), "web01", view=owned_by(FOREIGN_UID, lock))
    assert lock.read_text() == "theirs\n"


def test_looking_at_a_lock_refuses_a_domain_name_that_is_a_path(lock_dir: Path) -> None:
    with pytest.raises(errors.InsecureFile, match="the domain name is not a single file name"):
        lock_is_held(str(lock_dir), "../web01")


@pytest.mark.parametrize(("content", "said"), [
    (b"31337\n", " (pid 31337); lock "),
    (b"not a pid\n", " run; lock "),
    (b"\xff\xfe\x00garbage", " run; lock "),
    (b"", " run; lock "),
], ids=["pid", "text", "bytes", "empty"])
def test_a_busy_lock_names_its_holders_pid_only_when_it_is_one(lock_dir: Path, content: bytes,
                                                             said: str) -> None:
    lock = lock_dir / "web01.lock"
    lock.write_bytes(content)
    lock.chmod(0o600)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        with pytest.raises(errors.LockBusy) as info:
            with domain_lock(str(lock_dir), "web01"):
                pass
        assert str(info.value).startswith("domain web01 is being backed up by another")
        assert said in str(info.value) and str(info.value).endswith(str(lock))
        assert lock_is_held(str(lock_dir), "web01")
    finally:
        os.close(fd)
    assert lock.read_bytes() == content  # the holder's file is not written
