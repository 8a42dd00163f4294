"""Shipping the bench program (node_program.py) into the fake Dom0s and running one of its ops."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import ParseError
from ...runners import Runner
from .meters import program_argv
from .workloads import PROGRAM_PATH


@functools.cache
def bench_program() -> str:
    """The self-contained program text, stdlib only: ``python3 PROGRAM '{"op": ...}'``."""
    return Path(__file__).with_name("node_program.py").read_text(encoding="utf-8")


def run_program(runner: Runner, spec: Mapping[str, Any], *, timeout: float,
                program: str = PROGRAM_PATH) -> dict[str, Any]:
    """Run one op of the bench program on the runner's host; its JSON result."""
    res = runner.run(program_argv(spec, program), timeout=timeout)
    try:
        out = json.loads(res.stdout.splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise ParseError(f"bench program ({spec['op']}) printed no JSON: {res.stdout[-200:]!r}",
                         host=runner.host) from exc
    if not isinstance(out, dict):
        raise ParseError(f"bench program ({spec['op']}) printed {out!r}", host=runner.host)
    return out


