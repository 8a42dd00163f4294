"""Local files the tool runs as root with: directories and files nobody else can swap.

The checks follow OpenSSH's secure path check. A directory the tool writes in
(lock, report) must be a real directory (not a symlink) owned by root, or by
the effective uid when not running as root, and not group- or
world-writable; each of its parents must be owned by root (or the effective
uid) and either not group- or world-writable, or root-owned and sticky (like
/tmp and /run/lock). Files in it are opened with ``O_NOFOLLOW``: a planted
symlink, a file owned by someone else, a hard link to another file or a FIFO
is refused, never followed, written or truncated. A file the tool writes
whole is written to a fresh temporary file (``O_EXCL``) and renamed over the
old name, so nothing another user put there is ever written through.

Every refusal is an ``InsecureFile`` (exit 6) whose message names the path,
what is wrong and the command that fixes it. ``FsView`` is how the checks look
at the system (lstat, fstat, the effective uid); tests pass their own.
"""

from __future__ import annotations

import errno
import os
import posixpath
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import InsecureFile


def _real_euid() -> int:
    return os.geteuid()


@dataclass(frozen=True)
class FsView:
    """How the checks see the system; tests inject their own stat results or uid."""

    lstat: Callable[[str], os.stat_result] = field(default=os.lstat)
    fstat: Callable[[int], os.stat_result] = field(default=os.fstat)
    euid: Callable[[], int] = field(default=_real_euid)

    def trusted(self, uid: int) -> bool:
        """Root, or the user the tool runs as."""
        return uid == 0 or uid == self.euid()

    def owner_fix(self) -> str:
        """Who should own the file, as a message names them."""
        return "root" if self.euid() == 0 else str(self.euid())


REAL = FsView()

_OPEN_BASE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


def _insecure(path: str, problem: str, fix: str) -> InsecureFile:
    return InsecureFile(f"{path}: {problem}; {fix}")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device node"


def _ancestors(path: str) -> list[str]:
    """The parents of an absolute path, nearest first, ending with "/"."""
    out = []
    parent = posixpath.dirname(path)
    while True:
        out.append(parent)
        if parent == "/":
            return out
        parent = posixpath.dirname(parent)


def _require_absolute(path: str, what: str) -> str:
    path = os.fspath(path)
    if not path.startswith("/") or posixpath.normpath(path) != path or path.startswith("//"):
        raise _insecure(path, f"{what} must be an absolute, normalized path",
                        "fix the path in the config")
    return path


def check_parents(path: str, what: str, *, view: FsView = REAL) -> None:
    """Every directory above ``path`` is one only root (or we) can change entries in.

    A parent that is a symlink must be owned by root (or us), and the directory
    it points to is checked the same way, up to "/".
    """
    path = _require_absolute(os.fspath(path), what)
    seen: set[str] = set()
    todo = _ancestors(path)
    while todo:
        parent = todo.pop(0)
        if parent in seen:
            continue
        seen.add(parent)
        try:
            st = view.lstat(parent)
        except FileNotFoundError:
            continue  # a missing parent is created by us, then checked
        if stat.S_ISLNK(st.st_mode):
            if not view.trusted(st.st_uid):
                raise _insecure(parent, f"a directory above {what} {path} is a symbolic link "
                                f"owned by uid {st.st_uid}",
                                f"replace it or run chown -h {view.owner_fix()} {parent}")
            real = os.path.realpath(parent)
            todo[:0] = [real, *(_ancestors(real) if real != "/" else [])]
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise _insecure(parent, f"above {what} {path}, is {_kind(st.st_mode)}, "
                            "not a directory", "fix the path in the config")
        mode = stat.S_IMODE(st.st_mode)
        if not view.trusted(st.st_uid):
            raise _insecure(parent, f"a directory above {what} {path} is owned by uid "
                            f"{st.st_uid}, so that user can replace what is below it",
                            f"run chown {view.owner_fix()} {parent}")
        if mode & (stat.S_IWGRP | stat.S_IWOTH) and not (st.st_uid == 0
                                                          and mode & stat.S_ISVTX):
            raise _insecure(parent, f"a directory above {what} {path} has mode {mode:04o}: "
                            "group- or world-writable and not a root-owned sticky directory",
                            f"run chmod go-w {parent}")


def _check_dir_stat(path: str, st: os.stat_result, what: str, view: FsView) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise _insecure(path, f"{what} is a symbolic link, which the tool never follows",
                        f"replace it with a directory (rm {path} && mkdir -m 0755 {path})")
    if not stat.S_ISDIR(st.st_mode):
        raise _insecure(path, f"{what} is {_kind(st.st_mode)}, not a directory",
                        "remove it or fix the path in the config")
    if not view.trusted(st.st_uid):
        raise _insecure(path, f"{what} is owned by uid {st.st_uid}, not by root",
                        f"run chown {view.owner_fix()} {path} (or remove it)")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _insecure(path, f"{what} has mode {mode:04o}, which is group- or "
                        "world-writable", f"run chmod go-w {path}")


def check_dir(path: str, what: str, *, view: FsView = REAL) -> None:
    """``path`` is a real directory (never a symlink) that only root (or we) can change.

    FileNotFoundError when it does not exist.
    """
    path = _require_absolute(os.fspath(path), what)
    _check_dir_stat(path, view.lstat(path), what, view)
    check_parents(path, what, view=view)


def ensure_dir(path: str, what: str, *, mode: int = 0o755, view: FsView = REAL) -> None:
    """Create ``path`` (and missing parents, 0755) if it is missing, then check it."""
    path = _require_absolute(os.fspath(path), what)
    missing = []
    current = path
    while True:
        try:
            view.lstat(current)
            break
        except FileNotFoundError:
            missing.append(current)
            current = posixpath.dirname(current)
    check_parents(missing[-1] if missing else path, what, view=view)
    for index, directory in enumerate(reversed(missing)):
        try:
            os.mkdir(directory, mode if index == len(missing) - 1 else 0o755)
        except FileExistsError:
            pass  # made meanwhile: the check below decides whether it is ours
    check_dir(path, what, view=view)


def open_dir(path: str, what: str, *, create: bool = False, mode: int = 0o755,
             view: FsView = REAL) -> int:
    """Check (creating first if asked) and open a directory; returns an O_DIRECTORY fd.

    The fd is proven to be the directory that was checked, so files opened
    relative to it (``dir_fd``) cannot be redirected by renaming the path.
    """
    path = os.fspath(path)
    if create:
        ensure_dir(path, what, mode=mode, view=view)
    else:
        check_dir(path, what, view=view)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _insecure(path, f"{what} was replaced while it was checked",
                            "find out who changes it") from None
        raise
    try:
        st = view.fstat(fd)
        _check_dir_stat(path, st, what, view)
        before = view.lstat(path)
        if (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise _insecure(path, f"{what} was replaced while it was checked",
                            "find out who changes it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_name(name: str, what: str) -> str:
    """A single file name: no "/", not "." or "..", not empty, no NUL."""
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise InsecureFile(f"{name!r}: {what} is not a single file name; this is a bug")
    return name


def _check_file_stat(path: str, st: os.stat_result, what: str, view: FsView) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise _insecure(path, f"{what} is {_kind(st.st_mode)}, not a regular file",
                        f"remove it (rm {path})")
    if not view.trusted(st.st_uid):
        raise _insecure(path, f"{what} is owned by uid {st.st_uid}, not by root",
                        f"remove it (rm {path})")
    if st.st_nlink != 1:
        raise _insecure(path, f"{what} has {st.st_nlink} hard links, so writing it would "
                        "change another file", f"remove it (rm {path})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _insecure(path, f"{what} has mode {mode:04o}, which is group- or "
                        "world-writable", f"remove it (rm {path})")


def open_file(dir_fd: int, dir_path: str, name: str, what: str, flags: int, *,
              create: bool = False, mode: int = 0o600,
              view: FsView = REAL) -> tuple[int, bool]:
    """Open ``name`` in a checked directory without following a symlink: (fd, created).

    With ``create`` the file is made with ``O_EXCL`` when missing (``created``
    is then True). An existing file must be a regular file owned by root (or
    us) with one link and not group- or world-writable; anything else is
    InsecureFile and is left as it is. ``flags`` never includes O_TRUNC: a
    file is only shortened by the caller, after these checks passed.
    FileNotFoundError when it is missing and ``create`` is false.
    """
    check_name(name, what)
    if flags & os.O_TRUNC:
        raise ValueError("open_file never truncates; ftruncate after the checks")
    path = posixpath.join(dir_path, name)
    flags |= _OPEN_BASE
    for _attempt in range(5):
        created = False
        try:
            if create:
                try:
                    fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
                    created = True
                except FileExistsError:
                    fd = os.open(name, flags, dir_fd=dir_fd)
            else:
                fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            if create:
                continue  # removed between the two opens: try again
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _insecure(path, f"{what} is a symbolic link, which the tool never "
                                "follows", f"remove it (rm {path})") from None
            if exc.errno == errno.ENXIO:  # a FIFO or socket without a reader
                raise _insecure(path, f"{what} is not a regular file",
                                f"remove it (rm {path})") from None
            raise
        try:
            _check_file_stat(path, view.fstat(fd), what, view)
        except BaseException:
            os.close(fd)
            raise
        return fd, created
    raise _insecure(path, f"{what} keeps disappearing while it is opened",
                    "find out who removes it")


def write_atomic(dir_fd: int, dir_path: str, name: str, data: bytes, what: str, *,
                 mode: int = 0o640) -> None:
    """Replace ``name`` with ``data``: a new file (O_EXCL, O_NOFOLLOW), fsynced, renamed.

    Whatever ``name`` was before (a file, a planted symlink) is replaced, never
    written through.
    """
    check_name(name, what)
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN_BASE, mode, dir_fd=dir_fd)
    try:
        try:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    os.fsync(dir_fd)


def append(dir_fd: int, dir_path: str, name: str, data: bytes, what: str, *,
           mode: int = 0o640, view: FsView = REAL) -> None:
    """Append ``data`` to ``name`` (created when missing) after the file checks."""
    fd, _created = open_file(dir_fd, dir_path, name, what, os.O_WRONLY | os.O_APPEND,
                             create=True, mode=mode, view=view)
    try:
        view_ = memoryview(data)
        while view_:
            view_ = view_[os.write(fd, view_):]
    finally:
        os.close(fd)


def check_trusted_file(path: str, what: str, *, secret: bool = False,
                       view: FsView = REAL) -> None:
    """A config, key or known_hosts file that only root (or we) can change.

    The file itself may be reached through a symlink (the link's directories
    and the file's own are all checked); it must be a regular file owned by
    root (or us) and not group- or world-writable, and with ``secret`` (a
    private key) not readable by group or others either, as OpenSSH demands.
    FileNotFoundError when it is missing.
    """
    path = _require_absolute(os.fspath(path), what)
    st = view.lstat(path)
    real = path
    if stat.S_ISLNK(st.st_mode):
        if not view.trusted(st.st_uid):
            raise _insecure(path, f"{what} is a symbolic link owned by uid {st.st_uid}",
                            f"replace it or run chown -h {view.owner_fix()} {path}")
        check_parents(path, what, view=view)
        real = os.path.realpath(path)
        st = view.lstat(real)
    if not stat.S_ISREG(st.st_mode):
        raise _insecure(real, f"{what} is {_kind(st.st_mode)}, not a regular file",
                        "fix the path in the config")
    if not view.trusted(st.st_uid):
        raise _insecure(real, f"{what} is owned by uid {st.st_uid}, not by root",
                        f"run chown {view.owner_fix()} {real}")
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _insecure(real, f"{what} has mode {mode:04o}, which is group- or "
                        "world-writable", f"run chmod go-w {real}")
    if secret and mode & 0o077:
        raise _insecure(real, f"{what} has mode {mode:04o}: a private key must not be "
                        "readable by group or others (ssh refuses it)", f"run chmod 600 {real}")
    check_parents(real, what, view=view)
