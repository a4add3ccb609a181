"""Where the listener's access and the webhook's secret come from: the host's environment
(`RECONCILE_HTTP_TOKEN`, `RECONCILE_HOOK_SECRET`, taken out of it at start-up), else the
`http:` settings of reconciler.yaml, whose secrets live in a team vault."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from reconciler.adapters.host_secrets import HOOK_SECRET_VAR, HTTP_TOKEN_VAR, host_secret
from reconciler.core.model import HttpSettings, TeamSecretRef
from reconciler.web.listener import Access, TrustedProxy

# `read(ref)`: the value of a team vault's key; raises VaultError when it cannot be read.
SecretReader = Callable[[TeamSecretRef], str]


def configured_access(
    environ: Mapping[str, str],
    http: HttpSettings | None = None,
    read: SecretReader | None = None,
) -> Access:
    """The bearer token (environment, else `http.token` from its team vault) and the
    trusted proxy (`http.proxy`)."""
    http = http or HttpSettings()
    token = host_secret(HTTP_TOKEN_VAR, environ)
    if token is None and http.token is not None and read is not None:
        token = read(http.token).strip() or None
    proxy = None
    if http.proxy_header:
        proxy = TrustedProxy(header=http.proxy_header, addresses=tuple(http.proxy_from))
    return Access(token=token, proxy=proxy)


def configured_hook_secret(
    environ: Mapping[str, str],
    http: HttpSettings | None = None,
    read: SecretReader | None = None,
) -> str | None:
    """The webhook's secret (environment, else `http.hook_secret`), or None."""
    http = http or HttpSettings()
    secret = host_secret(HOOK_SECRET_VAR, environ)
    if secret is None and http.hook_secret is not None and read is not None:
        secret = read(http.hook_secret).strip() or None
    return secret


TOKEN_VAR = HTTP_TOKEN_VAR


def vault_reader(resolver) -> SecretReader:
    """A `SecretReader` over a `VaultSecrets` (cli.wiring.vault_secrets): the team's vault is
    decrypted with the host's identity, and its values taught to the redactor."""
    from reconciler.core.model import VaultRef

    def read(ref: TeamSecretRef) -> str:
        return resolver(ref.team, VaultRef(ref.name, ref.location)).reveal()

    return read
