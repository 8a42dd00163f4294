"""The operator's commands: backup, plan, check-config, recover, status, restore-points,
verify, promote, failback, init-standby, install-units and the two that print reference
text (exit-codes, sample-config);
the ones that look at a standby (status, restore-points, verify) are in
``commands_standby``, promote and failback in ``commands_promote``, what all share in
``command_support``.

Each is a plain function made a ``Command`` (``toolkit/cmdline.py``): the installed
``domu-backup`` program (``toolkit/cli.py``) offers exactly these and nothing of the
rehearsal lab, and a checkout also runs them as invoke tasks (``invoke backup --domu
web01``, made in ``tasks.py``). Options are long and explicit: no short flags and no
positional words.
"""

from __future__ import annotations

from pathlib import Path

from .cmdline import Command, CommandExit, operator_command
from .command_support import _config, _fail, _hosts, _need_domu, _one_line
from .commands_promote import failback, promote
from .commands_standby import restore_points, status, verify
from .errors import ToolkitError, UsageError, exit_code_table


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
        if cfg.monitoring.textfile is not None:
            try:
                from .metrics import write_textfile  # prometheus_client, only when asked

                stderr_log(f"metrics written to {write_textfile(cfg)}")
            except (OSError, ToolkitError) as exc:  # said, as an unusable report directory
                stderr_log(f"could not write the metrics to {cfg.monitoring.textfile}: {exc}")
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


@operator_command
def exit_codes(c):
    """Print the exit-code table."""
    for code, name, summary in exit_code_table():
        print(f"{code!s:>6}  {name:<22} {summary}")


@operator_command(help={
    "dry-run": "print the units and write nothing",
    "config": "config file (its [schedule]; the units run the tool with it)",
    "unit-dir": f"where to write them (default {'/etc/systemd/system'})",
})
def install_units(c, dry_run=False, config=None, unit_dir=None):
    """Write the systemd units: the backup's service and timer, and a boot-time recover."""
    import os
    import shutil

    from . import safefs
    from .config import check_root
    from .units import UNIT_DIR, enable_hint, units

    try:
        cfg = _config(config)
        program = shutil.which("domu-backup")
        if program is None:
            raise UsageError("domu-backup is not on PATH: install it first (pip install .)")
        made = units(cfg, os.path.abspath(program))
        if dry_run:
            for unit in made:
                print(f"# {unit.name}\n{unit.text}")
            return
        check_root()
        where = unit_dir or UNIT_DIR
        dir_fd = safefs.open_dir(where, "the systemd unit directory")
        try:
            for unit in made:
                safefs.write_atomic(dir_fd, where, unit.name, unit.text.encode(),
                                    "a systemd unit", mode=0o644)
                print(f"wrote {os.path.join(where, unit.name)}")
        finally:
            os.close(dir_fd)
        print(f"now: {enable_hint()}")
    except ToolkitError as exc:
        raise _fail(exc) from None


@operator_command
def sample_config(c):
    """Print the annotated sample config: every setting with its default and meaning."""
    from .sample import render_sample

    print(render_sample(), end="")


COMMANDS: tuple[Command, ...] = (backup, plan, check_config, recover, status, restore_points,
                                 verify, promote, failback, init_standby, install_units,
                                 exit_codes, sample_config)
