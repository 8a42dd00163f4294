"""The checkout's invoke tasks: the operator's commands, and the lab's.

The operator's commands (backup, plan, recover, ...) are defined in ``toolkit/commands.py``
and are all that the installed ``domu-backup`` program offers. Here, in a checkout, each
is also an invoke task (``invoke backup --domu web01``) beside the rehearsal lab's tasks
(lab, sandbox, rehearse, bench, test), which need the checkout and are never installed.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, Task, task

from toolkit.cmdline import Command, CommandExit
from toolkit.commands import COMMANDS, _fail
from toolkit.errors import ToolkitError

HERE = Path(__file__).resolve().parent


def operator_task(command: Command) -> Task:
    """An operator's command as an invoke task: the same options, its exit said by invoke."""

    @functools.wraps(command.body)
    def body(c, **options):
        try:
            command(c, **options)
        except CommandExit as exc:
            raise Exit(exc.message, code=exc.code) from None

    # invoke 1.7 (Debian 12's) reads the signature with getfullargspec, which ignores
    # __wrapped__ but honours __signature__.
    body.__signature__ = inspect.signature(command.body)  # type: ignore[attr-defined]
    return task(name=command.name, help=dict(command.option_help), auto_shortflags=False,
                positional=[])(body)


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


@task(help={
    "modules": "comma-separated toolkit modules to (re)run, e.g. execute,recover (default: "
               "every module in pyproject.toml's [tool.mutmut], reusing earlier results)",
    "workers": "mutmut's worker processes (default 1, so a lab running beside it is not starved)",
})
def mutate(c, modules="", workers=1):
    """Mutation testing of the safety-critical modules against the unit tests (not part of CI).

    Prints the score per module and every surviving mutant (``mutmut show NAME`` shows one).
    """
    import json
    import time

    names = [f"toolkit.{m.strip()}.*" for m in modules.split(",") if m.strip()]
    start = time.monotonic()
    code = subprocess.run(["mutmut", "run", "--max-children", str(int(workers)), *names],
                          cwd=HERE, check=False).returncode
    print(f"\nmutmut run: {time.monotonic() - start:.0f} s (exit {code})")
    killed_total = counted_total = 0
    survivors: list[str] = []
    for meta in sorted((HERE / "mutants" / "toolkit").glob("*.py.meta")):
        results = json.loads(meta.read_text())["exit_code_by_key"]
        # mutmut's exit codes: 1 and 3 killed; 24, 36, 152, 255, -24 and -9 timed out (a
        # mutant that hangs is caught too); 0 survived; 33 or 5 no test covers the
        # function; None not run yet (anything else: mutmut calls it suspicious).
        killed = sum(1 for v in results.values() if v in (1, 3, 24, 36, 152, 255, -24, -9))
        survived = sorted(k for k, v in results.items() if v in (0, 5, 33))
        counted = killed + len(survived)
        killed_total += killed
        counted_total += counted
        survivors += survived
        score = f"{100 * killed / counted:5.1f}%" if counted else "    -"
        print(f"{meta.name.removesuffix('.py.meta'):<12} {killed:5d} / {counted:<5d} killed "
              f"{score}  ({len(results) - counted} not run)")
    if counted_total:
        print(f"{'overall':<12} {killed_total:5d} / {counted_total:<5d} killed "
              f"{100 * killed_total / counted_total:5.1f}%")
    print(f"\nsurviving mutants ({len(survivors)}):")
    for name in survivors:
        print(f"  {name}")
    if code:
        raise Exit(code=code)


lab = Collection("lab")
lab.add_task(lab_up, "up")
lab.add_task(lab_down, "down")
lab.add_task(lab_status, "status")
sandbox = Collection("sandbox")
sandbox.add_task(sandbox_up, "up")
sandbox.add_task(sandbox_down, "down")

ns = Collection(*(operator_task(command) for command in COMMANDS), rehearse, bench, test,
                mutate)
ns.add_collection(lab)
ns.add_collection(sandbox)
