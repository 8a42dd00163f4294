"""The domain's definition for the peer: each backed-up disk on its standby LV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from toolkit import errors
from toolkit.facts.virsh import parse_domain_disks
from toolkit.standby_xml import standby_definition

ROOT = Path(__file__).resolve().parents[2]
JOBS01 = json.loads((ROOT / "fixtures/recorded/virsh/dumpxml-jobs01.json").read_text())["stdout"]

MIXED = """<domain type='xen'>
  <name>web01</name>
  <uuid>5eed0001-0000-4000-8000-00000000aaaa</uuid>
  <memory unit='KiB'>524288</memory>
  <os><type>linux</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/xen/images/web01.qcow2'/>
      <backingStore type='file'><format type='raw'/><source file='/base.img'/></backingStore>
      <target dev='xvda' bus='xen'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/srv/iso/debian.iso'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg_a/web01-swap'/>
      <target dev='xvdb' bus='xen'/>
    </disk>
    <interface type='bridge'><source bridge='br0'/><mac address='00:16:3e:00:00:01'/></interface>
  </devices>
</domain>
"""


def _disks(xml: str) -> dict[str, tuple[str, str | None]]:
    return {d.target: (d.disk_type, d.source) for d in parse_domain_disks(xml)}


def test_each_backed_up_disk_is_its_standby_lv_and_the_rest_of_the_definition_stays():
    out = standby_definition(JOBS01, {"vda": "/dev/vg_b/jobs01", "vdc": "/dev/vg_b/jobs01-data"})
    assert _disks(out.xml) == {"vda": ("block", "/dev/vg_b/jobs01"),
                               "vdb": ("block", "/dev/vg0/jobs01-scratch"),
                               "vdc": ("block", "/dev/vg_b/jobs01-data")}
    assert out.kept == ("vdb: not backed up, kept as the source has it (dev=/dev/vg0/jobs01-"
                        "scratch)",)
    before, after = etree.fromstring(JOBS01.encode()), etree.fromstring(out.xml.encode())
    for path in ("name", "uuid", "memory", "vcpu", "os/type", "on_crash"):
        assert after.findtext(path) == before.findtext(path)
    assert after.find("devices/disk/target").get("bus") == "virtio"


def test_a_file_disk_becomes_a_raw_block_device_and_a_cdrom_an_empty_drive():
    out = standby_definition(MIXED, {"xvda": "/dev/vg_b/web01"})
    root = etree.fromstring(out.xml.encode())
    xvda, hdc, _xvdb = root.findall("devices/disk")
    assert xvda.get("type") == "block"
    assert [(s.tag, dict(s.attrib)) for s in xvda.findall("source")] == [
        ("source", {"dev": "/dev/vg_b/web01"})]
    assert xvda.find("driver").get("type") == "raw"
    assert xvda.find("backingStore") is None
    assert hdc.find("source") is None and hdc.find("readonly") is not None
    assert out.kept == ("xvdb: not backed up, kept as the source has it (dev=/dev/vg_a/"
                        "web01-swap)",)
    assert root.find("devices/interface/mac").get("address") == "00:16:3e:00:00:01"
    # It reads back as a definition with the standby on xvda.
    assert _disks(out.xml)["xvda"] == ("block", "/dev/vg_b/web01")


def test_a_disk_the_definition_lacks_is_named_not_refused():
    # Hot-plugged into the running domain only: the standby has its copy, the definition
    # (read --inactive) does not name it; the backup says so and goes on.
    out = standby_definition(MIXED, {"xvda": "/dev/vg_b/web01", "xvdz": "/dev/vg_b/x"})
    assert _disks(out.xml)["xvda"] == ("block", "/dev/vg_b/web01")
    assert "xvdz" not in _disks(out.xml)
    assert [k for k in out.kept if k.startswith("xvdz:")] == [
        "xvdz: attached to the running domain only, not in its definition; add it after "
        "promoting (/dev/vg_b/x)"]


@pytest.mark.parametrize("standby", [{"xvda": "vg_b/web01"}, {"xvda": "/dev/vg_b/x\n"},
                                     {"../x": "/dev/vg_b/web01"}])
def test_a_bad_standby_name_or_path_is_refused(standby):
    with pytest.raises(errors.ParseError):
        standby_definition(MIXED, standby)


def test_a_hostile_definition_is_refused_as_the_backup_refuses_it():
    hostile = ("<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/shadow'>]>"
               "<domain><name>&x;</name><devices/></domain>")
    with pytest.raises(errors.ParseError):
        standby_definition(hostile, {})
