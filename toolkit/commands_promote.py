"""``promote``: start the guest from its standby on this host, the peer (toolkit.promote);
``failback``: the way back to the repaired source (toolkit.failback)."""

from __future__ import annotations

from .cmdline import CommandExit, operator_command
from .command_support import _config, _fail, _need_domu, _one_line
from .errors import ToolkitError


@operator_command(help={
    "domu": "domain to start from its standby here",
    "at": "the run id of a restore point to start from (a classic one is merged into the "
          "standby); the standby as it is now is kept as a restore point of its own",
    "dry-run": "check everything and print every step on both hosts; change nothing",
    "force": "the source cannot be reached and is down: promote without asking it",
    "json": "print the report as JSON",
    "config": "config file",
    "node": "this host's name in the cluster (default: its short hostname)",
})
def promote(c, domu=None, at=None, dry_run=False, force=False, json=False, config=None,
            node=None):
    """On the peer: start the guest from its clean standby (or from a restore point, --at),
    after the source says it does not run it. Backups of the domain then refuse the standby
    (exit 24)."""
    domu = _need_domu(domu, "promote")
    if at is not None:
        import re

        from .errors import UsageError
        from .owned import RUN_ID

        if not re.fullmatch(RUN_ID, at):
            raise _fail(UsageError(f"--at {at!r} is not a run id (like 20260101T020000Z-1a2b; "
                                   f"`domu-backup restore-points --domu {domu}` lists them)"))
    from .app import new_run_id, peer_runner, stderr_log
    from .config import check_root
    from .lock import domain_lock
    from .preflight import local_node_name
    from .promote import Promote, render_promote, report_json
    from .runners import LocalRunner
    from .signals import signals_raise

    try:
        check_root()
        cfg = _config(config)
        cfg.domain(domu)
        job = Promote(cfg, domu, LocalRunner(), local_node_name(cfg, node),
                      lambda name: peer_runner(cfg, name), new_run_id(), stderr_log, at=at)
        with signals_raise(), domain_lock(cfg.defaults.lock_dir, domu):
            report, marker, _xml = job.read(force=force)
            report.dry_run = dry_run
            if not dry_run:
                job.run(report, marker)
    except ToolkitError as exc:
        raise _fail(exc) from None
    print(report_json(report) if json else render_promote(report))
    if report.forced:
        from .errors import FinishedWithWarnings

        # done, with the warning that the source was not asked
        raise CommandExit(code=FinishedWithWarnings.exit_code)


@operator_command(help={
    "domu": "domain to move back to its original source",
    "no-start": "copy back and return the roles, but leave the domain shut off there",
    "dry-run": "check everything and print the copy back's plan; change nothing",
    "json": "print the report as JSON",
    "config": "config file",
    "node": "this host's name in the cluster (default: its short hostname)",
})
def failback(c, domu=None, no_start=False, dry_run=False, json=False, config=None, node=None):
    """On the peer, after a promote, with the guest shut down here: copy it back to its
    repaired source (only what changed), mark the standby clean, start it there."""
    domu = _need_domu(domu, "failback")
    from .app import Hosts, backup_domain, new_run_id, peer_runner, stderr_log
    from .config import check_root
    from .failback import check_failback, render_failback, return_roles, reversed_config
    from .lock import domain_lock
    from .preflight import local_node_name
    from .runners import LocalRunner
    from .signals import signals_raise

    try:
        check_root()
        cfg = _config(config)
        cfg.domain(domu)
        local_name = local_node_name(cfg, node)
        local = LocalRunner()
        with signals_raise():
            report, marker, source = check_failback(cfg, domu, local, local_name,
                                                    lambda name: peer_runner(cfg, name))
            try:
                rev = reversed_config(cfg, domu, report.back_to, report.disks)
                if dry_run:
                    from .app import make_plan
                    from .plan import render_plan

                    hosts = Hosts()
                    try:
                        plan = make_plan(rev, domu, hosts, node=local_name, stopped_ok=True)
                    finally:
                        hosts.close()
                    print(plan.to_json() if json else render_plan(plan))
                    if not json:
                        print(render_failback(report, planned=True, start=not no_start))
                    return
                hosts = Hosts()
                try:
                    copied = backup_domain(rev, domu, hosts, node=local_name, log=stderr_log,
                                           stopped_ok=True)
                finally:
                    hosts.close()
                report.run_id, report.copied = copied.run_id, copied.message
                if copied.outcome != "success":
                    raise CommandExit(_one_line(f"error: the copy back to {report.back_to} "
                                                f"failed: {copied.message}; the standby stays "
                                                "promoted: run failback again"),
                                      code=copied.exit_code or 2)
                with domain_lock(cfg.defaults.lock_dir, domu):
                    return_roles(cfg, report, marker, local, source, start=not no_start,
                                 run_id=copied.run_id or new_run_id(), log=stderr_log)
            finally:
                source.close()
    except ToolkitError as exc:
        raise _fail(exc) from None
    if json:
        import json as _json
        from dataclasses import asdict

        print(_json.dumps(asdict(report), indent=2))
    else:
        print(render_failback(report))
