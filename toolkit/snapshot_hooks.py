"""What happens around a domain's snapshots: the hooks ``pre_snapshot`` right before them
and ``post_snapshot`` right after (always once ``pre_snapshot`` ran), and with freeze =
"agent" the guest's filesystems frozen between the two and thawed as soon as the snapshots
exist (always once the freeze was asked for). R26.

Before ``pre_snapshot`` runs, a flag file is made on the source, journalled with the undo
"run post_snapshot": a run that fails or is signalled before its snapshots exist runs
``post_snapshot`` in teardown, and ``recover`` runs it after a SIGKILL or a power loss.
Its normal place is right after the last snapshot; it removes the flag then. The journal
names only the flag: the program ``recover`` runs is the one the config names now, never
one read from a file.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from .errors import CommandFailed, ToolkitError
from .journal import journal_dir
from .runners import CommandResult, Runner
from .undo import resource_exists

# The undo a journal holds for a pending post_snapshot: this word, the hook's name, the flag.
HOOK_UNDO = "domu-backup-post-snapshot"
# The undo a journal holds for a pending thaw: this word, "thaw", the flag.
THAW_UNDO = "domu-backup-thaw"


def flag_path(state_dir: str, domain: str, run_id: str, what: str = "post_snapshot") -> str:
    """The flag that says post_snapshot (or a thaw) is owed, beside the run's journal."""
    return posixpath.join(journal_dir(state_dir), f"{domain}.{run_id}.{what}")


def flag_undo(flag: str) -> tuple[str, ...]:
    """The journal's undo for a pending post_snapshot."""
    return (HOOK_UNDO, "post_snapshot", flag)


def thaw_undo(flag: str) -> tuple[str, ...]:
    """The journal's undo for a pending thaw."""
    return (THAW_UNDO, "thaw", flag)


def flag_probe(flag: str) -> tuple[str, ...]:
    """Prints the flag while it is there."""
    return ("find", flag, "-maxdepth", "0")


def is_flag_undo(undo: Sequence[str], exists: Sequence[str], state_dir: str | None = None
                 ) -> bool:
    """Whether a journal entry is exactly a pending post_snapshot's or thaw's (nothing else)."""
    kinds = {HOOK_UNDO: "post_snapshot", THAW_UNDO: "thaw"}
    if len(undo) != 3 or kinds.get(undo[0]) != undo[1]:
        return False
    flag = undo[2]
    name = posixpath.basename(flag)
    if (not flag.startswith("/") or ".." in flag.split("/") or not name.endswith("." + undo[1])
            or tuple(exists) != flag_probe(flag)):
        return False
    return state_dir is None or posixpath.dirname(flag) == journal_dir(state_dir)


def run_snapshot_hook(runner: Runner, phase: str, argv: Sequence[str], domain: str,
                      run_id: str, timeout: float) -> CommandResult:
    """One hook on the source, with the domain, run and phase in its environment."""
    env = {"DOMU_BACKUP_DOMAIN": domain, "DOMU_BACKUP_RUN_ID": run_id,
           "DOMU_BACKUP_PHASE": phase}
    return runner.run(list(argv), check=False, timeout=timeout, env=env)


def describe(phase: str, argv: Sequence[str], res: CommandResult) -> str:
    """The line a report and the log keep of one hook."""
    shown = " ".join(argv)
    tail = " | ".join(res.stderr.strip().splitlines()[-2:])
    return (f"{phase}: `{shown}` exited {res.exit_code}"
            + (f": {tail}" if tail and res.exit_code else ""))


def owe_post_snapshot(runner: Runner, flag: str, argv: Sequence[str], domain: str,
                      run_id: str, timeout: float) -> str | None:
    """Run post_snapshot if its flag is there, then remove the flag: the line it left, or
    None when nothing was owed. A failed hook keeps the flag (recover runs it again) and
    raises."""
    if not resource_exists(runner, flag_probe(flag)):
        return None
    line = "post_snapshot: none configured"
    if argv:
        try:
            res = run_snapshot_hook(runner, "post_snapshot", argv, domain, run_id, timeout)
        except CommandFailed as exc:  # killed at its timeout
            raise ToolkitError(f"post_snapshot `{' '.join(argv)}`: {exc}",
                               host=runner.host) from exc
        line = describe("post_snapshot", argv, res)
        if res.exit_code != 0:
            raise ToolkitError(line + "; it is run again by recover", host=runner.host)
    runner.run(["rm", "-f", "--", flag], timeout=60)
    return line


def freeze_argv(uri: str, domain: str) -> tuple[str, ...]:
    """Freeze the guest's filesystems through its agent."""
    return ("virsh", "-c", uri, "domfsfreeze", "--", domain)


def thaw_argv(uri: str, domain: str) -> tuple[str, ...]:
    """Thaw them."""
    return ("virsh", "-c", uri, "domfsthaw", "--", domain)


def owe_thaw(runner: Runner, flag: str, uri: str, domain: str, timeout: float) -> str | None:
    """Thaw the guest if its flag is there, then remove the flag: the line it left, or None
    when no thaw was owed. A failed thaw keeps the flag (recover thaws again) and raises."""
    if not resource_exists(runner, flag_probe(flag)):
        return None
    res = runner.run(list(thaw_argv(uri, domain)), check=False, timeout=timeout)
    if res.exit_code != 0:
        tail = (res.stderr.strip().splitlines() or [f"exited {res.exit_code}"])[-1]
        raise ToolkitError(f"domfsthaw of {domain} failed: {tail}; recover thaws it again",
                           host=runner.host)
    runner.run(["rm", "-f", "--", flag], timeout=60)
    return res.stdout.strip() or "thawed"
