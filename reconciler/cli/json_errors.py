"""An error as the one JSON document a command prints on stdout under `--format json`.

Under `--format json` every exit code comes with exactly one JSON document on stdout (issue
19): the command's result, or, when it stopped on an error (an invalid inventory, a bad flag,
an unreachable store, an interrupt, a bug), this document. The one-line error still goes to
stderr as well, for a person reading a CI log.

    {"ok": false, "exit_code": 2, "kind": "input",
     "errors": [{"path", "line", "column", "message", "hint", "text"}], "warnings": ["..."]}

`kind`: `input` (the inventory, a vault, a run id: exit 2), `usage` (a flag or argument:
exit 2), `infrastructure` (the store, git, the lock: exit 3), `internal` (a bug: exit 3),
`interrupted` (SIGINT: 130), `stopped` (SIGTERM or SIGHUP: 128 + the signal).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from reconciler.core.diagnostics import Diagnostic

# Where an error without a file is reported (`UsageError`, `InputError("...")`).
_NOWHERE = "reconcile"


def diagnostic_json(diagnostic: Diagnostic, redact: Callable[[str], str]) -> dict:
    """One problem: where (file, line, column; null when it is no file's), what, the hint,
    and the one-line text the text format prints."""
    where = diagnostic.location
    located = not (where.path == _NOWHERE and not where.line)
    hint = f" (hint: {diagnostic.hint})" if diagnostic.hint else ""
    return {
        "path": where.path if located else None,
        "line": where.line or None,
        "column": where.column or None,
        "message": redact(diagnostic.message),
        "hint": redact(diagnostic.hint) if diagnostic.hint else None,
        "text": redact(str(diagnostic) if located else diagnostic.message + hint),
    }


def message_json(message: str) -> dict:
    """A problem that is no file's (a store, git, a signal): the message alone."""
    return {
        "path": None,
        "line": None,
        "column": None,
        "message": message,
        "hint": None,
        "text": message,
    }


def document(
    exit_code: int, kind: str, errors: list[dict], warnings: list[str] | None = None
) -> str:
    """The error document, ending with a newline."""
    return (
        json.dumps(
            {
                "ok": False,
                "exit_code": exit_code,
                "kind": kind,
                "errors": errors,
                "warnings": warnings or [],
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )


def wants_json(words: list[str]) -> bool:
    """Whether the last `--format X` / `--format=X` among the raw arguments is json: a usage
    error is raised while parsing, before the parsed `args.format` exists."""
    found = None
    for word, following in zip(words, [*words[1:], None]):
        if word == "--":
            break
        if word == "--format" and following is not None:
            found = following
        elif word.startswith("--format="):
            found = word.partition("=")[2]
    return found == "json"


__all__ = ["diagnostic_json", "document", "message_json", "wants_json"]
