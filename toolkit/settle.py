"""A classic ``promote --at`` past its point of no return: its merges finished, not undone.

A classic restore point is rolled back to by merging it into the standby, and a merge
cannot be undone. ``rollback`` journals every disk's merge before the first begins, so a
promote that fails or is killed after that leaves a journal naming all of them. What is
left is judged from LVM itself, one probe per merge:

- no merge has begun (every point still a plain snapshot): nothing is past the point of
  no return, and the promote is undone like any other (the merge entries have nothing to
  undo and are dropped);
- one has begun or finished: the standby can only go forward. Each merge not begun is
  started, each begun is waited for (``lvconvert --startpoll``), and every point must be
  gone after. Every disk's rollback stays as it is (the kept points, the standby as it
  was, among them), and the marker says the
  standby is clean at the point's run (it holds that run's state, whole), no longer
  promoted: the domain is not started, and ``promote`` can start it.

Used by the promote itself (its failure path) and by ``recover`` (a killed promote).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ToolkitError
from .journal import JournalEntry, replace_file_argv
from .marker import marker_text
from .restore_points import parse_point_lv
from .rollback import MERGE, MERGE_TIMEOUT, ROLLBACK_ACTIONS, lv_probe, merge_argv
from .runners import Runner

MARKER = "promote-marker"


@dataclass(frozen=True)
class Settled:
    """What is left to undo after the merges were judged, and what was done to them."""

    rest: list[JournalEntry]  # the entries still to undo, in journal order
    done: list[str]  # what settling did, one line each
    forward: bool  # True: past the point of no return (the merges finished)


def merge_state(runner: Runner, entry: JournalEntry) -> str:
    """``merged`` (the point is gone), ``merging`` or ``waiting`` (not begun), from the
    point LV's attributes (a merging snapshot's type letter is ``S``)."""
    res = runner.run(("lvs", "--noheadings", "-o", "lv_attr", _point(entry)), check=False,
                     timeout=60)
    attr = res.stdout.strip()
    if res.exit_code != 0 or not attr:
        said = res.stderr + res.stdout
        if res.exit_code != 0 and "Failed to find" not in said and "not found" not in said:
            raise ToolkitError(f"cannot tell whether {_point(entry)} was merged: "
                               f"{(res.stderr.strip() or 'lvs failed').splitlines()[-1]}",
                               host=runner.host)
        return "merged"
    return "merging" if attr[0] == "S" else "waiting"


def _point(entry: JournalEntry) -> str:
    """The merge's point as ``VG/LV``: the last word of its exists-probe, which ``recover``
    has proven to be ``lv_probe`` of one of the domain's points (never the resource)."""
    if entry.exists != lv_probe(*entry.exists[-1].split("/", 1)):
        raise ToolkitError(f"a merge entry whose probe is not its point's: {entry.exists}")
    return entry.exists[-1]


def settle_merges(runner: Runner, entries: Sequence[JournalEntry],
                  log: Callable[[str], None]) -> Settled:
    """Judge a promote journal's merges (see the module's text). ``entries`` are its
    accepted entries, in journal order; ToolkitError when a merge cannot be finished."""
    merges = [e for e in entries if e.action == MERGE]
    states = [merge_state(runner, e) for e in merges]
    if all(s == "waiting" for s in states):
        return Settled([e for e in entries if e.action != MERGE], [], False)
    done = []
    for e, state in zip(merges, states, strict=True):
        vg, _, point = _point(e).partition("/")
        if state == "waiting":  # another disk's merge began: this one must follow it
            runner.run(merge_argv(vg, point), timeout=MERGE_TIMEOUT)
        elif state == "merging":
            runner.run(e.undo, timeout=MERGE_TIMEOUT)
        if merge_state(runner, e) != "merged":
            raise ToolkitError(f"the merge of {_point(e)} into its standby has not finished "
                               f"(`{' '.join(e.undo)}` to go on with it)", host=runner.host)
        done.append(f"[{runner.host}] merged {_point(e)} into its standby (a merge cannot be "
                    f"undone; run {e.run_id})")
    run = parse_point_lv(_point(merges[0]).partition("/")[2])
    at = run[0] if run else None
    marker = next((e for e in entries if e.action == MARKER), None)
    if marker is not None and at is not None:
        kept_path, path = marker.undo[3], marker.undo[4]
        _mark_clean_at(runner, kept_path, path, at, merges[0].run_id)
        done.append(f"[{runner.host}] the standby of {merges[0].domain} is clean at restore "
                    f"point {at} (not promoted; the standby as it was is restore point "
                    f"{merges[0].run_id})")
    for line in done:
        log(line)
    # Every disk's rollback stays (a thin disk's of a mixed point too: all of stage 0 was
    # done before the first merge was journalled); what is left is the define.
    rest = [e for e in entries if e.action not in ROLLBACK_ACTIONS and e.action != MARKER]
    return Settled(rest, done, True)


def _mark_clean_at(runner: Runner, kept_path: str, path: str, at: str, run_id: str) -> None:
    """The marker after a finished merge: what it said before the promote (kept beside it),
    now clean at the point's run; the kept copy removed."""
    before: dict = {}
    for source in (kept_path, path):
        res = runner.run(["cat", "--", source], check=False, timeout=30)
        try:
            before = json.loads(res.stdout) if res.exit_code == 0 else {}
        except ValueError:
            before = {}
        if isinstance(before, dict) and before:
            break
    before = {k: v for k, v in (before if isinstance(before, dict) else {}).items()
              if not k.startswith("promoted_")}
    marker = {**before, "state": "clean", "updated": time.time(),
              "last_success_run_id": at, "rolled_back_to": at, "rolled_back_by": run_id,
              "rolled_back_from": before.get("last_success_run_id")}
    runner.run(replace_file_argv(path), input=marker_text(marker), timeout=60)
    runner.run(["rm", "-f", "--", kept_path], timeout=60)
