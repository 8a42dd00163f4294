"""Every command a run or recover starts is bounded in time, except the copy itself (rsync,
which its own keepalives and --timeout end): a hung probe or undo can never hold a snapshot
open on a live guest for ever (R17)."""

from __future__ import annotations

import pytest
from fakes import FakeHost, config, web01_facts

from toolkit.execute import Executor
from toolkit.plan import plan_backup
from toolkit.recover import recover_domain
from toolkit.report import DomainReport
from toolkit.runners import NO_LIMIT

RUN = "20260101T000000Z-0001"


def unbounded(host: FakeHost) -> list[tuple[str, ...]]:
    """Commands run without a time bound, but for rsync (tied to the run's life)."""
    return [argv for argv, timeout in host.timeouts
            if timeout == NO_LIMIT
            and argv[:5] != ("setpriv", "--pdeathsig", "KILL", "--", "rsync")]


def test_a_run_bounds_every_command_but_the_copy(tmp_path):
    cfg = config(tmp_path)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01")).run()
    copies = [argv for argv, t in src.timeouts if t == NO_LIMIT]
    assert copies and all(argv[4] == "rsync" for argv in copies), copies
    assert unbounded(src) == [] and unbounded(peer) == []
    # None is the runner's own bound (command_timeout, 600 s here)
    assert all(t <= 600 for _, t in src.timeouts + peer.timeouts
               if t is not None and t != NO_LIMIT)


def test_recover_bounds_every_command(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    monkeypatch.setattr(Executor, "_teardown", lambda self: None)  # killed after the copy
    cfg = config(tmp_path)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01")).run()
    monkeypatch.undo()
    monkeypatch.setattr("time.sleep", lambda s: None)
    for h in (src, peer):
        h.timeouts.clear()
        for path in [f for f in h.files if f.endswith(".jsonl")]:
            del h.files[path]  # no journal: the sweep's own probes and undos run too
    assert recover_domain(cfg, "web01", src, peer)
    assert src.timeouts and peer.timeouts
    for h in (src, peer):
        assert [argv for argv, t in h.timeouts if t is None or t > 600] == [], h.host
        # its probes (what is mounted, mapped, left, running) have short bounds of their own
        probes = [(argv, t) for argv, t in h.timeouts
                  if argv[0] in ("findmnt", "lvs", "vgs", "find", "cat", "ps")
                  or argv[:2] == ("dmsetup", "info")]
        assert probes and all(t is not None and t <= 120 for _, t in probes), h.host


@pytest.mark.parametrize("role", ["source", "peer"])
def test_the_start_of_run_inventory_bounds_every_probe(tmp_path, role):
    from toolkit.recover import take_inventory

    host = FakeHost("dom0-a")
    take_inventory(host, config(tmp_path), role)
    assert host.timeouts and all(t is not None and t <= 120 for _, t in host.timeouts)


def test_a_runs_probes_and_marker_writes_have_short_bounds_of_their_own(tmp_path):
    """A probe (is it mounted, does the node exist, what does the marker say) and the marker
    write are bounded at 120 s at most, whatever the configured command timeout; none is
    left to a runner's default."""
    from dataclasses import replace

    from toolkit.journal import unwrap_replace

    cfg = config(tmp_path)
    cfg = replace(cfg, ssh=replace(cfg.ssh, command_timeout=900.0))
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01")).run()
    calls = src.timeouts + peer.timeouts
    probes = [(a, t) for a, t in calls
              if a[0] in ("cat", "findmnt", "stat", "lvs", "readlink", "test", "find")]
    assert {a[0] for a, _ in probes} >= {"cat", "findmnt", "stat", "lvs", "test"}
    assert all(t is not None and t <= 120 for _, t in probes), probes
    marker = [t for a, t in peer.timeouts if (unwrap_replace(a) or "").endswith(".json")]
    assert marker and all(t is not None and t <= 120 for t in marker), marker
    steps = [t for a, t in calls if a[0] in ("lvcreate", "mount", "kpartx")]
    assert steps and set(steps) == {900.0}  # the steps take the configured bound
