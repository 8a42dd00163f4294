"""The product type-checks (mypy, configured in pyproject.toml) and the code passes ruff,
including its check for ``noqa`` comments that silence nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_product_passes_mypy(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Success: no issues found" in res.stdout


def test_the_code_passes_ruff() -> None:
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "toolkit", "tests",
                          "tasks.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
