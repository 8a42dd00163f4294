"""The plan is what runs: every command a run sends to either host is in its plan.

A step's command, its undo and exists-probe, and its read-only probes are the whole of
what the executor may run; the only others are the journal's own (its directory, the
entry written with each step, its removal) and the batches of planned commands. The
copies are planned a second time once the guest's fstab is read, and that second part
is what runs.
"""

from __future__ import annotations

import posixpath

import pytest
from fakes import FakeHost, config, web01_facts

from toolkit.execute import Executor
from toolkit.journal import journal_dir, unwrap_journalled
from toolkit.plan import plan_backup, render_plan
from toolkit.report import DomainReport
from toolkit.step_batch import unwrap_reads, unwrap_step_batch
from toolkit.undo import unwrap_undo_batch

RUN = "20260101T000000Z-abcd"


def _planned(steps) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for s in steps:
        out |= {tuple(s.argv), tuple(s.undo), tuple(s.exists), *map(tuple, s.probes)}
    out.discard(())
    return out


def _unplanned(host: FakeHost, planned: set[tuple[str, ...]], state_dir: str) -> list:
    journals = journal_dir(state_dir)
    left = []
    for call in host.calls:
        wrapped = unwrap_journalled(call)
        if wrapped is not None:
            path, inner = wrapped
            if posixpath.dirname(path) == journals and tuple(inner) in planned:
                continue  # the entry, then the step's own command (checked on its own)
        elif call in planned:
            continue
        elif (batch := unwrap_undo_batch(call)) is not None and all(
                tuple(u) in planned for u in batch):
            continue  # the teardown's undos in one command, then each (checked on its own)
        elif (reads := unwrap_reads(call)) is not None and all(
                tuple(r) in planned for r in reads[1]):
            continue  # a row of checks' probes in one command, then each (checked on its own)
        elif (steps := unwrap_step_batch(call)) is not None and all(
                s.argv in planned and posixpath.dirname(s.journal) in ("", journals)
                for s in steps):
            continue  # a row of steps in one command, then each (checked on its own)
        elif call in (("mkdir", "-p", "-m", "0700", journals),) or (
                call[:2] == ("rm", "-f") and posixpath.dirname(call[-1]) == journals):
            continue
        left.append(call)
    return left


@pytest.mark.parametrize("fstab_on", ["xvda1", None])
def test_every_command_a_run_sends_is_in_its_plan(tmp_path, monkeypatch, fstab_on):
    monkeypatch.setattr("time.sleep", lambda s: None)
    cfg = config(tmp_path)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = fstab_on or "xvda1"
    if fstab_on is None:  # the config names every guest path: the guest's fstab is not read
        from dataclasses import replace

        dom = cfg.domains["web01"]
        cfg = replace(cfg, domains={**cfg.domains, "web01": replace(
            dom, mounts={"xvda1": "/", "xvda5": "/srv", "xvda6": "/boot/efi"})})
    plan = plan_backup(web01_facts(), cfg, RUN)
    ex = Executor(plan, cfg, src, peer, DomainReport("web01"))
    ex.run()
    planned = _planned(plan.steps) | _planned(ex.plan.steps)
    state_dir = cfg.defaults.state_dir
    assert _unplanned(src, planned, state_dir) == []
    assert _unplanned(peer, planned, state_dir) == []
    # what ran is the second part: the copies with the excludes of their guest paths
    rsyncs = [s for s in ex.plan.steps if s.action == "rsync"]
    ran = [c for c in src.calls if c in {tuple(s.argv) for s in rsyncs}]
    assert len(ran) == len(rsyncs) == 3
    if fstab_on is None:
        assert [s.argv for s in ex.plan.steps] == [s.argv for s in plan.steps]
        assert not any(c[0] in ("readlink", "cat") and c[-1].endswith("/etc/fstab")
                       for c in src.calls)


def test_the_printed_plan_shows_each_probe_and_no_command_that_does_not_exist(tmp_path):
    text = render_plan(plan_backup(web01_facts(), config(tmp_path), RUN))
    for fake in ("flock --nonblock", "guest-fstab", "standby-marker"):
        assert fake not in text
    assert "read: stat -L --format %t:%T" in text
    assert "read: find /run/domu-backup/src/web01." in text
    assert "read: readlink -e -- /run/domu-backup/src/web01." in text
    assert "lock     (in this process)" in text


def test_the_second_part_changes_only_the_copies_and_gives_each_filesystem_its_guest_path(
        tmp_path):
    from toolkit.plan import plan_copies

    cfg = config(tmp_path)
    plan = plan_backup(web01_facts(), cfg, RUN)
    second = plan_copies(plan, cfg, {"xvda1": "/", "xvda5": "/srv"})
    assert [(s.role, s.action) for s in second.steps] == [(s.role, s.action) for s in plan.steps]
    changed = {s.action for old, s in zip(plan.steps, second.steps, strict=True) if s != old}
    assert changed == {"rsync"}
    assert {f.name: f.guest_path for f in second.filesystems} == {
        "xvda1": "/", "xvda5": "/srv", "xvda6": None}
    assert plan_copies(second, cfg, {"xvda1": "/", "xvda5": "/srv"}) == second


def test_the_second_part_is_logged_as_the_plan_prints_its_steps(tmp_path, monkeypatch):
    from toolkit.plan import render_steps

    monkeypatch.setattr("time.sleep", lambda s: None)
    cfg = config(tmp_path)
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan = plan_backup(web01_facts(), cfg, RUN)
    lines: list[str] = []
    ex = Executor(plan, cfg, src, peer, DomainReport("web01"), log=lines.append)
    ex.run()
    changed = [(n, s) for n, (old, s) in enumerate(zip(plan.steps, ex.plan.steps, strict=True), 1)
               if s != old]
    assert changed and all(s.action == "rsync" for _, s in changed)
    start = lines.index("plan, second part (the copies with the guest paths from the guest's "
                        "fstab):")
    shown = render_steps(ex.plan, changed)
    assert lines[start + 1:start + 1 + len(shown)] == shown
    assert shown[0].startswith(f"{changed[0][0]:>3}. [dom0-a] rsync    ")
    # the same lines `plan` prints for those steps
    printed = render_plan(ex.plan).splitlines()
    assert all(line in printed for line in shown)
