"""Which rsync options the config's rsync_args may carry, and why each is harmless.

A base module: the config checks rsync_args against this policy when it loads,
and ``rsync.rsync_argv`` checks it again before it builds a command, so it
imports nothing from the tool and sits below both.
"""

from __future__ import annotations

import re
from collections.abc import Callable


# Extra rsync options the config may add (rsync_args), and why each is harmless
# here: none changes the remote shell, the deletion bound or mode, what is read
# or written on either host outside the two trees, or what the guards prove. A
# valued option is written NAME=VALUE and its value is checked; short options
# only alone (no bundles). Everything else is refused: see
# "rsync options allowed in rsync_args" in the README.
def _int_between(low: int, high: int) -> Callable[[str], bool]:
    return lambda v: bool(re.fullmatch(r"0|[1-9][0-9]{0,9}", v)) and low <= int(v) <= high


def _one_of(*names: str) -> Callable[[str], bool]:
    return lambda v: v in names


EXTRA_OPTIONS: dict[str, tuple[Callable[[str], bool] | None, str]] = {
    "--partial": (None, "keeps a partly sent file in the standby for the next run"),
    "--checksum": (None, "compares files by checksum instead of size and time: more reading, "
                   "the same copy"),
    "-c": (None, "the short form of --checksum"),
    "--ignore-times": (None, "sends every file's delta even when size and time match"),
    "--whole-file": (None, "sends whole files instead of deltas (fast links)"),
    "-W": (None, "the short form of --whole-file"),
    "--no-whole-file": (None, "always uses the delta algorithm"),
    "--inplace": (None, "updates standby files in place (the standby is marked dirty until "
                  "the run succeeds anyway)"),
    "--fuzzy": (None, "looks for a similar file in the same standby directory as the basis"),
    "--preallocate": (None, "allocates each standby file before writing it"),
    "--no-inc-recursive": (None, "builds the whole file list first (more memory, exact "
                           "progress)"),
    "--timeout=": (_int_between(1, 86400), "I/O timeout in seconds, 1-86400 (never 0 = none)"),
    "--block-size=": (_int_between(1, 131072), "delta block size in bytes, 1-131072"),
    "--compress-level=": (_int_between(0, 9), "compression level, 0-9"),
    "--compress-choice=": (_one_of("zstd", "lz4", "zlibx", "zlib"),
                           "compression algorithm: zstd, lz4, zlibx or zlib"),
    "--checksum-choice=": (_one_of("auto", "xxh128", "xxh3", "xxh64", "md5", "md4", "sha1"),
                           "checksum algorithm (never none): auto, xxh128, xxh3, xxh64, md5, "
                           "md4 or sha1"),
}

# Why some options people reach for are refused (a longer list is in the README).
_REFUSED_WHY = {
    "-e": "it replaces the tool's ssh (strict host keys)",
    "--rsh": "it replaces the tool's ssh (strict host keys)",
    "--rsync-path": "it runs another program on the peer",
    "--max-delete": "the deletion bound is max_delete (and --allow-mass-delete)",
    "--dry-run": "a run that copied nothing would report success",
    "-n": "a run that copied nothing would report success",
    "--log-file": "it writes a file of its choosing as root",
    "--remove-source-files": "it removes files from the source",
    "--files-from": "it reads a file list from the host",
    "--exclude-from": "it reads patterns from a host file; use excludes",
    "--filter": "filter rules can read merge files from the host; use excludes",
    "--bwlimit": "use the bwlimit key",
}


def extra_option_problem(option: str) -> str | None:
    """None if ``option`` may be added to rsync's argv, else why it may not."""
    if not isinstance(option, str) or not option.startswith("-") or option in ("-", "--"):
        return "not an rsync option (a bare word would become a source or destination)"
    name, eq, value = option.partition("=")
    if option in EXTRA_OPTIONS and EXTRA_OPTIONS[option][0] is None:
        return None
    if eq and name + "=" in EXTRA_OPTIONS:
        check, reason = EXTRA_OPTIONS[name + "="]
        if check is not None and check(value):
            return None
        return f"bad value for {name}= ({reason})"
    if not eq and name + "=" in EXTRA_OPTIONS:
        return f"{name} needs a value written {name}=VALUE"
    key = name if name.startswith("--") else name[:2]
    why = _REFUSED_WHY.get(key)
    if why is None and not name.startswith("--") and len(name) > 2:
        why = "short options are allowed only one at a time"
    allowed = ", ".join(EXTRA_OPTIONS)
    return f"not allowed{': ' + why if why else ''} (allowed: {allowed})"
