"""`reconcile approve TASK` and `reconcile approvals`: the two-person rule (issue 15 §3).

A task with `approval: {role, count}` has each new version held pending, "awaiting approval",
until `count` members of its team holding `role` approve it. `approve` signs the approval
(the task, the last reconciled commit and each machine's version) with the member's SSH key
(`ssh-keygen -Y sign`, namespace `reconciler-approval`), checks the signature against the
member keys of the last reconciled commit — never the working tree's, which anyone may edit —
and that the key holds the role in the task's team there, and refuses the signer of the
commit that brought the version. An accepted approval is audited (`approval.given`) first,
then stored; the next pass starts what it completes. Refusals change nothing and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.adapters.audit.writer import AuditWriter, default_actor
from reconciler.adapters.source import approvals as signing
from reconciler.adapters.source import git as gitsource
from reconciler.adapters.source.revision import load_revision
from reconciler.adapters.store.base import ApprovalRecord
from reconciler.adapters.store.common import redact_url
from reconciler.adapters.store.factory import open_store
from reconciler.cli import views
from reconciler.cli.passes import _git_view, _state_location
from reconciler.core.errors import InputError
from reconciler.core.holds import approval_tally, approvals_of
from reconciler.core.model import TaskSpec
from reconciler.core.trust import key_fingerprint, memberships
from reconciler.pipeline.approvals import with_approvals, with_protected_rules
from reconciler.pipeline.engine import utc_now

if TYPE_CHECKING:
    from reconciler.cli.settings import Context


class Refused(InputError):
    """An approval that is not accepted: exit 2, with why; nothing was written."""


def run_approve(args: argparse.Namespace, ctx: Context) -> int:
    inventory, store = _open(ctx)
    try:
        last = _last(store)
        base = load_revision(inventory, last)
        # Its rules no weaker than those of the commit reconciled before it, as passes judge.
        base = replace(base, desired=with_protected_rules(base.desired, store, inventory, last))
        spec, versions = _what(args, base.desired, last)
        digest = signing.version_digest(spec.versions)
        key = Path(args.key).expanduser()
        fingerprint = key_fingerprint(signing.public_key(key))
        counted = with_approvals(base.desired, store).approvals  # the rows that verify
        # What this key has not approved yet: one signature covers exactly the rows stored
        # with it, so that a pass can check it again.
        fresh = {
            m: v for m, v in versions.items() if fingerprint not in counted.get((spec.id, m, v), ())
        }
        text = signing.approval_text(spec.id, last, fresh or versions)
        signature = signing.sign(key, text)
        signer, role = _member(base.inventory, spec, text, signature, fingerprint, last)
        _refuse_authors(store, inventory, base.inventory, spec, signer, versions, last)
        if not fresh:
            print(
                f"{signer} already approved version {digest} of {spec.id} on "
                f"{', '.join(versions)}: nothing to add",
                file=sys.stderr,
            )
            return 0
        AuditWriter(store, actor=default_actor(), clock=utc_now, redact=ctx.redactor).append(
            "approval.given",
            task=spec.id,
            version=digest,
            machines=fresh,
            signer=signer,
            role=role.value,
            commit=last,
        )
        store.add_approvals(
            [
                ApprovalRecord(spec.id, m, v, signer, role.value, last, signature)
                for m, v in fresh.items()
            ],
            utc_now(),
        )
        desired = with_approvals(base.desired, store)
        tallies = ", ".join(
            f"{m}: {approval_tally(spec, approvals_of(spec, m, desired))}" for m in versions
        )
        print(
            f"approved version {digest} of {spec.id} as {role.value} {signer} ({tallies})",
            file=sys.stderr,
        )
        return 0
    finally:
        store.close()


def _what(args: argparse.Namespace, desired, last: str) -> tuple[TaskSpec, dict[str, str]]:
    """The task to approve, as the last reconciled commit has it, and the machines and
    versions the approval covers; refused when it is none of that."""
    at = f"in {last[:12]}, the last reconciled commit"
    spec = desired.tasks.get(args.task)
    if spec is None:
        raise Refused(f"refusing the approval: no task '{args.task}' {at}")
    if spec.approval is None:
        raise Refused(f"refusing the approval: task '{spec.id}' asks for none (no approval: {at})")
    machines = list(dict.fromkeys(args.machine or spec.targets))
    for machine in machines:
        if machine not in spec.versions:
            raise Refused(
                f"refusing the approval: '{machine}' is no target of task '{spec.id}' "
                f"(its targets: {', '.join(spec.targets) or 'none'})"
            )
    digest = signing.version_digest(spec.versions)
    wanted = args.version
    if wanted is not None and (len(wanted) < 7 or not digest.startswith(wanted.lower())):
        raise Refused(
            f"refusing the approval: version {wanted} is not the version of task '{spec.id}' "
            f"that waits; its current version is {digest} ({at}): review that one"
        )
    return spec, {m: spec.version_for(m) for m in machines}


def _member(trusted, spec: TaskSpec, text: bytes, signature: str, fingerprint, last: str):
    """The fingerprint and role of the member key of `trusted` that signed, refused unless
    it holds the approval's role in the task's team."""
    rule = spec.approval
    assert rule is not None
    signer = signing.verify(trusted, text, signature)
    if signer is None:
        raise Refused(
            f"refusing the approval: the key {fingerprint} is no team member's ssh: key in "
            f"{last[:12]}, the last reconciled commit"
        )
    role = memberships(trusted).get(signer, {}).get(spec.team)
    if not rule.held_by(role):
        held = (
            f"is {role.value} of team {spec.team}" if role else f"is no member of team {spec.team}"
        )
        raise Refused(
            f"refusing the approval: {signer} {held}; task '{spec.id}' needs approvals by "
            f"{rule.role.value}s of team {spec.team}"
        )
    return signer, role


def run_approvals(args: argparse.Namespace, ctx: Context) -> views.Output:
    inventory, store = _open(ctx, required=False)
    waiting: list[dict] = []
    if store is not None:
        try:
            last = store.last_commit()
            if last is not None:
                desired = load_revision(inventory, last).desired
                desired = with_protected_rules(desired, store, inventory, last)
                waiting = _waiting(store, desired, last)
        finally:
            store.close()
    return views.Output({"waiting": waiting}, lambda: _text(waiting))


def _waiting(store, base, last: str) -> list[dict]:
    """The versions whose pending runs wait for approvals, by task, with each machine's tally."""
    desired = with_approvals(base, store)
    pending = store.pending()
    found = []
    for spec in sorted(desired.tasks.values(), key=lambda s: s.id):
        rule = spec.approval
        if rule is None:
            continue
        runs = {
            r.machine: r
            for r in pending
            if r.task == spec.id and spec.accepts(r.machine, r.version)
        }
        machines = [
            {
                "machine": m,
                "version": spec.version_for(m),
                "run": runs[m].id,
                "commit": runs[m].commit,
                "approvals": approvals_of(spec, m, desired),
                "approved_by": sorted(desired.approvals.get((spec.id, m, spec.version_for(m)), ())),
            }
            for m in sorted(runs)
            if approvals_of(spec, m, desired) < rule.count
        ]
        if machines:
            found.append(
                {
                    "task": spec.id,
                    "team": spec.team,
                    "version": signing.version_digest(spec.versions),
                    "role": rule.role.value,
                    "count": rule.count,
                    "commit": last,
                    "machines": machines,
                }
            )
    return found


def _text(waiting: list[dict]) -> str:
    if not waiting:
        return "Nothing awaits approval."
    lines = []
    for item in waiting:
        lines.append(
            f"{item['task']}  version {item['version']}  needs {item['count']} {item['role']} approval{'s' if item['count'] != 1 else ''}"
        )
        for m in item["machines"]:
            by = f"  (by {', '.join(m['approved_by'])})" if m["approved_by"] else ""
            lines.append(
                f"  {m['machine']}  run {m['run']}  {m['approvals']} of {item['count']}{by}"
            )
    lines.append("approve with: reconcile approve TASK --version VERSION --key ~/.ssh/id_ed25519")
    return "\n".join(lines)


def _open(ctx: Context, required: bool = True):
    settings = ctx.settings
    inventory = settings.inventory.value
    view = _git_view(inventory)
    if view is None:
        raise InputError(
            f"{inventory} is not in a git repository with commits: approvals are checked against the last reconciled commit"
        )
    url, _ = _state_location(settings, inventory, view, gitsource.head_commit(inventory))
    store = open_store(url, create=False)
    if store is None and required:
        raise Refused(
            f"refusing the approval: no state store at {redact_url(url)}; nothing was reconciled, so nothing awaits approval"
        )
    return inventory, store


def _last(store) -> str:
    last = store.last_commit()
    if last is None:
        raise Refused(
            "refusing the approval: this store has never reconciled a commit, so nothing awaits approval"
        )
    return last


def _refuse_authors(store, inventory, trusted, spec, signer: str, versions, last: str) -> None:
    """Refuse the signer of a commit that brought the version — the commit whose pass queued
    its runs and every commit since the commit reconciled before it (the range that pass took
    in) — and a key that did not hold the role in that earlier commit yet (a commit that adds
    a member's key could otherwise bring its own second approver along)."""
    rule = spec.approval
    for commit in sorted(_introduced_by(store, spec.id, versions, last)):
        before = store.reconciled_before(commit)
        for sha, key in signing.commit_signers(inventory, before, commit, trusted).items():
            if key == signer:
                raise Refused(
                    f"refusing the approval: {signer} signed commit {sha[:12]}, which brought "
                    f"this version of '{spec.id}'; the two-person rule needs another member's "
                    "approval"
                )
        if before is None:
            continue  # the first commit reconciled: it was judged by the trust anchor
        role = (
            memberships(load_revision(inventory, before).inventory).get(signer, {}).get(spec.team)
        )
        if not rule.held_by(role):
            raise Refused(
                f"refusing the approval: {signer} was not {rule.role.value} of team {spec.team} "
                f"in {before[:12]}, the commit reconciled before {commit[:12]} brought this "
                f"version of '{spec.id}'; a key added with the change cannot approve it"
            )


def _introduced_by(store, task: str, versions: dict[str, str], last: str) -> set[str]:
    """The commits whose passes queued the runs of these versions (their signers may not
    approve them); the last reconciled commit when none is queued."""
    found = {
        r.commit
        for r in store.pending()
        if r.task == task and versions.get(r.machine) == r.version and r.commit
    }
    return {c.removesuffix("-dirty") for c in found} or {last}


__all__ = ["run_approve", "run_approvals"]
