"""paramiko, imported without invoke and without importlib.metadata.

paramiko's `config` module imports invoke when it is installed (it is: Fabric depends on it),
only to run `Match exec` lines of ssh_config files, which the reconciler never reads (no
~/.ssh/config changes where it connects). invoke pulls in unittest.mock, asyncio and inspect:
about half of paramiko's import time, paid by every pass over SSH machines. So paramiko is
imported here with `import invoke` failing at once; the modules of the SSH transport take it
from here. A later `import invoke` (Fabric, in the benchmarks) works as usual.

paramiko's `__init__` also asks importlib.metadata for its own version (for its SSH banner):
that import brings email, zipfile, csv and a scan of site-packages, ~20 ms of a pass's start,
before its first run can be sent. The version is read from the name of paramiko's
`.dist-info` folder instead, through a stand-in module that any other use of
importlib.metadata during the import turns back into the real one.
"""

from __future__ import annotations

import os
import sys
import types


def _version_from_dist_info() -> str | None:
    """paramiko's version from its installed `paramiko-X.Y.Z.dist-info` folder beside the
    package on sys.path, or None when that is not how it is installed."""
    for entry in sys.path:
        folder = entry or "."
        if not os.path.isdir(os.path.join(folder, "paramiko")):
            continue
        try:
            names = os.listdir(folder)
        except OSError:
            return None
        found = [
            name[len("paramiko-") : -len(".dist-info")]
            for name in names
            if name.startswith("paramiko-") and name.endswith(".dist-info")
        ]
        return found[0] if len(found) == 1 else None
    return None


class _Metadata(types.ModuleType):
    """Stands in for importlib.metadata while paramiko is imported: `version("paramiko")` is
    answered from the folder name; anything else imports the real module and asks it."""

    def __init__(self, paramiko_version: str):
        super().__init__("importlib.metadata")
        self._paramiko_version = paramiko_version

    def version(self, name: str) -> str:
        if name == "paramiko":
            return self._paramiko_version
        return _real_metadata().version(name)

    def __getattr__(self, name: str):
        return getattr(_real_metadata(), name)


def _real_metadata():
    if isinstance(sys.modules.get("importlib.metadata"), _Metadata):
        del sys.modules["importlib.metadata"]
    import importlib.metadata

    return importlib.metadata


def _import_paramiko() -> None:
    stand_in = None
    if "importlib.metadata" not in sys.modules:
        version = _version_from_dist_info()
        if version is not None:
            stand_in = sys.modules["importlib.metadata"] = _Metadata(version)
    sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` raises
    try:
        import paramiko  # noqa: F401
    finally:
        if "invoke" in sys.modules and sys.modules["invoke"] is None:
            del sys.modules["invoke"]
        if stand_in is not None and sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]


if "paramiko" not in sys.modules and "invoke" not in sys.modules:
    _import_paramiko()

import paramiko  # noqa: E402 (the import above, or one made elsewhere before)

__all__ = ["paramiko"]
