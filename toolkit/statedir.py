"""The state directory on each host (journals, standby markers), checked before use (R22).

``recover`` runs, as root, the undo commands a journal names, and a backup trusts
the standby marker it finds: whoever can write in the state directory could make
root run anything, or make a dirty standby look clean. So before a run or
``recover`` reads or writes there, on each host, the directory is made if
missing and proven: a real directory (not a symlink) owned by root, not group-
or world-writable, with the same for its ``journal`` and ``standby``
subdirectories where they exist, and every directory above it owned by root and
either not group- or world-writable or sticky. The look is one command, through
the host's runner, so the peer is checked over the same SSH connection.
"""

from __future__ import annotations

import posixpath
import stat

from .errors import InsecureFile, ParseError
from .runners import CommandResult, Runner

SUBDIRS = ("journal", "standby")

# One round trip: make the directory, then print the uid we run as, the resolved
# path, and "rawmode uid path" of the directory (not followed), of every directory
# above its resolved path (followed), and of its subdirectories that exist. The
# parents are named by the shell itself and all stat-ed at once: a process each
# costs 30-50 ms under the lab's emulation, and every run proves both hosts'.
_SCRIPT = r"""
d="$1"
[ -d "$d" ] || mkdir -p -m 0700 -- "$d" || exit 3
id -u
r=$(realpath -e -- "$d") || exit 3
printf 'R %s\n' "$r"
stat -c 'D %f %u %n' -- "$d" || exit 3
set --
p="$r"
while [ "$p" != / ]; do
  p="${p%/*}"
  [ -n "$p" ] || p=/
  set -- "$@" "$p"
done
if [ $# -gt 0 ]; then stat -L -c 'P %f %u %n' -- "$@" || exit 3; fi
set --
for s in journal standby; do
  if [ -e "$d/$s" ] || [ -L "$d/$s" ]; then set -- "$@" "$d/$s"; fi
done
if [ $# -gt 0 ]; then stat -c 'S %f %u %n' -- "$@" || exit 3; fi
exit 0
"""


def state_dir_argv(state_dir: str) -> list[str]:
    """One command: make the state directory, then report its owner and mode, and its parents'."""
    return ["sh", "-c", _SCRIPT, "domu-backup-statedir", state_dir]


def judge_state_dir(output: str, state_dir: str, host: str) -> None:
    """Raise InsecureFile (naming the host and path) unless the look says all is safe."""
    lines = output.splitlines()
    if not lines or not lines[0].strip().isdigit():
        raise ParseError(f"state directory check printed no uid: {output[:200]!r}", host=host)
    uid = int(lines[0])

    def trusted(owner: int) -> bool:
        return owner == 0 or owner == uid

    for line in lines[1:]:
        kind, _, rest = line.partition(" ")
        if kind == "R":
            continue
        raw_mode, _, rest = rest.partition(" ")
        owner, _, path = rest.partition(" ")
        try:
            mode, who = int(raw_mode, 16), int(owner)
        except ValueError:
            raise ParseError(f"state directory check: bad line {line[:200]!r}",
                             host=host) from None
        perm = stat.S_IMODE(mode)
        if kind in ("D", "S"):
            what = "the state directory" if kind == "D" else f"{posixpath.basename(path)}/ in it"
            if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
                raise _refuse(host, path, f"{what} is not a directory (a symlink or another "
                              "file), which the tool never follows",
                              f"replace it with a directory: rm {path} && mkdir -m 0700 {path}")
            if not trusted(who):
                raise _refuse(host, path, f"{what} is owned by uid {who}, not by root",
                              f"run chown root {path}")
            if perm & (stat.S_IWGRP | stat.S_IWOTH):
                raise _refuse(host, path, f"{what} has mode {perm:04o} (group- or "
                              "world-writable)", f"run chmod go-w {path}")
        elif kind == "P":
            if not trusted(who):
                raise _refuse(host, path, f"a directory above the state directory {state_dir} "
                              f"is owned by uid {who}", f"run chown root {path}")
            if perm & (stat.S_IWGRP | stat.S_IWOTH) and not (who == 0 and perm & stat.S_ISVTX):
                raise _refuse(host, path, f"a directory above the state directory {state_dir} "
                              f"has mode {perm:04o}: group- or world-writable and not sticky",
                              f"run chmod go-w {path}")
        else:
            raise ParseError(f"state directory check: bad line {line[:200]!r}", host=host)


def check_state_dir(runner: Runner, state_dir: str) -> None:
    """Make the state directory on ``runner``'s host if missing, then prove it safe."""
    state_dir_from(runner.run(state_dir_argv(state_dir), check=False, timeout=60), state_dir,
                   runner.host)


def state_dir_from(res: CommandResult, state_dir: str, host: str) -> None:
    """Judge what state_dir_argv printed (InsecureFile unless the directory is safe)."""
    if res.exit_code != 0:
        tail = (res.stderr.strip().splitlines() or [f"exit {res.exit_code}"])[-1]
        raise InsecureFile(f"state directory {state_dir}: cannot make or inspect it: {tail}",
                           host=host)
    judge_state_dir(res.stdout, state_dir, host)


def _refuse(host: str, path: str, problem: str, fix: str) -> InsecureFile:
    return InsecureFile(f"{path}: {problem}; {fix}", host=host)
