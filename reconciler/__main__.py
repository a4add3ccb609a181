"""`python -m reconciler` runs the `reconcile` command."""

import sys

from .cli.main import main

sys.exit(main())
