"""verify's read-only filesystem checks: the command per type, and what an exit says."""

from __future__ import annotations

import pytest

from toolkit.fscheck import check_argv, verdict


@pytest.mark.parametrize(("fstype", "argv"), [
    ("ext4", ("e2fsck", "-f", "-n", "/dev/mapper/x")),
    ("ext2", ("e2fsck", "-f", "-n", "/dev/mapper/x")),
    ("xfs", ("xfs_repair", "-n", "/dev/mapper/x")),
    ("vfat", ("fsck.fat", "-n", "/dev/mapper/x")),
])
def test_each_check_is_read_only(fstype, argv):
    assert check_argv(fstype, "/dev/mapper/x") == argv
    assert "-n" in argv


def test_a_type_without_a_check_is_not_checked_never_sound():
    assert check_argv("btrfs", "/dev/mapper/x") is None
    v = verdict("btrfs", None)
    assert (v.sound, v.checked) == (False, False)
    assert "no read-only check for btrfs" in v.summary


def test_a_check_runs_only_on_a_device():
    with pytest.raises(ValueError):
        check_argv("ext4", "/run/domu-backup/dst/x")


def test_only_exit_0_is_sound():
    assert verdict("ext4", 0).sound and verdict("xfs", 0).sound and verdict("vfat", 0).sound
    for fstype, code in (("ext4", 4), ("ext4", 8), ("xfs", 1), ("vfat", 1), ("ext4", 1)):
        v = verdict(fstype, code, "line one\nBad magic number\n")
        assert (v.sound, v.checked) == (False, True)
        assert f"exited {code}" in v.summary and v.summary.endswith("Bad magic number")


def test_e2fsck_codes_are_read_as_flags():
    assert "errors left uncorrected, operational error" in verdict("ext4", 12).summary
    assert "never makes" in verdict("ext4", 1).summary
    assert "unknown exit code" in verdict("xfs", 7).summary


def test_a_check_that_did_not_run_is_not_checked():
    v = verdict("ext4", None)
    assert (v.sound, v.checked) == (False, False)
