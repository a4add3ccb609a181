"""Delivering alerts: the `Notifier` port (`base`), its apprise adapter (`apprise`), and the
`Courier` that sends outbox rows from a background thread (`courier`)."""
