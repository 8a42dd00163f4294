"""Running the guest tree program (tree_program.py) on the host that builds an image."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ...errors import ParseError
from ...runners import Runner

# --------------------------------------------------------------------------- shipping


def _run_program(runner: Runner, spec: dict[str, Any], python: str, *,
                 timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = runner.run([python, "-c", remote_program(), json.dumps(spec)], timeout=timeout,
                        env=env)
    try:
        out = json.loads(result.stdout)
    except ValueError as exc:
        raise ParseError(f"guest tree program printed no JSON: {result.stdout[-200:]!r}",
                         host=runner.host) from exc
    if not isinstance(out, dict):
        raise ParseError(f"guest tree program printed {out!r}", host=runner.host)
    return out


@functools.cache
def remote_program() -> str:
    """The self-contained program text run on the target host (stdlib only)."""
    return (Path(__file__).with_name("tree_program.py")).read_text(encoding="utf-8")


