"""What an operator's command is, and how its command line is read.

A command is a plain function ``body(c, **options)``; its options come from its signature
(``None`` or a string default: an option that takes a value, ``False``: a flag) with one
line of help each. ``domu-backup`` parses them here, with nothing imported that the
command does not use: a program started several times a run, from a timer or a test,
pays for every module at each start. The checkout's ``tasks.py`` turns the same functions
into invoke tasks (``invoke backup --domu web01``).

The rules, the same for every command: long options only (``--name VALUE`` or
``--name=VALUE``), no positional word, no chaining of commands, the last of a repeated
option wins. A value never starts with ``-`` unless given with ``=``, so a forgotten
value is never taken from the next option.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass


class CommandExit(Exception):
    """A command's end: its exit code and, if any, the one line said on stderr."""

    def __init__(self, message: str | None = None, code: int = 0) -> None:
        super().__init__(message or "")
        self.message = message
        self.code = code


class OptionError(Exception):
    """A command line the command does not accept; the message names what is wrong."""


@dataclass(frozen=True)
class Option:
    """One long option: its flag name (``dry-run``), the parameter it fills, its kind, help."""

    name: str
    param: str
    kind: type
    default: object
    help: str

    @property
    def takes_value(self) -> bool:
        """A flag (``kind`` bool) takes none; every other option takes one."""
        return self.kind is not bool


class Command:
    """An operator's command: a function, its name on the command line, its options."""

    def __init__(self, body: Callable[..., None], help: dict[str, str] | None = None) -> None:
        self.body = body
        self.name = body.__name__
        self.option_help = dict(help or {})
        self.__doc__ = body.__doc__
        unknown = set(self.option_help) - {o.name for o in self.options()}
        if unknown:
            raise TypeError(f"{self.name}: help for options it does not have: "
                            f"{', '.join(sorted(unknown))}")

    def __call__(self, c: object = None, **options: object) -> None:
        self.body(c, **options)

    def __repr__(self) -> str:
        return f"<Command {self.name}>"

    def options(self) -> list[Option]:
        """Its options in the signature's order (after the context parameter)."""
        params = list(inspect.signature(self.body).parameters.values())[1:]
        out = []
        for p in params:
            if not (p.default is None or p.default is False or isinstance(p.default, str)):
                raise TypeError(f"{self.name}: option {p.name} needs a default of None, "
                                "False or a string")
            name = p.name.replace("_", "-")
            kind = bool if p.default is False else str
            out.append(Option(name, p.name, kind, p.default,
                              self.option_help.get(name, self.option_help.get(p.name, ""))))
        return out

    def parse(self, argv: Sequence[str]) -> dict[str, object]:
        """Every option's value (its default where not given); OptionError otherwise."""
        by_flag = {f"--{o.name}": o for o in self.options()}
        values: dict[str, object] = {o.param: o.default for o in by_flag.values()}
        words = list(argv)
        i = 0
        while i < len(words):
            word = words[i]
            flag, eq, inline = word.partition("=")
            option = by_flag.get(flag) if word.startswith("--") else None
            if option is None:
                what = "option" if word.startswith("-") else "word"
                raise OptionError(f"unknown {what} {word!r} (one command per call, long "
                                  "options only)")
            if not option.takes_value:
                if eq:
                    raise OptionError(f"{flag} takes no value")
                values[option.param] = True
            elif eq:
                values[option.param] = inline
            elif i + 1 < len(words) and not words[i + 1].startswith("-"):
                i += 1
                values[option.param] = words[i]
            else:
                raise OptionError(f"{flag} needs a value")
            i += 1
        return values


def operator_command(*args: Callable[..., None], help: dict[str, str] | None = None):
    """Make a function an operator's command: ``@operator_command`` or with ``help=``."""
    if args and callable(args[0]):
        return Command(args[0])

    def make(body: Callable[..., None]) -> Command:
        return Command(body, help)

    return make
