"""R13: argv reaches the program literally, locally and through the one shell
string made for SSH; nothing hidden in an argument ever runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.runners import LocalRunner, remote_command

PY_ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]

# Strings as hostile as guest data gets: shell syntax, quotes, newlines,
# leading dashes, spaces and any unicode (no NUL: argv cannot carry it).
_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")
_PAYLOADS = st.sampled_from([
    "; touch SENTINEL", "$(touch SENTINEL)", "`touch SENTINEL`", "'; touch SENTINEL; '",
    '"; touch SENTINEL; "', '"$(touch SENTINEL)"', "\ntouch SENTINEL\n", "| touch SENTINEL",
    "&& touch SENTINEL", "> SENTINEL", "-rf", "--help", "-", "a b", "*", "?", "~", "$HOME",
    "${IFS}", "\\", "'", '"', "", " ", "\t", "é漢字🙂", "!!", "#", "x=y",
])
ARG = st.one_of(st.text(_CHARS, max_size=30), _PAYLOADS)
ARGS = st.lists(ARG, max_size=8)

HYPOTHESIS = settings(max_examples=100, deadline=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run here: a quoting that breaks writes its stray files in tmp, not the tree."""
    monkeypatch.chdir(tmp_path)


def _sh(command: str) -> str:
    """Run a command string the way sshd does, with the login shell's -c."""
    proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, check=True)
    return proc.stdout.decode("utf-8", "surrogateescape")


def _arm(args: list[str], sentinel: Path) -> list[str]:
    return [a.replace("SENTINEL", str(sentinel)) for a in args]


@HYPOTHESIS
@given(args=ARGS)
def test_local_argv_comes_back_identical(tmp_path: Path, args: list[str]) -> None:
    sentinel = tmp_path / "sentinel"
    args = _arm(args, sentinel)
    result = LocalRunner().run([*PY_ARGV, *args])
    assert json.loads(result.stdout) == args
    assert not sentinel.exists()


@HYPOTHESIS
@given(arg=ARG)
def test_local_printf_prints_each_argument_byte_for_byte(tmp_path: Path, arg: str) -> None:
    sentinel = tmp_path / "sentinel"
    arg = _arm([arg], sentinel)[0]
    result = LocalRunner().run(["printf", "%s", arg])
    assert result.stdout == arg
    assert not sentinel.exists()


@pytest.mark.parametrize(("argv", "env", "command"), [
    # What sh must see, written out: every word that is not plain is in single quotes, a
    # single quote is closed, given in double quotes and reopened, "env LC_ALL=C" leads.
    (["printf", "%s"], None, "env LC_ALL=C printf %s"),
    (["printf", "a b", ""], None, "env LC_ALL=C printf 'a b' ''"),
    (["printf", "it's"], None, "env LC_ALL=C printf 'it'\"'\"'s'"),
    (["printf", "$(id)", "`id`", "$HOME", "a;b", "a|b", "a&b", "*", "~", "!x"], None,
     "env LC_ALL=C printf '$(id)' '`id`' '$HOME' 'a;b' 'a|b' 'a&b' '*' '~' '!x'"),
    (["printf", 'say "hi"\n', "\\"], None, "env LC_ALL=C printf 'say \"hi\"\n' '\\'"),
    (["-i"], None, "env LC_ALL=C -i"),
    (["cat"], {"V": "x;y", "W": "it's"}, "env LC_ALL=C 'V=x;y' 'W=it'\"'\"'s' cat"),
])
def test_remote_command_is_the_quoted_string_sh_needs(argv, env, command) -> None:
    assert remote_command(argv, env=env) == command


@HYPOTHESIS
@given(args=ARGS, value=ARG)
def test_remote_command_through_a_real_shell_runs_only_argv(tmp_path: Path, args: list[str],
                                                            value: str) -> None:
    # What sshd does with the string: the login shell runs it with -c.
    sentinel = tmp_path / "sentinel"
    args = _arm(args, sentinel)
    value = _arm([value], sentinel)[0]
    command = remote_command([*PY_ARGV, *args], env={"VALUE": value})
    assert json.loads(_sh(command)) == args
    assert _sh(remote_command(["printenv", "VALUE"], env={"VALUE": value})) == value + "\n"
    assert not sentinel.exists()


@pytest.mark.parametrize("program", ["A=B", "LC_ALL=x"])
def test_remote_command_refuses_a_program_name_env_would_take_as_an_assignment(
        program: str) -> None:
    with pytest.raises(ValueError):
        remote_command([program, "arg"])


@pytest.mark.parametrize("name", ["A B", "A=B", "1A", "", "$(x)", "A;B"])
def test_remote_command_refuses_bad_environment_names(name: str) -> None:
    with pytest.raises(ValueError):
        remote_command(["true"], env={name: "v"})


def test_a_leading_dash_argument_is_not_an_option_of_env() -> None:
    assert _sh(remote_command(["printf", "%s", "-i"])) == "-i"
    assert _sh(remote_command(["-i"]) + " 2>&1 || true").startswith("env: ")
