"""The on-host journal: what a run created, written before each side effect.

One JSON line per resource, in ``<state_dir>/journal/<domain>.<run_id>.jsonl``
on the host where the resource lives. A run that ends normally removes its
journal after teardown; a killed run leaves it for ``recover``, which undoes
the entries newest first, each only while its ``exists`` probe still says the
resource is there, so running recover twice is a no-op.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from .errors import CommandFailed, ParseError
from .owned import journal_of
from .runners import CommandResult, Runner

# What the journalled wrapper says, and exits with, when the entry could not be written
# (the command it wraps then never ran).
JOURNAL_FAILED_EXIT = 125
JOURNAL_FAILED_MESSAGE = "domu-backup: journal entry not written, command not run"


@dataclass(frozen=True)
class JournalEntry:
    """One line of a journal: a resource about to be made, its undo and its exists-probe."""
    run_id: str
    domain: str
    action: str
    resource: str
    undo: tuple[str, ...]
    exists: tuple[str, ...]
    ts: float

    def to_line(self) -> str:
        """The entry as one JSON line, keys sorted."""
        return json.dumps(asdict(self), sort_keys=True) + "\n"


def journal_dir(state_dir: str) -> str:
    """Where the journals of every run live under the state directory."""
    return posixpath.join(state_dir, "journal")


# dd's options that append stdin to its ``of=`` file and fsync it before exiting.
APPEND_OPTIONS = ("oflag=append", "conv=notrunc,fsync", "status=none")


# The script's "$1" is a file; its directory is made (0700) when missing.
MAKE_DIR = '{ [ -d "${1%/*}" ] || mkdir -p -m 0700 "${1%/*}"; }'


def append_argv(path: str) -> list[str]:
    """dd that appends stdin to ``path`` and fsyncs it before exiting (no shell)."""
    return ["dd", f"of={path}", *APPEND_OPTIONS]


def journalled_argv(path: str, argv: Sequence[str]) -> list[str]:
    """One command that appends stdin to the journal ``path`` (fsynced), then runs ``argv``.

    ``argv`` runs only once the entry is on disk; if it is not, the wrapper prints
    JOURNAL_FAILED_MESSAGE and exits JOURNAL_FAILED_EXIT without running it. Positional
    parameters carry the path and argv, so nothing is interpolated into the script.
    """
    # The directory test is the shell's own: a mkdir process per entry costs 50 ms under
    # the lab's emulation, and the directory is there for every entry but a run's first.
    script = (f'{MAKE_DIR} && '
              f'dd of="$1" {" ".join(APPEND_OPTIONS)} || '
              f'{{ echo "{JOURNAL_FAILED_MESSAGE}: $1" >&2; exit {JOURNAL_FAILED_EXIT}; }}; '
              'shift; exec "$@"')
    return ["sh", "-c", script, "sh", path, *argv]


def unwrap_journalled(argv: Sequence[str]) -> tuple[str, list[str]] | None:
    """(journal path, argv) of a journalled_argv command; None for any other argv."""
    a = tuple(argv)
    if len(a) > 5 and a[:2] == ("sh", "-c") and a[3] == "sh" and JOURNAL_FAILED_MESSAGE in a[2]:
        return a[4], list(a[5:])
    return None


# $0 of replace_file_argv's script: how a fake host (and a reader of `ps`) recognises it.
REPLACE_NAME = "domu-backup-replace"


def replace_file_argv(path: str) -> list[str]:
    """One command that replaces ``path`` with stdin atomically and durably.

    stdin goes to ``path.tmp`` (fsynced), which is renamed over ``path``; the directory
    is then fsynced, so the rename itself survives a power loss. The directory is made
    (0700) if missing. Any failed part fails the command, and ``path`` then still holds
    its old content.
    """
    script = (f'{MAKE_DIR} && dd of="$1.tmp" conv=fsync status=none && '
              'mv -f -- "$1.tmp" "$1" && sync -- "${1%/*}"')
    return ["sh", "-c", script, REPLACE_NAME, path]


def unwrap_replace(argv: Sequence[str]) -> str | None:
    """The path a replace_file_argv command writes; None for any other argv."""
    a = tuple(argv)
    if len(a) == 5 and a[:2] == ("sh", "-c") and a[3] == REPLACE_NAME:
        return a[4]
    return None


def journal_path(state_dir: str, domain: str, run_id: str) -> str:
    """The journal of one run of one domain."""
    return posixpath.join(journal_dir(state_dir), f"{domain}.{run_id}.jsonl")


class Journal:
    """Appends entries to one run's journal on one host, through that host's runner."""

    def __init__(self, runner: Runner, state_dir: str, domain: str, run_id: str) -> None:
        self.runner = runner
        self.path = journal_path(state_dir, domain, run_id)
        self.domain = domain
        self.run_id = run_id
        self._ready = False

    def record(self, action: str, resource: str, undo: tuple[str, ...],
               exists: tuple[str, ...]) -> None:
        """Append one entry, durably, before the resource it names is made."""
        if not self._ready:
            self.runner.run(["mkdir", "-p", "-m", "0700", posixpath.dirname(self.path)],
                            timeout=30)
            self._ready = True
        entry = JournalEntry(self.run_id, self.domain, action, resource, undo, exists, time.time())
        # One command appends the entry and fsyncs the file (it survives power loss):
        # a peer step costs one round trip less than tee followed by sync.
        self.runner.run(append_argv(self.path), input=entry.to_line(), timeout=30)

    def entry_line(self, action: str, resource: str, undo: tuple[str, ...],
                   exists: tuple[str, ...]) -> str:
        """The entry of a resource as one line (no newline), for a command that appends it
        itself before making the resource (``step_batch``)."""
        self._ready = True  # that command makes the directory; remove() may now delete
        entry = JournalEntry(self.run_id, self.domain, action, resource, undo, exists, time.time())
        return entry.to_line().rstrip("\n")

    def run_recorded(self, action: str, resource: str, undo: tuple[str, ...],
                     exists: tuple[str, ...], argv: Sequence[str], *,
                     timeout: float) -> CommandResult:
        """Record the entry and run ``argv`` in one command (one round trip to a peer).

        The entry is fsynced before ``argv`` starts, as with record() then run(). The
        result is argv's, named by argv; a journal that cannot be written raises
        CommandFailed, and then argv never ran.
        """
        self._ready = True  # the wrapper makes the directory; remove() may now delete
        entry = JournalEntry(self.run_id, self.domain, action, resource, undo, exists, time.time())
        res = self.runner.run(journalled_argv(self.path, argv), input=entry.to_line(),
                              check=False, timeout=timeout)
        if res.exit_code == JOURNAL_FAILED_EXIT and JOURNAL_FAILED_MESSAGE in res.stderr:
            raise CommandFailed(res)
        return replace(res, argv=tuple(argv))

    def remove(self) -> None:
        """Remove the journal once everything it names is undone."""
        if self._ready:
            self.runner.run(["rm", "-f", self.path], timeout=30)


def parse_journal(text: str, path: str = "journal") -> list[JournalEntry]:
    """Entries of a journal file; a torn last line (crash mid-write) is ignored."""
    entries: list[JournalEntry] = []
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            entries.append(JournalEntry(
                run_id=str(raw["run_id"]), domain=str(raw["domain"]), action=str(raw["action"]),
                resource=str(raw["resource"]), undo=tuple(str(a) for a in raw["undo"]),
                exists=tuple(str(a) for a in raw["exists"]), ts=float(raw["ts"]),
            ))
        except (ValueError, KeyError, TypeError) as exc:
            if n == len(lines):
                break  # torn final write: the side effect after it never ran
            raise ParseError(f"{path}: line {n} is not a journal entry: {exc}") from exc
    return entries


def journals_argv(state_dir: str, domain: str | None = None) -> tuple[str, ...]:
    """The find that lists a host's journal files, optionally one domain's."""
    return ("find", journal_dir(state_dir), "-maxdepth", "1", "-type", "f", "-name",
            f"{domain}.*.jsonl" if domain else "*.jsonl")


def journals_from(res: CommandResult, domain: str | None = None) -> list[str]:
    """The journal files journals_argv found: none when there is no journal directory;
    CommandFailed when it could not be listed."""
    if res.exit_code != 0:
        if "No such file" in res.stderr:
            return []
        raise CommandFailed(res)
    # find's -name is a glob: keep only the files of exactly this domain (R21)
    return sorted(line for line in res.stdout.splitlines()
                  if line.strip() and journal_of(line, domain))


def list_journals(runner: Runner, state_dir: str, domain: str | None = None) -> list[str]:
    """Journal files on a host, optionally for one domain."""
    return journals_from(runner.run(journals_argv(state_dir, domain), check=False, timeout=30),
                         domain)
