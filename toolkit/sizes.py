"""Sizes as the tool and LVM write them: a whole number and a binary unit ("2G", "512M")."""

from __future__ import annotations

import re

# The config's form: a whole number and a unit, as lvcreate -L and lvextend -L take it.
ABSOLUTE = re.compile(r"([1-9][0-9]*)([KMGT])")
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_ANY = re.compile(r"([0-9]+)([KMGT]?)(?:I?B)?", re.IGNORECASE)


def size_bytes(text: str) -> int:
    """The bytes of a positive size: a whole number, a binary unit K, M, G or T in either
    case (none: bytes), optionally "iB" or "B" after it ("2G", "512KiB", "64mb");
    ValueError quoting the text otherwise."""
    match = _ANY.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a size such as 256M")
    return int(match.group(1)) * UNITS[match.group(2).upper()]
