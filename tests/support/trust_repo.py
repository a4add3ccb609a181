"""A git repository whose commits are signed with real `ssh-keygen` keys, for the attacks on
`git.verify` (tests/integration/test_trust_*.py, test_accept_history.py, test_signed_commits.py).

`TrustRepo(root)` holds teams prod (alice admin, bob operator, valerie viewer) and dev (dana
admin, dan operator), one local machine each, and a signing key for each of them and for
mallory, who has no role. Every task's command creates a marker file (`marker(name)`), so a
test proves what ran and what did not; `start()` makes and reconciles the first commit,
signed by prod's admin, with her key as the trust anchor. `SignedGitRepo` is the bare
repository with signing keys, for tests that set up their own teams.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.cli import reconcile
from tests.support.integration import require_binary

PEOPLE = ("alice", "bob", "valerie", "dana", "dan", "mallory")
# prod: alice admin, bob operator, valerie viewer; dev: dana admin, dan operator; mallory: nobody.


class SignedGitRepo:
    """A git repository in `root/work` and an ed25519 signing key (`keys[name]`) for each of
    `people`; commits are signed with git's SSH signatures (gpg.format=ssh)."""

    def __init__(self, root: Path, people: tuple[str, ...]):
        require_binary("ssh-keygen")
        self.root, self.work = root, root / "work"
        self.keys = {name: self._key(name) for name in people}
        self.work.mkdir()
        self.git("init", "-q", "-b", "main")

    def _key(self, name: str) -> Path:
        key = self.root / "keys" / name
        key.parent.mkdir(exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
        )
        return key

    def public(self, name: str) -> str:
        return " ".join(self.keys[name].with_suffix(".pub").read_text().split()[:2])

    def fingerprint(self, name: str) -> str:
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(self.keys[name].with_suffix(".pub"))],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.split()[1]

    def write(self, relative: str, text: str) -> None:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def git(self, *args: str, input: str | None = None) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
        }
        return subprocess.run(
            ["git", *args],
            cwd=self.work,
            check=True,
            capture_output=True,
            text=True,
            env=env,
            input=input,
        ).stdout.strip()

    def signing(self, signer: str | None) -> list[str]:
        return (
            ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.keys[signer]}"] if signer else []
        )

    def commit(self, signer: str | None, message: str = "change") -> str:
        self.git("add", "-A")
        self.git(*self.signing(signer), "commit", *(["-S"] if signer else []), "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


class TrustRepo(SignedGitRepo):
    """A repository with teams prod and dev, one local machine each, and signing keys."""

    def __init__(self, root: Path, verify: str = "range", state_in_settings: bool = False):
        super().__init__(root, PEOPLE)
        self.state_in_settings = state_in_settings
        self.settings(verify=verify)
        self.team("prod", admins=["alice"], operators=["bob"], viewers=["valerie"])
        self.team("dev", admins=["dana"], operators=["dan"])
        self.write("inventory/machines/box.yaml", "name: box\nteam: prod\ntransport: local\n")
        self.write("inventory/machines/devbox.yaml", "name: devbox\nteam: dev\ntransport: local\n")
        self.task("prod", "hello")

    def settings(self, verify: str = "range", state: str = "state.db", extra: str = "") -> None:
        self.state_url = f"sqlite:///{self.root / state}"
        line = f"state: {self.state_url}\n" if self.state_in_settings else ""
        # Local machines of two teams share the reconciler's rights: allowed here on purpose.
        self.write(
            "inventory/reconciler.yaml",
            f"{line}git: {{verify: {verify}}}\n"
            f"local_machines: {{allow_shared_user: true}}\n{extra}",
        )

    def team(self, name: str, admins=(), operators=(), viewers=()) -> None:
        members = [
            f"  - {{name: {n}, role: {role}, ssh: {self.public(n)}}}\n"
            for role, names in (("admin", admins), ("operator", operators), ("viewer", viewers))
            for n in names
        ]
        self.write(f"inventory/teams/{name}.yaml", f"name: {name}\nmembers:\n" + "".join(members))

    def marker(self, name: str) -> Path:
        return self.root / f"ran-{name}"

    def task(
        self,
        team: str,
        name: str,
        file: str | None = None,
        machine: str | None = None,
        extra: str = "",
    ) -> None:
        machine = machine or ("box" if team == "prod" else "devbox")
        self.write(
            f"inventory/tasks/{team}/{file or name + '.yaml'}",
            f"name: {name}\nmachines: [{machine}]\ncommand: touch {self.marker(name)}\n" + extra,
        )

    def once(self, code: int, *extra: str, env: dict | None = None) -> str:
        state = () if self.state_in_settings else ("--state", f"sqlite:///{self.root / 'state.db'}")
        return reconcile("--once", *state, *extra, cwd=self.work, env=env, check_code=code).err

    def host_env(self) -> dict:
        """The host names the store its `state:` setting names (the host's word, not the
        commit's): how a host that kept `state:` in the file runs under verify."""
        return {"RECONCILE_STATE": self.state_url}

    def start(self) -> str:
        """The first commit, signed by prod's admin, reconciled with her key as the anchor."""
        first = self.commit("alice", "initial")
        self.once(
            0,
            "--trust-anchor",
            self.fingerprint("alice"),
            env=self.host_env() if self.state_in_settings else None,
        )
        assert self.marker("hello").exists()
        return first


__all__ = ["PEOPLE", "SignedGitRepo", "TrustRepo"]
