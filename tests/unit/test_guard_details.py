"""The guards' refusals say exactly what is wrong and where, and the fakes under them are strict.

Proves, through whole runs on fake Dom0s:

- every mount guard error (findmnt unreadable, not a mountpoint, another filesystem type,
  the planned device gone, mounted from another device, with or without a device number)
  and the empty-source refusal is its role's error, names its host (the source "dom0-a",
  the peer "dom0-b") and says its whole message;
- a step whose command names another path than its resource is refused naming both; a
  mount point's mkdir moved into another run's directory is refused as a "mkdir target"
  on either host (only the run directory itself is proven against the host's prefix);
- a guest fstab that is a symlink is refused naming the host and saying why;
- the fake readlink answers as GNU readlink does: an unknown option refuses, ``--`` ends
  the options, each operand gets a line of its own; so a misspelt readlink command line
  in the product loses the guest fstab and the run fails;
- a failing ``dmsetup mknodes`` is not an error in itself: the node's own probe decides
  (the run goes on when udev made the node late, and stops as MapFailed naming the udev
  hint when nobody did).
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from fakes import FakeHost, NoDeviceHost, config, symlink_guest_fstab, web01_facts, web01_run

from toolkit import errors
from toolkit.execute import Executor
from toolkit.plan import plan_backup
from toolkit.report import DomainReport

RUN = "20260101T000000Z-abcd"
OTHER_RUN = "20260102T000000Z-ffff"
HOSTS = {"source": "dom0-a", "peer": "dom0-b"}
GUARD = {"source": errors.SourceGuardFailed, "peer": errors.StandbyGuardFailed}


def _run(tmp_path, src, peer, plan=None):
    """Run web01's backup (or ``plan``) from ``src`` to ``peer``; the error it raised."""
    with pytest.raises(errors.ToolkitError) as info:
        web01_run(tmp_path, src, peer, plan=plan).ex.run()
    return info.value


def _hosts(side: str, odd: FakeHost) -> tuple[FakeHost, FakeHost]:
    """(source, peer) with ``odd`` playing ``side``; the source holds the guest fstab."""
    src, peer = (odd, FakeHost("dom0-b")) if side == "source" else (FakeHost("dom0-a"), odd)
    src.fstab_on = "xvda1"
    return src, peer


def _xvda1(tmp_path, side: str) -> tuple[str, str]:
    """(mount point, planned device) of web01's xvda1 on ``side``."""
    f = next(f for f in plan_backup(web01_facts(), config(tmp_path), RUN).filesystems
             if f.name == "xvda1")
    return (f.source_mount, f.source_device) if side == "source" else (f.standby_mount,
                                                                       f.standby_device)


def _nothing_copied_nothing_left(src: FakeHost, peer: FakeHost) -> None:
    assert not any("rsync" in c for c in src.calls)
    assert src.leftovers() == [] and peer.leftovers() == []


def _assert_guard(exc: errors.ToolkitError, side: str, message: str) -> None:
    assert type(exc) is GUARD[side], repr(exc)
    assert exc.host == HOSTS[side]
    assert str(exc) == f"[{HOSTS[side]}] {message}"


# -- R7/R8: each mount guard error, whole, with its host ----------------------------------

class _Xvda1Host(FakeHost):
    """A host that notes, when the guard asks findmnt about xvda1's mount, what is mounted
    there (device as given, "major:minor") and each device's number then."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.seen: tuple[str, str, str] | None = None
        self.numbers: dict[str, str] = {}

    def _cmd_findmnt(self, a, input):
        if "--mountpoint" in a and a[a.index("--mountpoint") + 1].endswith("/xvda1"):
            mnt = a[a.index("--mountpoint") + 1]
            self.seen = self.mounts.get(mnt)
            self.numbers = dict(self.devices)
        return super()._cmd_findmnt(a, input)

    def number(self, device: str) -> str:
        """The number ``device`` (a /dev/mapper node) had when the guard asked."""
        return self.numbers[device.removeprefix("/dev/mapper/")]


class UnreadableFindmntHost(FakeHost):
    """findmnt of xvda1's mount exits 0 with JSON that has no "filesystems"."""

    def _cmd_findmnt(self, a, input):
        if "--mountpoint" in a and a[a.index("--mountpoint") + 1].endswith("/xvda1"):
            return 0, '{"other": []}', ""
        return super()._cmd_findmnt(a, input)


class OtherTypeHost(FakeHost):
    """The mount of xvda1 holds vfat (the device is the planned one)."""

    def _cmd_mount(self, a, input):
        code, out, err = super()._cmd_mount(a, input)
        if code == 0 and a[-1].endswith("/xvda1"):
            dev, _, majmin = self.mounts[a[-1]]
            self.mounts[a[-1]] = (dev, "vfat", majmin)
        return code, out, err


class WrongDeviceHost(_Xvda1Host):
    """The mount of the p1 map mounts the p5 map instead (a stale or renamed node)."""

    def _answer(self, a, input):
        if a[0] == "mount" and a[-2].endswith("p1"):
            a = (*a[:-2], a[-2].removesuffix("p1") + "p5", a[-1])
        return super()._answer(a, input)


class NoNumberHost(_Xvda1Host):
    """findmnt reports xvda1's mount without its MAJ:MIN (the key left out)."""

    def _cmd_findmnt(self, a, input):
        code, out, err = super()._cmd_findmnt(a, input)
        if code == 0 and "--mountpoint" in a and a[a.index("--mountpoint") + 1].endswith(
                "/xvda1"):
            doc = json.loads(out)
            for row in doc["filesystems"]:
                row.pop("maj:min", None)
            out = json.dumps(doc)
        return code, out, err


@pytest.mark.parametrize("side", ["source", "peer"])
def test_unreadable_findmnt_output_is_the_guard_error_of_its_host_whole(tmp_path, side):
    odd = UnreadableFindmntHost(HOSTS[side])
    src, peer = _hosts(side, odd)
    mnt, _ = _xvda1(tmp_path, side)
    _assert_guard(_run(tmp_path, src, peer), side,
                  f"cannot read findmnt output for {mnt}: findmnt: JSON has no "
                  "'filesystems' list")
    _nothing_copied_nothing_left(src, peer)


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_mount_that_did_not_happen_is_the_guard_error_of_its_host_whole(tmp_path, side):
    odd = FakeHost(HOSTS[side], silent_mount=True)
    src, peer = _hosts(side, odd)
    mnt, dev = _xvda1(tmp_path, side)
    _assert_guard(_run(tmp_path, src, peer), side,
                  f"{mnt} is not a mountpoint: the mount of {dev} did not happen; nothing "
                  "was copied")
    _nothing_copied_nothing_left(src, peer)


@pytest.mark.parametrize("side", ["source", "peer"])
def test_another_filesystem_type_is_the_guard_error_of_its_host_whole(tmp_path, side):
    src, peer = _hosts(side, OtherTypeHost(HOSTS[side]))
    mnt, _ = _xvda1(tmp_path, side)
    _assert_guard(_run(tmp_path, src, peer), side, f"{mnt} holds vfat, expected ext4")
    _nothing_copied_nothing_left(src, peer)


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_planned_device_that_is_gone_is_the_guard_error_of_its_host_whole(tmp_path, side):
    src, peer = _hosts(side, NoDeviceHost(HOSTS[side]))
    _, dev = _xvda1(tmp_path, side)
    _assert_guard(_run(tmp_path, src, peer), side, f"expected device {dev} does not exist")
    _nothing_copied_nothing_left(src, peer)


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_mount_of_another_device_is_the_guard_error_of_its_host_naming_both(tmp_path, side):
    odd = WrongDeviceHost(HOSTS[side])
    src, peer = _hosts(side, odd)
    mnt, dev = _xvda1(tmp_path, side)
    exc = _run(tmp_path, src, peer)
    assert odd.seen is not None
    mounted, _, majmin = odd.seen
    assert mounted == dev.removesuffix("p1") + "p5" and majmin != odd.number(dev)
    _assert_guard(exc, side, f"{mnt} is mounted from {mounted} ({majmin}), not from {dev} "
                             f"({odd.number(dev)})")
    _nothing_copied_nothing_left(src, peer)


@pytest.mark.parametrize("side", ["source", "peer"])
def test_a_mount_findmnt_gives_no_device_number_is_refused_saying_so(tmp_path, side):
    # Without MAJ:MIN the mount cannot be proven to be the planned device: refused, and the
    # message says the number is missing rather than printing an empty pair of brackets.
    odd = NoNumberHost(HOSTS[side])
    src, peer = _hosts(side, odd)
    mnt, dev = _xvda1(tmp_path, side)
    exc = _run(tmp_path, src, peer)
    assert odd.seen is not None and odd.seen[0] == dev
    _assert_guard(exc, side, f"{mnt} is mounted from {dev} (no device number), not from "
                             f"{dev} ({odd.number(dev)})")
    _nothing_copied_nothing_left(src, peer)


class EmptySourceHost(FakeHost):
    """A source whose xvda1 holds nothing (besides lost+found)."""

    def _cmd_find(self, a, input):
        if "-xdev" in a and a[1].endswith("/xvda1"):
            return 0, "", ""
        return super()._cmd_find(a, input)


def test_an_empty_source_is_refused_naming_its_host_and_the_standby(tmp_path):
    src, peer = _hosts("source", EmptySourceHost("dom0-a"))
    mnt, _ = _xvda1(tmp_path, "source")
    _assert_guard(_run(tmp_path, src, peer), "source",
                  f"{mnt} (xvda1) is empty: refusing to mirror an empty source onto the "
                  "standby")
    _nothing_copied_nothing_left(src, peer)


# -- R20: a step makes its own resource, below its own run directory ----------------------

def _tampered(tmp_path, host: str, action: str, fs: str, *, argv: str | None = None,
              path: str | None = None):
    """web01's plan with the ``action`` step of ``fs`` on ``host`` aimed elsewhere: only its
    command's path (``argv``), or its command, resource and undo (``path``)."""
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    steps = list(plan.steps)
    i = next(n for n, s in enumerate(steps) if s.role == host and s.action == action
             and s.resource.endswith("/" + fs))
    step = steps[i]
    if argv is not None:
        steps[i] = dataclasses.replace(step, argv=(*step.argv[:-1], argv))
    else:
        assert path is not None
        steps[i] = dataclasses.replace(step, argv=(*step.argv[:-1], path), resource=path,
                                       undo=(*step.undo[:-1], path))
    return dataclasses.replace(plan, steps=tuple(steps)), step


@pytest.mark.parametrize("host", ["source", "peer"])
@pytest.mark.parametrize("action", ["mkdir", "mount"])
def test_a_step_whose_command_names_another_path_is_refused_naming_both(tmp_path, host,
                                                                        action):
    plan, step = _tampered(tmp_path, host, action, "xvda1", argv="/etc/cron.d")
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    exc = _run(tmp_path, src, peer, plan)
    assert type(exc) is errors.UnsafeName
    assert exc.host == HOSTS[host]
    assert str(exc) == (f"[{HOSTS[host]}] {action} '/etc/cron.d' is not the step's own "
                        f"resource {step.resource!r}")
    assert not any("/etc/cron.d" in c for h in (src, peer) for c in h.calls)
    _nothing_copied_nothing_left(src, peer)


@pytest.mark.parametrize("host", ["source", "peer"])
def test_a_mount_points_mkdir_in_another_runs_directory_is_refused(tmp_path, host):
    # Only the run directory itself is proven against the host's prefix; a mount point is
    # proven against this run's directory, so one moved into another run's directory
    # (still under the prefix) is refused before it is made.
    prefix = "/run/domu-backup/src" if host == "source" else "/run/domu-backup/dst"
    cfg = config(tmp_path)
    assert prefix == (cfg.defaults.source_prefix if host == "source"
                      else cfg.defaults.peer_prefix)
    target = f"{prefix}/web01.{OTHER_RUN}/xvda1"
    plan, _ = _tampered(tmp_path, host, "mkdir", "xvda1", path=target)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    exc = _run(tmp_path, src, peer, plan)
    assert type(exc) is errors.UnsafeName
    assert re.search(rf"mkdir target {re.escape(repr(target))} lies outside the tool's "
                     rf"directory {re.escape(repr(f'{prefix}/web01.{RUN}'))}$", str(exc)), exc
    assert not any(target in " ".join(c) for h in (src, peer) for c in h.calls)
    assert not any(OTHER_RUN in d for h in (src, peer) for d in (*h.dirs, *h.base_dirs))
    _nothing_copied_nothing_left(src, peer)


# -- R5: the guest's fstab is read, never through a guest symlink ------------------------

def test_a_symlinked_guest_fstab_is_refused_naming_the_source_and_why(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    symlink_guest_fstab(src)
    mnt, _ = _xvda1(tmp_path, "source")
    exc = _run(tmp_path, src, peer)
    assert type(exc) is errors.FstabError
    assert exc.host == "dom0-a"
    assert str(exc) == (f"[dom0-a] {mnt}/etc/fstab on xvda1 is a symlink (to '/etc/shadow'); "
                        "refusing to follow guest symlinks")
    assert not any(c[0] == "cat" and "/etc/shadow" in c for c in src.calls)
    _nothing_copied_nothing_left(src, peer)


@pytest.mark.parametrize(("link", "to", "said"), [
    ("etc/fstab", "/etc/shadow", "/etc/shadow"),  # a host file: readlink -e finds it...
    ("etc", "/", "/fstab"),  # ...or one the host lacks: readlink -m tells it from "none"
    ("etc", "../../../../../../etc", "/etc/fstab"),  # relative, climbing out of the mount
], ids=["fstab-to-host-file", "etc-to-root", "etc-climbing-out"])
def test_a_guest_symlink_on_the_way_to_fstab_is_refused_saying_where_it_leads(tmp_path, link,
                                                                              to, said):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda5"  # a real fstab elsewhere: the symlink is not "no fstab here"
    src.files["/etc/shadow"] = "root:*:1::::::\n"
    mnt, _ = _xvda1(tmp_path, "source")
    src.symlinks[f"{mnt}/{link}"] = to
    exc = _run(tmp_path, src, peer)
    assert type(exc) is errors.FstabError and exc.host == "dom0-a"
    assert str(exc) == (f"[dom0-a] {mnt}/etc/fstab on xvda1 is a symlink (to {said!r}); "
                        "refusing to follow guest symlinks")
    assert not any(c[0] == "cat" and not c[-1].startswith(mnt.rsplit("/", 1)[0])
                   for c in src.calls)
    _nothing_copied_nothing_left(src, peer)


def test_the_guest_fstab_is_found_on_its_filesystem_and_the_others_have_none(tmp_path):
    # readlink -e finds it on xvda5; on xvda1 and xvda6 it is missing (readlink -m prints
    # the path itself), which is no error: the run copies everything.
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda5"
    cfg = config(tmp_path)
    report = DomainReport("web01")
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    reads = [c for c in src.calls if c[0] in ("readlink", "cat")]
    assert [c[-1].rsplit("/", 3)[-3] for c in reads if c[0] == "cat"] == ["xvda5"]
    assert src.leftovers() == [] and peer.leftovers() == []


# -- the fake readlink is GNU readlink --------------------------------------------------

FSTAB = f"/run/domu-backup/src/web01.{RUN}/xvda1/etc/fstab"


def _readlink(host: FakeHost, *args: str) -> tuple[int, str, str]:
    res = host.run(("readlink", *args), check=False)
    return res.exit_code, res.stdout, res.stderr


def _with_fstab() -> FakeHost:
    host = FakeHost("dom0-a")
    host.fstab_on = "xvda1"
    host.base_dirs.update({"/run", "/run/domu-backup", "/run/domu-backup/src"})
    host.dirs.update({f"/run/domu-backup/src/web01.{RUN}",
                      f"/run/domu-backup/src/web01.{RUN}/xvda1"})
    return host


def test_fake_readlink_canonicalises_as_the_tool_asks():
    host = _with_fstab()
    assert _readlink(host, "-e", "--", FSTAB) == (0, FSTAB + "\n", "")
    assert _readlink(host, "-m", "--", FSTAB) == (0, FSTAB + "\n", "")
    missing = FSTAB.replace("xvda1", "xvda5")
    assert _readlink(host, "-e", "--", missing) == (1, "", "")  # silent unless -v
    assert _readlink(host, "-v", "-e", "--", missing) == (
        1, "", f"readlink: {missing}: No such file or directory\n")
    assert _readlink(host, "-m", "--", missing) == (0, missing + "\n", "")
    assert _readlink(host, "-f", "--", missing) == (1, "", "")  # its etc is missing too
    assert _readlink(host, "--canonicalize-existing", FSTAB) == (0, FSTAB + "\n", "")
    assert _readlink(host, "-en", FSTAB) == (0, FSTAB, "")  # bundled, no newline
    assert _readlink(host, "-m", "-e", FSTAB, missing) == (1, FSTAB + "\n", "")  # last wins


@pytest.mark.parametrize(("option", "said"), [
    ("-E", "invalid option -- 'E'"),
    ("-eE", "invalid option -- 'E'"),
    ("--canonicalise", "unrecognized option '--canonicalise'"),
])
def test_fake_readlink_refuses_an_option_it_does_not_have(option, said):
    host = _with_fstab()
    assert _readlink(host, option, "--", FSTAB) == (
        1, "", f"readlink: {said}\nTry 'readlink --help' for more information.\n")


def test_fake_readlink_takes_a_word_not_starting_with_a_dash_as_an_operand():
    # "XX-eXX" is a (relative) name, not the option -e: without -e/-f/-m readlink only
    # reads symlinks, and neither operand is one.
    host = _with_fstab()
    assert _readlink(host, "XX-eXX", "--", FSTAB) == (1, "", "")
    assert _readlink(host, "-m", "XX-eXX") == (0, "/root/XX-eXX\n", "")
    host.symlinks["/root/XX-eXX"] = "../etc/fstab"
    assert _readlink(host, "XX-eXX", "--", FSTAB) == (1, "../etc/fstab\n", "")


def test_fake_readlink_ends_options_at_double_dash_and_answers_each_operand_on_a_line():
    host = _with_fstab()
    # "XX--XX" is an operand of its own (a missing relative name), before the path
    assert _readlink(host, "-e", "XX--XX", FSTAB) == (1, FSTAB + "\n", "")
    assert _readlink(host, "-m", "XX--XX", FSTAB) == (0, f"/root/XX--XX\n{FSTAB}\n", "")
    assert _readlink(host, "-m", "--", "-E", "--") == (0, "/root/-E\n/root/--\n", "")
    assert _readlink(host, "-ez", FSTAB, FSTAB) == (0, f"{FSTAB}\0{FSTAB}\0", "")
    assert _readlink(host, "-e") == (
        1, "", "readlink: missing operand\nTry 'readlink --help' for more information.\n")


def test_fake_readlink_follows_the_symlinks_it_is_given():
    host = _with_fstab()
    mnt = FSTAB.removesuffix("/etc/fstab")
    host.symlinks[f"{mnt}/etc"] = "/"
    assert _readlink(host, "-e", "--", FSTAB) == (1, "", "")  # the host has no /fstab
    assert _readlink(host, "-m", "--", FSTAB) == (0, "/fstab\n", "")
    assert _readlink(host, f"{mnt}/etc") == (0, "/\n", "")
    host.symlinks[f"{mnt}/etc"] = "etc2"
    host.symlinks[f"{mnt}/etc2"] = "etc"
    assert _readlink(host, "-m", "--", FSTAB) == (1, "", "")  # a loop: ELOOP


# -- a map's /dev/mapper node: made by udev, or by `dmsetup mknodes`, and proven ----------

class NoUdevHost(FakeHost):
    """A peer where a new map has no /dev/mapper node at first and `dmsetup mknodes` exits 1;
    with ``late_udev`` udev makes the node meanwhile all the same."""

    def __init__(self, host: str, late_udev: bool) -> None:
        super().__init__(host)
        self.late_nodes = True
        self.late_udev = late_udev
        self.mknodes: list[tuple[str, ...]] = []

    def _cmd_dmsetup(self, a, input):
        if a[1] != "mknodes":
            return super()._cmd_dmsetup(a, input)
        self.mknodes.append(a)
        if self.late_udev:
            self.no_node -= set(a[2:3])
        name = a[2] if len(a) > 2 else ""
        return 1, "", (f"device-mapper: /dev/mapper/{name}: mknod for {name} failed: File "
                       "exists\nCommand failed.\n")


def _alias(tmp_path) -> str:
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    return next(s.resource for s in plan.steps if s.role == "peer" and s.action == "alias")


def test_a_failing_mknodes_is_no_error_when_the_node_is_there_after_all(tmp_path):
    # udev was late: `dmsetup mknodes` fails (the node appeared under it), and the probe
    # that follows finds the block device: the run goes on and copies everything.
    src, peer = FakeHost("dom0-a"), NoUdevHost("dom0-b", late_udev=True)
    src.fstab_on = "xvda1"
    cfg = config(tmp_path)
    report = DomainReport("web01")
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    alias = _alias(tmp_path)
    assert peer.mknodes == [("dmsetup", "mknodes", alias.rsplit("/", 1)[1])]
    assert [f.outcome for f in report.filesystems] == ["copied"] * 3
    assert not report.error and src.leftovers() == [] and peer.leftovers() == []


def test_a_failing_mknodes_and_no_node_stops_the_run_as_a_map_failure_naming_udev(tmp_path):
    src, peer = FakeHost("dom0-a"), NoUdevHost("dom0-b", late_udev=False)
    src.fstab_on = "xvda1"
    alias = _alias(tmp_path)
    name = alias.rsplit("/", 1)[1]
    exc = _run(tmp_path, src, peer)
    assert type(exc) is errors.MapFailed and exc.host == "dom0-b"
    assert str(exc) == (f"[dom0-b] {alias} is not a block device after `dmsetup create "
                        f"{name}` (is udev running and able to create /dev/mapper nodes?)")
    assert peer.mknodes == [("dmsetup", "mknodes", name)]
    assert not any(c[0] in ("kpartx", "mount", "dd") for c in peer.calls)
    _nothing_copied_nothing_left(src, peer)
