"""Signed approvals of the two-person rule (issue 15 §3): the text a member signs, signing it
with their SSH key and checking it against the member keys of a trusted inventory, both with
`ssh-keygen -Y` (namespace `reconciler-approval`, so no other SSH signature — a signed commit,
a signed file — can pass for an approval, nor an approval for one of them).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from reconciler.core.errors import InputError
from reconciler.core.model import Inventory
from reconciler.core.trust import key_fingerprint, signers

NAMESPACE = "reconciler-approval"
_GOOD = re.compile(r"signature for \S+ with \S+ key (SHA256:\S+)")


def version_digest(versions: Mapping[str, str]) -> str:
    """One name for a task's versions on its machines (what `reconcile approvals` shows and
    `approve --version` takes): 16 hex digits of the SHA-256 of its sorted `machine version`
    lines. Any change of any machine's version gives another."""
    lines = "".join(f"{m} {v}\n" for m, v in sorted(versions.items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def approval_text(task: str, commit: str, versions: Mapping[str, str]) -> bytes:
    """What a member signs: the task, the commit whose inventory names the versions, and
    each machine with its version."""
    lines = [f"reconciler approval v1\ntask {task}\ncommit {commit}\n"]
    lines += [f"machine {m} version {v}\n" for m, v in sorted(versions.items())]
    return "".join(lines).encode()


def public_key(key: Path) -> str:
    """The OpenSSH public key line of private key file `key` (its `.pub` beside it, else
    derived with `ssh-keygen -y`). Raises `InputError` when it is not a readable key."""
    pub = key.with_name(key.name + ".pub")
    try:
        if pub.is_file():
            line = pub.read_text().strip()
        else:
            line = _keygen(["-y", "-f", str(key)], b"", f"read the key {key}").decode().strip()
    except OSError as exc:
        raise InputError(f"cannot read the key {key}: {exc.strerror}") from None
    if key_fingerprint(line) is None:
        raise InputError(
            f"{key}: not an OpenSSH key (give the private key, e.g. ~/.ssh/id_ed25519)"
        )
    return line


def sign(key: Path, text: bytes, namespace: str = NAMESPACE) -> str:
    """The `ssh-keygen -Y sign` armour of `text` with private key `key`, in `namespace`
    (approvals by default; `reconcile run` signs its requests in its own)."""
    if not key.is_file():
        raise InputError(f"no key file {key}")
    out = _keygen(["-Y", "sign", "-q", "-f", str(key), "-n", namespace], text, f"sign with {key}")
    return out.decode()


def verify(trusted: Inventory, text: bytes, signature: str) -> str | None:
    """The fingerprint of the member key of `trusted` that made `signature` over `text`,
    None when no member's key did (an unknown key, or a signature that does not match)."""
    return verify_signature(tuple(signers(trusted)), text, signature)


def verify_signature(
    keys: tuple[str, ...], text: bytes, signature: str, namespace: str = NAMESPACE
) -> str | None:
    """The fingerprint of the one of `keys` (OpenSSH public key lines) that made `signature`
    over `text` in `namespace`, None when none did (or ssh-keygen cannot be run: nothing
    counts then)."""
    if not keys:
        return None
    made: list[str] = []
    try:
        sig_path = _private_file(signature, made)
        allowed = _private_file("".join(f"member {' '.join(k.split()[:2])}\n" for k in keys), made)
        done = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", "member"]
            + ["-n", namespace, "-s", sig_path],
            input=text,
            capture_output=True,
            check=False,
        )
    except OSError:
        return None
    finally:
        for path in made:
            Path(path).unlink(missing_ok=True)
    found = _GOOD.search(done.stdout.decode(errors="replace"))
    return found.group(1) if done.returncode == 0 and found else None


def _private_file(text: str, made: list[str]) -> str:
    """A new private temporary file holding `text` (its path is added to `made`)."""
    fd, path = tempfile.mkstemp(prefix="reconcile-approval-")
    made.append(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def commit_signers(
    inventory: str | Path, before: str | None, commit: str, trusted: Inventory
) -> dict[str, str]:
    """Commit -> the fingerprint of the SSH key that signed it, for `commit` and every commit
    since `before` (None: `commit` alone); unsigned commits are left out."""
    # Imported here: a pass counts approvals with this module and must not load git (issue 14).
    from reconciler.adapters.source.revision import Repository
    from reconciler.adapters.source.signatures import _allowed_signers

    if not signers(trusted):
        return {}
    with Repository(inventory) as repo, _allowed_signers(trusted) as allowed:
        out = repo.repo.git.execute(
            ["git", "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed}"]
            + ["log", "--format=%H%x1f%GK", *(["-1"] if before is None else [])]
            + [commit if before is None else f"{before}..{commit}"]
        )
    found = (line.split("\x1f") for line in out.splitlines() if "\x1f" in line)
    return {sha: key for sha, key in found if key}


def _keygen(arguments: list[str], stdin: bytes, what: str) -> bytes:
    try:
        done = subprocess.run(
            ["ssh-keygen", *arguments], input=stdin, capture_output=True, check=False
        )
    except OSError as exc:
        raise InputError(f"cannot {what}: ssh-keygen: {exc.strerror}") from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise InputError(f"cannot {what}: {why[-1] if why else 'ssh-keygen failed'}")
    return done.stdout
