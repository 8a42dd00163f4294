"""blkid probes, on outputs recorded from filesystems made inside real disk images.

Each partition was probed in place with `blkid -p -O OFFSET -S SIZE IMAGE`;
finding the UUID the recipe gave that partition proves the byte range is right.
"""

from __future__ import annotations

import pytest
from fakes import RECORDED, recorded_result
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from toolkit.errors import CommandFailed, ParseError, UnsafeName
from toolkit.facts import blkid
from toolkit.facts.partitions import partition_table_from_result
from toolkit.runners import CommandResult

ODD_LABEL = "a b$c'd\"e\\f ä"


def probe(name: str) -> blkid.FilesystemProbe:
    return blkid.probe_from_result(recorded_result(f"blkid/{name}"))


def _opt(argv: tuple[str, ...], flag: str) -> int | None:
    return int(argv[argv.index(flag) + 1]) if flag in argv else None


@pytest.mark.parametrize("name", sorted(p.stem for p in (RECORDED / "blkid").glob("*.json")
                                        if p.stem != "bad-offset"))
def test_recordings_were_made_with_the_current_argv_builder(name):
    argv = recorded_result(f"blkid/{name}").argv
    assert list(argv) == blkid.blkid_argv(argv[-1], _opt(argv, "-O"), _opt(argv, "-S"))


def test_argv_is_a_cache_free_low_level_probe():
    assert blkid.blkid_argv("/dev/x") == ["blkid", "-p", "-o", "export", "--", "/dev/x"]
    assert blkid.blkid_argv("-img", 1048576, 512) == [
        "blkid", "-p", "-o", "export", "-O", "1048576", "-S", "512", "--", "-img"]
    for bad in (-1, True, 1.5, "10"):
        with pytest.raises(ValueError):
            blkid.blkid_argv("/dev/x", offset=bad)


@pytest.mark.parametrize("disk, number, name", [
    ("msdos", 1, "msdos-p1"), ("msdos", 2, "msdos-p2"), ("msdos", 3, "msdos-p3"),
    ("msdos", 5, "msdos-p5"), ("msdos", 6, "msdos-p6"), ("msdos", 7, "msdos-p7"),
    ("gpt", 1, "gpt-p1"), ("gpt", 2, "gpt-p2"), ("gpt", 3, "gpt-p3"), ("gpt", 4, "gpt-p4"),
    ("gpt", 5, "gpt-p5-blank"), ("gpt-4k-sectors", 1, "gpt-4k-p1"),
])
def test_each_partition_was_probed_at_the_byte_range_its_table_gives(disk, number, name):
    table = partition_table_from_result(recorded_result(f"sfdisk/{disk}"))
    argv = recorded_result(f"blkid/{name}").argv
    assert (_opt(argv, "-O"), _opt(argv, "-S")) == table.byte_range(number)


@pytest.mark.parametrize("name, fstype, uuid, label, usage, version", [
    ("msdos-p1", "ext4", "3f1c2b9a-5d4e-4c7b-9a8f-0e1d2c3b4a59", "root fs", "filesystem", "1.0"),
    ("msdos-p2", "swap", "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d", "swap0", "other", "1"),
    ("msdos-p5", "ext4", "0d9e8f7a-6b5c-4d3e-a2f1-0a9b8c7d6e5f", ODD_LABEL, "filesystem", "1.0"),
    ("msdos-p6", "vfat", "1A2B-3C4D", "DATA", "filesystem", "FAT16"),
    ("msdos-p7", "LVM2_member", "Gst0PV-a1b2-c3d4-e5f6-g7h8-i9j0-k1l2m3", None, "raid",
     "LVM2 001"),
    ("gpt-p1", "vfat", "5EC0-FFEE", "ESP", "filesystem", "FAT16"),
    ("gpt-p2", "ext4", "c0ffee00-1111-4222-8333-444455556666", "root", "filesystem", "1.0"),
    ("gpt-p3", "swap", "5a5a5a5a-0000-4000-8000-000000000003", None, "other", "1"),
    ("gpt-p4", "xfs", "8c0f6a7e-2b1d-4e3f-9a5c-7d6e5f4a3b2c", "var lib", "filesystem", None),
    ("gpt-4k-p1", "ext4", "4b000000-0000-4000-8000-000000004096", "root4k", "filesystem",
     "1.0"),
    ("notable-ext4", "ext4", "d47a0000-0000-4000-8000-00000000da7a", "data", "filesystem",
     "1.0"),
])
def test_recorded_filesystems(name, fstype, uuid, label, usage, version):
    p = probe(name)
    assert (p.type, p.uuid, p.label, p.usage, p.version) == (fstype, uuid, label, usage, version)
    assert p.partuuid is None and p.pttype is None and p.found


def test_probing_inside_the_image_equals_probing_the_partition_device():
    inside = recorded_result("blkid/msdos-p5")
    own = recorded_result("blkid/msdos-p5-own-device")
    assert own.argv[-1].startswith("/dev/loop") and "-O" not in own.argv
    assert inside.stdout.split("\n")[1:] == own.stdout.split("\n")[1:]  # all but DEVNAME
    assert blkid.probe_from_result(inside) == blkid.probe_from_result(own)


def test_an_extended_partition_probes_as_a_partition_table_not_a_filesystem():
    p = probe("msdos-p3")
    assert p.type is None and p.pttype == "dos" and p.found


def test_whole_disks_report_their_partition_table():
    assert (probe("msdos-disk").pttype, probe("msdos-disk").ptuuid) == ("dos", "1234abcd")
    assert probe("gpt-disk").pttype == "gpt" and probe("gpt-disk").type is None


@pytest.mark.parametrize("name", ["blank", "gpt-p5-blank", "missing-device"])
def test_nothing_found_is_exit_2_without_output(name):
    # missing-device: blkid cannot tell a missing path from a blank one;
    # probe_from_result's docstring tells callers to prove the device exists.
    result = recorded_result(f"blkid/{name}")
    assert result.exit_code == 2
    assert blkid.probe_from_result(result) == blkid.NOTHING
    assert not blkid.NOTHING.found


@pytest.mark.parametrize("name, words", [("ambivalent", "ambivalent"),
                                         ("bad-offset", "invalid offset")])
def test_ambivalent_and_usage_errors_fail(name, words):
    with pytest.raises(CommandFailed, match=words):
        probe(name)


def test_exit_2_with_a_message_or_output_is_not_nothing_found():
    for out, err in (("", "blkid: error: /dev/x: Permission denied\n"), ("TYPE=ext4\n", "")):
        with pytest.raises(CommandFailed):
            blkid.probe_from_result(CommandResult("h", ("blkid",), 2, out, err, 0.0))


def test_partition_entry_uuid_becomes_a_lowercase_partuuid():
    text = "DEVNAME=/dev/xvda2\nTYPE=ext4\nPART_ENTRY_UUID=53B9F43E-5E91-444D-8A05-6480C9C8C30A\n"
    assert blkid.parse_blkid_export(text).partuuid == "53b9f43e-5e91-444d-8a05-6480c9c8c30a"


@pytest.mark.parametrize("text", [
    "", "\n", "TYPE", "type=ext4\n", "TYPE=ext4\nTYPE=xfs\n", "TYPE=ext4\n\nTYPE=xfs\n",
    "DEVNAME=/dev/x\n", "UUID=1234\n", "LABEL=abc\\\nTYPE=ext4\n", "=ext4\n",
    "DEVNAME=/dev/x\nTYPE=ext4\nUSAGE=filesystem\n garbage\n",
    "/dev/x: UUID=\"1\" TYPE=\"ext4\"\n",
])
def test_parse_blkid_export_rejects_garbage(text):
    with pytest.raises(ParseError):
        blkid.parse_blkid_export(text)


def blkid_encode(value: str) -> str:
    """What blkid's safe_print writes for a value in export format (reference for the tests)."""
    out = []
    for byte in value.encode("utf-8"):
        prefix = ""
        if byte >= 128:
            prefix, byte = "M-", byte - 128
        if byte < 32 or byte == 127:
            out.append(f"{prefix}^{chr(byte ^ 0x40)}")
        elif chr(byte) in " \\\"'$`<>":
            out.append(f"{prefix}\\{chr(byte)}")
        else:
            out.append(prefix + chr(byte))
    return "".join(out)


def test_reference_encoder_agrees_with_the_recorded_blkid_output():
    line = next(x for x in recorded_result("blkid/msdos-p5").stdout.splitlines()
                if x.startswith("LABEL="))
    assert line == "LABEL=" + blkid_encode(ODD_LABEL)


@given(st.text(min_size=1, max_size=40))
@example("\u0780")  # byte 0xDE prints as "M-^", so "M-^M-^@" has two readings
@example("a\u0780\u07bf b")
def test_unescape_export_inverts_blkids_encoding(label):
    # A literal "^X" or "M-" is not escaped by blkid, so such labels are ambiguous.
    assume("^" not in label and "M-" not in label)
    assert blkid.unescape_export(blkid_encode(label)) == label


def test_a_literal_m_dash_that_is_not_utf8_stays_as_written():
    assert blkid.unescape_export("M-DISC") == "M-DISC"
    assert blkid.unescape_export("my\\ M-CM-$") == "my ä"


# The label limits of each filesystem's own tools (e2label, xfs_admin, mlabel, mkswap).
_LABEL_BYTES = {"ext4": 16, "ext3": 16, "xfs": 12, "vfat": 11, "swap": 16, "btrfs": 255}
_LABEL_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="^")


@st.composite
def export_documents(draw):
    """One device as `blkid -p -o export` prints it: KEY=value lines, values escaped the way
    blkid's safe_print does (blkid_encode above, checked against a recording)."""
    fstype = draw(st.sampled_from(sorted(_LABEL_BYTES)))
    values = {"TYPE": fstype, "USAGE": draw(st.sampled_from(["filesystem", "other"]))}
    if draw(st.booleans()):
        values["UUID"] = draw(st.uuids()).__str__()
    label = draw(st.text(_LABEL_CHARS, max_size=16))
    while "M-" in label:  # blkid leaves a literal "M-" as it is: ambiguous, left out
        label = label.replace("M-", "M")
    limit = _LABEL_BYTES[fstype]
    if draw(st.booleans()):  # often exactly as long as its filesystem allows, in bytes
        label += "x" * limit
    while len(label.encode()) > limit:
        label = label[:-1]
    if label:
        values["LABEL"] = label
    if draw(st.booleans()):
        values["VERSION"] = draw(st.sampled_from(["1.0", "FAT16", "1"]))
    if draw(st.booleans()):
        values["PART_ENTRY_UUID"] = str(draw(st.uuids())).upper()
    order = draw(st.permutations(sorted(values)))
    devname = draw(st.sampled_from([[], ["DEVNAME=/dev/mapper/x"]]))
    lines = devname + [f"{k}={blkid_encode(values[k])}" for k in order]
    return values, lines


@given(export_documents())
def test_any_export_document_gives_back_each_value_blkid_printed(document):
    values, lines = document
    probe = blkid.parse_blkid_export("\n".join(lines) + "\n")
    assert (probe.type, probe.uuid, probe.label, probe.usage, probe.version) == (
        values["TYPE"], values.get("UUID"), values.get("LABEL"), values["USAGE"],
        values.get("VERSION"))
    assert probe.partuuid == (values["PART_ENTRY_UUID"].lower()
                              if "PART_ENTRY_UUID" in values else None)
    assert probe.found and probe.pttype is None


def _damage(lines: list[str], how: str, at: int) -> type[Exception]:
    """Break one thing in an export document; the error the parser must raise for it."""
    if how == "key twice":
        lines.insert(at, lines[at])
    elif how == "second device":
        lines.insert(at, "")
    elif how == "no equals sign":
        lines.insert(at, "TYPE")
    elif how == "lowercase key":
        lines[at] = lines[at][0].lower() + lines[at][1:]
    elif how == "lone backslash":
        lines[at] += "\\"
    elif how == "no type":
        lines[:] = [x for x in lines if not x.startswith("TYPE=")]
    else:
        lines[:] = [x for x in lines if not x.startswith("LABEL=")]
        lines.insert(at, "LABEL=root^Jetc" if how == "label with a newline" else
                     "LABEL=" + "x" * 256)
        return UnsafeName
    return ParseError


_EXPORT_BREAKS = ["key twice", "second device", "no equals sign", "lowercase key",
                  "lone backslash", "no type", "label with a newline", "label too long"]


@pytest.mark.parametrize("how", _EXPORT_BREAKS)
@settings(max_examples=15)
@given(document=export_documents(), at=st.integers(0, 6))
def test_an_export_document_with_one_thing_wrong_is_refused(how, document, at):
    _values, lines = document
    error = _damage(lines, how, at % len(lines))
    with pytest.raises(error):
        blkid.parse_blkid_export("\n".join(lines) + "\n")


def test_a_hostile_run_of_ambiguous_bytes_is_read_in_one_pass():
    # Each "M-^" has two readings; a value made of them must not take exponential time,
    # and what is read is a UTF-8 text blkid prints exactly so.
    value = "M-^M-^" * 2000
    assert blkid_encode(blkid.unescape_export(value)) == value
    assert blkid.unescape_export(blkid_encode("\u0780" * 500)) == "\u0780" * 500
