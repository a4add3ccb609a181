"""`python -m reconciler` runs the `reconcile` command."""

import sys

from reconciler.cli.main import main

sys.exit(main())
