"""promote (R25): it starts the guest from its clean standby on the peer only once the source
says it does not run it, marks the standby promoted first, journals each side effect, and a
killed promote is undone by recover unless it had finished."""

from __future__ import annotations

import json

import pytest
from fakes import FakeHost, config

from toolkit import errors
from toolkit.errors import PeerUnreachable
from toolkit.marker import marker_path
from toolkit.promote import KEPT_SUFFIX, Promote, check_definition, render_promote
from toolkit.recover import recover_journals
from toolkit.standby_xml import definition_path, standby_definition

RUN = "20261207T120000Z-beef"
SOURCE_XML = """<domain type='xen'><name>web01</name><memory>262144</memory>
<os><type>linux</type></os><devices>
<disk type='block' device='disk'><driver name='phy'/><source dev='/dev/vg_a/web01'/>
<target dev='xvda' bus='xen'/></disk>
<disk type='file' device='cdrom'><source file='/srv/iso/install.iso'/>
<target dev='hdc' bus='ide'/><readonly/></disk></devices></domain>"""
CLEAN = {"domain": "web01", "state": "clean", "run_id": "20261206T020000Z-1a2b",
         "source_host": "dom0-a", "updated": 1.0, "last_success": 1.0,
         "last_success_run_id": "20261206T020000Z-1a2b",
         "standby": {"xvda": "/dev/vg_b/web01"}}


class VirshHost(FakeHost):
    """A fake Dom0 whose hypervisor keeps its domains between commands, with cp."""

    def __init__(self, host: str, **kw) -> None:
        super().__init__(host, **kw)
        self.domains: dict[str, str] = {}  # name -> "running" / "shut off"
        self.defined_from: dict[str, str] = {}

    def _cmd_virsh(self, a, input):
        verb, name = a[3], a[-1]
        if verb == "domstate":
            if name not in self.domains:
                return 1, "", f"error: failed to get domain '{name}'\n"
            return 0, self.domains[name] + "\n\n", ""
        if verb == "dumpxml" and name not in self.domains:
            return 1, "", f"error: failed to get domain '{name}'\n"
        if verb == "define":
            self.domains.setdefault("web01", "shut off")
            self.defined_from["web01"] = self.files[name]
            return 0, "Domain 'web01' defined from " + name + "\n", ""
        if verb == "start":
            if name not in self.domains:
                return 1, "", f"error: failed to get domain '{name}'\n"
            self.domains[name] = "running"
            return 0, f"Domain '{name}' started\n", ""
        if verb == "undefine":
            self.domains.pop(name, None)
            return 0, "", ""
        if verb == "destroy":
            self.domains[name] = "shut off"
            return 0, "", ""
        return super()._cmd_virsh(a, input)

    def _cmd_cp(self, a, input):
        src, dst = a[-2], a[-1]
        if src not in self.files:
            return 1, "", f"cp: cannot stat '{src}'\n"
        self.files[dst] = self.files[src]
        return 0, "", ""

    def _cmd_mv(self, a, input):
        src, dst = a[-2], a[-1]
        if src not in self.files:
            return 1, "", f"mv: cannot stat '{src}'\n"
        self.files[dst] = self.files.pop(src)
        return 0, "", ""

    def _cmd_find(self, a, input):
        if len(a) == 4 and a[2:] == ("-maxdepth", "0") and a[1].endswith(KEPT_SUFFIX):
            return (0, a[1] + "\n", "") if a[1] in self.files else (1, "", "No such file\n")
        return super()._cmd_find(a, input)


def setup(tmp_path, *, marker=CLEAN, definition=None, source_state="shut off",
          source_down=False):
    cfg = config(tmp_path)
    peer, source = VirshHost("dom0-b"), VirshHost("dom0-a")
    if source_state:
        source.domains["web01"] = source_state
    # The standby LV: active, not open (the fake's base LVs are the open source LVs).
    peer.lvs["vg_b/web01"] = {"attr": "-wi-a-----", "percent": "", "tags": (), "origin": ""}
    if marker is not None:
        peer.files[marker_path(cfg, "web01")] = json.dumps(marker)
    xml = definition if definition is not None else standby_definition(
        SOURCE_XML, {"xvda": "/dev/vg_b/web01"}).xml
    peer.files[definition_path(cfg.defaults.state_dir, "web01")] = xml

    def source_factory(name):
        assert name == "dom0-a"
        if source_down:
            raise PeerUnreachable("cannot connect to dom0-a:22: No route to host", host=name)
        return source

    job = Promote(cfg, "web01", peer, "dom0-b", source_factory, RUN)
    return cfg, job, peer, source


def test_promote_marks_the_standby_then_defines_and_starts_the_domain(tmp_path):
    cfg, job, peer, _src = setup(tmp_path)
    report, marker, _ = job.read(force=False)
    assert report.source_state == "shut off" and not report.forced
    job.run(report, marker)
    assert peer.domains == {"web01": "running"}
    assert "/dev/vg_b/web01" in peer.defined_from["web01"]
    after = json.loads(peer.files[marker_path(cfg, "web01")])
    assert after["state"] == "promoted" and after["promoted_run_id"] == RUN
    assert after["last_success_run_id"] == CLEAN["last_success_run_id"]
    # The marker was promoted before the domain was defined, the define before the start.
    calls = peer.calls
    marked = max(i for i, c in enumerate(calls) if c[:2] == ("sh", "-c")
                 and c[-1] == marker_path(cfg, "web01"))
    defined = next(i for i, c in enumerate(calls) if c[:1] == ("virsh",) and c[3] == "define")
    started = next(i for i, c in enumerate(calls) if c[:1] == ("virsh",) and c[3] == "start")
    assert marked < defined < started
    assert marker_path(cfg, "web01") + KEPT_SUFFIX not in peer.files
    assert not [p for p in peer.files if "/journal/" in p]
    assert "runs on dom0-b from its standby" in render_promote(report)


def test_a_source_that_runs_the_domain_refuses_and_nothing_changes(tmp_path):
    cfg, job, peer, _src = setup(tmp_path, source_state="running")
    before = dict(peer.files)
    with pytest.raises(errors.PromoteRefused, match="running on dom0-a: promoting would run"):
        job.read(force=True)  # --force never overrides a source that answers
    assert peer.files == before and peer.domains == {}


def test_an_unreachable_source_refuses_unless_forced(tmp_path):
    _cfg, job, peer, _src = setup(tmp_path, source_down=True)
    with pytest.raises(errors.PromoteRefused, match="If dom0-a is down, promote with --force"):
        job.read(force=False)
    report, marker, _ = job.read(force=True)
    assert report.forced and report.source_state == "unreachable"
    job.run(report, marker)
    assert peer.domains == {"web01": "running"}


@pytest.mark.parametrize(("marker", "words"), [
    ({**CLEAN, "state": "dirty"}, "is dirty: its last copy did not finish"),
    ({**CLEAN, "state": "promoted"}, "already promoted"),
    ({**CLEAN, "source_host": "dom0-b"}, "source_host 'dom0-b' is not another Dom0"),
    ({**CLEAN, "source_host": "elsewhere"}, "is not another Dom0"),
    (None, "cannot read the standby marker"),
])
def test_a_standby_that_is_not_clean_and_backed_up_refuses(tmp_path, marker, words):
    _cfg, job, peer, _src = setup(tmp_path, marker=marker)
    with pytest.raises(errors.PromoteRefused, match=words):
        job.read(force=False)
    assert peer.domains == {}


def test_without_a_stored_definition_it_refuses(tmp_path):
    cfg, job, peer, _src = setup(tmp_path)
    del peer.files[definition_path(cfg.defaults.state_dir, "web01")]
    with pytest.raises(errors.PromoteRefused, match="no standby definition"):
        job.read(force=False)


ALLOWED = {"xvda": "/dev/vg_b/web01"}


@pytest.mark.parametrize(("xml", "words"), [
    (SOURCE_XML, "disk xvda is block dev=/dev/vg_a/web01, not its standby LV /dev/vg_b/web01"),
    (SOURCE_XML.replace("<name>web01", "<name>db01"), "names the domain 'db01'"),
    (standby_definition(SOURCE_XML, ALLOWED).xml.replace(
        "</devices>", "<disk type='file' device='disk'><source file='/etc/shadow'/>"
                      "<target dev='xvdb' bus='xen'/></disk></devices>"),
     "disk xvdb is file file=/etc/shadow"),
    (standby_definition(SOURCE_XML, ALLOWED).xml.replace(
        "<name>", "<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
                  "<qemu:arg value='-x'/></qemu:commandline><name>"),
     "namespace http://libvirt.org/schemas/domain/qemu/1.0 is not accepted"),
    ("<domain><name>web01</name><devices><disk", "not a domain definition"),
])
def test_a_definition_that_is_not_the_standbys_is_refused(xml, words):
    with pytest.raises(errors.PromoteRefused, match=words):
        check_definition(xml, "web01", ALLOWED, "/state/standby/web01.xml")


def test_the_rewritten_definition_passes_and_keeps_the_cdrom_empty():
    check_definition(standby_definition(SOURCE_XML, ALLOWED).xml, "web01", ALLOWED, "x")


def test_an_open_standby_lv_refuses(tmp_path):
    _cfg, job, peer, _src = setup(tmp_path)
    peer.lvs["vg_b/web01"]["attr"] = "-wi-ao----"  # a backup or verify has it open
    with pytest.raises(errors.PromoteRefused, match="is open"):
        job.read(force=False)
    assert peer.domains == {}


def test_it_runs_only_on_the_standbys_host(tmp_path):
    cfg, _job, peer, source = setup(tmp_path)
    job = Promote(cfg, "web01", source, "dom0-a", lambda n: peer, RUN)
    with pytest.raises(errors.PromoteRefused, match="is on dom0-b, not on this host"):
        job.read(force=False)


def _killed_at(tmp_path, verb):
    """A promote whose ``virsh VERB`` never returns (SIGKILL): its journal is left."""
    cfg, job, peer, _src = setup(tmp_path)
    report, marker, _ = job.read(force=False)

    class Killed(BaseException):
        pass

    real = peer._cmd_virsh

    def virsh(a, input):
        out = real(a, input)
        if a[3] == verb:
            raise Killed
        return out
    peer._cmd_virsh = virsh
    job._undo = lambda *a: None  # SIGKILL: no Python runs after it, no undo either
    with pytest.raises(Killed):
        job.run(report, marker)
    peer._cmd_virsh = real
    return cfg, peer


@pytest.mark.parametrize("verb", ["define", "start"])
def test_a_failed_define_or_start_undoes_the_promote_at_once(tmp_path, verb):
    cfg, job, peer, _src = setup(tmp_path)
    report, marker, _ = job.read(force=False)
    real = peer._cmd_virsh

    def virsh(a, input):
        if a[3] == verb:
            if verb == "define":  # libvirt refuses the definition
                return 1, "", "error: XML error: bad disk\n"
            real(a, input)
            peer.domains["web01"] = "shut off"  # started, then crashed at once
            return 1, "", "error: internal error: guest crashed\n"
        return real(a, input)
    peer._cmd_virsh = virsh
    with pytest.raises(errors.PromoteRefused, match="failed"):
        job.run(report, marker)
    assert peer.domains == {}
    assert json.loads(peer.files[marker_path(cfg, "web01")]) == CLEAN
    assert marker_path(cfg, "web01") + KEPT_SUFFIX not in peer.files
    assert not [p for p in peer.files if "/journal/" in p]
    assert not report.done


def test_recover_undoes_a_promote_killed_before_the_domain_ran(tmp_path):
    cfg, peer = _killed_at(tmp_path, "define")  # defined, then killed
    assert json.loads(peer.files[marker_path(cfg, "web01")])["state"] == "promoted"
    errors_: list[str] = []
    done = recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, errors_)
    assert errors_ == []
    assert peer.domains == {}  # undefined
    assert json.loads(peer.files[marker_path(cfg, "web01")]) == CLEAN  # as it was
    assert marker_path(cfg, "web01") + KEPT_SUFFIX not in peer.files
    assert not [p for p in peer.files if "/journal/" in p]
    assert len(done) == 2
    # Twice is once.
    assert recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, []) == []


def test_recover_keeps_a_promote_killed_after_the_domain_started(tmp_path):
    cfg, peer = _killed_at(tmp_path, "start")
    assert peer.domains == {"web01": "running"}
    errors_: list[str] = []
    done = recover_journals(peer, cfg.defaults.state_dir, "web01", lambda m: None, errors_)
    assert errors_ == [] and done and "kept the finished promote" in done[0]
    assert peer.domains == {"web01": "running"}
    assert json.loads(peer.files[marker_path(cfg, "web01")])["state"] == "promoted"
    assert marker_path(cfg, "web01") + KEPT_SUFFIX not in peer.files
    assert not [p for p in peer.files if "/journal/" in p]


@pytest.mark.parametrize(("undo", "exists"), [
    (("virsh", "-c", "test:///x", "start", "--", "web01"),
     ("virsh", "-c", "test:///x", "domstate", "--", "web01")),
    (("virsh", "-c", "test:///x", "undefine", "--", "web01"), ("virsh", "list")),
    (("mv", "-f", "--", "/etc/passwd.before-promote", "/etc/passwd"),
     ("find", "/etc/passwd.before-promote", "-maxdepth", "0")),
    (("mv", "-f", "--", "/s/standby/a.json.before-promote", "/s/standby/b.json"),
     ("find", "/s/standby/a.json.before-promote", "-maxdepth", "0")),
])
def test_recover_runs_no_other_virsh_or_mv_than_promotes(undo, exists):
    from toolkit.recover import _unexpected_undo

    assert _unexpected_undo(undo, exists) != ""


@pytest.mark.parametrize(("undo", "exists", "domain"), [
    # another hypervisor than the config's
    (("virsh", "-c", "qemu+ssh://elsewhere/system", "undefine", "--", "web01"),
     ("virsh", "-c", "qemu+ssh://elsewhere/system", "domstate", "--", "web01"), "web01"),
    # another domain than the journal's
    (("virsh", "-c", "test:///x", "destroy", "--", "db01"),
     ("virsh", "-c", "test:///x", "domstate", "--", "db01"), "web01"),
    # a marker outside the state directory, or another domain's
    (("mv", "-f", "--", "/srv/standby/web01.json.before-promote", "/srv/standby/web01.json"),
     ("find", "/srv/standby/web01.json.before-promote", "-maxdepth", "0"), "web01"),
    (("mv", "-f", "--", "/s/standby/db01.json.before-promote", "/s/standby/db01.json"),
     ("find", "/s/standby/db01.json.before-promote", "-maxdepth", "0"), "web01"),
])
def test_recover_runs_promotes_undo_only_for_its_own_hypervisor_domain_and_state_dir(
        undo, exists, domain):
    from toolkit.recover import _unexpected_undo

    assert _unexpected_undo(undo, exists, state_dir="/s", uri="test:///x", domain=domain) != ""


def test_promotes_own_undo_passes_the_context_checks():
    from toolkit.recover import _unexpected_undo

    ctx = {"state_dir": "/s", "uri": "test:///x", "domain": "web01"}
    assert _unexpected_undo(("virsh", "-c", "test:///x", "undefine", "--", "web01"),
                            ("virsh", "-c", "test:///x", "domstate", "--", "web01"), **ctx) == ""
    assert _unexpected_undo(("mv", "-f", "--", "/s/standby/web01.json.before-promote",
                             "/s/standby/web01.json"),
                            ("find", "/s/standby/web01.json.before-promote", "-maxdepth", "0"),
                            **ctx) == ""
