"""`reconcile vault list|get|set|unset|edit|rekey`: the team vaults of the inventory (SPEC §5).

Apart from the age file commands (vault_cmd.py), which need none of what these do: the
inventory, the vault format, the state store for the audit entry.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reconciler.adapters.vault import team_vault
from reconciler.adapters.vault.secrets import load_identities
from reconciler.cli import outputs, views, wiring
from reconciler.cli.progress import tell
from reconciler.core.diagnostics import did_you_mean
from reconciler.core.errors import UsageError
from reconciler.core.model import Team
from reconciler.inventory.loader import display_path


def _team(args) -> tuple[Team, Path]:
    inventory = wiring.load(args).inventory
    team = inventory.teams.get(args.team)
    if team is None:
        hint = did_you_mean(args.team, inventory.teams)
        raise UsageError(f"no team '{args.team}' in the inventory" + (f" ({hint})" if hint else ""))
    return team, team_vault.vault_path(inventory.root, team.name)


def _identities(args) -> list:
    return load_identities(getattr(args, "identity", None))


def _current(path: Path, args) -> dict[str, str] | None:
    """The vault's secrets, or None when the vault does not exist yet."""
    if not path.exists():
        return None
    return team_vault.read(path, _identities(args), display_path(path))


def _current_to_rewrite(
    path: Path, args, team: Team, *, adopt: bool = False
) -> tuple[dict[str, str] | None, bool]:
    """For a command that writes the vault: its secrets (None when it does not exist yet) and
    whether its content already names `team`. A vault naming another team is refused; one
    naming none (written before vaults were bound to their team) only by `rekey` (`adopt`),
    with a warning: naming it is a decision (old ciphertext of any team stays in git history,
    and anyone who can write the file can put it back), never a side effect of set, unset or
    edit."""
    if not path.exists():
        return None, False
    name = display_path(path)
    vault = team_vault.read_vault(path, _identities(args), name)
    if vault.team is None and adopt:
        tell(
            f"warning: {name} named no team; it is rewritten as the vault of team "
            f"'{team.name}' (check that it holds {team.name}'s secrets)",
            args.log_format,
            "warning",
        )
        return vault.secrets, False
    return vault.secrets_of(team.name, name), True


def _list(args) -> views.Output:
    team, path = _team(args)
    names = sorted(_current(path, args) or {})
    return views.Output(names, lambda: views.vault_names_text(team.name, names))


def _audit(args, write) -> None:
    """Record a vault read or write in the audit log of the configured store, if it exists
    (key names only, never values); a vault command never fails for the audit's sake."""
    from reconciler.adapters.store.factory import open_store
    from reconciler.core.errors import InputError, StoreError

    try:
        store = open_store(wiring.state_url(args, None), create=False)
    except (StoreError, InputError):
        return
    if store is None:
        return
    try:
        write(store)
    except StoreError as exc:
        tell(f"warning: could not write the audit entry: {exc}", args.log_format, "warning")
    finally:
        store.close()


def _get(args) -> int | views.Output:
    from reconciler.pipeline.sinks import audit_vault_read

    team, path = _team(args)
    secrets = _current(path, args) or {}
    _audit(args, lambda store: audit_vault_read(store, team.name, args.name, purpose="vault get"))
    if args.name not in secrets:
        hint = did_you_mean(args.name, secrets)
        raise UsageError(
            f"no secret '{args.name}' in the vault of team '{team.name}'"
            + (f" ({hint})" if hint else "")
        )
    value = secrets[args.name]
    if _json(args):  # the value, as the text form prints it (the caller asked for it)
        return views.Output({"team": team.name, "name": args.name, "value": value})
    sys.stdout.write(value + ("" if value.endswith("\n") else "\n"))
    return 0


def _json(args) -> bool:
    return getattr(args, "format", None) == "json"


def _changed(args, team: Team, path: Path, action: str, written: bool, names) -> int | views.Output:
    """What a vault write did: nothing on stdout in text (its line went to stderr); under
    --format json one document `{"team", "file", "action", "changed", "names"}` (names only,
    never values)."""
    if not _json(args):
        return 0
    return views.Output(
        {
            "team": team.name,
            "file": display_path(path),
            "action": action,
            "changed": written,
            "names": sorted(names) if written else [],
        }
    )


def _set(args) -> int | views.Output:
    team, path = _team(args)
    if not team_vault.KEY_NAME.fullmatch(args.name):
        raise UsageError(f"secret name '{args.name}' must match [A-Za-z_][A-Za-z0-9_]*")
    if args.name == team_vault.TEAM_KEY:
        raise UsageError(f"secret name '{args.name}' is reserved: it holds the vault's team")
    value = args.value
    if value is None or value == "-":
        try:
            value = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"the value of '{args.name}' on standard input is not UTF-8 text (byte "
                f"{exc.start}); store binary data encoded, e.g. `base64 FILE | reconcile vault "
                f"set {args.team} {args.name} -`"
            ) from None
        value = value[:-1] if value.endswith("\n") else value  # one trailing newline dropped
    return _save(
        team, path, args, lambda secrets: {**secrets, args.name: value}, f"set {args.name}"
    )


def _unset(args) -> int | views.Output:
    team, path = _team(args)

    def without(secrets: dict[str, str]) -> dict[str, str]:
        if args.name not in secrets:
            raise UsageError(f"no secret '{args.name}' in the vault of team '{team.name}'")
        return {k: v for k, v in secrets.items() if k != args.name}

    return _save(team, path, args, without, f"unset {args.name}")


def _save(team: Team, path: Path, args, change, what: str) -> int | views.Output:
    recipients = team_vault.parse_recipients(team)
    previous, named = _current_to_rewrite(path, args, team)
    secrets = change(dict(previous or {}))
    written = team_vault.write(
        path, secrets, recipients, previous=previous if named else None, team=team.name
    )
    tell(
        f"{display_path(path)}: {what}" if written else f"{display_path(path)}: unchanged",
        args.log_format,
    )
    names = _changed_names(previous or {}, secrets)
    if written:
        _audit_write(args, team, names, what.split()[0])
    return _changed(args, team, path, what.split()[0], written, names)


def _changed_names(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _audit_write(args, team: Team, names: list[str], change: str) -> None:
    from reconciler.pipeline.sinks import audit_vault_write

    _audit(args, lambda store: audit_vault_write(store, team.name, names, change))


def _rekey(args) -> int | views.Output:
    team, path = _team(args)
    recipients = team_vault.parse_recipients(team)
    secrets, _ = _current_to_rewrite(path, args, team, adopt=True)
    if secrets is None:
        raise UsageError(f"team '{team.name}' has no vault yet ({display_path(path)})")
    team_vault.write(path, secrets, recipients, team=team.name)
    tell(f"{display_path(path)}: re-encrypted to {len(recipients)} recipients", args.log_format)
    return _changed(args, team, path, "rekey", True, [])


def _edit(args) -> int | views.Output:
    team, path = _team(args)
    recipients = team_vault.parse_recipients(team)
    current, named = _current_to_rewrite(path, args, team)
    previous = current or {}
    edited = _edit_in_private_file(
        team_vault.encode(previous, team.name), _editor(), args.log_format
    )
    vault = team_vault.decode_vault(edited, f"{display_path(path)} (edited)")
    if vault.team not in (None, team.name):
        raise UsageError(
            f"{display_path(path)}: the edited vault names team '{vault.team}'; "
            f"the vault of team '{team.name}' must name '{team.name}' (_team); "
            "the vault is unchanged"
        )
    secrets = vault.secrets
    written = team_vault.write(
        path, secrets, recipients, previous=previous if named else None, team=team.name
    )
    tell(f"{display_path(path)}: " + ("saved" if written else "unchanged"), args.log_format)
    names = _changed_names(previous, secrets)
    if written:
        _audit_write(args, team, names, "edit")
    return _changed(args, team, path, "edit", written, names)


def _editor() -> list[str]:
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    return shlex.split(editor)


def _private_dir() -> str | None:
    """Memory-backed when the system has it, so the plaintext never reaches a disk."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _edit_in_private_file(
    plaintext: bytes, editor: Sequence[str], log_format: str | None = None
) -> bytes:
    """Let the user edit `plaintext` in a 0600 file inside a 0700 directory, removed on every
    path out (success, editor failure, Ctrl-C, SIGTERM, SIGHUP)."""
    folder = tempfile.mkdtemp(prefix="reconcile-vault-", dir=_private_dir())
    file = Path(folder) / "vault.yaml"
    # SIGTERM and SIGHUP (a dropped SSH session, a kill) raise like Ctrl-C does, so that the
    # `finally` below removes the plaintext on those exits too.
    with outputs.stopped_by_signals():
        return _edit_file(file, folder, plaintext, editor, log_format)


def _edit_file(
    file: Path, folder: str, plaintext: bytes, editor: Sequence[str], log_format: str | None
) -> bytes:
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(plaintext)
        try:
            code = subprocess.call([*editor, str(file)])
        except OSError as exc:
            raise UsageError(f"cannot start the editor {editor[0]!r}: {exc.strerror}") from None
        if code != 0:
            raise UsageError(f"the editor exited with code {code}; the vault is unchanged")
        return file.read_bytes()
    finally:
        # A second signal waits until the folder is gone (then stops the command).
        with outputs.signals_deferred():
            _remove_private_folder(folder, log_format)


def _remove_private_folder(folder: str, log_format: str | None) -> None:
    """Remove the reconciler's own 0700 folder whole: the plaintext and every file the editor
    left beside it (emacs's `vault.yaml~`, vim's `.vault.yaml.swp`), each overwritten before
    it is unlinked. Never raises (it runs in a `finally`: a failure here must not mask the
    edit's outcome nor a stop); what cannot be removed is said, as it holds plaintext."""
    failed: list[str] = []
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            _shred(os.path.join(root, name), failed)
        for name in dirs:
            path = os.path.join(root, name)
            _shred(path, failed) if os.path.islink(path) else _rmdir(path, failed)
    _rmdir(folder, failed)
    if failed:
        tell(
            f"warning: could not remove {', '.join(failed)}: it may hold the vault's plaintext, "
            "remove it by hand",
            log_format,
            "warning",
        )


def _shred(path: str, failed: list[str]) -> None:
    try:
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and info.st_size:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                os.write(fd, bytes(info.st_size))
            finally:
                os.close(fd)
    except OSError:
        pass  # unlinking still removes it
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        failed.append(path)


def _rmdir(path: str, failed: list[str]) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        failed.append(path)


ACTIONS = {
    "list": _list,
    "get": _get,
    "set": _set,
    "unset": _unset,
    "edit": _edit,
    "rekey": _rekey,
}
