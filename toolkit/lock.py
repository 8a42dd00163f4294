"""The per-domain run lock: one run (or recover) per domain at a time.

The lock is an flock on ``<lock_dir>/<domain>.lock``. The lock directory is
checked (and made, 0755, when missing) by ``safefs``: a real directory owned
by root and not group- or world-writable, below parents nobody else can
change. The lock file is opened relative to that directory with
``O_NOFOLLOW``, so a planted symlink is refused, never followed; an existing
lock file must be a regular file owned by root (or the tool's uid) with one
link and not group- or world-writable. Only a file that passed those checks
(or was created by this call) gets the holder's pid: written with pwrite at
offset 0, then cut to its length with ftruncate, after the flock is held. A
file that fails them is left exactly as it is and the run exits 6
(InsecureFile).
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager

from . import safefs
from .errors import LockBusy

LOCK_DIR_MODE = 0o755


def lock_path(lock_dir: str, domain: str) -> str:
    """The lock file of one domain."""
    return posixpath.join(lock_dir, f"{domain}.lock")


@contextmanager
def domain_lock(lock_dir: str, domain: str, *,
                view: safefs.FsView = safefs.REAL) -> Iterator[str]:
    """Hold the per-domain flock for the duration of a run; LockBusy if another run has it."""
    name = safefs.check_name(domain, "the domain name") + ".lock"
    path = lock_path(lock_dir, domain)
    dir_fd = safefs.open_dir(lock_dir, "the lock directory", create=True,
                             mode=LOCK_DIR_MODE, view=view)
    try:
        fd, _created = safefs.open_file(dir_fd, lock_dir, name, "the lock file", os.O_RDWR,
                                        create=True, mode=0o600, view=view)
    finally:
        os.close(dir_fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                holder = _read_pid(fd)
                who = f" (pid {holder})" if holder else ""
                raise LockBusy(f"domain {domain} is being backed up by another run{who}; "
                               f"lock {path}") from None
            raise
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))
        yield path
    finally:
        os.close(fd)  # closing releases the flock


def lock_is_held(lock_dir: str, domain: str, *, view: safefs.FsView = safefs.REAL,
                 locks: str = "/proc/locks") -> bool:
    """True while a live process holds the domain's lock.

    Read from the kernel's table of locks (``/proc/locks``), never by locking: a probe
    that took the lock, even shared, even for a moment, would make a run starting in
    that moment fail as busy. False when the table cannot be read.
    """
    name = safefs.check_name(domain, "the domain name") + ".lock"
    try:
        dir_fd = safefs.open_dir(lock_dir, "the lock directory", view=view)
    except FileNotFoundError:
        return False
    try:
        fd, _created = safefs.open_file(dir_fd, lock_dir, name, "the lock file", os.O_RDONLY,
                                        view=view)
    except FileNotFoundError:
        return False
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        with open(locks, encoding="ascii", errors="replace") as table:
            text = table.read()
    except OSError:
        return False
    return flock_held(text, st.st_dev, st.st_ino)


def flock_held(table: str, dev: int, ino: int) -> bool:
    """Whether ``/proc/locks`` text holds an flock on the file ``dev``/``ino``.

    A line reads ``1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF``: the device as
    major:minor in hex, then the inode; a waiting lock is marked ``->`` and not held.
    """
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    for line in table.splitlines():
        fields = line.split()
        # a waiter reads "1: -> FLOCK ...": its second field is "->", so it never matches
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].lower() == want:
            return True
    return False


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
