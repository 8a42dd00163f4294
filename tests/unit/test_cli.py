"""The installed ``domu-backup`` program offers the operator's commands and nothing else.

Every case runs the program as an operator would (``toolkit.cli.run`` with an argv, or the
module in a subprocess) and checks what ran, what was printed and the exit code.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import __version__, cli, commands
from toolkit.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = ["backup", "plan", "check-config", "recover", "status", "restore-points",
            "verify", "promote", "failback", "init-standby", "install-units", "exit-codes",
            "sample-config"]
LAB = ["lab", "lab.up", "sandbox", "sandbox.up", "rehearse", "bench", "test"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.finish(cli.run(list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def nothing_runs(monkeypatch):
    """Every command body fails the test if it is entered."""
    entered: list[str] = []

    def recording(task):
        @functools.wraps(task.body)  # the options still come from the real signature
        def body(*_a, **_k) -> None:
            entered.append(task.name)
        return body

    for task in commands.COMMANDS:
        monkeypatch.setattr(task, "body", recording(task))
    return entered


def test_overview_lists_the_operator_commands_only(capsys):
    code, out, err = run(capsys, "--help")
    assert code == 0 and err == ""
    listed = re.findall(r"^  (\S+)  ", out, re.M)
    assert listed == OPERATOR
    for word in LAB:
        assert not re.search(rf"^\s+{re.escape(word)}\b", out, re.M)


def test_no_command_prints_the_overview_and_exits_4(capsys):
    code, out, err = run(capsys)
    assert code == UsageError.exit_code and out == ""
    assert "commands:" in err


@pytest.mark.parametrize("command", OPERATOR)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_after_any_command_prints_its_help_and_runs_nothing(capsys, nothing_runs,
                                                                 command, flag):
    code, out, _err = run(capsys, command, "--config", "/nonexistent", flag)
    assert code == 0 and nothing_runs == []
    assert out.startswith(f"usage: domu-backup {command} ")
    assert "--help" in out


def test_command_help_names_each_option_with_its_text(capsys):
    _code, out, _err = run(capsys, "backup", "--help")
    assert re.search(r"^  --domu NAME +domain to back up$", out, re.M)
    assert re.search(r"^  --allow-mass-delete +lift the max_delete bound", out, re.M)


def test_version(capsys):
    assert run(capsys, "--version") == (0, f"domu-backup {__version__}\n", "")


@pytest.mark.parametrize("argv", [
    ["--dry", "backup", "--domu", "web01"],          # invoke's --dry would run a real backup
    ["-f", "other.yaml", "backup", "--domu", "web01"],
    ["--prompt-for-sudo-password", "status"],
    ["--list"], ["-l"], ["--echo", "status"], ["-c", "tasks", "status"],
    ["--debug", "status"], ["--search-root", "/", "status"], ["-e", "status"],
    ["--complete"], ["--print-completion-script", "bash"],
    ["backup", "--domu", "web01", "plan", "--domu", "web01"],  # no task chaining
    ["status", "status"],
    ["backup", "--domu"],                             # a value is missing
    ["backup", "--domu", "--json"],
    ["plan", "web01"],                                # no positional arguments
    ["lab.up"], ["sandbox.up"], ["rehearse"], ["bench"], ["test"],
    ["exit-codes", "--bogus"],
    ["completion"], ["completion", "fish"], ["completion", "bash", "zsh"],
    ["--version", "status"],
])
def test_anything_but_an_operator_command_line_is_a_usage_error(capsys, nothing_runs, argv):
    code, out, err = run(capsys, *argv)
    assert code == UsageError.exit_code, (argv, out, err)
    assert nothing_runs == [] and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


@pytest.mark.parametrize("task", commands.COMMANDS, ids=lambda t: t.name)
def test_no_short_option_exists_for_any_option(capsys, nothing_runs, task):
    """Generated short flags are off: `-x` for each option's first letter is refused."""
    name = task.name.replace("_", "-")
    for opt in task.options():
        assert len(opt.name) > 1, (name, opt.name)
        flag = f"-{opt.name[0]}"
        extra = ["value"] if opt.takes_value else []
        code, out, err = run(capsys, name, flag, *extra)
        if flag == "-h":  # the one short option, chosen on purpose: help, which runs nothing
            assert code == 0 and out.startswith(f"usage: domu-backup {name} ")
        else:
            assert code == UsageError.exit_code, (name, flag, err)
    assert nothing_runs == []


def test_a_command_that_needs_a_domain_says_so(capsys):
    code, _out, err = run(capsys, "init-standby")
    assert code == UsageError.exit_code
    assert err == "error: init-standby needs --domu NAME\n"


def test_options_reach_the_command_by_name(capsys, monkeypatch):
    seen = {}
    real = commands.recover.body

    @functools.wraps(real)
    def body(c, **kw) -> None:
        seen.update(kw)

    monkeypatch.setattr(commands.recover, "body", body)
    code, _out, _err = run(capsys, "recover", "--host=local", "--domu", "web01", "--node",
                           "dom0-a")
    assert code == 0
    assert seen == {"domu": "web01", "host": "local", "config": None, "node": "dom0-a"}


def test_the_installed_entry_point_is_the_operator_program():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'domu-backup = "toolkit.cli:main"' in text


def test_the_program_runs_as_a_module_and_exits_4_on_usage():
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", "backup", "-l"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert proc.returncode == UsageError.exit_code
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1


# --- shell completion ----------------------------------------------------------------


def _complete(script: str, *words: str) -> list[str]:
    """COMPREPLY of the bash completion for the command line ``words`` (last one partial)."""
    bash = shutil.which("bash")
    assert bash, "bash is part of every Debian system"
    words_q = " ".join(f"'{w}'" for w in ("domu-backup", *words))
    program = (f"{script}\nCOMP_WORDS=({words_q}); COMP_CWORD={len(words)}\n"
               "_domu_backup; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run([bash, "--norc", "--noprofile", "-c", program], capture_output=True,
                          text=True, timeout=30, check=True)
    return [w for w in proc.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def bash_script() -> str:
    return cli.completion_script("bash")


def test_completion_offers_the_commands(bash_script):
    assert _complete(bash_script, "") == [*OPERATOR, "completion", "--help", "--version"]
    assert _complete(bash_script, "in") == ["init-standby", "install-units"]


def test_completion_offers_a_commands_options(bash_script):
    assert _complete(bash_script, "backup", "--d") == ["--domu", "--dry-run"]
    assert _complete(bash_script, "recover", "--h") == ["--host", "--help"]
    assert "--allow-mass-delete" not in _complete(bash_script, "plan", "--")


def test_completion_offers_values_and_files(bash_script, tmp_path):
    assert _complete(bash_script, "recover", "--host", "") == ["local", "peer", "both"]
    (tmp_path / "backup.toml").write_text("")
    assert _complete(bash_script, "plan", "--config", f"{tmp_path}/ba") == [
        f"{tmp_path}/backup.toml"]


def test_completion_scripts_for_bash_and_zsh_are_printed(capsys):
    code, out, _err = run(capsys, "completion", "bash")
    assert code == 0 and out == cli.completion_script("bash")
    assert out.rstrip().endswith("complete -F _domu_backup domu-backup")
    code, out, _err = run(capsys, "completion", "zsh")
    assert code == 0 and "bashcompinit" in out.splitlines()[1]
    assert out.endswith(cli.completion_script("bash").split("\n", 1)[1])


def test_sample_config_prints_the_generated_sample(capsys):
    from toolkit.sample import render_sample

    code, out, err = run(capsys, "sample-config")
    assert (code, err) == (0, "") and out == render_sample()
    assert "[defaults]" in out and "[domains.web01]" in out


def test_the_checkout_keeps_the_lab_tasks_beside_the_operator_commands():
    import tasks

    names = set(tasks.ns.task_names)
    assert {"lab.up", "lab.down", "sandbox.up", "sandbox.down", "rehearse", "bench",
            "test"} <= names
    assert {n.replace("_", "-") for n in names} >= set(OPERATOR)
    # the very command the program runs
    assert tasks.ns["backup"].body.__wrapped__ is commands.backup.body
