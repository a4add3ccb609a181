"""Frozen values of the desired state.

Two layers:
- what the loader reads (`Team`, `Machine`, `Task`, `Settings`, gathered in `Inventory`): the
  YAML as written, every value with its `Location`, optional fields left as `None`;
- what `compile` produces (`TaskSpec` in a `DesiredState`): defaults applied, targets resolved,
  versions computed. The planner only ever sees the compiled layer.

No raw YAML mapping leaves the loader: everything downstream works with these values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from reconciler.core.diagnostics import Location

PRIORITIES = (1, 2, 3, 4, 5)
DEFAULT_PRIORITY = 3
DEFAULT_TIMEOUT = 600  # seconds
DEFAULT_CONCURRENCY = 16
DEFAULT_POLL_INTERVAL = 30
DEFAULT_GRACE = 600  # seconds a scheduled run may wait past its slot before `missed` alerts
DEFAULT_STATE_URL = "sqlite:///.reconciler/state.db"


class Role(str, Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


class Strategy(str, Enum):
    ALL = "all"
    ONE = "one"


class FailureAction(str, Enum):
    ALERT = "alert"
    IGNORE = "ignore"


@dataclass(frozen=True)
class VaultRef:
    """`{vault: NAME}`: a secret read from the team vault when a run starts, never before."""

    name: str
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Member:
    name: str
    role: Role
    age: str | None = None
    ssh: str | None = None


@dataclass(frozen=True)
class AlertTarget:
    """An apprise URL (or a vault reference to one) and the events it wants (None: all)."""

    url: str | VaultRef
    on: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RetrySpec:
    """Retry fields as written; `None` means "inherit" (task → team defaults → built-in)."""

    count: int | None = None
    delay: int | None = None  # seconds
    backoff: float | None = None
    max_delay: int | None = None  # seconds
    failure_action: FailureAction | None = None


@dataclass(frozen=True)
class RetryPolicy:
    """A resolved retry policy.

    `count` retries follow the first attempt, so a run gets at most `count + 1` attempts.
    """

    count: int = 0
    delay: int = 30
    backoff: float = 2.0
    max_delay: int = 600
    failure_action: FailureAction = FailureAction.ALERT

    def delay_after(self, failed_attempt: int, seed: str | None = None) -> float:
        """Seconds to wait after attempt `failed_attempt` (1-based) failed, before the next.

        SPEC §2: the n-th retry waits at least `d = min(delay * backoff^(n-1), max_delay)`.
        With a `seed` (the run id and attempt), the wait is spread, decorrelated-jitter
        style, uniformly over `[d, min(3d, max_delay)]` — over `[max_delay/2, max_delay]`
        once `d` reaches the cap — so runs that failed together (an outage) do not all
        retry at the same instant. The draw is a hash of the seed: the same run and attempt
        always wait the same time (tests need no random source), different runs differ.
        """
        retry_number = failed_attempt  # attempt 1 failed -> first retry
        base = float(min(self.delay * self.backoff ** (retry_number - 1), self.max_delay))
        if seed is None:
            return base
        cap = float(self.max_delay)
        low, high = (cap / 2, cap) if base >= cap else (base, min(3 * base, cap))
        return low + (high - low) * _unit_interval(seed)

    def has_retry_after(self, failed_attempt: int) -> bool:
        return failed_attempt <= self.count


def _unit_interval(seed: str) -> float:
    """A number in [0, 1) determined by `seed` (the first 8 bytes of its SHA-256)."""
    digest = hashlib.sha256(seed.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Window:
    """A deny window: starts at each fire of `deny` (cron, read in `timezone`, an IANA name;
    None: UTC) and lasts `duration` seconds.

    No run of priority 2..5 starts inside it; priority 1 always may. Compile gives a window
    without its own zone its team's default zone (`defaults.timezone`).
    """

    deny: str
    duration: int
    location: Location | None = field(default=None, compare=False)
    timezone: str | None = None


@dataclass(frozen=True)
class Freeze:
    """`suspend:` on a team, a machine or a task: the runs it covers stay pending, held with
    `reason`, until `until` (None: until a commit lifts it). Unlike a deny window it holds
    priority 1 too, unless `allow_priority_1`."""

    reason: str
    until: datetime | None = None  # UTC
    allow_priority_1: bool = False
    location: Location | None = field(default=None, compare=False)

    def covers(self, priority: int, at: datetime) -> bool:
        """Whether it holds a run of `priority` at `at` (an aware time)."""
        if self.until is not None and at >= self.until:
            return False
        return not (priority <= 1 and self.allow_priority_1)


@dataclass(frozen=True)
class Approval:
    """`approval: {role, count}` on a task (issue 15 §3, the two-person rule): every new
    version waits, pending, until `count` members of the task's team holding `role` (an
    admin counts as an operator) have signed an approval of it with their `ssh:` key."""

    role: Role
    count: int = 1
    location: Location | None = field(default=None, compare=False)

    def held_by(self, role: Role | None) -> bool:
        """Whether a member in `role` may approve: the role itself, or admin for operator."""
        return role == self.role or (self.role == Role.OPERATOR and role == Role.ADMIN)


@dataclass(frozen=True)
class Share:
    """A number of machines or runs as written in a rollout: `3`, or `25%` of the task's
    targets (whole percents)."""

    amount: int
    percent: bool = False

    def of(self, total: int, *, round_up: bool) -> int:
        """How many of `total` it stands for: a percentage rounded up (a batch of 25% of 2
        targets is 1 machine, never 0) or down (10% of 5 runs may fail: none)."""
        if not self.percent:
            return self.amount
        whole, rest = divmod(self.amount * total, 100)
        return whole + (1 if round_up and rest else 0)

    def __str__(self) -> str:
        return f"{self.amount}%" if self.percent else str(self.amount)


ALL_AT_ONCE = (Share(100, percent=True),)


@dataclass(frozen=True)
class RolloutSpec:
    """`rollout:` as written on a task or in a team's defaults; None means "inherit" (task →
    team defaults → built-in), field by field."""

    batches: tuple[Share, ...] | None = None
    max_failed: Share | None = None
    verify: str | None = None
    pause: int | None = None  # seconds
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Param:
    """One entry of a task's `params:` (issue 16 §3): a variable `reconcile run --param
    NAME=VALUE` may set in the run's environment. `default` is what every run gets when it
    is not given (planned runs included); `allowed` and `pattern` (a regular expression the
    whole value must match) bound what may be given. The loader checked that the pattern
    compiles and that the default is allowed."""

    name: str
    default: str | None = None
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Rollout:
    """A resolved rollout (issue 15 §1): the task's targets, ordered by name, run in
    `batches` (cumulative shares; the last batch always takes every target left), the next
    batch starting only once every run of the one before has ended, no more than
    `max_failed` runs of the version have failed, and `pause` has passed since the last of
    them ended. `verify` runs after each successful command; its failure fails the run."""

    batches: tuple[Share, ...] = ALL_AT_ONCE
    max_failed: Share = Share(0)
    verify: str | None = None
    pause: int = 0  # seconds

    def sizes(self, total: int) -> tuple[int, ...]:
        """The cumulative number of targets at the end of each batch, out of `total`: each
        at least one more than the last (empty batches dropped), the last `total`."""
        sizes: list[int] = []
        for share in self.batches:
            size = min(total, share.of(total, round_up=True))
            if size > (sizes[-1] if sizes else 0):
                sizes.append(size)
        if total and (not sizes or sizes[-1] < total):
            sizes.append(total)
        return tuple(sizes)

    def budget(self, total: int) -> int:
        """How many runs of the version may fail (out of `total` targets) before the rest
        halt."""
        return self.max_failed.of(total, round_up=False)


@dataclass(frozen=True)
class TaskDefaults:
    priority: int | None = None
    timeout: int | None = None
    retry: RetrySpec | None = None
    timezone: str | None = None  # of the team's schedules and windows that name none
    alert_after: int | None = None  # seconds; `overdue` alerts (issue 15 §5)
    rollout: RolloutSpec | None = None  # the tasks' rollout, field by field (issue 15 §1)


@dataclass(frozen=True)
class Team:
    name: str
    description: str | None = None
    members: tuple[Member, ...] = ()
    recipients: tuple[str, ...] = ()
    alerts: tuple[AlertTarget, ...] = ()
    defaults: TaskDefaults = TaskDefaults()
    windows: tuple[Window, ...] = ()
    suspend: Freeze | None = None
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Machine:
    name: str
    team: str
    transport: str = "ssh"  # "ssh" | "local"
    host: str | None = None
    port: int = 22
    user: str | None = None
    host_key: tuple[str, ...] = ()
    key: VaultRef | None = None
    key_file: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    max_parallel: int = 1
    windows: tuple[Window, ...] = ()
    suspend: Freeze | None = None
    location: Location | None = field(default=None, compare=False)
    # Where each top-level field was written, so a check can point at e.g. `key_file:` itself.
    field_locations: Mapping[str, Location] = field(default_factory=dict, compare=False)

    def __hash__(self) -> int:
        return hash((self.name, self.team))

    def where(self, field_name: str) -> Location:
        """The location of `field_name`, or of the machine itself when it was not written."""
        return self.field_locations.get(field_name) or self.location or Location("<inventory>")


@dataclass(frozen=True)
class Task:
    """A task as written. Exactly one of `machines`/`selector`, one of `command`/`script`."""

    name: str
    team: str
    description: str | None = None
    machines: tuple[str, ...] | None = None
    selector: Mapping[str, str] | None = None
    strategy: Strategy = Strategy.ALL
    command: str | None = None
    script: str | None = None
    priority: int | None = None
    schedule: str | None = None
    timezone: str | None = None  # of `schedule` (IANA name); None: the team's default, UTC
    after: tuple[str, ...] = ()
    timeout: int | None = None
    alert_after: int | None = None  # seconds: a run still running then alerts `overdue`
    grace: int | None = None  # seconds: a slot not started by then alerts `missed`
    retry: RetrySpec | None = None
    env: tuple[tuple[str, str | VaultRef], ...] = ()
    check: str | None = None
    idempotent: bool = False
    suspend: Freeze | None = None
    approval: Approval | None = None
    rollout: RolloutSpec | None = None
    params: tuple[Param, ...] = ()  # what an on-demand run may set, by name
    location: Location | None = field(default=None, compare=False)
    # Where each top-level field was written, so compile can point at e.g. `after:` itself.
    field_locations: Mapping[str, Location] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return f"{self.team}/{self.name}"

    def __hash__(self) -> int:
        return hash(self.id)

    def where(self, field_name: str) -> Location:
        """The location of `field_name`, or of the task itself when it was not written."""
        return self.field_locations.get(field_name) or self.location or Location("<inventory>")


@dataclass(frozen=True)
class GitSettings:
    remote: str = "origin"
    branch: str = "main"
    verify: str = "none"  # none | head | range


@dataclass(frozen=True)
class CredentialGrants:
    """`credentials:` in the admin-owned settings: which teams' ssh machines may authenticate
    with a key file on the reconciler's host or with its ssh-agent. A machine's own team
    vault key (`key: {vault: NAME}`) needs no grant; nothing else is allowed without one."""

    key_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # path -> teams
    agent: tuple[str, ...] = ()  # teams
    # Where each granted path (and `agent`) was written, for errors about unknown teams.
    locations: Mapping[str, Location] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class LocalMachineSettings:
    """`local_machines:` in the admin-owned settings."""

    # Local machines without `user:` (their tasks run with the reconciler's own rights, so
    # they can read its identity) are refused when the inventory has more than one team,
    # unless this is true.
    allow_shared_user: bool = False


@dataclass(frozen=True)
class TeamSecretRef:
    """`{vault: NAME, team: TEAM}` in the settings, which no team owns: the key NAME of
    TEAM's vault, read by the host when it needs it."""

    team: str
    name: str
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class HttpSettings:
    """`http:` in the admin-owned settings: who may read the daemon's HTTP listener and the
    secret git webhooks sign with. The host's environment overrides each secret."""

    token: TeamSecretRef | None = None  # the bearer token of the console and /metrics
    proxy_header: str | None = None  # a trusted reverse proxy's header naming the user
    proxy_from: tuple[str, ...] = ("127.0.0.1", "::1")  # where that proxy connects from
    hook_secret: TeamSecretRef | None = None  # GitHub's HMAC key, GitLab's token
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Settings:
    """`inventory/reconciler.yaml`; `None` means "not set here" (flags and env may set it)."""

    state: str | None = None
    concurrency: int | None = None
    poll_interval: int | None = None
    git: GitSettings = GitSettings()
    credentials: CredentialGrants = CredentialGrants()
    local_machines: LocalMachineSettings = LocalMachineSettings()
    # `paths:` — repository path patterns given to teams (operators of the team may change
    # matching files); in file order, the last matching pattern wins (as in CODEOWNERS).
    paths: tuple[tuple[str, str], ...] = ()
    ssh_keepalive: int | None = None  # seconds between SSH liveness probes
    ssh_keepalive_count: int | None = None  # unanswered probes before a connection is dead
    http: HttpSettings = HttpSettings()
    location: Location | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Inventory:
    """Everything the loader read from one inventory folder."""

    root: str
    teams: Mapping[str, Team]
    machines: Mapping[str, Machine]
    tasks: Mapping[str, Task]  # by task id `<team>/<name>`
    settings: Settings = Settings()


@dataclass(frozen=True)
class TaskSpec:
    """A compiled task: defaults applied, targets resolved, one version per target.

    `versions[machine]` is the hash of what the run on that machine executes (SPEC §1):
    command/script, env names and vault references, check, and the resolved target.
    Priority, retry, timeout, description, schedule and timezone are deliberately not part
    of it.
    """

    id: str
    team: str
    name: str
    run: str  # the shell text: `command` or `script`
    check: str | None
    env: tuple[tuple[str, str | VaultRef], ...]
    priority: int
    timeout: int
    retry: RetryPolicy
    schedule: str | None
    after: tuple[str, ...]  # task ids, same team
    strategy: Strategy
    targets: tuple[str, ...]  # machine names, sorted
    versions: Mapping[str, str]  # machine name -> version
    idempotent: bool = False
    alert_after: int | None = None  # seconds (task, else team default): `overdue` alerts
    grace: int = DEFAULT_GRACE  # seconds past a slot before `missed` alerts
    description: str | None = None
    suspend: Freeze | None = None  # the task's own freeze (its team's and machines' apart)
    location: Location | None = field(default=None, compare=False)
    # machine -> the version an older release computed for the same task, where it differs
    # (trailing whitespace of the shell text used to count): its runs are this version's.
    legacy_versions: Mapping[str, str] = field(default_factory=dict, compare=False)
    timezone: str | None = None  # of `schedule` (IANA name): the task's, else the team's; UTC
    approval: Approval | None = None  # the two-person rule (not part of the version)
    # Batches, failure budget, verify and pause (not part of the version): None, all at once.
    rollout: Rollout | None = None
    # What `reconcile run --param` may set (issue 16 §3); the defaults are in every run's
    # environment and so part of the version, the bounds are not.
    params: tuple[Param, ...] = ()

    def __hash__(self) -> int:
        return hash(self.id)

    def version_for(self, machine: str) -> str:
        return self.versions[machine]

    @property
    def release(self) -> str:
        """One digest of the versions of all its targets (each machine's version differs: it
        hashes its target too): what a rollout or an approval alerts once for."""
        text = "\n".join(f"{m}={v}" for m, v in sorted(self.versions.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def accepts(self, machine: str, version: str) -> bool:
        """Whether a run of `version` on `machine` is a run of the current version."""
        return machine in self.versions and version in (
            self.versions[machine],
            self.legacy_versions.get(machine),
        )


@dataclass(frozen=True)
class DesiredState:
    """What should hold: compiled tasks, and the machines and teams they refer to."""

    tasks: Mapping[str, TaskSpec]
    machines: Mapping[str, Machine]
    teams: Mapping[str, Team]
    # The approvals given so far (store state, attached by the edge that read them, see
    # pipeline/approvals.py): (task, machine, version) -> the approving keys' fingerprints.
    approvals: Mapping[tuple[str, str, str], frozenset[str]] = field(
        default_factory=dict, compare=False
    )
    # The freezes in force when the latest pass planned (store state, attached by a worker:
    # see pipeline/reconciled.py), each with what it is on. They hold runs besides this
    # state's own, so a worker whose checkout lags the passes still honours a reconciled
    # freeze; one lifts for the worker when a pass reconciles the commit that lifts it.
    reconciled_freezes: tuple[tuple[str, Freeze], ...] = field(default=(), compare=False)

    def windows_for(self, machine: str) -> tuple[Window, ...]:
        """The deny windows that apply on `machine`: its team's and its own."""
        m = self.machines.get(machine)
        if m is None:
            return ()
        team = self.teams.get(m.team)
        return (team.windows if team else ()) + m.windows

    def freezes_for(self, task: str, machine: str) -> tuple[tuple[str, Freeze], ...]:
        """The freezes that cover runs of `task` on `machine`, each with what it is on
        (`team ops`, `machine db1`, `task ops/migrate`): the task's team's, the machine's
        team's (when another), the machine's own and the task's own."""
        spec = self.tasks.get(task)
        m = self.machines.get(machine)
        teams = dict.fromkeys(t for t in (spec.team if spec else None, m.team if m else None) if t)
        found: list[tuple[str, Freeze]] = []
        for name in teams:
            team = self.teams.get(name)
            if team is not None and team.suspend is not None:
                found.append((f"team {name}", team.suspend))
        if m is not None and m.suspend is not None:
            found.append((f"machine {machine}", m.suspend))
        if spec is not None and spec.suspend is not None:
            found.append((f"task {task}", spec.suspend))
        if not self.reconciled_freezes:  # the usual case: asked for every run dispatched
            return tuple(found)
        scopes = {f"team {name}" for name in teams} | {f"machine {machine}", f"task {task}"}
        found += [
            (scope, freeze)
            for scope, freeze in self.reconciled_freezes
            if scope in scopes and (scope, freeze) not in found
        ]
        return tuple(found)

    def freezes(self) -> tuple[tuple[str, Freeze], ...]:
        """Every freeze of this state's own inventory, with what it is on, sorted by that."""
        found = [(f"team {t.name}", t.suspend) for t in self.teams.values()]
        found += [(f"machine {m.name}", m.suspend) for m in self.machines.values()]
        found += [(f"task {t.id}", t.suspend) for t in self.tasks.values()]
        return tuple(sorted(((s, f) for s, f in found if f is not None), key=lambda f: f[0]))


@dataclass(frozen=True)
class Unresolved:
    """What the loader saw but could not build: objects with errors (by kind and key), and
    kinds with a file it could not read at all. A reference to one of them is not reported
    as "unknown" by compile: the real problem is already reported, where it is."""

    keys: frozenset[tuple[str, str]] = frozenset()  # (kind, key), e.g. ("task", "ops/web")
    unread_kinds: frozenset[str] = frozenset()  # e.g. "task": some task file is unreadable

    def may_exist(self, kind: str, key: str) -> bool:
        return kind in self.unread_kinds or (kind, key) in self.keys
