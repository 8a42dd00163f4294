"""The exit-code table: one class per code, codes unique, the documented table complete."""

from __future__ import annotations

import signal

from toolkit import errors
from toolkit.runners import CommandResult


def test_each_code_belongs_to_one_class():
    seen: dict[int, str] = {}
    for cls in errors._all_error_classes():
        if cls in (errors.Interrupted, errors.ToolkitError):
            continue
        code = cls.exit_code
        assert code not in seen or code == 0, f"{cls.__name__} reuses {code} of {seen.get(code)}"
        seen[code] = cls.__name__
        assert 0 <= code <= 99


# The documented codes, written out by hand (README "Exit codes"): not read back from the
# classes, so a code changed or a class added in errors.py without its row here fails.
DOCUMENTED_CODES = [
    (0, "-"), (0, "NotRunningHere"), (1, "FinishedWithWarnings"), (2, "ToolkitError"),
    (3, "ConfigError"), (4, "UsageError"), (5, "NotRoot"), (6, "InsecureFile"),
    (10, "HostNotInCluster"), (11, "PeerInvalid"), (12, "PeerUnreachable"),
    (13, "HostKeyRejected"), (14, "DomainRunningOnPeer"), (15, "DomainUnknown"),
    (16, "StandbyInvalid"), (17, "NoSnapshotSpace"), (18, "MissingBinary"),
    (19, "LayoutMismatch"), (20, "ParseError"), (21, "GuestLvmUnreadable"),
    (22, "UnsafeName"), (23, "ThinPoolFull"), (24, "StandbyPromoted"), (25, "StatusUnknown"),
    (30, "SnapshotFailed"),
    (31, "SnapshotInvalid"), (32, "MapFailed"), (33, "MountRefused"), (34, "FstabError"),
    (35, "SourceGuardFailed"), (36, "StandbyGuardFailed"), (37, "FilesystemVanished"),
    (38, "PreSnapshotFailed"), (39, "FreezeFailed"),
    (40, "TransferFailed"), (41, "TransferPartial"), (42, "MassDeleteRefused"),
    (43, "PeerFull"), (44, "ConnectionLost"), (45, "RestorePointFailed"),
    (46, "StandbyUnsound"), (47, "StandbyDiffers"), (48, "PromoteRefused"),
    (50, "CommandFailed"),
    (51, "CommandTimedOut"), (60, "TeardownIncomplete"), (75, "LockBusy"),
    ("128+N", "Interrupted"),
]


def test_the_exit_code_table_is_the_documented_list():
    assert [(code, name) for code, name, _summary in errors.exit_code_table()] == DOCUMENTED_CODES
    assert all(summary for _c, _n, summary in errors.exit_code_table())


def test_each_class_raises_with_its_documented_code():
    for code, name in DOCUMENTED_CODES:
        if isinstance(code, int) and name != "-":
            assert getattr(errors, name).exit_code == code, name
    # a refinement keeps its parent's code and is no row of its own
    assert errors.DomainNotDefinedHere.exit_code == 15


def test_not_running_here_is_a_successful_skip():
    assert errors.NotRunningHere.exit_code == 0


def test_signal_exit_codes_are_128_plus_n():
    assert errors.Interrupted(signal.SIGTERM).exit_code == 143
    assert errors.Interrupted(signal.SIGINT).exit_code == 130
    assert errors.Interrupted(signal.SIGHUP).exit_code == 129


def test_command_failed_shows_command_code_and_stderr_tail():
    res = CommandResult("dom0-b", ("lvcreate", "-n", "x y"), 5, "",
                        "line1\nline2\n  Volume group \"vg\" has insufficient free space\n", 0.1)
    err = errors.CommandFailed(res)
    text = str(err)
    assert "[dom0-b]" in text
    assert "lvcreate -n 'x y'" in text
    assert "exited 5" in text
    assert "insufficient free space" in text
    assert err.result is res


def test_multi_domain_run_exits_with_most_severe_code():
    assert errors.most_severe([]) == 0
    assert errors.most_severe([0, 0]) == 0
    assert errors.most_severe([0, 35, 1]) == 35
