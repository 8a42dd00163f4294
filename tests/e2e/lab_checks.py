"""Checks on the lab's fake Dom0s that more than one e2e module polls or asserts.

Imported as ``from lab_checks import ...`` (pytest puts tests/e2e on the path, as it puts
tests/unit there for ``fakes``); the lab itself is driven through toolkit.lab.
"""

from __future__ import annotations

from toolkit.runners import Runner


def snapshot_exists(runner: Runner) -> bool:
    """Whether the host holds an LV of the tool's: a run's snapshot,
    ``domubk-<run>-<domain>-<disk>`` (a fake Dom0's LVM sees its own VG only)."""
    return "domubk-" in runner.run(["lvs", "--noheadings", "-o", "lv_name"], timeout=60).stdout
