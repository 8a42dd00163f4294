"""Pure parts of the sandbox: sweep parsers, what counts as a leftover, archives, the checkout."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from toolkit.errors import ParseError
from toolkit.lab.sandbox import (
    DOM0S,
    LoopDevice,
    checkout_archive,
    checkout_files,
    is_sandbox_pv,
    parse_dmsetup_ls,
    parse_losetup_json,
    sandbox_dm_names,
    ssh_check_argv,
    tar_bytes,
)

DMSETUP_LS = """\
vg_a-web01\t(253:0)
vg_a-web01-real\t(253:2)
vg_a-domubk_20240101_web01_xvda\t(253:4)
vg_a-domubk_20240101_web01_xvda-cow\t(253:3)
domubk-20240101-web01-xvdap1\t(253:5)
vg_b-db01\t(253:1)
other-map\t(253:9)
"""

LOSETUP_JSON = json.dumps({"loopdevices": [
    {"name": "/dev/loop0", "back-file": "/var/lib/domu-lab/dom0-a.pv"},
    {"name": "/dev/loop1", "back-file": "/dom0-b.pv"},
    {"name": "/dev/loop2", "back-file": "/dom0-a.pv (deleted)"},
    {"name": "/dev/loop3", "back-file": "/tmp/guest.img"},
    {"name": "/dev/loop4", "back-file": None},
]})


def test_dmsetup_ls_gives_map_names() -> None:
    assert parse_dmsetup_ls(DMSETUP_LS)[:2] == ["vg_a-web01", "vg_a-web01-real"]
    assert len(parse_dmsetup_ls(DMSETUP_LS)) == 7


def test_dmsetup_ls_without_devices_gives_none() -> None:
    assert parse_dmsetup_ls("No devices found\n") == []
    assert parse_dmsetup_ls("") == []


def test_sweep_takes_the_sandbox_vgs_and_the_tools_maps_only() -> None:
    names = sandbox_dm_names(parse_dmsetup_ls(DMSETUP_LS))
    assert "other-map" not in names
    assert "domubk-20240101-web01-xvdap1" in names
    assert {"vg_a-web01", "vg_a-web01-real", "vg_b-db01"} <= set(names)


def test_a_vg_that_merely_starts_like_ours_is_not_swept() -> None:
    assert sandbox_dm_names(["vg_ab-root", "vg_a2-x", "vg_b-web01"]) == ["vg_b-web01"]


def test_losetup_json_parses_names_and_backing_files() -> None:
    loops = parse_losetup_json(LOSETUP_JSON)
    assert loops[0] == LoopDevice("/dev/loop0", "/var/lib/domu-lab/dom0-a.pv")
    assert loops[4] == LoopDevice("/dev/loop4", "")


def test_losetup_without_loops_prints_nothing_and_means_none() -> None:
    assert parse_losetup_json("") == []


@pytest.mark.parametrize("garbage", ["{", '{"devices": []}', "[1, 2]", "loop0 /x"])
def test_losetup_garbage_is_a_parse_error_not_no_loops(garbage: str) -> None:
    with pytest.raises(ParseError):
        parse_losetup_json(garbage)


def test_sandbox_pvs_are_recognised_however_the_kernel_names_their_file() -> None:
    flags = [is_sandbox_pv(lo) for lo in parse_losetup_json(LOSETUP_JSON)]
    assert flags == [True, True, True, False, False]


def test_each_fake_dom0_has_its_own_vg_pv_file_and_peer() -> None:
    assert [(d.name, d.vg, d.peer) for d in DOM0S] == [("dom0-a", "vg_a", "dom0-b"),
                                                      ("dom0-b", "vg_b", "dom0-a")]
    assert len({d.pv_file for d in DOM0S}) == len({d.volume for d in DOM0S}) == 2


def test_ssh_check_is_strict_and_never_prompts() -> None:
    argv = ssh_check_argv("dom0-b")
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert "UserKnownHostsFile=/etc/domu-backup/known_hosts" in argv
    assert argv[-2:] == ["root@dom0-b", "true"]
    assert not any("no" == a.split("=")[-1] for a in argv if "=" in a)


def test_tar_bytes_writes_root_owned_files_with_their_modes() -> None:
    data = tar_bytes({"/etc/domu-backup/backup.toml": (b"x = 1\n", 0o600),
                      "root/.ssh/authorized_keys": (b"ssh-ed25519 AAAA\n", 0o600)})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"etc/domu-backup/backup.toml", "root/.ssh/authorized_keys"}
        toml = members["etc/domu-backup/backup.toml"]
        assert (toml.mode, toml.uid, toml.gid) == (0o600, 0, 0)
        assert tar.extractfile(toml).read() == b"x = 1\n"


def make_checkout(root: Path) -> Path:
    (root / "toolkit" / "__pycache__").mkdir(parents=True)
    (root / "toolkit" / "__init__.py").write_text("")
    (root / "toolkit" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").write_text("")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    return root


def test_checkout_walk_skips_caches_and_virtualenvs(tmp_path: Path) -> None:
    root = make_checkout(tmp_path / "c")
    names = [p.relative_to(root).as_posix() for p in checkout_files(root)]
    assert names == ["pyproject.toml", "run.sh", "toolkit/__init__.py"]


def test_checkout_in_git_takes_tracked_and_unignored_files(tmp_path: Path) -> None:
    root = make_checkout(tmp_path / "c")
    (root / ".gitignore").write_text("*.log\n")
    (root / "debug.log").write_text("noise")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "pyproject.toml"], check=True)
    names = [p.relative_to(root).as_posix() for p in checkout_files(root)]
    assert "debug.log" not in names
    assert {"pyproject.toml", "run.sh", "toolkit/__init__.py", ".gitignore"} <= set(names)
    assert not any(n.startswith((".venv/", ".git/")) or "__pycache__" in n for n in names)


def test_checkout_archive_puts_files_under_dest_and_keeps_exec_bits(tmp_path: Path) -> None:
    root = make_checkout(tmp_path / "c")
    with tarfile.open(fileobj=io.BytesIO(checkout_archive(root, "/opt/src"))) as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert modes["opt/src/run.sh"] & 0o111
    assert not modes["opt/src/pyproject.toml"] & 0o111
