"""Filesystem facts from a low-level, cache-free `blkid -p -o export` probe."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CommandFailed, ParseError
from ..names import check_label
from ..runners import CommandResult

_KEY = re.compile(r"[A-Z][A-Z0-9_]*")
# blkid's exit codes (misc-utils/blkid.c)
EXIT_NOTFOUND = 2
EXIT_AMBIVALENT = 8


@dataclass(frozen=True)
class FilesystemProbe:
    """What blkid found on a device or byte range; all None when it found nothing."""

    type: str | None
    uuid: str | None
    label: str | None
    usage: str | None
    partuuid: str | None
    version: str | None
    pttype: str | None = None
    ptuuid: str | None = None

    @property
    def found(self) -> bool:
        """Whether blkid recognised anything: a filesystem, a PV, or a partition table."""
        return self.type is not None or self.pttype is not None


NOTHING = FilesystemProbe(None, None, None, None, None, None)


def blkid_argv(device: str, offset: int | None = None, size: int | None = None) -> list[str]:
    """A low-level probe of device, or of ``size`` bytes at byte ``offset`` inside it."""
    if not device:
        raise ValueError("empty device path")
    argv = ["blkid", "-p", "-o", "export"]
    for flag, value in (("-O", offset), ("-S", size)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"blkid {flag} needs a non-negative integer, got {value!r}")
            argv += [flag, str(value)]
    return [*argv, "--", device]


def _unit(value: str, i: int) -> tuple[int, int]:
    """Decode one printed character of blkid's safe_print at value[i]: (byte, next index)."""
    ch = value[i]
    if ch == "\\":
        if i + 1 >= len(value):
            raise ParseError(f"blkid: value ends in a lone backslash: {value!r}")
        return ord(value[i + 1]), i + 2
    if ch == "^" and i + 1 < len(value) and (value[i + 1] == "?" or "@" <= value[i + 1] <= "_"):
        return ord(value[i + 1]) ^ 0x40, i + 2
    return ord(ch), i + 1


def _options(value: str, i: int) -> list[tuple[bytes, int]]:
    """The ways blkid's printing at value[i] can be read: (bytes, next index), likeliest first.

    "M-^" is ambiguous: "M-" plus a control character ("M-^M" is byte 0x8D), or byte 0xDE
    ("M-" plus a literal "^", which blkid does not escape) followed by more text.
    """
    if value.startswith("M-", i) and i + 2 < len(value) and ord(value[i + 2]) < 128:
        code, j = _unit(value, i + 2)
        out = [(bytes([code + 128]), j)]
        if value[i + 2] == "^" and j != i + 3:
            out.append((bytes([0xDE]), i + 3))
        return out
    code, j = _unit(value, i)
    return [(bytes([code]) if code < 128 else chr(code).encode("utf-8", "surrogateescape"), j)]


def _utf8_step(need: int, data: bytes) -> int | None:
    """The continuation bytes still expected after ``data``; None if it cannot be UTF-8."""
    for byte in data:
        if need:
            if not 0x80 <= byte <= 0xBF:
                return None
            need -= 1
        elif byte < 0x80:
            continue
        elif 0xC2 <= byte <= 0xDF:
            need = 1
        elif 0xE0 <= byte <= 0xEF:
            need = 2
        elif 0xF0 <= byte <= 0xF4:
            need = 3
        else:
            return None
    return need


def unescape_export(value: str) -> str:
    """Undo blkid's export escaping: "\\x" for shell characters, "^X" and "M-" for bytes.

    blkid writes a non-ASCII byte as "M-" plus the byte less 128, and does not
    escape a literal "M-" or "^". Where that leaves more than one reading, the one
    that is UTF-8 is taken (found in one pass from the end, so a hostile label cannot
    make it slow); a value with no UTF-8 reading is taken to be literal text and
    returned with only backslashes undone.
    """
    n = len(value)
    # The positions some reading reaches, from the start, each parsed once. A lone
    # backslash ends that reading; it is an error only if no other reading is left.
    choices: dict[int, list[tuple[bytes, int]]] = {}
    broken: ParseError | None = None  # a reading that ends in a lone backslash
    todo = [0]
    while todo:
        i = todo.pop()
        if i < n and i not in choices:
            try:
                choices[i] = _options(value, i)
            except ParseError as exc:
                choices[i], broken = [], exc
            todo += [j for _, j in choices[i]]
    # ok[(i, need)]: from position i, expecting ``need`` continuation bytes, the rest of
    # the value has a reading that ends on a whole character.
    ok = {(n, 0)}
    for i in sorted(choices, reverse=True):
        for need in range(4):
            if any((j, _utf8_step(need, data)) in ok for data, j in choices[i]):
                ok.add((i, need))
    if (0, 0) not in ok and n:
        if broken is not None:
            raise broken
        return re.sub(r"\\(.)", r"\1", value)
    out = bytearray()
    i, need = 0, 0
    while i < n:
        for data, j in choices[i]:
            after = _utf8_step(need, data)
            if after is not None and (j, after) in ok:
                out += data
                i, need = j, after
                break
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:  # an overlong or surrogate form: not blkid's encoding
        return re.sub(r"\\(.)", r"\1", value)


def parse_blkid_export(text: str) -> FilesystemProbe:
    """The probe in `blkid -p -o export` output of one device."""
    if not text.strip():
        raise ParseError("blkid: empty output (a probe that found nothing exits 2; "
                         "use probe_from_result)")
    lines = text.rstrip("\n").split("\n")
    values: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line:
            raise ParseError("blkid: output holds more than one device")
        key, sep, raw = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise ParseError(f"blkid: line {n} is not KEY=value: {line[:120]!r}")
        if key in values:
            raise ParseError(f"blkid: key {key} appears twice")
        values[key] = unescape_export(raw)
    if "TYPE" not in values and "PTTYPE" not in values:
        raise ParseError(f"blkid: output names neither TYPE nor PTTYPE: {sorted(values)}")
    partuuid = values.get("PARTUUID") or values.get("PART_ENTRY_UUID")
    # Guest data: a label is one line, as long as its filesystem allows (R20).
    check_label(values.get("LABEL"), values.get("TYPE"), "blkid")
    return FilesystemProbe(
        type=values.get("TYPE"),
        uuid=values.get("UUID"),
        label=values.get("LABEL"),
        usage=values.get("USAGE"),
        partuuid=partuuid.lower() if partuuid else None,
        version=values.get("VERSION"),
        pttype=values.get("PTTYPE"),
        ptuuid=values.get("PTUUID"),
    )


def probe_from_result(result: CommandResult) -> FilesystemProbe:
    """The probe from a whole blkid run: exit 2 with no output is "nothing found".

    blkid also exits 2, silently, for a path that does not exist: prove the
    device exists before probing it, or "nothing found" can mean "wrong path".
    """
    if result.exit_code == 0:
        return parse_blkid_export(result.stdout)
    if (result.exit_code == EXIT_NOTFOUND and not result.stdout.strip()
            and not result.stderr.strip()):
        return NOTHING
    # 8: more than one signature (ambivalent); anything else: a real error.
    raise CommandFailed(result)
