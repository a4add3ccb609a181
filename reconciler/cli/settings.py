"""Where each setting of one `reconcile` command comes from, decided in one place.

Precedence (SPEC §6, docs/commands.md "Where settings come from"): the command-line flag >
the `RECONCILE_*` environment variable > `inventory/reconciler.yaml` > the built-in default.
An empty flag or variable counts as not given.

`resolve` reads the flags and the environment once, into a frozen `HostSettings`; the two
settings the inventory file may also give (`state`, `concurrency`) are completed from the
loaded inventory's settings with `state_url` and `concurrency`, because which inventory is
loaded (the working tree, or under git.verify the commit's own checkout) is decided later.

Every value keeps its source (`--state`, `RECONCILE_STATE`, `reconciler.yaml`, `default`),
so a message can name where a value came from. A malformed value is kept with its problem
and raises `UsageError` (exit 2, naming the source) when it is read, not when it is resolved:
a command that never uses a setting is not refused for it (`plan` ignores a bad
`RECONCILE_CONCURRENCY`, as it always did).

`git.verify` has a file layer too, but not this inventory's file: it is the `reconciler.yaml`
of the last commit reconciled, read from git (lineage.decide); here is only the host's word.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from reconciler.core.durations import parse_duration
from reconciler.core.errors import UsageError
from reconciler.core.redact import Redactor

if TYPE_CHECKING:
    from reconciler.core.model import Settings

# core.model (the inventory's values, 0.015 s to import) is imported by the methods that
# need its defaults: cli.main builds a Context for every command, `vault decrypt` too.

T = TypeVar("T")

DEFAULT_INVENTORY = "inventory"
DEFAULT_LOCK_TIMEOUT = 600.0
DEFAULT_GRACE = 30.0
DEFAULT_MAX_WAIT = 1800.0  # how long `--once` waits for the pauses of rollouts
DEFAULT_LOG_FORMAT = "text"
VERIFY_MODES = ("none", "head", "range")

DEFAULT = "default"
FILE = "reconciler.yaml"


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One resolved value and where it came from: a flag (`--state`), an environment variable
    (`RECONCILE_STATE`), `reconciler.yaml` or `default`. `problem`: why the given text is not
    a valid value (reading `value` then raises it as a usage error, exit 2)."""

    found: T | None
    source: str
    problem: str | None = None

    @property
    def value(self) -> T:
        self.check()
        return self.found  # type: ignore[return-value]

    def check(self) -> None:
        """Refuse a malformed value: `UsageError` (exit 2) naming where it came from."""
        if self.problem is not None:
            raise UsageError(self.problem)

    @property
    def from_host(self) -> bool:
        """Given by the host that runs the reconciler (a flag or the environment), not by a
        file of the inventory or the default."""
        return self.source not in (FILE, DEFAULT)


@dataclass(frozen=True)
class HostSettings:
    """The flags and environment of one command, resolved; None: neither gave the setting."""

    inventory: Setting[Path]
    state: Setting[str] | None
    concurrency: Setting[int] | None
    lock_timeout: Setting[float]
    grace: Setting[float]
    verify: Setting[str] | None
    trust_anchor: Setting[str] | None
    log_format: Setting[str]
    # `--identity FILE` as given; RECONCILE_IDENTITY_FILE and RECONCILE_IDENTITY are taken
    # over at start-up (cli/startup.py) and read by `load_identities`, never from here.
    identity: str | None
    # `--max-wait`: how long `--once` waits for the pauses of rollouts.
    max_wait: Setting[float] = Setting(DEFAULT_MAX_WAIT, DEFAULT)

    def state_url(self, file: Settings | None) -> Setting[str]:
        """The state store: flag > environment > `state:` of `file` (the loaded inventory's
        settings; None when it did not load) > the default."""
        if self.state is not None:
            return checked_state(self.state)
        if file is not None and file.state:
            return checked_state(Setting(file.state, FILE))
        from reconciler.core.model import DEFAULT_STATE_URL

        return Setting(DEFAULT_STATE_URL, DEFAULT)

    def concurrency_for(self, file: Settings | None) -> Setting[int]:
        """Runs at once: flag > environment > `concurrency:` of `file` > the default."""
        if self.concurrency is not None:
            return self.concurrency
        if file is not None and file.concurrency is not None:
            return _positive_int(file.concurrency, FILE)
        from reconciler.core.model import DEFAULT_CONCURRENCY

        return Setting(DEFAULT_CONCURRENCY, DEFAULT)

    @staticmethod
    def poll_interval(file: Settings | None) -> Setting[float]:
        """Seconds between the daemon's ticks: `poll_interval:` of `file` > the default (no
        flag, no variable)."""
        if file is not None and file.poll_interval:
            return Setting(float(file.poll_interval), FILE)
        from reconciler.core.model import DEFAULT_POLL_INTERVAL

        return Setting(float(DEFAULT_POLL_INTERVAL), DEFAULT)


@dataclass(frozen=True)
class Context:
    """What every command is given besides its arguments (cli.main builds it once): the
    settings, resolved once, and the services of the process (the redactor every sink and
    log line masks secrets with), passed explicitly rather than carried on the argparse
    namespace."""

    settings: HostSettings
    redactor: Redactor


def resolve(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> HostSettings:
    """The flags of `args` (a command without a flag simply lacks it) over `environ`."""

    def given(flag: str, attribute: str, variable: str | None = None):
        """(text, source) of the first of the flag and the variable that is given."""
        value = getattr(args, attribute, None)
        if value is not None and value != "":
            return value, flag
        if variable is not None and environ.get(variable):
            return environ[variable], variable
        return None, None

    def layer(flag, attribute, variable, parse: Callable[[object, str], Setting]):
        text, source = given(flag, attribute, variable)
        return None if source is None else parse(text, source)

    inventory, source = given("--inventory", "inventory", "RECONCILE_INVENTORY")
    log_format, log_source = given("--log-format", "log_format")
    return HostSettings(
        inventory=Setting(Path(inventory or DEFAULT_INVENTORY), source or DEFAULT),
        state=layer("--state", "state", "RECONCILE_STATE", _text),
        concurrency=layer("--concurrency", "concurrency", "RECONCILE_CONCURRENCY", _positive_int),
        lock_timeout=layer(
            "--lock-timeout", "lock_timeout", "RECONCILE_LOCK_TIMEOUT", _lock_timeout
        )
        or Setting(DEFAULT_LOCK_TIMEOUT, DEFAULT),
        grace=layer("--grace", "grace", None, _grace) or Setting(DEFAULT_GRACE, DEFAULT),
        verify=layer("--verify", "verify", "RECONCILE_GIT_VERIFY", _verify_mode),
        trust_anchor=layer("--trust-anchor", "trust_anchor", "RECONCILE_TRUST_ANCHOR", _text),
        log_format=Setting(log_format or DEFAULT_LOG_FORMAT, log_source or DEFAULT),
        identity=getattr(args, "identity", None) or None,
        max_wait=layer("--max-wait", "max_wait", None, _max_wait)
        or Setting(DEFAULT_MAX_WAIT, DEFAULT),
    )


def checked_state(setting: Setting[str]) -> Setting[str]:
    """`setting` (a state store URL), or, when it is malformed, the same setting holding the
    problem that names its source (`--state: ...`, `RECONCILE_STATE: ...`). Checked when the
    store is asked for, not at `resolve`: the store factory is imported by commands that
    open a store, never by `vault decrypt`."""
    from reconciler.adapters.store.factory import sqlite_path
    from reconciler.core.errors import InputError

    url = setting.found
    if setting.problem is not None or url is None:
        return setting
    if url.split("://", 1)[0].lower() in ("postgresql", "postgres") and "://" in url:
        return setting  # a libpq URL: psycopg says what is wrong with it when it connects
    try:
        sqlite_path(url)
    except InputError as exc:
        reasons = "; ".join(str(d) for d in exc.diagnostics.errors)
        return Setting(None, setting.source, f"{setting.source}: bad state store URL: {reasons}")
    return setting


def _text(raw: object, source: str) -> Setting[str]:
    return Setting(str(raw), source)


def _positive_int(raw: object, source: str) -> Setting[int]:
    try:
        value = int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return Setting(None, source, f"{source} must be a positive integer (got {raw!r})")
    if value < 1:
        return Setting(None, source, f"{source} must be a positive integer (got {value})")
    return Setting(value, source)


def _duration(example: str) -> Callable[[object, str], Setting[float]]:
    def parse(raw: object, source: str) -> Setting[float]:
        try:
            return Setting(float(parse_duration(raw)), source)
        except ValueError:
            return Setting(
                None, source, f"{source} must be a duration such as {example} (got {raw!r})"
            )

    return parse


_lock_timeout = _duration("30s, 5m or 1h")
_grace = _duration("30s or 5m")
_max_wait = _duration("0s, 5m or 1h")


def _verify_mode(raw: object, source: str) -> Setting[str]:
    if raw not in VERIFY_MODES:
        return Setting(None, source, f"{source} must be none, head or range (got {raw!r})")
    return Setting(str(raw), source)
