"""The installed ``domu-backup`` program: the operator's commands and nothing else.

One command per call, long options only, ``--help`` anywhere after a command prints that
command's help and runs nothing, and every ending is one line on stderr with a documented
exit code: usage errors 4, a ToolkitError its own code, Ctrl-C 130, a closed output pipe
141 (silently), anything else 2 (with ``DOMU_BACKUP_DEBUG=1``, the traceback too). Never 1,
which means "finished with warnings".

The commands are ``toolkit/commands.py``'s, their options read by ``toolkit/cmdline.py``;
nothing here imports invoke (a checkout's ``tasks.py`` offers the same commands as invoke
tasks, beside the lab's), so none of invoke's own options (``-f``, ``--dry``, task
chaining...) exist, and a start costs only the modules the command uses.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from . import __version__
from .cmdline import CommandExit, OptionError
from .errors import Interrupted, ToolkitError, UsageError

PROG = "domu-backup"
DEBUG_ENV = "DOMU_BACKUP_DEBUG"


def _commands() -> dict:
    from .commands import COMMANDS

    return {t.name.replace("_", "-"): t for t in COMMANDS}


def _say(line: str) -> None:
    """One line on stderr; a closed stderr is not worth a traceback either."""
    from .commands import _one_line

    try:
        print(_one_line(line), file=sys.stderr, flush=True)
    except OSError:
        pass


def _quiet_stdout() -> None:
    """After a closed pipe (`| head`), point stdout at /dev/null so the final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


class Usage(Exception):
    """A usage error: said in one line with a pointer to --help, exit 4."""


# --- help ----------------------------------------------------------------------


def _summary(task) -> str:
    doc = (task.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


# What an option's value is, in the help.
_METAVARS = {"domu": "NAME", "node": "NAME", "config": "FILE", "replay": "FILE",
             "record": "FILE", "host": "local|peer|both"}


def _options(task) -> list[tuple[str, str, str]]:
    """(flag, metavar, help) of each option of a command, in its signature's order."""
    out = []
    for opt in task.options():
        metavar = _METAVARS.get(opt.name, "VALUE") if opt.takes_value else ""
        out.append((f"--{opt.name}", metavar, opt.help))
    out.append(("--help", "", "print this help and run nothing"))
    return out


def overview() -> str:
    """The program's help: usage, each command with the first line of its doc, where to go next."""
    commands = _commands()
    width = max(len(n) for n in commands)
    lines = [f"usage: {PROG} COMMAND [--option ...]", "",
             "Keep a bootable standby copy of running guests on a peer Dom0.", "",
             "commands:"]
    lines += [f"  {n:<{width}}  {_summary(t)}" for n, t in commands.items()]
    lines += ["", f"{PROG} COMMAND --help shows a command's options; "
              f"{PROG} --version its version.",
              f"Shell completion: eval \"$({PROG} completion bash)\" (or zsh)."]
    return "\n".join(lines) + "\n"


def command_help(name: str, task) -> str:
    """A command's ``--help``: usage, its whole docstring, and its options with their help."""
    opts = _options(task)
    shown = [f"{flag} {meta}".rstrip() for flag, meta, _ in opts]
    width = max(len(s) for s in shown)
    doc = (task.__doc__ or "").strip()
    lines = [f"usage: {PROG} {name} [--option ...]", "", *(doc.splitlines() or [""]), "",
             "options:"]
    lines += [f"  {s:<{width}}  {text}".rstrip() for s, (_f, _m, text) in zip(shown, opts,
                                                                           strict=True)]
    return "\n".join(lines) + "\n"


# --- completion ------------------------------------------------------------------

# Values some options take, offered by the completion scripts.
_VALUES = {"--host": "local peer both"}
_FILES = ("--config", "--replay", "--record")


def completion_script(shell: str) -> str:
    """A bash (or zsh, through bashcompinit) completion script for the commands as they are."""
    if shell not in ("bash", "zsh"):
        raise Usage(f"completion: expected bash or zsh, got {shell!r}")
    commands = _commands()
    cases = []
    for name, task in commands.items():
        flags = " ".join(flag for flag, _m, _t in _options(task))
        cases.append(f"        {name}) opts=\"{flags}\" ;;")
    values = "\n".join(f"        {flag}) COMPREPLY=($(compgen -W \"{words}\" -- \"$cur\"));"
                       " return ;;" for flag, words in _VALUES.items())
    files = "|".join(_FILES)
    script = f"""# {PROG} completion for {shell}: eval "$({PROG} completion {shell})"
_domu_backup() {{
    local cur prev opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{' '.join(commands)} completion --help --version" -- "$cur"))
        return
    fi
    case "$prev" in
        {files}) COMPREPLY=($(compgen -f -- "$cur")); return ;;
{values}
    esac
    case "${{COMP_WORDS[1]}}" in
{chr(10).join(cases)}
        completion) opts="bash zsh" ;;
        *) opts="" ;;
    esac
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}}
complete -F _domu_backup {PROG}
"""
    if shell == "zsh":
        script = ("autoload -U +X compinit && compinit\n"
                  "autoload -U +X bashcompinit && bashcompinit\n") + script
    return script


# --- parsing and running ------------------------------------------------------------


def _parse(name: str, task, rest: Sequence[str]) -> dict:
    """The command's keyword arguments from its options; Usage for anything else."""
    try:
        return task.parse(rest)
    except OptionError as exc:
        raise Usage(f"{name}: {exc}") from None


def dispatch(argv: Sequence[str]) -> int:
    """Run one command line (without the program name); the exit code."""
    args = list(argv)
    if not args:
        sys.stderr.write(overview())
        return UsageError.exit_code
    first, rest = args[0], args[1:]
    if first in ("-h", "--help"):
        if rest:
            return dispatch([rest[0], "--help"])
        sys.stdout.write(overview())
        return 0
    if first == "--version":
        if rest:
            raise Usage("--version takes nothing after it")
        print(f"{PROG} {__version__}")
        return 0
    if first == "completion":
        if rest in (["--help"], ["-h"]):
            print(f"usage: {PROG} completion bash|zsh\n\nPrint the shell completion script.")
            return 0
        if len(rest) != 1:
            raise Usage("completion: expected one shell, bash or zsh")
        sys.stdout.write(completion_script(rest[0]))
        return 0
    commands = _commands()
    if first.startswith("-"):
        raise Usage(f"unknown option {first!r} before the command")
    task = commands.get(first)
    if task is None:
        raise Usage(f"unknown command {first!r} (commands: {', '.join(commands)})")
    if "--help" in rest or "-h" in rest:
        sys.stdout.write(command_help(first, task))
        return 0
    kwargs = _parse(first, task, rest)
    task(None, **kwargs)
    return 0


def run(argv: Sequence[str] | None = None) -> int:
    """``dispatch`` with every ending turned into one line and its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return dispatch(argv)
    except Usage as exc:
        _say(f"error: {exc} (see {PROG} --help)")
        return UsageError.exit_code
    except CommandExit as exc:
        code = exc.code or 0
        if exc.message:
            _say(exc.message if str(exc.message).startswith("error: ")
                 else f"error: {exc.message}")
        return code
    except ToolkitError as exc:  # raised outside a command's own handler
        _say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        interrupted = Interrupted(signal.SIGINT)
        _say(f"error: {interrupted}")
        return interrupted.exit_code
    except BrokenPipeError:
        _quiet_stdout()
        return 128 + signal.SIGPIPE
    except Exception as exc:  # the last resort: one line, exit 2
        from .app import unexpected_message

        if os.environ.get(DEBUG_ENV) == "1":
            import traceback

            traceback.print_exc()
        _say(f"error: {unexpected_message(exc)}")
        return 2


def finish(code: int) -> int:
    """Flush stdout here, not at exit, where a closed pipe would print a traceback."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        code = code or 128 + signal.SIGPIPE
    except (OSError, ValueError):
        pass
    return code


def main(argv: Sequence[str] | None = None) -> None:
    """The console script's entry point."""
    sys.exit(finish(run(argv)))


if __name__ == "__main__":
    main()
