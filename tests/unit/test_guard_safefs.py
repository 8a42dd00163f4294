"""safefs refusals say what the tool found in place of what it needs (R22, R27)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from toolkit import errors
from toolkit.safefs import check_dir, check_trusted_file

# Whom the tool asks to own what it trusts: root, or the user it runs as (the tests run as
# any user).
_FIX = "root" if os.geteuid() == 0 else str(os.geteuid())


def _make(kind: str, path: Path) -> str:
    if kind == "a regular file":
        path.write_text("x\n")
        path.chmod(0o600)
    elif kind == "a directory":
        path.mkdir(mode=0o755)
    elif kind == "a FIFO":
        os.mkfifo(path, 0o600)
    elif kind == "a socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    return str(path)


@pytest.mark.parametrize("kind", ["a regular file", "a FIFO", "a socket"])
def test_a_directory_the_tool_needs_that_is_something_else_is_named_as_what_it_is(tmp_path,
                                                                                   kind):
    path = _make(kind, tmp_path / "x")
    with pytest.raises(errors.InsecureFile) as info:
        check_dir(path, "the lock directory")
    assert str(info.value) == (f"{path}: the lock directory is {kind}, not a directory; remove "
                               "it or fix the path in the config")


@pytest.mark.parametrize("kind", ["a directory", "a FIFO", "a socket", "a device node"])
def test_a_file_the_tool_trusts_that_is_something_else_is_named_as_what_it_is(tmp_path, kind):
    path = "/dev/null" if kind == "a device node" else _make(kind, tmp_path / "x")
    with pytest.raises(errors.InsecureFile) as info:
        check_trusted_file(path, "the config")
    assert str(info.value) == (f"{path}: the config is {kind}, not a regular file; fix the "
                               "path in the config")


# -- trusted files (config, key, known_hosts): each refusal names the path and the fix ----

FOREIGN = 4242


def _file(path: Path, mode: int = 0o600) -> Path:
    path.write_text("x\n")
    path.chmod(mode)
    return path


def _dir(path: Path) -> Path:
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    return path


def test_a_trusted_file_path_must_be_absolute():
    with pytest.raises(errors.InsecureFile) as info:
        check_trusted_file("etc/backup.toml", "the config")
    assert str(info.value) == ("etc/backup.toml: the config must be an absolute, normalized "
                               "path; fix the path in the config")


def test_a_trusted_file_reached_through_a_foreign_symlink_is_refused(tmp_path):
    from fakes import owned_by

    real = _file(tmp_path / "real.toml")
    link = tmp_path / "backup.toml"
    link.symlink_to(real)
    with pytest.raises(errors.InsecureFile) as info:
        check_trusted_file(str(link), "the config", view=owned_by(FOREIGN, link))
    assert str(info.value) == (f"{link}: the config is a symbolic link owned by uid {FOREIGN}; "
                               f"replace it or run chown -h {_FIX} {link}")


def test_the_directory_holding_a_trusted_symlink_is_checked_too(tmp_path):
    from fakes import owned_by

    real = _file(_dir(tmp_path / "keys") / "real.toml")
    links = _dir(tmp_path / "links")
    link = links / "backup.toml"
    link.symlink_to(real)
    with pytest.raises(errors.InsecureFile) as info:
        check_trusted_file(str(link), "the config", view=owned_by(FOREIGN, links))
    assert str(info.value) == (f"{links}: a directory above the config {link} is owned by uid "
                               f"{FOREIGN}, so that user can replace what is below it; run "
                               f"chown {_FIX} {links}")


def test_the_directory_holding_a_trusted_file_is_checked(tmp_path):
    from fakes import owned_by

    keys = _dir(tmp_path / "keys")
    key = _file(keys / "id_ed25519")
    with pytest.raises(errors.InsecureFile, match=rf"^{keys}: a directory above the ssh key "):
        check_trusted_file(str(key), "the ssh key", secret=True, view=owned_by(FOREIGN, keys))


def test_a_writable_trusted_file_and_a_readable_key_say_the_chmod_that_fixes_them(tmp_path):
    loose = _file(tmp_path / "backup.toml", 0o666)
    with pytest.raises(errors.InsecureFile) as info:
        check_trusted_file(str(loose), "the config")
    assert str(info.value) == (f"{loose}: the config has mode 0666, which is group- or "
                               f"world-writable; run chmod go-w {loose}")
    key = _file(tmp_path / "id_ed25519", 0o644)
    check_trusted_file(str(key), "the ssh key")  # readable is fine for a non-secret
    with pytest.raises(errors.InsecureFile) as info:
        check_trusted_file(str(key), "the ssh key", secret=True)
    assert str(info.value) == (f"{key}: the ssh key has mode 0644: a private key must not be "
                               f"readable by group or others (ssh refuses it); run chmod 600 "
                               f"{key}")


# -- files the tool writes whole or appends to -------------------------------------------

def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY)


def test_write_atomic_writes_a_new_0640_file_and_leaves_no_temporary(tmp_path):
    from toolkit.safefs import write_atomic

    d = _dir(tmp_path / "reports")
    fd = _open(d)
    try:
        write_atomic(fd, str(d), "last.json", b"{}\n", "the report")
    finally:
        os.close(fd)
    assert os.listdir(d) == ["last.json"]
    assert (d / "last.json").read_bytes() == b"{}\n"
    assert (os.stat(d / "last.json").st_mode & 0o777) == 0o640


def test_write_atomic_never_writes_through_a_link_planted_at_its_temporary_name(tmp_path,
                                                                             monkeypatch):
    import secrets

    from toolkit.safefs import write_atomic

    d = _dir(tmp_path / "reports")
    victim = _file(tmp_path / "victim", 0o644)
    monkeypatch.setattr(secrets, "token_hex", lambda n: "guessed")
    (d / ".last.json.guessed.tmp").symlink_to(victim)
    fd = _open(d)
    try:
        with pytest.raises(OSError):
            write_atomic(fd, str(d), "last.json", b"{}\n", "the report")
    finally:
        os.close(fd)
    assert victim.read_text() == "x\n" and not (d / "last.json").exists()


def test_write_atomic_that_cannot_rename_removes_its_temporary(tmp_path):
    from toolkit.safefs import write_atomic

    d = _dir(tmp_path / "reports")
    _dir(d / "last.json")  # a directory where the file goes: the rename fails
    fd = _open(d)
    try:
        with pytest.raises(IsADirectoryError):
            write_atomic(fd, str(d), "last.json", b"{}\n", "the report")
    finally:
        os.close(fd)
    assert os.listdir(d) == ["last.json"]


def test_write_atomic_and_append_take_one_file_name(tmp_path):
    from toolkit.safefs import append, write_atomic

    d = _dir(tmp_path / "reports")
    fd = _open(d)
    try:
        for write in (write_atomic, append):
            with pytest.raises(errors.InsecureFile) as info:
                write(fd, str(d), "../history.jsonl", b"x", "the report history")
            assert str(info.value) == ("'../history.jsonl': the report history is not a single "
                                       "file name; this is a bug")
    finally:
        os.close(fd)


def test_append_makes_a_0640_file_and_refuses_one_it_must_not_write(tmp_path):
    from fakes import owned_by

    from toolkit.safefs import append

    d = _dir(tmp_path / "reports")
    fd = _open(d)
    try:
        append(fd, str(d), "history.jsonl", b"one\n", "the report history")
        append(fd, str(d), "history.jsonl", b"two\n", "the report history")
        assert (d / "history.jsonl").read_bytes() == b"one\ntwo\n"
        assert (os.stat(d / "history.jsonl").st_mode & 0o777) == 0o640
        view = owned_by(FOREIGN, d / "history.jsonl")
        with pytest.raises(errors.InsecureFile) as info:
            append(fd, str(d), "history.jsonl", b"three\n", "the report history", view=view)
        assert str(info.value).startswith(f"{d}/history.jsonl: the report history is owned by "
                                          f"uid {FOREIGN}")
    finally:
        os.close(fd)
    assert (d / "history.jsonl").read_bytes() == b"one\ntwo\n"
