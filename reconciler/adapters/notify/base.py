"""The notifier port: send one message to one resolved URL, or raise `NotifyError`.

A notifier knows nothing of alerts, outboxes or vaults: the `Courier` resolves the target,
bounds the wait and records the result. `NotifyError` (DESIGN §4) is logged and counted by
the courier and never fails a pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from reconciler.core.errors import NotifyError

DEFAULT_TIMEOUT = 10.0  # seconds one delivery attempt may take


class Notifier(ABC):
    """Delivers one message. Implementations must be safe to call from a background thread."""

    @abstractmethod
    def send(
        self,
        url: str,
        title: str,
        body: str,
        *,
        severity: str = "failure",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Deliver `title`/`body` to `url` within about `timeout` seconds.

        `severity` is `failure`, `warning`, `success` or `info`. Raises `NotifyError` saying
        why it was not delivered, never with the URL's secret in it (the caller redacts
        with what it resolved, but a notifier must not add the URL itself).
        """


__all__ = ["DEFAULT_TIMEOUT", "NotifyError", "Notifier"]
