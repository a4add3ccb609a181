"""Parsing recipient strings and identity files into Recipient / Identity objects.

Error messages name the line and the problem but never repeat the text: identity files hold
secret keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.adapters.vault.age.errors import HeaderError
from reconciler.adapters.vault.age.x25519 import X25519Identity, X25519Recipient

# The SSH and post-quantum modules are imported when a key of their kind is parsed: most
# keys are X25519, and the SSH one loads cryptography's key serialization (issue 14:
# `vault encrypt`/`decrypt` within 2x of age, measured as whole processes).
if TYPE_CHECKING:
    from reconciler.adapters.vault.age.hybrid import HybridIdentity, HybridRecipient
    from reconciler.adapters.vault.age.ssh import (
        SshEd25519Identity,
        SshEd25519Recipient,
        SshRsaIdentity,
        SshRsaRecipient,
    )

    AnyRecipient = X25519Recipient | HybridRecipient | SshEd25519Recipient | SshRsaRecipient
    AnyIdentity = X25519Identity | HybridIdentity | SshEd25519Identity | SshRsaIdentity


def parse_recipient(text: str) -> AnyRecipient:
    """A recipient from `age1...`, `age1pq1...`, `ssh-ed25519 AAAA... [comment]` or
    `ssh-rsa AAAA... [comment]`. Raises AgeError (stage "header") saying what is wrong."""
    if not isinstance(text, str):
        raise HeaderError("a recipient must be a string")
    text = text.strip()
    lower = text.lower()
    if not text:
        raise HeaderError("empty recipient")
    if lower.startswith("age1pq1"):
        from reconciler.adapters.vault.age.hybrid import HybridRecipient

        return HybridRecipient.from_bech32(text)
    if lower.startswith("age1"):
        # '1' is not in the Bech32 alphabet, so a later '1' means a longer HRP such as
        # age1yubikey1... or age1tag1...: a plugin recipient.
        if lower.rfind("1") > 3:
            raise HeaderError("plugin recipients (age1<plugin>1...) are not supported")
        return X25519Recipient.from_bech32(text)
    if lower.startswith("ssh-"):
        from reconciler.adapters.vault.age.ssh import parse_ssh_recipient

        return parse_ssh_recipient(text)
    raise HeaderError("unknown recipient type: expected age1..., ssh-ed25519 or ssh-rsa")


def parse_identities(text: str) -> list[AnyIdentity]:
    """The identities in an age identity file or an unencrypted OpenSSH private key.

    An identity file has one `AGE-SECRET-KEY-1...` (X25519) or `AGE-SECRET-KEY-PQ-1...`
    (post-quantum) key per line; blank lines and `#` comments are skipped. A text holding a
    `-----BEGIN ... PRIVATE KEY-----` block is read as one SSH key (ed25519 or rsa).
    Raises AgeError (stage "header") naming the offending line, never echoing it.
    """
    if not isinstance(text, str):
        raise HeaderError("identities must be given as text")
    if "-----BEGIN AGE ENCRYPTED FILE-----" in text:
        raise HeaderError(
            "this is an encrypted age file, not an identity file "
            "(passphrase-protected identity files are not supported)"
        )
    if "-----BEGIN" in text and "PRIVATE KEY-----" in text:
        from reconciler.adapters.vault.age.ssh import parse_ssh_identity

        return [parse_ssh_identity(text)]
    identities: list[AnyIdentity] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        upper = line.upper()
        try:
            if upper.startswith("AGE-SECRET-KEY-PQ-1"):
                from reconciler.adapters.vault.age.hybrid import HybridIdentity

                identities.append(HybridIdentity.from_bech32(line))
            elif upper.startswith("AGE-SECRET-KEY-1"):
                identities.append(X25519Identity.from_bech32(line))
            elif upper.startswith("AGE-PLUGIN-"):
                raise HeaderError("plugin identities are not supported")
            elif line.startswith(("ssh-", "age1")):
                raise HeaderError("this is a public key (recipient), not an identity")
            else:
                raise HeaderError("not an age identity (expected AGE-SECRET-KEY-1...)")
        except HeaderError as exc:
            raise HeaderError(f"identity line {number}: {exc}") from None
    if not identities:
        raise HeaderError("no identities found (no AGE-SECRET-KEY-1... line)")
    return identities
