"""reconciler: a declarative GitOps task reconciler.

Task definitions live as YAML in git; the reconciler compares them with the run history in its
state store, enqueues what is missing and runs it by priority.
"""

from reconciler.adapters import dataclass_cache

__version__ = "0.1.0"

# Before any module of the package defines a dataclass: see dataclass_cache.
dataclass_cache.install()
