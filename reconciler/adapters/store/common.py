"""What every store backend shares: the SQL file layout, output capping, run texts, URL redaction.

Kept apart from `base` (the port) so the port stays a list of promises, and apart from the
backends so they cannot drift: the same output cap, the same error texts, the same parsing of
`-- migration N: name` / `-- query: name` sections in `sql/<backend>.sql`.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable
from datetime import datetime
from functools import cache
from importlib import resources
from typing import NamedTuple
from urllib.parse import unquote

from reconciler.adapters.audit.chain import AuditEntry
from reconciler.adapters.store.base import OUTPUT_CAP, KillRequest, ManualRun, RunFilter
from reconciler.core import output as output_tail
from reconciler.core.alerts import Delivery
from reconciler.core.model import Freeze
from reconciler.core.redact import MIN_LENGTH

UNKNOWN_ERROR = "the reconciler stopped while this run was executing; its result is unknown"
CANCEL_ERRORS = {  # Cancel.reason -> the error text a cancelled run shows
    "removed": "cancelled: task removed from the desired state",
    "changed": "cancelled: task version changed before the run started",
    "target-removed": "cancelled: machine is no longer a target of the task",
}
QUEUE_CANCEL_ERROR = "cancelled: by `reconcile queue cancel`"


# --- holders -----------------------------------------------------------------------------------


def pid_namespace() -> str:
    """This process's pid namespace (the inode of `/proc/self/ns/pid`), or "" where there
    is none to read. Two containers on one host may share a hostname (host networking) but
    not their pids: an owner names its namespace, so a pid is judged only in its own."""
    try:
        link = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return "".join(ch for ch in link if ch.isdigit())


def process_start(pid: int) -> str:
    """When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
    or "" where it cannot be read (no such process, no /proc). Recorded in an owner, it tells
    the process that holds a run from an unrelated one that got its pid later."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return ""
    fields = text[text.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else ""


def holder_alive(owner: str | None, keep: str | None = None) -> bool | None:
    """Whether the process named by `owner` (`host:pid:token:pidns:start`, see
    `engine.process_owner`) still runs, when this process can tell; None when it cannot.

    Only a process of this host and pid namespace can be looked at: for any other (another
    host, a container sharing the hostname) this is None and a lease decides. A process that
    exists with the start time its owner recorded is alive even when it stopped heartbeating
    (Ctrl-Z, a paused VM): it may go on at any moment. Without a start time (an owner written
    by an older version) a process that exists may be an unrelated one with a reused pid:
    None, the lease decides. This process's own pid under another owner than `keep` is an
    earlier life of this pid (a restarted container's pid 1); without `keep` it is alive.
    """
    if owner is None:
        return None
    fields = owner.split(":")
    if len(fields) not in (4, 5) or not fields[1].isdigit():
        return None
    if fields[0] != socket.gethostname() or fields[3] != pid_namespace():
        return None
    pid = int(fields[1])
    if pid == os.getpid():
        return keep is None or owner == keep
    if not process_runs(pid):
        return False
    if len(fields) == 4 or not fields[4]:
        return None
    return process_start(pid) == fields[4]


def process_runs(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (a killed child nobody reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:  # no /proc (not Linux), or it ended just now: kill(0) said it ran
        return True
    state = text[text.rfind(b")") + 2 : text.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def planner_alive(planner: str | None, beat_fresh: bool, keep: str | None = None) -> bool:
    """Whether the pass that planned a pending run is alive: it may still claim the run, so
    no other pass does. Its process looked at where it can be (see `holder_alive`), else its
    drain's heartbeat within the lease. An unknown planner (a run enqueued before planners
    were recorded) is dead: any pass may adopt its runs."""
    if planner is None:
        return False
    judged = holder_alive(planner, keep)
    return bool(beat_fresh) if judged is None else judged


# --- the SQL file -----------------------------------------------------------------------------


class Migration(NamedTuple):
    """One numbered migration of a SQL file and its statements, in order."""

    version: int
    name: str
    statements: tuple[str, ...]


SqlFile = tuple[tuple[Migration, ...], dict[str, str]]
_SECTION = re.compile(r"^-- (migration (\d+): (.+)|query: (\w+))\s*$", re.MULTILINE)


@cache
def parse_sql_file(filename: str, split: Callable[[str], tuple[str, ...]]) -> SqlFile:
    """`sql/<filename>` as its migrations (in file order) and its named queries.

    `split` cuts a migration into statements the way its driver needs (SQLite executes one
    statement per call; PostgreSQL takes a whole script). Cached: the file never changes.
    """
    text = resources.files(__package__).joinpath(f"sql/{filename}").read_text(encoding="utf-8")
    marks = list(_SECTION.finditer(text))
    migrations: list[Migration] = []
    queries: dict[str, str] = {}
    for mark, nxt in zip(marks, marks[1:] + [None]):
        body = text[mark.end() : nxt.start() if nxt else len(text)].strip()
        if mark.group(4):
            queries[mark.group(4)] = body
        else:
            migrations.append(Migration(int(mark.group(2)), mark.group(3), split(body)))
    return tuple(migrations), queries


def only_comments(text: str) -> bool:
    """Whether `text` holds nothing but blank lines and `--` comments."""
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


# --- run texts ----------------------------------------------------------------------------------


def cap_output(output: str) -> str:
    """The last `OUTPUT_CAP` bytes of `output`, its mark of dropped bytes included (see
    `reconciler.core.output`), cut on a UTF-8 boundary.

    The end of a command's output is where its error is, so the head is what goes. Lone
    surrogates (undecodable bytes kept by the executor) become U+FFFD: stores keep UTF-8.
    """
    return output_tail.cap(output, OUTPUT_CAP)


def ending_without_run(status) -> str:
    """The status value of `StateStore.block`: `blocked` or `halted` (a pending run that never
    ran), or `killed` (`queue kill` of a run waiting out its retry back-off: it has run)."""
    from reconciler.core.state import RunStatus

    status = RunStatus(status)
    if status not in (RunStatus.BLOCKED, RunStatus.HALTED, RunStatus.KILLED):
        raise ValueError(f"a pending run cannot end {status.value} without running")
    return status.value


def cancel_error(reason: str) -> str:
    """The error text of a run the planner cancelled for `reason`."""
    return CANCEL_ERRORS.get(reason, f"cancelled: {reason}")


def freeze_params(scope: str, freeze: Freeze, moment: Callable[[datetime | None], object]) -> dict:
    """The parameters of `record_freeze`, its `until` as the store keeps time (`moment`)."""
    return {
        "scope": scope,
        "reason": freeze.reason,
        "until": moment(freeze.until),
        "allow_priority_1": freeze.allow_priority_1,
    }


# --- URLs in messages ---------------------------------------------------------------------------

# The password of a URL's user info: from the user name's first `:` to the LAST `@` of the
# URL (libpq reads `?`, `#`, `:` and percent escapes in it as written). libpq ends the user
# info at the first `@` or `/`: a raw `@` in a password (`user:pa@ss@host`) makes its tail
# part of the host name, which its errors echo; a raw `/` (base64 passwords hold it) makes
# `user:pass` a host and a port, and the rest a database name. So all of it is masked, and
# an `@` later in the URL (rare in a store URL) costs only what follows the user name.
_USERINFO_PASSWORD = re.compile(r"(://[^/@:]*:)(.*)@")
_QUERY_PASSWORD = re.compile(r"((?:^|[?&;\s])password=)([^&;\s]*)", re.IGNORECASE)


def team_bounds(team: str | None) -> dict:
    """The `team_lo`/`team_hi` query parameters that keep to a team's runs (none: any team):
    its machines are named `team/...`, so they sort from `team/` up to `team0` ('0' is the
    character after '/')."""
    return {
        "team_lo": None if team is None else f"{team}/",
        "team_hi": None if team is None else f"{team}0",
    }


def runs_page_params(filters: RunFilter, before: int | None, limit: int, statuses: object) -> dict:
    """The parameters of the `runs_page` query; `statuses` is the list of statuses as the
    dialect binds it (None for any)."""
    return {
        "before": before,
        "statuses": statuses,
        **team_bounds(filters.team),
        "task": filters.task,
        "machine": filters.machine,
        "commit": filters.commit or None,
        "limit": max(1, limit),
    }


def redact_url(url: str) -> str:
    """`url` with any password replaced by `***`: in the user info (`user:secret@host`) and in
    a `password=` parameter. Every message and log line names a store by this form."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1***@", url))


def url_passwords(url: str) -> list[str]:
    """The passwords written in `url`, as written and percent-decoded, longest first: a
    foreign error message that echoes one is scrubbed with these before anybody sees it.
    Only those of at least `MIN_LENGTH` characters, as for vault values: a shorter one would
    be masked inside every word of the message ('c***necti*** refused' for 'on') and show
    where its letters are; the URL itself is always shown redacted (`redact_url`)."""
    userinfo = [m.group(2) for m in _USERINFO_PASSWORD.finditer(url)]
    raw = userinfo + [m.group(2) for m in _QUERY_PASSWORD.finditer(url)]
    found = {p for p in raw + [unquote(p) for p in raw] if len(p) >= MIN_LENGTH}
    # What libpq takes for the start of the host name after a raw `@` (see
    # `_USERINFO_PASSWORD`): with its `@` it is no word of a message, whatever its length.
    tails = [p.partition("@")[2] for p in userinfo if "@" in p]
    found |= {t + "@" for t in tails} | {t for t in tails if len(t) >= MIN_LENGTH}
    # ... and the pieces libpq reads as a port or a database name after a raw `/`.
    found |= {part for p in userinfo for part in re.split("[/@]", p) if len(part) >= MIN_LENGTH}
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """`text` with every one of `secrets` replaced by `***`, folded onto one line (SPEC §4:
    one line per error; drivers often add `DETAIL:`/`HINT:` lines)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


# --- rows of migration 4 ------------------------------------------------------------------------


def audit_entry(row: tuple) -> AuditEntry:
    """A row (seq, at, actor, action, detail, prev, hash) of `audit_log` as an entry. A detail
    that is not JSON (someone edited the row by hand) is kept as text under `unreadable`: its
    hash then fails, and `audit verify` names the entry instead of crashing."""
    seq, at, actor, action, detail, prev, hash_ = row
    try:
        parsed = json.loads(detail)
    except (TypeError, ValueError):
        parsed = None
    if not isinstance(parsed, dict):
        parsed = {"unreadable": str(detail)}
    return AuditEntry(int(seq), str(at), str(actor), str(action), parsed, str(prev), str(hash_))


def delivery(row: tuple) -> Delivery:
    """A row (id, alert_id, team, target, event, title, body, attempts, last_error, ...) of
    `alert_outbox` as a `Delivery`."""
    id_, alert_id, team, target, event, title, body, attempts, last_error = row[:9]
    return Delivery(id_, alert_id, team, target, event, title, body, attempts, last_error)


def kill_params(request: KillRequest) -> dict:
    """The parameters of the `kill_request` query (both backends)."""
    return {
        "run_id": request.run_id,
        "epoch": request.epoch,
        "grace": float(request.grace),
        "actor": request.actor,
        "reason": request.reason,
    }


# --- manual runs (migration 13) -----------------------------------------------------------------


def params_text(params) -> str | None:
    """The `params` column of a manual run: its parameters as a JSON object (None: none)."""
    return json.dumps(dict(params), sort_keys=True) if params else None


def manual_run_params(run: ManualRun, now: datetime, moment: Callable[[datetime], object]) -> dict:
    """The parameters of `insert_manual_run` for `run`; `moment` binds a timestamp as the
    dialect stores it."""
    return {
        "task": run.task,
        "machine": run.machine,
        "version": run.version,
        "commit": run.commit,
        "priority": run.priority,
        "reason": run.reason,
        "now": moment(now),
        "planner": run.planner,
        "actor": run.actor,
        "params": params_text(run.params),
    }


def manual_fields(row: tuple, at: int) -> dict:
    """A row's trigger, actor and parameters (migration 13, at column `at` of the dialect's
    `runs` row) as `Run` fields; their defaults for a row selected without them (a `Run`
    is made of every field: `build_frozen`)."""
    if len(row) < at + 3:
        return {"trigger": "plan", "actor": None, "params": ()}
    trigger, actor, params = row[at : at + 3]
    return {"trigger": trigger or "plan", "actor": actor, "params": params_of(params)}


def params_of(text: str | None) -> tuple[tuple[str, str], ...]:
    """A run's parameters from its `params` column, by name; () for none or unreadable text
    (a hand-edited row runs without them rather than crashing every drain)."""
    if not text:
        return ()
    try:
        found = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(found, dict):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in found.items()))
