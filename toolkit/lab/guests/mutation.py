"""Changing a guest's files between two backups, as a running guest would."""

from __future__ import annotations

from dataclasses import dataclass

from ...runners import Runner
from .build import _check_abs, _timeout
from .recipes import DEFAULT_EPOCH
from .ship import _run_program

# --------------------------------------------------------------------------- mutate


@dataclass(frozen=True)
class MutationSummary:
    """What ``mutate`` changed in a guest tree, as counts."""

    added: int
    modified: int
    deleted: int
    renamed_dirs: int
    mode_changes: int
    owner_changes: int
    links_added: int
    links_removed: int
    xattrs_changed: int


def mutate(runner: Runner, mountpoint: str, seed: int, *, python: str = "python3",
           epoch: int = DEFAULT_EPOCH) -> MutationSummary:
    """Change a guest tree for an incremental run and report what was changed.

    Adds, modifies (content and size), deletes files; renames a directory; changes modes
    and owners; adds and removes a hard link; changes an xattr. Stays on the filesystem of
    ``mountpoint``, leaves ``/etc`` and top-level directories alone (the guest must still
    boot), and is deterministic for a given tree and seed.
    """
    _check_abs(mountpoint, "mountpoint")
    out = _run_program(runner, {"op": "mutate", "root": mountpoint, "seed": seed,
                                "epoch": epoch}, python, timeout=_timeout(1))
    return MutationSummary(**out)


