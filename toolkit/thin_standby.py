"""``init-standby --thin VG/POOL``: create the domain's missing standby LVs as thin LVs.

A thin standby's restore points are thin snapshots: no size to choose, and no copy on
each later write to the standby, as a classic snapshot makes. The standby LVs are
created in the named pool, each the size of its source LV, before ``init-standby`` gives
them the source's layout. A standby LV that already exists is kept as it is when it is a
thin LV of that pool, and refused otherwise: the tool never removes or converts an LV
that holds data. The pool must exist (making one is the operator's choice of size and
place) and lie in the standby LVs' volume group.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from .errors import StandbyInvalid, UnsafeName, UsageError
from .facts.lvm import LogicalVolume, ThinPool
from .names import check_lvm_pair
from .plan_records import PEER, Step

_LVM_NAME = r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*"
_POOL = re.compile(rf"(?P<vg>{_LVM_NAME})/(?P<pool>{_LVM_NAME})")
_DEV_LV = re.compile(r"/dev/(?P<vg>[^/]+)/(?P<lv>[^/]+)")
_MAPPER_LV = re.compile(r"/dev/mapper/(?P<vg>(?:[^-/]|--)+)-(?P<lv>(?:[^-/]|--)+)")


def parse_pool(text: str) -> tuple[str, str]:
    """(VG, pool) of ``--thin VG/POOL``; UsageError for anything else."""
    m = _POOL.fullmatch(text or "")
    if m is None:
        raise UsageError(f"--thin {text!r}: expected VG/POOL, a thin pool like vg_b/pool0")
    try:
        check_lvm_pair(m.group("vg"), m.group("pool"), "--thin")
    except UnsafeName as exc:
        raise UsageError(f"--thin {text!r}: {exc}") from None
    return m.group("vg"), m.group("pool")


def standby_vg_lv(path: str) -> tuple[str, str]:
    """(VG, LV) of a standby path: /dev/mapper/VG-LV (each "-" of a name doubled) or
    /dev/VG/LV (the names as they are)."""
    m = _MAPPER_LV.fullmatch(path)
    if m is not None:
        vg, lv = m.group("vg").replace("--", "-"), m.group("lv").replace("--", "-")
    elif path.startswith("/dev/mapper/") or (m := _DEV_LV.fullmatch(path)) is None:
        raise StandbyInvalid(f"standby {path}: not /dev/VG/LV or /dev/mapper/VG-LV")
    else:
        vg, lv = m.group("vg"), m.group("lv")
    check_lvm_pair(vg, lv, f"standby {path}")
    return vg, lv


@dataclass(frozen=True)
class ThinDisk:
    """One guest disk for ``--thin``: its source LV, and its standby path and LV (if any)."""

    target: str
    source: LogicalVolume
    standby_path: str
    standby: LogicalVolume | None


def thin_steps(disks: list[ThinDisk], pool: ThinPool) -> tuple[tuple[Step, ...], tuple[str, ...]]:
    """The peer's ``lvcreate`` of each missing standby as a thin LV of ``pool``, the source
    LV's size; and the refusals (then nothing runs)."""
    steps: list[Step] = []
    refusals: list[str] = []
    for disk in disks:
        vg, lv = standby_vg_lv(disk.standby_path)
        if disk.standby is not None:
            if (not disk.standby.is_thin or disk.standby.pool != pool.name
                    or disk.standby.vg != pool.vg):
                kind = (f"a thin LV of {disk.standby.vg}/{disk.standby.pool}"
                        if disk.standby.is_thin else "a thick LV")
                refusals.append(f"disk {disk.target}: standby {disk.standby_path} exists as "
                                f"{kind}, not in {pool.full_name}; it is never removed or "
                                "converted: remove it yourself, or leave out --thin")
            continue
        if vg != pool.vg:
            refusals.append(f"disk {disk.target}: standby {disk.standby_path} is in VG {vg}, "
                            f"the pool {pool.full_name} in {pool.vg}: a thin LV lives in its "
                            "pool's VG (set domains.NAME.disks.TARGET.standby_lv)")
            continue
        steps.append(Step(
            PEER, "create",
            ("lvcreate", "--type", "thin", "--virtualsize", f"{disk.source.size_bytes}b",
             "--thinpool", pool.full_name, "--name", lv, vg),
            resource=posixpath.join("/dev", vg, lv),
            note=(f"the standby of disk {disk.target}: a thin LV of {pool.full_name}, "
                  f"{disk.source.size_bytes} bytes like {disk.source.path}")))
    return tuple(steps), tuple(refusals)


def create_thin_standbys(config, domain: str, source, peer, local: str, thin: str, *,
                         dry_run: bool, log) -> bool:
    """Read both hosts, print the thin LVs ``--thin`` would create, and create them (unless
    ``dry_run``). Returns whether any is missing still (a dry run that would create some)."""
    from .facts.lvm import lv_missing, parse_pools, pools_argv
    from .facts.virsh import dumpxml_argv, parse_domain_disks
    from .preflight import locate, lookup_lv

    vg, name = parse_pool(thin)
    locate(config, domain, source, local)
    xml = source.run(dumpxml_argv(config.hypervisor_uri, domain), timeout=60).stdout
    disks: list[ThinDisk] = []
    for disk in parse_domain_disks(xml, domain):
        if disk.skip_reason is not None or disk.source is None:
            continue
        src = lookup_lv(source, disk.source)
        if src is None:
            raise StandbyInvalid(f"disk {disk.target} of {domain}: {disk.source} is not an LVM "
                                 "logical volume on this host", host=local)
        path = config.domain(domain).standby_lv(disk.target, disk.source)
        disks.append(ThinDisk(disk.target, src, path, lookup_lv(peer, path)))
    res = peer.run(pools_argv(f"{vg}/{name}"), check=False, timeout=60)
    if lv_missing(res):
        raise StandbyInvalid(f"thin pool {vg}/{name} does not exist on {peer.host}: create "
                             f"it first (lvcreate --type thin-pool -L SIZE -n {name} {vg})",
                             host=peer.host)
    pools = parse_pools(peer.run(pools_argv(f"{vg}/{name}"), timeout=60).stdout
                        if res.exit_code != 0 else res.stdout)
    if len(pools) != 1:
        raise StandbyInvalid(f"thin pool {vg}/{name}: lvs reported {len(pools)} pools",
                             host=peer.host)
    pool = pools[0]
    steps, refusals = thin_steps(disks, pool)
    for n, step in enumerate(steps, 1):
        log(f"thin {n}. [{peer.host}] {' '.join(step.argv)}")
        log(f"         # {step.note}")
    if refusals:
        raise StandbyInvalid("; ".join(refusals), host=peer.host)
    if dry_run:
        return bool(steps)
    for step in steps:
        peer.run(step.argv, timeout=config.ssh.command_timeout)
        log(f"created {step.resource} on {peer.host}")
    return False
