"""The lab audit's probe of a mapped partition (no lab needed: blkid's answers are given)."""

from __future__ import annotations

import pytest

from toolkit.errors import CommandFailed, ParseError
from toolkit.lab.audit import _probe
from toolkit.runners import CommandResult

# blkid -p -o export on a kpartx map of a gpt BIOS boot partition: its table entry only.
BIOS_BOOT = """\
DEVNAME=/dev/mapper/vg_a-gpt01a1
PART_ENTRY_SCHEME=gpt
PART_ENTRY_NAME=BIOS\\ boot\\ partition
PART_ENTRY_UUID=5eed0011-0000-4000-8000-0000000000a1
PART_ENTRY_TYPE=21686148-6449-6e6f-744e-656564454649
PART_ENTRY_NUMBER=1
PART_ENTRY_OFFSET=2048
PART_ENTRY_SIZE=2048
PART_ENTRY_DISK=253:7
"""

ESP = """\
DEVNAME=/dev/mapper/vg_a-gpt01a2
UUID=5EED-0B01
LABEL=GPT01-ESP
VERSION=FAT32
TYPE=vfat
USAGE=filesystem
PART_ENTRY_SCHEME=gpt
PART_ENTRY_UUID=5eed0011-0000-4000-8000-0000000000a2
PART_ENTRY_NUMBER=2
"""


class Answers:
    host = "dom0-a"

    def __init__(self, code: int, out: str, err: str = "") -> None:
        self.code, self.out, self.err = code, out, err

    def run(self, argv, *, check=True, timeout=None, **_kw) -> CommandResult:
        assert argv[0] == "blkid"
        return CommandResult(self.host, tuple(argv), self.code, self.out, self.err, 0.0)


def test_a_partition_holding_only_its_table_entry_has_no_filesystem() -> None:
    probe = _probe(Answers(0, BIOS_BOOT), "/dev/mapper/vg_a-gpt01a1")
    assert probe.type is None and probe.uuid is None


def test_a_filesystem_on_a_partition_map_is_still_found() -> None:
    probe = _probe(Answers(0, ESP), "/dev/mapper/vg_a-gpt01a2")
    assert (probe.type, probe.uuid, probe.label) == ("vfat", "5EED-0B01", "GPT01-ESP")


def test_nothing_found_and_real_errors_keep_their_meaning() -> None:
    assert _probe(Answers(2, ""), "/dev/x").type is None
    with pytest.raises(CommandFailed):
        _probe(Answers(4, "", "blkid: error"), "/dev/x")
    with pytest.raises(ParseError):
        _probe(Answers(0, "DEVNAME=/dev/x\nSEC_TYPE=msdos\n"), "/dev/x")


# --- audit_standby: what it compared -------------------------------------------------

class _Rsync:
    host = "dom0-a"

    def run(self, argv, *, check=True, timeout=None, **_kw) -> CommandResult:
        assert argv[0] == "rsync"
        return CommandResult(self.host, tuple(argv), 0, "", "", 0.0)


def _audit(monkeypatch, src: dict, dst: dict):
    import contextlib

    from toolkit.lab import audit as audit_mod
    from toolkit.rsync import SshOptions

    trees = iter([src, dst])

    @contextlib.contextmanager
    def mounted(*_a, **_k):
        yield next(trees)

    monkeypatch.setattr(audit_mod, "mounted", mounted)
    monkeypatch.setattr(audit_mod, "audit_boot_area", lambda *a: None)
    return audit_mod.audit_standby(_Rsync(), _Rsync(), "/dev/vg_a/web01", "/dev/vg_b/web01",
                                   "root@dom0-b", SshOptions(key="/k", known_hosts="/kh"))


def test_an_audit_that_mounted_nothing_reports_a_difference(monkeypatch) -> None:
    found = _audit(monkeypatch, {}, {})
    assert [(x.name, x.differences) for x in found] == [
        ("(none)", ("the audit compared no filesystem: none mounted from /dev/vg_a/web01",))]


def test_a_filesystem_on_one_side_only_is_a_difference(monkeypatch) -> None:
    found = _audit(monkeypatch, {"1": ("/a/1", "ext4")},
                   {"1": ("/b/1", "ext4"), "2": ("/b/2", "ext4")})
    assert {x.name: x.differences for x in found} == {"1": (), "2": ("not on the source",)}
