"""One pass (or a worker's life) with everything around the engine wired in: secrets,
transports, the audit/alert/metrics sinks and the commit lineage check. Shared by
`reconcile --once`, the daemon and `reconcile worker`, so the three behave alike."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from reconciler.adapters.source import git as gitsource
from reconciler.adapters.source.git import RefusedCommit
from reconciler.adapters.store.factory import open_store
from reconciler.cli import wiring
from reconciler.cli.lineage import (
    SETTINGS_FILES,
    Trust,
    committed_settings,
    decide,
    lineage_guard,
    refuse_state_setting,
    verify_may_be_in_force,
)
from reconciler.cli.settings import FILE, Context, HostSettings, Setting, checked_state
from reconciler.core.errors import InputError, StoreError
from reconciler.core.holds import freezes_in_force
from reconciler.core.model import DEFAULT_STATE_URL
from reconciler.core.plan import make_plan
from reconciler.pipeline.approvals import with_approvals, with_protected_rules
from reconciler.pipeline.engine import Engine, Event, PassReport
from reconciler.pipeline.sinks import audit_validation_failed, build_sinks

log = logging.getLogger(__name__)


@contextmanager
def wired_engine(
    ctx: Context,
    loaded,
    store,
    *,
    commit: str | None,
    progress: Callable[[Event], None],
    metrics=None,
    desired=None,
    stream: Callable | None = None,
    kept=None,
) -> Iterator[tuple[Engine, object]]:
    """An engine whose events go to the sinks first (a refused audit entry must stop the
    dispatch) and then to `progress`; sinks and transports are closed on exit, waiting at
    most 10 s for alert deliveries. `stream`: the `--stream` printer of runs' output lines.
    `kept`: the daemon's `KeptTransports`, whose SSH logins outlive this pass."""
    secrets = wiring.vault_secrets(ctx, loaded.inventory)
    secrets.learn_every_vault(loaded.inventory.teams)  # masked even where no run asks for it
    sinks = build_sinks(
        store,
        loaded.inventory,
        desired or loaded.desired,
        ctx.redactor,
        secrets,
        commit=commit,
        metrics=metrics,
    )
    transports = wiring.transports(
        secrets,
        loaded.inventory.settings,
        loaded.workdir,
        teams=len(loaded.inventory.teams),
        kept=kept,
    )

    def on_event(event: Event) -> None:
        sinks(event)  # the alert consumer alerts once per unreachable machine, not per run
        progress(event)

    try:
        engine = Engine(
            store,
            transports,
            concurrency=ctx.settings.concurrency_for(loaded.inventory.settings).value,
            on_event=on_event,
            resolve=sinks.audit_resolver(secrets),
            redactor=ctx.redactor,
            journal=sinks.journal,
        )
        engine.printer = stream
        yield engine, sinks
    finally:
        sinks.close(10)
        for transport in transports.values():
            transport.close()


def stream_of(args) -> Callable | None:
    """The `--stream` printer of a pass's command line, or None without `--stream`."""
    if not getattr(args, "stream", False):
        return None
    from reconciler.cli.stream_view import stream_printer

    json_lines = getattr(args, "format", None) == "json" or args.log_format == "json"
    return stream_printer(json_lines)


def connect_ahead(engine: Engine, desired, store) -> None:
    """Open now, in the background, the connections that the plan about to be made needs: the
    logins (each costs its target tens of milliseconds of CPU) then go on while the plan is
    made and recorded instead of after it, when the first runs would wait for them. The plan
    is previewed as the engine makes it; a run that a freeze, a deny window or an approval
    holds opens nothing, as in the engine's own `prepare` of its queue (which then finds
    these open). Only over transports that connect: a pass over local machines previews
    nothing."""
    connecting = {m.name: m for m in desired.machines.values() if m.transport in wiring.CONNECTING}
    if not connecting:
        return
    try:
        plan = make_plan(desired, store.snapshot(), engine.clock())
    except Exception:  # noqa: BLE001 - only a head start: the engine's own plan reports it
        log.debug("no connections opened ahead of the plan", exc_info=True)
        return
    by_transport: dict[str, dict[str, object]] = {}
    runs: Counter[str] = Counter()
    for run in plan.enqueue:
        machine = connecting.get(run.machine)
        if run.hold is None and machine is not None:
            by_transport.setdefault(machine.transport, {})[machine.name] = machine
            # No more at once on one machine than the pass runs at once anywhere.
            runs[machine.name] = min(runs[machine.name] + 1, engine.concurrency)
    for name, machines in by_transport.items():
        engine.transports[name].prepare(machines.values(), runs)


def run_pass(
    ctx: Context, loaded, store, engine: Engine, sinks, commit: str | None, trust: Trust
) -> PassReport:
    """The pass itself, audited from start to end (a refused commit included)."""
    sinks.pass_started(commit, freezes_in_force(loaded.desired, engine.clock()))
    try:
        guard = lineage_guard(ctx.settings, store, commit, trust, sinks.audit.append)
        # The two-person rule's approvals given so far, and its rules as the commit
        # reconciled before this one has them where they are stricter than this one's.
        desired = with_approvals(
            with_protected_rules(loaded.desired, store, ctx.settings.inventory.value, commit),
            store,
        )

        def before_plan() -> None:
            guard()  # a refused commit connects nowhere
            connect_ahead(engine, desired, store)

        report = engine.run_pass(
            desired, commit, ctx.settings.lock_timeout.value, before_plan=before_plan
        )
    except BaseException as exc:
        if isinstance(exc, RefusedCommit):
            sinks.commit_refused(exc.commit, str(exc))
        sinks.pass_failed(exc)
        report = getattr(exc, "report", None)
        if isinstance(exc, KeyboardInterrupt) and isinstance(report, PassReport):
            # A second signal stopped the running runs at once (recorded unknown): the pass
            # still ends with its summary, those runs among the left behind (issue 19).
            return report
        raise
    sinks.pass_finished(report)  # StoreError (exit 3) if an audit entry was lost
    return report


@contextmanager
def prepared_pass(
    ctx: Context, commit: str | None, note_store: Callable[[str], None] | None = None
) -> Iterator[tuple[wiring.Loaded, object, Trust]]:
    """The inventory, the store and the trust decision of one pass over `commit`.

    The trust decision comes first, from trusted ground only (lineage.decide): flags and
    environment, else the store's last reconciled commit, else the repository's history. Under
    verify the inventory — and whatever local runs execute — is read from the commit itself,
    written to a private checkout (removed on exit), never from the working tree: git-ignored
    files and `--skip-worktree` edits have no effect. Bad input raises `InputError` before
    any store is created."""
    settings = ctx.settings
    refuse_malformed(settings)
    inventory = settings.inventory.value
    view = _git_view(inventory)
    head = gitsource.sha_of(commit) if commit else None
    url, state = _state_location(settings, inventory, view, commit)
    if note_store is not None:
        note_store(url)  # the daemon's /healthz asks this store whether it answers
    last = _last_commit(url)
    trust = decide(settings, view, last, head, state)
    trust = replace(
        trust,
        from_commit=trust.on and head is not None,
        redecide=lambda newer: decide(settings, view, newer, head, state),
    )
    if not trust.from_commit:
        loaded = load_audited(settings, commit, url=url)
        with _opened(url) as store:
            yield loaded, store, trust
        return
    from reconciler.adapters.source.revision import Repository

    with Repository(inventory) as repo, repo.checkout(head) as checkout:
        worktree = repo.repo.working_tree_dir
        loaded = load_audited(
            settings, commit, url=url, load=lambda: _load_checkout(checkout, worktree)
        )
        with _opened(url) as store:
            yield loaded, store, trust


def refuse_malformed(settings: HostSettings) -> None:
    """A malformed flag or variable that a pass reads is exit 2 before any store is opened or
    created (concurrency was checked only once the engine was built, after the store)."""
    checked = (settings.lock_timeout, settings.grace, settings.concurrency, settings.verify)
    for setting in (*checked, settings.max_wait):
        if setting is not None:
            setting.check()


def _reconciled_source(settings):
    """What a worker and `reconcile run` both start from: the inventory folder, its git view,
    the store's URL and state setting, and the store's last reconciled commit."""
    refuse_malformed(settings)
    inventory = settings.inventory.value
    view = _git_view(inventory)
    commit = gitsource.head_commit(inventory) if view is not None else None
    url, state = _state_location(settings, inventory, view, commit)
    return inventory, view, url, state, _last_commit(url)


def worker_inventory(ctx: Context, follow_working_tree):
    """What `reconcile worker` executes: the working tree (`follow_working_tree(loaded)`), or
    under git.verify the store's last reconciled commit, checked out privately and followed as
    passes move it — a worker never runs an unverified file."""
    settings = ctx.settings
    inventory, view, url, state, last = _reconciled_source(settings)
    if not decide(settings, view, last, last, state).on:
        return _WhileVerifyOff(
            follow_working_tree(wiring.load_from(inventory)),
            lambda newer: decide(settings, view, newer, newer, state).on,
            url,
            last,
        )
    if last is None or view is None:
        from reconciler.core.errors import SourceError

        raise SourceError(
            "git.verify is on and this store has reconciled no commit yet: a "
            "worker runs only what a verified pass planned; run a pass first"
        )
    return _VerifiedInventory(inventory, url, last)


@dataclass
class RunSource:
    """What `reconcile run` decides with: the inventory that defines the task's current
    version (`loaded`), the store's URL and last reconciled commit, and whether git.verify is
    in force (then `loaded` is that commit's, checked out privately)."""

    loaded: wiring.Loaded
    url: str
    last: str | None
    verified: bool


@contextmanager
def run_inventory(ctx: Context) -> Iterator[RunSource]:
    """The inventory `reconcile run` reads, the one a worker executes (`worker_inventory`):
    under git.verify the store's last reconciled commit (refused when there is none yet),
    else the working tree. The private checkout is removed on exit."""
    settings = ctx.settings
    inventory, view, url, state, last = _reconciled_source(settings)
    if not decide(settings, view, last, last, state).on:
        yield RunSource(wiring.load_from(inventory), url, last, False)
        return
    if last is None or view is None:
        raise InputError(
            "refusing to run: git.verify is on and this store has reconciled no commit yet, so "
            "no task version is verified; run a pass first"
        )
    verified = _VerifiedInventory(inventory, url, last)
    try:
        yield RunSource(verified.loaded, url, last, True)
    finally:
        verified.close()


class _WhileVerifyOff:
    """A worker that follows the working tree (git.verify off when it started) for as long as
    verify stays off: at every round (a local run executes working-tree files whenever it
    starts) it asks whether the store's last reconciled commit turned verify on. If it did, the
    working tree (where a refused commit's files may lie) is never read or run again: the
    desired state becomes empty, `refused` says why and `on_refused` is called (the worker
    stops; restarted, it runs the verified commit). `read_last` is the worker's own store's
    `last_commit` once it is open.

    The engine calls it once per scheduling round; the alerts and metrics of the events of
    that round read `current` (what the round decided), which asks the store nothing: the
    commit was read twice more per run before (a query each), and a commit that turns verify
    on between two rounds is still seen by the next round, before it dispatches anything."""

    def __init__(self, inner, verify_on: Callable[[str], bool], url: str, last: str | None):
        self.inner, self.verify_on, self.last = inner, verify_on, last
        self.loaded = inner.loaded
        self.read_last: Callable[[], str | None] = lambda: _last_commit(url)
        self.refused: str | None = None
        self.on_refused: Callable[[], None] = lambda: None
        self.decided = self.loaded.desired

    def current(self):
        """The desired state the last round decided (empty once refused); no store read."""
        return self.decided

    def __call__(self):
        self.decided = self._decide()
        return self.decided

    def _decide(self):
        from reconciler.core.model import DesiredState

        if self.refused is None:
            last = self.read_last()
            if last is not None and last != self.last:
                self.last = last
                if self.verify_on(last):
                    self.refused = (
                        f"git.verify is on since {last[:12]}, the last commit "
                        "reconciled, and this worker was started before: it ran the "
                        "working tree, which no signature covers, and runs nothing "
                        "more; start it again to run the verified commit"
                    )
                    log.error("%s", self.refused)
                    self.on_refused()
        if self.refused is not None:
            return DesiredState(tasks={}, machines={}, teams={})
        desired = self.inner()
        self.loaded = self.inner.loaded
        return desired


class _VerifiedInventory:
    """The store's last reconciled commit, written to a private folder; `current` (a symlink)
    always names the latest, so local runs and vault reads started later see it."""

    INTERVAL = 5.0

    def __init__(self, inventory: Path, url: str, commit: str):
        import tempfile

        self.inventory, self.url = inventory, url
        self.parent = Path(tempfile.mkdtemp(prefix="reconcile-worker-"))  # mode 0700
        self.read_at = time.monotonic()
        try:
            self._switch(commit)
        except BaseException:
            self.close()
            raise

    def _switch(self, commit: str) -> None:
        from reconciler.adapters.source.revision import Checkout, Repository

        with Repository(self.inventory) as repo:
            sha = repo.commit(commit).hexsha
            if not (self.parent / sha).exists():
                repo.write_checkout(sha, self.parent / sha)
            path, worktree = repo.path, repo.repo.working_tree_dir
        link = self.parent / "current.new"
        link.unlink(missing_ok=True)
        os.symlink(sha, link)
        os.replace(link, self.parent / "current")
        current = self.parent / "current"
        checkout = Checkout(
            current, current.joinpath(*Path(path).parts) if path != "." else current, sha, sha, path
        )
        self.loaded = _load_checkout(checkout, worktree)
        self.commit = sha

    def __call__(self):
        if time.monotonic() - self.read_at >= self.INTERVAL:
            self.read_at = time.monotonic()
            last = _last_commit(self.url)
            if last is not None and last != self.commit:
                try:
                    self._switch(last)
                except InputError as exc:
                    log.error(
                        "commit %s does not load; keeping %s: %s", last[:12], self.commit[:12], exc
                    )
        return self.loaded.desired

    def current(self):
        """The desired state of the commit followed now (no store read, for the sinks)."""
        return self.loaded.desired

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.parent, ignore_errors=True)


def _load_checkout(checkout, worktree: str) -> wiring.Loaded:
    """The checkout's inventory; local runs start where the reconciler's working directory
    is in the repository, but in the checkout (its top when we run outside the repository)."""
    inventory, desired, warnings = checkout.load()
    try:
        inside = Path.cwd().resolve().relative_to(Path(os.path.realpath(worktree)))
    except ValueError:
        inside = Path(".")
    return wiring.Loaded(inventory, desired, warnings, workdir=checkout.top / inside)


@contextmanager
def _opened(url: str):
    store = open_store(url)
    try:
        yield store
    finally:
        store.close()


def _git_view(inventory: Path):
    """(Trees, the inventory's path prefix in the repository) or None outside git."""
    from reconciler.adapters.source.revision import Repository
    from reconciler.adapters.source.trees import Trees
    from reconciler.core.errors import SourceError

    try:
        with Repository(inventory) as repo:
            if not repo.repo.head.is_valid():
                return None
            prefix = "" if repo.path == "." else repo.path + "/"
            return Trees(repo.repo.working_tree_dir), prefix
    except (SourceError, InputError):
        return None


def _state_location(settings: HostSettings, inventory: Path, view, commit: str | None):
    """The store's URL and (whether the `state:` setting chose it, that setting). The
    setting is read from the commit itself (git) when the checkout is clean, so that neither a
    skip-worktree edit nor an ignored file chooses the store; from the working tree otherwise
    (no git, or uncommitted changes — which verify refuses). When git.verify is or may be in
    force the setting is refused: the store is then the host's word (flag, environment or the
    default), never the word of the commit under judgement."""
    if settings.state is not None:  # the host's word: --state or RECONCILE_STATE
        return settings.state_url(None).value, (False, None)
    if view is not None and commit is not None and not commit.endswith("-dirty"):
        setting = committed_settings(*view, gitsource.sha_of(commit)).get("state")
    else:
        setting = _working_tree_state(inventory)
    setting = setting if isinstance(setting, str) and setting else None
    if setting is not None:
        why = verify_may_be_in_force(settings, view, gitsource.sha_of(commit) if commit else None)
        if why is not None:
            refuse_state_setting(setting, why)
    url = checked_state(Setting(setting, FILE)).value if setting else DEFAULT_STATE_URL
    if view is not None and commit is not None:
        _refuse_tracked_store(url, view[0], gitsource.sha_of(commit))
    return url, (True, setting)


def _refuse_tracked_store(url: str, trees, head: str) -> None:
    """A store chosen by the `state:` setting must not be a file of the repository: whoever
    pushes would write it, and with it the last reconciled commit that trust is judged by."""
    from reconciler.adapters.store.factory import sqlite_path
    from reconciler.core.errors import SourceError

    try:
        path = sqlite_path(url)
    except InputError:
        return  # PostgreSQL: not a file
    top = Path(os.path.realpath(trees.top))
    files = trees.files(head)
    for candidate in {Path(os.path.abspath(path)), Path(os.path.realpath(path))}:
        try:
            parts = candidate.relative_to(top).parts
        except ValueError:
            continue
        # The file itself, or a folder on its way (a committed symlink), is tracked.
        tracked = [
            "/".join(parts[:i]) for i in range(1, len(parts) + 1) if "/".join(parts[:i]) in files
        ]
        if tracked:
            raise SourceError(
                f"refusing commit {head[:12]}: the state store {url} is in the repository "
                f"({tracked[0]} is a file of that commit), so whoever pushes writes the store "
                "and the last reconciled commit trust is judged by: keep the store outside the "
                "repository's files, or name it with --state (or RECONCILE_STATE)"
            )


def _working_tree_state(inventory: Path) -> str | None:
    from reconciler.core.diagnostics import Diagnostics
    from reconciler.inventory.yamlio import parse_yaml, to_plain

    for name in SETTINGS_FILES:
        path = inventory / name
        if path.is_file():
            try:
                plain = to_plain(parse_yaml(path.read_bytes(), str(path), Diagnostics()))
            except OSError:
                return None
            return plain.get("state") if isinstance(plain, dict) else None
    return None


def _last_commit(url: str) -> str | None:
    """The store's last reconciled commit, without creating or migrating it."""
    try:
        store = open_store(url, read_only=True)
    except (StoreError, InputError):
        return None
    if store is None:
        return None
    try:
        return store.last_commit()
    finally:
        store.close()


def load_audited(
    settings: HostSettings,
    commit: str | None,
    *,
    url: str | None = None,
    load: Callable[[], wiring.Loaded] | None = None,
):
    """The inventory of `settings` (or `load()`), recording a failed validation in the audit
    log of an existing store (`url`, else the one the flags name)."""
    try:
        return load() if load is not None else wiring.load_from(settings.inventory.value)
    except InputError as exc:
        try:
            store = open_store(url or settings.state_url(None).value, create=False)
        except (StoreError, InputError):
            store = None
        if store is not None:
            try:
                audit_validation_failed(store, exc, commit=commit)
            except StoreError as problem:
                log.warning("could not audit the failed validation: %s", problem)
            finally:
                store.close()
        raise
