"""R20: names from guest data are held to their origin's rules; built paths stay below their run
directory, in the plan and again in the executor on both hosts."""

from __future__ import annotations

import dataclasses
import posixpath
import string

import pytest
from fakes import FakeHost, config, web01_facts
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import UnsafeName
from toolkit.execute import Executor
from toolkit.facts.blkid import parse_blkid_export
from toolkit.facts.guestlvm import PvHeader, parse_vg
from toolkit.facts.partitions import parse_sfdisk
from toolkit.names import check_label, check_lvm_name, path_under
from toolkit.plan import plan_backup
from toolkit.report import DomainReport

RUN = "20260101T000000Z-abcd"
PV = PvHeader("PVID", 1 << 30, 1 << 20, 4096, 1 << 20)
ROOT = "/run/domu-backup/src/web01." + RUN

HOSTILE_NAMES = ["../../etc/cron.d/x", "..", ".", "a/b", "-rf", "x\ny", "root;id", "$(id)",
                 "r\u00f6\u00f6t", "a b", "", "/abs", "x" * 128]


def _vg_text(lv_name: str, vg_name: str = "g") -> str:
    lv = (f'{lv_name} {{ id = "L" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1 '
          'segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 '
          'stripes = ["pv0", 0] } }')
    return (f'{vg_name} {{ id = "VGID" extent_size = 8192 physical_volumes {{ pv0 {{ '
            f'id = "PVID" pe_start = 2048 pe_count = 10 }} }} logical_volumes {{ {lv} }} }}')


def test_guest_lv_named_to_climb_out_of_the_run_directory_is_refused_by_the_parser():
    # LVM's metadata syntax takes "/" and "." in a bare name: the guest controls this text.
    with pytest.raises(UnsafeName, match=r"LV name '\.\./\.\./etc/cron\.d/x'"):
        parse_vg(_vg_text("../../etc/cron.d/x"), PV)


@pytest.mark.parametrize("vg", ["..", "a/b", "-x"])
def test_guest_vg_with_a_name_lvm_never_writes_is_refused(vg):
    with pytest.raises(UnsafeName, match="VG name"):
        parse_vg(_vg_text("root", vg), PV)


def test_guest_names_of_lvm_s_own_rules_are_accepted():
    vg = parse_vg(_vg_text("odd.name+x_1-2", "vg-0.x"), PV)
    assert [v.name for v in vg.volumes] == ["odd.name+x_1-2"]


def test_vg_and_lv_names_too_long_for_one_dm_name_are_refused():
    with pytest.raises(UnsafeName, match="together"):
        parse_vg(_vg_text("l" * 70, "v" * 70), PV)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_not_lvm_names(name):
    with pytest.raises(UnsafeName):
        check_lvm_name(name, "guest LV name")


# lvm(8) "VALID NAMES", written out without a regex: letters, digits and "+_.-", not
# starting with "-", not "." or "..", at most 127 characters.
_LVM_CHARS = string.ascii_letters + string.digits + "+_.-"
# The tool's own path components: the same alphabet and the same exclusions.
_FOREIGN = ["/", " ", "\n", "\0", "\u00e9", "$", "\u0430", "\u0661", "*", ":", "\\"]


def _lvm_rule(name: str) -> bool:
    return (0 < len(name) <= 127 and all(c in _LVM_CHARS for c in name)
            and not name.startswith("-") and name not in (".", ".."))


def _insert(text: str, extra: str, at: int) -> str:
    return text[:at] + extra + text[at:]


# LVM-alphabet names, at times with one foreign character or at the length limit: about
# half are valid.
_NEAR_NAMES = st.one_of(
    st.builds(_insert, st.text("aZ09+_.-", max_size=12),
              st.just("") | st.sampled_from(_FOREIGN), st.integers(0, 12)),
    st.sampled_from([".", "..", "...", "-", "-a", "a-", ".a", "+", "_"]),
    st.integers(120, 130).map(lambda n: "v" * n))


@settings(max_examples=150, deadline=None)
@given(_NEAR_NAMES)
def test_a_name_is_an_lvm_name_exactly_when_lvm_s_rule_says_so(name):
    if _lvm_rule(name):
        assert check_lvm_name(name, "lv") == name
    else:
        with pytest.raises(UnsafeName):
            check_lvm_name(name, "lv")


@settings(max_examples=150, deadline=None)
@given(_NEAR_NAMES.filter(_lvm_rule), _NEAR_NAMES.filter(_lvm_rule))
def test_any_accepted_guest_name_gives_a_mount_point_below_the_run_directory(vg, lv):
    path = posixpath.join(ROOT, f"xvda2.{vg}.{lv}")
    assert path_under(ROOT, path) == path
    assert posixpath.dirname(path) == ROOT


def _component_rule(part: str) -> bool:
    return (part != "" and all(c in _LVM_CHARS for c in part) and not part.startswith("-")
            and part not in (".", ".."))


@pytest.mark.parametrize("odd", [None, None, "", ".", "..", "-x", "-", "a b", "a\nb", "...",
                                 "a/", "\u00e9"])
@settings(max_examples=15, deadline=None)
@given(prefix=st.one_of(st.just(ROOT), st.just(ROOT), st.sampled_from(
           [ROOT + "x", ROOT[:-1], posixpath.dirname(ROOT), "/etc", ROOT + "/"])),
       parts=st.lists(st.builds(lambda a, b: a + b, st.sampled_from("aZ09+_"),
                                st.text("aZ09+_.-", max_size=5)), min_size=1, max_size=4),
       at=st.integers(0, 3))
def test_path_under_accepts_exactly_the_plain_names_below_its_root(odd, prefix, parts, at):
    if odd is not None:  # one component not of the tool's making
        parts[at % len(parts)] = odd
    path = prefix + "/" + "/".join(parts)
    if prefix == ROOT and all(_component_rule(p) for p in parts):
        assert path_under(ROOT, path) == path
    else:
        with pytest.raises(UnsafeName):
            path_under(ROOT, path)


@pytest.mark.parametrize("path", [ROOT, ROOT + "/../x", ROOT + "/x/../../y", ROOT + "x",
                                  "/etc/cron.d/x", ROOT + "//x", ROOT + "/x/", ROOT + "/.",
                                  ROOT + "/a\nb", "relative/x"])
def test_paths_outside_or_not_normal_are_refused(path):
    with pytest.raises(UnsafeName):
        path_under(ROOT, path)


def test_labels_with_control_characters_or_too_long_for_their_type_are_refused():
    with pytest.raises(UnsafeName, match="control characters"):
        parse_blkid_export("DEVNAME=x\nTYPE=ext4\nLABEL=root^J/etc\n")
    with pytest.raises(UnsafeName, match="16 bytes"):
        check_label("x" * 17, "ext4", "disk xvda1")
    assert check_label("x" * 16, "ext4", "disk xvda1") == "x" * 16
    assert check_label("a/b ..", "ext4", "disk xvda1") == "a/b .."  # a label is never a path


def test_gpt_partition_name_with_a_newline_is_refused():
    text = ('{"partitiontable": {"label": "gpt", "id": "5EED0001-0000-4000-8000-000000000000",'
            ' "device": "/dev/x", "unit": "sectors", "sectorsize": 512, "partitions": ['
            '{"node": "/dev/x1", "start": 2048, "size": 2048, '
            '"type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4", '
            '"uuid": "5EED0001-0000-4000-8000-000000000001", "name": "root\\nx"}]}}')
    with pytest.raises(UnsafeName, match="partition 1 name"):
        parse_sfdisk(text)


def test_plan_refuses_a_filesystem_name_that_would_leave_the_run_directory(tmp_path):
    facts = web01_facts()
    disk = facts.disks[0]
    fs = dataclasses.replace(disk.filesystems[0], name="../../../etc/cron.d/x")
    target_fs = dataclasses.replace(disk.standby_filesystems[0], name=fs.name)
    disk = dataclasses.replace(disk, filesystems=(fs, *disk.filesystems[1:]),
                               standby_filesystems=(target_fs, *disk.standby_filesystems[1:]))
    facts = dataclasses.replace(facts, disks=(disk,))
    with pytest.raises(UnsafeName, match="mount point"):
        plan_backup(facts, config(tmp_path), RUN)


@pytest.mark.parametrize("host", ["source", "peer"])
@pytest.mark.parametrize("action,target", [
    ("mount", "/etc/cron.d"),
    ("mount", "/run/domu-backup/src/other." + RUN + "/xvda1"),
    ("mkdir", "/etc/cron.d/x"),
])
def test_executor_proves_each_mount_and_directory_before_creating_it(tmp_path, host, action,
                                                                      target):
    cfg = config(tmp_path)
    plan = plan_backup(web01_facts(), cfg, RUN)
    steps = list(plan.steps)
    i = next(n for n, s in enumerate(steps) if s.role == host and s.action == action and s.fs)
    step = steps[i]
    steps[i] = dataclasses.replace(step, argv=(*step.argv[:-1], target), resource=target,
                                   undo=(*step.undo[:-1], target))
    plan = dataclasses.replace(plan, steps=tuple(steps))
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    with pytest.raises(UnsafeName):
        Executor(plan, cfg, src, peer, DomainReport("web01")).run()
    touched = [c for h in (src, peer) for c in h.calls if target in " ".join(c)]
    assert touched == []  # never created, never mounted, on either host
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_guest_vg_and_lv_pair_is_refused_one_character_past_lvms_limit():
    from toolkit.names import LVM_PAIR_MAX, check_lvm_pair

    vg = "v" * 60
    check_lvm_pair(vg, "l" * (LVM_PAIR_MAX - 60), "xvda2")  # exactly the limit: fine
    with pytest.raises(UnsafeName) as raised:
        check_lvm_pair(vg, "l" * (LVM_PAIR_MAX - 59), "xvda2")
    assert str(raised.value) == (f"xvda2: VG and LV names {'v' * 30!r}/{'l' * 30!r} are together "
                                 f"{LVM_PAIR_MAX + 1} characters long (LVM allows {LVM_PAIR_MAX})")
    with pytest.raises(UnsafeName, match="^xvda2: VG name"):
        check_lvm_pair("-bad", "root", "xvda2")
    with pytest.raises(UnsafeName, match="^xvda2: LV name"):
        check_lvm_pair("vg", "-bad", "xvda2")


def test_a_name_lvm_refuses_is_refused_saying_what_lvm_allows():
    with pytest.raises(UnsafeName) as raised:
        check_lvm_name("-rf", "guest LV name")
    assert str(raised.value) == ("guest LV name '-rf' is not a valid LVM name (letters, digits "
                                 "and + _ . - only, not starting with -, not . or ..)")


def test_a_name_longer_than_lvm_allows_is_refused_with_its_length_and_the_limit():
    assert check_lvm_name("x" * 127, "guest LV name") == "x" * 127
    with pytest.raises(UnsafeName) as raised:
        check_lvm_name("x" * 128, "guest LV name")
    assert str(raised.value) == (f"guest LV name {'x' * 40!r}... is 128 characters long "
                                 "(LVM allows 127)")


def test_path_under_says_which_rule_a_path_broke_naming_what_it_is():
    def refusal(path: str, **kw) -> str:
        with pytest.raises(UnsafeName) as info:
            path_under(ROOT, path, **kw)
        return str(info.value)

    assert refusal(ROOT + "/x/") == (
        f"path {ROOT + '/x/'!r} is not a normal absolute path below {ROOT!r}")
    assert refusal("/etc/cron.d/x", what="mount point") == (
        f"mount point '/etc/cron.d/x' lies outside the tool's directory {ROOT!r}")
    assert refusal(ROOT + "/-x") == (
        f"path {ROOT + '/-x'!r}: component '-x' is not a name the tool builds")
    # the filesystem root is a root like any other
    assert path_under("/", "/x") == "/x"
