"""What a pass builds only when it is used: the transports (the SSH one loads fabric and
paramiko) and gitpython (only inside something that may be a git repository)."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from reconciler.adapters.source import git as gitsource
from reconciler.adapters.source.git import head_commit, maybe_repository
from reconciler.adapters.source.revision import Repository
from reconciler.cli.wiring import Transports, transports
from reconciler.core.errors import SourceError


class _Built:
    def __init__(self, name: str):
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_transport_is_built_on_its_first_lookup_and_only_once():
    built: list[str] = []

    def factory(name):
        def build():
            built.append(name)
            return _Built(name)

        return build

    found = Transports({"local": factory("local"), "ssh": factory("ssh")})
    assert "ssh" in found and "other" not in found and sorted(found) == ["local", "ssh"]
    assert built == [] and found.values() == []
    local = found["local"]
    assert found.get("local") is local and found.get("other") is None
    with pytest.raises(KeyError):
        found["other"]
    assert built == ["local"] and found.values() == [local]  # what the caller closes


def test_threads_looking_up_one_transport_together_build_it_once():
    built = []
    start = threading.Barrier(8)

    def build():
        built.append(1)
        return _Built("ssh")

    found = Transports({"ssh": build})
    seen = []

    def look():
        start.wait(timeout=10)
        seen.append(found["ssh"])

    threads = [threading.Thread(target=look) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(built) == 1 and len(seen) == 8 and len({id(t) for t in seen}) == 1


def test_the_pass_transports_are_the_local_and_ssh_ones_built_with_their_settings(tmp_path):
    class Settings:
        ssh_keepalive = 7
        ssh_keepalive_count = 2
        local_machines = None

    found = transports(None, Settings(), tmp_path, teams=2)
    assert type(found["local"]).__name__ == "LocalTransport"
    assert found["local"].own_user_allowed is False  # two teams, the shared user not allowed
    ssh = found["ssh"]
    assert type(ssh).__name__ == "SshTransport"
    assert (ssh.keepalive, ssh.keepalive_count) == (7, 2)
    for transport in found.values():
        transport.close()


def test_local_transports_alone_import_no_ssh():
    code = (
        "import sys\n"
        "from reconciler.cli.wiring import transports\n"
        "found = transports()\n"
        "found['local']\n"
        "[t.close() for t in found.values()]\n"
        "print(sorted(m for m in ('fabric', 'paramiko', 'unittest.mock') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_ssh_transport_loads_paramiko_without_importlib_metadata_and_keeps_its_version():
    """paramiko asks importlib.metadata for its version (~20 ms of imports at every pass over
    SSH): sshlib answers from its .dist-info folder, the same version the real module gives,
    and importlib.metadata still works afterwards."""
    code = (
        "import sys\n"
        "from reconciler.adapters.transport.sshlib import paramiko\n"
        "print('importlib.metadata' in sys.modules, 'email' in sys.modules)\n"
        "print(paramiko.__version__, paramiko.Transport._CLIENT_ID)\n"
        "from importlib import metadata\n"
        "print(metadata.version('paramiko'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, ours, real = out.stdout.splitlines()
    assert loaded == "False False"
    version, client_id = ours.split()
    assert version == real and client_id == f"paramiko_{real}"


def _git(cwd, *words):
    subprocess.run(["git", *words], cwd=cwd, check=True, capture_output=True)


def test_a_folder_outside_any_repository_is_known_without_gitpython(tmp_path):
    inventory = tmp_path / "project" / "inventory"
    inventory.mkdir(parents=True)
    if maybe_repository(inventory):
        pytest.skip(f"{tmp_path} is itself inside something that may be a git repository")
    assert head_commit(inventory) is None
    with pytest.raises(SourceError, match="is not inside a git repository"):
        Repository(inventory)
    assert maybe_repository(tmp_path / "missing" / "inventory") is False


@pytest.mark.parametrize("marker", [".git", "HEAD", "objects", "refs"])
def test_anything_that_may_be_a_repository_is_left_to_gitpython(tmp_path, marker):
    (tmp_path / "inventory").mkdir()
    (tmp_path / marker).write_text("")
    assert maybe_repository(tmp_path / "inventory")


def test_inside_a_repository_the_commit_is_read(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "teams.yaml").write_text("x\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert maybe_repository(inventory)
    assert head_commit(inventory) == sha
    (inventory / "new.yaml").write_text("y\n")
    assert head_commit(inventory) == f"{sha}-dirty"
    with Repository(inventory) as repo:
        assert repo.path == "inventory"


def test_a_symlink_into_a_repository_is_left_to_gitpython(tmp_path):
    repo = tmp_path / "repo"
    (repo / "inventory").mkdir(parents=True)
    _git(repo, "init", "-q")
    link = tmp_path / "outside" / "inventory"
    link.parent.mkdir()
    link.symlink_to(repo / "inventory")
    assert maybe_repository(link)


def _gitpython_says(inventory) -> str | None:
    """head_commit as gitpython alone answered it (before `git status` answered first)."""
    import git

    with git.Repo(inventory, search_parent_directories=True) as repo:
        if not repo.head.is_valid():
            return None
        relative = str(inventory.resolve().relative_to(repo.working_tree_dir)) or "."
        dirty = repo.is_dirty(untracked_files=True, path=relative)
        return repo.head.commit.hexsha + ("-dirty" if dirty else "")


def test_one_git_status_answers_as_gitpython_did(tmp_path):
    repo = tmp_path / "repo"
    inventory = repo / "inventory"
    (inventory / "tasks").mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    assert gitsource._status_commit(inventory) is None  # no commit yet
    assert _gitpython_says(inventory) is None
    (inventory / "a.yaml").write_text("a\n")
    (repo / "README").write_text("r\n")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    states = []
    for change in (
        lambda: None,  # clean
        lambda: (repo / "README").write_text("outside the inventory\n"),  # still clean
        lambda: (inventory / "a.yaml").write_text("changed\n"),  # unstaged
        lambda: _git(repo, "add", "-A"),  # staged
        lambda: _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "2"),
        lambda: (inventory / "tasks" / "new.yaml").write_text("n\n"),  # untracked, nested
        lambda: (inventory / "tasks" / "new.yaml").unlink(),
        lambda: (inventory / "a.yaml").unlink(),  # deleted
    ):
        change()
        quick = gitsource._status_commit(inventory)
        assert quick == _gitpython_says(inventory)
        assert head_commit(inventory) == quick
        states.append(quick)
    assert [s.endswith("-dirty") for s in states] == [
        False,
        False,
        True,
        True,
        False,
        True,
        False,
        True,
    ]


def test_git_status_leaves_what_it_cannot_answer_to_gitpython(tmp_path, monkeypatch):
    assert gitsource._status_commit(tmp_path / "missing") is gitsource._UNSURE
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    assert gitsource._status_commit(tmp_path) is gitsource._UNSURE
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert gitsource._status_commit(tmp_path) is gitsource._UNSURE
