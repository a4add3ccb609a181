"""Planning without running: what a planner on another host does to a shared store.

`record_plan(inventory, url)` loads the inventory folder, plans against the store's snapshot
at the current time and records the plan, leaving its runs pending for a worker to drain.
It returns the ids of the runs it enqueued (empty when nothing was due).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from reconciler.adapters.store.factory import open_store
from reconciler.core.compile import compile_inventory
from reconciler.core.plan import make_plan
from reconciler.inventory.loader import load_inventory


def record_plan(inventory: Path, url: str) -> list[int]:
    """Plan and record the inventory's runs without draining them; the new runs' ids."""
    loaded, _ = load_inventory(inventory)
    now = datetime.now(UTC)
    store = open_store(url)
    try:
        plan = make_plan(compile_inventory(loaded), store.snapshot(), now)
        return [run.id for run in store.record_plan(plan, None, now)]
    finally:
        store.close()


__all__ = ["record_plan"]
