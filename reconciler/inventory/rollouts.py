"""`rollout:` as written on a task or in a team's defaults (issue 15 §1), read and checked.

The schema says the shape (a mapping of batches, max_failed, verify, pause); the values of
`batches` and `max_failed` are worded here (their schema rules carry `x-loader`), so each bad
one gets one message at its own line and column, saying what to write instead.
"""

from __future__ import annotations

import json
import re
from typing import Protocol

from reconciler.core.diagnostics import Location
from reconciler.core.model import RolloutSpec, Share
from reconciler.inventory.yamlio import MapNode, Node, ScalarNode, SeqNode

_PERCENT = re.compile(r"([0-9]{1,3})%")
BATCH_HINT = "write a number of machines (1 or more) or a whole percentage, e.g. [1, 25%, 100%]"
BUDGET_HINT = "write a number of runs (0 or more) or a whole percentage of the targets, e.g. 10%"


class _Reporter(Protocol):
    def error(self, location: Location, message: str, hint: str | None = None) -> None: ...

    def duration(self, node: Node | None, field_name: str, minimum: int = 0) -> int | None: ...


def read_rollout(obj: _Reporter, node: Node | None, prefix: str) -> RolloutSpec | None:
    """The `rollout:` mapping at `node` (`prefix`: `rollout` or `defaults.rollout`), or None
    when absent or not a mapping (the schema reported that); bad values are reported to
    `obj` and left out."""
    if not isinstance(node, MapNode):
        return None
    verify = node.get("verify")
    return RolloutSpec(
        batches=_batches(obj, node.get("batches"), f"{prefix}.batches"),
        max_failed=_budget(obj, node.get("max_failed"), f"{prefix}.max_failed"),
        verify=verify.value if isinstance(verify, ScalarNode) and verify.value else None,
        pause=obj.duration(node.get("pause"), f"{prefix}.pause"),
        location=node.location,
    )


def _batches(obj: _Reporter, node: Node | None, field: str) -> tuple[Share, ...] | None:
    """Cumulative shares, each more than the one before of its kind (counts with counts,
    percentages with percentages: how many machines 25% is depends on the targets), none
    over 100% and none after 100%."""
    if not isinstance(node, SeqNode) or not node.items:
        return None  # not a list, or empty: the schema says so
    shares: list[Share] = []
    ok = True
    last: dict[bool, tuple[int, Share]] = {}
    full: int | None = None  # the index of the 100% entry, once read
    for index, item in enumerate(node.items):
        where = f"{field}[{index}]"
        share = _share(item, minimum=1)
        if share is None:
            obj.error(
                item.location,
                f"{where} must be a number of machines or a percentage such as 25% "
                f"(got {_shown(item)})",
                BATCH_HINT,
            )
            ok = False
            continue
        if share.percent and share.amount > 100:
            obj.error(item.location, f"{where} is over 100% (got {_shown(item)})", BATCH_HINT)
            ok = False
            continue
        if full is not None:
            obj.error(
                item.location,
                f"{where} comes after {field}[{full}] (100%): every target is in a batch by then",
                "end the list at 100%",
            )
            ok = False
            continue
        before = last.get(share.percent)
        if before is not None and share.amount <= before[1].amount:
            obj.error(
                item.location,
                f"{where} ({share}) is not more than {field}[{before[0]}] ({before[1]}): "
                "batches are cumulative, each the total share reached so far",
                "make each entry larger than the one before, e.g. [1, 25%, 100%]",
            )
            ok = False
            continue
        last[share.percent] = (index, share)
        if share.percent and share.amount == 100:
            full = index
        shares.append(share)
    return tuple(shares) if ok else None


def _budget(obj: _Reporter, node: Node | None, field: str) -> Share | None:
    if node is None:
        return None
    share = _share(node, minimum=0)
    if share is None or (share.percent and share.amount > 100):
        obj.error(
            node.location,
            f"{field} must be a number of runs or a percentage from 0% to 100% "
            f"(got {_shown(node)})",
            BUDGET_HINT,
        )
        return None
    return share


def _share(node: Node, minimum: int) -> Share | None:
    """`3` (at least `minimum`) or `25%` (a whole percentage, at least `minimum`), else None."""
    value = node.value if isinstance(node, ScalarNode) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return Share(value) if value >= minimum else None
    if isinstance(value, str) and (match := _PERCENT.fullmatch(value.strip())):
        amount = int(match.group(1))
        return Share(amount, percent=True) if amount >= minimum else None
    return None


def _shown(node: Node) -> str:
    if isinstance(node, MapNode):
        return "a mapping"
    if isinstance(node, SeqNode):
        return "a list"
    value = node.value if isinstance(node, ScalarNode) else None
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


__all__ = ["read_rollout"]
