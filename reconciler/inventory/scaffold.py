"""What `reconcile init` writes: a working inventory and the files around it.

`scaffold_files` reads only the shipped schemas (names in, {relative path: text} out);
`write_scaffold` writes them, refusing to overwrite an existing file unless forced. The one
file merged rather than overwritten is `.gitignore`: `.reconciler/` (the local state store)
is appended to it.

Every YAML file starts with a `# yaml-language-server: $schema=PATH` line naming its kind's
schema by a path relative to the file, and the schemas themselves are written to `schemas/`
(copies of the installed version's): editors with the YAML language server complete and check
the files offline, without any setting. The schemas' `$id`s are URNs, names that no one is
expected to fetch.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from reconciler.core.diagnostics import Diagnostics, Location
from reconciler.core.errors import InfrastructureError, InputError, UsageError, raise_if_errors
from reconciler.inventory.loader import NAME_RE, display_path

SCHEMA_FOLDER = "schemas"
SCHEMA_KINDS = ("settings", "team", "machine", "task")
GITIGNORE_LINE = ".reconciler/"
WORKFLOW_PATH = ".github/workflows/reconcile.yml"


def schema_path(kind: str) -> str:
    """Where the scaffold writes the schema of `kind`, relative to DIR."""
    return f"{SCHEMA_FOLDER}/{kind}.schema.json"


def schema_line(kind: str, path: str) -> str:
    """The editor comment naming the schema of `kind` (team, machine, task, settings) for the
    file at `path` (both relative to DIR): a path from the file's own folder."""
    relative = posixpath.relpath(schema_path(kind), posixpath.dirname(path) or ".")
    return f"# yaml-language-server: $schema={relative}\n"


def schema_text(kind: str) -> str:
    """The installed version's JSON Schema of `kind`, as shipped."""
    schemas = resources.files("reconciler.inventory").joinpath("schemas")
    return schemas.joinpath(f"{kind}.schema.json").read_text("utf-8")


def scaffold_files(team: str = "ops", machine: str = "local") -> dict[str, str]:
    """{path relative to DIR: text} of a working inventory for `team` with one local
    `machine` and one example task, the files around it and the JSON Schemas its files name.
    Raises `UsageError` for a name the loader would refuse."""
    for what, name in (("team", team), ("machine", machine)):
        if not NAME_RE.fullmatch(name):
            raise UsageError(
                f"--{what} {name!r}: use lowercase letters, digits, '.', '_' and "
                "'-', starting with a letter or digit"
            )
    texts = {
        ("settings", "inventory/reconciler.yaml"): SETTINGS,
        ("team", f"inventory/teams/{team}.yaml"): TEAM.format(team=team),
        ("machine", f"inventory/machines/{machine}.yaml"): MACHINE.format(
            team=team, machine=machine
        ),
        ("task", f"inventory/tasks/{team}/hello.yaml"): TASK.format(machine=machine),
    }
    files = {path: schema_line(kind, path) + text for (kind, path), text in texts.items()}
    files["inventory/.gitattributes"] = GITATTRIBUTES
    files[WORKFLOW_PATH] = WORKFLOW
    files.update({schema_path(kind): schema_text(kind) for kind in SCHEMA_KINDS})
    return files


@dataclass(frozen=True)
class Written:
    """One file `write_scaffold` wrote: `created`, `overwritten` or `updated` (.gitignore)."""

    path: Path
    action: str


def write_scaffold(
    directory: str | Path, files: Mapping[str, str], *, force: bool = False
) -> list[Written]:
    """Write `files` under `directory` (created if missing) and merge `.gitignore`.

    Raises `InputError` naming every file that exists already (nothing is written then)
    unless `force`; a folder in a file's place is refused even with `force`.
    """
    root = Path(directory)
    _check_folder(root)
    _check_conflicts(root, files, force)
    written = []
    for relative, text in files.items():
        path = root / relative
        action = "overwritten" if path.exists() else "created"
        with _naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        written.append(Written(path, action))
    with _naming(root / ".gitignore"):
        gitignore = _merge_gitignore(root / ".gitignore")
    return written + ([gitignore] if gitignore else [])


# A write that fails for these reasons is the machine's trouble (exit 3), not the folder the
# user named (exit 2).
_MACHINE_TROUBLE = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG}


def _check_folder(root: Path) -> None:
    """DIR, or one of its folders, is a file: refused before anything is written."""
    for folder in (*reversed(root.parents), root):
        if folder.exists() and not folder.is_dir():
            diags = Diagnostics()
            diags.error(
                Location(display_path(folder)),
                f"is a file, not a folder: init cannot write {display_path(root)}",
                "name a new folder or an existing one",
            )
            raise InputError(diags)


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError while writing `path` as the error naming it: exit 3 for a full or failing
    disk, else exit 2 (no right to write there, a read-only file system)."""
    try:
        yield
    except OSError as exc:
        message = f"cannot write {display_path(path)}: {exc.strerror or exc}"
        if exc.errno in _MACHINE_TROUBLE:
            raise InfrastructureError(message) from None
        diags = Diagnostics()
        diags.error(
            Location(display_path(path)),
            f"cannot write it: {exc.strerror or exc}",
            "init a folder you may write, or fix its permissions",
        )
        raise InputError(diags) from None


def _check_conflicts(root: Path, files: Mapping[str, str], force: bool) -> None:
    """Every scaffold file already there, as one error each (all at once)."""
    diags = Diagnostics()
    for relative in files:
        path = root / relative
        if path.is_symlink() or (path.exists() and not path.is_file()):
            diags.error(
                Location(display_path(path)),
                "exists and is not a regular file",
                "move it away, or init another folder",
            )
        elif path.exists() and not force:
            diags.error(
                Location(display_path(path)),
                "already exists; init overwrites nothing",
                "pass --force to overwrite the scaffold's files, or init another folder",
            )
    if (root / ".gitignore").is_symlink():
        diags.error(
            Location(display_path(root / ".gitignore")),
            "is a symbolic link",
            "add .reconciler/ to the file it points to, and remove the link",
        )
    raise_if_errors(diags)


def _merge_gitignore(path: Path) -> Written | None:
    """Append `.reconciler/` to `.gitignore` unless it is there already."""
    existing = path.read_text() if path.is_file() else None
    if existing is not None and GITIGNORE_LINE in existing.splitlines():
        return None
    if existing is None:
        path.write_text(GITIGNORE_TEXT)
        return Written(path, "created")
    separator = "\n" if existing and not existing.endswith("\n") else ""
    path.write_text(existing + separator + GITIGNORE_TEXT)
    return Written(path, "updated")


def next_steps(directory: str | Path) -> str:
    """What to do after `init`, as shown to the user."""
    where = os.fspath(directory)
    cd = "" if where in (".", "") else f"cd {where} && "
    return (
        f"Next: {cd}reconcile validate && reconcile --once\n"
        "Then commit it (git init && git add -A && git commit) and push: "
        f"{WORKFLOW_PATH} validates pull requests and posts `reconcile diff` on them, and "
        "runs `reconcile --once` on pushes to main (set the RECONCILE_STATE and "
        "RECONCILE_IDENTITY secrets first)."
    )


GITIGNORE_TEXT = f"""# The reconciler's local state store (SQLite) and work files.
{GITIGNORE_LINE}
"""

SETTINGS = """# Settings of this inventory; command-line flags and RECONCILE_* variables override them.
state: sqlite:///.reconciler/state.db
concurrency: 16
poll_interval: 30s
git: {remote: origin, branch: main, verify: none}
# The daemon's HTTP listener (--http-addr): a bearer token and the git webhook's secret, both
# from a team vault (or RECONCILE_HTTP_TOKEN and RECONCILE_HOOK_SECRET on the host).
# http:
#   token: {vault: CONSOLE_TOKEN, team: ops}
#   hook_secret: {vault: GIT_HOOK_SECRET, team: ops}
"""

TEAM = """name: {team}
description: The {team} team
# Members and their roles: admin (may change the team, its members and vault recipients),
# operator (may change the team's tasks; a recipient of the vault), viewer (reads plans and
# runs). An `age:` key (from `reconcile vault keygen`) or an `ssh:` key makes an admin or
# operator a recipient of the team's vault, vaults/{team}.age.
# members:
#   - name: alice
#     role: admin
#     age: age1...
#   - name: bob
#     role: operator
#     ssh: ssh-ed25519 AAAA...
defaults:
  priority: 3
  timeout: 10m
  retry: {{count: 1, delay: 30s, backoff: 2, max_delay: 10m, failure_action: alert}}
  # timezone: Europe/Berlin  # the IANA zone schedules and deny windows are read in (default UTC)
  # alert_after: 30m  # a run still running this long after it started alerts `overdue`
  # rollout: {{max_failed: 0, pause: 2m}}  # every task's rollout, field by field (see task)
# Alerts through apprise. A target without `on:` gets failed, unknown, blocked, recovered,
# unreachable, drift, overdue, missed, halted, awaiting_approval and killed; `succeeded` is opt-in
# (only where `on:` lists it).
# alerts:
#   - mailto://oncall@example.com
#   - url: {{vault: CHAT_HOOK}}
#     on: [failed, drift, overdue, missed]
"""

MACHINE = """# The reconciler's own host: tasks run with `sh -c` in its working directory, with the
# reconciler's own rights (they could read its identity); `user: NAME` runs them as that OS
# user instead, and is required once the inventory has a second team.
# A remote machine: transport: ssh, host, user, host_key (from `reconcile machines keyscan
# HOST`, checked by a human) and key: {{vault: NAME}}.
name: {machine}
team: {team}
transport: local
labels: {{role: local}}
max_parallel: 1
"""

TASK = """# Runs once per version on each target: change the command and the next pass runs it
# again; change only the priority or the description and nothing re-runs.
name: hello
description: Say hello from each target machine
machines: [{machine}]
priority: 3
command: echo "hello from $RECONCILE_MACHINE (run $RECONCILE_RUN_ID)"
# schedule: "0 3 * * *"  # run at every due slot instead of once per version
# grace: 15m  # a slot not started 15m after it is due (a window, a freeze) alerts `missed`
# approval: {{role: admin, count: 1}}  # each new version waits for an admin's signed
#                                      # `reconcile approve` (not the commit's own signer)
# rollout:                 # each new version in batches, targets ordered by machine name
#   batches: [1, 25%, 100%]  # cumulative share of the targets (default: all at once)
#   max_failed: 0          # runs that may fail before the runs not started halt (or 10%)
#   verify: ./healthy.sh   # run on each machine after its run succeeded; non-zero fails it
#   pause: 2m              # wait after a batch ended well before the next starts
# params:  # what `reconcile run hello --param NAME=VALUE --reason TEXT` may set, now
#   GREETING: {{default: hello, allowed: [hello, hi]}}   # $GREETING in every run's env
#   DAY: {{pattern: '^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}$'}}     # only when given: a date
"""

GITATTRIBUTES = """# Vaults are age ciphertext: a textual diff or merge of them means nothing. Review vault
# changes with `reconcile diff` (which keys changed), resolve conflicts by re-running
# `reconcile vault set` on one side.
vaults/*.age -diff -merge linguist-generated=true
"""

# The same text as examples/ci/github-actions.yml (a test keeps them equal).
WORKFLOW = r"""# Reconcile the inventory from GitHub Actions (`reconcile init` writes this file as
# .github/workflows/reconcile.yml; see the README, section "CI").
#  - pull requests: validate, then post `reconcile diff` as a comment (one comment, updated
#    on every push to the pull request);
#  - pushes to main, and every 15 minutes (due schedules, retries): one pass,
#    `reconcile --once`, never two at a time.
# Secrets (Settings > Secrets and variables > Actions):
#   RECONCILE_STATE     the shared state store, e.g. postgresql://reconciler@db.example.com/reconciler
#                       (a runner's disk is gone after the job: a SQLite file would forget every run)
#   RECONCILE_IDENTITY  the reconciler's age identity (AGE-SECRET-KEY-1...), a recipient of the
#                       vaults whose secrets the tasks use
# Tasks of `transport: local` machines run on the runner itself; for ssh machines use a runner
# that can reach them (a self-hosted runner).
name: reconcile

on:
  pull_request:
    paths: ["inventory/**"]
  push:
    branches: [main]
    paths: ["inventory/**"]
  schedule:
    - cron: "*/15 * * * *"
  workflow_dispatch:

permissions:
  contents: read

env:
  # How to install reconciler: a version from your package index, or a git URL such as
  # "reconciler @ git+https://example.com/you/reconciler@v0.1.0".
  RECONCILER_INSTALL: reconciler

jobs:
  review:
    if: github.event_name == 'pull_request'
    runs-on: ubuntu-latest
    permissions:
      contents: read
      pull-requests: write  # the comment (pull requests from forks get a read-only token)
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0  # `reconcile diff` reads both revisions from the history
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install "$RECONCILER_INSTALL"
      - name: Validate
        run: reconcile validate
      - name: Diff
        env:
          BASE_REF: ${{ github.base_ref }}
        # HEAD is the pull request merged into its base: the diff is what merging changes.
        run: reconcile diff "origin/$BASE_REF" HEAD --format markdown > reconcile-diff.md
      - name: Comment
        uses: actions/github-script@v7
        with:
          script: |
            const fs = require("fs");
            const marker = "<!-- reconcile diff -->";
            const body = marker + "\n" + fs.readFileSync("reconcile-diff.md", "utf8");
            const { owner, repo } = context.repo;
            const issue_number = context.issue.number;
            const comments = await github.paginate(github.rest.issues.listComments,
                                                   { owner, repo, issue_number });
            const previous = comments.find(c => (c.body || "").startsWith(marker));
            if (previous) {
              await github.rest.issues.updateComment({ owner, repo, comment_id: previous.id, body });
            } else {
              await github.rest.issues.createComment({ owner, repo, issue_number, body });
            }

  reconcile:
    if: github.event_name != 'pull_request' && github.ref == 'refs/heads/main'
    runs-on: ubuntu-latest
    # One pass at a time: a pass that starts while another runs waits for it (a newer one
    # replaces a waiting one: the newest commit is the one to reconcile).
    concurrency:
      group: reconcile
      cancel-in-progress: false
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0  # the pass records the commit and refuses one older than the last
      - uses: actions/setup-python@v5
        with:
          python-version: "3.11"
      - run: pip install "$RECONCILER_INSTALL"
      - name: Reconcile
        env:
          RECONCILE_STATE: ${{ secrets.RECONCILE_STATE }}
          RECONCILE_IDENTITY: ${{ secrets.RECONCILE_IDENTITY }}
        run: reconcile --once
"""

__all__ = [
    "SCHEMA_KINDS",
    "Written",
    "next_steps",
    "scaffold_files",
    "schema_line",
    "schema_path",
    "schema_text",
    "write_scaffold",
]
