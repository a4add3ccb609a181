"""No plaintext at rest: once a run's result is recorded (directly, or adopted at a later pass
after a lost connection) nothing a secret could be read from is left on either side: not in
TMPDIR, the working directory, /dev/shm, HOME, nor the target's markers folder. The secret
is looked for as-is and base64-encoded (a task printing it encoded is just as much a leak).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.support.cli import reaped, reconcile, spawn
from tests.support.markers import any_exited
from tests.support.ssh_project import ssh_project
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
SECRET = "at-rest-Secret-58316 not here"


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.b64encode(raw).rstrip(b"=")]


def _leaks(roots: list[Path]) -> list[str]:
    """Every file under `roots` holding a form of the secret ("path: form")."""
    found = []
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                path = Path(folder) / name
                try:
                    if not path.is_file():
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                found += [f"{path}: {form[:12]!r}..." for form in _forms(SECRET) if form in data]
    return found


@pytest.fixture
def places(tmp_path, sshd):
    """The reconciler's own TMPDIR and HOME, and everywhere the secret must not be."""
    tmp, home = tmp_path / "tmp", tmp_path / "home"
    tmp.mkdir()
    home.mkdir()
    env = {"TMPDIR": str(tmp), "HOME": str(home)}
    remote_home = sshd.root / "home"
    return env, [
        tmp,
        home,
        tmp_path / "project",
        Path("/dev/shm"),
        remote_home,
        remote_home / ".cache" / "reconciler" / "runs",
    ]


def _project(tmp_path, sshd, client_key):
    p = ssh_project(
        tmp_path / "project", sshd.port, sshd.host_key, client_key, secrets={"TOKEN": SECRET}
    )
    return p


def test_a_recorded_runs_output_leaves_no_secret_on_the_target_or_here(
    tmp_path, sshd, client_key, places
):
    env, roots = places
    p = _project(tmp_path, sshd, client_key)
    p.task(
        "leaky",
        'env: {TOKEN: {vault: TOKEN}}\ncommand: echo "token=$TOKEN"; printf %s "$TOKEN" | base64\n',
    )
    data = reconcile(
        "--once", "--format", "json", "--identity", str(p.key), cwd=p.root, env=env, check_code=0
    ).json()
    [run] = data["runs"]
    shown = p.run("queue", "show", str(run["id"]), "--format", "json", code=0).json()
    assert shown["output"].startswith("token=***\n")
    assert _leaks(roots) == []


def test_an_adopted_runs_output_leaves_no_secret_on_the_target(tmp_path, sshd, client_key, places):
    env, roots = places
    p = _project(tmp_path, sshd, client_key)
    fifo, started = tmp_path / "go", tmp_path / "started"
    os.mkfifo(fifo)
    p.task(
        "leaky",
        f'env: {{TOKEN: {{vault: TOKEN}}}}\ncommand: echo "token=$TOKEN"; '
        f'echo up > "{started}"; read line < "{fifo}"; exit 4\n',
    )
    first = spawn("--once", "--format", "json", "--identity", str(p.key), cwd=p.root, env=env)
    with reaped(first):
        wait_until(
            lambda: started.exists() or first.poll() is not None,
            timeout=30,
            message="the command to start",
        )
        assert first.poll() is None, first.communicate()
        assert sshd.drop_connections()
        out, err = first.communicate(timeout=60)
    assert first.returncode == 1, err
    with open(fifo, "w") as release:
        release.write("go\n")
    markers = sshd.root / "home" / ".cache" / "reconciler" / "runs"
    wait_until(lambda: any_exited(markers), timeout=30, message="the exit marker")
    second = reconcile(
        "--once", "--format", "json", "--identity", str(p.key), cwd=p.root, env=env, check_code=1
    ).json()
    [adopted] = second["runs"]
    assert (adopted["status"], adopted["exit_code"]) == ("failed", 4)
    shown = p.run("queue", "show", str(adopted["id"]), "--format", "json", code=0).json()
    assert shown["output"] == "token=***\n"
    assert _leaks(roots) == []
