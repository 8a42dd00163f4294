"""The plan of ``verify --against-source``: the backup's flow, comparing instead of copying."""

from __future__ import annotations

from fakes import config, web01_facts

from toolkit.plan import PEER, SOURCE, plan_backup, plan_copies
from toolkit.rsync import itemized_changes

RUN = "20260101T000000Z-abcd"


def test_a_compare_plan_writes_nothing_on_the_standby(tmp_path):
    cfg = config(tmp_path)
    backup = plan_backup(web01_facts(), cfg, RUN)
    compare = plan_backup(web01_facts(), cfg, RUN, compare=True)
    assert compare.compare and not backup.compare
    actions = {s.action for s in compare.steps}
    # No marker (the standby's state is not touched), no boot area write, no point.
    assert not actions & {"marker", "bootread", "bootwrite"}
    assert {"marker", "bootwrite"} <= {s.action for s in backup.steps}
    assert compare.after == () and compare.points_kept == ()
    # The standby is mounted read-only, as the snapshot is.
    for step in (s for s in compare.steps if s.action == "mount"):
        opts = step.argv[step.argv.index("-o") + 1]
        assert opts.split(",")[0] == "ro", step.argv
    peer_opts = [s.argv[s.argv.index("-o") + 1] for s in backup.steps
                 if s.action == "mount" and s.role == PEER]
    assert all(o.split(",")[0] != "ro" for o in peer_opts)


def test_the_compare_is_a_checksum_dry_run_with_no_deletion_bound(tmp_path):
    cfg = config(tmp_path)
    compare = plan_backup(web01_facts(), cfg, RUN, compare=True)
    copies = [s for s in compare.steps if s.action == "rsync"]
    assert copies and all(s.role == SOURCE for s in copies)
    for step in copies:
        assert {"--dry-run", "--checksum", "--itemize-changes", "--delete"} <= set(step.argv)
        assert not any(a.startswith("--max-delete") for a in step.argv)
        assert "--info=progress2" not in step.argv
        assert step.note.startswith("compare ")
    # The second part of the plan (guest paths from the fstab) keeps comparing.
    again = plan_copies(compare, cfg, {f.name: "/" for f in compare.filesystems[:1]})
    assert all("--dry-run" in s.argv for s in again.steps if s.action == "rsync")
    plain = [s for s in plan_backup(web01_facts(), cfg, RUN).steps if s.action == "rsync"]
    assert all("--dry-run" not in s.argv for s in plain)


def test_itemized_changes_are_every_difference_and_nothing_else():
    out = "\n".join([
        ">fc.T...... etc/motd",
        "*deleting   var/tmp/gone",
        "cd+++++++++ srv/new/",
        ".f..t...... usr/bin/x",
        "",
        "Number of files: 1,234 (reg: 1,000, dir: 234)",
        "sent 1.23K bytes  received 45 bytes",
        "total size is 9.9M  speedup is 1.00 (DRY RUN)",
    ])
    assert itemized_changes(out) == [">fc.T...... etc/motd", "*deleting   var/tmp/gone",
                                     "cd+++++++++ srv/new/", ".f..t...... usr/bin/x"]
    assert itemized_changes("") == []


def test_a_compare_where_the_domain_does_not_run_is_an_error_not_a_quiet_skip(tmp_path,
                                                                             monkeypatch):
    from toolkit import app, errors

    def not_here(*a, **k):
        raise errors.NotRunningHere("domain web01 is not running on dom0-b")

    monkeypatch.setattr(app, "locate", not_here)
    cfg = config(tmp_path)
    backup = app.backup_domain(cfg, "web01", app.Hosts(), node="dom0-a")
    assert (backup.outcome, backup.exit_code) == ("skipped", 0)
    compare = app.backup_domain(cfg, "web01", app.Hosts(), node="dom0-a", compare=True)
    assert (compare.outcome, compare.exit_code) == ("failed", errors.UsageError.exit_code)
    assert "run verify --against-source on the Dom0 where the domain runs" in compare.message
