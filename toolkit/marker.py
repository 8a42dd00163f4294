"""The standby marker: one small JSON file per domain on its peer, saying clean or dirty.

A run marks the standby dirty before its first byte is copied and clean only after every
copy succeeded; ``status`` reads it from either Dom0. It is written atomically and durably
in one command (one round trip).
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Sequence

from .config import Config
from .errors import Interrupted, StatusUnknown, ToolkitError
from .runners import Runner

# clean and dirty are a backup's; promoted is promote's: the guest was started from the
# standby, and no backup may write to it again.
STATES = ("clean", "dirty", "promoted")
PROMOTED = "promoted"


def promoted_message(domain: str, peer: str, marker: dict) -> str:
    """What a refused backup says about a promoted standby, and what to do."""
    when = marker.get("promoted_at")
    at = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(when)))
          if isinstance(when, (int, float)) else "an unknown time")
    point = marker.get("promoted_from") or "the standby as it was"
    return (f"the standby of {domain} on {peer} was promoted at {at} (from {point}): the "
            "guest was started from it there, and a backup from here would overwrite it. "
            f"Nothing was changed. The guest's current data is on {peer}; see 'When the "
            "source Dom0 dies' in the README for the way back")


def marker_path(config: Config, domain: str) -> str:
    """Where the standby marker of a domain lives on its peer."""
    return posixpath.join(config.defaults.state_dir, "standby", f"{domain}.json")


def read_marker(runner: Runner, cat: Sequence[str]) -> dict:
    """The marker as a run sees it before replacing it (``cat`` is the plan's read of it):
    ``{}`` when missing or unreadable."""
    res = runner.run(cat, check=False, timeout=30)
    if res.exit_code != 0:
        return {}
    try:
        data = json.loads(res.stdout)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def read_peer_marker(peer: Runner, path: str) -> dict:
    """The standby marker on the peer; StatusUnknown saying why when it cannot be read
    (the peer unreachable, no marker, or not a marker). Its cause is the peer's own error."""
    try:
        res = peer.run(["cat", "--", path], check=False, timeout=30)
    except Interrupted:
        raise
    except ToolkitError as exc:
        raise StatusUnknown(f"cannot read the standby marker {path}: {exc}") from exc
    if res.exit_code != 0:
        tail = (res.stderr.strip().splitlines() or [f"cat exited {res.exit_code}"])[-1]
        raise StatusUnknown(f"cannot read the standby marker {path}: {tail}", host=peer.host)
    try:
        marker = json.loads(res.stdout)
    except ValueError:
        marker = None
    if not isinstance(marker, dict) or marker.get("state") not in STATES:
        raise StatusUnknown(f"the standby marker {path} is not a marker (no clean/dirty state)",
                            host=peer.host)
    return marker


def new_marker(domain: str, state: str, run_id: str, source_host: str, previous: dict,
               now: float | None = None, standby: dict[str, str] | None = None) -> dict:
    """The marker a run writes. A clean one records this run as the last success; a dirty
    one keeps what the last clean one said (``previous``). ``standby``: each disk target's
    standby LV, which ``verify`` reads."""
    now = time.time() if now is None else now
    last_success: float | None
    last_run: str | None
    if state == "clean":
        last_success, last_run = now, run_id
    else:
        last_success = previous.get("last_success")
        last_run = previous.get("last_success_run_id")
    return {
        "domain": domain,
        "state": state,
        "run_id": run_id,
        "source_host": source_host,
        "updated": now,
        "last_success": last_success,
        "last_success_run_id": last_run,
        **({"standby": dict(standby)} if standby else {}),
    }


def marker_text(marker: dict) -> str:
    """The marker as its file holds it."""
    return json.dumps(marker, indent=2) + "\n"
