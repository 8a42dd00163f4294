"""Guest fstab parsing and resolution against filesystems probed on recorded disk images."""

from __future__ import annotations

import re

import pytest
from fakes import RECORDED, recorded_result
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import FstabError
from toolkit.facts import fstab
from toolkit.facts.blkid import FilesystemProbe, probe_from_result
from toolkit.facts.fstab import GuestFilesystem, parse_fstab, resolve_fstab
from toolkit.facts.partitions import partition_table_from_result

ODD_LABEL = "a b$c'd\"e\\f ä"


def guest_disk(disk: str, probes: dict[int, str], target: str = "xvda") -> list[GuestFilesystem]:
    """The filesystems of a recorded disk, as the backup assembles them: probe plus table."""
    table = partition_table_from_result(recorded_result(f"sfdisk/{disk}"))
    out = []
    for number, name in probes.items():
        probe = probe_from_result(recorded_result(f"blkid/{name}"))
        probe = FilesystemProbe(**{**probe.__dict__, "partuuid": table.partuuid(number)})
        out.append(GuestFilesystem(f"{target}{number}", target, fstab.target_index(target),
                                   number, probe, table.partition(number).name))
    return out


GPT_DISK = {1: "gpt-p1", 2: "gpt-p2", 3: "gpt-p3", 4: "gpt-p4", 5: "gpt-p5-blank"}
MSDOS_DISK = {1: "msdos-p1", 2: "msdos-p2", 5: "msdos-p5", 6: "msdos-p6", 7: "msdos-p7"}


def fs(name: str, *, uuid: str | None = None, label: str | None = None, fstype: str = "ext4",
       index: int = 0, partition: int | None = 1) -> GuestFilesystem:
    probe = FilesystemProbe(fstype, uuid, label, "filesystem", None, None)
    return GuestFilesystem(name, "xvda", index, partition, probe)


def test_debian_installer_fstab_on_the_recorded_gpt_disk():
    text = (RECORDED / "fstab" / "debian-installer-handwritten.fstab").read_text()
    entries, ignored = parse_fstab(text)
    assert [(e.kind, e.path) for e in entries] == [("uuid", "/"), ("uuid", "/boot/efi"),
                                                   ("uuid", "/var/lib")]
    assert ignored == [(18, "swap"), (19, "removable media")]
    assert resolve_fstab(entries, guest_disk("gpt", GPT_DISK)) == {
        "xvda2": "/", "xvda1": "/boot/efi", "xvda4": "/var/lib"}


def test_classic_xen_fstab_on_the_recorded_msdos_disk():
    text = (RECORDED / "fstab" / "xen-classic-handwritten.fstab").read_text()
    entries, ignored = parse_fstab(text)
    assert [(e.line, e.kind, e.value, e.path, e.optional) for e in entries] == [
        (3, "device", "/dev/xvda1", "/", False),
        (5, "label", ODD_LABEL, "/srv/my data", False),
        (6, "partuuid", "1234abcd-06", "/srv/fat", False),
        (7, "uuid", "0D9E8F7A-0000-4D3E-A2F1-0A9B8C7D6E5F", "/home", True),
        (8, "label", "backup", "/var/data", True),
        (9, "device", "/dev/xvdb1", "/mnt/usb", True),
    ]
    assert dict(ignored) == {
        4: "swap", 10: "pseudo filesystem (proc)", 11: "pseudo filesystem (sysfs)",
        12: "pseudo filesystem (devpts)", 13: "pseudo filesystem (tmpfs)",
        14: "network or FUSE filesystem (nfs4)", 15: "network or FUSE filesystem (cifs)",
        16: "network or FUSE filesystem (fuse.sshfs)", 17: "bind mount",
        18: "loop-mounted image file"}
    # optional entries naming nothing we have are left out, not errors
    assert resolve_fstab(entries, guest_disk("msdos", MSDOS_DISK)) == {
        "xvda1": "/", "xvda5": "/srv/my data", "xvda6": "/srv/fat"}


def test_disk_device_names_map_by_index_and_partition():
    entries, _ = parse_fstab("/dev/sda1 / ext4 defaults\n/dev/vdb /data xfs defaults\n"
                             "/dev/hdaa3 /old ext4 defaults\n")
    filesystems = [fs("xvda1"), fs("xvdb", fstype="xfs", index=1, partition=None),
                   fs("xvdaa3", index=26, partition=3), fs("xvdb1", index=1, partition=1)]
    assert resolve_fstab(entries, filesystems) == {"xvda1": "/", "xvdb": "/data",
                                                   "xvdaa3": "/old"}


def test_by_directories_and_quoted_tags():
    text = ("/dev/disk/by-uuid/ABCD-0001 / ext4 defaults\n"
            "/dev/disk/by-label/my\\x20data /data ext4 defaults\n"
            "/dev/disk/by-partlabel/var /var ext4 defaults\n"
            'LABEL="home vol" /home ext4 defaults\n')
    entries, _ = parse_fstab(text.replace(" vol", "\\040vol"))
    filesystems = [fs("xvda1", uuid="abcd-0001"), fs("xvda2", label="my data", partition=2),
                   GuestFilesystem("xvda3", "xvda", 0, 3,
                                   FilesystemProbe("ext4", None, None, None, None, None), "var"),
                   fs("xvda4", label="home vol", partition=4)]
    assert resolve_fstab(entries, filesystems) == {
        "xvda1": "/", "xvda2": "/data", "xvda3": "/var", "xvda4": "/home"}


def test_overrides_win_over_the_fstab():
    entries, _ = parse_fstab("UUID=1 / ext4 defaults\nUUID=2 /srv ext4 defaults\n")
    filesystems = [fs("xvda1", uuid="1"), fs("xvda2", uuid="2", partition=2),
                   fs("xvdb", uuid="3", index=1, partition=None)]
    assert resolve_fstab(entries, filesystems, {"xvda2": "/var//www/"}) == {
        "xvda2": "/var/www", "xvda1": "/"}
    # an override that claims a path takes it from the fstab entry
    assert resolve_fstab(entries, filesystems, {"xvdb": "/srv"}) == {"xvdb": "/srv",
                                                                     "xvda1": "/"}


@pytest.mark.parametrize("overrides, words", [
    ({"xvdz9": "/x"}, "no such filesystem"),
    ({"xvda1": "relative"}, "not absolute"),
    ({"xvda1": "/a/../etc"}, "'..'"),
    ({"xvda1": "/a", "xvda2": "/a/"}, "one path"),
])
def test_bad_overrides_are_refused(overrides, words):
    entries, _ = parse_fstab("UUID=1 / ext4 defaults\n")
    with pytest.raises(FstabError, match=re.escape(words)):
        resolve_fstab(entries, [fs("xvda1", uuid="1"), fs("xvda2", partition=2)], overrides)


@pytest.mark.parametrize("text, words", [
    ("UUID=1 / ext4 d\nUUID=2 / ext4 d\n", "both mount on /"),
    ("UUID=1 / ext4 d\nLABEL=root /srv ext4 d\n", "both name"),
    ("UUID=1 / ext4 d\nUUID=9 /srv ext4 d\n", "names no filesystem"),
    ("UUID=1 / xfs d\n", "a ext4 filesystem"),
    ("/dev/mapper/vg0-root / ext4 d\n", "names no filesystem"),
    ("LABEL=twin / ext4 d\n", "matches several"),
    ("", "no filesystem to mount"),
])
def test_fstab_resolution_errors(text, words):
    entries, _ = parse_fstab(text)
    filesystems = [fs("xvda1", uuid="1", label="root"), fs("xvda2", uuid="2", partition=2),
                   fs("xvdb", label="twin", index=1, partition=None),
                   fs("xvdc", label="twin", index=2, partition=None)]
    with pytest.raises(FstabError, match=re.escape(words)):
        resolve_fstab(entries, filesystems)


def test_an_unresolved_entry_lists_what_was_found_and_what_was_asked():
    entries, _ = parse_fstab("\n\nLABEL=nope /var ext4 defaults\n")
    with pytest.raises(FstabError) as exc:
        resolve_fstab(entries, guest_disk("gpt", GPT_DISK))
    message = str(exc.value)
    assert "line 3: LABEL=nope on /var" in message
    assert "xvda2 ext4 UUID=c0ffee00-1111-4222-8333-444455556666 LABEL=root" in message
    assert "xvda4 xfs UUID=8c0f6a7e-2b1d-4e3f-9a5c-7d6e5f4a3b2c LABEL=var lib" in message
    assert "xvda5 (no filesystem)" in message


def test_ext_family_and_auto_types_are_compatible():
    entries, _ = parse_fstab("UUID=1 / ext3 d\nUUID=2 /b auto d\nUUID=3 /c msdos d\n")
    filesystems = [fs("xvda1", uuid="1"), fs("xvda2", uuid="2", fstype="xfs", partition=2),
                   fs("xvda3", uuid="3", fstype="vfat", partition=3)]
    assert resolve_fstab(entries, filesystems) == {"xvda1": "/", "xvda2": "/b", "xvda3": "/c"}


@pytest.mark.parametrize("line, words", [
    ("UUID=1 relative ext4 defaults", "not absolute"),
    ("UUID=1 /srv/../etc ext4 defaults", "'..'"),
    ("UUID=1 /srv/a\\011b ext4 defaults", "control character"),
    ("UUID=1 /srv/a\\012b ext4 defaults", "control character"),
    ("UUID=1 /srv/\x1b[0m ext4 defaults", "control character"),
    ("UUID=1 /", "3 to 6 fields"),
    ("UUID=1 / ext4 defaults 0 1 extra", "3 to 6 fields"),
    ("ID=abc / ext4 defaults", "unsupported source tag"),
    ("UUID= / ext4 defaults", "empty UUID"),
    ("rootfs / ext4 defaults", "neither a tag"),
    ("/srv/image / ext4 defaults", "neither a tag"),
])
def test_unreadable_lines_and_unsafe_paths_are_errors_naming_the_line(line, words):
    with pytest.raises(FstabError, match=re.escape(words)) as exc:
        parse_fstab(f"# header\n{line}\n")
    assert "fstab line 2" in str(exc.value)


def test_ignored_lines_need_no_safe_path():
    entries, ignored = parse_fstab("tmpfs ../x tmpfs defaults\nnone none swap sw\n"
                                   "/dev/cdrom /media/cd auto ro,noauto\n"
                                   "UUID=1 /a none bind\nUUID=2 /b none defaults\n")
    assert entries == []
    assert [r for _, r in ignored] == ["pseudo filesystem (tmpfs)", "swap", "removable media",
                                       "bind mount", "no filesystem type (none)"]


def test_octal_escapes_and_crlf():
    (entry,), _ = parse_fstab("LABEL=my\\040root\t/srv/a\\040b\\134c\text4\tdefaults\r\n")
    assert (entry.value, entry.path) == ("my root", "/srv/a b\\c")


def test_target_index():
    assert [fstab.target_index(t) for t in ("xvda", "sdb", "vdz", "hdaa", "xvdab")] == [
        0, 1, 25, 26, 27]
    with pytest.raises(ValueError):
        fstab.target_index("nvme0n1")


def test_guest_position_of_disks_partitions_and_partition_named_disks():
    assert fstab.guest_position("xvdb", 3) == (1, 3)
    assert fstab.guest_position("xvda", None) == (0, None)
    # A Xen PV guest given its LV as xvda1: the whole disk is the guest's /dev/xvda1.
    assert fstab.guest_position("xvda1", None) == (0, 1)
    assert fstab.guest_position("sdc12", None) == (2, 12)
    # No /dev name of the guest can mean these: nothing matches them by device name.
    assert fstab.guest_position("nvme0n1", None) == (-1, None)
    assert fstab.guest_position("xvda1", 2) == (-1, 2)


def test_fstab_device_name_resolves_a_partition_named_whole_disk():
    ext4 = FilesystemProbe("ext4", "5eed0012-0000-4000-8000-000000000001", "whole01-root",
                           "filesystem", None, "1.0")
    whole = GuestFilesystem("xvda1", "xvda1", *fstab.guest_position("xvda1", None), ext4)
    data = GuestFilesystem("xvdb", "xvdb", *fstab.guest_position("xvdb", None),
                           FilesystemProbe("ext4", "5eed0012-0000-4000-8000-000000000002", None,
                                           "filesystem", None, "1.0"))
    entries, _ = parse_fstab("/dev/xvda1 / ext4 defaults 0 1\n/dev/xvdb /srv ext4 defaults 0 2\n")
    assert resolve_fstab(entries, [whole, data]) == {"xvda1": "/", "xvdb": "/srv"}
    entries, _ = parse_fstab("/dev/xvda / ext4 defaults 0 1\n")
    with pytest.raises(FstabError, match="names no filesystem"):
        resolve_fstab(entries, [whole])


# A guest fstab generated line by line from fstab(5): every example parses, and what each
# line must give is written down as the line is made.
_NAME = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\"'"),
                min_size=1, max_size=8).filter(lambda p: p not in (".", ".."))


def _octal(text: str) -> str:
    """fstab(5): a space, tab or backslash in a field is written as \\ooo."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


@st.composite
def kept_lines(draw):
    """A line the backup mounts: (the line, (kind, value, path, optional))."""
    uuid = str(draw(st.uuids()))
    label = draw(_NAME)
    kind, value, spec = draw(st.sampled_from([
        ("uuid", uuid, f"UUID={uuid}"), ("uuid", uuid, f'UUID="{uuid}"'),
        ("uuid", uuid, f"/dev/disk/by-uuid/{uuid}"),
        ("label", label, "LABEL=" + _octal(label)),
        ("label", label, 'LABEL="' + _octal(label) + '"'),
        ("partuuid", uuid, f"PARTUUID={uuid}"), ("partlabel", label, "PARTLABEL=" + _octal(label)),
        ("device", "/dev/xvda1", "/dev/xvda1"), ("device", "/dev/sdb", "/dev/sdb"),
        ("device", "/dev/mapper/vg0-root", "/dev/mapper/vg0-root")]))
    parts = draw(st.lists(_NAME, max_size=3))
    path = "/" + "/".join(parts)
    written = draw(st.sampled_from(["{}", "{}/", "/{}", "{}/."])).format(path).replace("//", "/")
    options = draw(st.lists(st.sampled_from(["defaults", "noauto", "nofail", "ro", "noatime",
                                             "errors=remount-ro", "x-systemd.automount"]),
                            min_size=1, max_size=3))
    fields = [spec, _octal(written), draw(st.sampled_from(["ext4", "xfs", "vfat", "auto"])),
              ",".join(options), *draw(st.sampled_from([[], ["0"], ["0", "2"]]))]
    if draw(st.booleans()) and len(fields) == 4 and options == ["defaults"]:
        fields = fields[:3]  # the options field may be left out too
    sep = draw(st.sampled_from([" ", "\t", "  ", " \t "]))
    optional = "noauto" in options or "nofail" in options
    return sep.join(fields), (kind, value, path, optional)


_IGNORED = [("none none swap sw 0 0", "swap"), ("/dev/xvda2 none swap sw", "swap"),
            ("proc /proc proc defaults 0 0", "pseudo filesystem (proc)"),
            ("tmpfs /tmp tmpfs nosuid 0 0", "pseudo filesystem (tmpfs)"),
            ("host:/export /mnt/nfs nfs4 ro 0 0", "network or FUSE filesystem (nfs4)"),
            ("/srv/a /srv/b none bind 0 0", "bind mount"),
            ("/dev/cdrom /media/cd auto ro,noauto", "removable media"),
            ("/srv/disk.img /mnt/img ext4 loop", "loop-mounted image file"),
            ("UUID=1 /x none defaults", "no filesystem type (none)")]


@st.composite
def fstabs(draw):
    """(text, expected entries, expected ignored lines) of a whole fstab."""
    text, entries, ignored = [], [], []
    for number in range(1, draw(st.integers(1, 8)) + 1):
        what = draw(st.sampled_from(["kept", "kept", "kept", "ignored", "comment", "blank"]))
        if what == "kept":
            line, expected = draw(kept_lines())
            entries.append((number, *expected))
        elif what == "ignored":
            line, reason = draw(st.sampled_from(_IGNORED))
            ignored.append((number, reason))
        else:
            line = "  # " + draw(_NAME) if what == "comment" else draw(st.sampled_from(["", " "]))
        text.append(line)
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    return eol.join(text) + eol, entries, ignored


@given(fstabs())
def test_any_fstab_gives_each_line_its_entry_or_its_reason(generated):
    text, expected, expected_ignored = generated
    entries, ignored = parse_fstab(text)
    assert [(e.line, e.kind, e.value, e.path, e.optional) for e in entries] == expected
    assert ignored == expected_ignored


_FSTAB_BREAKS = {
    "relative path": lambda f: [f[0], f[1].lstrip("/") or "x", *f[2:]],
    "dot-dot": lambda f: [f[0], f[1].rstrip("/") + "/../etc", *f[2:]],
    "tab in the path": lambda f: [f[0], f[1] + "\\011x", *f[2:]],
    "newline in the path": lambda f: [f[0], f[1] + "\\012x", *f[2:]],
    "two fields": lambda f: f[:2],
    "seven fields": lambda f: [*f, *["0"] * (7 - len(f))],
    "unknown tag": lambda f: ["ID=abc", *f[1:]],
    "empty uuid": lambda f: ["UUID=", *f[1:]],
    "neither tag nor device": lambda f: ["rootfs", *f[1:]],
}


@pytest.mark.parametrize("how", sorted(_FSTAB_BREAKS))
@settings(max_examples=12)
@given(generated=fstabs().filter(lambda g: g[1]), at=st.integers(0, 7))
def test_one_unreadable_line_is_an_error_naming_that_line(how, generated, at):
    text, expected, _ignored = generated
    lines = text.splitlines()
    number = expected[at % len(expected)][0]
    fields = lines[number - 1].split()
    lines[number - 1] = " ".join(_FSTAB_BREAKS[how](fields))
    with pytest.raises(FstabError, match=f"fstab line {number}: "):
        parse_fstab("\n".join(lines) + "\n")


def _escape(path: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
                        min_size=1, max_size=10).filter(lambda p: "/" not in p),
                min_size=1, max_size=4))
def test_any_printable_path_survives_octal_escaping(parts):
    path = "/" + "/".join(parts)
    try:
        (entry,), _ = parse_fstab(f"UUID=1 {_escape(path)} ext4 defaults 0 2\n")
    except FstabError as exc:
        assert ".." in parts or any(ord(c) == 127 for c in path), exc
        return
    assert entry.path == "/" + "/".join(p for p in parts if p != ".")
