"""Suite-wide options: the README's test command must prove the e2e tests ran."""

from __future__ import annotations

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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
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


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:  # noqa: ANN001
    c = config._e2e_counter  # type: ignore[attr-defined]
    terminalreporter.write_line(
        f"end-to-end tests: {c.passed} passed, {c.failed} failed, {c.skipped} skipped")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not config.getoption("--require-e2e"):
        return
    c = config._e2e_counter  # type: ignore[attr-defined]
    if c.passed == 0 or c.skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
