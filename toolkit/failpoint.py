"""Failpoints: a fault a test injects at one step of a run (the rehearsal lab only).

``DOMU_BACKUP_FAILPOINT=when:action[@n]:what`` makes a run raise, signal itself or sleep
before or after the n-th step of that action. It is honoured only on a host the lab
marked with its test-hooks file, and parsed strictly (a bad value is a usage error).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ToolkitError, UsageError

FAILPOINT_ENV = "DOMU_BACKUP_FAILPOINT"

# Failpoints are a test hook: honoured only on a host where the rehearsal lab put this
# file (root's, written at sandbox.up). A stray DOMU_BACKUP_FAILPOINT in a crontab or a
# unit file on a production Dom0 is ignored, with a line saying so.
TEST_HOOKS_FILE = "/etc/domu-backup/test-hooks"
FAILPOINT_ACTIONS = frozenset({"lock", "snapshot", "map", "mkdir", "mount", "check", "fstab",
                               "alias", "lvmap", "marker", "bootread", "bootwrite", "rsync",
                               "point", "prune", "define", "start", "keep", "tag", "rollback",
                               "keep-classic", "merge", "prehook", "posthook", "freeze", "thaw"})
FAILPOINT_WHATS = ("raise", "sigterm", "sigkill", "sigint", "sighup")


@dataclass(frozen=True)
class Failpoint:
    """``DOMU_BACKUP_FAILPOINT=when:action[@n]:what`` (e.g. ``after:mount@2:sigkill``)."""

    when: str  # before | after
    action: str
    index: int  # 1-based occurrence of that action, 0 = every
    what: str  # raise | sigterm | sigkill | sigint | sighup | sleep=SECONDS

    @classmethod
    def from_env(cls, log: Callable[[str], None] = lambda m: None) -> Failpoint | None:
        """The failpoint the environment sets, where this host allows test hooks; else None."""
        raw = os.environ.get(FAILPOINT_ENV, "").strip()
        if not raw:
            return None
        if not os.path.isfile(TEST_HOOKS_FILE):
            log(f"{FAILPOINT_ENV} is set but this host has no {TEST_HOOKS_FILE} (test hooks "
                "are for the rehearsal lab): ignored")
            return None
        return cls.parse(raw)

    @classmethod
    def parse(cls, raw: str) -> Failpoint:
        """A failpoint from its text; UsageError (exit 4) naming what is wrong."""
        def bad(why: str) -> UsageError:
            return UsageError(f"{FAILPOINT_ENV}={raw!r}: {why} (expected when:action[@n]:what, "
                              "e.g. after:mount@2:sigkill)")

        parts = raw.split(":", 2)
        if len(parts) != 3:
            raise bad("three parts separated by ':'")
        when, action, what = parts
        index = 0
        if "@" in action:
            action, n = action.split("@", 1)
            if not n.isdigit() or int(n) < 1:
                raise bad(f"the occurrence {n!r} is not a whole number from 1")
            index = int(n)
        if when not in ("before", "after"):
            raise bad(f"'when' must be before or after, got {when!r}")
        if action not in FAILPOINT_ACTIONS:
            raise bad(f"unknown action {action!r} ({', '.join(sorted(FAILPOINT_ACTIONS))})")
        if what.startswith("sleep="):
            try:
                seconds = float(what.removeprefix("sleep="))
            except ValueError:
                raise bad(f"sleep needs seconds, got {what!r}") from None
            if not 0 <= seconds <= 3600:
                raise bad("sleep is 0 to 3600 seconds")
        elif what not in FAILPOINT_WHATS:
            raise bad(f"unknown effect {what!r} ({', '.join(FAILPOINT_WHATS)} or sleep=N)")
        return cls(when, action, index, what)

    def fire(self) -> None:
        """Do the effect: raise, signal this process, or sleep."""
        import signal as sig

        if self.what == "raise":
            raise ToolkitError(f"failpoint {self.when}:{self.action} raised")
        if self.what.startswith("sleep="):
            time.sleep(float(self.what.split("=", 1)[1]))
            return
        signum = {"sigterm": sig.SIGTERM, "sigkill": sig.SIGKILL, "sigint": sig.SIGINT,
                  "sighup": sig.SIGHUP}.get(self.what)
        if signum is None:
            raise ToolkitError(f"failpoint action {self.what!r} unknown")
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises; SIGKILL never returns
