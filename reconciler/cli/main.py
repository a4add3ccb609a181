"""Entry point of `reconcile`: parse, configure logging, run a command, map errors to exit codes.

This is the CLI boundary: the one place that catches every exception, so a user sees one line
per problem and no traceback (unless `-v`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
import traceback
from typing import NoReturn

from reconciler.cli.outputs import (
    Stopped,
    signals_deferred,
    stop_on_signals,
    write_stdout,
)
from reconciler.cli.startup import hide_identity
from reconciler.core.errors import InputError, ReconcilerError
from reconciler.core.redact import Redactor

# The commands (engine, loader, croniter, rich, ...) are imported inside `main`, after
# `hide_identity` has re-executed the process when an identity is given: imported here, every
# start with an identity would pay for them twice (about half a second).


# Whether a command's result was printed on stdout (`present`): an error after it prints no
# second JSON document.
_printed = False

# Structured fields the engine's sinks attach to their log records (`extra=`).
LOG_FIELDS = ("task", "machine", "run", "attempt", "commit", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event and any structured extras."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
        }
        for name in LOG_FIELDS:
            if getattr(record, name, None) is not None:
                data[name] = getattr(record, name)
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["traceback"] = record.exc_text
        return json.dumps(data)


class RedactingFilter(logging.Filter):
    """Masks every known secret in a log record, at every level, before any handler sees it."""

    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        for name in LOG_FIELDS:
            if isinstance(getattr(record, name, None), str):
                setattr(record, name, self.redact(getattr(record, name)))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def configure_logging(verbose: int, quiet: bool, log_format: str | None, redact: Redactor) -> None:
    level = (
        logging.WARNING
        if quiet or not verbose
        else (logging.INFO if verbose == 1 else logging.DEBUG)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter(redact))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Every record of every library reaches this handler, so its filter masks them all;
    # Python warnings (urllib3's name the host) are routed through it too.
    logging.captureWarnings(True)
    # paramiko reports a dropped connection at ERROR with its own words; ours say it better.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


def run() -> NoReturn:
    """The `reconcile` program (console script and `python -m reconciler`)."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process with `code` once `main` returned: the atexit callbacks run and stdout
    and stderr are flushed as at any exit, then `os._exit` skips the interpreter's teardown
    of every module and object, which took 0.1-0.25 s after a pass of a few hundred runs
    (most of what `reconcile --once` spends after its last run ended). Nothing is left to
    it: `main` closed what it opened (store, connections, files). Whatever an ordinary exit
    would still wait for or report takes the ordinary exit: a thread that is not a daemon
    (an exit joins it), a flush that fails (stdout closed early), a code that is not a
    number."""
    import atexit
    import threading

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    waited = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    if run_exitfuncs is None or waited or not isinstance(code, int):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # an atexit callback's own output: the exit code is main's
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run `reconcile` with `argv`; returns the exit code (SPEC §4: 0, 1, 2 or 3)."""
    global _printed, _stdout_failure
    _printed, _stdout_failure = False, None
    verbose, log_format, json_out = 0, None, False
    redact = Redactor()  # one per process: every sink below masks what the vaults revealed
    # Loading a large inventory allocates hundreds of thousands of small acyclic objects;
    # with the default thresholds the cyclic GC rescans them all again and again (a third of
    # `plan`'s time at 20k tasks). Refcounting frees them; collect cycles less eagerly.
    gc.set_threshold(50_000, 20, 50)
    # SIGTERM and SIGHUP end any command as Ctrl-C does, with its line and JSON document
    # (`stopped`, 128 + the signal) instead of a silent death; commands that handle them
    # (the daemon, `--once`) install their own handlers over these.
    restore_signals = stop_on_signals()
    try:
        # A usage error is raised while parsing, before `args.log_format` exists: read the
        # flag from the raw words so that even that error is one JSON object when asked.
        words = sys.argv[1:] if argv is None else argv
        log_format = _log_format_in(words)
        # Under --format json every exit code prints one JSON document on stdout (issue 19):
        # an error too, one raised before or while parsing included.
        from reconciler.cli.json_errors import wants_json

        json_out = wants_json(words)
        if argv is None:  # a real start: hide the identity before anything can run (startup.py)
            hide_identity(sys.argv[1:], os.environ)
        from reconciler.cli.args import build_parser

        args = build_parser().parse_args(argv)
        verbose, log_format = args.verbose or 0, args.log_format
        json_out = getattr(args, "format", None) == "json"
        configure_logging(verbose, bool(args.quiet), args.log_format, redact)
        from reconciler.cli.settings import Context, resolve

        # The settings, resolved once, and the process's redactor, handed to every command:
        # the redactor the log filter masks with, so a vault value any command reveals is
        # masked in every log line too (never a redactor of a command's own).
        return _dispatch(args, Context(resolve(args, os.environ), redact))
    except InputError as exc:
        for diagnostic in exc.diagnostics.errors:
            _say(f"error: {redact(str(diagnostic))}", log_format)
        _traceback_if(verbose, redact, log_format)
        if json_out:
            from reconciler.cli.json_errors import diagnostic_json

            _json_error(
                exc.exit_code,
                _input_kind(exc),
                [diagnostic_json(d, redact) for d in exc.diagnostics.errors],
                [redact(str(w)) for w in exc.diagnostics.warnings],
            )
        return exc.exit_code
    except ReconcilerError as exc:
        _say(f"error: {redact(str(exc))}", log_format)
        _traceback_if(verbose, redact, log_format)
        if json_out:
            _json_error(exc.exit_code, _kind(exc), [_message(redact(str(exc)))])
        return exc.exit_code
    except KeyboardInterrupt:
        _say("interrupted", log_format, "warning")
        if json_out:
            _json_error(130, "interrupted", [_message("interrupted")])
        return 130
    except Stopped as stop:  # SIGTERM or SIGHUP (a command's own handler aside)
        _say(f"stopped by {stop}", log_format, "warning")
        if json_out:
            _json_error(128 + stop.signum, "stopped", [_message(f"stopped by {stop}")])
        return 128 + stop.signum
    except BrokenPipeError:  # `reconcile queue list | head`
        return 0
    except OSError as exc:
        if _stdout_failed(exc):
            # A full or failing disk under stdout (`status > /dev/full`): the machine's
            # trouble, not a bug; said once, and stdout is not flushed again at exit (nor
            # written: no JSON document either, it is stdout that fails).
            _say(f"error: cannot write standard output: {exc.strerror or exc}", log_format)
            _drop_stdout()
            return 3
        # Any other file or system error that no command translated (they name their own
        # outputs, vaults and folders): one line, exit 2 for a path the user can fix, 3 for
        # the machine's trouble; never a traceback.
        from reconciler.cli.outputs import describe_os_error

        code, message, hint, path = describe_os_error(exc)
        message = redact(message)
        line = message + (f" (hint: {hint})" if hint else "")
        _say(f"error: {line}", log_format)
        _traceback_if(verbose, redact, log_format)
        if json_out:
            where = {"path": redact(path) if path else None, "message": message, "hint": hint}
            error = {**_message(line), **where}
            _json_error(code, "input" if code == 2 else "infrastructure", [error])
        return code
    except Exception as exc:  # the CLI boundary: a bug still gets one line, not a traceback
        line = redact(
            f"error: internal error (a bug in reconciler, please report it): "
            f"{type(exc).__name__}: {exc}"
        )
        _say(line + ("" if verbose else " (run with -v for details)"), log_format)
        _traceback_if(verbose, redact, log_format)
        if json_out:
            _json_error(3, "internal", [_message(line.removeprefix("error: "))])
        return 3
    finally:
        restore_signals()


def _input_kind(exc: InputError) -> str:
    from reconciler.core.errors import UsageError

    return "usage" if isinstance(exc, UsageError) else "input"


def _kind(exc: ReconcilerError) -> str:
    from reconciler.core.errors import InfrastructureError

    return "infrastructure" if isinstance(exc, InfrastructureError) else "error"


def _message(text: str) -> dict:
    from reconciler.cli.json_errors import message_json

    return message_json(text)


def _json_error(exit_code: int, kind: str, errors: list[dict], warnings=None) -> None:
    """The error as the one JSON document on stdout, unless the command already printed its
    result (then that document is the one)."""
    if _printed:
        return
    from reconciler.cli.json_errors import document

    try:
        with signals_deferred():  # never half a document (see `present`)
            write_stdout(document(exit_code, kind, errors, warnings))
    except Stopped:  # a signal during the error's document: it is whole, the exit code stays
        pass
    except OSError:  # stdout closed or full: the stderr line said it
        _drop_stdout()


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit does not fail again
    on what could not be written."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _log_format_in(words: list[str]) -> str | None:
    """The value of the last `--log-format X` / `--log-format=X` among `words`, if any."""
    found = None
    for word, following in zip(words, [*words[1:], None]):
        if word == "--":
            break
        if word == "--log-format" and following is not None:
            found = following
        elif word.startswith("--log-format="):
            found = word.partition("=")[2]
    return found


def _say(line: str, log_format: str | None, level: str = "error") -> None:
    """One line on stderr; with `--log-format json`, as one JSON object like the logs."""
    from reconciler.cli.progress import json_line

    print(json_line(line, level) if log_format == "json" else line, file=sys.stderr)


def _dispatch(args, ctx) -> int:
    _refuse_unwritable_format(args)
    _refuse_metrics_addr(args)
    _refuse_bad_pass_flags(args)
    if args.command is None:
        if not args.once and not args.dry_run:
            from reconciler.cli.daemon_cmd import cmd_continuous

            return cmd_continuous(args, ctx)
        from reconciler.cli.commands import cmd_once

        return present(cmd_once(args, ctx), args)
    if args.once or args.dry_run:
        from reconciler.core.errors import UsageError

        raise UsageError("--once and --dry-run go without a command: 'reconcile --once'")
    from reconciler.cli.args import handler

    return present(handler(args)(args, ctx), args)  # imports the command's module now, and only it


def present(result, args) -> int:
    """Print a command's `views.Output` in the format asked for; its exit code. (A command
    that printed its result itself returns only the code.) Tests that run a command's
    module in-process print its result with this too."""
    if isinstance(result, int):
        return result
    from reconciler.cli import views

    global _printed
    fmt = getattr(args, "format", None) or "text"
    if fmt == "text" and result.warnings:
        from reconciler.cli.progress import print_warnings

        print_warnings(result.warnings, args.log_format)
    rendered = views.render(result, fmt)
    _printed = True
    global _stdout_failure
    # A document begun is finished: SIGTERM or SIGHUP while it is written (a slow reader
    # holding the pipe full) waits for its end, then stops the command (128 + the signal,
    # no second document): never half a document.
    try:
        with signals_deferred():
            write_stdout(rendered)
    except OSError as exc:
        _stdout_failure = exc  # stdout's own failure, not a file's (see `_stdout_failed`)
        raise
    return result.exit_code


# The OSError that writing a command's result on stdout raised, if any.
_stdout_failure: OSError | None = None


def _stdout_failed(exc: OSError) -> bool:
    """Whether `exc` is a failure of standard output itself, not of a file a command wrote
    (a vault, an init file, an output named with -o, whose errors are theirs to report): the
    one `present` saw, or a full-disk error naming no file after which stdout still cannot
    be flushed (a command that wrote its result itself)."""
    if exc is _stdout_failure:
        return True
    from reconciler.cli.outputs import is_machine_trouble

    if exc.filename is not None or not is_machine_trouble(exc):
        return False
    try:
        sys.stdout.flush()
    except OSError:
        return True
    except ValueError:  # closed
        return False
    return False


def _refuse_unwritable_format(args) -> None:
    """`--format markdown` is accepted by the root parser (for `--once --dry-run`, which is
    `plan`) and so reaches every command; one that cannot write it refuses it here, before it
    runs, records or changes anything (checked only where a command prints, it had done its
    work, a whole pass or a queue change, and then exited 2)."""
    fmt = getattr(args, "format", None)
    if fmt is None:
        return
    writable = getattr(args, "writable_formats", None) or ()
    if args.command is None and not args.dry_run:  # `--once` prints a summary
        writable = tuple(f for f in writable if f != "markdown")
        if not args.once and fmt != "text":
            from reconciler.core.errors import UsageError

            # The daemon prints no result on stdout, so no JSON document either; its
            # end-of-pass summaries are log lines (`--log-format json`).
            raise UsageError(
                f"--format {fmt} is for --once and the commands; the daemon writes its "
                "pass summaries to stderr: use --log-format json for them"
            )
    if writable and fmt not in writable:
        from reconciler.cli import wiring

        wiring.output_format(args, writable)  # the usage error every command gives for it


def _refuse_metrics_addr(args) -> None:
    """`--metrics-addr` and `--http-addr` serve for the daemon's life. A `--once` pass, a
    worker or a command would serve for seconds or not at all, and a scrape could not count
    on seeing it: refused (exit 2) rather than accepted and ignored (issue 19). Given, not
    true: an empty address (`--metrics-addr "$ADDR"` with ADDR unset) is refused too, never
    taken for no flag."""
    from reconciler.core.errors import UsageError

    for flag, attribute, what in (
        ("--metrics-addr", "metrics_addr", "serve no metrics"),
        ("--http-addr", "http_addr", "serve nothing"),
    ):
        addr = getattr(args, attribute, None)
        if addr is None:
            continue
        if not addr.strip():
            raise UsageError(
                f"{flag} is empty: give HOST:PORT, such as 127.0.0.1:9100 (or leave the "
                f"flag out to {what})"
            )
        if args.command or args.once or args.dry_run:
            command = f"'reconcile {args.command}'" if args.command else "a --once pass"
            served = "/metrics" if flag == "--metrics-addr" else "its pages"
            raise UsageError(
                f"{flag} serves {served} in continuous mode only ('reconcile "
                f"{flag} HOST:PORT'); {command} does not serve it"
            )


def _refuse_bad_pass_flags(args) -> None:
    """A pass or a worker with a malformed --grace or --lock-timeout is refused before it opens
    or creates a state store (`--once --grace x` created one, then exited 2; the daemon
    checked --grace in every pass and logged the same error forever instead of exiting)."""
    if args.command is None or args.command == "worker":
        from reconciler.cli import wiring

        if hasattr(args, "grace"):
            wiring.grace(args)
        if hasattr(args, "lock_timeout"):
            wiring.lock_timeout(args)


def _traceback_if(verbose: int, redact: Redactor, log_format: str | None = None) -> None:
    if verbose and log_format == "json":
        from reconciler.cli.progress import json_line

        print(
            json_line("traceback", "debug", traceback=redact(traceback.format_exc())),
            file=sys.stderr,
        )
    elif verbose:
        print(redact(traceback.format_exc()), file=sys.stderr, end="")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
