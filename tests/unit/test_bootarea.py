"""The boot area follows the guest: read from the snapshot and written over the standby's on
every run, never a byte of the partition tables."""

from __future__ import annotations

from fakes import FakeHost, config, disk_facts, web01_facts
from hypothesis import given
from hypothesis import strategies as st

from toolkit.bootarea import BIOS_BOOT, boot_ranges
from toolkit.execute import Executor
from toolkit.facts.partitions import Partition, PartitionTable
from toolkit.facts.records import BackupFacts
from toolkit.plan import plan_backup
from toolkit.report import DomainReport

RUN = "20260101T000000Z-abcd"
MIB = 1 << 20


def _part(number: int, start: int, size: int = 2048, ptype: str = "83") -> Partition:
    return Partition(number, start, size, ptype, None, None, False, False)


def test_msdos_boot_area_is_the_boot_code_and_the_gap_never_the_table():
    table = PartitionTable("dos", "0x5eed0001", 512, (_part(1, 2048), _part(2, 8192)))
    assert [(r.start, r.length) for r in boot_ranges(table)] == [(0, 440), (512, MIB - 512)]


def test_an_old_layout_with_its_first_partition_at_sector_63_copies_only_up_to_it():
    table = PartitionTable("dos", "0x1", 512, (_part(1, 63),))
    assert [(r.start, r.length) for r in boot_ranges(table)] == [(0, 440), (512, 62 * 512)]


def test_gpt_boot_area_is_the_boot_code_and_the_bios_boot_partition_never_the_headers():
    table = PartitionTable("gpt", "5EED0001-0000-4000-8000-000000000000", 512,
                           (_part(1, 2048, 2048, BIOS_BOOT.upper()), _part(2, 4096)))
    ranges = boot_ranges(table)
    assert [(r.start, r.length) for r in ranges] == [(0, 440), (2048 * 512, 2048 * 512)]
    assert "BIOS boot partition 1" in ranges[1].what


def test_a_disk_without_a_partition_table_has_no_boot_area():
    assert boot_ranges(PartitionTable(None, None, 512, ())) == ()


@given(label=st.sampled_from(["dos", "gpt"]), starts=st.lists(st.integers(1, 10_000),
                                                             min_size=1, max_size=4))
def test_no_range_ever_touches_a_partition_table_or_a_partition_holding_data(label, starts):
    parts = tuple(_part(n, 34 + s if label == "gpt" else s, 16)
                  for n, s in enumerate(sorted(set(starts)), 1))
    table = PartitionTable(label, "x", 512, parts)
    tables = [(440, 512)] if label == "dos" else [(512, 34 * 512)]
    data = [(p.start * 512, (p.start + p.size) * 512) for p in parts]
    for r in boot_ranges(table):
        lo, hi = r.start, r.start + r.length
        assert all(hi <= a or lo >= b for a, b in tables + data), (r, parts)


def test_the_plan_reads_from_the_snapshot_and_writes_the_alias_after_the_dirty_marker(tmp_path):
    plan = plan_backup(web01_facts(), config(tmp_path), RUN)
    actions = [(s.role, s.action) for s in plan.steps]
    reads = [s for s in plan.steps if s.action == "bootread"]
    writes = [s for s in plan.steps if s.action == "bootwrite"]
    assert len(reads) == len(writes) == 2
    dirty = actions.index(("peer", "marker"))
    first_rsync = actions.index(("source", "rsync"))
    assert all(dirty < plan.steps.index(s) < first_rsync for s in reads + writes)
    snap = f"if=/dev/vg_a/domubk-{RUN}-web01-xvda"
    alias = f"of=/dev/mapper/domubk-{RUN}-web01-xvda"
    assert all(s.role == "source" and snap in s.argv for s in reads)
    assert all(s.role == "peer" and alias in s.argv and "conv=notrunc,nocreat,fsync" in s.argv
               for s in writes)
    assert [s.resource for s in reads] == [s.resource for s in writes]


def test_a_whole_disk_filesystem_has_no_boot_steps(tmp_path):
    facts = BackupFacts("web01", "dom0-a", "dom0-b", "root@dom0-b", 22,
                        (disk_facts("notable-ext4", "xvda", "vg_a", "vg_b", "web01"),))
    plan = plan_backup(facts, config(tmp_path), RUN)
    assert not [s for s in plan.steps if s.action.startswith("boot")]


def test_the_executor_writes_exactly_the_bytes_it_read(tmp_path):
    src, peer = FakeHost("dom0-a"), FakeHost("dom0-b")
    src.fstab_on = "xvda1"
    cfg = config(tmp_path)
    plan = plan_backup(web01_facts(), cfg, RUN)
    report = DomainReport("web01")
    Executor(plan, cfg, src, peer, report).run()
    alias = f"/dev/mapper/domubk-{RUN}-web01-xvda"
    device, offset, written = peer.boot_writes[-1]  # the fake keeps every write to a device
    assert (device, offset) == (alias, 512)
    assert len(written) == MIB - 512 and written[:3] == "".join(chr(0xdc80 + i % 128)
                                                                for i in range(512, 515))
    assert "boot" in report.phases
    assert src.leftovers() == [] and peer.leftovers() == []
