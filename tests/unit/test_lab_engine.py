"""The lab engine's bookkeeping: its state file, status line, choice of local host (no VM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.errors import UsageError
from toolkit.lab import engine
from toolkit.lab.engine import LabEngine, LabState, LabStatus


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "domu-backup" / "lab"


def vm_state(overlay: str = "/cache/run/overlay.qcow2") -> LabState:
    return LabState("vm", "tcp://127.0.0.1:40001", pid=4242, port=40001, overlay=overlay,
                    disk="/cache/baked.qcow2", console="/cache/run/console.log",
                    qmp="/cache/run/qmp.sock", started=1.5)


def test_state_round_trips_through_its_json_file() -> None:
    engine.write_state(vm_state())
    assert engine.read_state() == vm_state()
    assert json.loads(engine.state_path().read_text())["port"] == 40001


def test_no_state_file_means_no_engine() -> None:
    assert engine.read_state() is None
    assert engine.current_engine() is None
    assert engine.lab_status().kind is None


@pytest.mark.parametrize("text", ["", "{", '{"kind": "vm", "surprise": 1}', "[]"])
def test_an_unreadable_state_file_counts_as_none(text: str) -> None:
    engine.state_path().write_text(text)
    assert engine.read_state() is None


def test_clear_state_removes_the_file() -> None:
    engine.write_state(vm_state())
    engine.clear_state()
    assert not engine.state_path().exists()


def test_a_vm_whose_qemu_is_gone_is_reported_stale_not_running(tmp_path: Path) -> None:
    # pid 4242 is not a QEMU on this overlay (whatever runs under that pid).
    engine.write_state(vm_state(str(tmp_path / "no-such-overlay.qcow2")))
    status = engine.lab_status()
    assert status.kind is None and not status.healthy
    assert "stale" in str(status)
    assert engine.current_engine() is None


def test_vm_process_comes_from_the_state() -> None:
    proc = vm_state().vm_process()
    assert (proc.pid, proc.port, proc.docker_host) == (4242, 40001, "tcp://127.0.0.1:40001")
    assert proc.qmp == Path("/cache/run/qmp.sock")


def test_local_state_names_no_vm() -> None:
    from toolkit.errors import ToolkitError

    with pytest.raises(ToolkitError):
        LabState("local", None).vm_process()


def test_engine_env_gives_docker_host_only_for_a_remote_engine() -> None:
    assert LabEngine("vm", "tcp://127.0.0.1:40001").env() == {
        "DOCKER_HOST": "tcp://127.0.0.1:40001"}
    assert LabEngine("local", None).env() == {}


def test_status_line_says_what_runs_and_where() -> None:
    line = str(LabStatus("vm", True, "tcp://127.0.0.1:40001", 4242, "/c/overlay.qcow2"))
    assert "vm" in line and "healthy" in line and "DOCKER_HOST=tcp://127.0.0.1:40001" in line
    assert "NOT healthy" in str(LabStatus("local", False))
    assert str(LabStatus(None, False)) == "lab: down"


def test_local_engine_is_not_the_lab_vm_exported_into_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine.write_state(vm_state())
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:40001")
    assert engine.local_engine() == LabEngine("local", None)
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert engine.local_engine() == LabEngine("local", "unix:///run/user/1000/docker.sock")


def test_unknown_engine_kind_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        engine.lab_up("podman")


def test_an_engine_that_is_not_listening_does_not_answer() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert not engine.answers(LabEngine("vm", f"tcp://127.0.0.1:{port}"), timeout=2)
