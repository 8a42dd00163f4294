"""The operator's commands: backup, plan, check-config, recover, status, restore-points,
verify, init-standby and
the two that print reference text (exit-codes, sample-config).

Each is a plain function made a ``Command`` (``toolkit/cmdline.py``): the installed
``domu-backup`` program (``toolkit/cli.py``) offers exactly these and nothing of the
rehearsal lab, and a checkout also runs them as invoke tasks (``invoke backup --domu
web01``, made in ``tasks.py``). Options are long and explicit: no short flags and no
positional words.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .cmdline import Command, CommandExit, operator_command
from .errors import ToolkitError, UsageError, exit_code_table

if TYPE_CHECKING:
    from .runners import Runner


def _need_domu(domu: str | None, command: str) -> str:
    if not domu:
        raise CommandExit(f"error: {command} needs --domu NAME", code=UsageError.exit_code)
    return domu


def _config(path: str | None, *, check_permissions: bool = True):
    from .config import default_config_path, load_config
    from .log import logger

    config = load_config(Path(path) if path else default_config_path(),
                         check_permissions=check_permissions)
    for warning in config.warnings:
        logger().warning(f"warning: {warning}")
    return config


def _fail(exc: ToolkitError) -> CommandExit:
    from .app import one_line

    return CommandExit(f"error: {one_line(str(exc))}", code=exc.exit_code)


def _hosts(config, replay: str | None, node: str | None):
    from .app import Hosts
    from .preflight import local_node_name

    if not replay:
        return Hosts()
    from .replay import load_replay

    local = local_node_name(config, node)
    # The replay file names no peer; the plan's peer comes from the config.
    src, peer = load_replay(Path(replay), local, "peer")
    return Hosts(source=src, peer_factory=lambda name: _renamed(peer, name))


def _one_line(text: object) -> str:
    from .app import one_line

    return one_line(str(text))


def _renamed(runner, name):
    runner.host = name
    return runner


@operator_command(help={
    "domu": "domain to back up",
    "all": "every configured domain running on this host, one after another",
    "dry-run": "print the plan for both hosts and change nothing",
    "json": "print the report (or, with --dry-run, the plan) as JSON",
    "config": "config file (default: $DOMU_BACKUP_CONFIG or /etc/domu-backup/backup.toml)",
    "node": "this host's name in [cluster.dom0s] (default: the short hostname)",
    "allow-mass-delete": "lift the max_delete bound for this run",
})
def backup(c, domu=None, all=False, dry_run=False, json=False, config=None, node=None,
           allow_mass_delete=False):
    """Back up a running guest to its peer: snapshot, mount, rsync, tear down."""
    from .app import backup as run_backup
    from .app import make_plan, stderr_log
    from .config import check_root
    from .plan import render_plan
    from .progress import ProgressReporter
    from .report import summary, write_report
    from .signals import signals_raise

    if bool(domu) == bool(all):
        raise CommandExit("error: give exactly one of --domu NAME or --all", code=4)
    try:
        cfg = _config(config)
        domains = list(cfg.domains) if all else [domu]
        if not all:
            cfg.domain(domu)
        if dry_run:
            hosts = _hosts(cfg, None, node)
            try:
                for name in domains:
                    plan = make_plan(cfg, name, hosts, node=node)
                    print(plan.to_json() if json else render_plan(plan))
            finally:
                hosts.close()
            return
        check_root()
        progress = ProgressReporter(stderr_log)
        with signals_raise():
            report = run_backup(cfg, domains, _hosts(cfg, None, node), node=node,
                                allow_mass_delete=allow_mass_delete, log=stderr_log,
                                on_progress=progress, skip_undefined=all)
        progress.close()
        try:
            path = write_report(report, cfg.defaults.report_dir)
            stderr_log(f"report written to {path}")
        except (OSError, ToolkitError) as exc:
            # The run is over and its summary still goes out; an unusable report
            # directory (R22) is said, not a reason to hide the result.
            stderr_log(f"could not write the report to {cfg.defaults.report_dir}: {exc}")
        print(report.to_json() if json else summary(report))
        if report.exit_code:
            raise CommandExit(code=report.exit_code)
    except ToolkitError as exc:
        raise _fail(exc) from None


@operator_command(help={
    "domu": "domain to plan",
    "json": "print the plan as JSON",
    "config": "config file",
    "node": "this host's name in [cluster.dom0s]",
    "replay": "answer fact commands from a recording (no host is contacted)",
    "record": "save every fact command and its result to this file",
})
def plan(c, domu=None, json=False, config=None, node=None, replay=None, record=None):
    """Print the two-host plan for a domain; runs only read-only fact commands."""
    domu = _need_domu(domu, "plan")
    from .app import Hosts, make_plan
    from .plan import render_plan
    from .signals import signals_raise

    try:
        with signals_raise():
            cfg = _config(config, check_permissions=not replay)
            hosts = _hosts(cfg, replay, node)
            recorders = []
            unsaved: UsageError | None = None
            if record:
                from .app import peer_runner
                from .replay import RecordingRunner

                src = RecordingRunner(hosts.source, "source")
                recorders.append(src)

                def peer_factory(name):
                    rec = RecordingRunner(peer_runner(cfg, name), "peer")
                    recorders.append(rec)
                    return rec

                hosts = Hosts(source=src, peer_factory=peer_factory)
            try:
                p = make_plan(cfg, domu, hosts, node=node,
                              run_id="20260101T000000Z-0000" if replay else None)
            except KeyError as exc:
                if not replay:
                    raise
                # A replay runner asked for a command its recording does not hold.
                raise UsageError(f"--replay {replay}: {exc.args[0] if exc.args else exc}; "
                                 "record it again with --record") from None
            finally:
                hosts.close()
                if record:
                    from .replay import save_recording

                    try:
                        save_recording(Path(record), recorders)
                    except UsageError as exc:  # said after the plan (or the plan's own error)
                        unsaved = exc
        print(p.to_json() if json else render_plan(p))
        if record and unsaved is not None:
            raise unsaved
    except ToolkitError as exc:
        raise _fail(exc) from None


@operator_command(help={"config": "config file to check"})
def check_config(c, config=None):
    """Validate the config file and print every setting, marked (set) or (default)."""
    from .sample import effective_settings

    try:
        cfg = _config(config)
    except ToolkitError as exc:
        raise _fail(exc) from None
    print(f"{cfg.path}: OK")
    print(f"  Dom0s: {', '.join(f'{k}={v}' for k, v in cfg.dom0s.items())}")
    print(f"  hypervisor: {cfg.hypervisor_uri}")
    for key, value, given in effective_settings(cfg):
        print(f"  {key} = {value}   ({'set' if given else 'default'})")


@operator_command(help={
    "domu": "only this domain (default: every domain)",
    "host": "local, peer or both (default both)",
    "config": "config file",
    "node": "this host's name in [cluster.dom0s]",
})
def recover(c, domu=None, host="both", config=None, node=None):
    """Remove what killed runs left behind (mounts, maps, snapshots) on both hosts."""
    from . import app
    from .config import check_root
    from .preflight import local_node_name

    if host not in ("local", "peer", "both"):
        raise CommandExit(f"error: --host must be local, peer or both, not {host!r}", code=4)
    try:
        check_root()
        cfg = _config(config)
        local = local_node_name(cfg, node)
        out = app.recover(cfg, [domu] if domu else list(cfg.domains), local=local, roles=host,
                          log=app.stderr_log)
    except ToolkitError as exc:
        raise _fail(exc) from None
    print("\n".join(out.done) if out.done else "nothing to recover")
    if out.unreachable:
        # The local half is recovered; the run still fails, naming the peer to try again.
        peer_name, gone = next(iter(out.unreachable.items()))
        finished = f"{local} was recovered; " if host == "both" else ""
        raise CommandExit(f"error: {_one_line(gone)}; {finished}run `domu-backup recover` "
                          f"again when {peer_name} is back (`--host local` recovers only "
                          "this host)", code=max(e.exit_code for e in out.unreachable.values()))


@operator_command(help={
    "domu": "domain whose standby to prepare",
    "force": "overwrite a standby that already holds a partition table or filesystems",
    "dry-run": "print the plan and change nothing",
    "config": "config file",
    "node": "this host's name in [cluster.dom0s]",
    "thin": "VG/POOL: first create the missing standby LVs as thin LVs of this thin pool",
})
def init_standby(c, domu=None, force=False, dry_run=False, config=None, node=None, thin=None):
    """Give the peer's LV the source disk's table, boot area, filesystem types, UUIDs, labels."""
    domu = _need_domu(domu, "init-standby")
    from .app import Hosts, new_run_id, stderr_log
    from .config import check_root
    from .preflight import gather, local_node_name
    from .standby import plan_standby, render_standby_plan, run_standby
    from .thin_standby import create_thin_standbys

    try:
        cfg = _config(config)
        local = local_node_name(cfg, node)
        hosts = Hosts()
        try:
            if thin is not None:
                if not dry_run:
                    check_root()
                peer = hosts.peer(cfg, cfg.domain(domu).peer)
                if create_thin_standbys(cfg, domu, hosts.source, peer, local, thin,
                                        dry_run=dry_run, log=print):
                    print("(dry run: the layout is planned once these thin LVs exist)")
                    return
            pre, peer = gather(cfg, domu, hosts.source, lambda n: hosts.peer(cfg, n), local)
            sp = plan_standby(pre.facts, cfg, new_run_id(), force=force)
            print(render_standby_plan(sp, local, pre.facts.peer_host))
            if dry_run:
                return
            check_root()
            run_standby(sp, cfg, hosts.source, peer, log=stderr_log)
            print(f"standby of {domu} on {pre.facts.peer_host} prepared; run a backup to fill it")
        finally:
            hosts.close()
    except ToolkitError as exc:
        raise _fail(exc) from None


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
    from .facts.lvm import LogicalVolume, lvs_argv, parse_lvs
    from .marker import marker_path, read_peer_marker
    from .restore_points import POINT_TAG
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
                            point_lvs[peer_name] = parse_lvs(peers[peer_name].run(
                                lvs_argv(f"@{POINT_TAG}"), timeout=120).stdout)
                        points = domain_points(point_lvs[peer_name], name)
                    except ToolkitError as exc:  # the standby's state is known; its points not
                        from .log import logger

                        logger().warning(f"warning: {name}: restore points unknown: "
                                         f"{_one_line(exc)}")
                rows.append(domain_status(cfg, name, peer_marker=marker, points=points))
    finally:
        for runner in peers.values():
            runner.close()
    return rows, unknown


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
    from .facts.lvm import lvs_argv, parse_lvs
    from .preflight import local_node_name
    from .restore_points import POINT_TAG
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
                    lvs = parse_lvs(runner.run(lvs_argv(f"@{POINT_TAG}"), timeout=120).stdout)
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
    "json": "print JSON instead of text",
    "config": "config file",
    "node": "this host's name in the cluster (default: its short hostname)",
})
def verify(c, domu=None, at=None, json=False, config=None, node=None, against_source=False):
    """Check the standby (or a restore point) on its peer without writing it: every
    filesystem read-only, the guest's fstab, the boot area. Exit 0 only when all hold.

    On the peer it works on its own LVM; elsewhere it runs the checks on the peer over SSH.
    """
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


def _compare(domu: str, *, json: bool, config: str | None, node: str | None) -> None:
    """``verify --against-source``: the backup's flow, comparing instead of copying."""
    from .app import backup as run_backup
    from .app import stderr_log
    from .config import check_root
    from .report import summary, write_report
    from .signals import signals_raise

    try:
        cfg = _config(config)
        cfg.domain(domu)
        check_root()
        with signals_raise():
            report = run_backup(cfg, [domu], _hosts(cfg, None, node), node=node, log=stderr_log,
                                compare=True)
        try:
            stderr_log(f"report written to {write_report(report, cfg.defaults.report_dir)}")
        except (OSError, ToolkitError) as exc:
            stderr_log(f"could not write the report to {cfg.defaults.report_dir}: {exc}")
        print(report.to_json() if json else summary(report))
        if report.exit_code:
            raise CommandExit(code=report.exit_code)
    except ToolkitError as exc:
        raise _fail(exc) from None


@operator_command
def exit_codes(c):
    """Print the exit-code table."""
    for code, name, summary in exit_code_table():
        print(f"{code!s:>6}  {name:<22} {summary}")


@operator_command
def sample_config(c):
    """Print the annotated sample config: every setting with its default and meaning."""
    from .sample import render_sample

    print(render_sample(), end="")


COMMANDS: tuple[Command, ...] = (backup, plan, check_config, recover, status, restore_points,
                                 verify, init_standby, exit_codes, sample_config)
