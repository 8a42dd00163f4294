"""How an operator's command line is read (``toolkit/cmdline.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cmdline import Command, OptionError, operator_command

ROOT = Path(__file__).resolve().parents[2]


@operator_command(help={"domu": "the domain", "dry-run": "plan only", "host": "where"})
def sample(c, domu=None, dry_run=False, host="both"):
    """A command to parse for."""


def test_options_come_from_the_signature_in_its_order():
    opts = sample.options()
    assert [(o.name, o.param, o.kind, o.default, o.help) for o in opts] == [
        ("domu", "domu", str, None, "the domain"),
        ("dry-run", "dry_run", bool, False, "plan only"),
        ("host", "host", str, "both", "where"),
    ]
    assert [o.takes_value for o in opts] == [True, False, True]


def test_nothing_given_is_every_default():
    assert sample.parse([]) == {"domu": None, "dry_run": False, "host": "both"}


@pytest.mark.parametrize("argv", [
    ["--domu", "web01", "--dry-run", "--host", "local"],
    ["--host=local", "--dry-run", "--domu=web01"],
])
def test_a_value_follows_its_option_or_its_equals_sign(argv):
    assert sample.parse(argv) == {"domu": "web01", "dry_run": True, "host": "local"}


def test_the_last_of_a_repeated_option_wins():
    assert sample.parse(["--domu", "a", "--domu", "b"])["domu"] == "b"


def test_a_value_starting_with_a_dash_only_with_equals():
    assert sample.parse(["--domu=-odd"])["domu"] == "-odd"
    with pytest.raises(OptionError, match=r"^--domu needs a value$"):
        sample.parse(["--domu", "-odd"])
    with pytest.raises(OptionError, match=r"^--domu needs a value$"):
        sample.parse(["--domu", "--dry-run"])  # a forgotten value is never the next option
    with pytest.raises(OptionError, match=r"^--domu needs a value$"):
        sample.parse(["--domu"])


def test_an_empty_value_with_equals_is_a_value():
    assert sample.parse(["--domu="])["domu"] == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["--dry-run=yes"], "--dry-run takes no value"),
    (["web01"], "unknown word 'web01'"),
    (["-d"], "unknown option '-d'"),
    (["--dry_run"], "unknown option '--dry_run'"),
    (["--bogus"], "unknown option '--bogus'"),
    (["--bogus=1"], "unknown option '--bogus=1'"),
    (["--domu", "web01", "extra"], "unknown word 'extra'"),
])
def test_anything_else_is_refused_by_name(argv, message):
    with pytest.raises(OptionError) as err:
        sample.parse(argv)
    assert str(err.value).startswith(message)


def test_a_command_calls_its_body_with_the_options():
    seen = {}

    @operator_command
    def probe(c, domu=None, json=False):
        """Probe."""
        seen.update(c=c, domu=domu, json=json)

    assert isinstance(probe, Command) and probe.name == "probe" and probe.__doc__ == "Probe."
    probe(None, **probe.parse(["--json", "--domu", "x"]))
    assert seen == {"c": None, "domu": "x", "json": True}


def test_a_command_must_say_how_each_option_reads():
    with pytest.raises(TypeError, match="count"):
        @operator_command
        def counted(c, count=3):
            """Not a kind the command line has."""
        counted.options()
    with pytest.raises(TypeError, match="nosuch"):
        operator_command(help={"nosuch": "help for nothing"})(sample.body)


def test_the_program_never_imports_invoke():
    """Each start pays for every module imported: the operator's program parses alone."""
    code = ("import sys\n"
            "from toolkit import cli\n"
            "for argv in (['--help'], ['backup', '--help'], ['exit-codes'], ['sample-config'],\n"
            "             ['status', '--bogus']):\n"
            "    cli.run(argv)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'invoke'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
