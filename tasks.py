"""Invoke tasks: thin wrappers that parse flags, build runners and config, call the toolkit.

The same collection is the ``domu-backup`` console script, so a production Dom0
needs no tasks.py in its working directory:

    domu-backup backup --domu web01          # or: invoke backup --domu web01
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, Program, task

from toolkit import __version__
from toolkit.errors import ToolkitError, exit_code_table

HERE = Path(__file__).resolve().parent


def _config(path: str | None, *, check_permissions: bool = True):  # noqa: ANN202
    from toolkit.config import default_config_path, load_config

    return load_config(Path(path) if path else default_config_path(),
                       check_permissions=check_permissions)


def _fail(exc: ToolkitError) -> Exit:
    return Exit(f"error: {exc}", code=exc.exit_code)


def _hosts(config, replay: str | None, node: str | None):  # noqa: ANN001, ANN202
    from toolkit.app import Hosts
    from toolkit.preflight import local_node_name

    if not replay:
        return Hosts()
    from toolkit.replay import load_replay

    local = local_node_name(config, node)
    # The replay file names no peer; the plan's peer comes from the config.
    src, peer = load_replay(Path(replay), local, "peer")
    return Hosts(source=src, peer_factory=lambda name: _renamed(peer, name))


def _renamed(runner, name):  # noqa: ANN001, ANN202
    runner.host = name
    return runner


@task(help={
    "domu": "domain to back up",
    "all": "every configured domain running on this host, one after another",
    "dry-run": "print the plan for both hosts and change nothing",
    "json": "print the report (or, with --dry-run, the plan) as JSON",
    "config": "config file (default: $DOMU_BACKUP_CONFIG or /etc/domu-backup/backup.toml)",
    "node": "this host's name in [cluster.dom0s] (default: the short hostname)",
    "allow-mass-delete": "lift the max_delete bound for this run",
})
def backup(c, domu=None, all=False, dry_run=False, json=False, config=None, node=None,  # noqa: A002
           allow_mass_delete=False):
    """Back up a running guest to its peer: snapshot, mount, rsync, tear down."""
    from toolkit.app import backup as run_backup
    from toolkit.app import make_plan, stderr_log
    from toolkit.config import check_root
    from toolkit.plan import render_plan
    from toolkit.progress import ProgressReporter
    from toolkit.report import summary, write_report
    from toolkit.signals import signals_raise

    if bool(domu) == bool(all):
        raise Exit("error: give exactly one of --domu NAME or --all", code=4)
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
                                on_progress=progress)
        progress.close()
        try:
            path = write_report(report, cfg.defaults.report_dir)
            stderr_log(f"report written to {path}")
        except OSError as exc:
            stderr_log(f"could not write the report to {cfg.defaults.report_dir}: {exc}")
        print(report.to_json() if json else summary(report))
        if report.exit_code:
            raise Exit(code=report.exit_code)
    except ToolkitError as exc:
        raise _fail(exc) from None


@task(help={
    "domu": "domain to plan",
    "json": "print the plan as JSON",
    "config": "config file",
    "node": "this host's name in [cluster.dom0s]",
    "replay": "answer fact commands from a recording (no host is contacted)",
    "record": "save every fact command and its result to this file",
})
def plan(c, domu, json=False, config=None, node=None, replay=None, record=None):
    """Print the two-host plan for a domain; runs only read-only fact commands."""
    from toolkit.app import Hosts, make_plan
    from toolkit.plan import render_plan

    try:
        cfg = _config(config, check_permissions=not replay)
        hosts = _hosts(cfg, replay, node)
        recorders = []
        if record:
            from toolkit.replay import RecordingRunner
            from toolkit.runners import runner_for

            src = RecordingRunner(hosts.source, "source")
            recorders.append(src)

            def peer_factory(name):  # noqa: ANN001, ANN202
                rec = RecordingRunner(runner_for(cfg.dom0s[name], cfg.ssh), "peer")
                recorders.append(rec)
                return rec

            hosts = Hosts(source=src, peer_factory=peer_factory)
        try:
            p = make_plan(cfg, domu, hosts, node=node,
                          run_id="20260101T000000Z-0000" if replay else None)
        finally:
            hosts.close()
            if record:
                from toolkit.replay import save_recording

                save_recording(Path(record), recorders)
        print(p.to_json() if json else render_plan(p))
    except ToolkitError as exc:
        raise _fail(exc) from None


@task(help={"config": "config file to check"})
def check_config(c, config=None):
    """Validate the config file and print what it says."""
    try:
        cfg = _config(config)
    except ToolkitError as exc:
        raise _fail(exc) from None
    print(f"{cfg.path}: OK")
    print(f"  Dom0s: {', '.join(f'{k}={v}' for k, v in cfg.dom0s.items())}")
    print(f"  hypervisor: {cfg.hypervisor_uri}")
    for name, d in cfg.domains.items():
        disks = ", ".join(f"{k}->{v.target_lv}" for k, v in d.disks.items()) or "same paths"
        print(f"  domain {name}: peer {d.peer}; disks {disks}")


@task(help={
    "domu": "only this domain (default: every domain)",
    "host": "local, peer or both (default both)",
    "config": "config file",
    "node": "this host's name in [cluster.dom0s]",
})
def recover(c, domu=None, host="both", config=None, node=None):
    """Remove what killed runs left behind (mounts, maps, snapshots) on both hosts."""
    from toolkit.app import stderr_log
    from toolkit.config import check_root
    from toolkit.execute import domain_lock
    from toolkit.preflight import local_node_name
    from toolkit.recover import recover_domain, take_inventory
    from toolkit.runners import LocalRunner, runner_for

    if host not in ("local", "peer", "both"):
        raise Exit("error: --host must be local, peer or both", code=4)
    peers: dict[str, object] = {}  # one connection per peer host, for all its domains
    try:
        check_root()
        cfg = _config(config)
        local = local_node_name(cfg, node)
        source = LocalRunner(local)
        names = [domu] if domu else list(cfg.domains)
        # One look at each host first; a domain with nothing on a host is skipped there.
        inventories = {}
        if host in ("local", "both"):
            inventories[(local, "source")] = take_inventory(source, cfg, "source")
        done: list[str] = []
        for name in names:
            dcfg = cfg.domain(name)
            peer = None
            if host in ("peer", "both") and dcfg.peer != local:
                if dcfg.peer not in peers:
                    peers[dcfg.peer] = runner_for(cfg.dom0s[dcfg.peer], cfg.ssh)
                    inventories[(dcfg.peer, "peer")] = take_inventory(peers[dcfg.peer], cfg,
                                                                      "peer")
                peer = peers[dcfg.peer]
            seen = {"source": inventories.get((local, "source")),
                    "peer": inventories.get((dcfg.peer, "peer"))}
            if not any(inv is not None and inv.pending(cfg, name) for inv in seen.values()):
                continue
            with domain_lock(cfg.defaults.lock_dir, name):
                done += recover_domain(cfg, name, source, peer, log=stderr_log, hosts=host,
                                       inventories={k: v for k, v in seen.items() if v})
        print("\n".join(done) if done else "nothing to recover")
    except ToolkitError as exc:
        raise _fail(exc) from None
    finally:
        for runner in peers.values():
            runner.close()


@task(help={
    "domu": "domain whose standby to prepare",
    "force": "overwrite a standby that already holds a partition table or filesystems",
    "dry-run": "print the plan and change nothing",
    "config": "config file",
    "node": "this host's name in [cluster.dom0s]",
})
def init_standby(c, domu, force=False, dry_run=False, config=None, node=None):
    """Give the peer's LV the source disk's table, boot area, filesystem types, UUIDs, labels."""
    from toolkit.app import Hosts, new_run_id, stderr_log
    from toolkit.config import check_root
    from toolkit.preflight import gather, local_node_name
    from toolkit.standby import plan_standby, render_standby_plan, run_standby

    try:
        cfg = _config(config)
        local = local_node_name(cfg, node)
        hosts = Hosts()
        try:
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


@task(help={"domu": "only this domain", "config": "config file", "json": "print JSON"})
def status(c, domu=None, config=None, json=False):
    """Per domain: last success, last failure, and whether the standby is clean or dirty."""
    from toolkit.execute import read_marker
    from toolkit.runners import runner_for
    from toolkit.status import domain_status, marker_path, render_status

    try:
        cfg = _config(config)
        rows = []
        for name in [domu] if domu else list(cfg.domains):
            marker = None
            peer = runner_for(cfg.dom0s[cfg.domain(name).peer], cfg.ssh)
            try:
                marker = read_marker(peer, marker_path(cfg, name))
            except ToolkitError as exc:
                print(f"warning: cannot read the standby marker of {name}: {exc}",
                      file=sys.stderr)
            finally:
                getattr(peer, "close", lambda: None)()
            rows.append(domain_status(cfg, name, peer_marker=marker))
    except ToolkitError as exc:
        raise _fail(exc) from None
    if json:
        import json as _json
        from dataclasses import asdict

        print(_json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(render_status(rows))


@task
def exit_codes(c):
    """Print the exit-code table."""
    for code, name, summary in exit_code_table():
        print(f"{code!s:>6}  {name:<22} {summary}")


# -- the rehearsal lab ------------------------------------------------------

@task(help={"engine": "auto (default), local or vm"})
def lab_up(c, engine="auto"):
    """Start a Docker engine whose kernel has device-mapper (local, or a QEMU VM)."""
    from toolkit.lab.engine import lab_up as up

    eng = up(engine)
    print(f"lab engine: {eng.kind}" + (f" at {eng.docker_host}" if eng.docker_host else ""))
    if eng.docker_host:
        print(f"export DOCKER_HOST={eng.docker_host}")


@task
def lab_down(c):
    """Stop the lab VM (if any) and remove its overlay."""
    from toolkit.lab.engine import lab_down as down

    down()


@task
def lab_status(c):
    """Show the lab engine."""
    from toolkit.lab.engine import lab_status as st

    print(st())


@task(help={"engine": "auto (default), local or vm"})
def sandbox_up(c, engine="auto"):
    """Create the fake Dom0s dom0-a and dom0-b with loop-device LVM and guest disks."""
    from toolkit.lab.rehearse import sandbox_ready

    sandbox_ready(engine, HERE)


@task
def sandbox_down(c):
    """Remove the fake Dom0s, their loop devices and network."""
    from toolkit.lab.engine import current_engine
    from toolkit.lab.sandbox import sandbox_down as down

    eng = current_engine()
    if eng is not None:
        down(eng)


@task(help={"keep": "leave the sandbox up for inspection", "engine": "auto, local or vm"})
def rehearse(c, keep=False, engine="auto"):
    """A full backup rehearsal between two fake Dom0s, then an audit of the standby."""
    from toolkit.lab.rehearse import rehearse as run

    code = run(HERE, engine=engine, keep=keep)
    if code:
        raise Exit(code=code)


@task(help={
    "scale": "small (a quick look, the default) or large (the real figures)",
    "workloads": "comma-separated subset of full,nochange,churn,twodisk,guest,cipher "
                 "(default: all)",
    "keep": "leave the sandbox and the bench's volumes up for inspection",
    "engine": "auto, local or vm",
    "out": "output directory (default: reports/bench/<timestamp>)",
    "methods": "comma-separated subset of toolkit,toolkit-parallel,bare-rsync,bare-parallel,"
               "block-delta,block-copy (default: all)",
})
def bench(c, scale="small", workloads="", keep=False, engine="auto", out=None, methods=""):
    """Benchmark the toolkit against a bare rsync and block copies in the lab; JSON, table, PNG."""
    from toolkit.lab.bench import bench as run

    try:
        code = run(HERE, scale=scale, workloads=workloads, engine=engine, keep=keep,
                   out_dir=Path(out) if out else None, methods=methods)
    except ToolkitError as exc:
        raise _fail(exc) from None
    if code:
        raise Exit(code=code)


@task(help={"unit": "unit tests only (no lab)", "keep": "leave the sandbox up afterwards"})
def test(c, unit=False, keep=False):
    """Run the tests: unit and end-to-end (the e2e tests must run, or this fails)."""
    args = [sys.executable, "-m", "pytest", "-ra", "--durations=20"]
    if unit:
        args += ["tests/unit"]
    else:
        args += ["tests", "--require-e2e"]
    if keep:
        args.append("--keep")
    code = subprocess.run(args, cwd=HERE, env=dict(os.environ), check=False).returncode
    if code:
        raise Exit(code=code)


lab = Collection("lab")
lab.add_task(lab_up, "up")
lab.add_task(lab_down, "down")
lab.add_task(lab_status, "status")
sandbox = Collection("sandbox")
sandbox.add_task(sandbox_up, "up")
sandbox.add_task(sandbox_down, "down")

ns = Collection(backup, plan, check_config, recover, status, init_standby, exit_codes, rehearse,
                bench, test)
ns.add_collection(lab)
ns.add_collection(sandbox)

program = Program(namespace=ns, version=__version__, name="domu-backup", binary="domu-backup")


def main() -> None:
    program.run()


if __name__ == "__main__":
    main()
