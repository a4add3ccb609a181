"""Open a state store from its URL (`--state`, `RECONCILE_STATE`, or `state:` in settings).

Accepted forms (SPEC §2):
- `sqlite:///relative/path.db` — relative to the working directory;
- `sqlite:////abs/path.db` — an absolute path;
- a plain path, `path/to/state.db` or `/abs/state.db`, of letters, digits, spaces and
  `. _ - / ~ + , @ %` (anything else, a libpq `key=value` string or a URL written wrong,
  `postgresql:/...`, `"postgresql://..."`, is refused lest a file be named after a password);
- `postgresql://...` or `postgres://...` — a libpq URL: PostgreSQL, shared by several
  reconcilers and workers (`store.postgres`).
"""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.adapters.store.base import StateStore
from reconciler.adapters.store.common import redact_url
from reconciler.core.diagnostics import Diagnostics, Location
from reconciler.core.errors import InputError, StoreError

DEFAULT_URL = "sqlite:///.reconciler/state.db"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FORMS = (
    "use sqlite:///relative/path.db, sqlite:////absolute/path.db, a plain file path "
    "or postgresql://user@host/database"
)
_POSTGRES = ("postgresql", "postgres")
# A plain path is a file name, not a URL or libpq string written wrong: read as one, such a
# text would name a new SQLite file (and folders) after its password. So a plain path holds
# only what file names of a store hold (letters, digits, ` . _ - / ~ + , @ %`), does not
# start with a space nor with a store scheme and a slash (`postgresql//...`); any other
# name is written `sqlite:///name`. A libpq key=value string (`keyword=value ...`) is told
# apart only to say what to write instead.
_KEY_VALUE = re.compile(r"^\s*[A-Za-z_]+\s*=")
_PLAIN_PATH = re.compile(r"(?!\s)(?!(postgresql|postgres|sqlite)[/:\s])[\w.~/+,@% -]+", re.I)
_NOT_SHOWN = "(not shown: it may hold a password)"


def open_store(url: str, *, create: bool = True, read_only: bool = False) -> StateStore | None:
    """The store at `url`, migrated to the current schema.

    With `create=False` (commands that must never create a store, like `plan` and `diff`)
    a missing database returns None instead of being created. `read_only` (implies
    `create=False`) opens an SQLite file without writing anything, not even a migration: a
    file without our schema returns None, an older schema is a `StoreError`. With `create=True` the parent
    directory is created too. Raises `InputError` for a URL we cannot use, `StoreError` when
    the database cannot be opened. For PostgreSQL "missing" means a database without the
    reconciler's schema: the database itself is never created (that takes a DBA's rights).
    """
    if _scheme(url) in _POSTGRES:
        # An up-to-date PostgreSQL store is opened without writing anything already.
        return _open_postgres(url, create and not read_only)
    path = sqlite_path(url)
    if path.is_dir():
        # Never opened (SQLite would only fail) nor made private (a folder such as /tmp is
        # shared): the user meant a file in it.
        raise _bad_url(
            url,
            f"{path} is a folder, not a database file",
            f"name a file in it, e.g. sqlite:///{path / 'state.db'}",
        )
    if (read_only or not create) and not path.exists():
        return None
    # Imported here, as psycopg is for PostgreSQL: a PostgreSQL pass or worker never loads it.
    from reconciler.adapters.store.sqlite import NoSchema, SqliteStore

    if read_only:
        try:
            return SqliteStore(path, url=url, read_only=True)
        except NoSchema:
            return None
    if create:
        _make_parent(path)
    return SqliteStore(path, url=url, create=create)


def sqlite_path(url: str) -> Path:
    """The database file named by `url`; raises `InputError` for other schemes."""
    match = _SCHEME.match(url)
    if match is None:
        if not url.strip():
            raise _bad_url(url, "the state store URL is empty")
        if _KEY_VALUE.match(url):
            raise _bad_url(
                "",
                f"a key=value connection string is not a state store URL {_NOT_SHOWN}",
                "write it as postgresql://user:password@host:port/database",
            )
        if not _PLAIN_PATH.fullmatch(url):
            raise _bad_url(
                "",
                "this is neither a state store URL nor a plain file path (one holds only "
                f"letters, digits, spaces and . _ - / ~ + , @ %) {_NOT_SHOWN}",
                "write postgresql://user:password@host:port/database, or sqlite:///name.db "
                "for a file whose name holds other characters",
            )
        return Path(url).expanduser()
    scheme = match.group(1).lower()
    if scheme in _POSTGRES:
        raise _bad_url(url, "a PostgreSQL store has no database file")
    if scheme != "sqlite":
        raise _bad_url(url, f"unknown state store scheme {scheme}://")
    rest = url[match.end() :]
    if rest == "/":
        raise _bad_url(url, "the sqlite URL names no database file")
    if not rest.startswith("/"):
        # sqlite://host/... : there is no host in a file URL; the third slash was forgotten.
        raise _bad_url(
            url,
            "a sqlite URL needs three slashes before a relative path, four before an absolute one",
        )
    return Path(rest[1:])


def _scheme(url: str) -> str | None:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else None


def _open_postgres(url: str, create: bool) -> StateStore | None:
    """A `PostgresStore`, or None for a database without the schema when `create` is False.
    Imported here: psycopg is loaded only by those who use PostgreSQL."""
    from reconciler.adapters.store.postgres import MissingStore, PostgresStore

    try:
        return PostgresStore(url, create=create)
    except MissingStore:
        return None


def _bad_url(url: str, message: str, hint: str = _FORMS) -> InputError:
    diags = Diagnostics()
    diags.error(Location(f"state store {redact_url(url)}".strip()), message, hint)
    return InputError(diags)


def _make_parent(path: Path) -> None:
    """Create the database's directory (`.reconciler/` on a first pass) private, 0700: run
    output, errors and the audit log are nobody else's business. The reconciler's own
    `.reconciler/` is tightened if an older version left it open; any other existing folder
    is the user's choice and stays as it is."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.parent.name == ".reconciler" and path.parent.stat().st_mode & 0o077:
            path.parent.chmod(0o700)
    except OSError as exc:
        raise StoreError(
            f"cannot create the directory of state store {path}: {exc.strerror or exc}"
        ) from exc


__all__ = ["DEFAULT_URL", "open_store", "sqlite_path"]
