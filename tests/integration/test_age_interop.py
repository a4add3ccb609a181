"""Interoperability with the real `age` / `age-keygen` tools, in both directions.

Every recipient type `age` 1.1 knows: X25519 (binary and armored, one and several recipients),
ssh-ed25519, ssh-rsa and scrypt passphrases. `age` reads passphrases only from a terminal, so
those runs happen under a pseudo-terminal (`pty.fork`) that answers its prompts. Every call is
bounded by a timeout. Skips locally without `age`; fails under CI
(RECONCILER_REQUIRE_INTEGRATION=1).
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from reconciler.adapters.vault import age
from tests.support.integration import require_binary

pytestmark = pytest.mark.integration

TIMEOUT = 60
CHUNK = 64 * 1024
PASSPHRASE = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def age_bin() -> str:
    return require_binary("age")


@pytest.fixture(scope="module")
def keygen_bin() -> str:
    return require_binary("age-keygen")


def run(*argv: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(argv, input=stdin, capture_output=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def run_with_tty(argv: list[str], answers: int, passphrase: str = PASSPHRASE) -> None:
    """Run `argv` with a pseudo-terminal as its controlling tty, typing `passphrase` at each
    of its `answers` passphrase prompts; fail if it does not finish within TIMEOUT."""
    pid, master = pty.fork()
    if pid == 0:  # child: the pty is now its controlling terminal
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    deadline = time.monotonic() + TIMEOUT
    seen = b""
    answered = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                pytest.fail(f"{argv[0]} did not finish in {TIMEOUT}s; terminal: {seen!r}")
            ready, _, _ = select.select([master], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal (exited)
                break
            if not data:
                break
            seen += data
            # Each prompt ends in ": " after the word "passphrase"; answer each one once.
            while (
                answered < answers
                and seen.count(b"passphrase") > answered
                and seen.rstrip().endswith(b":")
            ):
                os.write(master, passphrase.encode() + b"\n")
                answered += 1
    finally:
        os.close(master)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert answered == answers, seen.decode(errors="replace")


def keygen(keygen_bin: str, path: Path) -> str:
    """An age-keygen identity file at `path`; returns its public key."""
    run(keygen_bin, "-o", str(path))
    (line,) = [item for item in path.read_text().splitlines() if item.startswith("# public key: ")]
    return line.removeprefix("# public key: ")


def ssh_key(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """(private key file, public key line): made by ssh-keygen when present, else by us."""
    private = tmp_path / f"id_{kind}"
    ssh_keygen = shutil.which("ssh-keygen")
    if ssh_keygen:
        extra = ["-b", "2048"] if kind == "rsa" else []
        run(
            ssh_keygen, "-q", "-t", kind, *extra, "-N", "", "-C", "test@interop", "-f", str(private)
        )
        return private, (tmp_path / f"id_{kind}.pub").read_text().strip()
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if kind == "ed25519"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return private, public + " test@interop"


def plaintext_of(size: int) -> bytes:
    return os.urandom(size)


# --- X25519 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", [0, 100, 3 * CHUNK + 17])
def test_age_decrypts_our_x25519_files(age_bin, tmp_path, armored, size):
    identity = age.generate_x25519()
    key_file = tmp_path / "key.txt"
    key_file.write_text(
        f"# public key: {identity.recipient().to_bech32()}\n{identity.to_bech32()}\n"
    )
    plaintext = plaintext_of(size)
    sealed = tmp_path / "file.age"
    sealed.write_bytes(age.encrypt(plaintext, [identity.recipient()], armor=armored))
    assert run(age_bin, "-d", "-i", str(key_file), str(sealed)) == plaintext


@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", [0, 100, 3 * CHUNK + 17])
def test_we_decrypt_age_x25519_files(age_bin, keygen_bin, tmp_path, armored, size):
    key_file = tmp_path / "key.txt"
    recipient = keygen(keygen_bin, key_file)
    identities = age.parse_identities(key_file.read_text())
    assert identities[0].recipient().to_bech32() == recipient
    plaintext = plaintext_of(size)
    flags = ["-a"] if armored else []
    sealed = run(age_bin, "-r", recipient, *flags, stdin=plaintext)
    assert age.is_armored(sealed) == armored
    assert age.decrypt(sealed, identities) == plaintext


def test_several_recipients_both_ways(age_bin, keygen_bin, tmp_path):
    keys = [tmp_path / f"key{i}.txt" for i in range(3)]
    recipients = [keygen(keygen_bin, path) for path in keys]
    private, public = ssh_key(tmp_path, "ed25519")
    plaintext = plaintext_of(CHUNK + 1)

    ours = tmp_path / "ours.age"
    ours.write_bytes(
        age.encrypt(
            plaintext,
            [age.parse_recipient(r) for r in recipients] + [age.parse_recipient(public)],
            armor=True,
        )
    )
    for path in keys + [private]:
        assert run(age_bin, "-d", "-i", str(path), str(ours)) == plaintext

    pub_file = tmp_path / "ssh.pub"
    pub_file.write_text(public + "\n")
    flags = [arg for r in recipients for arg in ("-r", r)] + ["-R", str(pub_file)]
    theirs = run(age_bin, *flags, stdin=plaintext)
    for path in keys + [private]:
        assert age.decrypt(theirs, age.parse_identities(path.read_text())) == plaintext


# --- SSH keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_ssh_keys_both_ways(age_bin, tmp_path, kind):
    private, public = ssh_key(tmp_path, kind)
    identities = age.parse_identities(private.read_text())
    plaintext = plaintext_of(2 * CHUNK)

    ours = tmp_path / "ours.age"
    ours.write_bytes(age.encrypt(plaintext, [age.parse_recipient(public)]))
    assert run(age_bin, "-d", "-i", str(private), str(ours)) == plaintext

    theirs = run(age_bin, "-a", "-r", public, stdin=plaintext)
    assert age.decrypt(theirs, identities) == plaintext


# --- scrypt passphrases (through a terminal) --------------------------------------------------


@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_age_decrypts_our_passphrase_files(age_bin, tmp_path, armored):
    plaintext = plaintext_of(CHUNK + 5)
    sealed = tmp_path / "file.age"
    # Work factor 15 keeps the test quick; age accepts any factor up to its own limit.
    sealed.write_bytes(
        age.encrypt(plaintext, [age.scrypt_recipient(PASSPHRASE, 15)], armor=armored)
    )
    out = tmp_path / "out"
    run_with_tty([age_bin, "-d", "-o", str(out), str(sealed)], answers=1)
    assert out.read_bytes() == plaintext


@pytest.mark.parametrize("armored", [False, True], ids=["binary", "armored"])
def test_we_decrypt_age_passphrase_files(age_bin, tmp_path, armored):
    plaintext = plaintext_of(1000)
    source = tmp_path / "in"
    source.write_bytes(plaintext)
    sealed = tmp_path / "file.age"
    flags = ["-a"] if armored else []
    run_with_tty([age_bin, "-p", *flags, "-o", str(sealed), str(source)], answers=2)
    data = sealed.read_bytes()
    assert age.decrypt(data, [age.scrypt_identity(PASSPHRASE)]) == plaintext
    with pytest.raises(age.AgeError) as exc:
        age.decrypt(data, [age.scrypt_identity("wrong")])
    assert exc.value.stage == "no_match"
