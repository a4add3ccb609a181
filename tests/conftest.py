"""Fixtures every test folder may use, shared from `tests/support` instead of copied."""

pytest_plugins = [
    "tests.support.alert_receiver",
    "tests.support.postgres",
    "tests.support.sshd",
    "tests.support.vault_project",
]
