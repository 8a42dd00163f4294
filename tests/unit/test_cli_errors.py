"""Every error reaches the operator as one line and a documented exit code (R27).

Each case goes through the command line (``toolkit.cli.run``, or the program in
a subprocess where the process itself matters: a closed pipe, a signal), with a
config in a temp directory, and checks the exit code and that stderr is one line
without a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_errors import DOCUMENTED_CODES

from toolkit import app, errors
from toolkit.facts.lvm import lvs_argv

ROOT = Path(__file__).resolve().parents[2]
REPLAY = ROOT / "fixtures" / "replay" / "web01-on-dom0-a.json"
SANDBOX = ROOT / "fixtures" / "sandbox" / "backup.toml"

CONFIG = """
[cluster.dom0s]
dom0-a = "ssh://root@127.0.0.1:2"
dom0-b = "{peer}"
[hypervisor]
uri = "test:///default"
[ssh]
key = "{tmp}/id_ed25519"
known_hosts = "{tmp}/known_hosts"
connect_timeout = 2
[defaults]
state_dir = "{tmp}/state"
lock_dir = "{lock}"
report_dir = "{tmp}/reports"
[domains.web01]
peer = "dom0-b"
[domains.db01]
peer = "dom0-b"
"""

_BACKUP_DOMAIN = app.backup_domain
# The README's codes as test_errors writes them out by hand, not read back from the classes.
DOCUMENTED = {code for code, _name in DOCUMENTED_CODES if isinstance(code, int)}


def _config(tmp_path: Path, *, peer: str = "ssh://root@127.0.0.1:1", lock: str = "") -> Path:
    for name in ("id_ed25519", "known_hosts"):
        (tmp_path / name).write_text("")
        (tmp_path / name).chmod(0o600)
    path = tmp_path / "backup.toml"
    path.write_text(CONFIG.format(tmp=tmp_path, peer=peer, lock=lock or tmp_path / "lock"))
    path.chmod(0o600)
    return path


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    from toolkit import cli as program

    code = program.finish(program.run(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, f"stderr is not one line: {err!r}"
    return lines[0]


@pytest.fixture
def as_root(monkeypatch):
    """The commands' root check passes; files stay trusted as the test user's own (the tool
    trusts root and the user it runs as), so this runs as any user."""
    monkeypatch.setattr("toolkit.config.check_root", lambda: None)


# --- the last-resort handler and invoke's own usage errors -----------------------


def test_an_oserror_escaping_a_task_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    def too_long(*_a, **_k):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG),
                      "/run/lock/domu-backup/" + "x" * 300 + ".lock")

    monkeypatch.setattr("toolkit.app.make_plan", too_long)
    code, _out, err = cli(capsys, "plan", "--domu", "web01", "--config", str(_config(tmp_path)))
    assert code == 2
    assert one_line(err).startswith("error: File name too long: /run/lock/domu-backup/x")


def test_any_unexpected_exception_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    def boom(*_a, **_k):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr("toolkit.app.make_plan", boom)
    code, _out, err = cli(capsys, "plan", "--domu", "web01", "--config", str(_config(tmp_path)))
    assert code == 2
    line = one_line(err)
    assert line.startswith("error: ") and "RuntimeError" in line and "unexpected" in line


@pytest.mark.parametrize("argv", [
    ["exit-codes", "--bogus"],
    ["plan"],
    ["no-such-command"],
    ["plan", "--domu", "web01", "--config"],
])
def test_invoke_usage_errors_exit_4_in_one_line(capsys, argv):
    code, _out, err = cli(capsys, *argv)
    assert code == errors.UsageError.exit_code
    assert one_line(err).startswith("error: ")


def test_help_and_version_still_exit_0(capsys):
    assert cli(capsys, "--version")[0] == 0
    assert cli(capsys, "--help")[0] == 0


def test_a_multi_line_error_is_folded_into_one_line(tmp_path, capsys, monkeypatch):
    from toolkit.runners import CommandResult

    def fails(*_a, **_k):
        raise errors.CommandFailed(CommandResult("dom0-a", ("virsh", "list"), 1, "",
                                                 "first\nsecond\nthird\n", 0.0))

    monkeypatch.setattr("toolkit.app.make_plan", fails)
    code, _out, err = cli(capsys, "plan", "--domu", "web01", "--config", str(_config(tmp_path)))
    assert code == errors.CommandFailed.exit_code
    line = one_line(err)
    assert "first" in line and "third" in line


def test_a_closed_output_pipe_ends_quietly():
    read, write = os.pipe()
    os.close(read)  # like `| head -1` that has already exited
    try:
        proc = subprocess.run([sys.executable, "-m", "toolkit.cli", "exit-codes"], cwd=ROOT,
                              stdout=write, stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(write)
    assert proc.stderr.decode() == ""
    assert proc.returncode == 128 + signal.SIGPIPE


# --- backup ------------------------------------------------------------------------


def test_an_oserror_in_one_domain_under_all_keeps_the_report(tmp_path, capsys, monkeypatch,
                                                              as_root):
    from toolkit.report import DomainReport

    def backup_domain(config, domain, hosts, **_kw):
        if domain == "web01":
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "/x/" + domain)
        return DomainReport(domain=domain, outcome="skipped", message="not running here")

    monkeypatch.setattr("toolkit.app.backup_domain", backup_domain)
    code, out, err = cli(capsys, "backup", "--all", "--config", str(_config(tmp_path)))
    assert code == 2
    assert "Traceback" not in err
    assert "web01: failed" in out and "File name too long" in out and "db01: skipped" in out
    last = json.loads((tmp_path / "reports" / "last.json").read_text())
    assert [d["outcome"] for d in last["domains"]] == ["failed", "skipped"]


def test_an_unusable_lock_directory_under_all_still_writes_the_report(tmp_path, capsys,
                                                                      as_root):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    cfg = _config(tmp_path, lock=str(blocker / "lock"))
    code, out, err = cli(capsys, "backup", "--all", "--config", str(cfg))
    assert "Traceback" not in err
    assert code in DOCUMENTED and code > 1
    assert "web01: failed" in out and "db01: failed" in out
    last = json.loads((tmp_path / "reports" / "last.json").read_text())
    assert [d["outcome"] for d in last["domains"]] == ["failed", "failed"]
    assert last["exit_code"] == code


def _undefined_here(config, domain, hosts, **_kw):
    from toolkit.replay import ReplayRunner
    from toolkit.runners import CommandResult

    class Virsh(ReplayRunner):
        def run(self, argv, **kw):
            res = CommandResult("dom0-a", tuple(argv), 1, "",
                                f"error: failed to get domain '{domain}'\n", 0.0)
            if kw.get("check", True):
                raise errors.CommandFailed(res)
            return res

    hosts.source = Virsh("dom0-a", [])
    return _BACKUP_DOMAIN(config, domain, hosts, **_kw)


def test_a_domain_not_defined_here_is_a_quiet_skip_under_all(tmp_path, capsys, monkeypatch,
                                                            as_root):
    monkeypatch.setattr("toolkit.app.backup_domain", _undefined_here)
    code, out, err = cli(capsys, "backup", "--all", "--node", "dom0-a",
                         "--config", str(_config(tmp_path)))
    assert code == 0, err
    assert "web01: skipped" in out and "db01: skipped" in out
    assert "not defined" in out


def test_backup_of_one_domain_not_defined_here_stays_an_error(tmp_path, capsys, monkeypatch,
                                                              as_root):
    monkeypatch.setattr("toolkit.app.backup_domain", _undefined_here)
    code, out, _err = cli(capsys, "backup", "--domu", "web01", "--node", "dom0-a",
                          "--config", str(_config(tmp_path)))
    assert code == errors.DomainUnknown.exit_code
    assert "web01: failed" in out


# --- plan ----------------------------------------------------------------------


def _plan(capsys, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, "plan", "--domu", "web01", "--node", "dom0-a", "--config", str(SANDBOX),
               *extra)


def test_plan_replays_a_good_recording(capsys):
    code, out, _err = _plan(capsys, "--replay", str(REPLAY))
    assert code == 0 and "web01" in out


@pytest.mark.parametrize("content", [None, "not json", '{"a": 1}', '[{"role": "source"}]',
                                     '["x"]', "[]"])
def test_a_bad_replay_file_is_one_line_and_a_usage_error(tmp_path, capsys, content):
    path = tmp_path / "rec.json"
    if content is not None:
        path.write_text(content)
    code, _out, err = _plan(capsys, "--replay", str(path))
    assert code == errors.UsageError.exit_code
    assert str(path) in one_line(err)


def test_an_unreadable_replay_file_is_one_line(tmp_path, capsys):
    code, _out, err = _plan(capsys, "--replay", str(tmp_path))  # a directory
    assert code == errors.UsageError.exit_code
    assert str(tmp_path) in one_line(err)


def test_a_record_file_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    from toolkit import app
    from toolkit.replay import load_replay

    src, peer = load_replay(REPLAY, "dom0-a", "dom0-b")
    monkeypatch.setattr("toolkit.commands._hosts", lambda *a: app.Hosts(source=src))
    monkeypatch.setattr(app, "peer_runner", lambda config, name: peer)
    target = tmp_path / "missing-dir" / "rec.json"
    code, out, err = _plan(capsys, "--record", str(target))
    assert code == errors.UsageError.exit_code
    assert str(target) in one_line(err)
    assert "xvda1" in out  # the plan itself was made and printed first


def test_a_docker_peer_is_a_config_error_in_plan(tmp_path, capsys, monkeypatch):
    from toolkit import app
    from toolkit.replay import load_replay

    src, _peer = load_replay(REPLAY, "dom0-a", "dom0-b")
    monkeypatch.setattr("toolkit.commands._hosts", lambda *a: app.Hosts(source=src))
    cfg = SANDBOX.read_text().replace('"ssh://root@dom0-b:22"', '"docker://dom0-b"')
    (tmp_path / "backup.toml").write_text(cfg)
    code, _out, err = cli(capsys, "plan", "--domu", "web01", "--node", "dom0-a",
                          "--config", str(tmp_path / "backup.toml"))
    assert code == errors.ConfigError.exit_code
    assert "docker://dom0-b" in one_line(err)


def test_sigint_during_plan_exits_130_in_one_line(capsys, monkeypatch):
    from toolkit.replay import ReplayRunner

    real = ReplayRunner.run

    def interrupted(self, argv, **kw):
        if "dumpxml" in argv:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        return real(self, argv, **kw)

    monkeypatch.setattr(ReplayRunner, "run", interrupted)
    code, _out, err = _plan(capsys, "--replay", str(REPLAY))
    assert code == 130
    assert "SIGINT" in one_line(err)


def test_sigint_anywhere_else_exits_130_not_1(capsys, monkeypatch):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr("toolkit.config.load_config", interrupted)
    code, _out, err = cli(capsys, "check-config")
    assert code == 130
    assert "SIGINT" in one_line(err)


# --- status --------------------------------------------------------------------


def test_status_as_non_root_is_one_line_and_exit_5(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, _out, err = cli(capsys, "status", "--config", str(_config(tmp_path)))
    assert code == errors.NotRoot.exit_code
    assert "root" in one_line(err)


def test_status_with_an_unreachable_peer_says_unknown(tmp_path, capsys, as_root):
    from toolkit.report import DomainReport, RunReport, write_report

    ok = DomainReport("web01", run_id="R1", outcome="success", finished=1000.0)
    write_report(RunReport("dom0-a", domains=[ok]), str(tmp_path / "reports"))
    code, out, err = cli(capsys, "status", "--config", str(_config(tmp_path)))
    assert code == errors.StatusUnknown.exit_code
    line = one_line(err)
    assert "unknown" in line and "web01" in line and "db01" in line
    web01 = next(r for r in out.splitlines() if r.startswith("web01"))
    assert "unknown" in web01 and "clean" not in web01


def test_status_reads_the_marker_when_the_peer_answers(tmp_path, capsys, monkeypatch, as_root):
    from toolkit import app
    from toolkit.facts.lvm import lvs_argv
    from toolkit.replay import ReplayRunner

    marker = json.dumps({"state": "clean", "last_success": 5.0})
    records = [{"argv": ["cat", "--", f"{tmp_path}/state/standby/{d}.json"], "exit_code": 0,
                "stdout": marker, "stderr": ""} for d in ("web01", "db01")]
    point = {"vg_name": "vg_b", "lv_name": "domubk-rp-20261201T020000Z-0a0a-web01-xvda",
             "lv_path": "/dev/vg_b/p", "lv_dm_path": "/dev/mapper/p", "lv_size": "1048576",
             "lv_attr": "sri-a-s---", "origin": "web01", "pool_lv": "", "snap_percent": "1.00",
             "lv_tags": "domubk_rp,domubk_rp_20261201T020000Z-0a0a",
             "lv_snapshot_invalid": "0"}
    records.append({"argv": lvs_argv("@domubk_rp"), "exit_code": 0, "stderr": "",
                    "stdout": json.dumps({"report": [{"lv": [point]}]})})
    monkeypatch.setattr(app, "peer_runner", lambda config, name: ReplayRunner(name, records))
    code, out, err = cli(capsys, "status", "--config", str(_config(tmp_path)))
    assert code == 0, err
    web01 = next(r for r in out.splitlines() if r.startswith("web01"))
    assert "clean" in web01
    assert "[1 restore point, newest 20261201T020000Z-0a0a]" in web01
    assert "restore point" not in next(r for r in out.splitlines() if r.startswith("db01"))


def test_status_check_is_one_line_on_stdout_with_the_plugins_exit_code(tmp_path, capsys,
                                                                         monkeypatch, as_root):
    from toolkit import app
    from toolkit.replay import ReplayRunner

    # web01's standby clean and just synced; db01's marker missing: UNKNOWN wins over OK.
    marker = json.dumps({"state": "clean", "last_success": time.time() - 60})
    records = [{"argv": ["cat", "--", f"{tmp_path}/state/standby/web01.json"], "exit_code": 0,
                "stdout": marker, "stderr": ""},
               {"argv": ["cat", "--", f"{tmp_path}/state/standby/db01.json"], "exit_code": 1,
                "stdout": "", "stderr": "cat: x: No such file or directory\n"},
               {"argv": lvs_argv("@domubk_rp"), "exit_code": 0, "stderr": "",
                "stdout": json.dumps({"report": [{"lv": []}]})}]
    monkeypatch.setattr(app, "peer_runner", lambda config, name: ReplayRunner(name, records))
    code, out, err = cli(capsys, "status", "--check", "--config", str(_config(tmp_path)))
    assert code == 3, err
    (line,) = out.splitlines()
    assert line.startswith("DOMU-BACKUP UNKNOWN - db01: UNKNOWN, standby state unknown")
    assert "web01: last success 1m0s ago" in line or "web01: last success 1m1s ago" in line
    code, out, _err = cli(capsys, "status", "--check", "--domu", "web01", "--max-age", "30s",
                          "--config", str(_config(tmp_path)))
    assert code == 2 and out.startswith("DOMU-BACKUP CRITICAL - web01: CRITICAL, last success")
    code, out, _err = cli(capsys, "status", "--check", "--domu", "web01",
                          "--config", str(_config(tmp_path)))
    assert code == 0 and out.startswith("DOMU-BACKUP OK - web01: last success")


def test_status_check_that_cannot_run_is_unknown_on_stdout(tmp_path, capsys, as_root):
    code, out, _err = cli(capsys, "status", "--check", "--config", str(tmp_path / "missing"))
    assert code == 3 and out.startswith("DOMU-BACKUP UNKNOWN - ") and len(out.splitlines()) == 1
    code, out, _err = cli(capsys, "status", "--check", "--max-age", "soon",
                          "--config", str(_config(tmp_path)))
    assert code == 3 and "--max-age" in out


def test_status_with_a_missing_marker_says_unknown(tmp_path, capsys, monkeypatch, as_root):
    from toolkit import app
    from toolkit.replay import ReplayRunner

    records = [{"argv": ["cat", "--", f"{tmp_path}/state/standby/{d}.json"], "exit_code": 1,
                "stdout": "", "stderr": "cat: x: No such file or directory\n"}
               for d in ("web01", "db01")]
    monkeypatch.setattr(app, "peer_runner", lambda config, name: ReplayRunner(name, records))
    code, _out, err = cli(capsys, "status", "--config", str(_config(tmp_path)))
    assert code == errors.StatusUnknown.exit_code
    assert "No such file" in one_line(err)


def test_sigint_during_status_exits_130(tmp_path, capsys, monkeypatch, as_root):
    from toolkit import app

    class Slow:
        host = "dom0-b"

        def run(self, argv, **kw):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
            raise AssertionError("not interrupted")

        def close(self):
            pass

    monkeypatch.setattr(app, "peer_runner", lambda config, name: Slow())
    code, _out, err = cli(capsys, "status", "--config", str(_config(tmp_path)))
    assert code == 130
    assert "SIGINT" in one_line(err)


# --- recover -------------------------------------------------------------------


def test_recover_host_must_be_a_word_not_a_spec(tmp_path, capsys):
    code, _out, err = cli(capsys, "recover", "--host", "local://",
                          "--config", str(_config(tmp_path)))
    assert code == errors.UsageError.exit_code
    assert "--host" in one_line(err)


def test_recover_with_a_local_spec_as_peer_is_a_config_error(tmp_path, capsys, monkeypatch,
                                                             as_root):
    _fake_inventories(monkeypatch, [])
    cfg = _config(tmp_path, peer="local://")
    code, _out, err = cli(capsys, "recover", "--node", "dom0-a", "--config", str(cfg))
    assert code == errors.ConfigError.exit_code
    assert "local://" in one_line(err)


class _Inventory:
    def pending(self, config, domain):
        return True


def _fake_inventories(monkeypatch, calls, *, peer_error=None):

    def take_inventory(runner, config, role):
        if role == "peer":
            if peer_error is not None:
                raise peer_error
            runner.run(["true"])  # a real peer would be asked
        return _Inventory()

    def recover_domain(config, domain, source, peer, **kw):
        calls.append((domain, peer, sorted(kw["inventories"])))
        return [f"removed {domain}'s leftovers"]

    monkeypatch.setattr(app, "take_inventory", take_inventory)
    monkeypatch.setattr(app, "recover_domain", recover_domain)


def test_recover_with_an_unreachable_peer_cleans_the_local_host_then_exits_12(
        tmp_path, capsys, monkeypatch, as_root):
    calls: list = []
    _fake_inventories(monkeypatch, calls, peer_error=errors.PeerUnreachable(
        "cannot connect to root@127.0.0.1:1: Connection refused", host="127.0.0.1"))
    code, out, err = cli(capsys, "recover", "--node", "dom0-a",
                         "--config", str(_config(tmp_path)))
    assert code == errors.PeerUnreachable.exit_code
    assert calls == [("web01", None, ["source"]), ("db01", None, ["source"])]
    assert "removed web01's leftovers" in out
    line = err.splitlines()[-1]
    assert "Traceback" not in err
    assert line.startswith("error: ") and "recover" in line and "--host" in line


def test_a_refused_ssh_connection_is_one_line_and_exit_12(tmp_path, capsys, as_root):
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]

    def serve():
        # Accepts, says hello, then hangs up: paramiko's transport thread logs a traceback.
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"SSH-2.0-x\r\n")
            conn.recv(100)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        cfg = _config(tmp_path, peer=f"ssh://root@127.0.0.1:{port}")
        code, _out, err = cli(capsys, "status", "--domu", "web01", "--config", str(cfg))
    finally:
        srv.close()
    time.sleep(0.2)
    err += capsys.readouterr().err
    assert code == errors.StatusUnknown.exit_code
    line = one_line(err)
    assert "Exception (client)" not in line and "cannot connect" in line


def test_a_refused_ssh_connection_names_the_reason(tmp_path):
    from toolkit.hosts import runner_for

    srv = __import__("socket").socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    srv.close()  # nothing listens there now
    runner = runner_for(f"ssh://root@127.0.0.1:{port}")
    runner.key_file = tmp_path / "key"
    runner.known_hosts = tmp_path / "known_hosts"
    runner.known_hosts.write_text("")
    with pytest.raises(errors.PeerUnreachable) as caught:
        runner.run(["true"])
    assert "Connection refused" in str(caught.value)
    assert "Errno None" not in str(caught.value)


# --- the documented table --------------------------------------------------------


def test_the_readme_table_is_the_exit_code_table():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\S+) \| `([^`]+)` \| (.+?) \|$", section, re.M)
    assert rows == [(str(c), n, s) for c, n, s in errors.exit_code_table()]


def test_status_unknown_has_its_own_code():
    codes = [c.exit_code for c in errors._all_error_classes() if c is not errors.StatusUnknown
             and c is not errors.Interrupted]
    assert errors.StatusUnknown.exit_code not in codes
    assert 10 <= errors.StatusUnknown.exit_code <= 29


def _instance(cls: type[errors.ToolkitError]) -> errors.ToolkitError:
    from toolkit.runners import CommandResult

    if cls is errors.Interrupted:
        return cls(signal.SIGTERM)
    if issubclass(cls, errors.CommandFailed):
        result = CommandResult("dom0-b", ("lvs", "--", "vg/x"), 5, "", "line one\nline two",
                               0.1)
        return cls(result)
    return cls("something went wrong\non two lines", host="dom0-b")


@pytest.mark.parametrize("cls", errors._all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_is_one_line_and_its_own_documented_code(cls, tmp_path, capsys,
                                                                    monkeypatch):
    exc = _instance(cls)

    def make_plan(*a, **k):
        raise exc

    monkeypatch.setattr(app, "make_plan", make_plan)
    code, _out, err = cli(capsys, "plan", "--domu", "web01", "--config", str(_config(tmp_path)))
    assert code == exc.exit_code
    assert code in DOCUMENTED or (cls is errors.Interrupted and code == 143)
    if code:
        line = one_line(err)
        assert "something went wrong" in line or "lvs" in line or "SIGTERM" in line


# --- warnings --------------------------------------------------------------------


def test_check_config_warns_of_a_key_under_its_former_name_and_still_passes(tmp_path, capsys):
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("[defaults]\n",
                                             f'[defaults]\ntarget_prefix = "{tmp_path}/peer"\n'))
    code, out, err = cli(capsys, "check-config", "--config", str(path))
    assert code == 0, err
    assert out.startswith(f"{path}: OK")
    assert (f"warning: {path}: defaults.target_prefix: renamed peer_prefix; the former name "
            "is still read, rename it in the file") in err


# --- check-config -----------------------------------------------------------------


def test_check_config_prints_every_setting_marked_set_or_default(tmp_path, capsys):
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("[defaults]\n", "[defaults]\ncopy_jobs = 1\n"))
    code, out, err = cli(capsys, "check-config", "--config", str(path))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == [f"{path}: OK",
                         "  Dom0s: dom0-a=ssh://root@127.0.0.1:2, dom0-b=ssh://root@127.0.0.1:1",
                         "  hypervisor: test:///default"]
    assert "  ssh.connect_timeout = 2.0   (set)" in lines
    assert "  ssh.command_timeout = 600.0   (default)" in lines
    assert f'  defaults.state_dir = "{tmp_path}/state"   (set)' in lines
    assert '  defaults.snapshot_size = "20%ORIGIN"   (default)' in lines
    assert '  defaults.bwlimit = ""   (default)' in lines
    assert "  defaults.copy_jobs = 1   (set)" in lines  # set to its default: still set
    assert '  domains.web01.peer = "dom0-b"   (set)' in lines
    assert "  domains.db01.excludes = []   (default)" in lines
    assert "  domains.db01.disks = {}   (default)" in lines


def test_check_config_names_the_file_and_key_of_a_bad_hypervisor_uri(tmp_path, capsys):
    path = _config(tmp_path)
    path.write_text(path.read_text().replace('uri = "test:///default"', 'uri = "no uri"'))
    code, out, err = cli(capsys, "check-config", "--config", str(path))
    assert code == errors.ConfigError.exit_code and out == ""
    assert f'{path}: hypervisor.uri: expected a libvirt URI like "xen:///system", ' \
        "got 'no uri'" in one_line(err)
