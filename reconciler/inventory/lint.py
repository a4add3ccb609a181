"""Warnings for credentials written in plain text into the inventory.

Secrets belong in the team vault (`{vault: NAME}`), which keeps them out of git history, argv
and output. This lint looks at what a task sends to a machine: plain env values whose name
says "secret", and well-known credential shapes in env values and in command/script/check
text. A shell reference (`$DB_PASSWORD`, `${TOKEN}`, `$(cat file)`) is never a finding.

Team alert URLs and the settings' state URL are checked for the same credential shapes.

A finding names the field and the kind of credential, never the suspected value: lint output
ends up in CI logs, and echoing the secret there would leak it a second time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

from reconciler.core.diagnostics import Diagnostic, Location, Severity
from reconciler.core.model import Inventory, Settings, Task, Team, VaultRef

# Env names that say "this is a secret". `_FILE`/`_PATH` suffixes name where a secret is, not it.
SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIAL|AUTH_?KEY",
    re.IGNORECASE,
)
NOT_SECRET_SUFFIX = re.compile(r"_(FILE|PATH|DIR|NAME|ID|USER|USERNAME|URL_ENV)$", re.IGNORECASE)
# Values too plain to be a secret (flags such as `USE_TOKEN: "true"`).
TRIVIAL_VALUES = {"", "true", "false", "yes", "no", "on", "off", "0", "1", "none", "null"}

# A literal: not a shell expansion (or a quoted one), nor the next option (`-e`).
_LITERAL = r"""(?!["']?[$-])["']?[^\s"'$;|&]+"""

PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key block", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    (
        "a GitHub token",
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
    ),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("a bearer token", re.compile(r"Authorization:\s*Bearer\s+" + _LITERAL, re.IGNORECASE)),
    (
        "a password in a URL",
        re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@]+:(?![\"']?\$)[^\s/@$]+@", re.IGNORECASE),
    ),
    ("a password option", re.compile(r"--password=" + _LITERAL)),
    (
        "a mysql password",
        re.compile(
            r"\bmysql(?:dump|admin|import|check|sh)?\b[^\n;|&]*?(?:--password\s+"
            + _LITERAL
            + r"|\s-p(?![\s$\"'])\S+)"
        ),
    ),
    (
        "a password assignment",
        re.compile(
            r"(?<![\w-])[A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY)[A-Z0-9_]*=" + _LITERAL,
            re.IGNORECASE,
        ),
    ),
)


def find_hardcoded_credentials(inventory: Inventory) -> list[Diagnostic]:
    """WARNING diagnostics for likely hardcoded credentials in the inventory's tasks.

    Each is located at the offending value and says how to move it to the vault; none
    contains the suspected secret. Sorted by location; never raises.
    """
    findings = [d for task in inventory.tasks.values() for d in _task_findings(task)]
    findings += [d for team in inventory.teams.values() for d in _alert_findings(team)]
    findings += list(_settings_findings(inventory.settings))
    return sorted(findings, key=Diagnostic.sort_key)


def find_ended_freezes(inventory: Inventory, now: datetime) -> list[Diagnostic]:
    """WARNING diagnostics for freezes (`suspend:`) whose `until` has passed: they hold
    nothing any more, and a reader of the file might think they do. Sorted by location."""
    objects = [
        *(("team", t.name, t.suspend) for t in inventory.teams.values()),
        *(("machine", m.name, m.suspend) for m in inventory.machines.values()),
        *(("task", t.id, t.suspend) for t in inventory.tasks.values()),
    ]
    findings = [
        _warning(
            freeze.location or Location("<inventory>"),
            f"the freeze of {kind} '{name}' ended at "
            f"{freeze.until.isoformat().replace('+00:00', 'Z')}: it holds nothing",
            "remove the suspend: block, or move its until: into the future",
        )
        for kind, name, freeze in objects
        if freeze is not None and freeze.until is not None and freeze.until <= now
    ]
    return sorted(findings, key=Diagnostic.sort_key)


def find_short_approvals(inventory: Inventory) -> list[Diagnostic]:
    """WARNING diagnostics for tasks whose `approval:` asks for more approvers than their
    team has members in that role with an `ssh:` key (an admin counts as an operator): no
    new version of such a task could ever run. Sorted by location."""
    findings = []
    for task in inventory.tasks.values():
        rule, team = task.approval, inventory.teams.get(task.team)
        if rule is None or team is None:
            continue
        able = sum(1 for m in team.members if m.ssh and rule.held_by(m.role))
        if able < rule.count:
            findings.append(
                _warning(
                    rule.location or task.where("approval"),
                    f"task '{task.id}' needs {rule.count} {rule.role.value} approval"
                    f"{'s' if rule.count != 1 else ''} but team '{task.team}' has {able} "
                    f"member{'s' if able != 1 else ''} who can give one: its new versions "
                    "would wait forever",
                    f"lower approval.count, or add {rule.role.value}s with an ssh: key "
                    f"to team '{task.team}'",
                )
            )
    return sorted(findings, key=Diagnostic.sort_key)


def _task_findings(task: Task) -> Iterator[Diagnostic]:
    for name, value in task.env:
        if not isinstance(value, VaultRef):
            yield from _env_findings(task, name, value)
    for field_name in ("command", "script", "check"):
        text = getattr(task, field_name)
        if text:
            for kind in credential_kinds(text):
                yield _warning(
                    task.where(field_name),
                    f"{field_name} contains what looks like {kind}",
                    f"store it with 'reconcile vault set {task.team} NAME', pass it as "
                    f"env: {{NAME: {{vault: NAME}}}} and write $NAME here",
                )


def _env_findings(task: Task, name: str, value: str) -> Iterator[Diagnostic]:
    where = task.where(f"env.{name}")
    hint = f"use {{vault: {name}}} and store it with 'reconcile vault set {task.team} {name}'"
    if looks_like_secret_name(name) and not _is_reference_or_trivial(value):
        yield _warning(where, f"env {name} looks like a hardcoded credential", hint)
        return
    for kind in credential_kinds(value):
        yield _warning(where, f"env {name} contains what looks like {kind}", hint)


def _alert_findings(team: Team) -> Iterator[Diagnostic]:
    # The model keeps no location per alert target: point at the team.
    where = team.location or Location("<inventory>")
    for index, target in enumerate(team.alerts):
        if isinstance(target.url, str):
            for kind in credential_kinds(target.url):
                yield _warning(
                    where,
                    f"alerts[{index}] of team {team.name} contains what looks like {kind}",
                    f"use {{vault: ALERT_URL}} and store the URL with "
                    f"'reconcile vault set {team.name} ALERT_URL'",
                )


def _settings_findings(settings: Settings) -> Iterator[Diagnostic]:
    if settings.state:
        for kind in credential_kinds(settings.state):
            yield _warning(
                settings.location or Location("reconciler.yaml"),
                f"state contains what looks like {kind}",
                "give the state URL with --state or RECONCILE_STATE instead of committing it",
            )


def looks_like_secret_name(name: str) -> bool:
    """Whether an environment variable name says it holds a secret (DB_PASSWORD, API_TOKEN)."""
    return bool(SECRET_NAME.search(name)) and not NOT_SECRET_SUFFIX.search(name)


def credential_kinds(text: str) -> list[str]:
    """The kinds of credential shapes found in `text` (e.g. "an AWS access key id").

    One secret can fit several shapes (a GitHub token inside a URL); a match that overlaps
    one already found is the same secret, so it adds no second kind.
    """
    kinds: list[str] = []
    claimed: list[tuple[int, int]] = []
    for kind, pattern in PATTERNS:
        spans = [m.span() for m in pattern.finditer(text)]
        if any(not _overlaps(span, claimed) for span in spans):
            kinds.append(kind)
        claimed.extend(spans)
    return kinds


def _overlaps(span: tuple[int, int], others: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in others)


def _is_reference_or_trivial(value: str) -> bool:
    stripped = value.strip().strip("\"'")
    return stripped.lower() in TRIVIAL_VALUES or stripped.startswith("$")


def _warning(location: Location, message: str, hint: str) -> Diagnostic:
    return Diagnostic(location, message, hint, Severity.WARNING)
