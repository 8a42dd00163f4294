"""recover's order and ownership guards, on fake Dom0s left as a killed run leaves them.

Each test fails when its guard is taken out: the peer is cleaned before the source, nested
mounts come down deepest first, and only what carries the tool's tag *and* its exact
name is ever removed.
"""

from __future__ import annotations

import pytest
from fakes import FakeHost, config, dm_name, web01_facts

from toolkit import errors
from toolkit.execute import Executor
from toolkit.plan import plan_backup
from toolkit.recover import owned_mounts, recover_domain, sweep
from toolkit.report import DomainReport

RUN = "20260101T000000Z-abcd"
SNAP = f"domubk-{RUN}-web01-xvda"


@pytest.fixture
def killed_run(tmp_path, monkeypatch):
    """A run killed after its rsync: everything it made is left, with its journals."""
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.setattr(Executor, "_teardown", lambda self: None)
    cfg = config(tmp_path)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan = plan_backup(web01_facts(), cfg, RUN)
    Executor(plan, cfg, src, peer, DomainReport("web01")).run()
    assert src.mounts and src.maps and src.lvs and peer.mounts and peer.maps
    monkeypatch.undo()
    monkeypatch.setattr("time.sleep", lambda s: None)
    return cfg, src, peer


def _host_order(done: list[str]) -> list[str]:
    hosts: list[str] = []
    for msg in done:
        host = msg[1:msg.index("]")]
        if not hosts or hosts[-1] != host:
            hosts.append(host)
    return hosts


def test_recover_cleans_the_peer_before_the_source(killed_run):
    # The standby is written from the source's snapshot: the peer's mounts and maps go
    # first, the snapshot last.
    cfg, src, peer = killed_run
    logged: list[str] = []
    done = recover_domain(cfg, "web01", src, peer, log=logged.append)
    assert _host_order(done) == ["dom0-b", "dom0-a"]
    assert _host_order(logged) == ["dom0-b", "dom0-a"]
    assert src.leftovers() == [] and peer.leftovers() == []


@pytest.mark.parametrize("hosts,cleaned", [("peer", "dom0-b"), ("local", "dom0-a"),
                                            ("source", "dom0-a")])
def test_recover_of_one_host_leaves_the_other_alone(killed_run, hosts, cleaned):
    cfg, src, peer = killed_run
    before = {"dom0-a": src.leftovers(), "dom0-b": peer.leftovers()}
    done = recover_domain(cfg, "web01", src, peer, hosts=hosts)
    assert done and _host_order(done) == [cleaned]
    for host in (src, peer):
        if host.host == cleaned:
            assert host.leftovers() == []
        else:
            assert host.leftovers() == before[host.host]


def test_recover_without_a_peer_cleans_the_source(killed_run):
    cfg, src, peer = killed_run
    done = recover_domain(cfg, "web01", src, None)
    assert _host_order(done) == ["dom0-a"] and src.leftovers() == []


def test_nested_mounts_come_down_deepest_first():
    prefix = "/run/domu-backup/src/"
    run_dir = f"{prefix}web01.{RUN}"
    targets = [run_dir + "/xvda1", run_dir + "/xvda1/boot", "/", run_dir + "/xvda1/boot/efi",
               run_dir + "/xvda5"]
    picked = owned_mounts(targets, prefix, "web01")
    depth = [p.count("/") for p in picked]
    assert depth == sorted(depth, reverse=True)
    assert picked[0] == run_dir + "/xvda1/boot/efi" and "/" not in picked
    assert set(picked) == set(targets) - {"/"}


def test_the_sweep_unmounts_a_mount_nested_in_another_first(killed_run):
    # An older run's layout (or a guest mount the operator made) below a run's mount: the
    # sweep takes the inner one first, so the outer one is not busy.
    cfg, src, peer = killed_run
    outer = next(m for m in src.mounts if m.endswith("/xvda1"))
    inner = outer + "/boot"
    src.mounts[inner] = src.mounts[outer]
    for path in [p for p in src.files if p.endswith(".jsonl")]:
        del src.files[path]  # the journal lost: the sweep alone
    sweep(src, cfg, "web01", "source", lambda m: None)
    assert src.mounts == {}
    umounts = [c[-1] for c in src.calls if c[0] == "umount"]
    assert umounts.index(inner) < umounts.index(outer)


@pytest.mark.parametrize("journals", ["kept", "lost"])
def test_a_tagged_lookalike_snapshot_survives_recover(killed_run, journals):
    # R1: the tag alone is not ownership; neither is the name of another domain or run.
    cfg, src, peer = killed_run
    if journals == "lost":  # the sweep alone decides
        for path in [p for p in src.files if p.endswith(".jsonl")]:
            del src.files[path]
    lookalikes = ["domubk-lookalike", f"domubk-{RUN}-web01", f"domubk-{RUN}-web01-xvda-x",
                  f"domubk-{RUN}-web011-xvda", f"other-{RUN}-web01-xvda",
                  f"domubk-{RUN}-db01-xvda"]
    for name in lookalikes:
        src.lvs[f"vg_a/{name}"] = {"attr": "swi-a-s---", "percent": "1.00",
                                   "tags": ("domubk",), "origin": "web01"}
    recover_domain(cfg, "web01", src, peer)
    assert sorted(src.lvs) == sorted(f"vg_a/{n}" for n in lookalikes)
    removes = [c[-1] for c in src.calls if c[0] == "lvremove"]
    assert removes and all(r.endswith(f"vg_a/{SNAP}") for r in removes)


def test_an_unsafe_state_directory_stops_recover_before_any_undo(killed_run, monkeypatch):
    import toolkit.recover

    cfg, src, peer = killed_run
    before = (src.leftovers(), peer.leftovers())
    calls = (len(src.calls), len(peer.calls))

    def unsafe(runner, path):
        raise errors.InsecureFile(f"[{runner.host}] {path}: owned by uid 1000")

    monkeypatch.setattr(toolkit.recover, "check_state_dir", unsafe)
    with pytest.raises(errors.InsecureFile, match="uid 1000"):
        recover_domain(cfg, "web01", src, peer)
    assert (src.leftovers(), peer.leftovers()) == before
    assert (len(src.calls), len(peer.calls)) == calls  # nothing ran on either host


# -- the inventory a run takes before it recovers ---------------------------------------

def test_each_hosts_inventory_holds_what_recover_would_take_there(killed_run):
    from toolkit.recover import take_inventories

    cfg, src, peer = killed_run
    src_prefix = cfg.defaults.source_prefix.rstrip("/")
    # a mount beside the prefix and one of the host's own are never the tool's
    src.mounts[src_prefix + "2/web01.x/xvda1"] = ("/dev/vg_a/web01", "ext4", "253:1")
    src.mounts["/"] = ("/dev/vg_a/web01", "ext4", "253:1")
    inv = take_inventories(cfg, src, peer)
    s, p = inv["source"], inv["peer"]
    assert (s.role, p.role) == ("source", "peer")
    for i, host in ((s, src), (p, peer)):
        assert i.journals == tuple(sorted(f for f in host.files if f.endswith(".jsonl")))
        assert len(i.journals) == 1 and i.journals[0].endswith(f"/web01.{RUN}.jsonl")
        assert set(i.maps) >= host.maps
    assert set(s.mounts) == {m for m in src.mounts if m.startswith(src_prefix + "/")}
    assert len(s.mounts) == 3 and len(p.mounts) == 3
    assert s.vgs == ("vg_a", "vg_b") and p.vgs == ()
    assert s.snapshots == (("vg_a", SNAP),) and p.snapshots == ()
    assert s.run_dirs == (f"{src_prefix}/web01.{RUN}",)
    assert p.run_dirs == (cfg.defaults.peer_prefix.rstrip("/") + f"/web01.{RUN}",)
    assert s.pending(cfg, "web01") and p.pending(cfg, "web01")
    assert not s.pending(cfg, "db01") and not p.pending(cfg, "db01")
    recover_domain(cfg, "web01", src, peer, inventories=inv)
    after = take_inventories(cfg, src, peer)
    assert not after["source"].pending(cfg, "web01") and not after["peer"].pending(cfg, "web01")


# What the inventory and the sweep list: every map, the VGs, every mount, the tagged LVs.
LISTINGS = {"dmsetup": ("dmsetup", "info", "-c", "--noheadings", "-o", "name"),
            "vgs": ("vgs", "--noheadings", "-o", "vg_name"),
            "findmnt": ("findmnt", "--json", "-o", "TARGET,SOURCE,FSTYPE,OPTIONS"),
            "lvs": ("lvs", "--noheadings", "-o", "vg_name,lv_name")}


@pytest.mark.parametrize("program", sorted(LISTINGS))
def test_a_host_whose_maps_vgs_mounts_or_lvs_cannot_be_listed_is_never_called_clean(
        killed_run, program):
    from toolkit.recover import take_inventories
    from toolkit.runners import CommandResult

    cfg, src, peer = killed_run
    listing = LISTINGS[program]

    def unreadable(argv):
        if tuple(argv[:len(listing)]) == listing:
            return CommandResult("dom0-a", tuple(argv), 5, "", "  Reading failed.\n", 0.0)
        return None

    src.fail = unreadable
    seen = take_inventories(cfg, src, peer)
    assert set(seen) == {"peer"}  # no inventory of a host that could not be looked at
    with pytest.raises(errors.TeardownIncomplete) as err:
        recover_domain(cfg, "web01", src, peer, inventories=seen)
    assert f"[dom0-a] command `{' '.join(listing)}" in str(err.value), str(err.value)
    assert peer.leftovers() == []  # the peer, readable, is cleaned all the same


def _twin(host: FakeHost, other: str) -> list[str]:
    """Give ``host`` a copy of everything web01's killed run left, as a run of ``other``
    would have left it; returns the twins' leftovers."""
    def rename(text: str) -> str:
        return text.replace("-web01-", f"-{other}-").replace("/web01.", f"/{other}.")

    for key, lv in list(host.lvs.items()):
        host.lvs[rename(key)] = dict(lv)
        host._new_device(dm_name(*rename(key).split("/")))
    for name in list(host.maps):
        host.maps.add(rename(name))
        host.map_on[rename(name)] = rename(host.map_on.get(name, ""))
        host._new_device(rename(name))
    for d in list(host.dirs):
        host.dirs.add(rename(d))
    for target, (dev, fstype, majmin) in list(host.mounts.items()):
        host.mounts[rename(target)] = (rename(dev), fstype, majmin)
    return sorted(x for x in host.leftovers() if other in x)


@pytest.mark.parametrize("other", ["web01.prod", "web01-2", "db01"])
def test_the_sweep_takes_the_domains_own_leftovers_and_never_another_domains(killed_run,
                                                                             other):
    cfg, src, peer = killed_run
    twins = {h.host: _twin(h, other) for h in (src, peer)}
    assert all(twins.values())
    for h in (src, peer):  # no journal: what is left is the sweep's to find, by name alone
        for path in [f for f in h.files if f.endswith(".jsonl")]:
            del h.files[path]
    done = recover_domain(cfg, "web01", src, peer)
    for h in (src, peer):
        assert sorted(h.leftovers()) == twins[h.host], h.host
    # each removal is reported, naming its host and what it removed (never the twin)
    assert all(isinstance(line, str) and line.startswith(("[dom0-a] ", "[dom0-b] "))
               for line in done), done
    said = " ".join(done)
    assert "unmounted" in said and "removed directory" in said and other not in said, done


def test_recover_skips_a_host_its_inventory_calls_clean(killed_run):
    from toolkit.recover import take_inventory

    cfg, src, peer = killed_run
    clean_peer = FakeHost("dom0-b")
    inv = {"source": take_inventory(src, cfg, "source"),
           "peer": take_inventory(clean_peer, cfg, "peer")}
    calls = len(peer.calls)
    recover_domain(cfg, "web01", src, peer, inventories=inv)
    assert src.leftovers() == []
    assert peer.leftovers() and len(peer.calls) == calls  # called clean: not looked at


@pytest.mark.parametrize(("undo", "exists", "said"), [
    (("sh", "-c", "x"), (), "undo ('sh',) is not one of the tool's undo commands"),
    ((), (), "undo () is not one of the tool's undo commands"),
    (("rmdir", "/x"), ("sh", "-c", "x"), "probe ('sh',) is not one of the tool's exists-probes"),
    (("umount", "/x"), ("findmnt", "/x"), ""),
])
def test_recover_says_which_journal_command_it_refuses(undo, exists, said):
    from toolkit.recover import _unexpected_undo

    assert _unexpected_undo(undo, exists) == said


def test_the_peers_inventory_never_holds_snapshots(killed_run):
    from toolkit.recover import take_inventory

    cfg, src, peer = killed_run
    peer.lvs[f"vg_b/{SNAP}"] = {"attr": "swi-a-s---", "percent": "1.00", "tags": ("domubk",),
                                "origin": "web01"}
    assert take_inventory(peer, cfg, "peer").snapshots == ()
    assert take_inventory(src, cfg, "source").snapshots == (("vg_a", SNAP),)


# -- recover of one domain never touches another's ---------------------------------------

OTHER_RUN = "20260102T000000Z-beef"


def _other_domains_leftovers(host: FakeHost, cfg, role: str) -> tuple[str, str]:
    """A killed db01 run's journal and run directory on ``host``; returns both paths."""
    from toolkit.journal import JournalEntry, journal_path

    prefix = (cfg.defaults.source_prefix if role == "source"
              else cfg.defaults.peer_prefix).rstrip("/")
    run_dir = f"{prefix}/db01.{OTHER_RUN}"
    host.base_dirs.add(prefix)
    host.dirs.add(run_dir)
    path = journal_path(cfg.defaults.state_dir, "db01", OTHER_RUN)
    host.files[path] = JournalEntry(OTHER_RUN, "db01", "mkdir", run_dir, ("rmdir", run_dir),
                                    ("find", run_dir, "-maxdepth", "0"), 1.0).to_line()
    return path, run_dir


def test_recover_of_a_domain_leaves_another_domains_journal_run_and_processes(killed_run):
    cfg, src, peer = killed_run
    mine = f"rsync -a /run/domu-backup/src/web01.{RUN}/xvda1/ root@dom0-b:/x"
    theirs = f"rsync -a /run/domu-backup/src/db01.{OTHER_RUN}/xvda1/ root@dom0-b:/y"
    src.processes = {4242: mine, 4343: theirs}
    kept = {h.host: _other_domains_leftovers(h, cfg, role)
            for h, role in ((src, "source"), (peer, "peer"))}
    logged: list[str] = []
    done = recover_domain(cfg, "web01", src, peer, log=logged.append)
    assert src.processes == {4343: theirs}
    assert any(f"stopped process 4242 ({mine}" in m for m in done) and done == logged
    for host in (src, peer):
        path, run_dir = kept[host.host]
        assert path in host.files and run_dir in host.dirs
        assert host.leftovers() == [f"dir {run_dir}"]


def test_recover_comes_back_to_the_journal_for_what_the_sweep_unblocked(killed_run):
    # A partition map no journal names (an older version's) holds the snapshot: the first
    # pass over the journal cannot remove the snapshot, the sweep removes the map, and the
    # journal is read again: nothing is left and recover reports no error.
    cfg, src, peer = killed_run
    snap_dm = next(m for m in src.devices if m.startswith("vg_a-domubk--"))
    stray = f"{snap_dm}p9"
    src.maps.add(stray)
    src.map_on[stray] = snap_dm
    logged: list[str] = []
    done = recover_domain(cfg, "web01", src, peer, log=logged.append)
    assert src.leftovers() == [] and peer.leftovers() == []
    assert any(f"removed map {stray}" in m for m in done)
    assert any("removed snapshot" in m for m in done)
    assert done[0].startswith("[dom0-b]") and done == logged


def test_recover_that_cannot_finish_says_every_reason_in_one_line(killed_run):
    from toolkit.runners import CommandResult

    cfg, src, peer = killed_run

    def busy(host):
        def fail(argv):
            if argv[0] == "umount":
                return CommandResult(host, argv, 32, "", f"umount: {argv[-1]}: target is busy.",
                                     0.0)
            return None
        return fail

    src.fail, peer.fail = busy("dom0-a"), busy("dom0-b")
    with pytest.raises(errors.TeardownIncomplete) as info:
        recover_domain(cfg, "web01", src, peer)
    message = str(info.value)
    assert message.startswith("recover could not finish: [dom0-b] command `umount ")
    assert "target is busy.; [dom0-a] command `umount " in message


def test_a_host_whose_inventory_shows_only_another_domain_is_skipped(killed_run):
    from toolkit.recover import take_inventory

    cfg, src, peer = killed_run
    other = FakeHost("dom0-b")
    _other_domains_leftovers(other, cfg, "peer")
    inv = {"source": take_inventory(src, cfg, "source"),
           "peer": take_inventory(other, cfg, "peer")}
    assert inv["peer"].pending(cfg, "db01") and not inv["peer"].pending(cfg, "web01")
    calls = len(peer.calls)
    recover_domain(cfg, "web01", src, peer, inventories=inv)
    assert len(peer.calls) == calls and src.leftovers() == []


def _stray_partition_map(src: FakeHost) -> str:
    """A map on the snapshot that no journal names: the first journal pass cannot finish."""
    snap_dm = next(m for m in src.devices if m.startswith("vg_a-domubk--"))
    stray = f"{snap_dm}p9"
    src.maps.add(stray)
    src.map_on[stray] = snap_dm
    return stray


def test_the_second_journal_pass_still_reads_only_this_domains_journals(killed_run):
    cfg, src, peer = killed_run
    _stray_partition_map(src)
    path, run_dir = _other_domains_leftovers(src, cfg, "source")
    recover_domain(cfg, "web01", src, peer)
    assert path in src.files and src.leftovers() == [f"dir {run_dir}"]


def test_what_the_second_journal_pass_cannot_undo_is_reported(killed_run):
    from toolkit.runners import CommandResult

    cfg, src, peer = killed_run
    _stray_partition_map(src)
    held = next(m for m in src.mounts if m.endswith("/xvda5"))
    src.fail = lambda argv: (CommandResult("dom0-a", argv, 32, "", "target is busy.", 0.0)
                             if argv[:1] == ("umount",) and argv[-1] == held else None)
    with pytest.raises(errors.TeardownIncomplete, match="recover could not finish: .*busy"):
        recover_domain(cfg, "web01", src, peer)
    assert held in src.mounts and peer.leftovers() == []


def _untagged_snapshot(src: FakeHost) -> str:
    """The run's snapshot without the tool's tag: only its journal names it, the sweep
    never takes it, so only the second journal pass can remove it."""
    key = next(k for k in src.lvs if "/domubk-" in k)
    src.lvs[key]["tags"] = ()
    return key


def test_the_second_journal_pass_removes_and_logs_what_only_the_journal_names(killed_run):
    cfg, src, peer = killed_run
    stray = _stray_partition_map(src)
    snap = _untagged_snapshot(src)
    logged: list[str] = []
    done = recover_domain(cfg, "web01", src, peer, log=logged.append)
    assert src.leftovers() == [] and peer.leftovers() == []
    removed = [m for m in done if "removed snapshot" in m]
    assert len(removed) == 1 and snap.split("/")[1] in removed[0]
    # the snapshot goes after the stray map the sweep took: the second pass removed it
    assert done.index(removed[0]) > next(i for i, m in enumerate(done) if stray in m)
    assert done == logged


def test_a_failure_of_the_second_journal_pass_is_reported_not_raised_raw(killed_run):
    from toolkit.runners import CommandResult

    cfg, src, peer = killed_run
    _stray_partition_map(src)
    snap = _untagged_snapshot(src)
    src.fail = lambda argv: (CommandResult("dom0-a", argv, 5, "", "LV is locked.", 0.0)
                             if argv[:1] == ("lvremove",) else None)
    with pytest.raises(errors.TeardownIncomplete) as info:
        recover_domain(cfg, "web01", src, peer)
    assert str(info.value).startswith("recover could not finish: ")
    assert "LV is locked." in str(info.value) and snap in src.lvs
    assert src.leftovers() == [f"lv {snap}"] and peer.leftovers() == []


# -- journals as recover reads them, on a real host ----------------------------------------

def _journal(tmp_path, entries) -> tuple[str, str]:
    import os

    from toolkit.journal import journal_path

    state = str(tmp_path / "state")
    path = journal_path(state, "web01", RUN)
    os.makedirs(os.path.dirname(path), mode=0o700)
    with open(path, "w") as f:
        f.writelines(e if isinstance(e, str) else e.to_line() for e in entries)
    return state, path


def test_a_journal_whose_resources_are_gone_is_removed(tmp_path):
    import os

    from toolkit.journal import JournalEntry
    from toolkit.recover import recover_journals
    from toolkit.runners import LocalRunner

    gone = str(tmp_path / "run" / "web01.x")
    state, path = _journal(tmp_path, [JournalEntry(RUN, "web01", "mkdir", gone, ("rmdir", gone),
                                                   ("find", gone, "-maxdepth", "0"), 1.0)])
    errs: list[str] = []
    assert recover_journals(LocalRunner(), state, "web01", lambda m: None, errs) == []
    assert errs == [] and not os.path.exists(path)


def test_a_refused_journal_entry_says_what_to_do(tmp_path):
    from toolkit.journal import JournalEntry
    from toolkit.recover import recover_journals
    from toolkit.runners import LocalRunner

    entry = JournalEntry(RUN, "web01", "mkdir", "/x", ("sh", "-c", "true"), (), 1.0)
    state, path = _journal(tmp_path, [entry])
    errs: list[str] = []
    recover_journals(LocalRunner(), state, "web01", lambda m: None, errs)
    assert errs == [f"{path}: mkdir /x: undo ('sh',) is not one of the tool's undo commands; "
                    "not run (inspect the journal and remove it by hand)"]


def test_a_damaged_journal_stops_recover_naming_it(tmp_path):
    from toolkit.journal import JournalEntry
    from toolkit.recover import recover_journals
    from toolkit.runners import LocalRunner

    good = JournalEntry(RUN, "web01", "mkdir", "/x", ("rmdir", "/x"), (), 1.0)
    state, path = _journal(tmp_path, ["{damaged\n", good])
    with pytest.raises(errors.ParseError, match=rf"^{path}: line 1 is not a journal entry"):
        recover_journals(LocalRunner(), state, "web01", lambda m: None, [])


def test_owned_names_in_any_of_the_hosts_volume_groups_even_with_dashes():
    from toolkit.owned import parse_owned, snapshot_partition_map

    dm_run = RUN.replace("-", "--")
    in_vg_a = f"vg_a-domubk--{dm_run}--web01--xvdap1"
    assert snapshot_partition_map(in_vg_a, ["vg_b", "vg_a"], "web01", "p")
    dashed = f"vg--data-domubk--{dm_run}--web01--xvdap2"
    assert snapshot_partition_map(dashed, ["vg-data"], "web01", "p")
    assert not snapshot_partition_map(dashed, ["vg"], "web01", "p")
    owned = parse_owned(f"domubk-{RUN}-web01-xvdap1", "web01", "p")
    assert (owned.run_id, owned.domain, owned.disk, owned.partition) == (RUN, "web01", "xvda", 1)


def _vanish(host: FakeHost, argv: tuple[str, ...]) -> None:
    """The resource an undo names goes away on its own just before the undo runs."""
    if argv[0] == "umount":
        host.mounts.pop(argv[-1], None)
    elif argv[:2] == ("dmsetup", "remove"):
        host.maps.discard(argv[-1])
        host.map_on.pop(argv[-1], None)
    elif argv[0] == "lvremove":
        host.lvs.pop(argv[-1], None)


def test_leftovers_that_go_away_before_the_sweep_undoes_them_are_no_error(killed_run):
    """Between the listing and the undo a leftover can go (another recover, an operator):
    the undo then fails, its probe says the resource is gone, and the sweep goes on
    without an error. Without the probe it would retry and fail the whole recover."""
    cfg, src, peer = killed_run
    for host, role in ((peer, "peer"), (src, "source")):
        first: dict[str, tuple[str, ...]] = {}

        def vanishing(argv, host=host, first=first):
            kind = argv[0] if argv[0] != "dmsetup" else " ".join(argv[:2])
            if kind in ("umount", "dmsetup remove", "lvremove") and kind not in first:
                first[kind] = argv
                _vanish(host, argv)
            return None

        host.fail = vanishing
        start = len(host.timeouts)
        done = sweep(host, cfg, "web01", role, lambda m: None)
        kinds = {"peer": {"umount", "dmsetup remove"},
                 "source": {"umount", "dmsetup remove", "lvremove"}}[role]
        assert set(first) == kinds
        assert host.leftovers() == [], host.leftovers()
        # each of the sweep's commands has its own bound, none left to the 600 s default
        assert all(t is not None and t <= 300 for _, t in host.timeouts[start:])
        assert done


def test_the_sweep_leaves_an_empty_run_directory_of_a_domain_whose_name_extends_ours(
        killed_run):
    """``find -name 'web01.*'`` also lists ``web01.prod.<run>``: the sweep of web01 keeps
    only its own run directories (R21)."""
    cfg, src, _peer = killed_run
    theirs = f"/run/domu-backup/src/web01.prod.{RUN}"
    src.run(["mkdir", "-p", theirs])
    done = sweep(src, cfg, "web01", "source", lambda m: None)
    assert any(m.endswith(f"removed directory /run/domu-backup/src/web01.{RUN}") for m in done)
    assert src._exists_dir(theirs)
    assert not any("web01.prod" in m for m in done)


def test_a_guest_lv_map_goes_before_the_partition_map_it_sits_on_even_when_its_name_is_shorter():
    """On the source a kpartx map of the snapshot carries the VG and doubled dashes, so it
    is longer than the guest LV map that sits on it: the order is by kind first."""
    from toolkit.recover import owned_maps

    snap_part = dm_name("vg-guests-on-ssd", SNAP) + "p2"
    lv_map = f"domubk-{RUN}-web01-src-0123456789abcdef"
    assert len(lv_map) < len(snap_part)
    assert owned_maps([snap_part, lv_map], "source", "web01", ["vg-guests-on-ssd"], "p") == [
        lv_map, snap_part]


def test_recover_reads_and_removes_each_journal_within_a_probes_bound(killed_run):
    cfg, src, peer = killed_run
    recover_domain(cfg, "web01", src, peer)
    for host in (src, peer):
        bounds = [t for argv, t in host.timeouts if argv[0] in ("cat", "rm")
                  and "/journal/" in argv[-1]]
        assert bounds and all(t is not None and t <= 120 for t in bounds), bounds


def test_a_run_directory_holding_what_the_run_did_not_make_is_left_and_named(killed_run):
    # recover removes only empty directories (rmdir): a file someone put in a run's mount
    # point keeps that directory and its run directory; everything else is removed, the
    # file is untouched, and recover says which directories it could not remove.
    cfg, src, peer = killed_run
    run_dir = f"/run/domu-backup/src/web01.{RUN}"
    keep = f"{run_dir}/xvda1"
    src.files[keep + "/notes.txt"] = "an operator's file\n"
    with pytest.raises(errors.TeardownIncomplete) as info:
        recover_domain(cfg, "web01", src, peer)
    message = str(info.value)
    assert f"command `rmdir {keep}` exited 1" in message and "Directory not empty" in message
    assert f"command `rmdir {run_dir}` exited 1" in message
    assert src.leftovers() == [f"dir {run_dir}", f"dir {keep}"] and peer.leftovers() == []
    assert src.files[keep + "/notes.txt"] == "an operator's file\n"


def test_the_sweep_keeps_a_run_directory_it_cannot_empty_and_goes_on_to_the_next(killed_run):
    """Without a journal, the sweep alone meets the run directories: one holding an
    operator's file (in a mount point of its own) is kept, file untouched, and no error
    stops the sweep, which still removes the next, empty one."""
    cfg, src, _peer = killed_run
    first, second = (f"/run/domu-backup/src/web01.{RUN}",
                     "/run/domu-backup/src/web01.20260102T000000Z-ef01")
    src.run(["mkdir", "-p", f"{second}/xvda1"])
    keep = f"{first}/xvda1"
    src.files[keep + "/notes.txt"] = "an operator's file\n"
    done = sweep(src, cfg, "web01", "source", lambda m: None)
    assert f"[dom0-a] removed directory {second}" in done
    assert not any(m.endswith(f"removed directory {first}") for m in done)
    assert src._exists_dir(keep) and not src._exists_dir(second)
    assert src.files[keep + "/notes.txt"] == "an operator's file\n"
    rmdirs = [c[-1] for c in src.calls if c[0] == "rmdir"]
    assert rmdirs.index(keep) < rmdirs.index(first) < rmdirs.index(second)


def test_a_ps_that_fails_is_never_taken_for_nothing_running(killed_run):
    """recover cannot see whether a killed run's copy still holds its mounts: it still
    undoes what it can on that host, then ends incomplete and says why."""
    from toolkit.runners import CommandResult

    cfg, src, peer = killed_run

    def no_ps(argv):
        if argv[:2] == ("ps", "-eo"):
            return CommandResult("dom0-b", argv, 1, "", "ps: cannot read /proc", 0.0)
        return None

    peer.fail = no_ps
    with pytest.raises(errors.TeardownIncomplete) as info:
        recover_domain(cfg, "web01", src, peer)
    message = str(info.value)
    assert "[dom0-b] could not list its processes" in message
    assert "ps: cannot read /proc" in message
    assert peer.leftovers() == [] and src.leftovers() == []
    assert not any(c[0] == "kill" for c in peer.calls)
