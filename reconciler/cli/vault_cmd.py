"""`reconcile vault ...`: age files and team vaults, with age's flags (SPEC §5).

The age file commands are here; the team-vault ones in team_vault_cmd.py.

Secrets only travel through stdin, stdout, files the user names (written as a 0600 file beside
them, renamed into place when complete; a new plaintext stays 0600) and a private temporary file for `edit`; never
through the argument list of a process we start, never into logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.cli.settings import Context

import argparse
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from reconciler.adapters.vault import age
from reconciler.cli import outputs
from reconciler.core.errors import UsageError, VaultError

# The age file commands (keygen, encrypt, decrypt) need age alone: what the team-vault
# commands need (the inventory loader, the vault format, wiring, the store) is imported in
# team_vault_cmd.py, so that `vault decrypt` starts about as fast as `age -d` (issue 14).


def cmd_vault(args: argparse.Namespace, ctx: Context) -> int:
    action = _ACTIONS.get(args.vault_command)
    if action is None:  # a team-vault command
        from reconciler.cli.team_vault_cmd import ACTIONS

        action = ACTIONS[args.vault_command]
    return action(args)


# ---------------------------------------------------------------- age-compatible file commands


def _keygen(args) -> int:
    from datetime import UTC, datetime

    identity = age.generate_x25519()
    public = identity.recipient().to_bech32()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {public}\n{identity.to_bech32()}\n"
    if args.output:
        path = Path(args.output)
        if path.exists():
            raise UsageError(f"vault keygen: {args.output} exists; refusing to overwrite a key")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageError(
                f"vault keygen: {args.output} exists; refusing to overwrite a key"
            ) from None
        except OSError as exc:
            raise outputs.write_error(args.output, exc) from None
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        except OSError as exc:
            path.unlink(missing_ok=True)  # no half-written key left behind
            raise outputs.write_error(args.output, exc) from None
    else:
        sys.stdout.write(text)
    from reconciler.cli.progress import tell

    tell(f"Public key: {public}", args.log_format)
    return 0


def _passphrase(confirm: bool) -> str:
    """From RECONCILE_PASSPHRASE, else asked on the terminal (never from the command line)."""
    import getpass

    if os.environ.get("RECONCILE_PASSPHRASE"):
        return os.environ["RECONCILE_PASSPHRASE"]
    try:
        with open("/dev/tty"):
            pass
    except OSError:
        raise UsageError(
            "a passphrase is needed: set RECONCILE_PASSPHRASE or run on a terminal"
        ) from None
    first = getpass.getpass("Enter passphrase: ")
    if confirm and getpass.getpass("Confirm passphrase: ") != first:
        raise UsageError("passphrases do not match")
    if not first:
        raise UsageError("an empty passphrase is not allowed")
    return first


@contextmanager
def _input(path: str | None) -> Iterator[BinaryIO]:
    """The file named `path`, or stdin for None and "-", open for reading in binary."""
    if path in (None, "-"):
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below; errors must name the path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with handle:
        yield handle


@contextmanager
def _output(path: str | None, *, binary: bool, private: bool) -> Iterator[BinaryIO]:
    """Where a command writes: a file (a regular one replaced once all is written, a pipe or
    device written into, see cli/outputs.py), or stdout written as it comes."""
    if path not in (None, "-"):
        with outputs.writing(path, private=private) as handle:
            yield handle
        return
    if binary and sys.stdout.isatty():
        raise UsageError("refusing to write binary ciphertext to a terminal; use -a or -o")
    yield sys.stdout.buffer
    sys.stdout.buffer.flush()


def _refuse_output_onto_input(command: str, args) -> None:
    """`-o F F` would replace the only copy of F (its ciphertext or its plaintext) by what is
    being made of it: refused before anything is read or written."""
    if outputs.same_file(args.input, args.output):
        raise UsageError(
            f"vault {command}: the output {args.output} is the input file {args.input}; "
            "write to another file"
        )


def _recipients(args) -> list[age.Recipient]:
    texts = list(args.recipient)
    for file in args.recipients_file:
        try:
            lines = Path(file).read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read recipients file {file}: {exc.strerror}") from None
        texts += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    try:
        return [age.parse_recipient(text) for text in texts]
    except age.AgeError as exc:
        raise UsageError(f"vault encrypt: bad recipient: {exc}") from None


def _encrypt(args) -> int:
    """Encrypt a file or stdin 64 KiB at a time: memory stays the same whatever its size."""
    if args.passphrase and (args.recipient or args.recipients_file):
        raise UsageError("vault encrypt: -p cannot be combined with -r or -R")
    if args.passphrase:
        recipients = [age.scrypt_recipient(_passphrase(confirm=True))]
    else:
        recipients = _recipients(args)
    if not recipients:
        raise UsageError("vault encrypt: give at least one -r RECIPIENT, -R FILE or -p")
    _refuse_output_onto_input("encrypt", args)
    with (
        outputs.stopped_by_signals(),
        _input(args.input) as src,
        _output(args.output, binary=not args.armor, private=False) as dst,
    ):
        age.encrypt_stream(src, dst, recipients, armor=args.armor)
    return 0


class _PromptedPassphrase(age.ScryptIdentity):
    """A passphrase identity that asks for the passphrase only when a passphrase-encrypted
    file is actually being opened (age offers a file's scrypt stanza to these alone). The
    file key is kept for the same stanzas: a file read twice (see `_decrypt_to_stream`) costs
    one prompt and one scrypt."""

    def __init__(self):  # no passphrase yet: it is read at the first unwrap
        self._identity: age.ScryptIdentity | None = None
        self._opened: tuple[list, bytes | None] | None = None

    def unwrap(self, stanzas):
        if self._opened is not None and self._opened[0] == list(stanzas):
            return self._opened[1]
        if self._identity is None:
            self._identity = age.scrypt_identity(_passphrase(confirm=False))
        file_key = self._identity.unwrap(stanzas)
        self._opened = (list(stanzas), file_key)
        return file_key


def _decrypt(args) -> int:
    """Decrypt a file or stdin chunk by chunk (memory stays the same whatever its size),
    all or nothing: a damaged file leaves no part of its plaintext behind."""
    identities: list = []
    for file in args.identity_files:
        try:
            identities += age.parse_identities(Path(file).read_text())
        except OSError as exc:
            raise UsageError(f"cannot read identity file {file}: {exc.strerror}") from None
        except age.AgeError as exc:
            raise UsageError(f"identity file {file}: {exc}") from None
    if not identities:
        from reconciler.adapters.vault.secrets import load_identities

        identities = load_identities(getattr(args, "identity", None))
    identities.append(_PromptedPassphrase())
    name = args.input or "<stdin>"
    _refuse_output_onto_input("decrypt", args)
    try:
        # A stop (SIGTERM, SIGHUP, SIGINT) part-way removes the partial plaintext.
        with outputs.stopped_by_signals(), _input(args.input) as src:
            if args.output not in (None, "-") and outputs.replaces_a_file(args.output):
                with outputs.writing(args.output, private=True) as dst:
                    age.decrypt_stream(src, dst, identities)
            else:
                with _output(args.output, binary=False, private=True) as dst:
                    _decrypt_to_stream(src, dst, identities)
    except age.AgeError as exc:
        from reconciler.adapters.vault import team_vault

        raise VaultError(f"{name}: {team_vault.explain(exc)}") from None
    return 0


def _decrypt_to_stream(src: BinaryIO, dst: BinaryIO, identities: Sequence) -> None:
    """Decrypt to a stream that cannot be taken back (stdout, a pipe): every chunk is
    verified first, then the file is read again and written. A file is read twice from
    disk; stdin is kept, still encrypted, in an unnamed temporary file for the second read."""
    if _is_regular(src):
        start = src.tell()
        for _ in age.decrypt_chunks(src, identities):
            pass
        src.seek(start)
        age.decrypt_stream(src, dst, identities)
        return
    with tempfile.TemporaryFile(prefix="reconcile-vault-") as kept:
        for _ in age.decrypt_chunks(_Copying(src, kept), identities):
            pass
        kept.seek(0)
        age.decrypt_stream(kept, dst, identities)


def _is_regular(handle: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


class _Copying:
    """Reads `src` and writes what it read to `copy`."""

    def __init__(self, src: BinaryIO, copy: BinaryIO):
        self.src, self.copy = src, copy

    def read(self, size: int = -1) -> bytes:
        data = self.src.read(size)
        self.copy.write(data)
        return data


_ACTIONS = {
    "keygen": _keygen,
    "encrypt": _encrypt,
    "decrypt": _decrypt,
}
