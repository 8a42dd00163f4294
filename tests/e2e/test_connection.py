"""R17: the peer drops off the network mid-run; the run says so and recover cleans up.

dom0-b is disconnected from the lab network while the run waits to start its
first rsync (held back by a slow wrapper). rsync's ssh cannot connect, the run ends
with exit 44 and tears the source down completely; the peer keeps what it
had mounted and mapped. Once dom0-b is back, ``recover`` removes it (the
leak check of the ``fresh`` fixture proves both hosts clean), and the next
backup converges.
"""

from __future__ import annotations

import json
import time

import pytest

from toolkit.lab.faults import flag_set, install_slow, wait_for
from toolkit.lab.rehearse import (
    audit,
    run_backup,
    standby_marker,
    start_backup,
)

pytestmark = pytest.mark.e2e

FAST = "/etc/domu-backup/fast.toml"
IN_RSYNC = "/run/in-rsync"


def fast_config(runner):
    """The sandbox config with short SSH timeouts, so a lost peer shows in seconds."""
    text = runner.run(["cat", "/etc/domu-backup/backup.toml"]).stdout
    assert "[ssh]\n" in text
    text = text.replace("[ssh]\n", "[ssh]\nconnect_timeout = 5\ncommand_timeout = 30\n"
                                   "keepalive = 2\n", 1)
    runner.run(["tee", FAST], input=text)
    runner.run(["chmod", "0600", FAST])


def web01_mounts(runner):
    res = runner.run(["findmnt", "-rn", "-o", "TARGET"], timeout=60)
    return [t for t in res.stdout.split() if "/web01." in t]


@pytest.mark.synced_standby
def test_peer_lost_mid_run_is_reported_and_recover_cleans_the_peer(fresh):
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    fast_config(a)
    net = fresh.client.networks.get("domubk-lab")
    # rsync is held back 15 s once the run reaches it, so dom0-b goes away after every
    # step before the copy (the standby marked dirty, the boot area written) and before
    # rsync's ssh connects: the run is not in the middle of a command on the peer.
    slow = install_slow(fresh, "dom0-a", "rsync", IN_RSYNC, 15)
    try:
        run = start_backup(fresh, "web01", "--config", FAST)
        wait_for("the run to reach its first rsync", lambda: flag_set(fresh, "dom0-a",
                                                                       IN_RSYNC), timeout=300)
        assert standby_marker(fresh, "web01")["state"] == "dirty"
        net.disconnect("dom0-b")
        try:
            assert run.wait(timeout=300) == 44  # not forever: the run notices the lost peer
            # the source is clean; the peer still holds the run's mounts, for recover
            assert web01_mounts(a) == []
            assert "domubk" not in a.run(["lvs", "--noheadings", "-o", "lv_name"]).stdout
            assert web01_mounts(b) != []
        finally:
            net.connect("dom0-b")
    finally:
        slow()
    report = json.loads(a.run(["cat", "/var/lib/domu-backup/reports/web01.json"]).stdout)
    assert report["exit_code"] == 44 and "run `recover`" in report["message"]
    deadline = time.monotonic() + 120
    while True:  # the peer's name resolves again once it is back on the network
        rec = a.run(["domu-backup", "recover", "--domu", "web01"], check=False, timeout=600)
        if rec.exit_code == 0 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert rec.exit_code == 0, rec.stdout + rec.stderr
    assert web01_mounts(b) == []
    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert standby_marker(fresh, "web01")["state"] == "clean"


def test_ssh_session_killed_mid_rsync_leaves_standby_dirty_and_next_run_converges(fresh):
    # R10: the sshd session carrying rsync dies while it copies; rsync is slowed down
    # with a bandwidth limit so the kill lands mid-copy, every time.
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    text = a.run(["cat", "/etc/domu-backup/backup.toml"]).stdout
    assert "[defaults]\n" in text
    a.run(["tee", FAST], input=text.replace("[defaults]\n", '[defaults]\nbwlimit = "1M"\n', 1))
    a.run(["chmod", "0600", FAST])
    run = start_backup(fresh, "web01", "--config", FAST)
    deadline = time.monotonic() + 300
    server = ""
    while time.monotonic() < deadline and not server:
        server = b.run(["pgrep", "-o", "-f", "^rsync --server"], check=False).stdout.strip()
        time.sleep(0.5)
    assert server, "rsync never started on the peer"
    time.sleep(3)  # some data has been written
    session = b.run(["ps", "-o", "ppid=", "-p", server]).stdout.strip()
    assert "sshd" in b.run(["ps", "-o", "args=", "-p", session]).stdout
    b.run(["kill", "-KILL", session])
    code = run.wait(timeout=300)  # not forever: the run notices its session died
    assert code == 44, code
    assert standby_marker(fresh, "web01")["state"] == "dirty"
    assert fresh.sandbox.leak_report("dom0-a") == []  # the source is torn down, uncleaned
    report = json.loads(a.run(["cat", "/var/lib/domu-backup/reports/web01.json"]).stdout)
    assert "run `recover`" in report["message"]
    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    assert standby_marker(fresh, "web01")["state"] == "clean"
    assert {x.name: x.differences for x in audit(fresh, "web01") if x.differences} == {}


def test_peer_frozen_mid_transfer_is_ended_by_timeouts_then_a_plain_run_converges(fresh):
    """R17 mid-transfer: dom0-b is frozen (its container paused) while rsync writes to it, so
    nothing answers and nothing closes: ssh's keepalives and the command timeout end the
    run, which tears the source down. The peer, thawed, still holds the run's mounts; the
    next plain backup cleans them (its report says so) and converges."""
    a, b = fresh.runner("dom0-a"), fresh.runner("dom0-b")
    fast_config(a)
    text = a.run(["cat", FAST]).stdout
    a.run(["tee", FAST], input=text.replace("[defaults]\n", '[defaults]\nbwlimit = "1M"\n', 1))
    run = start_backup(fresh, "web01", "--config", FAST)
    wait_for("rsync to write on the peer",
             lambda: b.run(["pgrep", "-f", "^rsync --server"], check=False).exit_code == 0)
    time.sleep(2)
    box = fresh.client.containers.get("dom0-b")
    box.pause()
    frozen = time.monotonic()
    try:
        code = run.wait(timeout=300)
        took = time.monotonic() - frozen
    finally:
        box.unpause()
    print(f"the run ended {took:.0f}s after the peer froze")
    assert code == 44, code
    assert took < 200  # keepalives (2 s, 4 missed) or the 30 s command timeout, not forever
    assert web01_mounts(a) == []
    assert "domubk" not in a.run(["lvs", "--noheadings", "-o", "lv_name"]).stdout
    assert fresh.sandbox.leak_report("dom0-a") == []
    assert fresh.sandbox.leak_report("dom0-b") != []  # what the next run must clean
    assert standby_marker(fresh, "web01")["state"] == "dirty"
    ok = run_backup(fresh, "web01")
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    report = json.loads(a.run(["cat", "/var/lib/domu-backup/reports/web01.json"]).stdout)
    assert any("dom0-b" in line for line in report["cleaned"]), report["cleaned"]
    assert standby_marker(fresh, "web01")["state"] == "clean"
    assert {x.name: x.differences for x in audit(fresh, "web01") if x.differences} == {}
