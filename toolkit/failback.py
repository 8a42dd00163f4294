"""``failback``: the way back after a promote. The guest ran from its standby on the peer;
the original source is repaired. On the peer, with the guest shut down there:

1. checks, reading only: the standby's marker says promoted; the guest does not run here;
   the original source (the marker's ``source_host``) answers, does not run the domain,
   and still has it defined, which names each disk's LV there;
2. copies the guest back: a backup run in the other direction (this host the source, the
   original source's LVs the standby), with every guard and journal of a backup. The
   original LVs still hold the data of the last backup, so only what changed travels;
   restore points are not taken in that direction;
3. returns the roles: the reverse run's marker and definition on the original source are
   removed, the standby's marker here says clean again (the two copies are equal: the
   last good sync is the copy back), the domain is undefined here and started on the
   original source (``--no-start`` leaves that to the operator).

A failback that stops before step 3 leaves the standby promoted: run it again (the copy
back then sends nothing new). Each backup from the original source works again after it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Config
from .config.fields import DiskConfig, RestorePoints
from .errors import PromoteRefused
from .facts.virsh import dumpxml_argv, parse_domain_disks
from .journal import replace_file_argv
from .marker import PROMOTED, marker_path, marker_text, new_marker, read_peer_marker
from .preflight import ACTIVE_STATES, domain_state
from .promote import start_argv, undefine_argv
from .runners import Runner
from .standby_xml import definition_path


@dataclass
class FailbackReport:
    """What a failback found and did."""

    domain: str
    host: str  # this host: the standby's, where the guest ran after the promote
    back_to: str  # the original source
    disks: dict[str, str] = field(default_factory=dict)  # target -> the original source LV
    run_id: str | None = None  # the copy back's run
    copied: str = ""  # the copy back's outcome line
    started: bool = False
    done: bool = False


def reversed_config(config: Config, domain: str, back_to: str,
                    disks: dict[str, str]) -> Config:
    """The config of the copy back: ``back_to`` is the domain's peer, each disk's standby LV
    the original source LV there; no restore points in that direction."""
    dom = config.domain(domain)
    rev = dataclasses.replace(
        dom, peer=back_to,
        disks={t: dataclasses.replace(dom.disks.get(t) or DiskConfig(), standby_lv=path)
               for t, path in disks.items()},
        restore_points=RestorePoints(keep_last=0, keep_daily=0, keep_weekly=0))
    return dataclasses.replace(config, domains={**config.domains, domain: rev})


def original_disks(source: Runner, uri: str, domain: str, where: str) -> dict[str, str]:
    """Each backed-up disk of the domain as the original source defines it: target -> LV."""
    res = source.run(dumpxml_argv(uri, domain, inactive=True), check=False, timeout=60)
    if res.exit_code != 0:
        tail = (res.stderr.strip().splitlines() or [f"exited {res.exit_code}"])[-1]
        raise PromoteRefused(f"{where} has no definition of {domain} to copy back to ({tail}); "
                             "define it there as it was, its disks on their LVs")
    disks = {d.target: d.source for d in parse_domain_disks(res.stdout, domain)
             if d.backed_up and d.source}
    if not disks:
        raise PromoteRefused(f"{where}: the definition of {domain} has no LV disk to copy "
                             "back to")
    return disks


def check_failback(config: Config, domain: str, local: Runner, local_name: str,
                   source_factory: Callable[[str], Runner]) -> tuple[FailbackReport, dict,
                                                                      Runner]:
    """Every check before the copy back; the report, the promoted marker and the original
    source's runner (connected)."""
    if config.domain(domain).peer != local_name:
        raise PromoteRefused(f"the standby of {domain} is on {config.domain(domain).peer}, "
                             f"not on this host ({local_name}); run failback there",
                             host=local_name)
    mpath = marker_path(config, domain)
    marker = read_peer_marker(local, mpath)
    if marker.get("state") != PROMOTED:
        raise PromoteRefused(f"the standby of {domain} is {marker.get('state')}, not promoted: "
                             "there is nothing to fail back", host=local_name)
    back_to = str(marker.get("source_host"))
    if back_to not in config.dom0s or back_to == local_name:
        raise PromoteRefused(f"marker {mpath}: source_host {back_to!r} is not another Dom0",
                             host=local_name)
    uri = config.hypervisor_uri
    source = source_factory(back_to)
    here = domain_state(local, uri, domain)
    if here is None:
        raise PromoteRefused(f"domain {domain} is not defined here: its promoted definition "
                             "is what the copy back reads", host=local_name)
    if here in ACTIVE_STATES:
        raise PromoteRefused(f"domain {domain} is {here} here; shut it down first (`virsh "
                             f"shutdown {domain}`), so the copy back is its last state",
                             host=local_name)
    there = domain_state(source, uri, domain)
    if there in ACTIVE_STATES:
        raise PromoteRefused(f"domain {domain} is {there} on {back_to}: the copy back would "
                             "overwrite its running disks; stop it there", host=local_name)
    disks = original_disks(source, uri, domain, back_to)
    return FailbackReport(domain, local_name, back_to, dict(sorted(disks.items()))), marker, source


def return_roles(config: Config, report: FailbackReport, marker: dict, local: Runner,
                 source: Runner, *, start: bool, run_id: str,
                 log: Callable[[str], None] = lambda m: None) -> None:
    """After the copy back: the reverse run's records off the original source, the standby
    clean here, the domain undefined here and (``start``) started on the original source."""
    domain, uri = report.domain, config.hypervisor_uri
    timeout = config.ssh.command_timeout
    state_dir = config.defaults.state_dir
    source.run(["rm", "-f", "--", marker_path(config, domain),
                definition_path(state_dir, domain)], timeout=timeout)
    clean = new_marker(domain, "clean", run_id, report.back_to, marker,
                       standby=marker.get("standby") or None)
    local.run(replace_file_argv(marker_path(config, domain)), input=marker_text(clean),
              timeout=timeout)
    log(f"[{report.host}] standby of {domain} clean again (the copy back, run {run_id})")
    res = local.run(undefine_argv(uri, domain), check=False, timeout=timeout)
    if res.exit_code != 0:
        raise PromoteRefused(f"`virsh undefine {domain}` failed here: {res.stderr.strip()}; "
                             "the standby is clean again; undefine it by hand",
                             host=report.host)
    if start:
        res = source.run(start_argv(uri, domain), check=False, timeout=timeout)
        if res.exit_code != 0:
            raise PromoteRefused(f"`virsh start {domain}` failed on {report.back_to}: "
                                 f"{res.stderr.strip()}; the copy back is complete and the "
                                 "standby clean: start it there by hand", host=report.host)
        report.started = True
        log(f"[{report.back_to}] domain {domain} started")
    report.done = True


def render_failback(report: FailbackReport, *, planned: bool = False,
                    start: bool = True) -> str:
    """The failback's outcome, for the operator; ``planned``: what follows the copy back."""
    lines = [f"Failback of {report.domain} from {report.host} to {report.back_to}"]
    lines += [f"  {t} back onto {p}" for t, p in report.disks.items()]
    if planned:
        lines += ["After the copy back:",
                  f"  [{report.back_to}] rm -f the copy back's marker and definition",
                  f"  [{report.host}] the standby's marker: clean (the copy back's run)",
                  f"  [{report.host}] virsh undefine -- {report.domain}"]
        if start:
            lines.append(f"  [{report.back_to}] virsh start -- {report.domain}")
    if report.copied:
        lines.append(f"  copy back: {report.copied}")
    if report.done:
        lines.append(f"{report.domain} " + (f"runs on {report.back_to} again" if report.started
                                           else f"is ready to start on {report.back_to}")
                     + f"; its standby on {report.host} is clean")
    return "\n".join(lines)
