"""Pure parts of the sandbox: sweep parsers, what counts as a leftover, archives, the checkout."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from toolkit.config import load_config
from toolkit.errors import ParseError
from toolkit.facts.virsh import parse_domain_disks
from toolkit.lab.guests import load_domain, parse_size
from toolkit.lab.rehearse import GUESTS, LAYOUTS, guest_disks
from toolkit.lab.sandbox import (
    DOM0S,
    LEAK_PROBES,
    PV_SIZE,
    RUNS_ON,
    LoopDevice,
    checkout_archive,
    checkout_files,
    guest_domains,
    is_sandbox_pv,
    leaks_from,
    lv_name,
    map_owner,
    parse_dmsetup_ls,
    parse_losetup_json,
    parse_probe_output,
    parse_virsh_list,
    probe_script,
    sandbox_dm_names,
    sandbox_volumes,
    ssh_check_argv,
    tar_bytes,
)

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "fixtures" / "sandbox"
VG = {d.name: d.vg for d in DOM0S}
PEER = {d.name: d.peer for d in DOM0S}

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


# -- the guest domains: recipes, LVs, node XML, config and the rehearsal's tables agree ----

def test_every_disk_of_every_domain_has_an_lv_sized_from_its_recipe() -> None:
    volumes = dict(sandbox_volumes(ROOT))
    assert len(volumes) == len(sandbox_volumes(ROOT))  # no name twice
    assert volumes["web01"] == 256 << 20 and volumes["db01"] == 64 << 20
    assert volumes["multi01-xvda"] == 128 << 20 and volumes["multi01-xvdb"] == 96 << 20
    assert "multi01" not in volumes
    expected = {lv_name(dom, disk.device): disk.size for dom in guest_domains(ROOT)
                for disk in dom.disks}
    assert volumes == expected
    assert {dom.name for dom in guest_domains(ROOT)} == set(RUNS_ON)


def test_the_pv_holds_every_lv_and_the_snapshots_of_any_one_run() -> None:
    snapshot = 64 << 20  # backup.toml's snapshot_size, per disk
    most_disks = max(len(dom.disks) for dom in guest_domains(ROOT))
    extent = 4 << 20
    need = sum(-(-size // extent) * extent for _name, size in sandbox_volumes(ROOT))
    need += most_disks * snapshot + extent  # and LVM's metadata area
    assert need <= parse_size(PV_SIZE)


def test_the_config_snapshot_size_is_the_one_the_pv_was_sized_for() -> None:
    cfg = load_config(SANDBOX / "backup.toml", check_permissions=False)
    assert cfg.defaults.snapshot_size.lvcreate_args() == ["-L", "64M"]


def _node_domains(letter: str) -> dict[str, tuple[str, list]]:
    """Domain name -> (test:runstate, disks) of one node XML."""
    from lxml import etree

    ns = {"test": "http://libvirt.org/schemas/domain/test/1.0"}
    tree = etree.parse(str(SANDBOX / f"node-{letter}.xml"))
    out = {}
    for dom in tree.iter("domain"):
        state = dom.findtext("test:runstate", namespaces=ns)
        xml = etree.tostring(dom, encoding="unicode")
        out[dom.findtext("name")] = (state, parse_domain_disks(xml))
    return out


@pytest.mark.parametrize("dom0", DOM0S, ids=lambda d: d.name)
def test_node_xml_defines_every_domain_running_where_it_runs(dom0) -> None:
    nodes = _node_domains(dom0.letter)
    assert set(nodes) == set(RUNS_ON)
    for dom in guest_domains(ROOT):
        state, disks = nodes[dom.name]
        assert state == ("1" if RUNS_ON[dom.name] == dom0.name else "5"), dom.name
        assert [(d.target, d.source, d.backed_up) for d in disks] == [
            (disk.device, f"/dev/{dom0.vg}/{lv_name(dom, disk.device)}", True)
            for disk in dom.disks], dom.name


def test_config_sends_each_domain_to_the_other_host_by_disk() -> None:
    cfg = load_config(SANDBOX / "backup.toml", check_permissions=False)
    for dom in guest_domains(ROOT):
        domain_cfg = cfg.domain(dom.name)
        peer = PEER[RUNS_ON[dom.name]]
        assert domain_cfg.peer == peer
        assert {t: d.standby_lv for t, d in domain_cfg.disks.items()} == {
            disk.device: f"/dev/{VG[peer]}/{lv_name(dom, disk.device)}" for disk in dom.disks}


def test_rehearsal_tables_name_the_sandbox_lvs_of_each_disk() -> None:
    assert {g.domain for g in GUESTS} == {"web01", "db01"}
    assert set(LAYOUTS) | {"web01", "db01"} == set(RUNS_ON)
    assert not set(LAYOUTS) & {g.domain for g in GUESTS}
    for dom in guest_domains(ROOT):
        disks = guest_disks(dom.name)
        assert [g.device for g in disks] == [d.device for d in dom.disks]
        for g in disks:
            lv = lv_name(dom, g.device)
            assert (g.source, g.peer) == (RUNS_ON[dom.name], PEER[RUNS_ON[dom.name]])
            assert g.source_lv == f"/dev/{VG[g.source]}/{lv}"
            assert g.standby_lv == f"/dev/{VG[g.peer]}/{lv}"
            assert load_domain(ROOT / "fixtures" / "guests" / f"{g.recipe}.toml").name == dom.name
    images = [img for dom in RUNS_ON for g in guest_disks(dom)
              for img in (g.source_image, g.standby_image)]
    assert len(set(images)) == len(images)
    with pytest.raises(KeyError):
        guest_disks("nosuch01")


def test_virsh_list_gives_each_domains_state() -> None:
    text = (" Id   Name      State\n--------------------------\n 1    web01     running\n"
            " -    db01      shut off\n\n")
    assert parse_virsh_list(text) == {"web01": "running", "db01": "shut off"}
    assert parse_virsh_list("") == {}


RUN = "20261127T183004Z-c917"
FAKE_PROBES = {
    # the kernel is shared: dom0-b's standby alias of web01 and its partition map show here
    "dmsetup": (f"vg_a-web01\t(254:0)\nvg_a-domubk--{RUN}--web01--xvda\t(254:5)\n"
                f"domubk-{RUN}-web01-xvda\t(254:6)\ndomubk-{RUN}-web01-xvdap1\t(254:7)\n"
                f"domubk-{RUN}-web01-src-0123456789abcdef\t(254:8)\n"
                f"domubk-{RUN}-ghost-xvda\t(254:9)\n"
                # a test's own partition maps of an LV, left behind; an origin's -real part
                "vg_a-web01d1\t(254:10)\nvg_a-web01-real\t(254:11)\nvg_b-db01d1\t(254:12)\n"),
    "lvs": f"  vg_a|web01|\n  vg_a|domubk-{RUN}-web01-xvda|domubk,domubk-run\n",
    "findmnt": (f"/dev/vda1 /\n/dev/vda1 /etc/hosts\n"
                "/dev/vda[/var/lib/docker/volumes/domubk-lab-dom0-a/_data] /var/lib/domu-lab\n"
                f"/dev/mapper/vg_a-domubk--{RUN}--web01--xvdap1 "
                f"/run/domu-backup/src/web01.{RUN}/xvda1\n"
                f"/dev/mapper/vg_a-domubk--{RUN}--web01--xvdap2 /mnt/elsewhere\n"),
    "losetup": json.dumps({"loopdevices": [
        {"name": "/dev/loop0", "back-file": DOM0S[0].pv_file},
        {"name": "/dev/loop3", "back-file": "/tmp/stray.img"}]}),
    "lslocks": "/run/lock/domu-backup/web01.lock\n/run/other.lock\n",
    "find": (f"/run/domu-backup/src/web01.{RUN}\n"
             f"/var/lib/domu-backup/journal/web01.{RUN}.jsonl\n"),
    "ps": ("    1 /usr/bin/tini -- /usr/local/sbin/domu-lab-entrypoint\n"
           "   40 /usr/sbin/sshd -D\n"
           "  812 /usr/bin/python3 /usr/local/bin/domu-backup backup --domu web01\n"
           f"  901 setpriv --pdeathsig KILL -- rsync -aHAXSx /run/domu-backup/src/web01.{RUN}/\n"
           "  955 sh -c echo '@@domubk-probe dm'; dmsetup ls; domu-backup backup\n"
           "  960 less /var/log/domu-backup-notes\n"),
}


def fake_bin(tmp_path: Path, outputs: dict[str, str], failing: str = "") -> dict[str, str]:
    """A PATH of fake probe commands printing recorded-style outputs."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in outputs.items():
        script = bindir / name
        (tmp_path / f"{name}.out").write_text(text)
        code = 3 if name == failing else 0
        script.write_text(f"#!/bin/sh\ncat '{tmp_path / f'{name}.out'}'\nexit {code}\n")
        script.chmod(0o755)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}


def test_leak_probes_run_in_one_script_and_name_every_leftover(tmp_path: Path) -> None:
    out = subprocess.run(["sh", "-c", probe_script(LEAK_PROBES)],
                         env=fake_bin(tmp_path, FAKE_PROBES), capture_output=True, text=True,
                         check=True).stdout
    sections = parse_probe_output(out, LEAK_PROBES)
    assert sections["mounts"].splitlines()[0] == "/dev/vda1 /"
    assert leaks_from(sections, host="dom0-a") == [
        f"dm map vg_a-domubk--{RUN}--web01--xvda",
        f"dm map domubk-{RUN}-web01-src-0123456789abcdef",
        f"dm map domubk-{RUN}-ghost-xvda",  # no fake Dom0 runs "ghost": both report it
        "dm map vg_a-web01d1 (not an LV)",
        f"LV vg_a/domubk-{RUN}-web01-xvda",
        f"mount /run/domu-backup/src/web01.{RUN}/xvda1 "
        f"(/dev/mapper/vg_a-domubk--{RUN}--web01--xvdap1)",
        f"mount /mnt/elsewhere (/dev/mapper/vg_a-domubk--{RUN}--web01--xvdap2)",
        "loop /dev/loop3 (/tmp/stray.img)",
        "lock /run/lock/domu-backup/web01.lock",
        f"left /run/domu-backup/src/web01.{RUN}",
        f"left /var/lib/domu-backup/journal/web01.{RUN}.jsonl",
        "process 812 /usr/bin/python3 /usr/local/bin/domu-backup backup --domu web01",
        f"process 901 setpriv --pdeathsig KILL -- rsync -aHAXSx /run/domu-backup/src/web01.{RUN}/",
    ]
    # the peer's maps of web01's run are dom0-b's
    on_b = [x for x in leaks_from(sections, host="dom0-b") if x.startswith("dm map")]
    assert on_b == [f"dm map domubk-{RUN}-web01-xvda", f"dm map domubk-{RUN}-web01-xvdap1",
                    f"dm map domubk-{RUN}-ghost-xvda", "dm map vg_b-db01d1 (not an LV)"]


def test_maps_are_told_apart_by_their_owners_names() -> None:
    assert map_owner(f"vg_b-domubk--{RUN}--db01--xvda") == "dom0-b"
    assert map_owner(f"domubk-{RUN}-db01-xvda") == "dom0-a"  # db01's standby is on dom0-a
    assert map_owner(f"domubk-{RUN}-db01-dst-0123456789abcdef") == "dom0-a"
    assert map_owner(f"domubk-{RUN}-db01-src-0123456789abcdef") == "dom0-b"
    assert map_owner(f"domubk-{RUN}-web01.prod-xvdap2") == "dom0-b"
    assert map_owner(f"domubk-{RUN}-nobody-xvda") is None
    assert map_owner("domubk-not-a-run-name") is None


def test_a_clean_host_has_no_leaks(tmp_path: Path) -> None:
    clean = {"dmsetup": "vg_a-web01\t(254:0)\n", "lvs": "  vg_a|web01|\n",
             "findmnt": "/dev/vda1 /\n", "losetup": "", "lslocks": "", "find": "",
             "ps": "    1 /usr/bin/tini\n"}
    out = subprocess.run(["sh", "-c", probe_script(LEAK_PROBES)], env=fake_bin(tmp_path, clean),
                         capture_output=True, text=True, check=True).stdout
    assert leaks_from(parse_probe_output(out, LEAK_PROBES)) == []


def test_a_failed_or_missing_probe_is_an_error_not_a_clean_host(tmp_path: Path) -> None:
    out = subprocess.run(["sh", "-c", probe_script(LEAK_PROBES)],
                         env=fake_bin(tmp_path, FAKE_PROBES, failing="lslocks"),
                         capture_output=True, text=True, check=True).stdout
    with pytest.raises(ParseError, match="lslocks -n -r -o PATH` exited 3"):
        parse_probe_output(out, LEAK_PROBES)
    cut = out[:out.index("@@domubk-probe loops")]  # the output stops early
    with pytest.raises(ParseError, match="losetup .* did not run"):
        parse_probe_output(cut, LEAK_PROBES)


def test_the_leak_checks_of_both_fake_dom0s_run_at_once(monkeypatch) -> None:
    import threading

    from toolkit.lab.sandbox import Sandbox

    both = threading.Barrier(2, timeout=10)  # passes only while both checks run together

    def one(self, container):
        both.wait()
        return [] if container == "dom0-a" else [f"lv vg_b/left-on-{container}"]

    monkeypatch.setattr(Sandbox, "leak_report", one)
    box = Sandbox(client=None, image="x")  # type: ignore[arg-type]
    assert box.leak_reports(("dom0-a", "dom0-b")) == {
        "dom0-a": [], "dom0-b": ["lv vg_b/left-on-dom0-b"]}
