"""Finish the teardown of runs that were killed (SIGKILL, power loss, lost peer).

Two sources of truth, both limited to what the tool owns:

1. the journals each run writes on each host before every side effect;
2. a sweep of objects carrying the tool's prefix (mounts under the tool's
   mount prefixes, device-mapper maps named ``domubk-...``, LVs tagged
   ``domubk``), for the domain at hand.

Undo happens newest first and only while the resource still exists, so
``recover`` is idempotent. The caller holds the domain lock, so a live run is
never touched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from . import PREFIX
from .config import Config
from .errors import CommandFailed, ToolkitError
from .journal import list_journals, parse_journal
from .runners import Runner

BUSY_MARKERS = ("busy", "in use")


def _undo(runner: Runner, undo: tuple[str, ...], exists: tuple[str, ...]) -> bool:
    """Run undo if the resource still exists; True if something was removed."""
    if exists:
        if runner.run(exists, check=False, timeout=60).exit_code != 0:
            return False
    delay = 0.5
    for attempt in range(5):
        res = runner.run(undo, check=False, timeout=300)
        if res.exit_code == 0:
            return True
        if not any(m in res.stderr for m in BUSY_MARKERS) or attempt == 4:
            raise CommandFailed(res)
        time.sleep(delay)
        delay *= 2
    return False


def recover_journals(runner: Runner, state_dir: str, domain: str | None,
                     log: Callable[[str], None]) -> list[str]:
    done: list[str] = []
    for path in list_journals(runner, state_dir, domain):
        text = runner.run(["cat", "--", path], timeout=60).stdout
        entries = parse_journal(text, path)
        for entry in reversed(entries):
            if _undo(runner, entry.undo, entry.exists):
                msg = (f"[{runner.host}] removed {entry.action} {entry.resource} "
                       f"(run {entry.run_id})")
                log(msg)
                done.append(msg)
        runner.run(["rm", "-f", "--", path], timeout=60)
    return done


def sweep(runner: Runner, config: Config, domain: str | None,
          log: Callable[[str], None]) -> list[str]:
    """Remove owned leftovers that no journal names (belt and braces)."""
    d = config.defaults
    done: list[str] = []
    tag = f"{domain}." if domain else ""
    # Mounts under our prefixes, deepest first.
    res = runner.run(["findmnt", "--json", "--list", "-o", "TARGET"], check=False, timeout=60)
    targets: list[str] = []
    if res.exit_code == 0 and res.stdout.strip():
        for fs in json.loads(res.stdout).get("filesystems", []):
            t = fs.get("target", "")
            for prefix in (d.source_prefix, d.target_prefix):
                if t.startswith(prefix.rstrip("/") + "/"):
                    rest = t[len(prefix.rstrip("/")) + 1:]
                    if rest.startswith(tag):
                        targets.append(t)
    for t in sorted(targets, key=lambda p: p.count("/"), reverse=True):
        if _undo(runner, ("umount", t), ("mountpoint", "-q", t)):
            done.append(f"[{runner.host}] unmounted {t}")
    # Device-mapper maps we own: partitions first (longer names), then aliases.
    res = runner.run(["dmsetup", "ls"], check=False, timeout=60)
    names = []
    if res.exit_code == 0:
        for line in res.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            owned = name.startswith(f"{PREFIX}-") or f"-{PREFIX}--" in name
            if owned and (domain is None or f"-{domain}-" in name
                          or f"-{domain.replace('-', '--')}--" in name):
                names.append(name)
    for name in sorted(names, key=len, reverse=True):
        if _undo(runner, ("dmsetup", "remove", "--retry", name), ("dmsetup", "info", name)):
            done.append(f"[{runner.host}] removed map {name}")
    # Snapshot LVs carrying our tag.
    res = runner.run(["lvs", "--noheadings", "-o", "vg_name,lv_name", "-S", f"lv_tags={PREFIX}"],
                     check=False, timeout=60)
    if res.exit_code == 0:
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) != 2:
                continue
            vg, lv = parts
            if not lv.startswith(f"{PREFIX}-"):
                continue  # tagged but not named by us: not ours
            if domain is not None and f"-{domain}-" not in lv:
                continue
            if _undo(runner, ("lvremove", "--force", "--yes", f"{vg}/{lv}"),
                     ("lvs", f"{vg}/{lv}")):
                done.append(f"[{runner.host}] removed snapshot {vg}/{lv}")
    # Run directories under our prefixes: rmdir only ever removes empty ones.
    for prefix in (d.source_prefix, d.target_prefix):
        res = runner.run(["find", prefix, "-mindepth", "1", "-maxdepth", "1", "-type", "d",
                          "-name", f"{tag}*"], check=False, timeout=60)
        for run_dir in res.stdout.splitlines():
            sub = runner.run(["find", run_dir, "-mindepth", "1", "-maxdepth", "1", "-type", "d"],
                             check=False, timeout=60)
            for path in sub.stdout.splitlines():
                runner.run(["rmdir", "--", path], check=False, timeout=60)
            if runner.run(["rmdir", "--", run_dir], check=False, timeout=60).exit_code == 0:
                done.append(f"[{runner.host}] removed directory {run_dir}")
    for msg in done:
        log(msg)
    return done


def recover_domain(config: Config, domain: str | None, source: Runner, peer: Runner | None,
                   *, log: Callable[[str], None] = lambda m: None,
                   hosts: str = "both") -> list[str]:
    """Undo what killed runs of ``domain`` left on the chosen hosts; returns what was done."""
    done: list[str] = []
    order: list[Runner] = []
    # The source holds the snapshots the peer's copy is made from: unmount
    # and unmap the peer first, then the source.
    if hosts in ("peer", "both") and peer is not None:
        order.append(peer)
    if hosts in ("local", "source", "both"):
        order.append(source)
    errors: list[str] = []
    for runner in order:
        try:
            done += recover_journals(runner, config.defaults.state_dir, domain, log)
            done += sweep(runner, config, domain, log)
        except ToolkitError as exc:
            errors.append(str(exc))
    if errors:
        from .errors import TeardownIncomplete

        raise TeardownIncomplete("recover could not finish: " + "; ".join(errors))
    return done
