"""Named crash points for tests of the run protocol (the engine's: `after_plan`, `after_claim`,
`after_dispatch`, `before_result`). The implementation lives in the adapters tier, where a
transport can reach it too: see `reconciler.adapters.failpoints`.
"""

from __future__ import annotations

from reconciler.adapters.failpoints import NAMES, hit

__all__ = ["NAMES", "hit"]
