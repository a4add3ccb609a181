"""`python -m reconciler` runs the `reconcile` command."""

from reconciler.cli.main import run

run()
