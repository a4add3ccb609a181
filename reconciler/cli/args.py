"""The command line: every command, flag and its help text, in one place (COMMANDS).

Declaring the parser imports no command: each names the function that runs it by module path,
imported only when it runs, so `reconcile --help` starts without the engine (issue 14).

Global options are accepted before or after the subcommand (SPEC §4): they are declared on the
root parser and again on each subparser with `SUPPRESS` defaults, so a value given in either
place survives and the later one wins.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.core.errors import UsageError

FORMATS = ("text", "json")
# Defaults shown in the help; the commands read them from the parsed arguments.
PROBE_TIMEOUT = 10.0  # machines: per machine
KEYS_TIMEOUT = 10.0  # keys: per connection and command
AUTHORIZED_KEYS = "~/.ssh/authorized_keys"  # keys: pipeline.keys.DEFAULT_AUTHORIZED_KEYS


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is our `UsageError` (one line, exit 2), not a SystemExit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # The error line already starts "reconcile:"; name the command, not the program twice.
        command = self.prog.removeprefix("reconcile").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see '{self.prog} --help')")


class CommandParser(Parser):
    """A command's parser whose arguments are declared when it is first used (parsed, or its
    help shown): `reconcile validate` declares validate's alone, not the hundred flags of
    every command (a tenth of its start; issue 14). `reconcile --help` lists the commands by
    name and help line, which need none of their arguments."""

    def __init__(self, *args, declare: Callable[[Parser], None] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._declare = declare

    def declared(self) -> CommandParser:
        if self._declare is not None:
            declare, self._declare = self._declare, None
            declare(self)
        return self

    def parse_known_args(self, args=None, namespace=None):
        return super(CommandParser, self.declared()).parse_known_args(args, namespace)

    def format_usage(self) -> str:
        return super(CommandParser, self.declared()).format_usage()

    def format_help(self) -> str:
        return super(CommandParser, self.declared()).format_help()


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


# A command that writes text alone (a key, a file, CODEOWNERS): `--format json` is exit 2.
TEXT_ONLY = ("text",)


def _add_format(parser: argparse.ArgumentParser, choices=FORMATS) -> None:
    parser.add_argument(
        "--format", choices=choices, default=argparse.SUPPRESS, help="output format (default: text)"
    )
    # What this command can write: the root's --format reaches every command (main.py checks
    # it against these before the command runs).
    parser.set_defaults(writable_formats=choices)


@dataclass(frozen=True)
class Command:
    """One `reconcile` command, declared once: its name and help, its own arguments, the
    formats it writes, and the function that runs it. `run` names that function by module
    path ("reconciler.cli.vault_cmd:cmd_vault"): it is imported only when the command runs,
    so `reconcile --help` or `vault decrypt` import no engine, store, SSH or PostgreSQL."""

    name: str
    help: str
    run: str
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    # What --format may be; None: the command has no --format.
    formats: tuple[str, ...] | None = FORMATS
    description: str | None = None


def handler(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The function that runs the command `args` were parsed for (imported now)."""
    module, _, function = args.handler.partition(":")
    return getattr(importlib.import_module(module), function)


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
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for command in COMMANDS:
        add_command(sub, command.name)
    return root


def add_command(subparsers, name: str) -> argparse.ArgumentParser:
    """Declare the command `name` of COMMANDS on `subparsers`, with the global options and
    its --format (tests use it to parse one command as `reconcile` does). Its arguments are
    declared when it is first parsed (`CommandParser`)."""
    command = _BY_NAME[name]

    def declare(parser: argparse.ArgumentParser) -> None:
        if command.arguments is not None:
            command.arguments(parser)
        _add_globals(parser, suppress=True)
        if command.formats is not None:
            _add_format(parser, command.formats)
        else:  # it writes text alone: the root's `--format json` is refused for it (main.py)
            parser.set_defaults(writable_formats=TEXT_ONLY)
        parser.set_defaults(handler=command.run)

    return subparsers.add_parser(
        command.name, help=command.help, description=command.description, declare=declare
    )


def _actions(parser: argparse.ArgumentParser, dest: str, formats: tuple[str, ...] | None = FORMATS):
    """The subcommands (ACTION) of `parser`: returns `add(name, **kwargs)`, which declares one
    with the global options and --format, as every command has them."""
    actions = parser.add_subparsers(dest=dest, metavar="ACTION", parser_class=Parser, required=True)

    def add(name: str, own_formats: tuple[str, ...] | None = None, **kwargs):
        """`own_formats`: what this action writes, when not the formats of its command."""
        action = actions.add_parser(name, **kwargs)
        _add_globals(action, suppress=True)
        if (own_formats or formats) is not None:
            _add_format(action, own_formats or formats)
        return action

    return add


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (e.g. likely hardcoded credentials) as errors",
    )


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="with --format html: the folder to write the console's pages to",
    )


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--addr",
        metavar="HOST:PORT",
        default=None,
        help="where to serve the console (default 127.0.0.1:8080; port 0: any free port)",
    )


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        default=argparse.SUPPRESS,
        help="runs at once in this worker (default 16)",
    )
    _add_grace(parser, default=argparse.SUPPRESS)


def _queue_arguments(parser: argparse.ArgumentParser) -> None:
    add = _actions(parser, "queue_command")
    qlist = add("list", help="runs, newest first")
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
        action_parser = add(action, help=text)
        action_parser.add_argument("run", type=_int64, metavar="RUN", help="run id")
        if action == "retry":
            action_parser.add_argument(
                "--force",
                action="store_true",
                help="retry an unknown run even when its machine cannot be asked whether its "
                "command still runs (a second copy may run beside it)",
            )
        if action == "show":
            action_parser.add_argument(
                "--follow",
                action="store_true",
                help="print the output so far, then new lines as they come until the run "
                "ends, then its status; exit 0 if it succeeded, 1 otherwise",
            )
    kill = add(
        "kill",
        help="stop a running run wherever it runs (TERM, KILL after --grace); cancel a pending one",
        description="Stop run RUN: the process holding it (this host's pass or daemon, or a "
        "worker on another host) sends TERM to its whole process group on its machine, KILL "
        "after --grace, and records it killed (never retried; its dependents are blocked). A "
        "pending run is cancelled. Waits until the run is recorded; exit 2 for a run that "
        "already ended or does not exist, 3 when its holder did not act. An unknown run's "
        "command still running on its machine is stopped there (the run stays unknown).",
    )
    kill.add_argument("run", type=_int64, metavar="RUN", help="run id")
    kill.add_argument(
        "--grace",
        dest="kill_grace",
        metavar="DURATION",
        default=None,
        help="between TERM and KILL (default 10s)",
    )
    kill.add_argument("--reason", metavar="TEXT", help="why (recorded with who asked)")
    prune = add(
        "prune",
        help="remove old finished runs (after archiving them with --archive)",
        description="Remove runs that ended more than --older-than ago (the newest run of "
        "each task version on each machine is kept). With --archive, write them "
        "and the audit entries as old to FILE first, and prune those audit "
        "entries too; without it the audit log is kept whole.",
    )
    prune.add_argument(
        "--older-than", required=True, metavar="D", help="age of the runs to remove, such as 30d"
    )
    prune.add_argument(
        "--archive", metavar="FILE", help="write what is removed here first (JSON lines; .gz: gzip)"
    )
    prune.add_argument(
        "--key", metavar="FILE", help="the audit key file that signs the archive's checkpoint"
    )


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    add = _actions(parser, "audit_command")
    check = add(
        "verify",
        help="check the hash chain; exit 1 naming the first bad entry",
        description="Check every entry's hash and link. With --checkpoint, also detect a log "
        "cut short or rolled back since the checkpoint was written.",
    )
    check.add_argument(
        "--checkpoint", metavar="FILE", help="a checkpoint, or an export/archive ending with one"
    )
    check.add_argument(
        "--public-key",
        action="append",
        default=[],
        metavar="KEY",
        help="also trust checkpoints signed by this key (ed25519:BASE64, as "
        "the checkpoint line shows it); repeatable",
    )
    export = add(
        "export",
        help="write the log as JSON lines ending with a signed checkpoint",
        description="Entries as JSON lines (all, or those at or after --since), then a "
        "checkpoint over the whole log signed with the audit key.",
    )
    export.add_argument(
        "--since",
        metavar="T",
        help="only entries at or after T: an ISO 8601 date or time (UTC "
        "unless it says otherwise) or a duration such as 7d (that long ago)",
    )
    export.add_argument(
        "-o", "--output", metavar="FILE", help="write here instead of stdout (.gz: gzip-compressed)"
    )
    for action in (check, export):
        action.add_argument(
            "--key",
            metavar="FILE",
            help="the audit key file (default: audit.key beside the SQLite "
            "state file, or .reconciler/audit.key)",
        )


def _vault_arguments(parser: argparse.ArgumentParser) -> None:
    """`reconcile vault ...`: age's own flags, so habits carry over (SPEC §5)."""
    add = _actions(parser, "vault_command")
    # keygen, encrypt and decrypt write a key or a file, never JSON: --format text alone.
    keygen = add("keygen", TEXT_ONLY, help="a new age identity (public key also on stderr)")
    keygen.add_argument("-o", "--output", metavar="FILE")
    enc = add("encrypt", TEXT_ONLY, help="encrypt a file or stdin")
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
    dec = add("decrypt", TEXT_ONLY, help="decrypt a file or stdin")
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
    for action, text, words in (
        ("list", "names in a team's vault", ("team",)),
        ("get", "one secret's value", ("team", "name")),
        ("set", "set a secret (VALUE, or - for stdin)", ("team", "name", "value?")),
        ("unset", "remove a secret", ("team", "name")),
        ("edit", "edit the decrypted vault in $EDITOR", ("team",)),
        ("rekey", "re-encrypt to the team's current recipients", ("team",)),
    ):
        p = add(action, help=text)
        for word in words:
            optional = word.endswith("?")
            p.add_argument(
                word.rstrip("?"), nargs="?" if optional else None, metavar=word.rstrip("?").upper()
            )


def _machines_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=("keyscan",),
        metavar="keyscan",
        help="print the host_key line of HOST[:PORT] (no login)",
    )
    parser.add_argument("target", nargs="?", metavar="HOST[:PORT]")
    parser.add_argument(
        "--timeout",
        type=float,
        default=PROBE_TIMEOUT,
        metavar="SECONDS",
        help=f"per machine (default {PROBE_TIMEOUT:g})",
    )


def _codeowners_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write it here (e.g. .github/CODEOWNERS) instead of stdout",
    )


def _diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "base", metavar="BASE", help="the revision reviewed against, e.g. origin/main"
    )
    parser.add_argument(
        "head",
        metavar="HEAD",
        nargs="?",
        default="HEAD",
        help="the revision under review (default: HEAD)",
    )


def _accept_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("commit", metavar="COMMIT", help="the commit to accept, e.g. HEAD")
    parser.add_argument(
        "--reason", metavar="TEXT", required=True, help="why (kept in the audit log)"
    )
    parser.add_argument(
        "--verify",
        choices=("none", "head", "range"),
        default=None,
        help="git.verify (default: $RECONCILE_GIT_VERIFY, else the last "
        "reconciled commit's reconciler.yaml)",
    )
    parser.add_argument(
        "--lock-timeout",
        metavar="DURATION",
        default=None,
        help="how long to wait for a pass's lock (default 10m)",
    )


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default=".",
        help="where to scaffold (default: the current folder; created if missing)",
    )
    parser.add_argument(
        "--team", default="ops", metavar="NAME", help="the team's name (default: ops)"
    )
    parser.add_argument(
        "--machine",
        default="local",
        metavar="NAME",
        help="the local machine's name (default: local)",
    )
    parser.add_argument(
        "--force", action="store_true", help="overwrite the scaffold's files where they exist"
    )


def _keys_arguments(parser: argparse.ArgumentParser) -> None:
    add = _actions(parser, "keys_command")
    rotate = add(
        "rotate",
        help="new key: add it, verify it over a new connection, store it in the vault",
        description="Generate a new ed25519 key, append it to the machine's authorized_keys "
        "over the current connection, verify it over a second connection and store "
        "it in the team vault. Without --finish the old key stays until 'keys "
        "prune' (after the vault change is merged and live).",
    )
    rotate.add_argument("machine", metavar="MACHINE")
    rotate.add_argument(
        "--finish",
        action="store_true",
        help="also remove the old key now and verify it is refused (when the "
        "reconciler reads the vault from this working copy)",
    )
    prune = add("prune", help="remove reconciler-added keys that are no longer the vault's key")
    prune.add_argument("machine", metavar="MACHINE")
    status = add("status", help="each vault-keyed machine's key age")
    for action in (rotate, prune, status):
        action.add_argument(
            "--timeout",
            type=float,
            default=KEYS_TIMEOUT,
            metavar="SECONDS",
            help=f"per connection and command (default {KEYS_TIMEOUT:g})",
        )
        action.add_argument(
            "--authorized-keys",
            default=AUTHORIZED_KEYS,
            metavar="PATH",
            help=f"the file on the machine (default {AUTHORIZED_KEYS}; ~/ is the remote home)",
        )


def _approve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", metavar="TASK", help="the task to approve, e.g. prod/deploy")
    parser.add_argument(
        "--key",
        required=True,
        metavar="FILE",
        help="your private SSH key, whose public key is your ssh: in the team (e.g. "
        "~/.ssh/id_ed25519)",
    )
    parser.add_argument(
        "--machine",
        action="append",
        metavar="M",
        help="approve the version on this machine only (repeatable; default: every target)",
    )
    parser.add_argument(
        "--version",
        metavar="V",
        help="the version you reviewed, as 'reconcile approvals' shows it: refused if it is "
        "not the one that waits",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", metavar="TASK", help="the task to run now, e.g. prod/migrate")
    parser.add_argument(
        "--machine",
        action="append",
        metavar="M",
        help="run on this target only (repeatable; default: every target)",
    )
    parser.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="a value for one of the task's params (repeatable); the others get their default",
    )
    parser.add_argument(
        "--reason", required=True, metavar="TEXT", help="why it runs now (recorded, audited)"
    )
    parser.add_argument(
        "--priority",
        type=_priority,
        metavar="N",
        help="1 (most urgent) .. 5 (default: the task's priority)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="run them here (unless a worker takes one first) and wait until they end: "
        "exit 0 if all succeeded, 1 otherwise",
    )
    parser.add_argument(
        "--key",
        metavar="FILE",
        help="your private SSH key, to sign the request (required under git.verify: an "
        "operator or admin of the task's team)",
    )


def _priority(text: str) -> int:
    if text.strip() not in {"1", "2", "3", "4", "5"}:
        raise argparse.ArgumentTypeError(f"must be 1..5 (got {text[:20]!r})")
    return int(text)


# Every command, in the order `reconcile --help` lists them.
COMMANDS = (
    Command(
        "validate",
        "check the inventory; no state, no network",
        "reconciler.cli.validate_cmd:run",
        _validate_arguments,
    ),
    Command(
        "plan",
        "what the next pass would enqueue and cancel",
        "reconciler.cli.commands:cmd_plan",
        formats=FORMATS + ("markdown",),
    ),
    Command(
        "status",
        "queue depth, running runs, recent failures, machines",
        "reconciler.cli.commands:cmd_status",
        _status_arguments,
        formats=FORMATS + ("html",),
        description="Queue depth by priority and team, running runs, failures in the last "
        "24 hours, held runs and why, machines. With --format html -o DIR, the web "
        "console's pages as static files in DIR (index.html first).",
    ),
    Command(
        "serve",
        "the read-only web console (overview, runs, tasks, machines) on --addr",
        "reconciler.cli.serve_cmd:cmd_serve",
        _serve_arguments,
        formats=None,
        description="Serve the web console from the state store (SQLite or PostgreSQL) "
        "until SIGTERM or SIGINT: the overview, the runs (filtered, newest first), each "
        "run with its output live, each task and machine; every page also as JSON "
        "(?format=json). Read-only: only GET and HEAD are answered.",
    ),
    Command(
        "worker",
        "only execute queued runs (a shared PostgreSQL queue), until SIGTERM/SIGINT",
        "reconciler.cli.commands:cmd_worker",
        _worker_arguments,
        formats=None,
    ),
    Command(
        "queue", "the run history and queue", "reconciler.cli.commands:cmd_queue", _queue_arguments
    ),
    Command(
        "audit",
        "the tamper-evident audit log and its signed checkpoints",
        "reconciler.cli.audit_cmd:run",
        _audit_arguments,
    ),
    Command(
        "vault",
        "age-encrypted team vaults",
        "reconciler.cli.vault_cmd:cmd_vault",
        _vault_arguments,
        formats=None,
    ),
    Command(
        "machines",
        "machines, reachability and load; 'keyscan HOST[:PORT]' prints a host key to pin",
        "reconciler.cli.commands:cmd_machines",
        _machines_arguments,
    ),
    Command(
        "codeowners",
        "a CODEOWNERS file from the teams' roles",
        "reconciler.cli.commands:cmd_codeowners",
        _codeowners_arguments,
        formats=None,
    ),
    Command(
        "diff",
        "the desired-state change between two git revisions (pull-request review)",
        "reconciler.cli.diff_cmd:run",
        _diff_arguments,
        formats=FORMATS + ("markdown",),
        description="Tasks added, removed and changed between two git revisions, whether each "
        "change re-runs (on which machines, at which priority, in which order), "
        "machine, team and role changes, and changed vaults (with an identity, "
        "which keys; never values). With --state URL (or RECONCILE_STATE), also "
        "which changed tasks already ran. Compares committed revisions only: "
        "uncommitted changes are not included.",
    ),
    Command(
        "accept-history",
        "accept a commit that does not descend from the last one "
        "reconciled (after an amend, rebase or force-push); audited",
        "reconciler.cli.history_cmd:run",
        _accept_history_arguments,
        formats=None,
        description="Make COMMIT the store's last reconciled commit, so that passes accept it "
        "and what descends from it. Audited (history.accepted, with the reason). "
        "Under git.verify COMMIT must be signed by an admin whose roles, in the last "
        "reconciled commit, cover everything that differs from it. Runs nothing.",
    ),
    Command(
        "init",
        "scaffold DIR with a working inventory, .gitignore and a CI workflow",
        "reconciler.cli.init_cmd:run",
        _init_arguments,
        description="Write DIR/inventory/ (reconciler.yaml, a team, a local machine, an "
        "example task, .gitattributes for vaults), DIR/.gitignore (.reconciler/) "
        "and DIR/.github/workflows/reconcile.yml. Overwrites nothing without --force.",
    ),
    Command(
        "approve",
        "sign your approval of a task's waiting version (approval:, the two-person rule)",
        "reconciler.cli.approve_cmd:run_approve",
        _approve_arguments,
        formats=None,
        description="Sign an approval of TASK's version in the last reconciled commit (each "
        "machine's, or --machine's) with your SSH key (ssh-keygen -Y sign, namespace "
        "reconciler-approval). Accepted when the key is a member's ssh: key in the last "
        "reconciled commit, holding the task's approval role in its team, and did not sign "
        "the commit that brought the version; audited (approval.given), then stored. The "
        "next pass starts the runs it completes. Refused (exit 2, nothing written) otherwise.",
    ),
    Command(
        "run",
        "run a task's current version now, with declared parameters (trigger manual)",
        "reconciler.cli.run_cmd:run",
        _run_arguments,
        description="Queue a run of TASK's current version (as passes run it: under "
        "git.verify the last reconciled commit's) on its targets or --machine's, with "
        "--param values in its environment (declared in the task's params:, checked against "
        "allowed and pattern; defaults filled in). Recorded with trigger manual, who asked "
        "and --reason, audited (run.manual); it changes nothing a pass decides for the task. "
        "Under git.verify, --key must sign the request as an operator or admin of the task's "
        "team. Prints the run ids; with --wait runs them and prints their output.",
    ),
    Command(
        "approvals",
        "the task versions that wait for approvals, with who approved so far",
        "reconciler.cli.approve_cmd:run_approvals",
    ),
    Command(
        "keys",
        "rotate the SSH client keys of machines whose key is in the team vault",
        "reconciler.cli.keys_cmd:run",
        _keys_arguments,
    ),
)
_BY_NAME = {command.name: command for command in COMMANDS}


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
        "--max-wait",
        metavar="DURATION",
        default=None,
        help="with --once: how long to wait for the pauses between the batches of rollouts; "
        "a batch whose pause ends later stays pending, held (default 30m)",
    )
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
        "--stream",
        action="store_true",
        help="print each run's output lines as they come, prefixed [task@machine], on stderr",
    )
    parser.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        default=None,
        help="continuous mode: serve Prometheus metrics at http://HOST:PORT/metrics (and /healthz)",
    )
    parser.add_argument(
        "--http-addr",
        metavar="HOST:PORT",
        default=None,
        help="continuous mode: serve /metrics, /healthz, /hooks/git and the web console at "
        "http://HOST:PORT/ (loopback only unless access is configured)",
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
