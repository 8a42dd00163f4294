"""Recording and replaying command results.

``RecordingRunner`` wraps a real runner and keeps every result; ``ReplayRunner``
answers the same argv with the recorded result. Recorded facts from the lab
drive the plan golden tests and ``invoke plan --replay``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .errors import CommandFailed, UsageError
from .runners import DEFAULT_TIMEOUT, CommandResult, Runner, validate_argv
from .step_batch import read_section, split_reads, unwrap_reads


class RecordingRunner:
    """Passes commands to ``inner`` and remembers each result."""

    def __init__(self, inner: Runner, role: str) -> None:
        self.inner = inner
        self.host = inner.host
        self.role = role
        self.records: list[dict] = []

    def close(self) -> None:
        """Close the wrapped runner."""
        self.inner.close()

    def run(self, argv: Sequence[str], *, check: bool = True,
            timeout: float | None = DEFAULT_TIMEOUT, input: str | None = None,
            ok_codes: Iterable[int] = (0,), env: Mapping[str, str] | None = None) -> CommandResult:
        """Run argv on ``inner`` and record its result, a failure too; then ``check`` as usual."""
        result = self.inner.run(argv, check=False, timeout=timeout, input=input, env=env)
        reads = unwrap_reads(argv)
        # probes read in one command are recorded one by one, as each would have run
        for one in (split_reads(result, reads[1], reads[0]) if reads else [result]):
            self.records.append({"role": self.role, "argv": list(one.argv),
                                 "exit_code": one.exit_code, "stdout": one.stdout,
                                 "stderr": one.stderr})
        if check and result.exit_code not in tuple(ok_codes):
            raise CommandFailed(result)
        return result


class ReplayRunner:
    """Answers argv from recorded results; an unrecorded command is an error, never a guess."""

    def __init__(self, host: str, records: Iterable[dict]) -> None:
        self.host = host
        self.calls: list[tuple[str, ...]] = []
        self._answers: dict[tuple[str, ...], dict] = {}
        for rec in records:
            self._answers[tuple(rec["argv"])] = rec

    def close(self) -> None:
        """Recorded answers hold no connection."""

    def run(self, argv: Sequence[str], *, check: bool = True,
            timeout: float | None = DEFAULT_TIMEOUT, input: str | None = None,
            ok_codes: Iterable[int] = (0,), env: Mapping[str, str] | None = None) -> CommandResult:
        """The result recorded for exactly this argv (KeyError if none); ``check`` as usual.

        ``timeout``, ``input`` and ``env`` play no part in finding it.
        """
        args = validate_argv(argv)
        self.calls.append(args)
        reads = unwrap_reads(args)
        if reads is not None:  # probes read in one command: each answered from its record
            boundary, probes = reads
            out = err = ""
            for k, probe in enumerate(probes):
                one = self.run(probe, check=False, timeout=timeout)
                out += read_section(k, boundary, one.stdout, one.exit_code)
                err += read_section(k, boundary, one.stderr, one.exit_code)
            return CommandResult(self.host, args, 0, out, err, 0.0)
        rec = self._answers.get(args)
        if rec is None:
            raise KeyError(f"{self.host}: no recorded result for {list(args)}")
        result = CommandResult(self.host, args, int(rec["exit_code"]), rec["stdout"],
                               rec["stderr"], 0.0)
        if check and result.exit_code not in tuple(ok_codes):
            raise CommandFailed(result)
        return result


def save_recording(path: Path, runners: Iterable[RecordingRunner]) -> None:
    """Write the recording; UsageError (one line) when the file cannot be written."""
    records = [rec for r in runners for rec in r.records]
    try:
        Path(path).write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--record {path}: cannot write it: {exc.strerror or exc}") from None


_RECORD_KEYS = {"role": str, "argv": list, "exit_code": int, "stdout": str, "stderr": str}


def read_recording(path: Path) -> list[dict]:
    """The records of a recording file; UsageError (one line) saying what is wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"--replay {path}: cannot read it: {reason}") from None
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--replay {path}: not JSON ({exc})") from None
    if not isinstance(records, list) or not records:
        raise UsageError(f"--replay {path}: expected a non-empty JSON list of recorded commands")
    for i, rec in enumerate(records):
        if not (isinstance(rec, dict)
                and all(isinstance(rec.get(k), t) for k, t in _RECORD_KEYS.items())
                and rec["role"] in ("source", "peer")
                and rec["argv"] and all(isinstance(a, str) for a in rec["argv"])):
            raise UsageError(f"--replay {path}: record {i} is not a recorded command (role "
                             "source or peer, argv, exit_code, stdout, stderr)")
    return records


def load_replay(path: Path, source_host: str, peer_host: str) -> tuple[ReplayRunner, ReplayRunner]:
    """Source and peer replay runners from one recording file."""
    records = read_recording(path)
    src = [r for r in records if r["role"] == "source"]
    peer = [r for r in records if r["role"] == "peer"]
    return ReplayRunner(source_host, src), ReplayRunner(peer_host, peer)
