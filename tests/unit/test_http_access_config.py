"""Where the listener's token and the webhook's secret come from (web/access_config.py): the
host's environment first, else the `http:` settings' team vault key; a blank value is none."""

from __future__ import annotations

from reconciler.core.model import HttpSettings, TeamSecretRef
from reconciler.web.access_config import configured_access, configured_hook_secret

SETTINGS = HttpSettings(
    token=TeamSecretRef("ops", "CONSOLE_TOKEN"),
    proxy_header="X-Forwarded-User",
    proxy_from=("10.0.0.5",),
    hook_secret=TeamSecretRef("ops", "GIT_HOOK"),
)
VAULT = {("ops", "CONSOLE_TOKEN"): "from-vault\n", ("ops", "GIT_HOOK"): "hook-from-vault"}


def read(ref: TeamSecretRef) -> str:
    return VAULT[(ref.team, ref.name)]


def test_the_vault_gives_the_token_and_the_settings_the_proxy():
    access = configured_access({}, SETTINGS, read)
    assert access.token == "from-vault" and access.configured
    assert access.proxy.header == "X-Forwarded-User" and access.proxy.addresses == ("10.0.0.5",)
    assert configured_hook_secret({}, SETTINGS, read) == "hook-from-vault"


def test_the_environment_wins_and_blank_is_none():
    env = {"RECONCILE_HTTP_TOKEN": "from-env", "RECONCILE_HOOK_SECRET": "hook-env"}
    assert configured_access(env, SETTINGS, read).token == "from-env"
    assert configured_hook_secret(env, SETTINGS, read) == "hook-env"
    blank = {"RECONCILE_HTTP_TOKEN": "  "}
    assert configured_access(blank).token is None and not configured_access(blank).configured


def test_the_token_never_shows_in_the_access_repr():
    assert "from-vault" not in repr(configured_access({}, SETTINGS, read))
