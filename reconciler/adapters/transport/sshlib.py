"""paramiko, imported without invoke.

paramiko's `config` module imports invoke when it is installed (it is: Fabric depends on it),
only to run `Match exec` lines of ssh_config files, which the reconciler never reads (no
~/.ssh/config changes where it connects). invoke pulls in unittest.mock, asyncio and inspect:
about half of paramiko's import time, paid by every pass over SSH machines. So paramiko is
imported here with `import invoke` failing at once; the modules of the SSH transport take it
from here. A later `import invoke` (Fabric, in the benchmarks) works as usual.
"""

from __future__ import annotations

import sys

if "paramiko" not in sys.modules and "invoke" not in sys.modules:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` raises
    try:
        import paramiko
    finally:
        if "invoke" in sys.modules and sys.modules["invoke"] is None:
            del sys.modules["invoke"]

import paramiko  # noqa: E402 (the import above, or one made elsewhere before)

__all__ = ["paramiko"]
