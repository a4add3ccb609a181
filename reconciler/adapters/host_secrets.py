"""Secrets the host gives the reconciler in its environment, besides the identity: the HTTP
listener's bearer token and the git webhook's secret.

Start-up takes them out of the environment as it does the identity (cli/startup.py: a local
task of the same OS user could read /proc/PID/environ, and git and ssh would inherit them)
and hands them over to the re-executed process, which keeps them here, in memory only."""

from __future__ import annotations

from collections.abc import Mapping

HTTP_TOKEN_VAR = "RECONCILE_HTTP_TOKEN"
HOOK_SECRET_VAR = "RECONCILE_HOOK_SECRET"
HIDDEN_VARS = (HTTP_TOKEN_VAR, HOOK_SECRET_VAR)

_handed: dict[str, str] = {}


def adopt(values: Mapping[str, str]) -> None:
    """Keep what start-up took out of the environment."""
    _handed.update({k: v for k, v in values.items() if k in HIDDEN_VARS and v})


def host_secret(name: str, environ: Mapping[str, str]) -> str | None:
    """`name` from the environment, else as start-up handed it over; blank is none."""
    value = (environ.get(name) or _handed.get(name) or "").strip()
    return value or None
