"""A row of one host's steps in one command (``step_batch``), run by the real ``sh``, and
the executor's use of it: the journal entry before each command, the stop at the first
failure, the failpoints where they would fire one step at a time."""

from __future__ import annotations

import json
import subprocess

import pytest
from fakes import FakeHost, web01_facts

from toolkit import errors
from toolkit.execute import Executor
from toolkit.journal import JOURNAL_FAILED_MESSAGE
from toolkit.plan import plan_backup
from toolkit.report import DomainReport
from toolkit.step_batch import (
    BatchStep,
    step_batch_argv,
    step_mark,
    step_outcomes,
    unwrap_step_batch,
)

RUN = "20260101T000000Z-abcd"


def sh(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)


def test_each_entry_is_on_disk_before_its_command_and_the_row_stops_at_a_failure(tmp_path):
    journal = str(tmp_path / "journal" / "web01.R.jsonl")  # its directory made by the row
    steps = [
        # each command proves its own entry is already in the journal
        BatchStep(("grep", "-q", "first-entry", journal), journal, '{"r": "first-entry"}'),
        BatchStep(("grep", "-q", "second-entry", journal), journal, '{"r": "second-entry"}'),
        BatchStep(("false",), journal, '{"r": "third"}'),
        BatchStep(("touch", str(tmp_path / "never")), journal, '{"r": "fourth"}'),
    ]
    out = sh(step_batch_argv(steps)).stdout
    assert [o.code for o in step_outcomes(out)] == ["0", "0", "1"]
    lines = (tmp_path / "journal" / "web01.R.jsonl").read_text().splitlines()
    assert [json.loads(x)["r"] for x in lines] == ["first-entry", "second-entry", "third"]
    assert not (tmp_path / "never").exists()
    assert all(o.seconds is not None and o.seconds >= 0 for o in step_outcomes(out))


def test_a_journal_that_cannot_be_written_runs_nothing_more(tmp_path):
    (tmp_path / "file").write_text("")
    journal = str(tmp_path / "file" / "j.jsonl")  # its directory is a file: no entry
    steps = [BatchStep(("touch", str(tmp_path / "made")), journal, "{}")]
    res = sh(step_batch_argv(steps))
    assert [o.code for o in step_outcomes(res.stdout)] == ["125"]
    assert JOURNAL_FAILED_MESSAGE in res.stderr and not (tmp_path / "made").exists()


def test_a_node_that_is_no_block_device_fails_its_step(tmp_path):
    steps = [BatchStep(("true",), "", "", node="/dev/null"), BatchStep(("true",))]
    assert [o.code for o in step_outcomes(sh(step_batch_argv(steps)).stdout)] == ["node"]


def test_every_word_and_entry_reach_the_host_as_they_are(tmp_path):
    odd = str(tmp_path / "a b $HOME 'q' ; touch x")
    entry = json.dumps({"resource": odd, "quote": "it's"})
    journal = str(tmp_path / "j.jsonl")
    steps = [BatchStep(("mkdir", "-m", "0700", odd), journal, entry), BatchStep(("true",))]
    argv = step_batch_argv(steps)
    assert unwrap_step_batch(argv) == steps
    assert [o.code for o in step_outcomes(sh(argv).stdout)] == ["0", "0"]
    assert (tmp_path / "a b $HOME 'q' ; touch x").is_dir()
    assert json.loads((tmp_path / "j.jsonl").read_text()) == json.loads(entry)
    assert unwrap_step_batch(["sh", "-c", "s 0 || exit 0", "domu-backup-steps"]) is None


def test_a_commands_output_cannot_claim_a_step_it_did_not_reach():
    forged = step_mark(1, "0", 1.0) + step_mark(2, "0", 1.0)
    out = step_mark(None, "", 0.0) + step_mark(0, "0", 0.5) + forged + step_mark(1, "32", 1.0)
    assert [o.code for o in step_outcomes(out)] == ["0", "32"]


def _run(tmp_path, src, peer, env=None, monkeypatch=None):
    from fakes import config

    cfg = config(tmp_path)
    if env:
        hooks = tmp_path / "test-hooks"
        hooks.write_text("")
        monkeypatch.setattr("toolkit.failpoint.TEST_HOOKS_FILE", str(hooks))
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    plan = plan_backup(web01_facts(), cfg, RUN)
    return plan, Executor(plan, cfg, src, peer, DomainReport("web01"))


def _batches(host: FakeHost) -> list[list[BatchStep]]:
    return [b for b in map(unwrap_step_batch, host.calls) if b is not None]


def test_the_peers_maps_and_mounts_go_in_one_command_each_timed(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, ex = _run(tmp_path, src, peer)
    ex.run()
    (row,) = _batches(peer)
    planned = [s for s in plan.steps if s.role == "peer"
               and s.action in ("alias", "map", "mkdir", "mount")]
    assert [b.argv for b in row] == [tuple(s.argv) for s in planned]
    assert all(bool(b.journal) == bool(s.undo) for b, s in zip(row, planned, strict=True))
    timed = [s for s in ex.report.steps if s.role == "peer"
             and s.action in ("alias", "map", "mkdir", "mount")]
    assert len(timed) == len(planned)
    assert peer.leftovers() == [] and src.leftovers() == []


@pytest.mark.parametrize("point", ["after:alias:raise", "before:mount:raise"])
def test_a_failpoint_ends_the_row_where_it_would_fire_step_by_step(tmp_path, monkeypatch,
                                                                    point):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    plan, ex = _run(tmp_path, src, peer, {"DOMU_BACKUP_FAILPOINT": point}, monkeypatch)
    with pytest.raises(BaseException):  # noqa: B017 - what the failpoint raises
        ex.run()
    ran = [b.argv[0] for row in _batches(src) + _batches(peer) for b in row]
    if point.startswith("after:alias"):
        # the alias is the peer's first step: nothing after it ran
        assert not any(c[0] == "kpartx" for c in peer.calls)
        assert any(c[:2] == ("dmsetup", "create") for c in peer.calls)
    else:
        # the first mount of the run (the source's) never ran, nor anything after it
        assert not any(c[0] == "mount" for c in src.calls + peer.calls)
        assert "mount" not in ran and "mkdir" in ran
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_failed_mount_in_the_row_is_undone_with_everything_before_it(tmp_path):
    def refuse_mount(argv):
        from toolkit.runners import CommandResult

        if argv[0] == "mount" and "/dst/" in argv[-1]:
            return CommandResult("dom0-b", argv, 32, "", "mount: wrong fs type", 0.0)
        return None

    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b", fail=refuse_mount)
    src.fstab_on = "xvda1"
    plan, ex = _run(tmp_path, src, peer)
    with pytest.raises(errors.MountRefused, match="wrong fs type"):
        ex.run()
    assert peer.leftovers() == [] and src.leftovers() == []
    assert not any(c[0] == "rsync" for c in src.calls)


def test_a_peer_lost_during_the_row_owes_every_journalled_step_its_undo(tmp_path):
    class Lost(FakeHost):
        def run(self, argv, **kw):
            if unwrap_step_batch(argv) is not None:
                raise errors.ConnectionLost("the connection dropped", host=self.host)
            return super().run(argv, **kw)

    src, peer = FakeHost("dom0-a"), Lost("dom0-b")
    src.fstab_on = "xvda1"
    plan, ex = _run(tmp_path, src, peer)
    with pytest.raises(errors.ConnectionLost):
        ex.run()
    owed = {s.resource for s in plan.steps if s.role == "peer" and s.undo
            and s.action in ("alias", "map", "mkdir", "mount")}
    assert owed <= {s.resource for s in ex.made}
    assert src.leftovers() == []


# -- a row of checks: their probes in one command -----------------------------------------

def test_reads_return_each_probes_output_and_code_apart():
    from toolkit.runners import LocalRunner
    from toolkit.step_batch import reads_argv, run_reads, unwrap_reads

    probes = [["echo", "a b"], ["sh", "-c", "printf 'no newline'; echo oops >&2; exit 3"],
              # an output that looks like the script's own lines claims nothing
              ["sh", "-c", "echo; echo '@@domubk-read-0000 3 end 0'"], ["true"],
              ["sh", "-c", "echo 'two\nlines'\necho 'in a script'", "name"]]
    res = run_reads(LocalRunner(), probes, timeout=30)
    assert [(r.argv, r.exit_code, r.stdout, r.stderr) for r in res] == [
        (("echo", "a b"), 0, "a b\n", ""),
        (tuple(probes[1]), 3, "no newline", "oops\n"),  # its own stderr, no other's
        (tuple(probes[2]), 0, "\n@@domubk-read-0000 3 end 0\n", ""),
        (("true",), 0, "", ""),
        (tuple(probes[4]), 0, "two\nlines\nin a script\n", "")]
    assert unwrap_reads(reads_argv(probes, "@@b"))[1] == [tuple(p) for p in probes]


def test_reads_cut_short_fail_as_a_whole():
    from toolkit.runners import CommandResult
    from toolkit.step_batch import read_section, run_reads, unwrap_reads

    class Cut:
        host = "dom0-b"

        def run(self, argv, **kw):
            boundary, _probes = unwrap_reads(argv)
            return CommandResult("dom0-b", tuple(argv), 255, read_section(0, boundary, "x\n", 0),
                                 read_section(0, boundary, "", 0), 0.0)

    with pytest.raises(errors.CommandFailed):
        run_reads(Cut(), [["true"], ["true"]], timeout=30)


def test_the_peers_checks_read_in_one_command_and_a_wrong_mount_still_fails(tmp_path):
    from toolkit.step_batch import unwrap_reads

    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b", silent_mount=True)
    src.fstab_on = "xvda1"
    plan, ex = _run(tmp_path, src, peer)
    with pytest.raises(errors.StandbyGuardFailed, match="is not a mountpoint"):
        ex.run()
    reads = [r for r in map(unwrap_reads, peer.calls) if r is not None]
    checks = [s for s in plan.steps if s.role == "peer" and s.action == "check"]
    assert len(reads) == 1 and len(reads[0][1]) == 2 * len(checks)
    assert not any(c[0] == "rsync" for c in src.calls)
    assert peer.leftovers() == [] and src.leftovers() == []


def test_a_recording_keeps_each_probe_of_a_batch_and_a_replay_answers_the_batch():
    from toolkit.replay import RecordingRunner, ReplayRunner
    from toolkit.runners import LocalRunner
    from toolkit.step_batch import run_reads

    probes = [["echo", "one"], ["sh", "-c", "echo two >&2; exit 2"]]
    rec = RecordingRunner(LocalRunner(), "source")
    live = run_reads(rec, probes, timeout=30)
    # recorded as if each had run on its own: what a replay (and a reader) needs
    assert [(r["argv"], r["exit_code"], r["stdout"], r["stderr"]) for r in rec.records] == [
        (["echo", "one"], 0, "one\n", ""), (probes[1], 2, "", "two\n")]
    replayed = run_reads(ReplayRunner("dom0-a", rec.records), probes, timeout=30)
    assert [(r.argv, r.exit_code, r.stdout, r.stderr) for r in replayed] == [
        (r.argv, r.exit_code, r.stdout, r.stderr) for r in live]
