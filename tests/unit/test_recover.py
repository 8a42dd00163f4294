"""recover only ever picks objects the tool owns, for the right domain and host role."""

from __future__ import annotations

from toolkit.recover import owned_maps

LAB_KERNEL = [  # `dmsetup info -c -o name` in the lab (one kernel shared by both fake Dom0s)
    "vg_a-web01", "vg_a-web01-real", "vg_a-db01",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvda",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvda-cow",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvdap1",
    "vg_a-domubk--20261127T085229Z--ce91--web01--xvdap2",
    "vg_b-web01", "vg_b-domubk--20261127T085229Z--ce91--db01--xvdap1",
    "domubk-20261127T085229Z-ce91-web01-xvda", "domubk-20261127T085229Z-ce91-web01-xvdap1",
    "domubk-20261127T085229Z-ce91-db01-xvda",
    "vg_a-domubklookalike", "mydomubk-x-web01-xvdap1",
]


def test_source_takes_only_partition_maps_of_its_own_snapshots():
    picked = owned_maps(LAB_KERNEL, "source", "web01", ["vg_a"], "p")
    assert picked == ["vg_a-domubk--20261127T085229Z--ce91--web01--xvdap1",
                      "vg_a-domubk--20261127T085229Z--ce91--web01--xvdap2"]


def test_peer_takes_only_its_aliases_and_their_partitions_for_the_domain():
    picked = owned_maps(LAB_KERNEL, "peer", "web01", [], "p")
    assert picked == ["domubk-20261127T085229Z-ce91-web01-xvdap1",
                      "domubk-20261127T085229Z-ce91-web01-xvda"]


def test_other_vgs_and_lookalikes_are_never_taken():
    picked = owned_maps(LAB_KERNEL, "source", None, ["vg_b"], "p")
    assert picked == ["vg_b-domubk--20261127T085229Z--ce91--db01--xvdap1"]
    assert not any("lookalike" in n or n.startswith("my") for n in
                   owned_maps(LAB_KERNEL, "peer", None, [], "p"))


def _inventory(role, **kw):
    from toolkit.recover import Inventory

    fields = {"journals": (), "mounts": (), "maps": (), "vgs": (), "snapshots": (),
              "run_dirs": ()}
    fields.update({k: tuple(v) for k, v in kw.items()})
    return Inventory(role, **fields)


def test_inventory_names_a_domain_pending_only_for_what_the_sweep_would_take():
    from toolkit.config import Config, parse_config

    cfg: Config = parse_config('[cluster.dom0s]\ndom0-a = "local://"\ndom0-b = "ssh://root@b"\n'
                               '[hypervisor]\nuri = "test:///default"\n'
                               '[domains.web01]\npeer = "dom0-b"\n'
                               '[domains.db01]\npeer = "dom0-b"\n',
                               "/etc/domu-backup/backup.toml", allow_lab_hosts=True)
    src, dst = cfg.defaults.source_prefix.rstrip("/"), cfg.defaults.peer_prefix.rstrip("/")
    clean = _inventory("source", maps=["vg_a-web01", "vg_a-domubklookalike"], vgs=["vg_a"],
                       snapshots=[("vg_a", "domubk-lookalike")],
                       mounts=["/", f"{src}2/web01.x/xvda1"])
    assert not clean.pending(cfg, "web01")
    # the snapshot's own device (and -cow) is LVM's: the tagged LV says so, not dmsetup
    assert not _inventory("source", maps=LAB_KERNEL[:5], vgs=["vg_a"]).pending(cfg, "web01")
    cases = [
        _inventory("source",
                   journals=["/var/lib/domu-backup/journal/web01.20261127T085229Z-ce91.jsonl"]),
        _inventory("source", mounts=[f"{src}/web01.20261127T085229Z-ce91/xvda1"]),
        _inventory("source", maps=LAB_KERNEL[:6], vgs=["vg_a"]),  # a snapshot's partition map
        _inventory("source", snapshots=[("vg_a", "domubk-20261127T085229Z-ce91-web01-xvda")]),
        _inventory("source", run_dirs=[f"{src}/web01.20261127T085229Z-ce91"]),
        _inventory("peer", maps=["domubk-20261127T085229Z-ce91-web01-xvda"]),
        _inventory("peer", mounts=[f"{dst}/web01.20261127T085229Z-ce91/xvda1"]),
    ]
    for inv in cases:
        assert inv.pending(cfg, "web01"), inv
        assert not inv.pending(cfg, "db01"), inv
    # a snapshot is only swept on the source: the peer's inventory never lists one
    assert not _inventory("peer", snapshots=[("vg_a", "domubk-2026-web01-xvda")]).pending(
        cfg, "web01")


class _Host:
    """Answers the inventory's reads with nothing owned; records the calls."""

    def __init__(self, host, *, wait_for=None, started=None, lost=False):
        import threading

        self.host = host
        self.calls = []
        self.wait_for = wait_for
        self.started = started or threading.Event()
        self.waited = None
        self.lost = lost

    def run(self, argv, **kw):
        from fakes import play_reads

        from toolkit.errors import ConnectionLost
        from toolkit.runners import CommandResult

        self.calls.append(tuple(argv))
        self.started.set()
        if self.lost:
            raise ConnectionLost("the peer went away", host=self.host)
        played = play_reads(self.host, argv, lambda a: self.run(a))
        if played is not None:
            return played
        if self.wait_for is not None and self.waited is None:
            self.waited = self.wait_for.wait(10)
        out = ('{"filesystems": [{"target": "/", "source": "/dev/vda1", "fstype": "ext4", '
               '"options": "rw"}]}' if argv[0] == "findmnt" else "")
        return CommandResult(self.host, tuple(argv), 0, out, "", 0.0)


def _two_host_config():
    from toolkit.config import parse_config

    return parse_config('[cluster.dom0s]\ndom0-a = "local://"\ndom0-b = "ssh://root@b"\n'
                        '[hypervisor]\nuri = "test:///default"\n'
                        '[domains.web01]\npeer = "dom0-b"\n', "/etc/domu-backup/backup.toml",
                        allow_lab_hosts=True)


def test_start_of_run_inventories_look_at_both_hosts_side_by_side_and_skip_clean_hosts():
    from toolkit.recover import recover_domain, take_inventories

    cfg = _two_host_config()
    peer = _Host("dom0-b")
    # The source's first read waits for the peer's first read: one after the other
    # (source first), it would wait in vain.
    source = _Host("dom0-a", wait_for=peer.started)
    seen = take_inventories(cfg, source, peer)
    assert source.waited is True and set(seen) == {"source", "peer"}
    calls = len(source.calls), len(peer.calls)
    assert recover_domain(cfg, "web01", source, peer, inventories=seen) == []
    assert (len(source.calls), len(peer.calls)) == calls  # nothing pending: nothing more run


def test_a_host_that_cannot_be_looked_at_is_left_to_recover_in_full():
    import pytest

    from toolkit.errors import TeardownIncomplete
    from toolkit.recover import recover_domain, take_inventories

    cfg = _two_host_config()
    source, peer = _Host("dom0-a"), _Host("dom0-b", lost=True)
    seen = take_inventories(cfg, source, peer)
    assert set(seen) == {"source"}
    with pytest.raises(TeardownIncomplete, match="the peer went away"):
        recover_domain(cfg, "web01", source, peer, inventories=seen)


R = "20261205T101010Z-ab12"
PS = "".join(line + "\n" for line in [
    "    1 /sbin/init",
    "  812 /usr/sbin/sshd -D",
    f" 4101 setpriv --pdeathsig KILL -- rsync -aHAXSx --delete -e setpriv --pdeathsig KILL -- "
    f"ssh -p 22 -- /run/domu-backup/src/web01.{R}/xvda1/ "
    f"root@dom0-b:/run/domu-backup/dst/web01.{R}/xvda1/",
    f" 4102 ssh -p 22 root@dom0-b rsync --server -logDtprze.iLsfxCIvu --delete-delay . "
    f"/run/domu-backup/dst/web01.{R}/xvda1/",
    f" 4200 rsync -a -- /run/domu-backup/src/web01.prod.{R}/xvda1/ root@dom0-b:/x/",
    f" 4300 rsync --server . /run/domu-backup/dst/web01.{R}/xvda1/",
    # a run directory named only as user@host:/path
    f" 4301 rsync -a -- root@dom0-b:/run/domu-backup/dst/web01.{R}/xvda1/ /srv/pulled/",
    " 4400 vim /run/domu-backup/src/web01.notarun/notes",
    f" 4500 less /run/domu-backup/src/web01.{R}x/file",
    # the boot-area copy: dd reading the snapshot, dd writing the peer's alias
    f" 4600 dd if=/dev/vg_a/domubk-{R}-web01-xvda bs=1M skip=0 count=1048576 status=none",
    f" 4601 dd of=/dev/mapper/domubk-{R}-web01-xvda bs=1M seek=512 conv=notrunc,nocreat",
    f" 4602 blkid -p /dev/mapper/vg_a-domubk--{R.replace('-', '--')}--web01--xvdap2",
    f" 4603 cat /dev/mapper/domubk-{R}-web01-dst-0123456789abcdef",
    # look-alikes: not a run's device, a path out of /dev, a traversal, another domain's
    f" 4700 dd if=/dev/vg_a/web01 of=/tmp/domubk-{R}-web01-xvda",
    f" 4701 dd if=/dev/vg_a/../mapper/domubk-{R}-web01-xvda",
    f" 4702 dd if=/dev/vg_a/domubk-{R}-db01-xvda",
    f" 4703 dd if=/dev/vg_a/sub/domubk-{R}-web01-xvda",
    # a run's snapshot name in a VG-shaped directory out of /dev, and a /dev path not in
    # its normal form: neither is a device the run made
    f" 4704 cat /srv/vg_a/domubk-{R}-web01-xvda",
    f" 4705 dd if=/dev/./domubk-{R}-web01-xvda",
])


def test_the_processes_a_killed_run_left_are_found_by_their_run_directories_and_devices_exactly():
    from toolkit.recover import owned_processes

    prefixes = ("/run/domu-backup/src", "/run/domu-backup/dst")
    assert [pid for pid, _ in owned_processes(PS, prefixes, "web01")] == [
        4101, 4102, 4300, 4301, 4600, 4601, 4602, 4603]
    assert [pid for pid, _ in owned_processes(PS, prefixes, "web01.prod")] == [4200]
    assert [pid for pid, _ in owned_processes(PS, prefixes, "web01", own_pid=4102)] == [
        4101, 4300, 4301, 4600, 4601, 4602, 4603]
    assert [pid for pid, _ in owned_processes(PS, prefixes, "db01")] == [4702]


def test_recover_stops_what_a_killed_run_left_running_term_first_then_kill():
    from toolkit.recover import stop_processes
    from toolkit.runners import CommandResult

    class Host:
        host = "dom0-a"

        def __init__(self):
            self.calls = []

        def run(self, argv, **kw):
            argv = tuple(argv)
            self.calls.append(argv)
            out = ""
            if argv[:2] == ("ps", "-eo"):
                out = PS
            elif argv[:3] == ("ps", "-o", "pid="):
                out = "4102\n"  # ssh ignores SIGTERM here: it needs SIGKILL
            return CommandResult("dom0-a", argv, 0, out, "", 0.0)

    host = Host()
    done = stop_processes(host, _two_host_config(), "web01", lambda m: None)
    assert [c for c in host.calls if c[0] == "kill"] == [
        ("kill", "-TERM", "--", "4101", "4102", "4300", "4301", "4600", "4601", "4602",
         "4603"),
        ("kill", "-KILL", "--", "4102")]
    assert len(done) == 8 and all(m.startswith("[dom0-a] stopped process ") for m in done)


def _host_running(ps_text: str):
    from fakes import FakeHost

    host = FakeHost("dom0-a")
    for line in ps_text.splitlines():
        pid, _, args = line.strip().partition(" ")
        host.processes[int(pid)] = args
    return host


def test_a_process_that_ends_on_its_own_between_ps_and_kill_does_not_stop_recover(monkeypatch):
    """kill(1) exits 1 when one of its pids is gone (the others are still signalled), and
    ps -p exits 1 when none of its pids is left: both are normal in a race with a
    process that ends, never an error of recover."""
    from toolkit.recover import stop_processes

    monkeypatch.setattr("toolkit.recover.time.sleep", lambda s: None)
    host = _host_running(PS)
    host.ignores_term |= {4101, 4102}  # these two ignore SIGTERM: they need SIGKILL

    def ends_before_the_kill(argv):
        if argv[:2] == ("kill", "-TERM"):
            host.processes.pop(4300)  # the rsync server saw its client go and ended
        if argv[:2] == ("kill", "-KILL"):
            host.processes.pop(4101)  # and so did this one, at last
        return None

    host.fail = ends_before_the_kill
    done = stop_processes(host, _two_host_config(), "web01", lambda m: None)
    assert [c for c in host.calls if c[0] == "kill"] == [
        ("kill", "-TERM", "--", "4101", "4102", "4300", "4301", "4600", "4601", "4602",
         "4603"),
        ("kill", "-KILL", "--", "4101", "4102")]
    # each kill is bounded (30 s), the KILL as much as the TERM: never the 600 s default
    kills = [t for argv, t in host.timeouts if argv[0] == "kill"]
    assert len(kills) == 2 and all(t is not None and t <= 30 for t in kills)
    assert sorted(host.processes) == [1, 812, 4200, 4400, 4500, 4700, 4701, 4702, 4703, 4704, 4705]
    assert len(done) == 8


def test_processes_that_all_end_on_term_are_not_sent_kill(monkeypatch):
    from toolkit.recover import stop_processes

    monkeypatch.setattr("toolkit.recover.time.sleep", lambda s: None)
    host = _host_running(PS)
    done = stop_processes(host, _two_host_config(), "web01", lambda m: None)
    assert [c[:2] for c in host.calls] == [("ps", "-eo"), ("kill", "-TERM"), ("ps", "-o")]
    assert [t for _, t in host.timeouts] == [60, 30, 30]  # each bounded, well below 600 s
    assert 4101 not in host.processes and 4200 in host.processes
    # the report names each process by its first 120 characters
    assert done[0] == ("[dom0-a] stopped process 4101 (setpriv --pdeathsig KILL -- rsync "
                       "-aHAXSx --delete -e setpriv --pdeathsig KILL -- ssh -p 22 -- "
                       "/run/domu-backup/src/web0)")


def test_processes_are_matched_with_the_configured_partition_delimiter(monkeypatch):
    """With ``kpartx_delimiter = "-part"``, a dd on the alias's partition map
    ``...-xvda-part2`` is the run's: recover passes the configured delimiter on."""
    from toolkit.config import parse_config
    from toolkit.recover import stop_processes

    monkeypatch.setattr("toolkit.recover.time.sleep", lambda s: None)
    cfg = parse_config('[cluster.dom0s]\ndom0-a = "local://"\ndom0-b = "ssh://root@b"\n'
                       '[hypervisor]\nuri = "test:///default"\n'
                       '[defaults]\nkpartx_delimiter = "-part"\n'
                       '[domains.web01]\npeer = "dom0-b"\n', "/etc/domu-backup/backup.toml",
                       allow_lab_hosts=True)
    host = _host_running(f" 4800 dd of=/dev/mapper/domubk-{R}-web01-xvda-part2 bs=4096\n"
                         " 4801 dd of=/dev/mapper/vg_b-web01 bs=4096\n")
    stop_processes(host, cfg, "web01", lambda m: None)
    assert sorted(host.processes) == [4801]
