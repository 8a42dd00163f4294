"""Where each filesystem sits in the guest, read from the guest's own /etc/fstab.

The fstab is read from the mounted snapshot, never following a guest symlink out of it
(R5), and resolved against what the run found on the guest's disks; the config's
``mounts`` override it filesystem by filesystem.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Config
from .errors import FstabError
from .facts.blkid import FilesystemProbe
from .facts.fstab import GuestFilesystem, guest_position, parse_fstab, resolve_fstab
from .plan import FilesystemPlan, Plan, guest_file_argvs, guest_fstab_path
from .runners import Runner


def guest_paths(plan: Plan, config: Config, source: Runner,
                log: Callable[[str], None]) -> dict[str, str]:
    """Filesystem name -> its path in the guest; FstabError when no fstab is found and the
    config does not name every filesystem."""
    fss = plan.filesystems
    overrides = config.domain(plan.domain).mounts
    if all(f.name in overrides for f in fss):
        return dict(overrides)
    texts: list[tuple[FilesystemPlan, str]] = []
    for f in fss:
        text = read_guest_file(source, f, guest_fstab_path(f), plan.source_host)
        if text is not None:
            texts.append((f, text))
    if not texts:
        found = ", ".join(f"{f.name} ({f.fstype} UUID={f.uuid} label={f.label})" for f in fss)
        raise FstabError(f"no /etc/fstab found on any filesystem of {plan.domain} "
                         f"(found: {found}); set [domains.{plan.domain}.mounts] in the "
                         "config", host=plan.source_host)
    root_fs, text = texts[0]
    entries, _ignored = parse_fstab(text)
    guest = [GuestFilesystem(f.name, f.disk, *guest_position(f.disk, f.partition),
                             probe=probe_of(f),
                             volume=(f.guest_vg, f.guest_lv) if f.guest_vg and f.guest_lv
                             else None)
             for f in fss]
    paths = dict(resolve_fstab(entries, guest, overrides))
    if root_fs.name not in paths:
        paths[root_fs.name] = "/"
    log("guest paths: " + ", ".join(f"{k}={v}" for k, v in paths.items()))
    return paths


def read_guest_file(source: Runner, f: FilesystemPlan, path: str, host: str) -> str | None:
    """A file of the mounted guest filesystem; None when it is not there.

    R5: a guest symlink (etc -> /, fstab -> /etc/shadow on the host) must not make us
    read a host file: the canonical path must equal the path.
    """
    canonical, lenient, cat = guest_file_argvs(path)
    res = source.run(canonical, check=False, timeout=30)
    if res.exit_code != 0:
        # Missing, or a guest symlink to something this host lacks (etc -> /):
        # only a path free of symlinks is "no fstab here".
        res = source.run(lenient, check=False, timeout=30)
        if res.exit_code != 0 or res.stdout.strip() == path:
            return None
    if res.stdout.strip() != path:
        raise FstabError(f"{path} on {f.name} is a symlink (to {res.stdout.strip()!r}); "
                         "refusing to follow guest symlinks", host=host)
    return source.run(cat, timeout=30).stdout


def probe_of(f: FilesystemPlan) -> FilesystemProbe:
    """What blkid said of a planned filesystem, as the fstab resolver matches it."""
    return FilesystemProbe(type=f.fstype, uuid=f.uuid, label=f.label, usage="filesystem",
                           partuuid=f.partuuid, version=None)
