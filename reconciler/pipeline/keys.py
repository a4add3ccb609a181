"""SSH client key rotation for `key: {vault: NAME}` machines (`reconcile keys ...`).

Rotation never locks the reconciler out: the new key is added next to the old one over the
current connection, proven over a second, fresh connection, and only then stored in the team
vault; the old key is removed last (`--finish`, or later `keys prune` once the new vault is
live), and the old key is then shown to be refused. A failure before the vault write removes
the new key again and leaves the old one as it was.

Lines the reconciler adds to `authorized_keys` carry the comment
`reconciler:<machine>:<UTC timestamp> replaces:<SHA256 fingerprint of the key it replaces>`,
so `prune` knows which lines are its own, `status` knows each key's age, and the key a
rotation superseded can be removed even when it was added by hand.

The pure part (parsing lines, planning removals, comments, fingerprints) is separate from the
I/O, which goes through `SshTransport.query` on the target (`sh -c` scripts, no stdin).
"""

from __future__ import annotations

import base64
import hashlib
import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.core.errors import AuthFailed, InfrastructureError, ReconcilerError, TransportError
from reconciler.core.model import Machine
from reconciler.core.redact import Secret

COMMENT_PREFIX = "reconciler:"
REPLACES = "replaces:"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
DEFAULT_AUTHORIZED_KEYS = "~/.ssh/authorized_keys"
KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
)

# The steps of a rotation, in order (audit actions are `keys.<step>`).
STEPS = ("generate", "add", "verify", "vault", "remove", "refused")


class RotationFailed(InfrastructureError):
    """A step of a rotation or prune failed (exit 3); `step` names it."""

    def __init__(self, step: str, message: str):
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


# ---------------------------------------------------------------- pure: keys and lines


@dataclass(frozen=True)
class AuthorizedLine:
    """One key line of an authorized_keys file (options are kept, not interpreted)."""

    raw: str
    type: str
    body: str
    comment: str = ""
    options: str = ""

    @property
    def public(self) -> str:
        return f"{self.type} {self.body}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)

    @property
    def ours(self) -> bool:
        """Added by the reconciler (its comment starts with `reconciler:`)."""
        return self.comment.startswith(COMMENT_PREFIX)

    @property
    def created(self) -> datetime | None:
        """The UTC time in a reconciler comment, None when there is none."""
        if not self.ours:
            return None
        tag = self.comment.split()[0]
        try:
            return datetime.strptime(tag.rsplit(":", 1)[1], TIME_FORMAT).replace(tzinfo=UTC)
        except (IndexError, ValueError):
            return None

    @property
    def replaces(self) -> set[str]:
        """Fingerprints of the keys this (reconciler) line replaced."""
        if not self.ours:
            return set()
        return {
            word[len(REPLACES) :] for word in self.comment.split()[1:] if word.startswith(REPLACES)
        }


def parse_line(raw: str) -> AuthorizedLine | None:
    """A key line, or None for blanks, comments and lines that hold no key we can read."""
    text = raw.strip()
    if not text or text.startswith("#"):
        return None
    words = text.split()
    for index, word in enumerate(words):
        if word in KEY_TYPES and index + 1 < len(words):
            options = " ".join(words[:index])
            return AuthorizedLine(
                raw=raw,
                type=word,
                body=words[index + 1],
                comment=" ".join(words[index + 2 :]),
                options=options,
            )
        if index == 0 and word.startswith(("ssh-", "ecdsa-", "sk-")):
            break  # an unknown key type: not ours to read
    return None


def parse_authorized(text: str) -> list[AuthorizedLine]:
    return [line for raw in text.splitlines() if (line := parse_line(raw)) is not None]


def fingerprint(public: str) -> str:
    """OpenSSH's `SHA256:...` fingerprint of a `TYPE BASE64` public key."""
    body = public.split()[1]
    digest = hashlib.sha256(base64.b64decode(body)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def public_of(private: str) -> str:
    """The `TYPE BASE64` public key of an OpenSSH (or PEM) private key text."""
    from cryptography.hazmat.primitives import serialization

    data = private.encode()
    try:
        try:
            key = serialization.load_ssh_private_key(data, password=None)
        except ValueError:
            key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuthFailed("the vault key is not an unencrypted OpenSSH private key") from exc
    line = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return " ".join(line.split()[:2])


def generate_key() -> tuple[str, str]:
    """A new ed25519 key, in memory: (OpenSSH private key text, `ssh-ed25519 BASE64`)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public


def key_comment(machine: str, now: datetime, replaces: Iterable[str] = ()) -> str:
    stamp = now.astimezone(UTC).strftime(TIME_FORMAT)
    return " ".join([f"{COMMENT_PREFIX}{machine}:{stamp}", *(f"{REPLACES}{fp}" for fp in replaces)])


def finish_plan(lines: Sequence[AuthorizedLine], old: str, new: str) -> list[AuthorizedLine]:
    """What `rotate --finish` removes: the old key's lines and every other reconciler line,
    never a line of the new key."""
    old_body, new_body = old.split()[1], new.split()[1]
    return [
        line for line in lines if line.body != new_body and (line.body == old_body or line.ours)
    ]


def prune_plan(lines: Sequence[AuthorizedLine], vault_public: str) -> list[AuthorizedLine]:
    """What `keys prune` removes: reconciler lines whose key is not the vault's, and the
    keys the vault key's own line says it replaced; never a line of the vault key."""
    body = vault_public.split()[1]
    replaced = set().union(*(line.replaces for line in lines if line.body == body))
    return [
        line for line in lines if line.body != body and (line.ours or line.fingerprint in replaced)
    ]


# ---------------------------------------------------------------- remote scripts


def _path_expr(path: str) -> str:
    """A shell word for `path` on the target; `~/` is the remote $HOME."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def read_script(path: str) -> str:
    return f'f={_path_expr(path)}; if [ -e "$f" ]; then cat -- "$f"; fi'


def append_script(path: str, line: str) -> str:
    """Append `line`, creating the folder (0700) and file (0600) when missing; a file whose
    last line has no newline gets one first, so the keys stay on their own lines."""
    return (
        f'umask 077; f={_path_expr(path)}; d=$(dirname -- "$f"); '
        '[ -d "$d" ] || mkdir -p -m 700 -- "$d" || exit 1; '
        '[ -e "$f" ] || { : > "$f" && chmod 600 -- "$f"; } || exit 1; '
        'if [ -s "$f" ] && [ -n "$(tail -c 1 -- "$f")" ]; then echo >> "$f" || exit 1; fi; '
        f'printf "%s\\n" {shlex.quote(line)} >> "$f"'
    )


def remove_script(path: str, lines: Sequence[str]) -> str:
    """Remove exactly these lines (whole-line matches), by writing a filtered copy next to the
    file and renaming it over it (the file keeps its mode)."""
    patterns = " ".join(f"-e {shlex.quote(line)}" for line in lines)
    return (
        f'umask 077; f={_path_expr(path)}; [ -e "$f" ] || exit 0; t="$f.reconciler.$$"; '
        f'grep -v -x -F {patterns} -- "$f" > "$t"; rc=$?; '
        'if [ $rc -gt 1 ]; then rm -f -- "$t"; exit 2; fi; '
        'chmod 600 -- "$t" && mv -f -- "$t" "$f" || { rm -f -- "$t"; exit 1; }'
    )


# ---------------------------------------------------------------- I/O

Audit = Callable[..., None]  # audit(action, **detail)
TransportFactory = Callable[[str], object]  # private key text -> an SshTransport


def ssh_transport(timeout: float) -> TransportFactory:
    """Fresh SshTransports that log in with exactly the given key."""
    from reconciler.adapters.transport.ssh import SshTransport

    def make(private: str):
        secret = Secret(private)
        return SshTransport(resolve_key=lambda machine: secret, connect_timeout=timeout)

    return make


@dataclass
class Outcome:
    """What a rotation or prune did (for the command's output; no key material)."""

    machine: str
    steps: list[dict] = field(default_factory=list)
    new_fingerprint: str | None = None
    old_fingerprint: str | None = None
    removed: list[str] = field(default_factory=list)  # removed public keys' fingerprints
    removed_lines: list[str] = field(default_factory=list)
    finished: bool = False


class KeyManager:
    """Rotates and prunes the client key of one machine.

    `transport_factory(private_key_text)` gives a new transport logging in with that key
    (default: a fresh `SshTransport`); `audit(action, **detail)` records each step;
    `on_step(step)` is called after each step succeeded (tests inject faults with it).
    """

    def __init__(
        self,
        machine: Machine,
        *,
        authorized_keys: str = DEFAULT_AUTHORIZED_KEYS,
        timeout: float = 10.0,
        transport_factory: TransportFactory | None = None,
        audit: Audit | None = None,
        on_step: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.machine = machine
        self.path = authorized_keys
        self.timeout = timeout
        self.factory = transport_factory or ssh_transport(timeout)
        self.audit = audit or (lambda action, **detail: None)
        self.on_step = on_step or (lambda step: None)
        self.clock = clock

    # ------------------------------------------------------------ remote primitives

    def _query(self, transport, script: str, what: str) -> str:
        done = transport.query(self.machine, "sh -c " + shlex.quote(script), self.timeout)
        if not done.ok:
            why = "timed out" if done.timed_out else f"exit {done.exit_code}"
            raise TransportError(
                f"machine '{self.machine.name}': {what} failed ({why}): {done.output.strip()[:200]}"
            )
        return done.output

    def read(self, transport) -> list[AuthorizedLine]:
        return parse_authorized(
            self._query(transport, read_script(self.path), f"reading {self.path}")
        )

    def _remove(self, transport, lines: Sequence[AuthorizedLine]) -> None:
        if lines:
            self._query(
                transport,
                remove_script(self.path, [line.raw for line in lines]),
                f"removing keys from {self.path}",
            )

    def logs_in(self, private: str) -> None:
        """Log in over a new connection with only `private` and run `true`; raises a
        TransportError (AuthFailed when the key is refused)."""
        transport = self.factory(private)
        try:
            done = transport.query(self.machine, "true", self.timeout)
            if not done.ok:
                raise TransportError(
                    f"machine '{self.machine.name}': `true` did not succeed (exit {done.exit_code})"
                )
        finally:
            transport.close()

    def _step(self, outcome: Outcome, step: str, **detail) -> None:
        outcome.steps.append({"step": step, **detail})
        self.audit(f"keys.{step}", machine=self.machine.name, **detail)
        self.on_step(step)

    # ------------------------------------------------------------ rotate

    def rotate(
        self, current: str, store: Callable[[str], None], *, finish: bool = False
    ) -> Outcome:
        """Rotate from the `current` private key to a new one; `store(new_private)` writes the
        vault. Raises RotationFailed (or the store's InputError) naming the failed step; a
        failure before the vault write leaves the machine as it was."""
        old_public = public_of(current)
        outcome = Outcome(self.machine.name, old_fingerprint=fingerprint(old_public))
        private, public = generate_key()
        new_body = public.split()[1]
        outcome.new_fingerprint = fingerprint(public)
        self._step(outcome, "generate", fingerprint=outcome.new_fingerprint)

        line = f"{public} {key_comment(self.machine.name, self.clock(), [fingerprint(old_public)])}"
        connection = self.factory(current)
        try:
            try:
                self.read(connection)  # the current key logs in: nothing changed yet
            except ReconcilerError as exc:
                raise RotationFailed("connect", f"{exc}; nothing was changed") from exc
            step = "add"
            try:
                self._query(connection, append_script(self.path, line), f"appending to {self.path}")
                self._step(outcome, "add", fingerprint=outcome.new_fingerprint, path=self.path)
                step = "verify"
                self.logs_in(private)
                self._step(outcome, "verify", fingerprint=outcome.new_fingerprint)
                step = "vault"
                store(private)
                self._step(
                    outcome,
                    "vault",
                    key=self.machine.key.name if self.machine.key else None,
                    fingerprint=outcome.new_fingerprint,
                )
            except (ReconcilerError, OSError) as exc:
                self._undo(connection, new_body, step, exc)
                if isinstance(exc, ReconcilerError) and not isinstance(exc, TransportError):
                    raise  # e.g. the vault cannot be written: its own message and exit code
                raise RotationFailed(
                    step, f"{exc}; the new key was removed again, the old key is unchanged"
                ) from exc
        finally:
            connection.close()
        if finish:
            self._finish(outcome, current, private, old_public, public)
        return outcome

    def _undo(self, connection, new_body: str, step: str, error: BaseException) -> None:
        """Remove the new key's lines over the old key's connection; audited."""
        self.audit("keys.failed", machine=self.machine.name, step=step, error=str(error)[:300])
        try:
            ours = [line for line in self.read(connection) if line.body == new_body]
            self._remove(connection, ours)
            self.audit("keys.cleanup", machine=self.machine.name, removed=len(ours))
        except ReconcilerError as exc:
            self.audit("keys.cleanup_failed", machine=self.machine.name, error=str(exc)[:300])
            raise RotationFailed(
                step,
                f"{error}; AND removing the new key again failed: {exc}"
                f" (remove the line ending in 'replaces:...' from {self.path})",
            ) from exc

    def _finish(
        self, outcome: Outcome, old_private: str, new_private: str, old_public: str, public: str
    ) -> None:
        """Remove the old key and other reconciler keys (over the new key), then prove the
        old key is refused. The vault already holds the new key: nothing is undone."""
        connection = self.factory(new_private)
        try:
            try:
                doomed = finish_plan(self.read(connection), old_public, public)
                self._remove(connection, doomed)
            except ReconcilerError as exc:
                raise RotationFailed(
                    "remove",
                    f"{exc}; the vault holds the new key, which "
                    "works; run 'reconcile keys prune' to retry",
                ) from exc
        finally:
            connection.close()
        outcome.removed = sorted({line.fingerprint for line in doomed})
        outcome.removed_lines = [line.raw for line in doomed]
        self._step(outcome, "remove", fingerprints=outcome.removed)
        try:
            self.logs_in(old_private)
        except AuthFailed:
            self._step(outcome, "refused", fingerprint=outcome.old_fingerprint)
            outcome.finished = True
            return
        except TransportError as exc:
            raise RotationFailed(
                "refused", f"could not check that the old key is refused: {exc}"
            ) from exc
        raise RotationFailed(
            "refused",
            "the old key still logs in after its removal from "
            f"{self.path} (is it authorized elsewhere?)",
        )

    # ------------------------------------------------------------ prune

    def prune(self, vault_private: str) -> Outcome:
        """Remove reconciler keys other than the vault's (and the keys it replaced), logged in
        with the vault key; then prove the vault key still logs in."""
        vault_public = public_of(vault_private)
        outcome = Outcome(self.machine.name, new_fingerprint=fingerprint(vault_public))
        connection = self.factory(vault_private)
        try:
            try:
                doomed = prune_plan(self.read(connection), vault_public)
            except AuthFailed as exc:
                raise RotationFailed(
                    "verify", f"the vault key does not log in, nothing was removed: {exc}"
                ) from exc
            except TransportError as exc:
                raise RotationFailed("remove", str(exc)) from exc
            try:
                self._remove(connection, doomed)
            except TransportError as exc:
                raise RotationFailed("remove", str(exc)) from exc
        finally:
            connection.close()
        outcome.removed = sorted({line.fingerprint for line in doomed})
        outcome.removed_lines = [line.raw for line in doomed]
        if doomed:
            self._step(outcome, "remove", fingerprints=outcome.removed)
        try:
            self.logs_in(vault_private)
        except TransportError as exc:
            raise RotationFailed(
                "verify", f"the vault key no longer logs in after pruning: {exc}"
            ) from exc
        self._step(outcome, "verify", fingerprint=outcome.new_fingerprint)
        return outcome

    # ------------------------------------------------------------ status

    def created(self, vault_private: str) -> tuple[datetime | None, str]:
        """When the vault key was added (from its reconciler comment) and its fingerprint;
        raises a TransportError when the machine cannot be read."""
        public = public_of(vault_private)
        connection = self.factory(vault_private)
        try:
            lines = self.read(connection)
        finally:
            connection.close()
        body = public.split()[1]
        times = [line.created for line in lines if line.body == body and line.created]
        return (min(times) if times else None), fingerprint(public)


__all__ = [
    "AuthorizedLine",
    "KeyManager",
    "Outcome",
    "RotationFailed",
    "finish_plan",
    "fingerprint",
    "generate_key",
    "key_comment",
    "parse_authorized",
    "parse_line",
    "prune_plan",
    "public_of",
]
