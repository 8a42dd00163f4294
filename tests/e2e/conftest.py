"""The rehearsal lab for the end-to-end suite: built once per session, shared by the tests.

Each test starts from freshly written guest and standby disks and ends with a
leak check on both fake Dom0s (R2): no snapshot LVs, device-mapper maps,
mounts or loop devices of the tool's, and the domain lock free.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest):
    from toolkit.lab.rehearse import sandbox_ready, teardown

    # web01's standby in sync is built with the sandbox: the tests marked synced_standby
    # start from it (see ``fresh``).
    lab = sandbox_ready(request.config.getoption("--engine"), ROOT, synced=("web01",))
    env = lab.engine.env()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # testinfra's docker backend uses the docker CLI
    yield lab
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    teardown(lab, keep=request.config.getoption("--keep"))


@pytest.fixture
def fresh(lab, request: pytest.FixtureRequest):
    """Guest and standby disks as built; a leak check on both hosts afterwards.

    Tests marked ``own_disks`` write their own guest's disks (``prepare_layout``) and never
    touch web01 or db01, so those are not rewritten for them. Tests marked
    ``synced_standby`` start with web01's standby already in sync with its disk.
    """
    from toolkit.lab.rehearse import reset_disks
    from toolkit.lab.timing import phase

    if request.node.get_closest_marker("own_disks") is None:
        synced = ("web01",) if request.node.get_closest_marker("synced_standby") else ()
        with phase("per-test: guest and standby disks rewritten"):
            reset_disks(lab, synced=synced)
    with phase("per-test: state directories wiped"):
        for c in ("dom0-a", "dom0-b"):  # reports, journals and standby markers of earlier tests
            lab.runner(c).run(["rm", "-rf", "/var/lib/domu-backup"], timeout=60)
    yield lab
    with phase("per-test: leak check"):
        leaks = lab.sandbox.leak_reports(("dom0-a", "dom0-b"))
    leaks = {c: v for c, v in leaks.items() if v}
    if leaks:
        # clean up so the next test starts clean, then fail this one
        for c in leaks:
            lab.runner(c).run(["domu-backup", "recover", "--host", "local"], check=False,
                              timeout=300)
        pytest.fail(f"leftovers after the test: {leaks}")


@pytest.fixture
def host_a(lab):
    import testinfra

    return testinfra.get_host("docker://dom0-a")


@pytest.fixture
def host_b(lab):
    import testinfra

    return testinfra.get_host("docker://dom0-b")
