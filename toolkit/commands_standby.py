"""The commands that look at a standby on its peer: status (and status --check),
restore-points and verify (and verify --against-source)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cmdline import CommandExit, operator_command
from .command_support import _config, _fail, _hosts, _need_domu, _one_line
from .errors import ToolkitError, UsageError

if TYPE_CHECKING:
    from .runners import Runner


@operator_command(help={
    "domu": "only this domain", "config": "config file", "json": "print JSON",
    "check": "one line and a monitoring plugin's exit code: 0 OK, 1 WARNING, 2 CRITICAL, "
             "3 UNKNOWN",
    "max-age": "with --check: a last success older than this is CRITICAL (26h, 90m, 2d)",
})
def status(c, domu=None, config=None, json=False, check=False, max_age="26h"):
    """Per domain: last success, last failure, and whether the standby is clean or dirty.

    The standby's state comes from its marker on the peer only: when that cannot be read the
    standby is "unknown" and the command exits StatusUnknown (25). With --check it prints one
    line for a monitoring system and exits as its plugins do."""
    if check:
        _status_check(domu, config, max_age)
        return
    from .errors import StatusUnknown
    from .status import render_status

    try:
        rows, unknown = _status_rows(domu, config)
    except ToolkitError as exc:
        raise _fail(exc) from None
    if json:
        import json as _json
        from dataclasses import asdict

        print(_json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(render_status(rows))
    if unknown:
        raise CommandExit(_one_line("error: standby state unknown for " + "; ".join(unknown)),
                          code=StatusUnknown.exit_code)


def _status_rows(domu: str | None, config: str | None) -> tuple[list, list[str]]:
    """Each domain's status row (its standby's marker and restore points read on its peer,
    one connection per peer), and the domains whose standby's state is unknown."""
    from .app import peer_runner
    from .config import check_root
    from .errors import ConnectionLost, HostKeyRejected, PeerUnreachable, StatusUnknown
    from .facts.lvm import LogicalVolume
    from .marker import marker_path, read_peer_marker
    from .preflight import local_node_name
    from .restore_points import read_point_lvs
    from .signals import signals_raise
    from .status import domain_points, domain_status

    peers: dict[str, Runner] = {}  # one connection per peer, for all its domains
    point_lvs: dict[str, list[LogicalVolume]] = {}  # the restore point LVs of each peer
    down: dict[str, StatusUnknown] = {}  # a peer that cannot be reached is tried once
    unknown: list[str] = []
    rows = []
    try:
        check_root()  # the SSH key and the reports are root's
        cfg = _config(config)
        try:
            local: str | None = local_node_name(cfg)
        except ToolkitError:
            local = None  # not a Dom0 of the cluster: where a domain runs is not known here
        with signals_raise():
            for name in [domu] if domu else list(cfg.domains):
                peer_name = cfg.domain(name).peer
                marker = None
                try:
                    if peer_name in down:
                        raise down[peer_name]
                    if peer_name not in peers:
                        peers[peer_name] = peer_runner(cfg, peer_name)
                    marker = read_peer_marker(peers[peer_name], marker_path(cfg, name))
                except StatusUnknown as exc:
                    if isinstance(exc.__cause__, (PeerUnreachable, HostKeyRejected,
                                                  ConnectionLost)):
                        down[peer_name] = exc
                    unknown.append(f"{name}: {exc}")
                points = None
                if marker is not None:  # the peer answered: its restore points, one lvs
                    try:
                        if peer_name not in point_lvs:
                            point_lvs[peer_name] = read_point_lvs(peers[peer_name])
                        points = domain_points(point_lvs[peer_name], name)
                    except ToolkitError as exc:  # the standby's state is known; its points not
                        from .log import logger

                        logger().warning(f"warning: {name}: restore points unknown: "
                                         f"{_one_line(exc)}")
                runs_on = _runs_on(cfg, name, local, peers.get(peer_name)
                                   if marker is not None else None)
                rows.append(domain_status(cfg, name, peer_marker=marker, points=points,
                                          runs_on=runs_on))
    finally:
        for runner in peers.values():
            runner.close()
    return rows, unknown


def _runs_on(cfg, domain: str, local: str | None, peer: Runner | None) -> str | None:
    """The Dom0s of this host and the domain's peer whose hypervisor runs the domain, as
    ``status`` shows them ("" on neither); None when one of them cannot be asked."""
    from .preflight import ACTIVE_STATES, domain_state
    from .runners import LocalRunner

    peer_name = cfg.domain(domain).peer
    if local is None or peer is None:
        return None
    asked = [(local, LocalRunner())] + ([(peer_name, peer)] if peer_name != local else [])
    where = []
    try:
        for host, runner in asked:
            if domain_state(runner, cfg.hypervisor_uri, domain) in ACTIVE_STATES:
                where.append(host)
    except ToolkitError:
        return None
    return ", ".join(where)


def _status_check(domu: str | None, config: str | None, max_age: str) -> None:
    """``status --check``: the same reads as ``status``, one line, the plugin's exit code;
    anything that stops the check itself is UNKNOWN (3)."""
    import time

    from .status_check import UNKNOWN, check_line, parse_age, unknown_line

    try:
        seconds = parse_age(max_age)
        rows, _unknown = _status_rows(domu, config)  # an unknown standby is its row's state
    except ToolkitError as exc:
        print(unknown_line(_one_line(exc)))  # a monitoring system reads standard output
        raise CommandExit(code=UNKNOWN) from None
    code, line = check_line(rows, time.time(), seconds)
    print(line)
    if code:
        raise CommandExit(code=code)


@operator_command(help={
    "domu": "only this domain (default: every configured domain)",
    "json": "print JSON instead of text",
    "config": "config file",
    "node": "this host's name in the cluster (default: its short hostname)",
})
def restore_points(c, domu=None, json=False, config=None, node=None):
    """List each domain's restore points on its peer: run id, time, kind, size, fill, valid.

    Works on either host: on the peer it reads its own LVM, elsewhere it reads the peer's
    over SSH (one `lvs` per peer)."""
    from .app import peer_runner
    from .config import check_root
    from .preflight import local_node_name
    from .restore_points import read_point_lvs
    from .runners import LocalRunner
    from .signals import signals_raise
    from .status import domain_points, points_json, render_points

    rows = []
    try:
        check_root()
        cfg = _config(config)
        local = local_node_name(cfg, node)
        names = [domu] if domu else list(cfg.domains)
        by_peer: dict[str, list[str]] = {}
        for name in names:
            by_peer.setdefault(cfg.domain(name).peer, []).append(name)
        with signals_raise():
            for peer_name, domains in by_peer.items():
                runner = LocalRunner() if peer_name == local else peer_runner(cfg, peer_name)
                try:
                    lvs = read_point_lvs(runner)
                finally:
                    runner.close()
                rows += [(name, peer_name, domain_points(lvs, name)) for name in domains]
    except ToolkitError as exc:
        raise _fail(exc) from None
    rows.sort(key=lambda row: names.index(row[0]))
    if json:
        import json as _json

        print(_json.dumps([item for name, peer, points in rows
                           for item in points_json(points, peer)], indent=2))
    else:
        print(render_points(rows))


@operator_command(help={
    "domu": "domain whose standby to verify",
    "at": "RUN_ID: verify this restore point instead of the standby",
    "against-source": "on the source: compare a snapshot of the running guest with the "
                      "standby by checksum, file by file, writing nothing",
    "all": "with --against-source: every configured domain running here",
    "json": "print JSON instead of text",
    "config": "config file",
    "node": "this host's name in the cluster (default: its short hostname)",
})
def verify(c, domu=None, at=None, json=False, config=None, node=None, against_source=False,
           all=False):
    """Check the standby (or a restore point) on its peer without writing it: every
    filesystem read-only, the guest's fstab, the boot area. Exit 0 only when all hold.

    On the peer it works on its own LVM; elsewhere it runs the checks on the peer over SSH.
    """
    if all:
        if not against_source or domu or at is not None:
            raise CommandExit("error: --all goes with --against-source alone (every domain "
                              "running here), not with --domu or --at",
                              code=UsageError.exit_code)
        _compare(None, json=json, config=config, node=node)
        return
    domu = _need_domu(domu, "verify")
    if against_source:
        if at is not None:
            raise CommandExit("error: --against-source compares the standby itself; it takes "
                              "no --at", code=UsageError.exit_code)
        _compare(domu, json=json, config=config, node=node)
        return
    from .app import new_run_id, peer_runner, stderr_log
    from .config import check_root
    from .errors import StandbyUnsound
    from .lock import domain_lock
    from .preflight import local_node_name
    from .runners import LocalRunner
    from .signals import signals_raise
    from .verify import render_verify
    from .verify import verify as run_verify

    try:
        check_root()
        cfg = _config(config)
        local = local_node_name(cfg, node)
        peer_name = cfg.domain(domu).peer
        runner = LocalRunner() if peer_name == local else peer_runner(cfg, peer_name)
        try:
            with signals_raise(), domain_lock(cfg.defaults.lock_dir, domu):
                report = run_verify(cfg, domu, runner, new_run_id(), at, peer_name=peer_name,
                                    log=stderr_log)
        finally:
            runner.close()
    except ToolkitError as exc:
        raise _fail(exc) from None
    if json:
        import json as _json
        from dataclasses import asdict

        print(_json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        print(render_verify(report))
    if not report.ok:
        first = (report.problems or report.teardown_errors or ["a filesystem is not sound"])[0]
        raise CommandExit(_one_line(f"error: {domu}: {report.what} is not sound: {first}"),
                          code=StandbyUnsound.exit_code)


def _running_here(cfg) -> list[str]:
    """The configured domains this host's hypervisor runs (one ``virsh domstate`` each)."""
    from .preflight import ACTIVE_STATES, domain_state
    from .runners import LocalRunner

    local = LocalRunner()
    return [name for name in cfg.domains
            if domain_state(local, cfg.hypervisor_uri, name) in ACTIVE_STATES]


def _compare(domu: str | None, *, json: bool, config: str | None, node: str | None) -> None:
    """``verify --against-source``: the backup's flow, comparing instead of copying; with no
    ``domu``, every configured domain running here (the weekly timer's)."""
    from .app import backup as run_backup
    from .app import stderr_log
    from .config import check_root
    from .report import summary, write_report
    from .signals import signals_raise

    try:
        cfg = _config(config)
        if domu is not None:
            cfg.domain(domu)
        check_root()
        with signals_raise():
            domains = [domu] if domu is not None else _running_here(cfg)
            if not domains:
                print("no configured domain runs here: nothing to compare")
                return
            report = run_backup(cfg, domains, _hosts(cfg, None, node), node=node,
                                log=stderr_log, compare=True)
        try:
            written = write_report(report, cfg.defaults.report_dir, backup=False)
            stderr_log(f"report written to {written}")
        except (OSError, ToolkitError) as exc:
            stderr_log(f"could not write the report to {cfg.defaults.report_dir}: {exc}")
        print(report.to_json() if json else summary(report))
        if report.exit_code:
            raise CommandExit(code=report.exit_code)
    except ToolkitError as exc:
        raise _fail(exc) from None
