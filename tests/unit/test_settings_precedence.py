"""Settings precedence (cli/settings.py): flag > RECONCILE_* variable > reconciler.yaml >
default, for every setting, with the source of each value kept; a malformed value is a usage
error (exit 2) that names where it came from, raised only when the setting is read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.cli.args import build_parser
from reconciler.cli.settings import (
    DEFAULT,
    DEFAULT_GRACE,
    DEFAULT_LOCK_TIMEOUT,
    FILE,
    HostSettings,
    resolve,
)
from reconciler.core.errors import UsageError
from reconciler.core.model import (
    DEFAULT_CONCURRENCY,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_STATE_URL,
    Settings,
)


def settings_of(*words: str, env: dict[str, str] | None = None) -> HostSettings:
    """The settings of `reconcile WORDS` (parsed by the real parser) under `env` alone."""
    return resolve(build_parser().parse_args(list(words)), env or {})


# --- inventory folder: flag > RECONCILE_INVENTORY > default (no file layer) ---------------


def test_inventory_flag_beats_the_environment():
    got = settings_of("--inventory", "flag", "plan", env={"RECONCILE_INVENTORY": "env"})
    assert (got.inventory.value, got.inventory.source) == (Path("flag"), "--inventory")


def test_inventory_environment_beats_the_default():
    got = settings_of("plan", env={"RECONCILE_INVENTORY": "env"})
    assert (got.inventory.value, got.inventory.source) == (Path("env"), "RECONCILE_INVENTORY")


def test_inventory_default():
    got = settings_of("plan")
    assert (got.inventory.value, got.inventory.source) == (Path("inventory"), DEFAULT)


def test_inventory_given_after_the_command_counts_as_the_flag():
    got = settings_of("plan", "--inventory", "late", env={"RECONCILE_INVENTORY": "env"})
    assert got.inventory.value == Path("late")


# --- state store: flag > RECONCILE_STATE > state: > default --------------------------------

FILE_SETTINGS = Settings(state="sqlite:///file.db", concurrency=7, poll_interval=45)


def test_state_flag_beats_environment_and_file():
    got = settings_of("--state", "sqlite:///flag.db", env={"RECONCILE_STATE": "sqlite:///e.db"})
    state = got.state_url(FILE_SETTINGS)
    assert (state.value, state.source) == ("sqlite:///flag.db", "--state")
    assert state.from_host


def test_state_environment_beats_file():
    got = settings_of("--once", env={"RECONCILE_STATE": "sqlite:///env.db"})
    state = got.state_url(FILE_SETTINGS)
    assert (state.value, state.source) == ("sqlite:///env.db", "RECONCILE_STATE")
    assert state.from_host


def test_state_file_beats_default():
    state = settings_of("--once").state_url(FILE_SETTINGS)
    assert (state.value, state.source) == ("sqlite:///file.db", FILE)
    assert not state.from_host


def test_state_default_also_without_an_inventory():
    for file in (Settings(), None):
        state = settings_of("--once").state_url(file)
        assert (state.value, state.source) == (DEFAULT_STATE_URL, DEFAULT)


def test_state_is_none_when_the_host_does_not_name_one():
    """Under git.verify only the host's word may name the store: `state` is that word alone."""
    assert settings_of("--once").state is None


# --- concurrency: flag > RECONCILE_CONCURRENCY > concurrency: > default --------------------


def test_concurrency_flag_beats_environment_and_file():
    got = settings_of("--concurrency", "3", env={"RECONCILE_CONCURRENCY": "5"})
    value = got.concurrency_for(FILE_SETTINGS)
    assert (value.value, value.source) == (3, "--concurrency")


def test_concurrency_environment_beats_file():
    value = settings_of(env={"RECONCILE_CONCURRENCY": "5"}).concurrency_for(FILE_SETTINGS)
    assert (value.value, value.source) == (5, "RECONCILE_CONCURRENCY")


def test_concurrency_file_beats_default():
    value = settings_of().concurrency_for(FILE_SETTINGS)
    assert (value.value, value.source) == (7, FILE)


def test_concurrency_default():
    value = settings_of().concurrency_for(Settings())
    assert (value.value, value.source) == (DEFAULT_CONCURRENCY, DEFAULT)


def test_concurrency_of_a_worker():
    got = settings_of("worker", "--concurrency", "2", env={"RECONCILE_CONCURRENCY": "5"})
    assert got.concurrency_for(None).value == 2


# --- lock timeout: flag > RECONCILE_LOCK_TIMEOUT > default ---------------------------------


def test_lock_timeout_flag_beats_environment():
    got = settings_of("--lock-timeout", "30s", env={"RECONCILE_LOCK_TIMEOUT": "5m"})
    assert (got.lock_timeout.value, got.lock_timeout.source) == (30.0, "--lock-timeout")


def test_lock_timeout_environment_beats_default():
    got = settings_of(env={"RECONCILE_LOCK_TIMEOUT": "5m"})
    assert (got.lock_timeout.value, got.lock_timeout.source) == (300.0, "RECONCILE_LOCK_TIMEOUT")


def test_lock_timeout_default():
    got = settings_of()
    assert (got.lock_timeout.value, got.lock_timeout.source) == (DEFAULT_LOCK_TIMEOUT, DEFAULT)


def test_lock_timeout_of_accept_history():
    got = settings_of(
        "accept-history", "HEAD", "--reason", "r", "--lock-timeout", "1m",
        env={"RECONCILE_LOCK_TIMEOUT": "5m"},
    )  # fmt: skip
    assert got.lock_timeout.value == 60.0


# --- grace: flag > default (no variable, no file) ------------------------------------------


def test_grace_flag_beats_default():
    got = settings_of("--grace", "2m")
    assert (got.grace.value, got.grace.source) == (120.0, "--grace")


def test_grace_default():
    got = settings_of("worker")
    assert (got.grace.value, got.grace.source) == (DEFAULT_GRACE, DEFAULT)


# --- git.verify: flag > RECONCILE_GIT_VERIFY (the file layer is lineage.decide's) ----------


def test_verify_flag_beats_environment():
    got = settings_of("--verify", "none", env={"RECONCILE_GIT_VERIFY": "range"})
    assert (got.verify.value, got.verify.source) == ("none", "--verify")


def test_verify_environment():
    got = settings_of(env={"RECONCILE_GIT_VERIFY": "head"})
    assert (got.verify.value, got.verify.source) == ("head", "RECONCILE_GIT_VERIFY")


def test_verify_unset_is_none():
    """No host word: lineage.decide reads the last reconciled commit's git.verify."""
    assert settings_of().verify is None


def test_verify_flag_of_accept_history():
    got = settings_of(
        "accept-history", "HEAD", "--reason", "r", "--verify", "head",
        env={"RECONCILE_GIT_VERIFY": "none"},
    )  # fmt: skip
    assert (got.verify.value, got.verify.source) == ("head", "--verify")


# --- trust anchor: flag > RECONCILE_TRUST_ANCHOR > none ------------------------------------


def test_trust_anchor_flag_beats_environment():
    got = settings_of("--trust-anchor", "SHA256:flag", env={"RECONCILE_TRUST_ANCHOR": "SHA256:e"})
    assert (got.trust_anchor.value, got.trust_anchor.source) == ("SHA256:flag", "--trust-anchor")


def test_trust_anchor_environment():
    got = settings_of(env={"RECONCILE_TRUST_ANCHOR": "SHA256:env"})
    assert (got.trust_anchor.value, got.trust_anchor.source) == (
        "SHA256:env",
        "RECONCILE_TRUST_ANCHOR",
    )


def test_trust_anchor_unset_is_none():
    assert settings_of().trust_anchor is None


# --- log format: flag > default; poll interval: file > default ------------------------------


def test_log_format_flag_beats_default():
    assert settings_of("--log-format", "json").log_format.value == "json"
    assert settings_of("status", "--log-format", "json").log_format.source == "--log-format"
    default = settings_of().log_format
    assert (default.value, default.source) == ("text", DEFAULT)


def test_poll_interval_file_beats_default():
    assert HostSettings.poll_interval(FILE_SETTINGS).value == 45.0
    assert HostSettings.poll_interval(FILE_SETTINGS).source == FILE
    assert HostSettings.poll_interval(Settings()).value == float(DEFAULT_POLL_INTERVAL)
    assert HostSettings.poll_interval(None).source == DEFAULT


# --- an empty flag or variable counts as not given ------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "RECONCILE_INVENTORY",
        "RECONCILE_STATE",
        "RECONCILE_CONCURRENCY",
        "RECONCILE_LOCK_TIMEOUT",
        "RECONCILE_GIT_VERIFY",
        "RECONCILE_TRUST_ANCHOR",
    ],
)
def test_an_empty_variable_counts_as_unset(variable):
    got = settings_of(env={variable: ""})
    assert got.inventory.source == DEFAULT
    assert got.state is None and got.concurrency is None
    assert got.verify is None and got.trust_anchor is None
    assert got.lock_timeout.source == DEFAULT


def test_an_empty_state_flag_falls_through_to_the_environment():
    got = settings_of("--state", "", env={"RECONCILE_STATE": "sqlite:///env.db"})
    assert got.state.source == "RECONCILE_STATE"


# --- a malformed value: exit 2, naming where it came from, only when read -------------------


@pytest.mark.parametrize(
    ("words", "env", "read", "message"),
    [
        (
            ["--concurrency", "0"],
            {},
            lambda s: s.concurrency_for(None),
            "--concurrency must be a positive integer (got 0)",
        ),
        (
            [],
            {"RECONCILE_CONCURRENCY": "many"},
            lambda s: s.concurrency_for(None),
            "RECONCILE_CONCURRENCY must be a positive integer (got 'many')",
        ),
        (
            [],
            {"RECONCILE_CONCURRENCY": "-2"},
            lambda s: s.concurrency_for(None),
            "RECONCILE_CONCURRENCY must be a positive integer (got -2)",
        ),
        (
            ["--lock-timeout", "soon"],
            {},
            lambda s: s.lock_timeout,
            "--lock-timeout must be a duration such as 30s, 5m or 1h (got 'soon')",
        ),
        (
            [],
            {"RECONCILE_LOCK_TIMEOUT": "5 minutes"},
            lambda s: s.lock_timeout,
            "RECONCILE_LOCK_TIMEOUT must be a duration such as 30s, 5m or 1h (got '5 minutes')",
        ),
        (
            ["--grace", "later"],
            {},
            lambda s: s.grace,
            "--grace must be a duration such as 30s or 5m (got 'later')",
        ),
        (
            [],
            {"RECONCILE_GIT_VERIFY": "always"},
            lambda s: s.verify,
            "RECONCILE_GIT_VERIFY must be none, head or range (got 'always')",
        ),
    ],
)
def test_a_malformed_value_names_its_source(words, env, read, message):
    got = settings_of(*words, env=env)  # resolving never refuses: reading does
    setting = read(got)
    with pytest.raises(UsageError) as refused:
        setting.check()
    assert str(refused.value) == message
    assert refused.value.exit_code == 2
    with pytest.raises(UsageError):
        _ = setting.value


def test_a_malformed_variable_is_ignored_when_the_flag_is_given():
    got = settings_of(
        "--concurrency", "4", "--lock-timeout", "1m", "--verify", "head",
        env={
            "RECONCILE_CONCURRENCY": "many",
            "RECONCILE_LOCK_TIMEOUT": "soon",
            "RECONCILE_GIT_VERIFY": "always",
        },
    )  # fmt: skip
    assert got.concurrency_for(None).value == 4
    assert got.lock_timeout.value == 60.0
    assert got.verify.value == "head"


def test_a_malformed_variable_of_a_setting_not_read_refuses_nothing():
    """`plan` never reads the concurrency: a bad RECONCILE_CONCURRENCY must not stop it."""
    got = settings_of("plan", env={"RECONCILE_CONCURRENCY": "many"})
    assert got.inventory.value == Path("inventory")
    assert got.state_url(None).value == DEFAULT_STATE_URL


def test_settings_are_frozen():
    got = settings_of()
    with pytest.raises(AttributeError):
        got.grace = None  # type: ignore[misc]


# --- the precedence is written once ---------------------------------------------------------

SETTING_READS = re.compile(
    r'"RECONCILE_(INVENTORY|STATE|CONCURRENCY|LOCK_TIMEOUT|GIT_VERIFY|TRUST_ANCHOR)"'
    r'|getattr\(args, "(state|inventory|concurrency|lock_timeout|grace|verify|trust_anchor)"'
    r"|\bargs\.(state|inventory|concurrency|lock_timeout|grace|verify|trust_anchor)\b"
)


def test_only_settings_py_reads_these_flags_and_variables():
    """Issue 14 item 2: the precedence was hand-written in five places, which drifted (an
    environment value was reported as a flag). Every reader goes through cli/settings.py."""
    package = Path(__file__).resolve().parents[2] / "reconciler"
    readers = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "settings.py" or path.parent.name != "cli"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SETTING_READS.search(line)
    ]
    assert readers == []
