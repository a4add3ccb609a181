"""The apprise adapter of the `Notifier` port: the one module that imports apprise.

Each `send` builds a fresh apprise object for one URL (no state shared between threads or
deliveries) and runs it in a helper thread that is waited on for at most the timeout: a
receiver that accepts the connection and never answers cannot hold the courier longer than
that. The socket timeouts (`cto`, `rto`) are lowered to the timeout too unless the URL sets
its own. apprise reports failure as `False` plus log lines; the warning lines logged by the
sending thread become the `NotifyError`'s text.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qs, urlsplit

from reconciler.adapters.notify.base import DEFAULT_TIMEOUT, Notifier
from reconciler.core.errors import NotifyError

_SEVERITIES = ("info", "success", "warning", "failure")


class AppriseNotifier(Notifier):
    """Sends through apprise (every URL scheme apprise knows: `json://`, `mailto://`, ...)."""

    def send(
        self,
        url: str,
        title: str,
        body: str,
        *,
        severity: str = "failure",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Deliver within `timeout` seconds or raise `NotifyError` (see `Notifier.send`)."""
        import apprise  # imported here: only processes that alert pay for it

        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            raise NotifyError(
                "not a valid apprise URL (see https://github.com/caronc/apprise/wiki)"
            )
        _bound_socket_timeouts(plugin, url, timeout)
        notifier = apprise.Apprise()
        notifier.add(plugin)
        notify_type = apprise.NotifyType(severity if severity in _SEVERITIES else "failure")
        outcome: dict[str, object] = {}

        def attempt() -> None:
            with _Warnings() as warnings:
                try:
                    outcome["ok"] = notifier.notify(body=body, title=title, notify_type=notify_type)
                except Exception as exc:  # apprise raises little, but a plugin may: keep it here
                    outcome["error"] = f"{type(exc).__name__}: {exc}"
            outcome["warnings"] = warnings.lines

        thread = threading.Thread(target=attempt, name="alert-send", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise NotifyError(f"no answer within {timeout:g}s")
        if outcome.get("ok"):
            return
        reason = (
            outcome.get("error")
            or "; ".join(outcome.get("warnings") or ())
            or "apprise reported a failure"
        )
        raise NotifyError(str(reason))


def _bound_socket_timeouts(plugin, url: str, timeout: float) -> None:
    """Lower the plugin's connect/read timeouts to `timeout` unless the URL sets them."""
    given = parse_qs(urlsplit(url).query)
    for param, attribute in (("cto", "socket_connect_timeout"), ("rto", "socket_read_timeout")):
        current = getattr(plugin, attribute, None)
        if param not in given and isinstance(current, (int, float)):
            setattr(plugin, attribute, min(float(current), float(timeout)))


class _Warnings(logging.Handler):
    """Collects the warnings apprise logs from this thread while installed (its reasons for
    a failed delivery); other threads' records are left alone."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []
        self.logger = logging.getLogger("apprise")

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())

    def __enter__(self) -> _Warnings:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)


__all__ = ["AppriseNotifier"]
