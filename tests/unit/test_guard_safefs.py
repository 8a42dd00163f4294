"""safefs refusals say what the tool found in place of what it needs (R22, R27)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from toolkit import errors
from toolkit.safefs import check_dir, check_trusted_file


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
