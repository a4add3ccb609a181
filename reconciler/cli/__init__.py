"""The `reconcile` command line: arguments, wiring, commands and views."""
