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
from dataclasses import asdict, dataclass

from .errors import ParseError
from .runners import Runner


@dataclass(frozen=True)
class JournalEntry:
    run_id: str
    domain: str
    action: str
    resource: str
    undo: tuple[str, ...]
    exists: tuple[str, ...]
    ts: float

    def to_line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"


def journal_dir(state_dir: str) -> str:
    return posixpath.join(state_dir, "journal")


def append_argv(path: str) -> list[str]:
    """dd that appends stdin to ``path`` and fsyncs it before exiting (no shell)."""
    return ["dd", f"of={path}", "oflag=append", "conv=notrunc,fsync", "status=none"]


def journal_path(state_dir: str, domain: str, run_id: str) -> str:
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
        if not self._ready:
            self.runner.run(["mkdir", "-p", "-m", "0700", posixpath.dirname(self.path)],
                            timeout=30)
            self._ready = True
        entry = JournalEntry(self.run_id, self.domain, action, resource, undo, exists, time.time())
        # One command appends the entry and fsyncs the file (it survives power loss):
        # a peer step costs one round trip less than tee followed by sync.
        self.runner.run(append_argv(self.path), input=entry.to_line(), timeout=30)

    def remove(self) -> None:
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


def list_journals(runner: Runner, state_dir: str, domain: str | None = None) -> list[str]:
    """Journal files on a host, optionally for one domain."""
    d = journal_dir(state_dir)
    res = runner.run(["find", d, "-maxdepth", "1", "-type", "f", "-name",
                      f"{domain}.*.jsonl" if domain else "*.jsonl"], check=False, timeout=30)
    if res.exit_code != 0:
        if "No such file" in res.stderr:
            return []
        runner.run(["find", d, "-maxdepth", "1"], timeout=30)
    return sorted(line for line in res.stdout.splitlines() if line.strip())
