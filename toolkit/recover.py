"""Finish the teardown of runs that were killed (SIGKILL, power loss, lost peer).

Two sources of truth, both limited to what the tool owns:

1. the journals each run writes on each host before every side effect;
2. a sweep of objects carrying the tool's prefix (mounts under the tool's
   mount prefixes, device-mapper maps named ``domubk-...``, LVs tagged
   ``domubk``), for the domain at hand.

Undo happens newest first and only while the resource still exists, so
``recover`` is idempotent. The caller holds the domain lock, so a live run is
never touched.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import PREFIX
from .background import Background
from .config import Config
from .errors import CommandFailed, InsecureFile, ToolkitError
from .facts.findmnt import findmnt_argv, mounts_from_result
from .facts.virsh import parse_domstate
from .journal import journals_argv, journals_from, list_journals, parse_journal
from .owned import (
    journal_of,
    parse_owned,
    run_dir_of,
    snapshot_lv,
    snapshot_partition_map,
    under_run_dir,
)
from .plan import mount_probe
from .preflight import ACTIVE_STATES
from .rollback import ROLLBACK_ACTIONS, rollback_undo_problem
from .runners import CommandResult, Runner
from .settle import settle_merges
from .snapshot_hooks import HOOK_UNDO, THAW_UNDO, is_flag_undo, owe_post_snapshot, owe_thaw
from .statedir import check_state_dir, state_dir_argv, state_dir_from
from .step_batch import run_reads
from .undo import undo_with_retry, unwind

# recover undoes with the same bounded retries as a run's teardown, with a longer bound.
RECOVER_UNDO_TIMEOUT = 300


def _undo(runner: Runner, undo: tuple[str, ...], exists: tuple[str, ...]) -> bool:
    return undo_with_retry(runner, undo, exists, timeout=RECOVER_UNDO_TIMEOUT)


def recover_journals(runner: Runner, state_dir: str, domain: str | None,
                     log: Callable[[str], None], errors: list[str],
                     config: Config | None = None) -> list[str]:
    """Undo journal entries newest first; failures are collected, not raised. With
    ``config``: a promote's undo may name only its hypervisor, and a pending post_snapshot
    runs the hook it names (none without it)."""
    uri = config.hypervisor_uri if config is not None else None
    done: list[str] = []
    for path in list_journals(runner, state_dir, domain):
        text = runner.run(["cat", "--", path], timeout=60).stdout
        # Only the undo and probe commands a run writes are ever run, whatever the file says.
        judged = [(e, _unexpected_undo(e.undo, e.exists, state_dir=state_dir, uri=uri,
                                       domain=e.domain)) for e in parse_journal(text, path)]
        refused = [(e, why) for e, why in reversed(judged) if why]
        errors += [f"{path}: {e.action} {e.resource}: {why}; not run (inspect the journal and "
                   "remove it by hand)" for e, why in refused]
        accepted = [e for e, why in judged if not why]
        promote = [e for e in accepted if e.action in PROMOTE_ACTIONS]
        if promote:
            finished, accepted = _promote_left(runner, accepted)
            if finished:
                kept = [e.undo[3] for e in promote if e.action == "promote-marker"]
                runner.run(["rm", "-f", "--", *kept, *([] if refused else [path])], timeout=60)
                log(f"[{runner.host}] promote of {promote[0].domain} had finished (the domain "
                    "runs from its standby); kept it")
                done.append(f"[{runner.host}] kept the finished promote of "
                            f"{promote[0].domain} (run {promote[0].run_id})")
                continue
            try:  # a classic rollback's merges go forward once one has begun
                settled = settle_merges(runner, accepted, log)
            except ToolkitError as exc:
                errors.append(f"{path}: {exc}; not undone (run `domu-backup recover` again)")
                continue
            accepted = settled.rest
            done += settled.done
        walk = unwind(runner, accepted, timeout=RECOVER_UNDO_TIMEOUT,
                      handlers={HOOK_UNDO: lambda e: _owed_hook(runner, config, e, log),
                                THAW_UNDO: lambda e: _owed_thaw(runner, config, e, log)})
        errors += [f"{e.action} {e.resource}: {why}" for e, why in walk.failed]
        for e in walk.removed:
            msg = f"[{runner.host}] removed {e.action} {e.resource} (run {e.run_id})"
            log(msg)
            done.append(msg)
        if walk.clean and not refused:
            runner.run(["rm", "-f", "--", path], timeout=60)
    return done


# What a run's journal may ask recover to run: the undo and exists-probe programs the plan
# writes, and nothing else, whatever the file says.
UNDO_PROGRAMS = frozenset({"umount", "rmdir", "rm", "dmsetup", "kpartx", "lvremove"})
PROBE_PROGRAMS = frozenset({"findmnt", "find", "dmsetup", "lvs"})


PROMOTE_ACTIONS = frozenset({"promote-marker", "promote-define", "promote-start",
                             *ROLLBACK_ACTIONS})


def _unexpected_undo(undo: tuple[str, ...], exists: tuple[str, ...], *,
                     state_dir: str | None = None, uri: str | None = None,
                     domain: str | None = None) -> str:
    """Why a journal entry's commands are not ones a run writes ("" when they are). With
    ``state_dir``, ``uri`` and ``domain`` (the entry's), a promote's undo must name exactly
    those: the kept marker in that state directory, the config's hypervisor, the domain."""
    if undo[:1] in ((HOOK_UNDO,), (THAW_UNDO,)):
        # the flag must be in this state directory's journal directory (R20)
        if is_flag_undo(undo, exists, state_dir):
            return ""
        return f"a {undo[0]} entry of another shape"
    if undo[:1] == ("virsh",) or exists[:1] == ("virsh",):
        # promote's: only these shapes (virsh -c URI VERB -- NAME), nothing else of virsh
        if not (_virsh_shape(undo, ("undefine", "destroy"), uri, domain)
                and _virsh_shape(exists, ("domstate",), uri, domain)):
            return "a virsh command that is not promote's undo or probe"
        return ""
    if undo[:1] in (("lvrename",), ("lvchange",), ("lvconvert",)):
        return rollback_undo_problem(undo, exists, domain)  # promote --at's, nothing else
    if undo[:1] == ("mv",):
        # promote's: the kept marker back in place, beside it, nothing else
        markers = posixpath.join(state_dir, "standby") if state_dir else None
        if not (len(undo) == 5 and undo[1:3] == ("-f", "--")
                and undo[3] == undo[4] + ".before-promote" and undo[4].endswith(".json")
                and "/standby/" in undo[4] and ".." not in undo[4]
                and (markers is None or posixpath.dirname(undo[4]) == markers)
                and (domain is None or posixpath.basename(undo[4]) == f"{domain}.json")
                and exists == ("find", undo[3], "-maxdepth", "0")):
            return "a mv that is not promote's return of the kept marker"
        return ""
    if not undo or undo[0] not in UNDO_PROGRAMS:
        return f"undo {undo[:1]} is not one of the tool's undo commands"
    if exists and exists[0] not in PROBE_PROGRAMS:
        return f"probe {exists[:1]} is not one of the tool's exists-probes"
    return ""


def _owed_hook(runner: Runner, config: Config | None, entry, log: Callable[[str], None]
               ) -> bool:
    """A killed run's pending post_snapshot: the hook the config names for its domain now
    (never a program read from the journal), then its flag removed."""
    hooks = (config.domain(entry.domain).effective_hooks(config.defaults)
             if config is not None and entry.domain in config.domains else None)
    line = owe_post_snapshot(runner, entry.undo[2], hooks.post_snapshot if hooks else (),
                             entry.domain, entry.run_id, hooks.timeout if hooks else 60.0)
    if line is None:
        return False
    log(f"[{runner.host}] {line} (run {entry.run_id}, by recover)")
    return True


def _owed_thaw(runner: Runner, config: Config | None, entry, log: Callable[[str], None]
               ) -> bool:
    """A killed run's guest left frozen: thawed through the config's hypervisor URI (never
    one read from the journal), then its flag removed."""
    if config is None:
        raise ToolkitError("a pending thaw needs the config's hypervisor URI")
    line = owe_thaw(runner, entry.undo[2], config.hypervisor_uri, entry.domain,
                    RECOVER_UNDO_TIMEOUT)
    if line is None:
        return False
    log(f"[{runner.host}] thawed {entry.domain}: {line} (run {entry.run_id}, by recover)")
    return True


def _virsh_shape(argv: tuple[str, ...], verbs: tuple[str, ...], uri: str | None = None,
                 domain: str | None = None) -> bool:
    return (len(argv) == 6 and argv[:2] == ("virsh", "-c") and not argv[2].startswith("-")
            and argv[3] in verbs and argv[4] == "--"
            and (uri is None or argv[2] == uri) and (domain is None or argv[5] == domain))


def _promote_left(runner: Runner, entries: list) -> tuple[bool, list]:
    """A killed promote's journal (its entries already judged): (True, []) when the domain
    runs (the promote finished: nothing is undone); else (False, what to undo): the define
    and the marker, never a start (the domain does not run)."""
    start = [e for e in entries if e.action == "promote-start"]
    probe = next((e.exists for e in entries if e.action in ("promote-start", "promote-define")),
                 None)
    if start and probe is not None:
        res = runner.run(probe, check=False, timeout=60)
        if res.exit_code == 0 and parse_domstate(res.stdout) in ACTIVE_STATES:
            return True, []
    return False, [e for e in entries if e.action != "promote-start"]



# The inventory's probes fail loudly (CommandFailed, naming the host and the command): a
# host whose maps, VGs, mounts or LVs cannot be listed is not a host with none of them.

DM_NAMES_ARGV = ("dmsetup", "info", "-c", "--noheadings", "-o", "name")
VGS_ARGV = ("vgs", "--noheadings", "-o", "vg_name")
TAGGED_ARGV = ("lvs", "--noheadings", "-o", "vg_name,lv_name", "-S", f"lv_tags={PREFIX}")


def _checked(res: CommandResult) -> CommandResult:
    if res.exit_code != 0:
        raise CommandFailed(res)
    return res


def _dm_names_from(res: CommandResult) -> list[str]:
    if _checked(res).stdout.strip() == "No devices found":
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def _dm_names(runner: Runner) -> list[str]:
    return _dm_names_from(runner.run(DM_NAMES_ARGV, timeout=60))


def _vgs_from(res: CommandResult) -> list[str]:
    return [line.strip() for line in _checked(res).stdout.splitlines() if line.strip()]


def _local_vgs(runner: Runner) -> list[str]:
    return _vgs_from(runner.run(VGS_ARGV, timeout=60))


def owned_maps(names: list[str], role: str, domain: str | None, vgs: list[str],
               delimiter: str) -> list[str]:
    """The device-mapper maps a run of ``domain`` makes on a host in ``role``, deepest first.

    On the peer: the alias ``domubk-<run>-<domain>-<disk>``, its partition maps
    and the guest LV maps ``domubk-<run>-<domain>-dst-<fs>``. On the source:
    kpartx maps of our snapshots in this host's VGs and the guest LV maps
    ``domubk-<run>-<domain>-src-<fs>``. Never LVM's own devices (the snapshot,
    its -cow and -real): lvremove owns those. Each name is parsed in full for
    the exact domain (R21).
    """
    picked: list[str] = []
    for name in names:
        owned = parse_owned(name, domain, delimiter)
        if role == "peer":
            if owned is not None and owned.role != "src":
                picked.append(name)
        elif owned is not None:
            if owned.role == "src":
                picked.append(name)
        elif snapshot_partition_map(name, vgs, domain, delimiter):
            picked.append(name)
    # guest LV maps first, then partitions (longer names) before the device they sit on
    return sorted(picked, key=lambda n: (not _volume_map(n, delimiter), -len(n)))


def _volume_map(name: str, delimiter: str) -> bool:
    """``domubk-<run>-<domain>-src|dst-<fs>``: a guest LV map of either side."""
    owned = parse_owned(name, None, delimiter)
    return owned is not None and owned.role is not None


def _prefix(config: Config, role: str) -> str:
    defaults = config.defaults
    return defaults.source_prefix if role == "source" else defaults.peer_prefix


def _of_domain(paths: tuple[str, ...], domain: str) -> bool:
    """Some journal or run directory of exactly ``domain`` (``<domain>.<run>...``)."""
    return any(journal_of(p, domain) or run_dir_of(p.rsplit("/", 1)[-1], domain)
               for p in paths)


def _mount_targets(runner: Runner) -> list[str]:
    res = runner.run(findmnt_argv(), check=False, timeout=60)
    return [m.target for m in mounts_from_result(res)]


def owned_mounts(targets: list[str], prefix: str, domain: str | None) -> list[str]:
    """Mounts under the tool's prefix (of ``domain``'s runs), deepest first."""
    picked = [t for t in targets if under_run_dir(t, prefix, domain)]
    return sorted(picked, key=lambda p: p.count("/"), reverse=True)


def _tagged_from(res: CommandResult) -> list[tuple[str, str]]:
    pairs = [line.split() for line in _checked(res).stdout.splitlines()]
    return [(p[0], p[1]) for p in pairs if len(p) == 2]


def _tagged_lvs(runner: Runner) -> list[tuple[str, str]]:
    return _tagged_from(runner.run(TAGGED_ARGV, timeout=60))


def owned_snapshots(tagged: list[tuple[str, str]], domain: str | None) -> list[str]:
    """``vg/lv`` of snapshots carrying our tag AND our name: a look-alike is not ours."""
    return [f"{vg}/{lv}" for vg, lv in tagged if snapshot_lv(lv, domain)]


def _run_dirs_argv(prefix: str, domain: str | None) -> tuple[str, ...]:
    return ("find", prefix, "-mindepth", "1", "-maxdepth", "1", "-type", "d", "-name",
            f"{domain}.*" if domain else "*")


def _run_dirs_from(res: CommandResult, domain: str | None) -> list[str]:
    return [line for line in res.stdout.splitlines()
            if line.strip() and run_dir_of(line.rsplit("/", 1)[-1], domain)]


def _run_dirs(runner: Runner, prefix: str, domain: str | None) -> list[str]:
    return _run_dirs_from(runner.run(_run_dirs_argv(prefix, domain), check=False, timeout=60),
                          domain)


def sweep(runner: Runner, config: Config, domain: str | None, role: str,
          log: Callable[[str], None]) -> list[str]:
    """Remove owned leftovers that no journal names (belt and braces)."""
    defaults = config.defaults
    done: list[str] = []
    prefix = _prefix(config, role)
    for t in owned_mounts(_mount_targets(runner), prefix, domain):
        if _undo(runner, ("umount", t), mount_probe(t)):
            done.append(f"[{runner.host}] unmounted {t}")
    vgs = _local_vgs(runner) if role == "source" else []
    for name in owned_maps(_dm_names(runner), role, domain, vgs, defaults.kpartx_delimiter):
        if _undo(runner, ("dmsetup", "remove", "--retry", name),
                 ("dmsetup", "info", "-c", "--noheadings", "-o", "name", name)):
            done.append(f"[{runner.host}] removed map {name}")
    if role == "source":
        for lv in owned_snapshots(_tagged_lvs(runner), domain):
            if _undo(runner, ("lvremove", "--force", "--yes", lv),
                     ("lvs", "--noheadings", "-o", "lv_name", lv)):
                done.append(f"[{runner.host}] removed snapshot {lv}")
    # Run directories under our prefix: rmdir only ever removes empty ones.
    for run_dir in _run_dirs(runner, prefix, domain):
        sub = runner.run(["find", run_dir, "-mindepth", "1", "-maxdepth", "1", "-type", "d"],
                         check=False, timeout=60)
        for path in sub.stdout.splitlines():
            runner.run(["rmdir", "--", path], check=False, timeout=60)
        if runner.run(["rmdir", "--", run_dir], check=False, timeout=60).exit_code == 0:
            done.append(f"[{runner.host}] removed directory {run_dir}")
    for msg in done:
        log(msg)
    return done


def owned_processes(ps_output: str, prefixes: tuple[str, ...], domain: str | None,
                    own_pid: int | None = None, delimiter: str = "p"
                    ) -> list[tuple[int, str]]:
    """(pid, command line) of processes working in a run directory or on a device of a run
    of ``domain``.

    ``ps_output`` is ``ps -eo pid=,args=``. A process is a run's when one of its
    arguments lies in ``<prefix>/<domain>.<run id>`` (an rsync reading the snapshot, its
    ssh, the rsync server writing the standby) or names a device the run made (a ``dd``
    copying the boot area: ``if=``/``of=`` a snapshot, an alias or one of their partition
    maps), each parsed exactly.
    """
    picked: list[tuple[int, str]] = []
    for line in ps_output.splitlines():
        pid_text, _, args = line.strip().partition(" ")
        if not pid_text.isdigit() or int(pid_text) == own_pid:
            continue
        for token in args.split():
            path = token.split(":", 1)[-1]  # user@host:/path as rsync and ssh write it
            if any(under_run_dir(path.rstrip("/"), p, domain) for p in prefixes) or \
                    owned_device(token.partition("=")[2] if token.startswith(("if=", "of="))
                                 else token, domain, delimiter):
                picked.append((int(pid_text), args))
                break
    return picked


_DM_VG_LV = re.compile(r"((?:[^-]|--)+)-((?:[^-]|--)+)")


def owned_device(path: str, domain: str | None, delimiter: str) -> bool:
    """A device node a run of ``domain`` made: ``/dev/<vg>/<snapshot>``, or below
    ``/dev/mapper`` an alias, a guest LV map, a partition map of either, or the ``vg-lv``
    map of a snapshot or of its partitions. Nothing else, and no path with ``..`` in it."""
    if not path.startswith("/dev/") or posixpath.normpath(path) != path:
        return False
    parent, name = posixpath.split(path)
    names = [name]
    if parent == "/dev/mapper":
        m = _DM_VG_LV.fullmatch(name)
        if m:
            names.append(m.group(2).replace("--", "-"))
    elif parent.count("/") != 2:
        return False
    return any(parse_owned(n, domain, delimiter) is not None for n in names)


def stop_processes(runner: Runner, config: Config, domain: str | None,
                   log: Callable[[str], None]) -> list[str]:
    """Stop what a killed run of ``domain`` left running on a host: TERM, then KILL.

    A ``ps`` that fails is an error (``CommandFailed``), never "nothing running": a copy
    left running would hold the mounts the rest of recover must undo.
    """
    defaults = config.defaults
    prefixes = (defaults.source_prefix, defaults.peer_prefix)
    res = runner.run(["ps", "-eo", "pid=,args="], timeout=60)
    found = owned_processes(res.stdout, prefixes, domain, delimiter=defaults.kpartx_delimiter)
    if not found:
        return []
    pids = [str(pid) for pid, _ in found]
    runner.run(["kill", "-TERM", "--", *pids], check=False, timeout=30)
    for _ in range(10):
        left = runner.run(["ps", "-o", "pid=", "-p", ",".join(pids)], check=False, timeout=30)
        pids = [p for p in left.stdout.split() if p.isdigit()]
        if not pids:
            break
        time.sleep(0.5)
    if pids:
        runner.run(["kill", "-KILL", "--", *pids], check=False, timeout=30)
    done = [f"[{runner.host}] stopped process {pid} ({args[:120]})" for pid, args in found]
    for msg in done:
        log(msg)
    return done


@dataclass(frozen=True)
class Inventory:
    """What the tool may own on one host in one role, read once for every domain.

    ``pending`` uses the sweep's own filters, so a domain it calls clean has nothing
    the sweep or its journals would remove there; recover then skips it on that host.
    """

    role: str
    journals: tuple[str, ...]
    mounts: tuple[str, ...]
    maps: tuple[str, ...]
    vgs: tuple[str, ...]
    snapshots: tuple[tuple[str, str], ...]
    run_dirs: tuple[str, ...]

    def pending(self, config: Config, domain: str) -> bool:
        """Whether this host holds anything of ``domain`` that recover would remove."""
        defaults = config.defaults
        return bool(
            _of_domain(self.journals, domain)
            or owned_mounts(list(self.mounts), _prefix(config, self.role), domain)
            or owned_maps(list(self.maps), self.role, domain, list(self.vgs),
                          defaults.kpartx_delimiter)
            or (self.role == "source" and owned_snapshots(list(self.snapshots), domain))
            or _of_domain(self.run_dirs, domain))


def take_inventory(runner: Runner, config: Config, role: str, *,
                   proven: bool = False) -> Inventory:
    """One look at a host: journals, mounts, maps, tagged LVs and run directories, all
    read in one command (one round trip to a peer). With ``proven``, the state directory
    whose journals recover obeys is proven first, in the same command (R22): an unsafe
    one raises before anything read is used."""
    state_dir = config.defaults.state_dir
    prefix = _prefix(config, role)
    source = role == "source"
    argvs = [journals_argv(state_dir), findmnt_argv(), DM_NAMES_ARGV,
             *((VGS_ARGV, TAGGED_ARGV) if source else ()), _run_dirs_argv(prefix, None)]
    if proven:
        argvs.insert(0, tuple(state_dir_argv(state_dir)))
    read = run_reads(runner, argvs, timeout=60)
    if proven:
        state_dir_from(read.pop(0), state_dir, runner.host)
    journals, mounts, maps = read[0], read[1], read[2]
    vgs, tagged = (read[3], read[4]) if source else (None, None)
    return Inventory(
        role, tuple(journals_from(journals)),
        tuple(m.target for m in mounts_from_result(mounts)
              if m.target.startswith(prefix.rstrip("/") + "/")),
        tuple(_dm_names_from(maps)), tuple(_vgs_from(vgs) if vgs else ()),
        tuple(_tagged_from(tagged) if tagged else ()), tuple(_run_dirs_from(read[-1], None)))


def take_inventories(config: Config, source: Runner, peer: Runner, *,
                     proven: bool = False) -> dict[str, Inventory]:
    """One domain's run: the inventory of its source and of its peer, taken side by side.

    recover then skips a host where the domain has nothing. A host that cannot be
    looked at is left out, so recover goes through it in full (and reports why it
    cannot). With ``proven``, each host's state directory, whose journals recover
    obeys, is proven first (R22), on both hosts side by side: an unsafe one on either
    raises, after both ended, before anything is recovered.
    """
    def look(runner: Runner, role: str) -> Inventory | None:
        try:
            return take_inventory(runner, config, role, proven=proven)
        except InsecureFile:
            raise  # an unsafe state directory stops the run
        except ToolkitError:
            if proven:
                raise  # nothing was proven of that host
            return None

    on_peer = Background(lambda: look(peer, "peer"), "inventory-peer")
    try:
        here = look(source, "source")
    finally:
        on_peer.wait()
    there = on_peer.result()
    return {role: inv for role, inv in (("source", here), ("peer", there))
            if isinstance(inv, Inventory)}


def recover_domain(config: Config, domain: str | None, source: Runner, peer: Runner | None,
                   *, log: Callable[[str], None] = lambda m: None,
                   hosts: str = "both",
                   inventories: Mapping[str, Inventory] | None = None) -> list[str]:
    """Undo what killed runs of ``domain`` left on the chosen hosts; returns what was done.

    With ``inventories`` (role -> what that host held a moment ago), a host on which the
    domain has nothing is skipped.
    """
    done: list[str] = []
    order: list[tuple[Runner, str]] = []
    # The peer's copy is written from the source's snapshot: unmount and unmap
    # the peer first, then the source.
    if hosts in ("peer", "both") and peer is not None:
        order.append((peer, "peer"))
    if hosts in ("local", "source", "both"):
        order.append((source, "source"))
    errors: list[str] = []
    for runner, role in order:
        inv = (inventories or {}).get(role)
        if inv is not None and domain is not None and not inv.pending(config, domain):
            continue
        try:
            # recover runs, as root, what a journal says: only from a state directory
            # nobody else can write in (R22); an unsafe one stops recover (exit 6).
            check_state_dir(runner, config.defaults.state_dir)
            # Journals first (exact), then the prefix sweep (what no journal
            # names, e.g. maps left by an older version), then the journals
            # again for what the sweep unblocked (a snapshot held by its maps).
            first: list[str] = []
            # A copy a killed run left running holds its mounts busy: stop it first.
            # If the processes cannot be listed, recover still undoes what it can,
            # and ends incomplete, naming why.
            try:
                done += stop_processes(runner, config, domain, log)
            except ToolkitError as exc:
                errors.append(f"[{runner.host}] could not list its processes: {exc}")
            done += recover_journals(runner, config.defaults.state_dir, domain, log, first,
                                     config)
            done += sweep(runner, config, domain, role, log)
            if first:
                done += recover_journals(runner, config.defaults.state_dir, domain, log,
                                         errors, config)
        except InsecureFile:
            raise
        except ToolkitError as exc:
            errors.append(str(exc))
    if errors:
        from .errors import TeardownIncomplete

        raise TeardownIncomplete("recover could not finish: " + "; ".join(errors))
    return done
