"""``promote``: start the guest from its standby on this host, the peer (toolkit.promote)."""

from __future__ import annotations

from .cmdline import CommandExit, operator_command
from .command_support import _config, _fail, _need_domu
from .errors import ToolkitError


@operator_command(help={
    "domu": "domain to start from its standby here",
    "dry-run": "check everything and print every step on both hosts; change nothing",
    "force": "the source cannot be reached and is down: promote without asking it",
    "json": "print the report as JSON",
    "config": "config file",
    "node": "this host's name in the cluster (default: its short hostname)",
})
def promote(c, domu=None, dry_run=False, force=False, json=False, config=None, node=None):
    """On the peer: start the guest from its clean standby, after the source says it does not
    run it. Backups of the domain then refuse the standby (exit 24)."""
    domu = _need_domu(domu, "promote")
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
                      lambda name: peer_runner(cfg, name), new_run_id(), stderr_log)
        with signals_raise(), domain_lock(cfg.defaults.lock_dir, domu):
            report, marker, _xml = job.read(force=force)
            report.dry_run = dry_run
            if not dry_run:
                job.run(report, marker)
    except ToolkitError as exc:
        raise _fail(exc) from None
    print(report_json(report) if json else render_promote(report))
    if report.forced:
        raise CommandExit(code=1)  # done, with the warning that the source was not asked
