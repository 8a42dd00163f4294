"""rsync argv, exit-code table (R9), statistics and progress parsing."""

from __future__ import annotations

import shlex

import pytest
from fakes import RECORDED
from hypothesis import given
from hypothesis import strategies as st

from toolkit import errors
from toolkit.rsync import (
    TIED,
    SshOptions,
    extra_option_problem,
    parse_progress,
    parse_stats,
    relative_excludes,
    rsync_argv,
    rsync_outcome,
    ssh_argv,
    untied,
)
from toolkit.rsync_options import EXTRA_OPTIONS

SSH = SshOptions(key="/etc/domu-backup/id_ed25519", known_hosts="/etc/domu-backup/known_hosts",
                 port=2222)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, None),
        (1, errors.TransferFailed),
        (10, errors.ConnectionLost),
        (12, errors.ConnectionLost),
        (23, errors.TransferPartial),
        (24, errors.TransferPartial),
        (25, errors.MassDeleteRefused),
        (30, errors.ConnectionLost),
        (255, errors.ConnectionLost),
        (99, errors.TransferFailed),
    ],
)
def test_only_exit_zero_is_success(code, expected):
    outcome = rsync_outcome(code, "some stderr", host="dom0-a")
    if expected is None:
        assert outcome is None
    else:
        assert type(outcome) is expected
        assert f"rsync exited {code}" in str(outcome)
        assert outcome.exit_code != 0


def test_vanished_files_succeed_only_when_configured():
    assert isinstance(rsync_outcome(24, ""), errors.TransferPartial)
    assert rsync_outcome(24, "", allow_vanished=True) is None


def test_killed_rsync_is_never_success():
    assert isinstance(rsync_outcome(-9, ""), errors.TransferFailed)
    interrupted = rsync_outcome(-15, "")
    assert isinstance(interrupted, errors.Interrupted)
    assert interrupted.exit_code == 128 + 15


def test_full_standby_is_its_own_outcome():
    err = rsync_outcome(23, 'rsync: write failed on "/x": No space left on device (28)')
    assert isinstance(err, errors.PeerFull)


def test_lost_connection_tells_operator_to_recover():
    err = rsync_outcome(255, "Connection reset by peer")
    assert isinstance(err, errors.ConnectionLost)
    assert "recover" in str(err)


# rsync(1) "EXIT VALUES", copied from the manual, and what the README says each one means
# for a run: 24 and 23 are partial, 25 the max_delete bound, 5, 10, 12, 30, 35 and ssh's 255
# a lost connection (state on the peer unknown), everything else a failed transfer.
RSYNC_MANUAL = {
    0: ("success", None),
    1: ("syntax or usage error", errors.TransferFailed),
    2: ("protocol incompatibility", errors.TransferFailed),
    3: ("errors selecting input/output files, dirs", errors.TransferFailed),
    4: ("requested action not supported", errors.TransferFailed),
    5: ("error starting client-server protocol", errors.ConnectionLost),
    6: ("daemon unable to append to log-file", errors.TransferFailed),
    10: ("error in socket i/o", errors.ConnectionLost),
    11: ("error in file i/o", errors.TransferFailed),
    12: ("error in rsync protocol data stream", errors.ConnectionLost),
    13: ("errors with program diagnostics", errors.TransferFailed),
    14: ("error in ipc code", errors.TransferFailed),
    20: ("received sigusr1 or sigint", errors.TransferFailed),
    21: ("some error returned by waitpid()", errors.TransferFailed),
    22: ("error allocating core memory buffers", errors.TransferFailed),
    23: ("partial transfer due to error", errors.TransferPartial),
    24: ("partial transfer due to vanished source files", errors.TransferPartial),
    25: ("the --max-delete limit stopped deletions", errors.MassDeleteRefused),
    30: ("timeout in data send/receive", errors.ConnectionLost),
    35: ("timeout waiting for daemon connection", errors.ConnectionLost),
    255: ("ssh", errors.ConnectionLost),
}


def test_every_exit_code_gives_the_outcome_the_manual_and_readme_give_it():
    wrong = []
    for code in range(256):
        meaning, expected = RSYNC_MANUAL.get(code, ("unknown exit code", errors.TransferFailed))
        outcome = rsync_outcome(code, "", host="dom0-a")
        if expected is None:
            if outcome is not None:
                wrong.append((code, outcome))
        elif (type(outcome) is not expected or outcome.exit_code != expected.exit_code
              or f"rsync exited {code} (" not in str(outcome)
              or meaning not in str(outcome).lower()):
            wrong.append((code, type(outcome).__name__, str(outcome)))
    assert wrong == []


def test_ssh_transport_is_strict_and_batch():
    argv = ssh_argv(SSH)
    joined = " ".join(argv)
    assert "BatchMode=yes" in joined
    assert "StrictHostKeyChecking=yes" in joined
    assert "UserKnownHostsFile=/etc/domu-backup/known_hosts" in joined
    assert "ForwardAgent=no" in joined
    assert argv[argv.index("-p") + 1] == "2222"


def test_rsync_argv_has_fidelity_flags_and_bounded_delete():
    argv = rsync_argv("/run/src/x/xvda1", "root@dom0-b", "/run/dst/x/xvda1", SSH,
                      excludes=["/tmp/*"], max_delete=100, bwlimit="10M")
    # tied to the run: the kernel kills rsync (and its ssh) when the run's process ends
    assert argv[:5] == ["setpriv", "--pdeathsig", "KILL", "--", "rsync"]
    assert "-aHAXSx" in argv and "--numeric-ids" in argv and "--delete" in argv
    assert "--max-delete=100" in argv
    assert "--bwlimit=10M" in argv
    assert "--exclude=/tmp/*" in argv
    assert argv[-2:] == ["/run/src/x/xvda1/", "root@dom0-b:/run/dst/x/xvda1/"]
    assert argv[-3] == "--"
    # -e is one argv item holding the ssh command, quoted with shlex.join
    e = argv[argv.index("-e") + 1]
    assert shlex.split(e) == [*TIED, *ssh_argv(SSH)]


def rsync_split(command: str) -> list[str]:
    """How rsync itself splits its -e string into argv (main.c, do_cmd), not a shell:

    words are separated by spaces only; single or double quotes keep spaces, a quote
    doubled inside quotes of its kind is one literal quote, and a backslash is an
    ordinary character. An unclosed quote is rsync's "Missing trailing-' in remote-shell
    command" (exit 1).
    """
    args: list[str] = []
    i, n = 0, len(command)
    while i < n:
        if command[i] == " ":
            i += 1
            continue
        word: list[str] = []
        quote = ""
        while i < n and (command[i] != " " or quote):
            ch = command[i]
            if ch in "'\"" and not quote:
                quote = ch
                i += 1
                continue
            if ch == quote:
                if i + 1 < n and command[i + 1] == quote:
                    word.append(ch)
                    i += 2
                    continue
                quote = ""
                i += 1
                continue
            word.append(ch)
            i += 1
        if quote:
            raise ValueError(f"Missing trailing-{quote} in remote-shell command")
        args.append("".join(word))
    return args


@pytest.mark.parametrize(("command", "argv"), [
    # rsync(1), --rsh: "you can use single- and/or double-quotes to preserve spaces in an
    # argument (but not backslashes). Note that doubling a single-quote inside a
    # single-quoted string gives you a single-quote; likewise for double-quotes"
    ("ssh -p 22", ["ssh", "-p", "22"]),
    ("ssh  -o 'A=b c'", ["ssh", "-o", "A=b c"]),
    ('ssh "a b" \'c"d\'', ["ssh", "a b", 'c"d']),
    ("ssh 'it''s'", ["ssh", "it's"]),
    ('ssh "say ""hi"""', ["ssh", 'say "hi"']),
    ("ssh a\\ b", ["ssh", "a\\", "b"]),
    ("ssh 'a'\"'\"'b'", ["ssh", "a'b"]),
])
def test_the_reference_splitter_reads_the_manuals_examples(command, argv):
    assert rsync_split(command) == argv


def test_an_unclosed_quote_is_an_error_for_rsync():
    with pytest.raises(ValueError, match="Missing trailing-'"):
        rsync_split("ssh 'a")


_HOSTILE = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                   min_size=1, max_size=30) | st.sampled_from(
    ["a b", "it's", 'say "hi"', "a\\ b", "\\", "''", '""', "'\"'\"'", "$(touch x)",
     "-oProxyCommand=x", "x\ny", "\t", " ", "é漢字"])


@given(key=_HOSTILE, known_hosts=_HOSTILE, cipher=st.just("") | _HOSTILE)
def test_ssh_option_values_reach_ssh_as_rsync_splits_the_e_string(key, known_hosts, cipher):
    # The -e string is read by rsync, not by a shell: checked with rsync's rules above.
    opts = SshOptions(key=key, known_hosts=known_hosts, cipher=cipher)
    argv = rsync_argv("/a", "root@b", "/c", opts)
    e = argv[argv.index("-e") + 1]
    assert rsync_split(e) == [*TIED, *ssh_argv(opts)]
    assert ssh_argv(opts)[ssh_argv(opts).index("-i") + 1] == key


@pytest.mark.parametrize(
    ("pattern", "guest_path", "expected"),
    [
        ("/var/cache/*", "/var", ["/cache/*"]),
        ("/var/cache/*", "/", ["/var/cache/*"]),
        ("/var/cache/*", "/srv", []),
        ("/var", "/var", ["/"]),
        ("/variable", "/var", []),
        ("*.tmp", "/srv", ["*.tmp"]),
        ("/tmp/*", None, []),
        ("*.tmp", None, ["*.tmp"]),
    ],
)
def test_guest_excludes_apply_to_the_filesystem_that_holds_them(pattern, guest_path, expected):
    assert relative_excludes([pattern], guest_path) == expected


def test_stats_first_sync_recorded():
    stats = parse_stats((RECORDED / "rsync" / "stats-first.txt").read_text())
    assert stats.files == 54
    assert stats.files_transferred == 50
    assert stats.total_size == 1_275_004
    assert stats.bytes_sent > stats.total_size


def test_stats_incremental_recorded():
    stats = parse_stats((RECORDED / "rsync" / "stats-incremental.txt").read_text())
    assert stats.files_transferred == 1
    assert stats.files_deleted == 2
    assert stats.transferred_size == 10_002
    assert stats.bytes_sent == 10_945


def test_progress_lines_from_recording():
    text = (RECORDED / "rsync" / "stats-incremental.txt").read_text()
    updates = [p for p in (parse_progress(x) for x in text.replace("\r", "\n").splitlines()) if p]
    assert updates, "the recording holds progress2 updates"
    last = updates[-1]
    assert last.bytes == 10_002 and last.files_left == 0 and last.files_total == 52
    assert parse_progress("Number of files: 52") is None


# --- extra options from the config (R23) -------------------------------------------

GUARDS = ("-aHAXSx", "--numeric-ids", "--delete", "--delete-delay", "--stats",
          "--info=progress2", "--max-delete=100", "--bwlimit=10M", "-e", "--exclude=/tmp/*")


def test_extra_options_come_before_every_option_of_the_tool():
    # rsync lets a later option override an earlier one: the tool's own options,
    # the guards among them, are placed after everything the config adds.
    extra = ["--partial", "--timeout=30", "--checksum", "-W"]
    argv = rsync_argv("/run/src/x/xvda1", "root@dom0-b", "/run/dst/x/xvda1", SSH,
                      excludes=["/tmp/*"], extra_args=extra, max_delete=100, bwlimit="10M")
    assert untied(argv)[1:1 + len(extra)] == tuple(extra)
    last_extra = max(argv.index(opt) for opt in extra)
    for guard in GUARDS:
        assert argv.index(guard) > last_extra, guard
    assert argv[-3:] == ["--", "/run/src/x/xvda1/", "root@dom0-b:/run/dst/x/xvda1/"]


@pytest.mark.parametrize("option", ["--rsh=sh -c x", "-e", "--max-delete=1000000",
                                    "--dry-run", "-n", "--log-file=/etc/shadow",
                                    "--remove-source-files", "--files-from=/etc/x", "-cW",
                                    "--timeout=0", "--no-delete", "/etc"])
def test_rsync_argv_itself_refuses_options_outside_the_allowlist(option):
    with pytest.raises(errors.ConfigError, match="rsync_args"):
        rsync_argv("/a", "root@b", "/c", SSH, extra_args=[option])


def test_the_allowlist_is_one_table_with_a_reason_for_each_option():
    assert EXTRA_OPTIONS
    for name, (check, reason) in EXTRA_OPTIONS.items():
        assert name.startswith("--") or len(name) == 2, name
        assert reason and "\n" not in reason, name
        assert (check is None) == ("=" not in name), name


@pytest.mark.parametrize("option", ["--partial", "--checksum", "-c", "--ignore-times",
                                    "--whole-file", "-W", "--no-whole-file", "--inplace",
                                    "--fuzzy", "--preallocate", "--no-inc-recursive",
                                    "--timeout=1", "--timeout=86400", "--block-size=131072",
                                    "--compress-level=0", "--compress-level=9",
                                    "--compress-choice=zstd", "--checksum-choice=xxh128",
                                    "--checksum-choice=md5"])
def test_allowed_options_pass(option):
    assert extra_option_problem(option) is None


@pytest.mark.parametrize("option", ["--timeout=", "--timeout=00", "--timeout=-1",
                                    "--timeout=86401", "--timeout=1e3", "--timeout=30 ",
                                    "--timeout", "--block-size=0", "--block-size=131073",
                                    "--block-size=8K", "--compress-level=10",
                                    "--compress-choice=gzip", "--checksum-choice=none",
                                    "--checksum-choice=md5,none", "--partial=1", "-cW",
                                    "-Wc", "-C", "--Partial", "--partial\n", " --partial",
                                    "--part", "--checksum=1", "-", "--", ""])
def test_allowed_names_with_bad_values_or_spellings_are_refused(option):
    assert extra_option_problem(option)


# --- the peer address rsync is given ------------------------------------------------


@pytest.mark.parametrize(("address", "remote"), [
    ("root@dom0-b", "root@dom0-b:/c/"),
    ("backup@10.0.0.2", "backup@10.0.0.2:/c/"),
    ("root@2001:db8::2", "root@[2001:db8::2]:/c/"),
    ("root@[2001:db8::2]", "root@[2001:db8::2]:/c/"),
    ("root@::1", "root@[::1]:/c/"),
])
def test_the_peer_address_is_always_read_by_rsync_as_a_host(address, remote):
    assert rsync_argv("/a", address, "/c", SSH)[-1] == remote


@pytest.mark.parametrize("address", ["root@host::module", "root@host:x", "host",
                                     "root@", "@host", "-oProxyCommand=x@host",
                                     "root@-oProxyCommand=x", "root@[host]",
                                     "root@[::1", "root@a b", "root@rsync://host",
                                     "root@fe80::1%eth0", "ro:ot@host", "root@host/x"])
def test_a_peer_address_rsync_could_read_otherwise_is_refused(address):
    with pytest.raises(errors.ConfigError, match="peer address"):
        rsync_argv("/a", address, "/c", SSH)


def test_the_source_is_an_absolute_local_path():
    with pytest.raises(errors.ConfigError):
        rsync_argv("host:/a", "root@b", "/c", SSH)
