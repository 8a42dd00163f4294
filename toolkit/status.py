"""`status`: per domain, the last success and failure and whether the standby is clean."""

from __future__ import annotations

import json
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import Interrupted, StatusUnknown, ToolkitError
from .runners import Runner


@dataclass(frozen=True)
class DomainStatus:
    domain: str
    peer: str
    last_outcome: str | None
    last_run_id: str | None
    last_success: float | None
    last_failure: float | None
    last_failure_message: str | None
    standby: str  # clean, dirty, unknown


def marker_path(config: Config, domain: str) -> str:
    """Where the standby marker of a domain lives on its peer."""
    return posixpath.join(config.defaults.state_dir, "standby", f"{domain}.json")


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
    if not isinstance(marker, dict) or marker.get("state") not in ("clean", "dirty"):
        raise StatusUnknown(f"the standby marker {path} is not a marker (no clean/dirty state)",
                            host=peer.host)
    return marker


def domain_status(config: Config, domain: str, *, peer_marker: dict | None = None) -> DomainStatus:
    """Status from the local report history, and the standby's state from the peer's marker
    only: without the marker the standby is "unknown", never guessed from local history."""
    dcfg = config.domain(domain)
    history = Path(config.defaults.report_dir) / "history.jsonl"
    last = success = failure = None
    for line in history.read_text().splitlines() if history.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("domain") != domain:
            continue
        last = rec
        if rec.get("outcome") == "success":
            success = rec
        elif rec.get("outcome") in ("failed", "interrupted"):
            failure = rec
    standby = "unknown"
    if peer_marker:
        standby = peer_marker.get("state", "unknown")
        if success is None and peer_marker.get("last_success"):
            success = {"finished": peer_marker["last_success"]}
    return DomainStatus(
        domain=domain, peer=dcfg.peer,
        last_outcome=last.get("outcome") if last else None,
        last_run_id=last.get("run_id") if last else None,
        last_success=success.get("finished") if success else None,
        last_failure=failure.get("finished") if failure else None,
        last_failure_message=failure.get("message") if failure else None,
        standby=standby,
    )


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "never"


def render_status(rows: list[DomainStatus]) -> str:
    lines = [f"{'domain':<12} {'peer':<10} {'standby':<8} {'last success':<20} last failure"]
    for r in rows:
        fail = _when(r.last_failure)
        if r.last_failure_message:
            fail += f" ({r.last_failure_message[:60]})"
        lines.append(f"{r.domain:<12} {r.peer:<10} {r.standby:<8} {_when(r.last_success):<20} "
                     f"{fail}")
    return "\n".join(lines)
