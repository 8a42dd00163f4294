"""Suite-wide options: the README's test command must prove the e2e tests ran, and says
where the time went."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-e2e", action="store_true",
                     help="fail the run unless end-to-end tests ran and none was skipped")
    parser.addoption("--keep", action="store_true",
                     help="leave the lab sandbox up after the e2e tests")
    parser.addoption("--engine", default="auto", help="lab engine: auto, local or vm")


class _E2ECounter:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.started = time.monotonic()
        # seconds by (kind, when): kind "e2e" or "unit", when setup/call/teardown
        self.spent: dict[tuple[str, str], float] = defaultdict(float)
        self.per_test: dict[str, float] = defaultdict(float)
        self.per_module: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        kind = "e2e" if "e2e" in report.keywords else "unit"
        self.spent[(kind, report.when)] += report.duration
        if kind == "e2e":
            self.per_test[report.nodeid] += report.duration
            self.per_module[report.nodeid.split("::")[0]] += report.duration
        if "e2e" not in report.keywords:
            return
        if report.when == "call" and report.passed:
            self.passed += 1
        elif report.failed:
            self.failed += 1
        elif report.skipped:
            self.skipped += 1


def pytest_configure(config: pytest.Config) -> None:
    config._e2e_counter = _E2ECounter()  # type: ignore[attr-defined]
    config.pluginmanager.register(config._e2e_counter, "e2e-counter")  # type: ignore[attr-defined]


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:6.1f} min"


def time_table(c: _E2ECounter, lab_phases: list[tuple[str, float]], wall: float) -> list[str]:
    """Where the suite's time went: lab phases, e2e setup/call/teardown, modules, total."""
    lines = ["where the time went:"]
    merged: dict[str, float] = {}
    for name, seconds in lab_phases:
        merged[name] = merged.get(name, 0.0) + seconds
    start = sum(s for n, s in merged.items() if not n.startswith("per-test"))
    for name, seconds in merged.items():
        lines.append(f"  {name:<44} {_minutes(seconds)}")
    e2e = {w: c.spent.get(("e2e", w), 0.0) for w in ("setup", "call", "teardown")}
    if any(e2e.values()):
        tests = max(1, c.passed + c.failed)
        setup = max(0.0, e2e["setup"] - start)
        lines += [
            f"  {'e2e setup after the lab start':<44} {_minutes(setup)}"
            f"  ({setup / tests:.1f} s a test)",
            f"  {'e2e test bodies':<44} {_minutes(e2e['call'])}"
            f"  ({e2e['call'] / tests:.1f} s a test)",
            f"  {'e2e teardown (leak checks, lab stop)':<44} {_minutes(e2e['teardown'])}",
        ]
        for module, seconds in sorted(c.per_module.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {'module ' + Path(module).name:<44} {_minutes(seconds)}")
    unit = sum(c.spent.get(("unit", w), 0.0) for w in ("setup", "call", "teardown"))
    lines.append(f"  {'unit tests':<44} {_minutes(unit)}")
    lines.append(f"  {'total (wall)':<44} {_minutes(wall)}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    c = config._e2e_counter  # type: ignore[attr-defined]
    timing = sys.modules.get("toolkit.lab.timing")
    phases = list(timing.PHASES) if timing is not None else []
    for line in time_table(c, phases, time.monotonic() - c.started):
        terminalreporter.write_line(line)
    terminalreporter.write_line(
        f"end-to-end tests: {c.passed} passed, {c.failed} failed, {c.skipped} skipped")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not config.getoption("--require-e2e"):
        return
    c = config._e2e_counter  # type: ignore[attr-defined]
    if c.passed == 0 or c.skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
