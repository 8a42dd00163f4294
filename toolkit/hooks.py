"""The operator's hooks (``[defaults.hooks]``, ``[domains.NAME.hooks]``): a program run when
a domain's backup ends, ``on_success`` or ``on_failure``.

A hook is an argv list run as it is (no shell unless the operator names one), with the
domain, run id, outcome and exit code in its environment and the domain's JSON report on
its standard input, for at most ``timeout`` seconds. What it did is one line of the
domain's report; a hook that fails, or is killed at its timeout, is said there and in the
log, and never changes the backup's outcome or exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict

from .report import DomainReport

# The environment a hook gets: these of ours, and nothing of the tool's own but PATH/LANG.
PASSED = ("PATH", "LANG", "LC_ALL", "TZ")


def hook_env(report: DomainReport) -> dict[str, str]:
    """What a hook finds in its environment."""
    env = {k: os.environ[k] for k in PASSED if k in os.environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env.update({"DOMU_BACKUP_DOMAIN": report.domain, "DOMU_BACKUP_RUN_ID": report.run_id,
                "DOMU_BACKUP_OUTCOME": report.outcome,
                "DOMU_BACKUP_EXIT_CODE": str(report.exit_code)})
    return env


def run_hook(name: str, argv: Sequence[str], report: DomainReport, timeout: float,
             log: Callable[[str], None] = lambda m: None) -> str:
    """Run one hook; the line that says what it did (also added to ``report.hooks``)."""
    shown = " ".join(argv)
    try:
        done = subprocess.run(list(argv), input=json.dumps(asdict(report)).encode(),
                              capture_output=True, timeout=timeout, env=hook_env(report),
                              check=False, cwd="/")
    except subprocess.TimeoutExpired:
        line = f"{name}: `{shown}` killed after {timeout:g}s"
    except OSError as exc:
        line = f"{name}: `{shown}` could not start: {exc.strerror or exc}"
    else:
        tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-2:])
        line = f"{name}: `{shown}` exited {done.returncode}" + (f": {tail}" if tail and
                                                                  done.returncode else "")
    report.hooks.append(line)
    log(f"hook {line}")
    return line
