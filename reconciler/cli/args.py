"""The command line: every command, flag and its help text, in one place.

Global options are accepted before or after the subcommand (SPEC §4): they are declared on the
root parser and again on each subparser with `SUPPRESS` defaults, so a value given in either
place survives and the later one wins.
"""

from __future__ import annotations

import argparse

from reconciler.core.errors import UsageError

FORMATS = ("text", "json")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is our `UsageError` (one line, exit 2), not a SystemExit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def _add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("global options")
    g.add_argument(
        "--inventory",
        metavar="DIR",
        default=default,
        help="inventory folder (default: $RECONCILE_INVENTORY or ./inventory)",
    )
    g.add_argument(
        "--state",
        metavar="URL",
        default=default,
        help="state store: sqlite:///path.db, a path (default: $RECONCILE_STATE, "
        "reconciler.yaml, or sqlite:///.reconciler/state.db)",
    )
    g.add_argument(
        "--identity",
        metavar="FILE",
        default=default,
        help="age identity or OpenSSH ed25519 key for the vaults",
    )
    g.add_argument("--log-format", choices=("text", "json"), default=default)
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="more logging; tracebacks on errors",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="only errors and the final result",
    )


def _add_format(parser: argparse.ArgumentParser, choices=FORMATS) -> None:
    parser.add_argument(
        "--format", choices=choices, default=argparse.SUPPRESS, help="output format (default: text)"
    )
    # What this command can write: the root's --format reaches every command (main.py checks
    # it against these before the command runs).
    parser.set_defaults(writable_formats=choices)


def build_parser() -> Parser:
    """The `reconcile` parser with all subcommands."""
    root = Parser(
        prog="reconcile",
        description="Declarative GitOps task reconciler: runs "
        "the tasks of an inventory that the state store has not yet executed.",
    )
    _add_globals(root, suppress=False)
    _add_format(root, FORMATS + ("markdown",))
    root.add_argument(
        "--once",
        action="store_true",
        help="one pass: validate, plan, run the queue, print a summary, exit",
    )
    root.add_argument(
        "--dry-run", action="store_true", help="with --once: print the plan and change nothing"
    )
    _add_pass_options(root)
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    validate = sub.add_parser("validate", help="check the inventory; no state, no network")
    validate.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (e.g. likely hardcoded credentials) as errors",
    )
    plan = sub.add_parser("plan", help="what the next pass would enqueue and cancel")
    status = sub.add_parser("status", help="queue depth, running runs, recent failures, machines")
    for p, formats in ((validate, FORMATS), (plan, FORMATS + ("markdown",)), (status, FORMATS)):
        _add_globals(p, suppress=True)
        _add_format(p, formats)

    worker = sub.add_parser(
        "worker", help="only execute queued runs (a shared PostgreSQL queue), until SIGTERM/SIGINT"
    )
    _add_globals(worker, suppress=True)
    worker.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        default=argparse.SUPPRESS,
        help="runs at once in this worker (default 16)",
    )
    _add_grace(worker, default=argparse.SUPPRESS)

    queue = sub.add_parser("queue", help="the run history and queue")
    _add_globals(queue, suppress=True)
    _add_format(queue)
    qsub = queue.add_subparsers(
        dest="queue_command", metavar="ACTION", parser_class=Parser, required=True
    )
    qlist = qsub.add_parser("list", help="runs, newest first")
    qlist.add_argument(
        "--status", action="append", metavar="S", help="only runs with this status (repeatable)"
    )
    qlist.add_argument("--team", metavar="T", help="only runs of this team's tasks")
    qlist.add_argument("--limit", type=_int64, default=1000, metavar="N")
    for action, text in (
        ("show", "one run with its output"),
        ("cancel", "cancel a pending run"),
        ("retry", "run a failed, blocked or unknown run again at the next pass"),
    ):
        p = qsub.add_parser(action, help=text)
        p.add_argument("run", type=_int64, metavar="RUN", help="run id")
        qsub.choices[action] = p
    for p in qsub.choices.values():
        _add_globals(p, suppress=True)
        _add_format(p)
    from reconciler.cli import audit_cmd, prune_cmd

    prune_cmd.add_parser(qsub, _add_globals, _add_format)
    audit_cmd.add_parser(sub, _add_globals, _add_format)
    _add_vault(sub)
    from reconciler.cli import machines_cmd

    _add_globals(machines_cmd.add_parser(sub), suppress=True)
    owners = sub.add_parser("codeowners", help="a CODEOWNERS file from the teams' roles")
    owners.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write it here (e.g. .github/CODEOWNERS) instead of stdout",
    )
    _add_globals(owners, suppress=True)
    from reconciler.cli import diff_cmd, history_cmd, init_cmd, keys_cmd

    diff_cmd.add_parser(sub, _add_globals, _add_format)
    history_cmd.add_parser(sub, _add_globals)
    init_cmd.add_parser(sub, _add_globals, _add_format)
    keys_cmd.add_parser(sub, _add_globals, _add_format)
    return root


def _add_vault(sub) -> None:
    """`reconcile vault ...`: age's own flags, so habits carry over (SPEC §5)."""
    vault = sub.add_parser("vault", help="age-encrypted team vaults")
    _add_globals(vault, suppress=True)
    vsub = vault.add_subparsers(
        dest="vault_command", metavar="ACTION", parser_class=Parser, required=True
    )
    keygen = vsub.add_parser("keygen", help="a new age identity (public key also on stderr)")
    keygen.add_argument("-o", "--output", metavar="FILE")
    enc = vsub.add_parser("encrypt", help="encrypt a file or stdin")
    enc.add_argument("-r", "--recipient", action="append", default=[], metavar="RECIPIENT")
    enc.add_argument("-R", "--recipients-file", action="append", default=[], metavar="FILE")
    enc.add_argument(
        "-p",
        "--passphrase",
        action="store_true",
        help="encrypt with a passphrase ($RECONCILE_PASSPHRASE or the terminal)",
    )
    enc.add_argument("-a", "--armor", action="store_true", help="PEM-armored output")
    enc.add_argument("-o", "--output", metavar="OUT")
    enc.add_argument("input", nargs="?", metavar="IN")
    dec = vsub.add_parser("decrypt", help="decrypt a file or stdin")
    dec.add_argument(
        "-i",
        "--identity-file",
        action="append",
        default=[],
        metavar="IDENTITY",
        dest="identity_files",
    )
    dec.add_argument("-o", "--output", metavar="OUT")
    dec.add_argument("input", nargs="?", metavar="IN")
    for action, text, args in (
        ("list", "names in a team's vault", ("team",)),
        ("get", "one secret's value", ("team", "name")),
        ("set", "set a secret (VALUE, or - for stdin)", ("team", "name", "value?")),
        ("unset", "remove a secret", ("team", "name")),
        ("edit", "edit the decrypted vault in $EDITOR", ("team",)),
        ("rekey", "re-encrypt to the team's current recipients", ("team",)),
    ):
        p = vsub.add_parser(action, help=text)
        for arg in args:
            optional = arg.endswith("?")
            p.add_argument(
                arg.rstrip("?"), nargs="?" if optional else None, metavar=arg.rstrip("?").upper()
            )
    for p in vsub.choices.values():
        _add_globals(p, suppress=True)
        _add_format(p)


def _add_pass_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        default=None,
        help="runs at once across all machines (default 16)",
    )
    parser.add_argument(
        "--lock-timeout",
        metavar="DURATION",
        default=None,
        help="how long to wait for another pass's lock before exit 3 (default 10m)",
    )
    parser.add_argument(
        "--watch-files",
        action="store_true",
        help="continuous mode: wake on changes of the inventory folder "
        "instead of pulling the git remote",
    )
    _add_grace(parser, default=None)
    parser.add_argument(
        "--verify",
        choices=("none", "head", "range"),
        default=None,
        help="git.verify for this pass (default: $RECONCILE_GIT_VERIFY, else "
        "the last reconciled commit's reconciler.yaml; never the commit "
        "being judged)",
    )
    parser.add_argument(
        "--trust-anchor",
        metavar="COMMIT|SSH-KEY",
        default=None,
        help="first use of a store under git.verify: the commit to trust, or "
        "the admin key (SHA256: fingerprint, key line or .pub file) that "
        "signed HEAD (default: $RECONCILE_TRUST_ANCHOR)",
    )
    parser.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        default=None,
        help="continuous mode: serve Prometheus metrics at http://HOST:PORT/metrics",
    )


def _add_grace(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--grace",
        metavar="DURATION",
        default=default,
        help="after SIGTERM/SIGINT, how long running runs may finish before "
        "they are stopped and recorded unknown (default 30s)",
    )


def _int64(text: str) -> int:
    """An integer argument that the stores can hold (a signed 64-bit integer): a larger one
    is a usage error naming the limit, not an overflow deep in the database driver."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None
    if abs(value) > 2**63 - 1:
        raise argparse.ArgumentTypeError(
            f"{text[:40]}... is out of range (at most 2^63-1)"
            if len(text) > 40
            else f"{text} is out of range (at most 2^63-1)"
        )
    return value
