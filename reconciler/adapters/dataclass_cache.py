"""The compiled methods of dataclasses, kept across starts like Python's own bytecode.

`@dataclass` writes each method it generates (`__init__`, `__repr__`, `__eq__`, `__hash__`,
and for a frozen class `__setattr__` and `__delattr__`) as source text and compiles it when
the class is created. A pass imports about ninety dataclasses: compiling their methods was
50-80 ms of every command's start, a quarter of its imports, paid again at each start for
the same text. `install` lets the `dataclasses` module execute cached code instead: the code
compiled from a text is kept in a file beside this package's bytecode, keyed by the text
itself, so a class whose fields change compiles anew and nothing stale is ever used.
Executing the cached code gives exactly the function compiling the text gives (it is the
same compilation, done once).

The file is written only where Python writes bytecode (not under PYTHONDONTWRITEBYTECODE or
`-B`), with the interpreter's bytecode magic number in it; a missing, unreadable or foreign
file is ignored. It has the trust of the `.pyc` files beside it: whoever may write one may
write the other.
"""

from __future__ import annotations

import atexit
import builtins
import dataclasses
import marshal
import os
import sys
from importlib.util import MAGIC_NUMBER

# Past this many texts the file keeps only those the last process used: versions come and go.
MAX_ENTRIES = 2048


class MethodCache:
    """Code compiled from source texts, read from and saved to `path`."""

    def __init__(self, path: str | None):
        self.path = path
        self.codes: dict[str, object] = self._load()
        self.used: set[str] = set()
        self.added = 0

    def _load(self) -> dict[str, object]:
        if self.path is None:
            return {}
        try:
            with open(self.path, "rb") as file:
                data = file.read()
            if not data.startswith(MAGIC_NUMBER):
                return {}
            codes = marshal.loads(data[len(MAGIC_NUMBER) :])
        except (OSError, ValueError, EOFError, TypeError):
            return {}
        return codes if isinstance(codes, dict) else {}

    def code(self, source: str):
        """The code of `source`, compiled as `exec` of the text would compile it: no future
        flags of the caller (`dataclasses` has none; this module's own must not leak in)."""
        code = self.codes.get(source)
        if code is None:
            code = compile(source, "<string>", "exec", dont_inherit=True)
            self.codes[source] = code
            self.added += 1
        self.used.add(source)
        return code

    def exec(self, source, globals=None, locals=None):  # noqa: A002 - exec's own names
        """`exec` for the `dataclasses` module: a text it generates runs from the cache."""
        if type(source) is str:
            source = self.code(source)
        return builtins.exec(source, globals, locals)

    def save(self) -> None:
        """Write the cache if this process compiled anything new (atomically: a reader sees
        the old file or the new one). Best effort: a read-only install keeps compiling."""
        if self.path is None or not self.added or sys.dont_write_bytecode:
            return
        codes = self.codes
        if len(codes) > MAX_ENTRIES:
            codes = {source: codes[source] for source in self.used}
        import tempfile  # only when there is something to write: it costs its import

        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=folder, prefix=".dataclass-methods-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(MAGIC_NUMBER + marshal.dumps(codes))
                os.chmod(partial, 0o644)
                os.replace(partial, self.path)
            except BaseException:
                os.unlink(partial)
                raise
        except (OSError, ValueError):
            pass


def default_path() -> str | None:
    """Where the cache of this interpreter lives: beside the package's bytecode."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    folder = os.path.join(os.path.dirname(__file__), "__pycache__")
    return os.path.join(folder, f"dataclass-methods.{tag}.marshal")


def install(path: str | None = None) -> MethodCache:
    """Make the `dataclasses` module execute its generated methods through a cache at `path`
    (by default `default_path()`), saved when the process exits."""
    cache = MethodCache(path if path is not None else default_path())
    dataclasses.exec = cache.exec  # found before the builtin by the module's own lookups
    atexit.register(cache.save)
    return cache
