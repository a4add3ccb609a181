"""Where the identity is configured from outside: a flag, a file named in the environment, or
the key text itself in the environment.

A module of its own, importing nothing, because start-up (cli/startup.py) must recognise them
and re-execute the process before the heavy parts of the reconciler are imported."""

IDENTITY_FLAG = "--identity"
IDENTITY_FILE_VAR = "RECONCILE_IDENTITY_FILE"
IDENTITY_KEY_VAR = "RECONCILE_IDENTITY"
