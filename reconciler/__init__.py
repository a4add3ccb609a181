"""reconciler: a declarative GitOps task reconciler.

Task definitions live as YAML in git; the reconciler compares them with the run history in its
state store, enqueues what is missing and runs it by priority.
"""

__version__ = "0.1.0"
