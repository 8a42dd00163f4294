"""The Prometheus text file for node_exporter's textfile collector (``[monitoring]``).

After every backup the file is rewritten, atomically (a new file renamed over the old one,
never written through a planted symlink), from this host's reports: for each configured
domain its last backup (``<domain>.json``) and its last success (the history). Every
metric carries the domain as a label; a domain never backed up here has only
``domubk_configured``. The text is prometheus_client's, so the format is the library's.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from . import safefs
from .config import Config
from .retention import run_id_time
from .status import domain_history, domain_status

STANDBY_STATES = {"clean": 1, "dirty": 0}


def registry_for(config: Config) -> CollectorRegistry:
    """The metrics of every configured domain, from this host's reports."""
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(f"domubk_{name}", doc, ["domain", *labels], registry=reg)

    configured = gauge("configured", "1 for each domain in the config")
    success = gauge("last_success_timestamp_seconds", "When the last good sync finished")
    finished = gauge("last_run_timestamp_seconds", "When the domain's last backup ended")
    code = gauge("last_run_exit_code", "The exit code of the domain's last backup")
    phase = gauge("last_run_phase_seconds", "Seconds each phase of the last backup took",
                  "phase")
    sent = gauge("last_run_bytes_sent", "Bytes rsync sent in the last backup")
    changed = gauge("last_run_files_changed", "Files the last backup copied or deleted")
    standby = gauge("standby_clean", "1 when the last backup left the standby clean, 0 dirty")
    points = gauge("restore_points", "Restore points on the peer after the last backup")
    newest = gauge("newest_restore_point_timestamp_seconds", "When the newest point's run was")
    fill = gauge("snapshot_peak_fill_percent", "The highest snapshot fill of the last backup")
    report_dir = Path(config.defaults.report_dir)
    for name in config.domains:
        configured.labels(name).set(1)
        row = domain_status(config, name)
        if row.last_success is not None:
            success.labels(name).set(row.last_success)
        last = _last_report(report_dir, name)
        if last is None:
            continue
        finished.labels(name).set(float(last.get("finished") or 0))
        code.labels(name).set(int(last.get("exit_code") or 0))
        for key, seconds in (last.get("phases") or {}).items():
            phase.labels(name, str(key)).set(float(seconds))
        filesystems = last.get("filesystems") or []
        sent.labels(name).set(sum(int(f.get("bytes_sent") or 0) for f in filesystems))
        changed.labels(name).set(sum(int(f.get("files_transferred") or 0)
                                     + int(f.get("files_deleted") or 0) for f in filesystems))
        state = _standby_state(report_dir, name, last)
        if state is not None:
            standby.labels(name).set(STANDBY_STATES[state])
        if last.get("restore_point"):
            points.labels(name).set(int(last.get("restore_points") or 0))
            try:
                newest.labels(name).set(run_id_time(str(last.get("newest_point"))).timestamp())
            except ValueError:
                pass
        fills = [float(s["fill_percent"]) for s in last.get("snapshots") or []
                 if s.get("fill_percent") is not None]
        if fills:
            fill.labels(name).set(max(fills))
    return reg


def _standby_state(report_dir: Path, domain: str, last: dict) -> str | None:
    """The state the newest run of ``domain`` that wrote its marker left it in: a run that
    failed before its marker did not change the standby (None: no run of it here said)."""
    if last.get("standby") in STANDBY_STATES:
        return str(last["standby"])
    states = [str(r["standby"]) for r in domain_history(report_dir, domain)
              if r.get("standby") in STANDBY_STATES]
    return states[-1] if states else None


def _last_report(report_dir: Path, domain: str) -> dict | None:
    """The domain's last backup report on this host, None when there is none (or it is not
    a report)."""
    try:
        data = json.loads((report_dir / f"{domain}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_textfile(config: Config, *, view: safefs.FsView = safefs.REAL) -> str | None:
    """Rewrite ``[monitoring] textfile`` (0644, for node_exporter); its path, or None when
    none is configured. The directory must exist and be safe (root's, not writable by
    others), as the report directory is."""
    path = config.monitoring.textfile
    if path is None:
        return None
    directory, name = posixpath.split(path)
    dir_fd = safefs.open_dir(directory, "the monitoring textfile directory", view=view)
    try:
        safefs.write_atomic(dir_fd, directory, name, generate_latest(registry_for(config)),
                            "the monitoring textfile", mode=0o644)
    finally:
        os.close(dir_fd)
    return path
