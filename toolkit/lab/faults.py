"""Faults the end-to-end tests deliver from outside a run: signals sent by another process,
commands made slow so a signal lands while they run, configs that slow the copy down.

Everything here acts on the fake Dom0s through separate ``docker exec`` calls, as an operator,
a dying session or the kernel would, never from inside the tool.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..recover import owned_processes
from .rehearse import Lab

PREFIXES = ("/run/domu-backup/src", "/run/domu-backup/dst")
CONFIG = "/etc/domu-backup/backup.toml"


def wait_for(what: str, check: Callable[[], bool], timeout: float = 600.0) -> float:
    """Poll ``check`` until it holds; the monotonic time it first did. AssertionError if never."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def tool_processes(runner, domain: str = "web01") -> list[str]:
    """The tool's processes on a host: the program itself (any command) and anything working
    in one of ``domain``'s run directories (rsync, its ssh, the rsync server)."""
    out = runner.run(["ps", "-eo", "pid=,args="], timeout=60).stdout
    mine = [args for _, args in owned_processes(out, PREFIXES, domain)]
    return mine + [ln.strip() for ln in out.splitlines()
                   if "domu-backup " in ln and "ps -eo" not in ln]


def signal_from_outside(lab: Lab, signal: str, domain: str = "web01",
                        container: str = "dom0-a") -> None:
    """Send ``signal`` (a name: INT, HUP, TERM, KILL) to the domain's running backup, from
    another process of the host."""
    lab.runner(container).run(["pkill", f"-{signal}", "-f",
                               f"domu-backup backup --domu {domain}( |$)"],
                              timeout=60)


def install_slow(lab: Lab, container: str, command: str, flag: str,
                 seconds: float) -> Callable[[], None]:
    """Put a ``command`` in /usr/local/sbin (first on the tool's PATH) that touches ``flag``,
    sleeps, then runs the real one; returns the undo, which also ends a sleeping wrapper."""
    r = lab.runner(container)
    real = r.run(["sh", "-c", f"PATH=/usr/sbin:/usr/bin command -v {command}"],
                 timeout=60).stdout.strip()
    assert real.startswith("/usr/"), real
    path = f"/usr/local/sbin/{command}"
    r.run(["sh", "-c", f"cat > {path} && chmod 0755 {path}"], timeout=60,
          input=f'#!/bin/sh\ntouch {flag}\nsleep {seconds:g}\nexec {real} "$@"\n')

    def undo() -> None:
        r.run(["rm", "-f", path, flag], timeout=60)
        r.run(["pkill", "-KILL", "-f", path], check=False, timeout=60)

    return undo


def flag_set(lab: Lab, container: str, flag: str) -> bool:
    """Whether ``flag`` exists in ``container`` (a wrapper of ``install_slow`` has started)."""
    return lab.runner(container).run(["test", "-e", flag], check=False,
                                     timeout=60).exit_code == 0


def slow_copy_config(lab: Lab, path: str, bwlimit: str = "100",
                     container: str = "dom0-a") -> None:
    """The sandbox config with rsync's bandwidth limited, at ``path`` (root-only)."""
    r = lab.runner(container)
    text = r.run(["cat", CONFIG], timeout=60).stdout
    assert "[defaults]\n" in text
    r.run(["sh", "-c", f"umask 077 && cat > {path}"], timeout=60,
          input=text.replace("[defaults]\n", f'[defaults]\nbwlimit = "{bwlimit}"\n', 1))


def tree_digest(lab: Lab, container: str, lv: str) -> dict[str, str]:
    """Every entry of every filesystem on ``lv``, mounted read-only for the look: path ->
    its type and, for a file, its size and SHA-256 (a symlink: its target)."""
    from .audit import mounted

    r = lab.runner(container)
    found: dict[str, str] = {}
    with mounted(r, lv, "/run/domubk-lab-digest", "d") as filesystems:
        for number, (mnt, _fstype) in sorted(filesystems.items()):
            listing = r.run(["sh", "-c", f"cd {mnt} && find . -xdev -printf '%y %s %p\\t%l\\n'"],
                            timeout=600).stdout
            sums = r.run(["sh", "-c", f"cd {mnt} && find . -xdev -type f -print0 | "
                                      "xargs -0 -r sha256sum"], timeout=1800).stdout
            digest = {line[66:]: line[:64] for line in sums.splitlines() if line}
            for line in listing.splitlines():
                head, _, target = line.partition("\t")
                kind, size, path = head.split(" ", 2)
                value = f"{kind} {size} {digest.get(path, '')}" if kind == "f" else kind
                found[f"{number}:{path}"] = value + (f" -> {target}" if kind == "l" else "")
    return found
