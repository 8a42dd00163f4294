"""Several steps of one host in one command: each journal entry still on disk first.

A run maps and mounts on each host in a row of steps (the peer's alias, partition maps,
directories and mounts). Sent one by one, each costs a round trip to the peer; sent as
one script, the row costs one. The script keeps every promise of the one-by-one way:

- a step's journal entry is appended and fsynced before its command starts, and a step
  whose entry cannot be written does not run (nor does anything after it);
- the script stops at the first step that fails;
- a map's /dev/mapper node is proven a block device (``dmsetup mknodes`` when udev made
  none) before the next step can use it;
- after each step it prints a line with the step's index, its outcome and the host's
  uptime (read by the shell itself), so each step is timed and the caller knows exactly
  which steps ran.

Every word reaches its command as it is: each step is one line of ``shlex``-quoted words
handed to a shell function as its arguments.

``run_reads`` does the same for read-only probes (a check step's ``findmnt`` and ``stat``):
all of them in one command, each one's output and exit code returned apart, between
lines that carry a boundary drawn at random for that command, so no output can fake one.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .errors import CommandFailed
from .journal import APPEND_OPTIONS, JOURNAL_FAILED_EXIT, JOURNAL_FAILED_MESSAGE
from .runners import CommandResult, Runner

# $0 of the script: how a fake host (and a reader of `ps`) recognises it.
STEP_BATCH_NAME = "domu-backup-steps"
_MARK = "@@domubk-step"
NODE_MISSING = "node"  # the outcome of a map whose node is not a block device

# s INDEX JOURNAL ENTRY NODE NAME -- ARGV...: one step (JOURNAL "" when not journalled,
# NODE "" when the step makes no /dev/mapper node).
_FUNCTIONS = (
    'm() { t=; read t _ </proc/uptime 2>/dev/null; '
    f'printf "\\n%s %s r=%s t=%s\\n" {_MARK} "$1" "$2" "$t"; }}\n'
    's() {\n'
    '  k=$1 j=$2 e=$3 n=$4 d=$5; shift 6\n'
    '  if [ -n "$j" ]; then\n'
    '    { [ -d "${j%/*}" ] || mkdir -p -m 0700 "${j%/*}"; } &&\n'
    f'    printf "%s\\n" "$e" | dd of="$j" {" ".join(APPEND_OPTIONS)} ||\n'
    f'    {{ echo "{JOURNAL_FAILED_MESSAGE}: $j" >&2; m "$k" {JOURNAL_FAILED_EXIT}; return 1; }}\n'
    '  fi\n'
    '  "$@"; r=$?\n'
    '  if [ "$r" = 0 ] && [ -n "$n" ]; then\n'
    f'    test -b "$n" || {{ dmsetup mknodes "$d"; test -b "$n"; }} || r={NODE_MISSING}\n'
    '  fi\n'
    '  m "$k" "$r"; [ "$r" = 0 ]\n'
    '}\n'
    'm - ""\n'
)


@dataclass(frozen=True)
class BatchStep:
    """One step of a batch: its command, and what goes with it."""

    argv: tuple[str, ...]
    journal: str = ""  # the journal file its entry is appended to ("": not journalled)
    entry: str = ""  # that entry, one JSON line without its newline
    node: str = ""  # the /dev/mapper node it makes, proven a block device after it

    @property
    def node_name(self) -> str:
        return self.node.rsplit("/", 1)[-1] if self.node else ""


@dataclass(frozen=True)
class StepOutcome:
    """What the script said of one step: its outcome ("0" when it succeeded, an exit code,
    JOURNAL_FAILED_EXIT's, or NODE_MISSING) and how long it took (None: unknown)."""

    code: str
    seconds: float | None


def step_batch_argv(steps: Sequence[BatchStep]) -> list[str]:
    """One ``sh -c`` command running ``steps`` in order, stopping at the first failure."""
    lines = [shlex.join(["s", str(k), s.journal, s.entry, s.node, s.node_name, "--",
                         *s.argv]) + " || exit 0" for k, s in enumerate(steps)]
    return ["sh", "-c", _FUNCTIONS + "\n".join(lines), STEP_BATCH_NAME]


def unwrap_step_batch(argv: Sequence[str]) -> list[BatchStep] | None:
    """The steps of a step_batch_argv command, in order; None for any other argv."""
    a = tuple(argv)
    if len(a) != 4 or a[:2] != ("sh", "-c") or a[3] != STEP_BATCH_NAME:
        return None
    if not a[2].startswith(_FUNCTIONS):
        return None
    out = []
    for line in a[2][len(_FUNCTIONS):].split("\n"):
        words = shlex.split(line)
        if words[:1] != ["s"] or words[6:7] != ["--"] or words[-3:] != ["||", "exit", "0"]:
            return None
        out.append(BatchStep(tuple(words[7:-3]), words[2], words[3], words[4]))
    return out


def mark_line(mark: str, k: int | str | None, code: str, uptime: float | None) -> str:
    """The line a batch script prints after its ``k``-th command (None: before the first):
    that command's outcome and the host's uptime."""
    return (f"\n{mark} {'-' if k is None else k} r={code} "
            f"t={'' if uptime is None else uptime}\n")


def read_marks(stdout: str, mark: str) -> dict[str, tuple[str, float | None]]:
    """The ``mark`` lines of a batch's output: index ("-" before the first) -> (outcome,
    uptime or None). The last line of an index wins: the script prints its own after the
    command's output, so no command can claim an outcome for itself or one before it."""
    marks: dict[str, tuple[str, float | None]] = {}
    for line in stdout.splitlines():
        parts = line.split(" ")
        if len(parts) != 4 or parts[0] != mark or not parts[2].startswith("r="):
            continue
        try:
            uptime: float | None = float(parts[3].removeprefix("t="))
        except ValueError:
            uptime = None
        marks[parts[1]] = (parts[2].removeprefix("r="), uptime)
    return marks


def step_mark(k: int | None, code: str, uptime: float | None) -> str:
    """The line the script prints after step ``k`` (None: before the first)."""
    return mark_line(_MARK, k, code, uptime)


def step_outcomes(stdout: str) -> list[StepOutcome]:
    """Each step's outcome, from the first on, until the one that failed (included) or the
    last the script reached. A command's own output cannot claim a later step's outcome:
    the script's mark of each step is printed after its command, and the last one wins."""
    marks = read_marks(stdout, _MARK)
    out: list[StepOutcome] = []
    before = marks.get("-", ("", None))[1]
    while str(len(out)) in marks:
        code, now = marks[str(len(out))]
        took = round(now - before, 3) if now is not None and before is not None else None
        out.append(StepOutcome(code, took))
        before = now
        if code != "0":
            break
    return out


# -- read-only probes in one command ------------------------------------------------------

READS_NAME = "domu-backup-reads"
# r INDEX BOUNDARY WORDS -- ARGV...: one probe (WORDS words long), its output between two
# lines of the boundary. Both streams are marked, so each probe gets its own stderr too.
_READ_FUNCTION = ('r() {\n  k=$1 b=$2; shift 4\n'
                  '  printf "\\n%s %s start\\n" "$b" "$k"; '
                  'printf "\\n%s %s start\\n" "$b" "$k" >&2\n'
                  '  "$@"; c=$?\n'
                  '  printf "\\n%s %s end %s\\n" "$b" "$k" "$c"; '
                  'printf "\\n%s %s end %s\\n" "$b" "$k" "$c" >&2\n}\n')


def reads_argv(argvs: Sequence[Sequence[str]], boundary: str) -> list[str]:
    """One ``sh -c`` command running each read-only ``argv`` in turn (all of them, whatever
    each exits with), each one's output between two lines carrying ``boundary``."""
    lines = [shlex.join(["r", str(k), boundary, str(len(a)), "--", *a])
             for k, a in enumerate(argvs)]
    return ["sh", "-c", _READ_FUNCTION + "\n".join(lines), READS_NAME]


def unwrap_reads(argv: Sequence[str]) -> tuple[str, list[tuple[str, ...]]] | None:
    """(boundary, the probes) of a reads_argv command; None for any other argv."""
    a = tuple(argv)
    if len(a) != 4 or a[:2] != ("sh", "-c") or a[3] != READS_NAME:
        return None
    if not a[2].startswith(_READ_FUNCTION):
        return None
    # a probe's words may hold newlines (a script): read them by their count, not by line
    words = shlex.split(a[2][len(_READ_FUNCTION):])
    out: list[tuple[str, ...]] = []
    boundary, i = "", 0
    while i < len(words):
        head = words[i:i + 5]
        if (len(head) < 5 or head[0] != "r" or head[1] != str(len(out)) or head[4] != "--"
                or not head[3].isdigit()):
            return None
        boundary, n = head[2], int(head[3])
        out.append(tuple(words[i + 5:i + 5 + n]))
        i += 5 + n
    return boundary, out


def read_section(k: int, boundary: str, output: str, code: int) -> str:
    """What reads_argv's script prints on each stream for probe ``k`` (for a host that
    plays it): the probe's output on that stream between the two lines."""
    return f"\n{boundary} {k} start\n{output}\n{boundary} {k} end {code}\n"


def _section(text: str, boundary: str, k: int) -> tuple[str, str] | None:
    """(the output, the exit code as printed) of probe ``k`` on one stream; None if the
    stream does not hold it whole."""
    start, end = f"\n{boundary} {k} start\n", f"\n{boundary} {k} end "
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if j < 0:
        return None
    return text[i + len(start):j], text[j + len(end):].split("\n", 1)[0]


def run_reads(runner: Runner, argvs: Sequence[Sequence[str]], *, timeout: float
              ) -> list[CommandResult]:
    """Each probe's result, as if each had run on its own (its argv, exit code, stdout and
    stderr), from one command: one round trip to a peer. A probe the output does not
    account for fails the whole (CommandFailed)."""
    boundary = f"@@domubk-read-{secrets.token_hex(8)}"
    res = runner.run(reads_argv(argvs, boundary), check=False, timeout=timeout)
    return split_reads(res, argvs, boundary)


def split_reads(res: CommandResult, argvs: Sequence[Sequence[str]], boundary: str
                ) -> list[CommandResult]:
    """The probes' own results out of a reads_argv command's result."""
    out = []
    for k, argv in enumerate(argvs):
        stdout, stderr = _section(res.stdout, boundary, k), _section(res.stderr, boundary, k)
        if stdout is None or stderr is None or not stdout[1].isdigit():
            raise CommandFailed(replace(res, exit_code=res.exit_code or 1))
        out.append(replace(res, argv=tuple(argv), exit_code=int(stdout[1]), stdout=stdout[0],
                           stderr=stderr[0]))
    return out
