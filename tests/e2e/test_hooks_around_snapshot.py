"""pre_snapshot and post_snapshot in the lab (R26): around the real snapshot, in order; a
failing pre_snapshot leaves nothing and still gets its post_snapshot; a run killed right
after pre_snapshot gets it from ``recover``. Each hook writes one line: its phase and how
many of the tool's snapshots exist at that moment."""

from __future__ import annotations

import pytest

from toolkit.lab.rehearse import run_backup, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.synced_standby]

CONF = "/etc/domu-backup/hooks.toml"
LOG = "/tmp/domubk-hooks.log"
# A hook: its phase and the number of LVs tagged as the tool's, appended to LOG.
RECORD = ("/bin/sh", "-c", f'echo "$DOMU_BACKUP_PHASE $(lvs --noheadings -o lv_name @domubk '
          f'| wc -l)" >> {LOG}')


def words(argv) -> str:
    return "[" + ", ".join('"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"'
                           for w in argv) + "]"


def configure(lab, pre=RECORD, post=RECORD):
    write_config(lab, CONF, f"\n[defaults.hooks]\npre_snapshot = {words(pre)}\n"
                            f"post_snapshot = {words(post)}\n")
    lab.runner("dom0-a").run(["rm", "-f", LOG])


def logged(lab) -> list[str]:
    res = lab.runner("dom0-a").run(["cat", LOG], check=False)
    return res.stdout.splitlines() if res.exit_code == 0 else []


def backup(lab, env=None):
    return run_backup(lab, "web01", "--config", CONF, env=env)


def test_hooks_run_around_the_snapshot_and_post_snapshot_always_follows(fresh):
    lab = fresh
    try:
        # In order, around the real snapshot: none before, one after.
        configure(lab)
        res = backup(lab)
        assert res.exit_code == 0, res.stdout + res.stderr
        assert logged(lab) == ["pre_snapshot 0", "post_snapshot 1"]

        # A failing pre_snapshot: exit 38, no snapshot, post_snapshot still runs.
        configure(lab, pre=("/bin/sh", "-c", f"echo failed-pre >> {LOG}; exit 7"))
        res = backup(lab)
        assert res.exit_code == 38, res.stdout + res.stderr
        assert logged(lab) == ["failed-pre", "post_snapshot 0"]
        tagged = lab.runner("dom0-a").run(["lvs", "--noheadings", "-o", "lv_name",
                                           "@domubk"]).stdout.split()
        assert tagged == []

        # Killed right after pre_snapshot: recover runs post_snapshot, once.
        configure(lab)
        res = backup(lab, env={"DOMU_BACKUP_FAILPOINT": "after:prehook:sigkill"})
        assert res.exit_code == 137, res.stdout + res.stderr
        assert logged(lab) == ["pre_snapshot 0"]
        for _ in range(2):
            rec = lab.runner("dom0-a").run(["domu-backup", "recover", "--domu", "web01",
                                            "--config", CONF], check=False, timeout=600)
            assert rec.exit_code == 0, rec.stdout + rec.stderr
        assert logged(lab) == ["pre_snapshot 0", "post_snapshot 0"]
        flags = lab.runner("dom0-a").run(["sh", "-c", "ls /var/lib/domu-backup/journal/ "
                                                      "2>/dev/null | grep -c post_snapshot "
                                                      "|| true"]).stdout.strip()
        assert flags == "0"
    finally:
        lab.runner("dom0-a").run(["rm", "-f", CONF, LOG], check=False)


def test_freeze_agent_thaws_the_guest_after_the_snapshot_and_after_a_kill(fresh):
    """freeze = "agent" against the libvirt daemon's test driver, which keeps a domain's
    frozen filesystems between commands: ``domfsfreeze`` of a frozen guest freezes 0 more,
    ``domfsthaw`` of a thawed one thaws 0."""
    from test_failover import CONF as DAEMON_CONF
    from test_failover import SOURCE_DOMAIN, start_hypervisors, stop_hypervisors, virsh

    lab = fresh
    frozen_conf = "/etc/domu-backup/freeze.toml"
    ra = lab.runner("dom0-a")
    start_hypervisors(lab)
    try:
        ra.run(["tee", "/tmp/web01-source.xml"], input=SOURCE_DOMAIN)
        virsh(lab, "dom0-a", "define", "/tmp/web01-source.xml", check=True)
        virsh(lab, "dom0-a", "start", "web01", check=True)
        ra.run(["sh", "-c", f"sed '/^\\[domains.web01\\]$/a freeze = \"agent\"' {DAEMON_CONF} "
                            f"> {frozen_conf} && chmod 0600 {frozen_conf}"])
        res = run_backup(lab, "web01", "--config", frozen_conf, "--json")
        assert res.exit_code == 0, res.stdout + res.stderr
        import json

        (dom,) = json.loads(res.stdout)["domains"]
        assert dom["freeze"].startswith("frozen ") and "Thawed 2" in dom["freeze"], dom
        print(f"web01 {dom['freeze']}")  # how long the guest was frozen (pytest -s shows it)
        assert "Thawed 0" in virsh(lab, "dom0-a", "domfsthaw", "web01", check=True).stdout

        # Killed while the guest is frozen: it stays frozen until recover thaws it.
        res = run_backup(lab, "web01", "--config", frozen_conf,
                         env={"DOMU_BACKUP_FAILPOINT": "after:freeze:sigkill"})
        assert res.exit_code == 137, res.stdout + res.stderr
        assert "Froze 0" in virsh(lab, "dom0-a", "domfsfreeze", "web01", check=True).stdout
        rec = ra.run(["domu-backup", "recover", "--domu", "web01", "--config", frozen_conf],
                     check=False, timeout=600)
        assert rec.exit_code == 0, rec.stdout + rec.stderr
        assert "Thawed 0" in virsh(lab, "dom0-a", "domfsthaw", "web01", check=True).stdout
    finally:
        ra.run(["rm", "-f", frozen_conf], check=False)
        stop_hypervisors(lab)
