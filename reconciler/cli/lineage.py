"""The commit check shared by `--once` and the daemon: run only commits that move forward, and
under `git.verify` only commits whose signers hold the roles their changes need.

Trust is decided on trusted ground (docs/security.md): the verify mode comes from
`--verify`/`RECONCILE_GIT_VERIFY`, else from the last reconciled commit's `reconciler.yaml`
(read from git), never from the commit being judged; so is the store that holds that last
commit: under verify a `state:` setting is refused, the host names the store. A store that has
never reconciled, in a
repository whose history ever turned `git.verify` on, accepts a first commit only against an
anchor given outside the repository (`--trust-anchor`/`RECONCILE_TRUST_ANCHOR`: an admin's key
that signed it, or a commit to trust as if it had been reconciled).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from reconciler.adapters.source import git as gitsource
from reconciler.adapters.source.git import RefusedCommit
from reconciler.adapters.source.trees import Trees
from reconciler.adapters.store.base import StateStore
from reconciler.cli.settings import VERIFY_MODES, HostSettings
from reconciler.core.diagnostics import Diagnostics
from reconciler.core.errors import SourceError, UsageError
from reconciler.inventory.yamlio import parse_yaml, to_plain
from reconciler.pipeline.engine import utc_now

log = logging.getLogger(__name__)

MODES = VERIFY_MODES
FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
STRENGTH = {mode: rank for rank, mode in enumerate(MODES)}
SETTINGS_FILES = ("reconciler.yaml", "reconciler.yml")
ANCHOR_HINT = (
    "name the trust anchor from outside the repository: --trust-anchor "
    "COMMIT|SSH-KEY (or RECONCILE_TRUST_ANCHOR), e.g. the fingerprint "
    "(SHA256:...) of the admin key that signed it, or the last commit a previous "
    "store reconciled"
)


@dataclass(frozen=True)
class Trust:
    """How a pass judges its commit, decided before anything of the commit is read.

    `mode`: none, head or range; `why`: where the mode came from (for messages);
    `last`: the store's last reconciled commit when decided; `anchor`: the raw
    `--trust-anchor` value; `state_setting`: the `state:` setting that chose the store
    (None: not set, the default) when `state_by_settings`, else a flag or environment
    variable chose the store."""

    mode: str
    why: str
    last: str | None
    anchor: str | None = None
    state_setting: str | None = None
    state_by_settings: bool = False
    # Whether the pass loaded the commit's own tree (decided with `last`), and how to decide
    # again when another pass moved the store's last commit meanwhile.
    from_commit: bool = False
    redecide: Callable[[str | None], Trust] | None = field(default=None, compare=False)

    @property
    def on(self) -> bool:
        return self.mode != "none"


def host_verify(settings: HostSettings) -> tuple[str | None, str]:
    """The host's `--verify` / `RECONCILE_GIT_VERIFY` and which of them gave it; (None, "")
    when neither is set. A malformed value is a usage error (exit 2) naming its source."""
    if settings.verify is None:
        return None, ""
    return settings.verify.value, settings.verify.source


def trust_anchor(settings: HostSettings) -> str | None:
    return settings.trust_anchor.value if settings.trust_anchor is not None else None


def committed_settings(trees: Trees, prefix: str, commit: str) -> dict:
    """The plain content of `reconciler.yaml` at `commit` ({} when absent or unreadable)."""
    for name in SETTINGS_FILES:
        data = trees.read(commit, prefix + name)
        if data is not None:
            plain = to_plain(parse_yaml(data, name, Diagnostics()))
            return plain if isinstance(plain, dict) else {}
    return {}


def verify_setting(settings: dict) -> str:
    git = settings.get("git")
    mode = git.get("verify") if isinstance(git, dict) else None
    return mode if mode in MODES else "none"


def decide(
    settings: HostSettings,
    repo,
    last: str | None,
    head: str | None,
    state: tuple[bool, str | None],
) -> Trust:
    """The verify mode of a pass over `head`, given the store's `last` commit.

    `repo` is a (Trees, inventory prefix) pair, or None outside git; `state` is (whether the
    `state:` setting chose the store, that setting)."""
    flag, source = host_verify(settings)
    anchor = trust_anchor(settings)
    by_settings, state_setting = state
    if flag is not None:
        return Trust(flag, source, last, anchor, state_setting, by_settings)
    if repo is None or head is None:
        return Trust("none", "no git repository", last, anchor, state_setting, by_settings)
    trees, prefix = repo
    if last is not None and trees.resolve(last) is None:
        raise SourceError(
            f"the last commit reconciled, {last[:12]}, is not in this clone, so "
            "neither its git.verify nor its roles can be read: fetch the full "
            "history (e.g. `fetch-depth: 0` in CI)"
        )
    if last is not None:
        mode = verify_setting(committed_settings(trees, prefix, last))
        return Trust(
            mode,
            f"git.verify of {last[:12]}, the last commit reconciled",
            last,
            anchor,
            state_setting,
            by_settings,
        )
    # Never reconciled: the strongest mode the repository's history ever asked for, so a
    # commit that turns verify off (or points `state:` at a new store) cannot skip it.
    seen = [
        verify_setting(committed_settings(trees, prefix, sha))
        for sha in trees.touching(head, [prefix + name for name in SETTINGS_FILES])
    ]
    mode = max(seen, key=STRENGTH.__getitem__, default="none")
    if anchor is not None and mode == "none":
        mode = "head"
    return Trust(
        mode,
        "the repository's history (nothing reconciled yet)",
        last,
        anchor,
        state_setting,
        by_settings,
    )


def verify_may_be_in_force(settings: HostSettings, repo, head: str | None) -> str | None:
    """Why git.verify is or may be in force for a pass over `head` (None: it is not): the
    host's `--verify`/`RECONCILE_GIT_VERIFY` says head or range, or — with no such word — a
    commit of the repository's history ever turned it on (the first-use heuristic). The
    store's own last commit cannot be asked: which store to ask is what is being decided."""
    flag, source = host_verify(settings)
    if flag is not None:
        return f"{source} {flag}" if flag != "none" else None
    if repo is None or head is None:
        return None
    trees, prefix = repo
    for sha in trees.touching(head, [prefix + name for name in SETTINGS_FILES]):
        mode = verify_setting(committed_settings(trees, prefix, sha))
        if mode != "none":
            return f"commit {sha[:12]} set git.verify to {mode}"
    return None


def refuse_state_setting(setting: str, why: str) -> None:
    """Under verify the store — and with it the last reconciled commit that trust is judged
    by — is the host's word: a `state:` setting is the word of the commit under judgement,
    which could name a store its pusher filled (a last commit of his that turned verify off)."""
    raise SourceError(
        f"git.verify is in force ({why}): the state store must be named by the "
        "host, not by the commit under judgement; set "
        f"RECONCILE_STATE={_without_password(setting)} (or --state) on the "
        "reconciler's host"
    )


def _without_password(url: str) -> str:
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", url)


def lineage_guard(
    settings: HostSettings,
    store: StateStore,
    commit: str | None,
    trust: Trust,
    audit: Callable[..., None] | None = None,
) -> Callable[[], None]:
    """A `before_plan` hook: refuse (SourceError, exit 3) a commit that does not descend from
    the last one reconciled — or, under verify, one that the trusted roles do not allow —
    else record it as the new last one. Runs under the pass lock, so two passes cannot both
    pass the check."""

    def guard() -> None:
        if commit is None:
            if trust.on:
                raise SourceError(
                    "git.verify is on, but the inventory is not in a git "
                    "repository: there is no commit to verify"
                )
            return
        inventory = settings.inventory.value
        last = store.last_commit()
        current = trust
        if last != trust.last and trust.redecide is not None:
            # Another pass reconciled meanwhile: judge by its commit, as if we had started now.
            current = replace(trust.redecide(last), from_commit=trust.from_commit)
        if current.on and not current.from_commit:
            raise SourceError(
                "another pass turned git.verify on while this one started "
                "(it read the working tree): nothing ran; run again"
            )
        gitsource.check_lineage(inventory, last, commit)
        if current.on:
            _verify(inventory, store, commit, current, audit)
        elif (
            current.last is not None
            and not commit.endswith("-dirty")
            and host_verify(settings)[0] is None
        ):
            # Verify is off because this store's last commit says so: the store must not be
            # a stale one that a commit moved the pass back to (one from before verify was on).
            _refuse_stale_store(inventory, current, gitsource.sha_of(commit))
        store.record_commit(gitsource.sha_of(commit), utc_now())

    return guard


def _verify(inventory: Path, store: StateStore, commit: str, trust: Trust, audit) -> None:
    # Imported here: only a pass under git.verify checks signatures (the module, with the
    # trust rules and the revision reader, is a tenth of a pass's imports).
    from reconciler.adapters.source.signatures import verify as verify_commits

    head = gitsource.sha_of(commit)
    if commit.endswith("-dirty"):
        raise SourceError(
            "git.verify is on and the inventory has uncommitted changes, "
            "which no signature covers: commit (signed) or stash them"
        )
    if trust.last is not None:
        _refuse_stale_store(inventory, trust, head)
        verify_commits(inventory, trust.mode, trust.last, head)
        return
    if trust.anchor is None:
        raise RefusedCommit(
            f"refusing commit {head[:12]}: git.verify is on ({trust.why}) and "
            "this state store has never reconciled a commit, so nothing here "
            f"can say whom to trust; {ANCHOR_HINT}",
            head,
        )
    anchor_commit, anchor_key = _anchor(inventory, trust.anchor, head)
    verdicts = verify_commits(inventory, trust.mode, anchor_commit, head, anchor_key=anchor_key)
    log.warning(
        "trusting commit %s on the anchor %s given outside the repository", head[:12], trust.anchor
    )
    if audit is not None:
        audit(
            "commit.anchored",
            commit=head,
            anchor=trust.anchor,
            signers=sorted({v.fingerprint for v in verdicts}),
        )


def _anchor(inventory: Path, text: str, head: str) -> tuple[str | None, str | None]:
    """(commit, None) or (None, key fingerprint) for a `--trust-anchor` value: a commit, a
    `SHA256:` fingerprint, an OpenSSH public key line, or a file holding one."""
    from reconciler.core.trust import key_fingerprint

    if text.startswith("SHA256:"):
        return None, text
    trees = _trees(inventory)
    fingerprint = key_fingerprint(text)
    if fingerprint is None and os.path.isfile(text):
        # A key file the repository holds is the pushers' word, not the host's.
        if _inside(Path(text), Path(trees.top)):
            raise UsageError(
                f"--trust-anchor {text!r} is a file inside the repository, which "
                "any pusher can change: give the admin key's SHA256: fingerprint "
                "or a .pub file kept outside the repository"
            )
        fingerprint = key_fingerprint(Path(text).read_text(errors="replace"))
    if fingerprint is not None:
        return None, fingerprint
    if not FULL_ID.fullmatch(text):
        # A short id or a ref name resolves through refs that pushers create (a tag named
        # like the short id wins over the commit): only a full object id is the host's word.
        raise UsageError(
            f"--trust-anchor {text!r} is not a full commit id (40 hex digits, "
            "`git rev-parse COMMIT`) nor an SSH public key (a SHA256: fingerprint, "
            "a key line or a .pub file)"
        )
    commit = trees.resolve(text)
    if commit is None:
        raise UsageError(
            f"--trust-anchor {text!r} is not a commit of this repository (fetch the full history)"
        )
    if commit != head and not trees.is_ancestor(commit, head):
        raise RefusedCommit(
            f"refusing commit {head[:12]}: it does not descend from the trust anchor {commit[:12]}",
            head,
        )
    return commit, None


def _inside(path: Path, top: Path) -> bool:
    try:
        path.resolve().relative_to(top.resolve())
    except ValueError:
        return False
    return True


def _refuse_stale_store(inventory: Path, trust: Trust, head: str) -> None:
    """A store chosen by the `state:` setting must be the one every commit since its last
    one names: else the store was left behind, and its last commit's roles are stale (a
    commit cannot move the pass back to an old store whose roles suited it better)."""
    if not trust.state_by_settings:
        return  # chosen by --state / RECONCILE_STATE: the host's choice, not the commit's
    trees, prefix = _trees(inventory), _prefix(inventory)
    files = [prefix + name for name in SETTINGS_FILES]
    for sha in [trust.last, *trees.touching(f"{trust.last}..{head}", files)]:
        named = committed_settings(trees, prefix, sha).get("state")
        if named != trust.state_setting:
            raise RefusedCommit(
                f"refusing commit {head[:12]}: its state: setting names a store that commit "
                f"{sha[:12]} had moved away from ({named or 'the default'}); the store's last "
                f"commit {trust.last[:12]} is stale. Run with --state URL (or RECONCILE_STATE) "
                "naming the store to use, or use a new store with --trust-anchor",
                head,
            )


def _trees(inventory: Path) -> Trees:
    top = Trees(inventory if inventory.is_dir() else inventory.parent)
    return Trees(top._git("rev-parse", "--show-toplevel").decode().strip())


def _prefix(inventory: Path) -> str:
    from reconciler.adapters.source.revision import Repository

    with Repository(inventory) as repo:
        return "" if repo.path == "." else repo.path + "/"
