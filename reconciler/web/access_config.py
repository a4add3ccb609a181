"""Where the listener's access comes from: the host's environment (and, later in issue 17,
reconciler.yaml's `http:` settings with a team vault)."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.web.listener import Access

TOKEN_VAR = "RECONCILE_HTTP_TOKEN"


def configured_access(environ: Mapping[str, str]) -> Access:
    """The bearer token from `RECONCILE_HTTP_TOKEN` (blank: none)."""
    token = (environ.get(TOKEN_VAR) or "").strip()
    return Access(token=token or None)
