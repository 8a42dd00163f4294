"""The jobs end to end: a backup (config, preflight, plan, execute, report) and a recover.

This is what the ``domu-backup`` commands call. It never imports invoke; the commands
turn its errors into exit codes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial

from . import log, signals
from .background import Background
from .config import Config
from .errors import (
    ConfigError,
    ConnectionLost,
    DomainNotDefinedHere,
    FinishedWithWarnings,
    HostKeyRejected,
    Interrupted,
    NotRunningHere,
    PeerUnreachable,
    StandbyDiffers,
    ToolkitError,
    UsageError,
    most_severe,
)
from .execute import Executor
from .hooks import run_hook
from .hosts import runner_for
from .journal import list_journals
from .lock import domain_lock
from .plan import Plan, filesystem_fates, plan_backup
from .preflight import connect_peer, gather, local_node_name, locate
from .recover import Inventory, recover_domain, take_inventories, take_inventory
from .report import DomainReport, RunReport, fates_from
from .runners import LocalRunner, Runner
from .status import killed_runs, record_cleaned_runs


def peer_runner(config: Config, name: str) -> Runner:
    """The runner for a peer Dom0: always ssh:// (local:// and docker:// are no peer)."""
    spec = config.dom0s[name]
    if spec.scheme != "ssh":
        raise ConfigError(f"{config.path}: cluster.dom0s.{name} = {str(spec)!r}: a peer is "
                          "reached over ssh://user@host:port; local:// and docker:// cannot "
                          "be a peer")
    return runner_for(spec, config.ssh)


def new_run_id() -> str:
    """Sortable and unique: UTC time plus 4 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass
class Hosts:
    """How to reach both hosts; tests and replays swap these."""

    source: Runner = field(default_factory=LocalRunner)
    peer_factory: Callable[[str], Runner] | None = None
    _peers: dict[str, Runner] = field(default_factory=dict)

    def peer(self, config: Config, name: str) -> Runner:
        """The runner for peer ``name``: made once (by ``peer_factory`` if set), then kept."""
        if name not in self._peers:
            if self.peer_factory is not None:
                self._peers[name] = self.peer_factory(name)
            else:
                self._peers[name] = peer_runner(config, name)
        return self._peers[name]

    def close(self) -> None:
        """Close every peer runner made so far and forget them."""
        # A copy: a preflight thread stopped by a signal may still be adding its peer.
        for r in list(self._peers.values()):
            r.close()
        self._peers.clear()


def make_plan(config: Config, domain: str, hosts: Hosts, *, node: str | None = None,
              run_id: str | None = None, stopped_ok: bool = False) -> Plan:
    """Preflight (read-only) and the plan for one domain (``stopped_ok``: it may be shut
    off here, as for failback's copy back)."""
    local = local_node_name(config, node)
    state = locate(config, domain, hosts.source, local, stopped_ok=stopped_ok)
    pre, _peer = gather(config, domain, hosts.source, lambda n: hosts.peer(config, n), local,
                        state=state)
    return plan_backup(pre.facts, config, run_id or new_run_id())


def backup_domain(config: Config, domain: str, hosts: Hosts, *, node: str | None = None,
                  dry_run: bool = False, allow_mass_delete: bool = False,
                  log: Callable[[str], None] = lambda m: None,
                  on_progress: Callable[[str, str], None] | None = None,
                  compare: bool = False, stopped_ok: bool = False) -> DomainReport:
    """Back up one domain; never raises a ToolkitError (it is recorded in the report).

    ``compare``: the same run as a backup, but each filesystem of the snapshot is compared
    with the standby by checksum instead of copied (``verify --against-source``); every
    difference is in the report, and any makes it StandbyDiffers (exit 47). ``stopped_ok``:
    the domain may be shut off here (failback's copy back of a guest shut down for it)."""
    report = DomainReport(domain=domain)
    begin = getattr(on_progress, "begin", None)
    if begin is not None:
        begin(domain)  # a new copy of each filesystem starts at 0%
    try:
        with ExitStack() as held:
            # Each phase is timed whether it ends well or not: a failed run's summary
            # shows the time its failing phase really took.
            with _phase(report, "preflight"):
                if not dry_run:
                    # The lock comes first: a second run of the same domain must stop
                    # here ("busy") before it looks at, or touches, anything.
                    held.enter_context(domain_lock(config.defaults.lock_dir, domain))
                local = local_node_name(config, node)
                report.source_host = local
                state = locate(config, domain, hosts.source, local, stopped_ok=stopped_ok)
            connected = None
            if not dry_run:
                # Under the lock, what is left over can only be from a dead run, and it is
                # cleaned before the standby is judged: a killed run's alias and mounts are
                # what would hold the standby open (R1, R10). The state directories, whose
                # journals recover obeys, are proven first, on both hosts (R22).
                with _phase(report, "recover"):
                    connected = connect_peer(lambda n: hosts.peer(config, n),
                                             config.domain(domain).peer)
                    seen = take_inventories(config, hosts.source, connected, proven=True)
                    journals = [p for inv in (seen or {}).values() for p in inv.journals]
                    report.cleaned = _recover_and_record(
                        config, domain, hosts.source, connected, inventories=seen,
                        journals=journals, by="backup", log=log)
            with _phase(report, "preflight"):
                pre, peer = gather(config, domain, hosts.source,
                                   lambda n: hosts.peer(config, n), local, state=state,
                                   connected=connected)
            report.peer_host = pre.facts.peer_host
            report.fates = fates_from(filesystem_fates(pre.facts, config))  # listed even if refused
            plan = plan_backup(pre.facts, config, new_run_id(),
                               allow_mass_delete=allow_mass_delete, compare=compare)
            report.run_id = plan.run_id
            report.skipped = list(plan.skipped)
            if dry_run:
                report.outcome = "dry-run"
                report.message = "plan only; nothing was changed"
                return report
            Executor(plan, config, hosts.source, peer, report, on_progress=on_progress,
                     log=log, lock_held=True).run()
        if compare:
            differ = [f"{f.name} ({len(f.differences)})" for f in report.filesystems
                      if f.differences]
            if differ:
                raise StandbyDiffers(f"the standby on {plan.peer_host} differs from the "
                                     f"snapshot in {', '.join(differ)} (each difference is in "
                                     "the report)", host=plan.peer_host)
            report.outcome = "identical"
            report.message = (f"{len(plan.filesystems)} filesystem(s) on {plan.peer_host} "
                              "identical to the snapshot, by checksum")
            return report
        report.outcome = "success"
        report.message = f"{len(plan.filesystems)} filesystem(s) copied to {plan.peer_host}"
        warned = [d for d in pre.facts.skipped_disks if d.warning]
        if warned:
            # Copied, but the standby lacks a disk that holds data: exit 1, named in the report.
            report.exit_code = FinishedWithWarnings.exit_code
            report.error = FinishedWithWarnings.__name__
            report.message += "; finished with warnings: not backed up: " + ", ".join(
                f"disk {d.target} ({d.skip_reason})" for d in warned)
    except NotRunningHere as exc:
        report.outcome = "skipped"
        report.message = str(exc)
        report.exit_code = 0
        if compare:  # nothing was compared: that is no answer to "is the standby the same?"
            report.outcome, report.error = "failed", UsageError.__name__
            report.exit_code = UsageError.exit_code
            report.message = (f"{exc}; run verify --against-source on the Dom0 where the "
                               "domain runs")
    except StandbyDiffers as exc:
        report.outcome = "differs"  # a verify's finding, not a failed backup
        report.error = type(exc).__name__
        report.message = str(exc)
        report.exit_code = exc.exit_code
    except Interrupted as exc:
        report.outcome = "interrupted"
        report.error = type(exc).__name__
        report.message = str(exc)
        report.exit_code = exc.exit_code
    except ToolkitError as exc:
        report.outcome = "failed"
        report.error = type(exc).__name__
        report.message = str(exc)
        report.exit_code = exc.exit_code
    finally:
        report.finished = time.time()
    return report


@contextmanager
def _phase(report: DomainReport, phase: str) -> Iterator[None]:
    """Add the time of the block to ``phase``, however the block ends."""
    start = time.monotonic()
    try:
        yield
    finally:
        report.add_phase(phase, time.monotonic() - start)


def backup(config: Config, domains: list[str], hosts: Hosts, *, node: str | None = None,
           dry_run: bool = False, allow_mass_delete: bool = False,
           log: Callable[[str], None] = lambda m: None,
           on_progress: Callable[[str, str], None] | None = None,
           skip_undefined: bool = False, compare: bool = False) -> RunReport:
    """Back up domains one after another, continuing past failures; exit with the worst code.

    With ``skip_undefined`` (``--all``), a domain not defined on this host is a quiet skip.
    """
    run = RunReport(host=node or "")
    try:
        for domain in domains:
            log(f"domain {domain}: starting")
            try:
                rep = backup_domain(config, domain, hosts, node=node, dry_run=dry_run,
                                    allow_mass_delete=allow_mass_delete, log=log,
                                    on_progress=on_progress, compare=compare)
            except Exception as exc:  # a bug in one domain must not lose the report
                rep = DomainReport(domain=domain, outcome="failed", error=type(exc).__name__,
                                   message=unexpected_message(exc), exit_code=2,
                                   finished=time.time())
            if skip_undefined and rep.error == DomainNotDefinedHere.__name__:
                rep.outcome, rep.error, rep.exit_code = "skipped", "", 0
                rep.message += "; skipped"
            if not compare and not dry_run and domain in config.domains:
                hooks = config.domain(domain).effective_hooks(config.defaults)
                argv = hooks.argv(rep.outcome)
                if argv:  # bounded by its timeout; a signal meanwhile stops the run after it
                    with signals.shielded():
                        run_hook("on_success" if rep.outcome == "success" else "on_failure",
                                 argv, rep, hooks.timeout, log)
                    pending = signals.pending_signal()
                    if pending is not None:  # the backup itself ended as it did
                        stop = Interrupted(pending)
                        rep.hooks.append(f"{stop}: the run stops after this domain")
                        run.exit_code = stop.exit_code
                        run.domains.append(rep)
                        break
            run.host = run.host or rep.source_host
            run.domains.append(rep)
            log(f"domain {domain}: {rep.outcome} {rep.message}")
            if rep.outcome == "interrupted":
                break  # a signal stops the whole run, after this domain's teardown
    finally:
        hosts.close()
    run.finished = time.time()
    run.exit_code = most_severe([d.exit_code for d in run.domains] + [run.exit_code])
    return run


def _recover_and_record(config: Config, domain: str, source: Runner,
                        peer: Runner | None, *, inventories: dict[str, Inventory] | None,
                        journals: list[str], by: str, log: Callable[[str], None],
                        roles: str = "both") -> list[str]:
    """Under the domain's lock: undo what killed runs of ``domain`` left, then add each
    killed run to the history (it wrote no report), so ``status`` shows it. ``journals``
    are the domain's journals as found under the lock."""
    cleaned = recover_domain(config, domain, source, peer, log=log, hosts=roles,
                             inventories=inventories)
    record_cleaned_runs(config, domain, killed_runs(domain, journals, cleaned), by=by, log=log)
    return cleaned


@dataclass
class Recovered:
    """What ``recover`` did: a line per thing undone, and the peers it could not reach."""

    done: list[str] = field(default_factory=list)
    unreachable: dict[str, ToolkitError] = field(default_factory=dict)


def recover(config: Config, domains: list[str], *, local: str, roles: str = "both",
            log: Callable[[str], None] = lambda m: None) -> Recovered:
    """Recover ``domains`` on this host (``roles`` local or both) and their peers (peer or
    both), one connection per peer. A peer that cannot be reached is left for later: this
    host is still recovered, and the peer is named in ``unreachable``."""
    out = Recovered()
    source = LocalRunner(local)
    peers: dict[str, Runner] = {}
    runners: dict[str, Runner] = {}  # one connection per peer, closed at the end
    try:
        # One look at each host first, the peers' on threads beside this host's; a domain
        # with nothing on a host is skipped there.
        inventories: dict[tuple[str, str], Inventory] = {}
        names = [] if roles not in ("peer", "both") else list(dict.fromkeys(
            config.domain(name).peer for name in domains
            if config.domain(name).peer != local))
        looks: dict[str, Background] = {}
        for n in names:
            runners[n] = peer_runner(config, n)
            looks[n] = Background(partial(take_inventory, runners[n], config, "peer"),
                                  f"inventory-{n}")
        try:
            if roles in ("local", "both"):
                inventories[(local, "source")] = take_inventory(source, config, "source")
        finally:
            for bg in looks.values():
                bg.wait()
        for peer_name, bg in looks.items():
            try:
                inventories[(peer_name, "peer")] = bg.result()  # type: ignore[assignment]
            except (PeerUnreachable, HostKeyRejected, ConnectionLost) as exc:
                out.unreachable[peer_name] = exc
                log(f"peer {peer_name} cannot be reached, recovering {local} only: {exc}")
            else:
                peers[peer_name] = runners[peer_name]
        for name in domains:
            peer_name = config.domain(name).peer
            peer = peers.get(peer_name)
            seen = {role: inv for role, inv in (
                ("source", inventories.get((local, "source"))),
                ("peer", inventories.get((peer_name, "peer")))) if inv is not None}
            if not any(inv.pending(config, name) for inv in seen.values()):
                continue
            with domain_lock(config.defaults.lock_dir, name):
                # Under the lock, a journal left is a killed run's (none of a live one).
                here = source if roles in ("local", "both") else None
                journals = [p for runner in (here, peer) if runner is not None
                            for p in list_journals(runner, config.defaults.state_dir, name)]
                out.done += _recover_and_record(config, name, source, peer, inventories=seen,
                                                journals=journals, by="recover", log=log,
                                                roles=roles)
    finally:
        for runner in runners.values():
            runner.close()
    return out


def unexpected_message(exc: BaseException) -> str:
    """One line for an exception that is not a ToolkitError (an OSError says what and where)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return one_line(f"unexpected {type(exc).__name__}: {exc}")


def one_line(text: str) -> str:
    """A message folded into one line (a command's stderr tail may span several)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


stderr_log = log.info  # the commands' notes: one timestamped line on stderr
