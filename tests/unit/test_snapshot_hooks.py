"""The hooks around the snapshots (R26): pre_snapshot right before the first, post_snapshot
right after the last, and post_snapshot always once pre_snapshot ran: on error, on a signal
(teardown), and through recover after a kill (from the config, never from the journal)."""

from __future__ import annotations

import pytest
from fakes import CONFIG_TEXT, FakeHost, web01_facts

from toolkit import errors
from toolkit.config import parse_config
from toolkit.execute import Executor
from toolkit.plan import plan_backup
from toolkit.recover import _unexpected_undo, recover_journals
from toolkit.report import DomainReport
from toolkit.runners import CommandResult
from toolkit.snapshot_hooks import HOOK_UNDO, flag_path

RUN = "20260101T000000Z-abcd"
PRE, POST = "/usr/local/sbin/db-flush", "/usr/local/sbin/db-resume"


def hooks_config(tmp_path, pre=(PRE, "web01"), post=(POST, "web01"), timeout=30):
    text = CONFIG_TEXT.format(state=tmp_path / "state", lock=tmp_path / "lock")
    words = lambda argv: "[" + ", ".join(f'"{w}"' for w in argv) + "]"  # noqa: E731
    text += (f"[defaults.hooks]\npre_snapshot = {words(pre)}\npost_snapshot = {words(post)}\n"
             f"timeout = {timeout}\n")
    return parse_config(text, tmp_path / "backup.toml")


class HookHost(FakeHost):
    """The source, where the hooks are programs that exit as told."""

    def __init__(self, codes=None, **kw):
        super().__init__("dom0-a", **kw)
        self.codes = dict(codes or {})
        self.fstab_on = "xvda1"

    def _answer(self, a, input):
        if a[0] in (PRE, POST):
            return self.codes.get(a[0], 0), "", ("hook said no\n" if self.codes.get(a[0])
                                                 else "")
        return super()._answer(a, input)


def order(host):
    """The hooks and the snapshots, in the order the source ran them."""
    return [c[0] if c[0] in (PRE, POST) else "lvcreate" for c in host.calls
            if c[0] in (PRE, POST, "lvcreate")]


def test_no_hook_no_step_and_the_plan_is_unchanged(tmp_path):
    plan = plan_backup(web01_facts(), hooks_config(tmp_path, pre=(), post=()), RUN)
    assert not [s for s in plan.steps if s.action in ("prehook", "posthook")]


def test_the_plan_shows_the_hooks_around_the_snapshot(tmp_path):
    plan = plan_backup(web01_facts(), hooks_config(tmp_path), RUN)
    actions = [s.action for s in plan.steps]
    i = actions.index("snapshot")
    assert actions[i - 1:i + 2] == ["prehook", "snapshot", "posthook"]
    pre = plan.steps[i - 1]
    assert pre.argv == (PRE, "web01") and pre.undo[0] == HOOK_UNDO
    assert pre.resource == flag_path(str(tmp_path / "state"), "web01", RUN)


def test_the_hooks_run_in_order_around_the_snapshot_and_the_flag_goes(tmp_path):
    cfg = hooks_config(tmp_path)
    src, peer = HookHost(), FakeHost("dom0-b")
    report = DomainReport("web01")
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    assert order(src) == [PRE, "lvcreate", POST]
    assert report.hooks == [f"pre_snapshot: `{PRE} web01` exited 0",
                            f"post_snapshot: `{POST} web01` exited 0"]
    assert flag_path(cfg.defaults.state_dir, "web01", RUN) not in src.files
    assert src.leftovers() == [] and peer.leftovers() == []
    assert "hooks" in report.phases


def test_a_failing_pre_snapshot_takes_no_snapshot_and_post_snapshot_still_runs(tmp_path):
    cfg = hooks_config(tmp_path)
    src, peer = HookHost({PRE: 3}), FakeHost("dom0-b")
    report = DomainReport("web01")
    with pytest.raises(errors.PreSnapshotFailed, match="exited 3: hook said no") as exc:
        Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    assert exc.value.exit_code == 38
    assert order(src) == [PRE, POST]
    assert report.hooks[-1] == f"post_snapshot: `{POST} web01` exited 0 (in teardown)"
    assert src.leftovers() == [] and peer.leftovers() == []
    assert not [p for p in src.files if "/journal/" in p]


def test_a_snapshot_that_fails_after_pre_snapshot_runs_post_snapshot_in_teardown(tmp_path):
    cfg = hooks_config(tmp_path)

    def no_snapshot(argv):
        if argv[0] == "lvcreate":
            return CommandResult("dom0-a", argv, 5, "", "  Insufficient free space\n", 0.0)
        return None
    src, peer = HookHost(fail=no_snapshot), FakeHost("dom0-b")
    with pytest.raises(errors.ToolkitError):
        Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer,
                 DomainReport("web01")).run()
    assert order(src) == [PRE, "lvcreate", POST]
    assert src.leftovers() == []


def test_only_post_snapshot_configured_still_runs_right_after_the_snapshot(tmp_path):
    cfg = hooks_config(tmp_path, pre=())
    src, peer = HookHost(), FakeHost("dom0-b")
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01")).run()
    assert order(src) == ["lvcreate", POST]


def test_a_failing_post_snapshot_is_tried_again_in_teardown_then_left_for_recover(tmp_path):
    cfg = hooks_config(tmp_path)
    src, peer = HookHost({POST: 1}), FakeHost("dom0-b")
    report = DomainReport("web01")
    with pytest.raises(errors.TeardownIncomplete, match="post_snapshot"):
        Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    assert order(src) == [PRE, "lvcreate", POST, POST]
    flag = flag_path(cfg.defaults.state_dir, "web01", RUN)
    assert flag in src.files  # still owed
    # recover runs it once it works, from the config, and the flag and journal go.
    src.codes = {}
    errs: list[str] = []
    done = recover_journals(src, cfg.defaults.state_dir, "web01", lambda m: None, errs, cfg)
    assert errs == [] and done
    assert order(src)[-1] == POST and flag not in src.files
    assert not [p for p in src.files if "/journal/" in p]


def test_recover_after_a_kill_between_pre_snapshot_and_the_snapshot_runs_post_snapshot(
        tmp_path):
    cfg = hooks_config(tmp_path)

    class Killed(BaseException):
        pass

    def killed(argv):
        if argv[0] == "lvcreate":
            raise Killed
        return None
    src, peer = HookHost(fail=killed), FakeHost("dom0-b")
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01"))
    ex._teardown = lambda: None  # SIGKILL: no teardown runs
    with pytest.raises(Killed):
        ex.run()
    assert order(src) == [PRE, "lvcreate"]  # killed as lvcreate started
    src.fail = None
    lines: list[str] = []
    done = recover_journals(src, cfg.defaults.state_dir, "web01", lines.append, [], cfg)
    assert order(src) == [PRE, "lvcreate", POST] and done
    assert any("post_snapshot" in m and "by recover" in m for m in lines)
    # Twice is once.
    assert recover_journals(src, cfg.defaults.state_dir, "web01", lines.append, [], cfg) == []
    assert order(src) == [PRE, "lvcreate", POST]


@pytest.mark.parametrize(("undo", "exists"), [
    ((HOOK_UNDO, "post_snapshot", "/etc/passwd"), ("find", "/etc/passwd", "-maxdepth", "0")),
    ((HOOK_UNDO, "pre_snapshot", "/s/journal/w.R.post_snapshot"),
     ("find", "/s/journal/w.R.post_snapshot", "-maxdepth", "0")),
    ((HOOK_UNDO, "post_snapshot", "/s/journal/w.R.post_snapshot"), ("lvs",)),
    ((HOOK_UNDO, "post_snapshot", "/s/../etc/x.post_snapshot"),
     ("find", "/s/../etc/x.post_snapshot", "-maxdepth", "0")),
])
def test_recover_accepts_only_the_flags_own_shape(undo, exists):
    assert _unexpected_undo(undo, exists) != ""


def test_a_flag_outside_the_state_directorys_journal_is_refused():
    """R20: recover removes the flag it finds in a journal; one named anywhere else (even
    with the flag's own shape) is not the tool's, whatever the journal says."""
    flag = "/tmp/elsewhere/web01.R.post_snapshot"
    assert _unexpected_undo((HOOK_UNDO, "post_snapshot", flag), ("find", flag, "-maxdepth",
                                                                  "0"),
                            state_dir="/var/lib/domu-backup") != ""
    ok = "/var/lib/domu-backup/journal/web01.R.post_snapshot"
    assert _unexpected_undo((HOOK_UNDO, "post_snapshot", ok), ("find", ok, "-maxdepth", "0"),
                            state_dir="/var/lib/domu-backup") == ""


def test_the_flags_own_shape_is_accepted():
    flag = "/var/lib/domu-backup/journal/web01.R.post_snapshot"
    assert _unexpected_undo((HOOK_UNDO, "post_snapshot", flag),
                            ("find", flag, "-maxdepth", "0")) == ""


# -- freeze = "agent" -------------------------------------------------------------------

def freeze_config(tmp_path, fallback="refuse", hooks=True):
    cfg = hooks_config(tmp_path) if hooks else hooks_config(tmp_path, pre=(), post=())
    text = CONFIG_TEXT.format(state=tmp_path / "state", lock=tmp_path / "lock").replace(
        'excludes = ["/var/cache/*"]',
        f'excludes = ["/var/cache/*"]\nfreeze = "agent"\nfreeze_fallback = "{fallback}"')
    if hooks:
        text += (f'[defaults.hooks]\npre_snapshot = ["{PRE}", "web01"]\n'
                 f'post_snapshot = ["{POST}", "web01"]\n')
    del cfg
    return parse_config(text, tmp_path / "backup.toml")


class AgentHost(HookHost):
    """A source whose guest agent freezes (or does not answer), keeping the state."""

    def __init__(self, answers=True, **kw):
        super().__init__(**kw)
        self.answers = answers
        self.frozen = False

    def _answer(self, a, input):
        if a[0] == "virsh" and a[3] in ("domfsfreeze", "domfsthaw"):
            if not self.answers:
                return 1, "", ("error: Guest agent is not responding: QEMU guest agent is not "
                               "connected\n")
            was, self.frozen = self.frozen, a[3] == "domfsfreeze"
            n = 0 if was == self.frozen else 2
            return 0, f"{'Froze' if self.frozen else 'Thawed'} {n} filesystem(s)\n\n", ""
        return super()._answer(a, input)


def steps_of(host):
    return [c[3] if c[0] == "virsh" else (c[0] if c[0] in (PRE, POST) else "lvcreate")
            for c in host.calls
            if c[0] in (PRE, POST, "lvcreate")
            or (c[0] == "virsh" and c[3] in ("domfsfreeze", "domfsthaw"))]


def test_the_guest_is_frozen_between_the_hooks_for_the_snapshot_only(tmp_path):
    cfg = freeze_config(tmp_path)
    src, peer = AgentHost(), FakeHost("dom0-b")
    report = DomainReport("web01")
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    assert steps_of(src) == [PRE, "domfsfreeze", "lvcreate", "domfsthaw", POST]
    assert not src.frozen
    assert report.freeze.startswith("frozen ") and "by the guest agent" in report.freeze
    assert not [p for p in src.files if p.endswith(".thaw")]
    assert src.leftovers() == [] and peer.leftovers() == []


def test_an_agent_that_does_not_answer_refuses_the_run_before_any_snapshot(tmp_path):
    cfg = freeze_config(tmp_path)
    src, peer = AgentHost(answers=False), FakeHost("dom0-b")
    with pytest.raises(errors.FreezeFailed, match="Guest agent is not responding") as exc:
        Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer,
                 DomainReport("web01")).run()
    assert exc.value.exit_code == 39
    assert "lvcreate" not in steps_of(src) and steps_of(src)[-1] == POST
    assert src.leftovers() == []


def test_or_goes_on_crash_consistent_and_says_so(tmp_path):
    cfg = freeze_config(tmp_path, fallback="crash-consistent", hooks=False)
    src, peer = AgentHost(answers=False), FakeHost("dom0-b")
    report = DomainReport("web01")
    Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, report).run()
    assert report.freeze.startswith("crash-consistent: the guest agent did not freeze")
    assert [c for c in src.calls if "rsync" in c]  # the copy went on
    # Nothing was frozen, so no thaw is owed or tried.
    assert steps_of(src) == ["domfsfreeze", "lvcreate"]
    assert src.leftovers() == [] and peer.leftovers() == []


def test_a_failure_while_frozen_thaws_in_teardown(tmp_path):
    cfg = freeze_config(tmp_path, hooks=False)

    def no_snapshot(argv):
        if argv[0] == "lvcreate":
            return CommandResult("dom0-a", argv, 5, "", "  Insufficient free space\n", 0.0)
        return None
    src, peer = AgentHost(fail=no_snapshot), FakeHost("dom0-b")
    with pytest.raises(errors.ToolkitError):
        Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer,
                 DomainReport("web01")).run()
    assert steps_of(src) == ["domfsfreeze", "lvcreate", "domfsthaw"] and not src.frozen


def test_recover_thaws_a_guest_a_killed_run_left_frozen(tmp_path):
    cfg = freeze_config(tmp_path, hooks=False)

    class Killed(BaseException):
        pass

    def killed(argv):
        if argv[0] == "lvcreate":
            raise Killed
        return None
    src, peer = AgentHost(fail=killed), FakeHost("dom0-b")
    ex = Executor(plan_backup(web01_facts(), cfg, RUN), cfg, src, peer, DomainReport("web01"))
    ex._teardown = lambda: None  # SIGKILL: no teardown runs
    with pytest.raises(Killed):
        ex.run()
    assert src.frozen
    src.fail = None
    lines: list[str] = []
    assert recover_journals(src, cfg.defaults.state_dir, "web01", lines.append, [], cfg)
    assert not src.frozen and any("thawed web01" in m for m in lines)
    # The URI is the config's: the journal names only the flag.
    thaw = [c for c in src.calls if c[0] == "virsh" and c[3] == "domfsthaw"][-1]
    assert thaw[2] == cfg.hypervisor_uri
